"""End to end on each device (tests/devices.py): the CPU always, CUDA when a GPU is visible.

Every case places the user's model and data as a :class:`~tests.devices.Placement` says (a model
on the GPU, a CPU model with ``device="cuda"``, data on the GPU too) and compares what it computes
with the same call on the CPU in float64: the solvers against the direct solver's result with the
tolerances of test_core_exact.py, everything else (training, leave-one-out, the attack, the
mislabel ranking, the explorer's panel) against the same call on the CPU. Results must come back
on the device that computed them, and the user's model must stay where it was. On the CPU these
are fast self-checks of the same code paths; without a GPU the CUDA cases show as skipped.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import influence_widgets as iw
from influence_widgets.analysis.mislabel import training_losses
from tests.conftest import Problem, rel_err
from tests.devices import DEVICES, PLACEMENTS, Placement

# solver -> (a fresh one, relative tolerance against the CPU float64 direct solver), as in
# test_core_exact.py; EK-FAC approximates H, so it is compared with EK-FAC on the CPU below.
SOLVERS = {
    "direct": (lambda: "direct", 1e-8),
    "cg": (lambda: "cg", 1e-5),
    "lissa": (lambda: iw.LiSSA(depth=20_000, rtol=1e-7), 5e-2),
    "arnoldi": (lambda: iw.Arnoldi(rank=10_000), 1e-8),
}


@pytest.fixture(scope="module")
def problems(lr_problem, mlp_problem) -> dict[str, Problem]:
    """A logistic regression (theta = the final Linear: the structured head formulas) and a
    Tanh MLP over all its parameters (the affine-layer block and generic HVPs), conftest's."""
    return {"lr": lr_problem, "mlp": mlp_problem}


def placed(
    pb: Problem, where: Placement
) -> tuple[torch.nn.Module, tuple, torch.Tensor, torch.Tensor]:
    """A copy of the problem's model on ``where.model``, and its data on ``where.data``."""
    model = copy.deepcopy(pb.model).to(where.model)
    X, y, Xt, yt = (t.to(where.data) for t in (pb.X, pb.y, pb.Xt, pb.yt))
    return model, (X, y), Xt, yt


def influence(pb: Problem, where: Placement, solver, **kw) -> tuple:
    """(Influence, the user's model, Xt, yt) with the model and data placed as ``where`` says."""
    model, train, Xt, yt = placed(pb, where)
    inf = iw.Influence(
        model, train, l2=pb.l2, params=pb.params, solver=solver, device=where.device,
        progress=False, **kw,
    )  # fmt: skip
    return inf, model, Xt, yt


def on(t: torch.Tensor, where: Placement) -> torch.Tensor:
    """``t`` after checking that it came back on the device that computed it, moved to the CPU."""
    assert t.device.type == torch.device(where.compute).type, (t.device, where)
    return t.cpu()


@pytest.fixture(scope="module")
def cpu_direct(problems):
    """Every quantity of the CPU float64 direct solver, per problem: the reference."""
    out = {}
    for name, pb in problems.items():
        inf = iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, params=pb.params, progress=False)
        out[name] = {
            "s_test": inf.s_test(pb.Xt, pb.yt),
            "loss": inf.influence_on_loss(pb.Xt, pb.yt),
            "params": inf.influence_on_params([3, 7]),
            "self": inf.self_influence(),
            "set": inf.s_test_of_set(pb.Xt, pb.yt),
            "pert": inf.perturbation_influence(pb.Xt[:2], pb.yt[:2], idx=[0, 5]),
            "top": inf.top(pb.Xt, pb.yt, k=5),
        }
    return out


@pytest.mark.parametrize("where", PLACEMENTS)
@pytest.mark.parametrize("name", ["lr", "mlp"])
def test_every_quantity_matches_the_cpu_float64_direct_solver(problems, cpu_direct, name, where):
    pb, ref = problems[name], cpu_direct[name]
    tol = SOLVERS["direct"][1]
    inf, model, Xt, yt = influence(pb, where, "direct")
    n = inf.n
    assert rel_err(on(inf.s_test(Xt, yt), where), ref["s_test"]) < tol
    assert rel_err(on(inf.influence_on_loss(Xt, yt), where), ref["loss"]) < tol
    removal = on(inf.predicted_removal_effect(Xt, yt), where)
    assert rel_err(removal, -ref["loss"] / n) < tol
    assert rel_err(on(inf.influence_on_params([3, 7]), where), ref["params"]) < tol
    assert rel_err(on(inf.self_influence(), where), ref["self"]) < tol
    assert rel_err(on(inf.s_test_of_set(Xt, yt), where), ref["set"]) < tol
    pert = inf.perturbation_influence(Xt[:2], yt[:2], idx=torch.tensor([0, 5], device=Xt.device))
    assert rel_err(on(pert, where), ref["pert"]) < tol
    top = inf.top(Xt, yt, k=5)
    helpful, scores = on(top.helpful, where), on(top.helpful_scores, where)
    assert torch.equal(helpful, ref["top"].helpful)
    assert torch.equal(on(top.harmful, where), ref["top"].harmful)
    # ranked by the removal effect (of another solve: equal up to the GPU's summation order)
    torch.testing.assert_close(scores, torch.gather(removal, 1, helpful), rtol=1e-12, atol=0)
    X_top, _ = inf.train.take(top.helpful[0])  # top()'s indices index the training set as they are
    assert torch.equal(X_top.cpu(), pb.X[helpful[0]])
    assert next(model.parameters()).device.type == where.model  # the user's model stays


@pytest.mark.parametrize("where", PLACEMENTS)
@pytest.mark.parametrize(
    ("name", "solver_name"),
    [("lr", "cg"), ("mlp", "cg"), ("lr", "lissa"), ("lr", "arnoldi"), ("mlp", "arnoldi")],
)
def test_every_solver_matches_the_cpu_float64_direct_solver(
    problems, cpu_direct, name, solver_name, where
):
    """The iterative solvers' solves (s_test, and one solve of all n training gradients for the
    self-influence); LiSSA only on the logistic regression, where its 20,000 steps are cheap."""
    pb, ref = problems[name], cpu_direct[name]
    make, tol = SOLVERS[solver_name]
    inf, _, Xt, yt = influence(pb, where, make())
    assert rel_err(on(inf.s_test(Xt, yt), where), ref["s_test"]) < tol
    assert rel_err(on(inf.self_influence(), where), ref["self"]) < tol


@pytest.mark.parametrize("where", PLACEMENTS)
def test_ekfac_on_the_device_equals_ekfac_on_the_cpu_and_is_exact_for_linear_regression(
    problems, where
):
    pb = problems["mlp"]
    kw = dict(l2=pb.l2, damping=0.01, progress=False)
    cpu = iw.Influence(pb.model, (pb.X, pb.y), solver="ekfac", **kw)
    inf, _, Xt, yt = influence(pb, where, "ekfac", damping=0.01)
    got = on(inf.influence_on_loss(Xt, yt), where)
    assert rel_err(got, cpu.influence_on_loss(pb.Xt, pb.yt)) < 1e-8
    assert rel_err(on(inf.self_influence(), where), cpu.self_influence()) < 1e-8
    assert inf.diagnostics.min_eigenvalue == pytest.approx(cpu.diagnostics.min_eigenvalue, 1e-8)

    # One Linear layer under mse: EK-FAC is H itself (test_ekfac.py), so it equals direct.
    gen = torch.Generator().manual_seed(3)
    X = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    Y = X @ torch.randn(4, 2, generator=gen, dtype=torch.float64)
    Y = Y + 0.1 * torch.randn(50, 2, generator=gen, dtype=torch.float64)
    model = torch.nn.Linear(4, 2).double()
    iw.train(model, (X, Y), loss="mse", l2=0.01, progress=False)
    direct = iw.Influence(model, (X, Y), loss="mse", l2=0.01, solver="direct", progress=False)
    ekfac = iw.Influence(
        copy.deepcopy(model).to(where.model), (X.to(where.data), Y.to(where.data)), loss="mse", l2=0.01,
        solver=iw.EKFAC(batch_size=7), device=where.device, progress=False,
    )  # fmt: skip
    got = on(ekfac.influence_on_loss(X[:3], Y[:3]), where)
    torch.testing.assert_close(got, direct.influence_on_loss(X[:3], Y[:3]), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_train_on_the_device_reaches_the_cpu_minimum(problems, device):
    pb = problems["mlp"]
    torch.manual_seed(0)
    start = torch.nn.Sequential(
        torch.nn.Linear(4, 5, dtype=torch.float64),
        torch.nn.Tanh(),
        torch.nn.Linear(5, 3, dtype=torch.float64),
    )
    cpu_model, model = copy.deepcopy(start), copy.deepcopy(start).to(device)
    iw.train(cpu_model, (pb.X, pb.y), l2=pb.l2, progress=False)
    report = iw.train(model, (pb.X, pb.y), l2=pb.l2, progress=False)  # data on the CPU
    assert report.converged and report.grad_norm <= 1e-8
    assert next(model.parameters()).device.type == device
    for a, b in zip(model.parameters(), cpu_model.parameters(), strict=True):
        torch.testing.assert_close(a.detach().cpu(), b.detach(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("where", PLACEMENTS)
def test_validate_loo_retrains_on_the_device_as_on_the_cpu(problems, where):
    pb = problems["lr"]
    cpu = iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, solver="direct", progress=False)
    want = iw.validate_loo(cpu, pb.Xt[:1], pb.yt[:1], n_remove=3, progress=False)
    inf, _, Xt, yt = influence(pb, where, "direct")
    for retrain in (None, iw.ChordNewtonRetrain(inf)):
        got = iw.validate_loo(inf, Xt[:1], yt[:1], n_remove=3, retrain=retrain, progress=False)
        assert isinstance(got.actual, np.ndarray) and isinstance(got.predicted, np.ndarray)
        np.testing.assert_array_equal(got.removed, want.removed)
        np.testing.assert_allclose(got.predicted, want.predicted, rtol=1e-8)
        np.testing.assert_allclose(got.actual, want.actual, rtol=1e-4, atol=1e-6)
        assert got.pearson > 0.99


def _correct_test_point(pb: Problem) -> int:
    with torch.no_grad():
        return int(torch.nonzero(pb.model(pb.Xt).argmax(1) == pb.yt)[0, 0])


@pytest.mark.parametrize("where", PLACEMENTS)
@pytest.mark.parametrize(("name", "solver"), [("lr", "direct"), ("lr", "cg"), ("mlp", "direct")])
def test_an_attack_step_on_the_device_moves_the_inputs_as_on_the_cpu(problems, where, name, solver):
    """The three ways to retrain: Newton steps on the head (lr, direct), L-BFGS on the head
    (lr, cg) and the whole model (mlp)."""
    pb = problems[name]
    i = _correct_test_point(pb)
    kw = dict(n_poison=2, eps=0.5, max_iter=2, input_range=None, progress=False)
    cpu = iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, solver=solver, progress=False)
    want = iw.craft_attack(cpu, pb.Xt[i : i + 1], pb.yt[i : i + 1], **kw)
    inf, _, Xt, yt = influence(pb, where, solver)
    got = iw.craft_attack(inf, Xt[i : i + 1], yt[i : i + 1], **kw)
    assert got.iterations == want.iterations and got.iterations > 0
    np.testing.assert_array_equal(got.poisoned, want.poisoned)
    assert got.perturbed_inputs.device.type == where.data  # as the user's training inputs
    torch.testing.assert_close(got.perturbed_inputs.cpu(), want.perturbed_inputs)
    np.testing.assert_allclose(got.true_class_probability, want.true_class_probability, rtol=1e-6)
    X_poisoned, _ = got.poisoned_dataset()
    assert torch.equal(X_poisoned[got.poisoned].cpu(), want.perturbed_inputs)


@pytest.mark.parametrize("where", PLACEMENTS)
def test_mislabel_ranking_on_the_device_equals_the_cpu_ranking(problems, where):
    pb = problems["lr"]
    cpu = iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, progress=False)
    inf, *_ = influence(pb, where, "direct")
    for method in ("self_influence", "loss"):
        order = iw.review_order(inf, method)
        assert order.device.type == "cpu"
        assert torch.equal(order, iw.review_order(cpu, method))
    assert rel_err(on(training_losses(inf), where), training_losses(cpu)) < 1e-12


@pytest.fixture(scope="module")
def digits_small():
    """300 digits images to train on, a logistic regression trained on the CPU."""
    data = iw.datasets.digits(n_train=300)
    model = iw.models.logistic_regression(data)
    iw.train(model, data, l2=0.01, progress=False)
    return data, model


@pytest.mark.parametrize("where", PLACEMENTS)
def test_explorer_on_a_device_influence_serves_clicks_and_thumbnails(digits_small, where):
    """With CG (converged to 1e-10): the direct solver's eigvalsh of the 650 x 650 H would take
    most of this test's time on a CPU, and the explorer does not depend on the solver."""
    data, model = digits_small
    cpu = iw.Influence(model, data, l2=0.01, solver="cg", progress=False)
    want = cpu.top(data.X_test[3:4], data.y_test[3:4], k=5)
    train = (data.X_train.to(where.data), data.y_train.to(where.data))
    inf = iw.Influence(
        copy.deepcopy(model).to(where.model), train, l2=0.01, solver="cg", device=where.device,
        progress=False,
    )  # fmt: skip
    ex = iw.InfluenceExplorer(inf, data, k=5, fit_in_background=False).wait_ready()
    ex.selected = 3
    assert ex.error == ""
    panel = ex.panel
    assert [it["index"] for it in panel["helpful"]] == want.helpful[0].tolist()
    assert [it["index"] for it in panel["harmful"]] == want.harmful[0].tolist()
    scores = [it["score"] for it in panel["helpful"]]
    np.testing.assert_allclose(scores, want.helpful_scores[0].numpy(), rtol=1e-7)
    assert bytes(panel["helpful"][0]["png"][:4]) == b"\x89PNG"
    assert bytes(panel["test"]["png"][:4]) == b"\x89PNG"
    assert bytes(ex.gallery[0]["png"][:4]) == b"\x89PNG"
    assert [r["train_index"] for r in ex.results()][:5] == want.helpful[0].tolist()
