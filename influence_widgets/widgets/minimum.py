"""Is theta_hat a minimum of the training risk R, and if not, with which l2 would it be? And
which curvature (Hessian, damping) did influence use?

Influence assumes grad R(theta_hat) = 0, where R(theta) = L(theta) + (l2 / 2) ||theta||^2 and
L is the mean training loss. grad R = grad L + l2 theta is linear in l2, so the l2 that makes it
smallest is a 1-D least-squares fit: l2* = -<grad L, theta> / ||theta||^2. When the given l2 leaves
a large gradient but l2* > 0 makes it vanish, the model was almost surely trained with l2 = l2*
and the l2 given to influence is wrong (a forgotten ``--l2``).

It also assumes H = Hess R(theta_hat) positive definite. Where it is not, ``damping="auto"`` has
added damping * I (the smallest rung of its ladder that makes H + damping I positive definite):
theta_hat is then not a minimum either, and :func:`curvature_notice` says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from influence_widgets.core import Influence
from influence_widgets.core.hvp import EXACT, HESSIAN_NAMES

__all__ = [
    "MINIMUM_TOL",
    "Stationarity",
    "at_minimum",
    "curvature_notice",
    "curvature_text",
    "not_at_minimum_notice",
]

MINIMUM_TOL = 1e-3  # ||grad R|| above this is not a minimum (the bound Influence.fit warns at)


@dataclass(frozen=True)
class Stationarity:
    """||grad R(theta_hat)|| with the given ``l2``, and an ``likely_l2`` at which it vanishes."""

    grad_norm: float
    l2: float
    likely_l2: float | None  # None when the gradient vanishes at l2 or at no l2 >= 0

    @property
    def at_minimum(self) -> bool:
        return self.grad_norm <= MINIMUM_TOL


def at_minimum(influence: Influence) -> Stationarity:
    """How far theta_hat is from a minimum of R with the influence's l2, and the l2 (if any)
    with which it is a minimum: l2* = -<grad L, theta> / ||theta||^2 when l2* > 0 and
    ||grad L + l2* theta|| is both below MINIMUM_TOL and a tenth of ||grad R|| or less."""
    obj = influence.objective
    theta = obj.theta.detach()
    g = influence.mean_loss_gradient().detach()
    norm = float((g + obj.l2 * theta).norm())
    likely = None
    theta_sq = float(theta.dot(theta))
    if norm > MINIMUM_TOL and theta_sq > 0:
        best = -float(g.dot(theta)) / theta_sq
        rest = float((g + best * theta).norm())
        if best > 0 and rest <= MINIMUM_TOL and rest <= 0.1 * norm:
            likely = best
    return Stationarity(grad_norm=norm, l2=obj.l2, likely_l2=likely)


def not_at_minimum_notice(found: Stationarity) -> str:
    """What the explorer shows when theta_hat is not a minimum of R: why the scores may be wrong
    and what to do. Empty at a minimum."""
    if found.at_minimum:
        return ""
    head = (
        f"The model is not at a minimum of the training risk: ||grad R(theta)|| = "
        f"{found.grad_norm:.2g} with l2 = {found.l2:g} (about 0 at a minimum). Influence assumes "
        "a minimum, so the scores below may be wrong."
    )
    if found.likely_l2 is not None:
        return (
            f"{head} The gradient vanishes at l2 = {found.likely_l2:.2g}: the model looks trained "
            f"with l2 = {found.likely_l2:.2g}. What to do: build the Influence with "
            f"l2={found.likely_l2:.2g} (with %influence: --l2 {found.likely_l2:.2g}) and open a "
            "new explorer."
        )
    return (
        f"{head} What to do: train to a minimum with iw.train(model, data, l2=...) using the "
        "same l2 you give Influence (%influence: --l2), check that this l2 is the one used in "
        "training, then open a new explorer."
    )


def curvature_text(influence: Influence) -> str:
    """Which matrix and damping the scores use, for the explorer's Ready line (fits first):
    "exact Hessian, damping 0.01", "exact Hessian, no damping (damping='auto')" or
    "exact Hessian + 0.1 I (damping='auto')"."""
    d = influence.diagnostics
    what = HESSIAN_NAMES[d.hessian].removeprefix("the ")
    if d.damping_reason is None:
        return f"{what}, damping {d.damping:g}"
    if d.damping == 0:
        return f"{what}, no damping (damping='auto')"
    return f"{what} + {d.damping:g} I (damping='auto')"


def curvature_notice(influence: Influence) -> str:
    """What the explorer shows when ``damping="auto"`` had to add a damping to the exact Hessian
    (H not positive definite: theta_hat is not a minimum of R): which damping, why, and what to
    do. Empty otherwise (a damping given by the user, or a singular Gauss-Newton matrix)."""
    d = influence.diagnostics
    if d.damping_reason is None or d.damping == 0 or d.hessian != EXACT:
        return ""
    reason = d.damping_reason.removeprefix("auto: ")
    return (
        f"The Hessian is not positive definite: the model is not at a minimum of the training "
        f"risk, so the scores use H + {d.damping:g} I, the damping chosen by damping='auto' "
        f"({reason}). What to do: check the scores in the Verify tab; train to a minimum with "
        "iw.train(model, data, l2=...), or build the Influence with hessian='gauss-newton' "
        "(%influence: --hessian gauss-newton), positive semi-definite wherever the model is."
    )
