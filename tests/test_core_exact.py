"""Layer 1: every quantity against the float64 brute-force formula on tiny problems."""

from __future__ import annotations

import copy
import dataclasses
import re
import warnings

import numpy as np
import pytest
import torch

import influence_widgets as iw
from influence_widgets.core.errors import not_positive_definite
from influence_widgets.core.hvp import HessianOperator
from influence_widgets.core.solvers import smallest_eigenvalue
from tests.conftest import make_lr, reference, rel_err

SOLVERS = {
    "direct": (lambda: "direct", 1e-8),
    "cg": (lambda: "cg", 1e-5),
    "lissa": (lambda: iw.LiSSA(depth=20_000, rtol=1e-7), 5e-2),
    "arnoldi_full_rank": (lambda: iw.Arnoldi(rank=10_000), 1e-8),
}


def build(pb, solver, **kw) -> iw.Influence:
    return iw.Influence(
        pb.model, (pb.X, pb.y), l2=pb.l2, solver=solver, params=pb.params, progress=False, **kw
    )


@pytest.fixture(params=["lr_problem", "mlp_problem", "mlp_top_problem"])
def problem(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("solver_name", list(SOLVERS))
def test_every_quantity_matches_brute_force(problem, solver_name):
    make, tol = SOLVERS[solver_name]
    ref = reference(problem)
    inf = build(problem, make())
    n = len(problem.X)

    assert rel_err(inf.influence_on_params(), ref.influence_on_params) < tol
    assert rel_err(inf.influence_on_params([3, 7]), ref.influence_on_params[[3, 7]]) < tol
    I_loss = inf.influence_on_loss(problem.Xt, problem.yt)
    assert I_loss.shape == (len(problem.Xt), n)
    assert rel_err(I_loss, ref.influence_on_loss) < tol
    removal = inf.predicted_removal_effect(problem.Xt, problem.yt)
    assert rel_err(removal, -ref.influence_on_loss / n) < tol
    assert rel_err(inf.self_influence(), ref.self_influence) < tol
    s_test = inf.s_test(problem.Xt, problem.yt)
    assert rel_err(s_test, ref.inv(ref.Gt.T).T) < tol


def test_top_ranks_by_predicted_removal_effect(lr_problem):
    pb = lr_problem
    ref = reference(pb)
    scores = -ref.influence_on_loss / len(pb.X)
    top = build(pb, "direct").top(pb.Xt, pb.yt, k=5)
    assert torch.equal(top.helpful, torch.argsort(scores, dim=1, descending=True)[:, :5])
    assert torch.equal(top.harmful, torch.argsort(scores, dim=1)[:, :5])
    assert bool((top.helpful_scores[:, :-1] >= top.helpful_scores[:, 1:]).all())
    assert bool((top.harmful_scores[:, 0] <= top.harmful_scores[:, -1]).all())


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_damping_is_added_to_the_hessian(mlp_problem, solver):
    ref = reference(mlp_problem, damping=0.3)
    inf = build(mlp_problem, solver, damping=0.3)
    tol = 1e-8 if solver == "direct" else 1e-5
    assert (
        rel_err(inf.influence_on_loss(mlp_problem.Xt, mlp_problem.yt), ref.influence_on_loss) < tol
    )


def test_perturbation_influence_matches_central_finite_differences(problem):
    """I_pert,loss = grad_x of F(x_i) = -g_test^T H^-1 grad ell(x_i, y_i), with H held fixed."""
    pb = problem
    ref = reference(pb)
    inf = build(pb, "direct")
    idx = [2, 11]
    I_pert = inf.perturbation_influence(pb.Xt[:2], pb.yt[:2], idx)
    assert I_pert.shape == (2, 2, pb.X.shape[1])
    s_test = ref.inv(ref.Gt[:2].T)  # (p, 2)

    def F(x, y):
        theta = pb.theta.clone().requires_grad_(True)
        out = pb.forward(theta, x[None])
        term = torch.nn.functional.cross_entropy(out, y[None]) + 0.5 * pb.l2 * theta.dot(theta)
        (g,) = torch.autograd.grad(term, theta)
        return -(g @ s_test)  # (2,)

    h = 1e-5
    for k, i in enumerate(idx):
        x0, y0 = pb.X[i], pb.y[i]
        fd = torch.empty(2, len(x0), dtype=x0.dtype)
        for j in range(len(x0)):
            e = torch.zeros_like(x0)
            e[j] = h
            fd[:, j] = (F(x0 + e, y0) - F(x0 - e, y0)) / (2 * h)
        assert rel_err(I_pert[:, k, :], fd) < 1e-6


@pytest.mark.parametrize("bias", [True, False])
def test_structured_linear_head_hessian_equals_generic_hvps(bias):
    pb = make_lr(bias=bias)
    inf = build(pb, "direct")
    assert inf.op.head is not None and inf.op.head.covers_theta
    generic = HessianOperator(inf.objective, inf.train, batch_size=7, structured=False)
    assert rel_err(inf.op.dense(progress=False), generic.dense(progress=False)) < 1e-12
    V = torch.randn(inf.p, 3, dtype=torch.float64)
    assert rel_err(inf.op.matvec(V), generic.matvec(V)) < 1e-12
    assert rel_err(inf.op.dense(progress=False), reference(pb).H) < 1e-10


def test_mixed_head_and_body_hessian_equals_brute_force(mlp_problem):
    inf = build(mlp_problem, "direct")
    assert inf.op.head is not None and not inf.op.head.covers_theta
    assert rel_err(inf.op.dense(progress=False), reference(mlp_problem).H) < 1e-10


def _tiny_cnn() -> torch.nn.Sequential:
    torch.manual_seed(3)
    return torch.nn.Sequential(
        torch.nn.Unflatten(1, (1, 5, 5)),
        torch.nn.Conv2d(1, 2, 3, padding=1),
        torch.nn.Tanh(),
        torch.nn.Conv2d(2, 3, 3, stride=2, padding=1),
        torch.nn.Tanh(),
        torch.nn.Flatten(),
        torch.nn.Linear(27, 4),
    ).double()


class _Shared(torch.nn.Module):
    """The same Linear used twice: its output is not affine in its parameters."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.inner = torch.nn.Linear(25, 25).double()
        self.head = torch.nn.Linear(25, 4).double()

    def forward(self, x):
        return self.head(torch.tanh(self.inner(torch.tanh(self.inner(x)))))


@pytest.mark.parametrize(
    "model, params, layer",
    [
        (_tiny_cnn, None, "3"),
        (_tiny_cnn, ["3.weight", "6.weight"], "3"),
        (_tiny_cnn, ["1.weight", "1.bias", "3.weight", "6.weight", "6.bias"], "3"),
        (_tiny_cnn, ["1.weight", "6.weight", "6.bias"], "1"),
        (
            lambda: torch.nn.Sequential(
                torch.nn.Linear(25, 6),
                torch.nn.Tanh(),
                torch.nn.Linear(6, 5),
                torch.nn.Sigmoid(),
                torch.nn.Linear(5, 4),
            ).double(),
            None,
            "2",
        ),  # fmt: skip
        (_Shared, None, None),
    ],
)
def test_affine_layer_hessian_rows_equal_generic_hvps(model, params, layer):
    """The exact blocks of the layer before the head (AffineLayer) against HVPs everywhere."""
    from influence_widgets.core.affine_layer import AffineLayer

    gen = torch.Generator().manual_seed(5)
    X = torch.rand(17, 25, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (17,), generator=gen)
    inf = iw.Influence(model(), (X, y), l2=0.01, params=params, solver="cg", progress=False)
    found = AffineLayer.detect(inf.objective, inf.train, inf.op.head)
    modules = dict(inf.objective.module.named_modules())
    assert (found.module is modules[layer]) if layer else found is None
    generic = HessianOperator(inf.objective, inf.train, batch_size=5, structured=False)
    assert rel_err(inf.op.dense(progress=False), generic.dense(progress=False)) < 1e-12


def test_streamed_jvp_scoring_equals_cached_gradients(mlp_problem):
    cached = build(mlp_problem, "direct")
    streamed = build(mlp_problem, "direct", gradient_cache_mb=0, batch_size=7)
    a = cached.influence_on_loss(mlp_problem.Xt, mlp_problem.yt)
    assert cached.cached_gradients is not None
    b = streamed.influence_on_loss(mlp_problem.Xt, mlp_problem.yt)
    assert streamed.cached_gradients is None
    assert rel_err(b, a) < 1e-12
    assert rel_err(streamed.self_influence(), cached.self_influence()) < 1e-12


def test_float32_model_works_and_agrees_with_float64():
    pb64 = make_lr(torch.float64)
    pb32 = make_lr(torch.float32)
    ref = reference(pb64)
    for solver in ["direct", "cg"]:
        inf = build(pb32, solver)
        infl = inf.influence_on_loss(pb32.Xt, pb32.yt)
        assert infl.dtype == torch.float32
        assert rel_err(infl.double(), ref.influence_on_loss) < 1e-3


def test_arnoldi_low_rank_is_exact_on_its_subspace(mlp_problem):
    ref = reference(mlp_problem)
    inf = build(mlp_problem, iw.Arnoldi(rank=6, oversample=37))
    inf.fit()
    evals, evecs = torch.linalg.eigh(ref.H)
    top = evecs[:, -6:]
    b = top @ torch.randn(6, 2, dtype=torch.float64)
    assert rel_err(inf.solver.solve(b), ref.inv(b)) < 1e-8
    assert inf.diagnostics.solver.extra["rank"] == 6
    assert abs(inf.diagnostics.solver.max_eigenvalue - float(evals[-1])) < 1e-8


def test_stochastic_lissa_is_close_and_reports_its_scale(lr_problem):
    ref = reference(lr_problem)
    inf = build(lr_problem, iw.LiSSA(depth=1500, repeats=4, batch_size=12, seed=1))
    with pytest.warns(iw.InfluenceWarning, match="residual"):  # stochastic: not to 1e-3
        infl = inf.influence_on_loss(lr_problem.Xt, lr_problem.yt)
    assert torch.isfinite(infl).all()
    assert rel_err(infl, ref.influence_on_loss) < 0.15
    assert inf.diagnostics.solver.extra["scale"] > inf.diagnostics.solver.max_eigenvalue


def test_lissa_with_too_small_scale_raises_instead_of_nan(lr_problem):
    inf = build(lr_problem, iw.LiSSA(depth=5000, scale=1e-3))
    with pytest.raises(FloatingPointError, match="scale"):
        inf.influence_on_loss(lr_problem.Xt, lr_problem.yt)


def test_diagnostics_report_gradient_norm_eigenvalues_and_convergence(mlp_problem):
    ref = reference(mlp_problem)
    evals = torch.linalg.eigvalsh(ref.H)
    d = build(mlp_problem, "direct").fit().diagnostics
    assert d.grad_norm < 1e-6
    assert abs(d.min_eigenvalue - float(evals[0])) < 1e-9
    assert d.converged is True
    cg = build(mlp_problem, "cg")
    cg.influence_on_loss(mlp_problem.Xt, mlp_problem.yt)
    assert cg.diagnostics.converged and cg.diagnostics.iterations > 0
    assert cg.diagnostics.residual < 1e-8
    assert "cg" in repr(cg.diagnostics)


def test_auto_picks_direct_within_budget_and_ekfac_beyond(lr_problem):
    # a single nn.Linear is covered by EK-FAC; tests/test_auto_solver.py has the cg cases
    assert build(lr_problem, "auto").solver.name == "direct"
    assert build(lr_problem, "auto", hessian_budget_mb=1e-6).solver.name == "ekfac"


def test_smooth_hinge_and_mse_losses_match_brute_force():
    X, y = torch.randn(30, 3, dtype=torch.float64), (torch.arange(30) % 2)
    X = X + 1.5 * (2 * y[:, None] - 1)
    svm = iw.models.linear_svm((3, 2))
    hinge = iw.SmoothHinge(0.1)
    iw.train(svm, (X, y), l2=0.05, loss=hinge, progress=False)
    theta = torch.cat([p.detach().reshape(-1) for p in svm.parameters()])

    class P:
        pass

    pb = P()
    pb.X, pb.y, pb.Xt, pb.yt, pb.l2, pb.theta = X, y, X[:4], y[:4], 0.05, theta
    pb.forward = lambda th, x: x @ th[:3] + th[3]
    ref = reference(pb, loss=hinge)
    inf = iw.Influence(svm, (X, y), loss=hinge, l2=0.05, progress=False)
    assert rel_err(inf.influence_on_loss(X[:4], y[:4]), ref.influence_on_loss) < 1e-8

    reg = torch.nn.Linear(3, 2, dtype=torch.float64)
    Y = X @ torch.randn(3, 2, dtype=torch.float64)
    iw.train(reg, (X, Y), l2=0.05, loss="mse", progress=False)
    pb.y, pb.yt = Y, Y[:4]
    pb.theta = torch.cat([p.detach().reshape(-1) for p in reg.parameters()])
    pb.forward = lambda th, x: x @ th[:6].reshape(2, 3).T + th[6:8]
    ref = reference(pb, loss=lambda out, t: (out - t).pow(2).mean(1))
    inf = iw.Influence(reg, (X, Y), loss="mse", l2=0.05, progress=False)
    assert rel_err(inf.influence_on_loss(X[:4], Y[:4]), ref.influence_on_loss) < 1e-8


@pytest.mark.parametrize("bias", [True, False])
def test_linear_head_scoring_without_gradient_cache_matches_brute_force(bias):
    """No n x p gradient matrix: scores come from r_i^T S phi_i over the head's per-sample terms."""
    pb = make_lr(bias=bias)
    ref = reference(pb)
    inf = build(pb, "direct", gradient_cache_mb=0, batch_size=5)
    assert rel_err(inf.influence_on_loss(pb.Xt, pb.yt), ref.influence_on_loss) < 1e-10
    # streamed, batch by batch
    assert inf.cached_gradients is None and inf.op.head.cached_terms is None
    assert rel_err(inf.self_influence(), ref.self_influence) < 1e-10


def _cg_solve(pb, B: torch.Tensor, **kw) -> tuple[torch.Tensor, iw.ConjugateGradient]:
    inf = build(pb, iw.ConjugateGradient(**kw)).fit()
    return inf.solver.solve(B), inf.solver


def test_block_cg_solves_equal_zero_and_badly_scaled_columns(mlp_problem):
    """Dependent columns (a repeat, a multiple, a zero) must not break the block's algebra."""
    ref = reference(mlp_problem)
    g = ref.Gt.T  # (p, 6)
    B = torch.cat(
        [g, g[:, :1], 1e-7 * g[:, 1:2], torch.zeros_like(g[:, :1]), g[:, 2:3] - g[:, 3:4]], 1
    )
    X, solver = _cg_solve(mlp_problem, B, block_size=5)
    exact = ref.inv(B)
    for j in range(B.shape[1]):
        if j == 8:
            assert torch.equal(X[:, j], torch.zeros_like(X[:, j]))
        else:
            assert rel_err(X[:, j], exact[:, j]) < 1e-7, j
    assert solver.diagnostics.converged and solver.diagnostics.residual <= 1e-10


def test_block_cg_shares_directions_and_takes_fewer_iterations_than_column_cg(mlp_problem):
    ref = reference(mlp_problem)
    B = ref.G[:12].T
    X_block, block = _cg_solve(mlp_problem, B, block_size=12)
    X_cols, cols = _cg_solve(mlp_problem, B, block_size=1)
    assert rel_err(X_block, ref.inv(B)) < 1e-8 and rel_err(X_cols, ref.inv(B)) < 1e-8
    assert block.diagnostics.iterations < cols.diagnostics.iterations / 2


def test_block_cg_in_float32_reaches_its_tolerance():
    pb = make_lr(dtype=torch.float32)
    # the float64 reference at the same (float32-trained) parameters, not at a separately
    # trained float64 model: that comparison depended on the global RNG state
    pb64 = dataclasses.replace(
        pb, X=pb.X.double(), y=pb.y, Xt=pb.Xt.double(), theta=pb.theta.double()
    )
    ref64 = reference(pb64)
    inf = build(pb, iw.ConjugateGradient(block_size=4))
    S = inf.s_test(pb.Xt, pb.yt)
    assert S.dtype == torch.float32
    assert rel_err(S.double(), ref64.inv(ref64.Gt.T).T) < 1e-4


def test_cg_that_stops_at_maxiter_warns_with_its_residual_and_the_fix(mlp_problem, untouched):
    pb = mlp_problem
    inf = build(pb, iw.ConjugateGradient(maxiter=1))
    with untouched(pb.model, pb.X, pb.y, pb.Xt, pb.yt):
        inf.fit()
        with pytest.warns(iw.InfluenceWarning, match=r"relative residual \d.*maxiter=") as rec:
            inf.influence_on_loss(pb.Xt, pb.yt)
    message = str(rec[0].message)
    assert f"{inf.diagnostics.residual:.3g}" in message
    for fix in ("rtol=", "damping=", "solver="):
        assert fix in message
    assert inf.diagnostics.converged is False


def test_converged_cg_does_not_warn(mlp_problem):
    with warnings.catch_warnings():
        warnings.simplefilter("error", iw.InfluenceWarning)
        build(mlp_problem, "cg").influence_on_loss(mlp_problem.Xt, mlp_problem.yt)


# ----- NotPositiveDefiniteError that agrees with itself (issue 14, item 7) ---------------------
_SIGNS = torch.tensor([1.0, 1.0, -1e-3])  # the third output's loss is (slightly) concave


def _concave_output_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out - target) ** 2 * _SIGNS.to(out.dtype)).sum(1)


def _indefinite_float32(seed: int = 0) -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor, float]:
    """A float32 linear model (p = 300) at a stationary point of a loss whose Hessian is
    blockdiag(G, G, -1e-3 G), G = X^T X / n, with the damping that leaves lambda_min(H + dI) at
    -0.1 * 1e-3 lambda_max(G): one negative eigenvalue just below a cluster of 99 small positive
    ones, which a 40-step Lanczos from a random start does not find (the old error then reported a
    positive eigenvalue and suggested a damping below the one given)."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(300, 100, generator=gen) * torch.logspace(-1, 1, 100)
    Y = torch.randn(300, 3, generator=gen)
    G = X.double().T @ X.double() / 300
    model = torch.nn.Linear(100, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.solve(G, X.double().T @ Y.double() / 300).T.float())
    damping = 0.9e-3 * float(torch.linalg.eigvalsh(G)[-1])
    return model, X, Y, damping


def _suggested(err: Exception) -> float:
    """The damping the message suggests: the number after 'Pass damping=' or 'e.g. damping='."""
    return float(re.search(r"(?:Pass|e\.g\.) damping=([0-9.eE+-]+[0-9])", str(err)).group(1))


@pytest.mark.parametrize(
    "solver",
    [iw.ConjugateGradient(), iw.ConjugateGradient(block_size=1), iw.Arnoldi(rank=400)],
    ids=["block_cg", "cg", "arnoldi"],
)
def test_float32_indefinite_hessian_error_suggests_a_damping_that_works(solver):
    model, X, Y, damping = _indefinite_float32()
    lam_min = -0.1e-3 * damping / 0.9e-3  # of H + damping I, exactly
    with pytest.raises(iw.NotPositiveDefiniteError) as info:
        iw.Influence(
            model, (X, Y), loss=_concave_output_loss, damping=damping, solver=solver, progress=False
        ).influence_on_loss(X[:5], Y[:5])
    estimate = float(
        re.search(r"smallest eigenvalue (?:about|at most) (\S+),", str(info.value)).group(1)
    )
    assert estimate <= 0.99 * lam_min  # an upper bound, and a tight one
    assert _suggested(info.value) > damping - lam_min
    refit = iw.Influence(
        model,
        (X, Y),
        loss=_concave_output_loss,
        damping=_suggested(info.value),
        solver=solver,
        progress=False,
    )
    assert torch.isfinite(refit.influence_on_loss(X[:5], Y[:5])).all()
    assert refit.diagnostics.converged


@pytest.mark.parametrize("block_size", [32, 1])
def test_float32_cg_near_the_roundoff_floor_raises_instead_of_returning_garbage(block_size):
    """lambda_min(H + dI) = -1e-5 lambda_max: within the round-off allowance of one block step, so
    CG cannot see the negative curvature step by step, and it once kept steps along curvatures
    of pure noise and ended at relative residuals of 1e4 to 1e9 with only a warning. Now it
    drops such directions, and a run that ends worse than X = 0, or whose iterates have negative
    curvature, raises with a bound that is right and a damping that is enough."""
    model, X, Y, damping = _indefinite_float32()
    lam_max = damping / 0.9e-3
    damping = (1e-3 - 1e-5) * lam_max
    with pytest.raises(iw.NotPositiveDefiniteError) as info:
        iw.Influence(
            model,
            (X, Y),
            loss=_concave_output_loss,
            damping=damping,
            solver=iw.ConjugateGradient(block_size=block_size),
            progress=False,
        ).influence_on_loss(X[:5], Y[:5])
    estimate = float(re.search(r"smallest eigenvalue at most (\S+),", str(info.value)).group(1))
    assert estimate <= 0.9 * -1e-5 * lam_max
    assert _suggested(info.value) > damping + 1e-5 * lam_max


@pytest.mark.filterwarnings("ignore:CG stopped:influence_widgets.core.errors.InfluenceWarning")
@pytest.mark.filterwarnings(
    "ignore:The model is not at a minimum:influence_widgets.core.errors.InfluenceWarning"
)
@pytest.mark.parametrize("block_size", [32, 1])
def test_float32_positive_definite_but_ill_conditioned_hessian_does_not_raise(block_size):
    """H = X~^T X~ / n + 1e-6 I with a 20-dimensional near-null space and lambda_max ~ 1e4: in
    float32 the curvature of those directions is round-off, which must not read as indefinite."""
    gen = torch.Generator().manual_seed(0)
    Z = torch.randn(200, 15, generator=gen) * torch.logspace(-2, 2, 15)
    X = torch.cat([Z, Z, Z[:, :5] - Z[:, 5:10]], 1)
    Y = X @ torch.randn(35, 2, generator=gen) + 0.1 * torch.randn(200, 2, generator=gen)
    model = torch.nn.Linear(35, 2)
    with torch.no_grad():
        A = torch.cat([X, torch.ones(200, 1)], 1).double()
        solution = torch.linalg.pinv(A) @ Y.double()
        model.weight.copy_(solution[:-1].T.float())
        model.bias.copy_(solution[-1].float())
    inf = iw.Influence(
        model,
        (X, Y),
        loss="mse",
        damping=1e-6,
        solver=iw.ConjugateGradient(block_size=block_size, maxiter=300),
        progress=False,
    )
    assert torch.isfinite(inf.influence_on_loss(X[:4], Y[:4])).all()


@pytest.mark.parametrize("damping", [0.0, 1e-2, 5.0])
@pytest.mark.parametrize("estimate", [-3.0, -1e-9, 0.0, 1e-9, 0.00999, 7.0])
def test_not_positive_definite_never_suggests_less_than_the_damping_given(damping, estimate):
    err = not_positive_definite(estimate, damping, "cg")
    assert _suggested(err) > damping
    if estimate > 0:  # a positive estimate is not negative curvature: round-off is the cause
        assert "round-off" in str(err) and "float64" in str(err)
        assert "not positive definite at" not in str(err)
    else:
        assert _suggested(err) >= damping - estimate


def test_smallest_eigenvalue_started_from_a_direction_is_at_most_its_rayleigh_quotient(
    mlp_problem,
):
    inf = build(mlp_problem, "cg")
    evals, evecs = torch.linalg.eigh(reference(mlp_problem).H)
    start = evecs[:, 0] + 0.1 * evecs[:, -1]
    rayleigh = float(start @ inf.op.matvec(start) / start.dot(start))
    estimate = smallest_eigenvalue(inf.op, k=3, start=start)
    assert float(evals[0]) - 1e-10 <= estimate <= rayleigh + 1e-12


@pytest.mark.filterwarnings(
    "ignore:The model is not at a minimum:influence_widgets.core.errors.InfluenceWarning"
)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_model_with_the_direct_solver_factorises_in_float32(dtype):
    pb = make_lr()
    ref = reference(pb)
    inf = iw.Influence(
        copy.deepcopy(pb.model).to(dtype),
        (pb.X.to(dtype), pb.y),
        l2=pb.l2,
        solver="direct",
        progress=False,
    )
    result = inf.influence_on_loss(pb.Xt.to(dtype), pb.yt)
    assert result.dtype == dtype
    assert rel_err(result.double(), ref.influence_on_loss) < 0.05


def test_top_accepts_numpy_integers(lr_problem):
    pb = lr_problem
    inf = build(pb, "direct")
    assert torch.equal(
        inf.top(pb.Xt, pb.yt, k=np.int64(3)).helpful, inf.top(pb.Xt, pb.yt, k=3).helpful
    )
