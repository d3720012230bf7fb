"""``solver="cg"``: block conjugate gradient on exact HVPs, with the checks that tell a
not-positive-definite H + damping I from round-off."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from functools import partial

import torch

from influence_widgets.core.errors import (
    InfluenceWarning,
    NotPositiveDefiniteError,
    check_nonnegative,
    check_positive_int,
    not_positive_definite,
)
from influence_widgets.core.hvp import HessianOperator
from influence_widgets.core.objective import Objective
from influence_widgets.core.progress import progress_bar
from influence_widgets.core.solvers.base import Solver
from influence_widgets.core.solvers.ekfac_factors import (
    apply_inverse,
    coverage_gap,
    factor_eigenvalues,
    fit_factors,
    set_shift,
)
from influence_widgets.core.solvers.spectrum import smallest_eigenvalue

__all__ = ["DIVERGED", "PRECONDITIONERS", "ROUNDOFF", "ConjugateGradient", "column_groups"]

PRECONDITIONERS = (None, "ekfac")
# The EK-FAC preconditioner's shift where l2 + damping is 0: this fraction of its largest
# eigenvalue, so that it stays positive definite (it need only be a positive definite M near H).
PRECONDITIONER_FLOOR = 1e-8


class ConjugateGradient(Solver):
    """Block conjugate gradient on (H + damping I) X = B (O'Leary 1980), columns in groups.

    The columns of B go in groups of up to ``block_size``, as equal in size as can be; each
    group searches the Krylov space that all its right-hand sides span together: at every
    iteration the group's step is the exact minimiser of the energy norm over its block of
    search directions P,

        alpha = (P^T H P)^-1 P^T R,   X += P alpha,   R -= H P alpha,
        beta = -(P^T H P)^-1 (H P)^T R,   P <- orth(R + P beta),

    so one test point's solve profits from the directions found for the others: a block of m
    columns grows its Krylov space by up to m directions per HVP pass, and the outlying
    eigenvalues that classic CG meets one iteration at a time are found m at a time (the MLP of
    benchmarks/peers.py's case 4 on 2,000 images: 10 test points took 60 block iterations
    against 135 with one CG per column, at the same HVP cost per iteration). ``orth`` is an
    orthonormalisation through the eigendecomposition of the small Gram matrix that drops
    directions which have become (numerically) dependent, as they do when two test points share a
    gradient or a column has converged: the "breakdown-free" variant, so equal or zero columns
    are fine. ``block_size=1`` is classic CG, one independent run per column.

    The step diagonalises the block's curvature P^T (H + damping I) P = U diag(lam) U^T instead
    of factorising it, from float64 copies of P and HP. Directions with lam <= 0 are dropped as
    numerically dependent (a block left with none restarts from its residuals), and only
    lam < -``ROUNDOFF`` machine epsilons (of the model's dtype) times the largest curvature met so
    far is taken as evidence that H + damping I is not positive definite: a
    :class:`NotPositiveDefiniteError` whose eigenvalue estimate is at most that direction's
    Rayleigh quotient (< 0), so its suggested damping is always above the one given. Directions
    whose curvature lies within that round-off band of zero, either sign, are dropped as
    dependent: stepping along one divides by noise. Negative curvature inside the band cannot be
    seen one block at a time, but it shows in the result: residuals that blow up (over
    ``DIVERGED`` times ||b||), or a run that ends at ``maxiter`` worse than X = 0 or with an
    iterate of negative curvature, raise the same error (with the round-off message where every
    estimate is positive) instead of returning the numbers.

    ``preconditioner="ekfac"``: preconditioned block CG with M = G_EK + (l2 + damping) I, the
    EK-FAC approximation of the Gauss-Newton matrix (:class:`~influence_widgets.core.solvers.EKFAC`,
    fitted once in ``fit``: two streams over the training set): the search directions grow from
    Z = M^-1 R instead of R,

        beta = -(P^T H P)^-1 (H P)^T Z,   P <- orth(Z + P beta),

    and alpha, the residuals and the stopping test stay those of the unpreconditioned system, so
    the solution is the same (H + damping I)^-1 B, only reached in fewer iterations where M is
    close to H: the spectrum CG sees is that of M^-1 (H + damping I). Needs every parameter in
    a Linear or Conv2d layer (a ValueError naming ``preconditioner`` otherwise); where
    l2 + damping is 0 the shift is ``PRECONDITIONER_FLOOR`` times M's largest eigenvalue, so that
    M stays positive definite. ``diagnostics.extra["preconditioner"]`` says which M and its fit
    time.

    Starts at X = 0 and stops a column once ||r|| <= rtol * ||b||; a group stops when all its
    columns have, and the solve after ``maxiter`` iterations with an :class:`InfluenceWarning`
    naming the residual reached. Each iteration costs one HVP pass over the training set for the
    search directions of all unfinished groups together. Written by hand: no well-kept library has
    a block CG on a torch linear operator.
    """

    name = "cg"
    summary = "block conjugate gradient on exact HVPs: HVP passes over the data per solve"

    def __init__(
        self,
        rtol: float | None = None,
        maxiter: int = 1000,
        block_size: int = 32,
        preconditioner: str | None = None,
    ) -> None:
        super().__init__()
        if rtol is not None and not 0 < check_nonnegative(rtol, "rtol") < 1:
            raise ValueError(f"rtol: must be in (0, 1), got {rtol}")
        if preconditioner not in PRECONDITIONERS:
            raise ValueError(
                f"preconditioner: expected None or 'ekfac' (M = the EK-FAC approximation of "
                f"the Gauss-Newton matrix), got {preconditioner!r}"
            )
        self.rtol = rtol
        self.maxiter = check_positive_int(maxiter, "maxiter")
        self.block_size = check_positive_int(block_size, "block_size")
        self.preconditioner = preconditioner
        self.precondition: Callable[[torch.Tensor], torch.Tensor] | None = None

    def settings(self) -> dict[str, object]:
        settings: dict[str, object] = {
            "rtol": self.rtol,
            "maxiter": self.maxiter,
            "block_size": self.block_size,
        }
        if self.preconditioner is not None:  # the plain CG's repr stays as it was
            settings["preconditioner"] = self.preconditioner
        return settings

    def check(self, objective: Objective) -> None:
        """A ValueError naming ``preconditioner`` where EK-FAC cannot cover a parameter."""
        gap = None if self.preconditioner is None else coverage_gap(objective)
        if gap is not None:
            raise ValueError(
                f"preconditioner: 'ekfac' covers Linear/Conv2d weights and biases only, and {gap}; "
                "pass preconditioner=None (plain CG), or params=[...] with only such layers"
            )

    def _fit(self, op: HessianOperator, progress: bool) -> None:
        """With ``preconditioner="ekfac"``: fit M = G_EK + (l2 + damping) I (the damping that
        ``fit`` settled)."""
        self.precondition = None
        if self.preconditioner is None:
            return
        start = time.perf_counter()
        layers = fit_factors(op, op.batch_size, progress)
        largest = float(factor_eigenvalues(layers, op.train.n).max())
        shift = max(op.objective.l2 + op.damping, PRECONDITIONER_FLOOR * largest)
        set_shift(layers, op.train.n, shift)
        self.precondition = partial(apply_inverse, layers)
        self.diagnostics.extra["preconditioner"] = (
            f"EK-FAC of the Gauss-Newton matrix + {shift:.3g} I, fitted in "
            f"{time.perf_counter() - start:.2f} s"
        )

    def solve(self, B: torch.Tensor, progress: bool = False) -> torch.Tensor:
        op = self.op
        rtol = self.rtol or (1e-10 if B.dtype == torch.float64 else 1e-5)
        X = torch.zeros_like(B)
        R = B.clone()
        target = rtol * B.norm(dim=0)
        groups = [
            _BlockCGGroup(c, self.precondition)
            for c in column_groups(B.shape[1], self.block_size, B.device)
        ]
        for g in groups:
            g.restart(R, target)
        it = 0
        bar = progress_bar(total=self.maxiter, desc="CG", disable=not progress)
        try:  # the bar closes even when a step finds H + damping I not positive definite
            while it < self.maxiter:
                running = [g for g in groups if g.P is not None]
                if not running:  # every column converged: a full bar, not a red partial one
                    bar.complete()
                    break
                Q = op.matvec(torch.cat([g.P for g in running], dim=1))
                start = 0
                for g in running:
                    width = g.P.shape[1]
                    g.step(X, R, Q[:, start : start + width], target, op)
                    start += width
                it += 1
                bar.update()
                _check_not_diverging(op, X, R, B)
        finally:
            bar.close()
        d = self.diagnostics
        d.iterations = it
        d.converged = bool((R.norm(dim=0) <= target).all())
        d.residual = float((R.norm(dim=0) / B.norm(dim=0).clamp_min(1e-300)).max())
        if not d.converged:
            scale = max(g.curvature_scale for g in groups)
            _check_positive_curvature(
                op, X, d.residual, ROUNDOFF * torch.finfo(B.dtype).eps * scale
            )
            warnings.warn(
                f"CG stopped at relative residual {d.residual:.3g} (target rtol={rtol:g}) after "
                f"maxiter={self.maxiter} iterations; raise maxiter=, loosen rtol=, raise damping= "
                f"(a better-conditioned H + damping I), or use solver='direct'.",
                InfluenceWarning,
                stacklevel=3,
            )
        return X


def column_groups(
    m: int, block_size: int, device: torch.device | str | None = None
) -> list[torch.Tensor]:
    """The column indices of CG's groups: ceil(m / block_size) groups of near-equal size, in
    order. A group grows its Krylov space by its width per iteration and the solve lasts as long
    as its slowest group, so 100 columns go as 25+25+25+25, not 32+32+32+4 (measured on the
    digits CNN at a minimum, preconditioned: the 4-column group held the solve at 85 iterations,
    equal groups took 31)."""
    n_groups = -(-m // block_size)
    return list(torch.arange(m, device=device).tensor_split(n_groups)) if m else []


# Negative curvature p^T (H + damping I) p / p^T p within ROUNDOFF machine epsilons (of the
# model's dtype) of the largest curvature met is round-off, not evidence: float32 HVPs summed over
# thousands of points carry errors of tens of epsilons of ||H||.
ROUNDOFF = 100


class _BlockCGGroup:
    """One group of columns in :class:`ConjugateGradient`: its search directions P (or None once
    every column has converged, or no direction is left) and the (width x width) algebra of a
    step, in float64."""

    def __init__(
        self, cols: torch.Tensor, precondition: Callable[[torch.Tensor], torch.Tensor] | None
    ) -> None:
        self.cols = cols
        self.precondition = precondition  # R -> M^-1 R, or None: M = I
        self.P: torch.Tensor | None = None
        self.curvature_scale = 0.0  # the largest curvature met: a lower bound on ||H + damping I||

    def _preconditioned(self, R: torch.Tensor) -> torch.Tensor:
        """Z = M^-1 R (R itself without a preconditioner)."""
        return R if self.precondition is None else self.precondition(R)

    def restart(self, R: torch.Tensor, target: torch.Tensor) -> None:
        """(Preconditioned) steepest-descent directions from the unconverged residuals (None if
        all converged)."""
        active = self._active(R, target)
        Z = self._preconditioned(R[:, active]) if len(active) else None
        self.P = _orthonormal(Z, R.dtype) if Z is not None else None

    def _active(self, R: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.cols[R[:, self.cols].norm(dim=0) > target[self.cols]]

    def step(
        self,
        X: torch.Tensor,
        R: torch.Tensor,
        Q: torch.Tensor,
        target: torch.Tensor,
        op: HessianOperator,
    ) -> None:
        """X += P alpha, R -= Q alpha and the next directions, from Q = (H + damping I) P."""
        dtype, cols = R.dtype, self.cols
        P, Q = self.P.double(), Q.double()
        PQ = P.T @ Q
        lam, U = torch.linalg.eigh(0.5 * (PQ + PQ.T))
        self.curvature_scale = max(self.curvature_scale, float(lam[-1]))
        roundoff = ROUNDOFF * torch.finfo(dtype).eps * self.curvature_scale
        if float(lam[0]) < -roundoff:
            witness = P @ U[:, 0]
            raise _negative_curvature(op, witness, float(lam[0] / witness.dot(witness)))
        # Curvature within round-off of zero: numerically dependent directions, dropped (a step
        # along one would divide by noise, and float32 CG then diverges instead of converging).
        keep = lam > roundoff
        if not bool(keep.any()):
            self.restart(R, target)
            return
        P, Q, lam = P @ U[:, keep], Q @ U[:, keep], lam[keep]  # now P^T Q = diag(lam)
        alpha = (P.T @ R[:, cols].double()) / lam[:, None]
        X[:, cols] += (P @ alpha).to(dtype)
        R[:, cols] -= (Q @ alpha).to(dtype)
        active = self._active(R, target)
        if not len(active):
            self.P = None
            return
        Z = self._preconditioned(R[:, active]).double()
        beta = -(Q.T @ Z) / lam[:, None]
        P_next = _orthonormal(Z + P @ beta, dtype)
        if P_next.shape[1] == 0:  # every new direction vanished: restart from the residuals
            self.restart(R, target)
        else:
            self.P = P_next


# CG on H + damping I positive definite keeps ||r|| within a factor sqrt(cond) of ||b||; a
# residual DIVERGED times ||b|| (or not finite) means H + damping I is not positive definite after
# all, or round-off has taken over.
DIVERGED = 1e6


def _check_not_diverging(
    op: HessianOperator, X: torch.Tensor, R: torch.Tensor, B: torch.Tensor
) -> None:
    """Raise :class:`NotPositiveDefiniteError` once the residuals R of X blow up: the column of X
    that grew most lies close to the directions of lowest curvature, so its Rayleigh quotient, and
    Lanczos started there, bound lambda_min from above; a positive bound says round-off."""
    growth = R.norm(dim=0) / B.norm(dim=0).clamp_min(1e-300)
    if bool(torch.isfinite(R).all()) and not bool((growth > DIVERGED).any()):
        return
    witness = _largest_column(X)
    if witness is not None:
        raise _negative_curvature(op, witness, _rayleigh(op, witness, X.dtype))
    raise not_positive_definite(smallest_eigenvalue(op), op.damping, "cg")


def _largest_column(X: torch.Tensor) -> torch.Tensor | None:
    """The finite column of X with the largest norm, in float64 (None if there is none)."""
    norms = torch.where(torch.isfinite(X).all(dim=0), X.norm(dim=0), X.new_zeros(()))
    return X[:, int(norms.argmax())].double() if float(norms.max()) > 0 else None


def _rayleigh(op: HessianOperator, v: torch.Tensor, dtype: torch.dtype) -> float:
    """v^T (H + damping I) v / v^T v (one HVP in ``dtype``, the sums in float64)."""
    return float(v.dot(op.matvec(v.to(dtype)).double()) / v.dot(v))


def _check_positive_curvature(
    op: HessianOperator, X: torch.Tensor, residual: float, roundoff: float
) -> None:
    """After CG failed to converge: the columns of X grow along the directions of lowest
    curvature. A Rayleigh quotient x^T (H + damping I) x / x^T x below -``roundoff`` for any of
    them (one HVP pass for all) proves H + damping I indefinite, and a relative ``residual`` above
    1 (X is worse than X = 0, which CG on a positive-definite system never ends at) shows that the
    system is indefinite or lost to round-off: both raise :class:`NotPositiveDefiniteError`, its
    eigenvalue bound tightened by Lanczos started from the lowest column."""
    finite = torch.isfinite(X).all(dim=0) & (X.norm(dim=0) > 0)
    if not bool(finite.any()):
        return
    V = X[:, finite]
    quotients = (V.double() * op.matvec(V).double()).sum(0) / V.double().pow(2).sum(0)
    lowest = int(quotients.argmin())
    if float(quotients[lowest]) < -roundoff or residual > 1:
        raise _negative_curvature(op, V[:, lowest].double(), float(quotients[lowest]))


def _negative_curvature(
    op: HessianOperator, witness: torch.Tensor, rayleigh: float
) -> NotPositiveDefiniteError:
    """The error for a direction ``witness`` whose Rayleigh quotient p^T (H + damping I) p / p^T p
    is ``rayleigh`` < 0 beyond round-off: lambda_min is at most that, and Lanczos started from it
    (whose smallest Ritz value is at most the same quotient) tightens the bound."""
    low = min(rayleigh, smallest_eigenvalue(op, start=witness))
    return not_positive_definite(low, op.damping, "cg")


def _orthonormal(M: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An orthonormal basis, in ``dtype``, of the numerically independent part of span(M),
    (p, k) -> (p, <= k).

    Columns are scaled to unit norm first (a small residual is as good a direction as a large
    one), then the eigendecomposition of the Gram matrix M^T M, formed in float64, gives the basis
    M U diag(lambda)^-1/2 over the eigenvalues above a relative threshold (1e-10 for float64
    data, 1e-4 for lower precisions, whose vectors carry that much noise): a dependent or zero
    column is dropped instead of dividing by zero.
    """
    M = M.double()
    norms = M.norm(dim=0)
    M = M[:, norms > 0] / norms[norms > 0]
    if M.shape[1] == 0:
        return M.to(dtype)
    lam, U = torch.linalg.eigh(M.T @ M)
    floor = (1e-10 if dtype == torch.float64 else 1e-4) * float(lam[-1])
    keep = lam > floor
    return (M @ (U[:, keep] / lam[keep].sqrt())).to(dtype)
