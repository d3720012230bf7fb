"""Newton-type iterations that retrain a model near a known minimum: the chord (simplified
Newton) iteration, and Newton steps solved by conjugate gradients preconditioned with an aged
factor (:func:`newton_pcg`).

With M = L L^T the factorised H + damping I at a nearby theta, the iteration

    theta_{k+1} = theta_k - M^-1 grad R(theta_k)

has exactly the stationary points of R as its fixed points (M only sets the speed: it contracts
at a linear rate of about ||I - M^-1 H(theta*)||), so it stops where L-BFGS would, at
||grad R|| <= tol, and each step costs one full-batch gradient and one solve with the factor.
A step is taken only while it lowers ||grad R||; the first one that does not ends the iteration,
and the caller decides what finishes the job (typically L-BFGS from the last point).

Optionally, once a step contracts slowly (||grad R(theta_{k+1})|| > slow_rate ||grad R(theta_k)||:
M has aged too far from H), ``refactorise(theta)`` is called once to refresh M at the current
theta, and the steps go on as Newton steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from influence_widgets.core.linalg import preconditioned_cg

__all__ = ["ChordNewtonResult", "NewtonPCGResult", "chord_newton", "newton_pcg"]

#: ``gradient(theta) -> (grad R(theta), R(theta))``, as ``torch.func.grad_and_value`` returns.
GradientAndValue = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | float]]


@dataclass(frozen=True)
class ChordNewtonResult:
    """Where :func:`chord_newton` stopped.

    ``theta`` is the last accepted iterate, ``gradient_norm`` = ||grad R(theta)||, ``value`` =
    R(theta) and ``start_value`` = R at the start (a falling ||grad R|| may still climb R, towards
    a saddle).
    ``steps``: accepted steps. ``solves``: solves with the factor in use at the end, a step that
    was not accepted included (the cost that shows the factor's age). ``refactorised``: whether
    ``refactorise`` was called.
    """

    theta: torch.Tensor
    gradient_norm: float
    value: float
    start_value: float
    steps: int
    solves: int
    refactorised: bool


def chord_newton(
    gradient: GradientAndValue,
    theta: torch.Tensor,
    solve: Callable[[torch.Tensor], torch.Tensor],
    tol: float,
    max_steps: int,
    *,
    refactorise: Callable[[torch.Tensor], None] | None = None,
    slow_rate: float = 0.5,
) -> ChordNewtonResult:
    """Iterate theta <- theta - M^-1 grad R(theta) from ``theta`` while ||grad R|| falls.

    Args:
        gradient: ``theta -> (grad R(theta), R(theta))`` for the flat parameter vector theta (p,).
        theta: the start, e.g. theta_hat of the model before its data changed.
        solve: ``B -> M^-1 B`` for B of shape (p, k), M = L L^T the factorised H + damping I
            (looked up at every call, so ``refactorise`` may replace the factor behind it).
        tol: stop once ||grad R(theta)|| <= tol.
        max_steps: the most solves with one factor.
        refactorise: called at most once, with the current theta, after a step that left more
            than ``slow_rate`` of ||grad R||; the solves with the new factor then count afresh.
            None: never refactorise.
        slow_rate: see ``refactorise``.
    """
    g, value = gradient(theta)
    start_value = float(value)
    norm = float(g.norm())
    steps = solves = 0
    refactorised = False
    while norm > tol and solves < max_steps:
        solves += 1
        candidate = theta - solve(g[:, None])[:, 0]
        g_next, value_next = gradient(candidate)
        norm_next = float(g_next.norm())
        contracting = norm_next < norm  # False for NaN too
        slow = norm_next > slow_rate * norm
        if contracting:
            theta, g, value, norm = candidate, g_next, value_next, norm_next
            steps += 1
        if refactorise is not None and not refactorised and slow:
            refactorise(theta)
            solves, refactorised = 0, True
        elif not contracting:  # stop at the last accepted theta
            break
    return ChordNewtonResult(theta, norm, float(value), start_value, steps, solves, refactorised)


@dataclass(frozen=True)
class NewtonPCGResult:
    """Where :func:`newton_pcg` stopped: ``theta`` the last accepted iterate, ``gradient_norm`` =
    ||grad R(theta)||, ``value`` = R(theta), ``start_value`` = R at the start; ``steps``: accepted
    Newton steps; ``cg_iterations``: PCG iterations in all (one Hessian product and one solve
    with the preconditioner each); ``refactorised``: whether ``refactorise`` was called."""

    theta: torch.Tensor
    gradient_norm: float
    value: float
    start_value: float
    steps: int
    cg_iterations: int
    refactorised: bool


def newton_pcg(
    gradient: GradientAndValue,
    hessian_at: Callable[[torch.Tensor], Callable[[torch.Tensor], torch.Tensor]],
    theta: torch.Tensor,
    precondition: Callable[[torch.Tensor], torch.Tensor],
    tol: float,
    max_steps: int,
    *,
    rtol: float = 1e-2,
    max_cg: int = 100,
    refactorise: Callable[[torch.Tensor], None] | None = None,
) -> NewtonPCGResult:
    """Newton steps theta <- theta - H(theta)^-1 grad R(theta), each solved by conjugate gradients
    on exact products with H(theta) to a relative error ``rtol``, preconditioned with M^-1, from
    ``theta`` while ||grad R|| falls.

    Unlike the chord iteration, whose linear rate ||I - M^-1 H|| nears 1 as the factor M ages,
    the outer steps converge as Newton's (linearly at rate ~``rtol`` near the minimum) however old
    M is; the age of M only costs PCG iterations, about sqrt(cond(M^-1 H)) per decade.

    Args:
        gradient: ``theta -> (grad R(theta), R(theta))`` for the flat parameter vector theta (p,).
        hessian_at: ``theta -> (V -> H(theta) V)`` for V of shape (p, 1): the curvature at theta
            (damped or not: the fixed points are those of grad R either way).
        theta: the start, e.g. theta_hat of the model before its data changed.
        precondition: ``B -> M^-1 B`` for B of shape (p, 1), M a positive definite nearby H
            (looked up at every call, so ``refactorise`` may replace it).
        tol: stop once ||grad R(theta)|| <= tol.
        max_steps: the most Newton steps.
        rtol: PCG's relative error per step (the inexact Newton forcing term).
        max_cg: PCG iterations per step before it counts as failed.
        refactorise: called at most once, with the current theta, when PCG fails or a step would
            not lower ||grad R||; the step is then retried on the new M. None: stop there instead.
    """
    g, value = gradient(theta)
    start_value = float(value)
    norm = float(g.norm())
    steps = cg_iterations = 0
    refactorised = False
    while norm > tol and steps < max_steps:
        d, iterations = preconditioned_cg(hessian_at(theta), g[:, None], precondition, rtol, max_cg)
        cg_iterations += iterations
        accepted = False
        if d is not None:
            candidate = theta - d[:, 0]
            g_next, value_next = gradient(candidate)
            norm_next = float(g_next.norm())
            if norm_next < norm:  # False for NaN too
                theta, g, value, norm = candidate, g_next, value_next, norm_next
                steps += 1
                accepted = True
        if not accepted:
            if refactorise is None or refactorised:
                break
            refactorise(theta)
            refactorised = True
    return NewtonPCGResult(
        theta, norm, float(value), start_value, steps, cg_iterations, refactorised
    )
