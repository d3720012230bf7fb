"""hessian="gauss-newton": G = (1/n) sum_i J_i^T Lambda_i J_i + l2 I against a float64 brute
force (explicit per-sample Jacobians J_i and output Hessians Lambda_i), its products, its solvers,
and G = H where the outputs are linear in theta."""

from __future__ import annotations

import pytest
import torch
from torch.func import hessian, jacrev

import influence_widgets as iw
from influence_widgets.core.hvp import HessianOperator
from tests.conftest import Problem, make_mlp, reference, rel_err


def _cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(out, y, reduction="none")


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out - y).pow(2).mean(1)


def brute_force_gauss_newton(pb: Problem, loss) -> torch.Tensor:
    """(1/n) sum_i J_i^T Lambda_i J_i + l2 I, one explicit Jacobian and output Hessian a point."""
    p = len(pb.theta)
    G = torch.zeros(p, p, dtype=torch.float64)
    for x, y in zip(pb.X, pb.y, strict=True):
        J = jacrev(lambda th, x=x: pb.forward(th, x[None])[0])(pb.theta)  # (C, p)
        o = pb.forward(pb.theta, x[None])[0]
        Lam = hessian(lambda o, y=y: loss(o[None], y[None])[0])(o)  # (C, C)
        G += J.T @ Lam @ J
    return G / len(pb.X) + pb.l2 * torch.eye(p, dtype=torch.float64)


def _mse_mlp() -> tuple[Problem, str]:
    """The tiny tanh MLP of conftest, retrained for mse on one-hot targets."""
    pb = make_mlp()
    Y = torch.nn.functional.one_hot(pb.y, 3).double()
    iw.train(pb.model, (pb.X, Y), loss="mse", l2=pb.l2, progress=False)
    theta = torch.cat([q.detach().reshape(-1) for q in pb.model.parameters()])
    Yt = torch.nn.functional.one_hot(pb.yt, 3).double()
    return Problem("mlp_mse", pb.model, pb.X, Y, pb.Xt, Yt, pb.l2, pb.forward, theta), "mse"


@pytest.fixture(params=["cross_entropy", "mse"], scope="module")
def problem_and_loss(request):
    if request.param == "mse":
        return _mse_mlp()
    return make_mlp(), "cross_entropy"


def _influence(pb: Problem, loss: str, **kw) -> iw.Influence:
    return iw.Influence(
        pb.model, (pb.X, pb.y), loss=loss, l2=pb.l2, hessian="gauss-newton", progress=False, **kw
    )


@pytest.mark.parametrize("structured", [True, False])
def test_products_and_matrix_equal_brute_force(problem_and_loss, structured, untouched):
    pb, loss = problem_and_loss
    G = brute_force_gauss_newton(pb, _mse if loss == "mse" else _cross_entropy)
    inf = _influence(pb, loss, damping=0.0)
    op = HessianOperator(
        inf.objective, inf.train, batch_size=7, structured=structured, hessian="gauss-newton"
    )
    V = torch.randn(
        len(pb.theta), 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    with untouched(pb.model, pb.X, pb.y, V):
        assert rel_err(op.matvec(V), G @ V) < 1e-12
        assert rel_err(op.dense(progress=False), G) < 1e-12
    exact = reference(pb, loss=_mse if loss == "mse" else None).H
    assert rel_err(G, exact) > 1e-3  # a network: G drops curvature, so the test can tell
    identity = torch.eye(len(G), dtype=torch.float64)
    assert float(torch.linalg.eigvalsh(G - pb.l2 * identity)[0]) > -1e-12  # PSD


def test_direct_solve_with_gauss_newton_equals_brute_force(problem_and_loss):
    pb, loss = problem_and_loss
    loss_fn = _mse if loss == "mse" else _cross_entropy
    G = brute_force_gauss_newton(pb, loss_fn)
    ref = reference(pb, loss=_mse if loss == "mse" else None)  # its gradients; H replaced by G
    inf = _influence(pb, loss, solver="direct")
    expected = -ref.Gt @ torch.linalg.solve(G, ref.G.T)
    assert rel_err(inf.influence_on_loss(pb.Xt, pb.yt), expected) < 1e-10
    assert rel_err(inf.s_test(pb.Xt, pb.yt), torch.linalg.solve(G, ref.Gt.T).T) < 1e-10
    d = inf.diagnostics
    assert d.hessian == "gauss-newton" and d.solver.hessian == "gauss-newton"
    assert d.min_eigenvalue == pytest.approx(float(torch.linalg.eigvalsh(G)[0]), abs=1e-10)
    assert "hessian='gauss-newton'" in repr(d)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("structured", [True, False])
def test_gauss_newton_equals_the_exact_hessian_for_a_linear_model(structured, bias):
    """Logits linear in theta: the second-order term (1/n) sum dL/do Hess o vanishes."""
    from tests.conftest import make_lr

    pb = make_lr(bias=bias)
    inf = iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, progress=False)
    gn = HessianOperator(inf.objective, inf.train, 5, structured=structured, hessian="gauss-newton")
    H = reference(pb).H
    assert rel_err(gn.dense(progress=False), H) < 1e-12
    V = torch.randn(len(pb.theta), 3, dtype=torch.float64)
    assert rel_err(gn.matvec(V), H @ V) < 1e-12
    direct = iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, hessian="gauss-newton", progress=False)
    assert rel_err(direct.influence_on_loss(pb.Xt, pb.yt), reference(pb).influence_on_loss) < 1e-10


@pytest.mark.parametrize(
    "solver, tol",
    [
        ("cg", 1e-8),
        (iw.LiSSA(depth=20_000, rtol=1e-8), 1e-3),
        (iw.Arnoldi(rank=10_000), 1e-8),
        (iw.Arnoldi(rank=20, oversample=23), 0.5),  # low rank: close, not exact
    ],
    ids=["cg", "lissa", "arnoldi_full_rank", "arnoldi_rank_20"],
)
def test_iterative_solvers_with_gauss_newton_agree_with_direct(problem_and_loss, solver, tol):
    pb, loss = problem_and_loss
    direct = _influence(pb, loss, solver="direct").influence_on_loss(pb.Xt, pb.yt)
    inf = _influence(pb, loss, solver=solver)
    assert rel_err(inf.influence_on_loss(pb.Xt, pb.yt), direct) < tol
    assert inf.diagnostics.hessian == "gauss-newton"


def test_exact_and_gauss_newton_differ_on_a_network_and_carry_over_rebuild(mlp_problem):
    pb = mlp_problem
    exact = iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, progress=False)
    gn = exact.rebuild(pb.model, (pb.X, pb.y), hessian="gauss-newton")
    assert exact.hessian == "exact" and gn.hessian == "gauss-newton"
    assert gn.config.options()["hessian"] == "gauss-newton"
    assert gn.rebuild(pb.model, (pb.X, pb.y)).hessian == "gauss-newton"
    a, b = exact.influence_on_loss(pb.Xt, pb.yt), gn.influence_on_loss(pb.Xt, pb.yt)
    assert rel_err(a, reference(pb).influence_on_loss) < 1e-8
    assert rel_err(b, a) > 1e-3
    assert exact.diagnostics.hessian == "exact"


@pytest.mark.filterwarnings("ignore::influence_widgets.InfluenceWarning")  # not a minimum
def test_a_loss_concave_in_an_output_gives_a_positive_semi_definite_gauss_newton_matrix():
    """Lambda_i with a negative eigenvalue: projected to its PSD part, as EK-FAC does."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    Y = torch.randn(30, 2, generator=gen, dtype=torch.float64)
    signs = torch.tensor([1.0, -0.5], dtype=torch.float64)

    def concave(out, t):
        return 0.5 * ((out - t) ** 2 * signs).sum(1)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    inf = iw.Influence(model.double(), (X, Y), loss=concave, hessian="gauss-newton", progress=False)
    G = inf.op.dense(progress=False)
    assert float(torch.linalg.eigvalsh(G)[0]) > -1e-12
    assert inf.damping > 0  # singular (no l2): "auto" takes the first positive rung or more
    assert "singular" in inf.diagnostics.damping_reason


def test_ekfac_always_uses_gauss_newton_and_says_so(lr_problem):
    pb = lr_problem
    for asked in ("exact", "gauss-newton"):
        inf = iw.Influence(
            pb.model, (pb.X, pb.y), l2=pb.l2, solver="ekfac", hessian=asked, progress=False
        )
        assert inf.hessian == "gauss-newton"
        assert inf.diagnostics.hessian == "gauss-newton"
    assert iw.EKFAC.curvature == "gauss-newton" and iw.Direct.curvature is None
