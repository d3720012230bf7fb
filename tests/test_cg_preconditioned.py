"""ConjugateGradient(preconditioner="ekfac"): preconditioned block CG with M = the EK-FAC
approximation of the Gauss-Newton matrix + (l2 + damping) I. The same solution as the direct
solver to float64 round-off, in fewer iterations; errors that name the argument."""

from __future__ import annotations

import pytest
import torch

import influence_widgets as iw
from influence_widgets.core.errors import NotPositiveDefiniteError

pytestmark = pytest.mark.filterwarnings("ignore::influence_widgets.InfluenceWarning")

L2 = 1e-3


def _mlp(n=150, seed=3, steps=None, hidden=8):
    """A 4-``hidden``-3 tanh MLP classifier in float64, trained to a minimum (``steps``: stopped
    early)."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    y = (X[:, 0] + X[:, 1] > 0).long() + (X[:, 2] > 0.5).long()
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 3)
    ).double()
    if steps is None:
        iw.train(model, (X, y), l2=L2, progress=False)
    else:
        iw.train(model, (X, y), l2=L2, max_iter=steps, progress=False)
    return model, X, y


def _solve(model, X, y, solver, **kw):
    inf = iw.Influence(model, (X, y), l2=L2, solver=solver, progress=False, **kw)
    return inf.influence_on_loss(X[:6], y[:6]), inf.solver.diagnostics


@pytest.mark.parametrize("hessian", ["exact", "gauss-newton"])
def test_same_solution_as_direct(hessian):
    model, X, y = _mlp()
    exact, _ = _solve(model, X, y, "direct", hessian=hessian)
    pre, d = _solve(model, X, y, iw.ConjugateGradient(preconditioner="ekfac"), hessian=hessian)
    assert d.converged and (pre - exact).abs().max() < 1e-8 * exact.abs().max()
    assert d.extra["preconditioner"].startswith("EK-FAC of the Gauss-Newton matrix + 0.001 I")


def test_fewer_iterations_where_ekfac_is_close_to_h():
    """Measured: 48 block iterations against plain CG's 103 (a 4-32-3 MLP, exact Hessian, 300
    points); on the digits CNN at a minimum 26 against 91. Not everywhere: on the same MLP's
    Gauss-Newton matrix, 24 against 23. A linear least-squares model, where EK-FAC is H: 1."""
    model, X, y = _mlp(n=300, hidden=32)
    _, plain = _solve(model, X, y, iw.ConjugateGradient())
    _, pre = _solve(model, X, y, iw.ConjugateGradient(preconditioner="ekfac"))
    assert pre.iterations < 0.7 * plain.iterations, (pre.iterations, plain.iterations)
    gen = torch.Generator().manual_seed(3)
    Xl = torch.randn(200, 20, generator=gen, dtype=torch.float64)
    Xl = Xl * torch.logspace(-2, 1, 20, dtype=torch.float64)  # condition number about 1e6
    yl = torch.randn(200, 3, generator=gen, dtype=torch.float64)
    linear = torch.nn.Linear(20, 3).double()
    iw.train(linear, (Xl, yl), l2=L2, loss="mse", progress=False)
    solver = iw.ConjugateGradient(preconditioner="ekfac")
    inf = iw.Influence(linear, (Xl, yl), l2=L2, loss="mse", solver=solver, progress=False)
    inf.influence_on_loss(Xl[:6], yl[:6])
    assert inf.solver.diagnostics.iterations == 1


def test_the_preconditioner_is_ekfacs_inverse_with_the_same_shift():
    model, X, y = _mlp(n=60)
    kw = dict(l2=L2, damping=0.01, progress=False)
    cg = iw.Influence(model, (X, y), solver=iw.ConjugateGradient(preconditioner="ekfac"), **kw)
    ekfac = iw.Influence(model, (X, y), solver="ekfac", **kw)
    cg.ensure_fit()
    ekfac.ensure_fit()
    B = torch.randn(cg.solver.op.p, 3, dtype=torch.float64)
    torch.testing.assert_close(cg.solver.precondition(B), ekfac.solver.solve(B), rtol=1e-12, atol=0)


def test_without_l2_and_damping_the_shift_floor_keeps_m_positive_definite():
    model, X, y = _mlp(n=60)
    solver = iw.ConjugateGradient(preconditioner="ekfac")
    inf = iw.Influence(model, (X, y), l2=L2, solver=solver, hessian="gauss-newton", progress=False)
    inf.ensure_fit()
    B = torch.randn(inf.solver.op.p, 2, dtype=torch.float64)
    assert torch.isfinite(inf.solver.precondition(B)).all()


def test_an_indefinite_hessian_still_raises():
    model, X, y = _mlp(steps=3)  # far from a minimum: H has negative eigenvalues
    with pytest.raises(NotPositiveDefiniteError):
        _solve(model, X, y, iw.ConjugateGradient(preconditioner="ekfac"), damping=0.0)


def test_settings_repr_and_bad_arguments():
    solver = iw.ConjugateGradient(maxiter=50, preconditioner="ekfac")
    assert solver.settings()["preconditioner"] == "ekfac"
    assert repr(solver) == (
        "ConjugateGradient(rtol=None, maxiter=50, block_size=32, preconditioner='ekfac')"
    )
    assert solver.unfitted().preconditioner == "ekfac"
    assert (
        repr(iw.ConjugateGradient()) == "ConjugateGradient(rtol=None, maxiter=1000, block_size=32)"
    )
    with pytest.raises(ValueError, match="^preconditioner: expected None or 'ekfac'"):
        iw.ConjugateGradient(preconditioner="jacobi")
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 3)
    ).double()
    X, y = torch.randn(20, 4, dtype=torch.float64), torch.randint(0, 3, (20,))
    with pytest.raises(ValueError, match="^preconditioner: 'ekfac' covers Linear/Conv2d .*'1'"):
        iw.Influence(model, (X, y), l2=L2, damping=1.0, progress=False,
                     solver=iw.ConjugateGradient(preconditioner="ekfac"))  # fmt: skip


def test_columns_go_in_groups_of_near_equal_size():
    """100 columns with block_size=32: four groups of 25, not 32+32+32+4 (a narrow group grows
    its Krylov space slowly and holds up the solve); every column once, in order."""
    from influence_widgets.core.solvers.cg import column_groups

    assert [len(g) for g in column_groups(100, 32)] == [25, 25, 25, 25]
    assert [len(g) for g in column_groups(70, 32)] == [24, 23, 23]
    assert [len(g) for g in column_groups(5, 32)] == [5] and column_groups(0, 32) == []
    assert torch.cat(column_groups(100, 32)).tolist() == list(range(100))
    model, X, y = _mlp(n=60)  # and a solve over 100 columns still equals direct
    kw = dict(l2=L2, progress=False)
    x, t = X[:50].repeat(2, 1), y[:50].repeat(2)
    cg = iw.Influence(model, (X, y), solver="cg", **kw).influence_on_loss(x, t)
    direct = iw.Influence(model, (X, y), solver="direct", **kw).influence_on_loss(x, t)
    assert (cg - direct).abs().max() < 1e-8 * direct.abs().max()
