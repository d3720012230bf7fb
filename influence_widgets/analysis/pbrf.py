"""The proximal Bregman response function (PBRF, Bae et al., NeurIPS 2022): what influence with
the damped Gauss-Newton matrix estimates on a network, where it does not estimate leave-one-out.

For the model of an :class:`~influence_widgets.Influence` (theta_s its trained flat parameters,
h(theta, x) its output, L its loss, n training points, l2 its L2 coefficient), a training point
z_m upweighted by epsilon (epsilon = -1/n removes it) and a damping d >= 0:

    F_m(theta) = (1/n) sum_i D_L(h(theta, x_i), h(theta_s, x_i), y_i)
                 + (lam/2) ||theta - theta_s||^2 + epsilon * ell_m(theta),        lam = l2 + d,

    D_L(h, h', y) = L(h, y) - L(h', y) - grad_h L(h', y)^T (h - h')   (Bregman divergence of L
                                                                       in the outputs, >= 0)
    ell_m(theta)  = L(z_m, theta) + (l2/2) ||theta||^2     (the training term Influence upweights)

and theta_m = argmin F_m, found from theta_s. The risk's own L2 term (l2/2)||theta||^2 has the
Bregman divergence (l2/2)||theta - theta_s||^2, so its proximity term and the damping's add up to
lam = l2 + d: "matched damping" compares F_m at lam with Influence(l2=l2, damping=d).

Signs and scaling. At theta_s the divergence and the proximity term are stationary, so
grad F_m(theta_s) = epsilon grad ell_m(theta_s) and Hess F_m(theta_s) = G + lam I + epsilon
Hess ell_m, G = (1/n) sum_i J_i^T Hess_h L J_i the Gauss-Newton matrix. To first order in epsilon

    theta_m - theta_s = -epsilon (G + lam I)^-1 grad ell_m(theta_s),
    L(z_t, theta_m) - L(z_t, theta_s) = -epsilon grad L(z_t)^T (G + lam I)^-1 grad ell_m
                                      = epsilon * I_up,loss(z_m, z_t),

I_up,loss of ``Influence(hessian="gauss-newton", l2=l2, damping=d)``. At epsilon = -1/n this is
``predicted_removal_effect``: positive when removing z_m raises the test loss. The response
returned is the left-hand side, measured at theta_m.

F_m is strongly convex near theta_s only (G is the divergence's curvature at theta_s alone, and
-(1/n) L(z_m) is concave in h_m; for a network whose outputs are not linear in theta, F_m can be
unbounded below when lam is small). It is minimised locally from theta_s by L-BFGS (strong-Wolfe
line search) in the coordinates u, theta = theta_s + L_K^-T u, L_K the Cholesky factor of
K = G + lam I, in which the Hessian of F_m at theta_s is I + O(epsilon), then by chord steps
theta <- theta - K^-1 grad F_m down to ||grad F_m|| <= ``tol``. Each response says how it ended
(:class:`Minimised`): converged; stalled (no lower F_m found: on a ReLU network, typically at a
kink of the piecewise-smooth F_m, where the gradient jumps and cannot reach ``tol`` while F_m no
longer falls beyond round-off); max_iter; or diverged (no minimiser near theta_s: NaN response).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import grad, grad_and_value

from influence_widgets.core.errors import check_index, check_nonnegative, check_positive_int
from influence_widgets.core.hvp import HessianOperator
from influence_widgets.core.influence import Influence, check_influence
from influence_widgets.core.linalg import cholesky_or_raise, cholesky_solve
from influence_widgets.core.newton import chord_newton

__all__ = ["PBRF", "Minimised", "PBRFResponse", "minimise_preconditioned"]

LBFGS_HISTORY = 50
LBFGS_CHUNK = 10  # iterations between checks of ||grad_theta F_m||
CHORD_STEPS = 20  # the most chord steps that finish an L-BFGS run


@dataclass(frozen=True)
class PBRFResponse:
    """theta_m of one training point's PBRF and what it does to the test losses.

    ``test_change[t]`` = L(z_t, theta_m) - L(z_t, theta_s), (T,), NaN when the solve diverged;
    ``grad_norm`` = ||grad F_m|| at theta_m; ``status`` as :class:`Minimised` says ("converged":
    grad_norm <= the tolerance); ``lam`` = l2 + damping.
    """

    index: int
    epsilon: float
    damping: float
    lam: float
    test_change: np.ndarray
    grad_norm: float
    iterations: int
    status: str
    theta: torch.Tensor

    @property
    def converged(self) -> bool:
        return self.status == "converged"


class PBRF:
    """The proximal Bregman response of an Influence's model to upweighting single training points.

    Args:
        influence: its model at theta_s, loss, l2, ``params`` and training set define F_m (the
            solver, Hessian and damping of ``influence`` play no part: the damping is given to
            :meth:`response`).
        tol: stop at ||grad_theta F_m|| <= tol.
        max_iter: the most L-BFGS iterations per response.
        batch_size: training points per forward pass.
        progress: a progress bar while G is assembled.

    G + l2 I is assembled once (``HessianOperator(..., hessian="gauss-newton").dense()``, p x p);
    each damping used is factorised once and kept.
    """

    def __init__(
        self,
        influence: Influence,
        *,
        tol: float = 1e-10,
        max_iter: int = 200,
        batch_size: int = 4096,
        progress: bool = False,
    ) -> None:
        self.influence = check_influence(influence)
        if not tol > 0:
            raise ValueError(f"tol: must be > 0, got {tol!r}")
        self.tol = float(tol)
        self.max_iter = check_positive_int(max_iter, "max_iter")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        obj = influence.objective
        self.theta_s = obj.theta.clone()
        X, y = influence.train.tensors()
        self.X, self.y = obj.cast_inputs(X), obj.cast_targets(y)
        self.h_s, self.dh_s, self.loss_s = self._outputs_at_start()
        op = HessianOperator(obj, influence.train, self.batch_size, hessian="gauss-newton")
        self.G_l2 = op.dense(progress=progress)  # G + l2 I
        self.factors: dict[float, torch.Tensor] = {}

    def _outputs_at_start(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h(theta_s, x_i), grad_h L(h(theta_s, x_i), y_i) and L(z_i, theta_s) for every i."""
        obj = self.influence.objective
        outs, slopes, losses = [], [], []
        for start in range(0, len(self.X), self.batch_size):
            x, y = self.X[start : start + self.batch_size], self.y[start : start + self.batch_size]
            with torch.no_grad():
                h = obj.forward(self.theta_s, x)
            slopes.append(grad(lambda o, y=y: obj.loss_fn(o, y).sum())(h))
            outs.append(h)
            losses.append(obj.loss_fn(h, y))
        return torch.cat(outs), torch.cat(slopes), torch.cat(losses)

    def factor(self, damping: float) -> torch.Tensor:
        """L_K, lower triangular, with L_K L_K^T = K = G + (l2 + damping) I (computed once per
        damping); a NotPositiveDefiniteError naming ``damping`` when K is singular (l2 = 0 and
        damping = 0 with a rank-deficient G)."""
        damping = check_nonnegative(damping, "damping")
        if damping not in self.factors:
            K = self.G_l2.clone()
            K.diagonal().add_(damping)
            self.factors[damping] = cholesky_or_raise(K, damping, "pbrf")
        return self.factors[damping]

    def value_and_grad(
        self, theta: torch.Tensor, index: int, epsilon: float, lam: float
    ) -> tuple[float, torch.Tensor]:
        """F_m(theta) and grad_theta F_m(theta) (module docstring), m = ``index``."""
        obj = self.influence.objective
        n = len(self.X)
        total, g = 0.0, torch.zeros_like(theta)
        for start in range(0, n, self.batch_size):
            sl = slice(start, start + self.batch_size)

            def divergence(th: torch.Tensor, sl=sl) -> tuple[torch.Tensor, torch.Tensor]:
                h = obj.forward(th, self.X[sl])
                d = obj.loss_fn(h, self.y[sl]) - self.loss_s[sl]
                value = d.sum() - (self.dh_s[sl] * (h - self.h_s[sl])).sum()
                return value, value.detach()

            g_batch, value = grad(divergence, has_aux=True)(theta)
            g += g_batch
            total += float(value)
        x_m, y_m = self.X[index], self.y[index]
        g_m, ell_m = grad_and_value(obj.train_term)(theta, x_m, y_m)
        step = theta - self.theta_s
        value = total / n + 0.5 * lam * float(step.dot(step)) + epsilon * float(ell_m)
        return value, g / n + lam * step + epsilon * g_m

    def response(
        self, index: int, x_test, y_test, damping: float, epsilon: float | None = None
    ) -> PBRFResponse:
        """theta_m = argmin F_m near theta_s for training point ``index`` upweighted by
        ``epsilon`` (default -1/n: removed) at lam = l2 + ``damping``, and the change of the loss
        of each test point (x_test, y_test: a batch with its leading dimension)."""
        obj = self.influence.objective
        n = len(self.X)
        index = check_index(index, "index", n)
        epsilon = -1.0 / n if epsilon is None else float(epsilon)
        lam = obj.l2 + check_nonnegative(damping, "damping")
        L = self.factor(damping)
        fun = lambda th: self.value_and_grad(th, index, epsilon, lam)  # noqa: E731
        found = minimise_preconditioned(fun, self.theta_s, L, self.tol, self.max_iter)
        x = obj.cast_inputs(torch.as_tensor(x_test))
        y = obj.cast_targets(torch.as_tensor(y_test))
        with torch.no_grad():
            change = obj.loss(found.theta, x, y) - obj.loss(self.theta_s, x, y)
        if found.status == "diverged":
            change = torch.full_like(change, math.nan)
        return PBRFResponse(
            index=index,
            epsilon=epsilon,
            damping=float(damping),
            lam=lam,
            test_change=change.detach().cpu().numpy(),
            grad_norm=found.grad_norm,
            iterations=found.iterations,
            status=found.status,
            theta=found.theta,
        )


@dataclass(frozen=True)
class Minimised:
    """Where :func:`minimise_preconditioned` stopped: ``status`` is "converged" (||grad f|| <=
    tol), "stalled" (the line search found no lower f: at f's round-off, or on a kink of a
    piecewise-smooth f such as a ReLU network's, where the gradient jumps and never reaches
    tol), "max_iter", or "diverged" (f or its gradient stopped being finite: no minimiser near
    the start)."""

    theta: torch.Tensor
    grad_norm: float
    iterations: int
    status: str


def minimise_preconditioned(
    fun: Callable[[torch.Tensor], tuple[float, torch.Tensor]],
    start: torch.Tensor,
    L: torch.Tensor,
    tol: float,
    max_iter: int,
) -> Minimised:
    """Minimise f from ``start`` (``fun(theta) -> (f, grad_theta f)``), with K = L L^T close to
    the Hessian of f there.

    First L-BFGS on f(start + L^-T u) over u from u = 0 (strong-Wolfe line search), until
    ||grad_theta f|| <= tol, ``max_iter`` iterations, a pass that no longer moves u, or a
    non-finite f; then, unless diverged, chord steps theta <- theta - K^-1 grad f(theta)
    (``chord_newton``), which need gradients only and are taken while they lower ||grad f||,
    down to ``tol`` (they finish what f's round-off, ~1e-16 |f|, hides from the line search).
    ``iterations`` counts both."""

    def theta_of(u: torch.Tensor) -> torch.Tensor:
        return start + torch.linalg.solve_triangular(L.mT, u[:, None], upper=True)[:, 0]

    u = torch.zeros_like(start, requires_grad=True)
    opt = torch.optim.LBFGS(
        [u], lr=1.0, max_iter=LBFGS_CHUNK, history_size=LBFGS_HISTORY, tolerance_grad=0.0,
        tolerance_change=0.0, line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure() -> torch.Tensor:
        value, g = fun(theta_of(u.detach()))
        u.grad = torch.linalg.solve_triangular(L, g[:, None], upper=False)[:, 0]
        return torch.tensor(value, dtype=start.dtype)

    value, g = fun(start)
    norm, iterations, status = float(g.norm()), 0, "max_iter"
    while norm > tol and iterations < max_iter:
        before = u.detach().clone()
        opt.param_groups[0]["max_iter"] = min(LBFGS_CHUNK, max_iter - iterations)
        opt.step(closure)
        iterations = int(opt.state[u]["n_iter"])
        value, g = fun(theta_of(u.detach()))
        norm = float(g.norm())
        if not (math.isfinite(value) and math.isfinite(norm)):
            return Minimised(theta_of(u.detach()), math.inf, iterations, "diverged")
        if torch.equal(before, u.detach()):
            status = "stalled"
            break
    if norm > tol:
        polish = chord_newton(
            lambda th: fun(th)[::-1], theta_of(u.detach()), lambda B: cholesky_solve(L, B), tol,
            CHORD_STEPS,
        )  # fmt: skip
        theta, norm, iterations = polish.theta, polish.gradient_norm, iterations + polish.steps
    else:
        theta = theta_of(u.detach())
    return Minimised(theta, norm, iterations, "converged" if norm <= tol else status)
