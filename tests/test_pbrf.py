"""The proximal Bregman response (influence_widgets.analysis.pbrf) against a float64 brute force.

On a tiny tanh MLP that is NOT at a minimum of its risk, with G = (1/n) sum_i J_i^T Lambda_i J_i
from explicit Jacobians and softmax Hessians: the PBRF response divided by epsilon converges, as
epsilon -> 0, to I_up,loss = -grad L(z_t)^T (G + (l2 + d) I)^-1 grad ell_m, and NOT to what a
wrong sign, a wrong lambda (the damping left out, or the l2 left out) or the exact Hessian give.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, jacrev

import influence_widgets as iw
from influence_widgets.analysis.pbrf import PBRF

L2, DAMPING = 1e-2, 0.05
M, T = 3, 0  # the upweighted training point, the test point

# the tiny net is trained short of a minimum on purpose: Influence warns, the PBRF does not care
pytestmark = pytest.mark.filterwarnings("ignore::influence_widgets.InfluenceWarning")


def make_problem(n: int = 30):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=gen)
    x_t = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    y_t = torch.tensor([1, 2])
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)
    ).double()
    iw.train(model, (X, y), l2=L2, max_iter=15, progress=False)  # short of a minimum on purpose
    return model, X, y, x_t, y_t


def brute_force(model, X, y, x_t, y_t):
    """(G, exact Hessian of the data term, grad ell_M, grad L(z_T)) at theta_s, float64."""
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def out(th, x):
        chunks = torch.split(th, [s.numel() for s in shapes])
        params = {k: c.reshape(s) for k, c, s in zip(names, chunks, shapes, strict=True)}
        return functional_call(model, params, (x,))

    def ce(th, x, t):
        return torch.nn.functional.cross_entropy(out(th, x), t, reduction="sum")

    J = jacrev(out)(theta, X)  # (n, C, p)
    P = torch.softmax(out(theta, X), dim=1)
    Lam = torch.diag_embed(P) - P[:, :, None] * P[:, None, :]
    G = torch.einsum("icp,icd,idq->pq", J, Lam, J) / len(X)
    H = torch.func.hessian(ce)(theta, X, y) / len(X)
    g_m = grad(ce)(theta, X[M : M + 1], y[M : M + 1]) + L2 * theta
    g_t = grad(ce)(theta, x_t[T : T + 1], y_t[T : T + 1])
    return G, H, g_m, g_t


def i_up_loss(curvature: torch.Tensor, lam: float, g_m, g_t) -> float:
    K = curvature + lam * torch.eye(len(g_m), dtype=torch.float64)
    return float(-g_t @ torch.linalg.solve(K, g_m))


@pytest.fixture(scope="module")
def setup():
    model, X, y, x_t, y_t = make_problem()
    inf = iw.Influence(
        model, (X, y), l2=L2, damping=DAMPING, hessian="gauss-newton", solver="direct",
        progress=False,
    )  # fmt: skip
    return model, X, y, x_t, y_t, inf, PBRF(inf, tol=1e-13)


def test_response_over_epsilon_converges_to_gauss_newton_influence(setup):
    model, X, y, x_t, y_t, inf, pbrf = setup
    G, H, g_m, g_t = brute_force(model, X, y, x_t, y_t)
    right = i_up_loss(G, L2 + DAMPING, g_m, g_t)
    errors = []
    for eps in (1e-2, 1e-3, 1e-4):
        r = pbrf.response(M, x_t, y_t, DAMPING, epsilon=eps)
        assert r.converged and r.grad_norm <= 1e-13, r.grad_norm
        errors.append(abs(r.test_change[T] / eps - right))
    # first order: the error falls by about 10 with every factor 10 of epsilon
    assert 5 < errors[0] / errors[1] < 20 and 5 < errors[1] / errors[2] < 20, errors
    # the central difference removes the first-order error: the derivative at epsilon = 0
    up, down = (
        pbrf.response(M, x_t, y_t, DAMPING, epsilon=e).test_change[T] for e in (1e-5, -1e-5)
    )
    slope = (up - down) / 2e-5
    assert slope == pytest.approx(right, rel=1e-6), (slope, right)
    # the same number from Influence(hessian="gauss-newton", damping=DAMPING)
    ours = float(inf.influence_on_loss(x_t, y_t)[T, M])
    assert ours == pytest.approx(right, rel=1e-8)
    # what the test must reject: each wrong variant is far from the response, the right one near
    wrong = {
        "sign": -right,
        "damping left out": i_up_loss(G, L2, g_m, g_t),
        "l2 left out": i_up_loss(G, DAMPING, g_m, g_t),
        "exact Hessian": i_up_loss(H, L2 + DAMPING, g_m, g_t),
    }
    for name, value in wrong.items():
        assert abs(slope - value) > 1e3 * abs(slope - right), (name, slope, value, right)


def test_removal_response_is_close_to_predicted_removal_effect():
    # epsilon = -1/n is first order only when 1/n is small: n = 300 here (at n = 30 the response
    # was twice the prediction, the tiny net being far from linear over that step)
    model, X, y, x_t, y_t = make_problem(n=300)
    inf = iw.Influence(
        model, (X, y), l2=L2, damping=DAMPING, hessian="gauss-newton", solver="direct",
        progress=False,
    )  # fmt: skip
    predicted = inf.predicted_removal_effect(x_t, y_t)[:, M].detach().numpy()
    r = PBRF(inf).response(M, x_t, y_t, DAMPING)  # epsilon = -1/n
    assert r.epsilon == -1 / len(X) and r.lam == pytest.approx(L2 + DAMPING)
    assert r.converged and r.grad_norm <= 1e-10
    assert r.test_change == pytest.approx(predicted, rel=0.1)


def test_zero_epsilon_leaves_theta_where_it_was(setup):
    *_, x_t, y_t, _, pbrf = setup
    r = pbrf.response(M, x_t, y_t, DAMPING, epsilon=0.0)
    assert r.iterations == 0 and torch.equal(r.theta, pbrf.theta_s)
    assert (r.test_change == 0).all()


def test_bad_arguments_name_themselves(setup):
    *_, x_t, y_t, _, pbrf = setup
    with pytest.raises(ValueError, match="damping"):
        pbrf.response(M, x_t, y_t, -1.0)
    with pytest.raises(ValueError, match="index"):
        pbrf.response(10_000, x_t, y_t, DAMPING)
    with pytest.raises(ValueError, match="tol"):
        PBRF(setup[5], tol=0.0)
