"""``damping="auto"``: the smallest rung of a fixed ladder that makes H + damping I positive
definite, with a margin, and the reason it was chosen.

H is the Hessian of the regularised risk R at theta_hat (l2 included), or the Gauss-Newton matrix
G with ``hessian="gauss-newton"``; ``damping`` adds damping * I to it, so every influence
quantity uses (H + damping I)^-1 in place of H^-1 (Koh & Liang's code does the same for its
non-convex models). The ladder is absolute, in the units of H's eigenvalues:

    0, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100      (DAMPING_LADDER)

``"auto"`` takes 0 when H itself is positive definite (so every result is exactly that of
``damping=0``), else the smallest positive rung d with d >= MARGIN * (-lambda_min(H)): the
negative curvature is cancelled with a third of d to spare, the same margin as the damping that
:class:`~influence_widgets.NotPositiveDefiniteError` suggests. lambda_min comes from the solver:
exact for ``direct`` (eigvalsh of the assembled H) and ``ekfac`` (its own eigenvalues), a Lanczos
estimate (an upper bound on lambda_min) for ``cg``, ``lissa`` and ``arnoldi``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from influence_widgets.core.errors import NotPositiveDefiniteError, check_nonnegative

__all__ = [
    "AUTO",
    "DAMPING_LADDER",
    "MARGIN",
    "DampingChoice",
    "check_damping",
    "choose_damping",
    "is_auto",
    "ladder_text",
    "rung_text",
]

AUTO = "auto"
DAMPING_LADDER = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
MARGIN = 1.5  # a rung must be at least MARGIN times the negative curvature it cancels


def rung_text(d: float) -> str:
    """A rung as the docs write it: 0, 1e-4, 3e-3, 0.01, 0.3, 1, 30."""
    return f"{d:.0e}".replace("e-0", "e-") if 0 < d < 0.01 else f"{d:g}"


def ladder_text() -> str:
    """The ladder as the docs and messages write it: "0, 1e-4, 3e-4, ..., 30, 100"."""
    return ", ".join(rung_text(d) for d in DAMPING_LADDER)


def check_damping(value, name: str = "damping") -> float | str:
    """``"auto"``, or a finite number >= 0 as float; else a ValueError/TypeError naming
    ``name`` that lists what is accepted."""
    accepted = (
        f"expected 'auto' or a number >= 0, got {value!r}; 'auto' takes the smallest of "
        f"{ladder_text()} that makes H + damping*I positive definite"
    )
    if isinstance(value, str):
        if value == AUTO:
            return AUTO
        raise ValueError(f"{name}: {accepted}")
    try:
        return check_nonnegative(value, name)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{name}: {accepted}") from err


@dataclass(frozen=True)
class DampingChoice:
    """What ``damping="auto"`` chose: the rung and why, in words."""

    damping: float
    reason: str


def _estimate(min_eigenvalue: float, exact: bool) -> str:
    kind = "smallest eigenvalue" if exact else "smallest eigenvalue (a Lanczos upper bound)"
    return f"{kind} of H {min_eigenvalue:.3g}"


def choose_damping(
    min_eigenvalue: float,
    exact: bool,
    accept: Callable[[float], bool] | None = None,
    semidefinite: bool = False,
) -> DampingChoice:
    """The rung of :data:`DAMPING_LADDER` that ``damping="auto"`` takes, given lambda_min of H
    (``exact``: known exactly, else an upper bound on it; ``semidefinite``: H is positive
    semi-definite by construction, the Gauss-Newton matrix, so lambda_min <= 0 means singular).

    0 when lambda_min > 0; else the smallest positive rung d >= MARGIN * (-lambda_min). From
    there on, the first rung that ``accept(d)`` passes (the direct solver's Cholesky of
    H + d I, which round-off can fail at a rung that the eigenvalue allows). Raises
    :class:`~influence_widgets.NotPositiveDefiniteError` naming ``damping`` when no rung does.
    """
    need = MARGIN * -min_eigenvalue
    rungs = [d for d in DAMPING_LADDER if (d == 0 and min_eigenvalue > 0) or (d > 0 and d >= need)]
    skipped = []
    gauss_newton = "" if semidefinite else "use hessian='gauss-newton' (positive semi-definite), "
    for d in rungs:
        if accept is None or accept(d):
            return DampingChoice(d, _reason(d, min_eigenvalue, exact, skipped, semidefinite))
        skipped.append(d)
    raise NotPositiveDefiniteError(
        f"damping: 'auto' found no rung of {ladder_text()} that makes H + damping*I positive "
        f"definite ({_estimate(min_eigenvalue, exact)}): the model is far from a minimum of the "
        f"training risk. Train it further, {gauss_newton}"
        f"or pass a damping above {need if need > DAMPING_LADDER[-1] else DAMPING_LADDER[-1]:g} "
        "explicitly."
    )


def _reason(
    d: float, min_eigenvalue: float, exact: bool, skipped: list[float], semidefinite: bool
) -> str:
    """Why ``d`` was chosen, in one sentence."""
    estimate = _estimate(min_eigenvalue, exact)
    roundoff = (
        f"; {', '.join(map(rung_text, skipped))} failed the Cholesky check from round-off"
        if skipped
        else ""
    )
    if d == 0:
        return f"auto: H is positive definite ({estimate}): no damping{roundoff}"
    if min_eigenvalue > 0:
        return (
            f"auto: {estimate} > 0, but H failed the Cholesky check from round-off; {rung_text(d)} is "
            f"the smallest rung that passes{roundoff}"
        )
    bound = f"{MARGIN:g} x {-min_eigenvalue:.3g}" if min_eigenvalue < 0 else "0"
    why = (
        "the Gauss-Newton matrix, positive semi-definite by construction, is singular (no l2 "
        "term, or round-off)"
        if semidefinite
        else "H is not positive definite, so theta_hat is not a (strict) minimum of R"
    )
    return (
        f"auto: {estimate} <= 0: {why}; {rung_text(d)} is the smallest rung of {ladder_text()} "
        f"that is > 0 and >= {bound}{roundoff}"
    )


def is_auto(damping: float | str) -> bool:
    """Whether ``damping`` asks for the ladder (``"auto"``) rather than a number."""
    return isinstance(damping, str) and damping == AUTO
