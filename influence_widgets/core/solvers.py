"""Inverse-HVP solvers: x = (H + damping I)^-1 b for several right-hand sides b at once.

H is the Hessian of the regularised risk R at theta_hat (l2 included), as in
:mod:`influence_widgets.core.hvp`; every solver returns the same quantity, with the same sign and
scale, X = (H + damping I)^-1 B, and differs only in how exactly and how fast it gets there.

All solvers share one interface: ``fit(op)`` does the one-off work (factorisation, eigenvalue
estimates), ``solve(B)`` maps (p, m) right-hand sides to (p, m) solutions, and ``diagnostics``
reports residual, iterations, convergence and the eigenvalues that are known.

A solver instance made by the user holds settings only: :class:`~influence_widgets.Influence`
fits :meth:`Solver.unfitted`, a fresh copy, so one instance may configure any number of
``Influence`` objects.
"""

from __future__ import annotations

import math
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from influence_widgets.core.errors import (
    InfluenceWarning,
    NotPositiveDefiniteError,
    check_nonnegative,
    check_positive_int,
    not_positive_definite,
)
from influence_widgets.core.hvp import HessianOperator
from influence_widgets.core.linalg import cholesky_or_raise
from influence_widgets.core.objective import Objective
from influence_widgets.core.progress import progress_bar

__all__ = [
    "Arnoldi",
    "ConjugateGradient",
    "Direct",
    "LiSSA",
    "NotPositiveDefiniteError",
    "Solver",
    "SolverDiagnostics",
    "auto_solver",
    "make_solver",
]


@dataclass
class SolverDiagnostics:
    """What a solver knows about its last fit and solve."""

    solver: str
    converged: bool | None = None
    residual: float | None = None  # max over columns of ||(H + dI) x - b|| / ||b||
    iterations: int | None = None
    min_eigenvalue: float | None = None  # of H + damping I
    max_eigenvalue: float | None = None  # of H + damping I
    fit_seconds: float | None = None
    extra: dict = field(default_factory=dict)


class Solver(ABC):
    """Shared interface of the inverse-HVP solvers: X = (H + damping I)^-1 B.

    Settings come from ``__init__`` and are listed by :meth:`settings`; ``fit`` stores the
    operator and what it computed from it on the instance. :class:`~influence_widgets.Influence`
    never fits the instance it is given, only :meth:`unfitted` copies of it.
    """

    name = "solver"

    def __init__(self) -> None:
        self.op: HessianOperator | None = None
        self.diagnostics = SolverDiagnostics(solver=self.name)

    def settings(self) -> dict[str, object]:
        """The keyword arguments of ``__init__`` that reproduce this solver (a subclass whose
        ``__init__`` takes arguments overrides this)."""
        return {}

    def unfitted(self) -> Solver:
        """A new solver with these settings and no fitted state."""
        return type(self)(**self.settings())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"

    def fit(self, op: HessianOperator, progress: bool = True) -> Solver:
        start = time.perf_counter()
        self.op = op
        self._fit(op, progress)
        self.diagnostics.fit_seconds = time.perf_counter() - start
        return self

    def _fit(self, op: HessianOperator, progress: bool) -> None:  # noqa: B027 (optional hook)
        """One-off work; most iterative solvers have none."""

    @abstractmethod
    def solve(self, B: torch.Tensor, progress: bool = False) -> torch.Tensor:
        """(H + damping I)^-1 B for B of shape (p, m)."""

    def _residual(self, X: torch.Tensor, B: torch.Tensor) -> float:
        R = self.op.matvec(X) - B
        return float((R.norm(dim=0) / B.norm(dim=0).clamp_min(1e-300)).max())


# Direct reports H's exact extreme eigenvalues up to this many parameters; above it, eigvalsh costs
# more than the factorisation itself (0.7 s at p = 1,570 on one core), and the smallest eigenvalue
# is estimated from H^-1 instead.
EXACT_EIGENVALUES_UP_TO = 1000


class Direct(Solver):
    """X = (H + damping I)^-1 B exactly: assemble H + damping I from batched HVPs (or the exact
    linear-head formula) and factorise it once.

    Cholesky when H + damping I is positive definite; otherwise an eigendecomposition finds the
    negative eigenvalues and a :class:`NotPositiveDefiniteError` says which damping fixes it.
    A float16 or bfloat16 model's H is factorised in float32 (torch has no half-precision
    Cholesky) and the solutions are cast back to the model's dtype.
    """

    name = "direct"

    def _fit(self, op: HessianOperator, progress: bool) -> None:
        H = op.dense(progress=progress)
        H = H.to(factor_dtype(H.dtype))
        L = cholesky_or_raise(H, op.damping, self.name)
        d = self.diagnostics
        if op.p <= EXACT_EIGENVALUES_UP_TO:
            eig = torch.linalg.eigvalsh(H)
            d.min_eigenvalue, d.max_eigenvalue = float(eig[0]), float(eig[-1])
        del H
        # The explicit inverse from the factor: a click is then one matrix-vector product. At the
        # paper's p = 7,840 that took 30 ms against 280 ms for cholesky_solve's two triangular
        # solves, for about 9 s once here. H is freed first, so H and two factors never coexist.
        self.H_inv = torch.cholesky_inverse(L)
        del L
        if op.p > EXACT_EIGENVALUES_UP_TO:
            d.min_eigenvalue = self._smallest_eigenvalue_estimate()
        d.converged, d.iterations, d.residual = True, 0, None

    def _smallest_eigenvalue_estimate(self, iters: int = 30) -> float:
        """An upper bound on lambda_min by power iteration on H^-1."""
        v = torch.ones(self.H_inv.shape[0], 1, dtype=self.H_inv.dtype, device=self.H_inv.device)
        v /= v.norm()
        mu = 0.0
        for _ in range(iters):
            w = self.H_inv @ v
            mu = float(w.norm())
            v = w / mu
        return 1.0 / mu

    def solve(self, B: torch.Tensor, progress: bool = False) -> torch.Tensor:
        return (self.H_inv @ B.to(self.H_inv.dtype)).to(B.dtype)


def factor_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to factorise a Hessian of ``dtype`` in: float32 for float16/bfloat16 (torch's
    linear algebra has no half-precision kernels), else ``dtype`` itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class ConjugateGradient(Solver):
    """Block conjugate gradient on (H + damping I) X = B (O'Leary 1980), columns in groups.

    The columns of B go in groups of up to ``block_size``; each group searches the Krylov space
    that all its right-hand sides span together: at every iteration the group's step is the exact
    minimiser of the energy norm over its block of search directions P,

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

    Starts at X = 0 and stops a column once ||r|| <= rtol * ||b||; a group stops when all its
    columns have, and the solve after ``maxiter`` iterations with an :class:`InfluenceWarning`
    naming the residual reached. Each iteration costs one HVP pass over the training set for the
    search directions of all unfinished groups together. Written by hand: no well-kept library has
    a block CG on a torch linear operator.
    """

    name = "cg"

    def __init__(
        self, rtol: float | None = None, maxiter: int = 1000, block_size: int = 32
    ) -> None:
        super().__init__()
        if rtol is not None and not 0 < check_nonnegative(rtol, "rtol") < 1:
            raise ValueError(f"rtol: must be in (0, 1), got {rtol}")
        self.rtol = rtol
        self.maxiter = check_positive_int(maxiter, "maxiter")
        self.block_size = check_positive_int(block_size, "block_size")

    def settings(self) -> dict[str, object]:
        return {"rtol": self.rtol, "maxiter": self.maxiter, "block_size": self.block_size}

    def solve(self, B: torch.Tensor, progress: bool = False) -> torch.Tensor:
        op = self.op
        rtol = self.rtol or (1e-10 if B.dtype == torch.float64 else 1e-5)
        X = torch.zeros_like(B)
        R = B.clone()
        target = rtol * B.norm(dim=0)
        groups = [
            _BlockCGGroup(torch.arange(s, min(s + self.block_size, B.shape[1]), device=B.device))
            for s in range(0, B.shape[1], self.block_size)
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


# Negative curvature p^T (H + damping I) p / p^T p within ROUNDOFF machine epsilons (of the
# model's dtype) of the largest curvature met is round-off, not evidence: float32 HVPs summed over
# thousands of points carry errors of tens of epsilons of ||H||.
ROUNDOFF = 100


class _BlockCGGroup:
    """One group of columns in :class:`ConjugateGradient`: its search directions P (or None once
    every column has converged, or no direction is left) and the (width x width) algebra of a
    step, in float64."""

    def __init__(self, cols: torch.Tensor) -> None:
        self.cols = cols
        self.P: torch.Tensor | None = None
        self.curvature_scale = 0.0  # the largest curvature met: a lower bound on ||H + damping I||

    def restart(self, R: torch.Tensor, target: torch.Tensor) -> None:
        """Steepest-descent directions from the unconverged residuals (None if all converged)."""
        active = self._active(R, target)
        self.P = _orthonormal(R[:, active], R.dtype) if len(active) else None

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
        beta = -(Q.T @ R[:, active].double()) / lam[:, None]
        P_next = _orthonormal(R[:, active].double() + P @ beta, dtype)
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


class LiSSA(Solver):
    """The paper's stochastic recursion (Agarwal et al. 2017), as their code runs it.

    h_0 = b;  h_{j+1} = b + h_j - (H_batch + damping I) h_j / scale;  x = h_T / scale,
    averaged over ``repeats`` runs. It converges to (H + damping I)^-1 b when
    scale > lambda_max(H_batch + damping I); ``scale=None`` picks 1.1x (full batch) or 1.5x
    (mini-batches, max over a few sampled batches) the top eigenvalue estimated by power iteration,
    so that it cannot diverge, and reports the choice. ``batch_size=None`` uses the whole training
    set (a deterministic Neumann series); smaller batches follow the paper's stochastic variant.
    """

    name = "lissa"

    def __init__(
        self,
        depth: int = 10_000,
        repeats: int = 1,
        batch_size: int | None = None,
        scale: float | None = None,
        rtol: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.depth = check_positive_int(depth, "depth")
        self.repeats = check_positive_int(repeats, "repeats")
        self.batch_size = (
            None if batch_size is None else check_positive_int(batch_size, "batch_size")
        )
        if scale is not None and not check_nonnegative(scale, "scale") > 0:
            raise ValueError(f"scale: must be > 0, got {scale}")
        if rtol is not None and not 0 < check_nonnegative(rtol, "rtol") < 1:
            raise ValueError(f"rtol: must be in (0, 1), got {rtol}")
        self.scale, self.rtol, self.seed = scale, rtol, seed

    def settings(self) -> dict[str, object]:
        return {
            "depth": self.depth,
            "repeats": self.repeats,
            "batch_size": self.batch_size,
            "scale": self.scale,
            "rtol": self.rtol,
            "seed": self.seed,
        }

    def _stochastic(self, n: int) -> bool:
        return self.batch_size is not None and self.batch_size < n

    def _fit(self, op: HessianOperator, progress: bool) -> None:
        # The recursion diverges on a negative eigenvalue whatever the scale: check first.
        low = smallest_eigenvalue(op, seed=self.seed)
        if low <= 0:
            raise not_positive_definite(low, op.damping, self.name)
        top = op.top_eigenvalue(seed=self.seed)
        d = self.diagnostics
        d.max_eigenvalue, d.min_eigenvalue = top, low
        if self.scale is not None:
            scale = self.scale
        elif self._stochastic(op.train.n):
            gen = torch.Generator().manual_seed(self.seed)
            batch_tops = []
            for _ in range(5):
                idx = torch.randperm(op.train.n, generator=gen)[: self.batch_size]
                batch_tops.append(_power_iteration(lambda v, i=idx: op.matvec(v, i), op))
            scale = 1.5 * max([top, *batch_tops])
        else:
            scale = 1.1 * top
        self.scale_used = scale
        d.extra["scale"] = scale

    def solve(self, B: torch.Tensor, progress: bool = False) -> torch.Tensor:
        op, scale = self.op, self.scale_used
        n = op.train.n
        stochastic = self._stochastic(n)
        rtol = self.rtol or (1e-10 if B.dtype == torch.float64 else 1e-6)
        gen = torch.Generator().manual_seed(self.seed)
        total = torch.zeros_like(B)
        bound = 1e12 * float(B.norm()) + 1e-30
        steps = 0
        bar = progress_bar(total=self.depth * self.repeats, desc="LiSSA", disable=not progress)
        for _ in range(self.repeats):
            h = B.clone()
            for _ in range(self.depth):
                idx = torch.randint(n, (self.batch_size,), generator=gen) if stochastic else None
                h_new = B + h - op.matvec(h, idx) / scale
                steps += 1
                bar.update()
                norm = float(h_new.norm())
                if not math.isfinite(norm) or norm > bound:
                    bar.close()
                    raise FloatingPointError(
                        f"scale: LiSSA diverged after {steps} steps with scale={scale:.4g}; pass a "
                        f"larger scale= (above the largest eigenvalue of the batch Hessians) or a "
                        f"larger batch_size="
                    )
                change = float((h_new - h).norm())
                h = h_new
                if not stochastic and change <= rtol * norm:
                    break
            total += h / scale
        bar.complete()  # a repeat that stopped early converged: the bar closes full
        bar.close()
        X = total / self.repeats
        d = self.diagnostics
        d.iterations = steps
        d.residual = self._residual(X, B)
        d.converged = d.residual < 1e-3
        if not d.converged:
            warnings.warn(
                f"LiSSA stopped at relative residual {d.residual:.3g} after {steps} steps; raise "
                f"depth= (now {self.depth}), repeats= or batch_size=, or use solver='cg'.",
                InfluenceWarning,
                stacklevel=3,
            )
        return X


def _power_iteration(matvec, op: HessianOperator, iters: int = 30) -> float:
    v = torch.ones(op.p, dtype=op.objective.dtype, device=op.objective.device)
    v /= v.norm()
    lam = 0.0
    for _ in range(iters):
        w = matvec(v)
        lam = float(v.dot(w))
        v = w / w.norm().clamp_min(1e-300)
    return lam


def lanczos(
    op: HessianOperator,
    k: int,
    seed: int = 0,
    progress: bool = False,
    start: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ritz pairs of H + damping I from a k-step Lanczos process on full-batch HVPs.

    Starts from ``start`` (p,) when given, else from a random direction. Full
    reorthogonalisation (twice, against all previous vectors) keeps the basis orthonormal in
    floating point; on breakdown (an invariant subspace) it restarts from a fresh random direction
    orthogonal to the basis, so with k = p the Ritz values are all p eigenvalues. The tridiagonal
    matrix is diagonalised in float64. Returns the eigenvalues in ascending order (k,) and the
    Ritz vectors (p, k).
    """
    p = op.p
    dtype, device = op.objective.dtype, op.objective.device
    gen = torch.Generator().manual_seed(seed)
    Q = torch.zeros(p, k, dtype=dtype, device=device)
    alpha = torch.zeros(k, dtype=torch.float64)
    beta = torch.zeros(k, dtype=torch.float64)

    def orthogonalised(w: torch.Tensor, j: int) -> torch.Tensor:
        for _ in range(2):
            w = w - Q[:, : j + 1] @ (Q[:, : j + 1].T @ w)
        return w

    q = torch.randn(p, generator=gen, dtype=dtype).to(device) if start is None else start.to(dtype)
    q = q / q.norm()
    bar = progress_bar(total=k, desc="Lanczos", disable=not progress)
    for j in range(k):
        bar.update()
        Q[:, j] = q
        w = op.matvec(q)
        alpha[j] = float(w.dot(q))
        w = orthogonalised(w, j)
        if j + 1 == k:
            break
        b = float(w.norm())
        if b <= 1e-10 * abs(float(alpha[j])) + 1e-300:
            w = orthogonalised(torch.randn(p, generator=gen, dtype=dtype).to(device), j)
            q = w / w.norm()
        else:
            beta[j] = b
            q = w / b
    bar.close()
    T = torch.diag(alpha) + torch.diag(beta[: k - 1], 1) + torch.diag(beta[: k - 1], -1)
    evals, evecs = torch.linalg.eigh(T)
    return evals.to(dtype=dtype, device=device), Q @ evecs.to(dtype=dtype, device=device)


def smallest_eigenvalue(
    op: HessianOperator, k: int = 80, seed: int = 0, start: torch.Tensor | None = None
) -> float:
    """An upper bound on lambda_min of H + damping I: the smallest Ritz value of k Lanczos steps
    (exact when k >= p).

    Every Ritz value is a Rayleigh quotient, so the bound is never below lambda_min, and it is at
    most the Rayleigh quotient of ``start`` when Lanczos starts there. It is only as tight as the
    Krylov space is large: a Hessian's smallest eigenvalues are clustered near 0 relative to its
    largest, where Lanczos converges slowly, so with k < p the true lambda_min may be lower
    (start from a known low-curvature direction to make it tight where it matters).
    """
    return float(lanczos(op, min(op.p, k), seed, start=start)[0][0])


class Arnoldi(Solver):
    """Low-rank inverse from the top-``rank`` eigenpairs of H + damping I (Schioppa et al. 2022).

    Lanczos (the symmetric Arnoldi process) on full-batch HVPs builds a Krylov basis of dimension
    min(p, rank + oversample); the top Ritz pairs (U, lambda) give
    (H + damping I)^-1 b ~ U diag(1/lambda) U^T b. With rank >= p this is the exact inverse.
    Written by hand rather than scipy's ARPACK because ARPACK cannot return all p eigenpairs and
    would move every HVP through numpy.
    """

    name = "arnoldi"

    def __init__(self, rank: int = 50, oversample: int = 20, seed: int = 0) -> None:
        super().__init__()
        self.rank = check_positive_int(rank, "rank")
        self.oversample = 0 if oversample == 0 else check_positive_int(oversample, "oversample")
        self.seed = seed

    def settings(self) -> dict[str, object]:
        return {"rank": self.rank, "oversample": self.oversample, "seed": self.seed}

    def _fit(self, op: HessianOperator, progress: bool) -> None:
        k = min(op.p, self.rank + self.oversample)
        evals, vecs = lanczos(op, k, self.seed, progress)
        d = self.diagnostics
        d.max_eigenvalue = float(evals[-1])
        # With k = p all eigenvalues are known; otherwise the smallest Ritz value bounds
        # lambda_min from above, which still proves indefiniteness when it is <= 0.
        d.min_eigenvalue = float(evals[0]) if k == op.p else None
        if float(evals[0]) <= 0:
            raise not_positive_definite(float(evals[0]), op.damping, self.name)
        keep = slice(max(0, k - self.rank), k)
        self.eigenvalues, self.eigenvectors = evals[keep], vecs[:, keep]
        d.extra["rank"] = len(self.eigenvalues)
        d.extra["krylov_dim"] = k
        d.converged, d.iterations = True, k

    def solve(self, B: torch.Tensor, progress: bool = False) -> torch.Tensor:
        U = self.eigenvectors
        return U @ ((U.T @ B) / self.eigenvalues[:, None])


_SOLVERS = {"direct": Direct, "cg": ConjugateGradient, "lissa": LiSSA, "arnoldi": Arnoldi}


def make_solver(solver: str | Solver, objective: Objective, budget_mb: float) -> Solver:
    """A new, unfitted solver from a name or a configured instance (whose settings are copied, so
    the instance itself is never fitted); "auto" is chosen by :func:`auto_solver`, and its reason
    is kept in ``diagnostics.extra["auto"]``."""
    if isinstance(solver, Solver):
        return solver.unfitted()
    if not isinstance(solver, str):
        raise TypeError(f"solver: expected a name or a Solver, got {type(solver).__name__}")
    reason = None
    if solver == "auto":
        solver, reason = auto_solver(objective, budget_mb)
    made = _named_solver(solver)
    if reason is not None:
        made.diagnostics.extra["auto"] = reason
    return made


def _named_solver(solver: str) -> Solver:
    if solver == "ekfac":
        from influence_widgets.core.ekfac import EKFAC  # ekfac imports this module

        return EKFAC()
    if solver not in _SOLVERS:
        raise ValueError(
            f"solver: unknown solver {solver!r}; use one of 'auto', "
            f"{', '.join(map(repr, _SOLVERS))}, 'ekfac'"
        )
    return _SOLVERS[solver]()


def auto_solver(objective: Objective, budget_mb: float) -> tuple[str, str]:
    """What ``solver="auto"`` picks for theta of p parameters, and why.

    "direct" while H and its Cholesky factor (2 p^2 numbers, which live together during the
    factorisation) fit ``budget_mb``; beyond it "ekfac" when every parameter in ``params`` is a
    weight or bias of a Linear/Conv2d layer (a click is then two small products per layer, but
    the curvature is EK-FAC's approximation of the Gauss-Newton matrix, not H), else "cg" (exact
    H, iterative: one run of HVP passes per click).
    """
    from influence_widgets.core.ekfac import coverage_gap  # ekfac imports this module

    p = objective.n_params
    itemsize = torch.empty((), dtype=objective.dtype).element_size()
    need_mb = 2 * p * p * itemsize / 2**20
    size = f"H (p={p:,}) needs {_megabytes(need_mb)}"
    if need_mb <= budget_mb:
        return "direct", f"direct: {size} <= hessian_budget_mb={budget_mb:g}"
    size = f"{size} > hessian_budget_mb={budget_mb:g}"
    gap = coverage_gap(objective)
    if gap is not None:
        return "cg", f"cg: {size}; {gap}"
    return "ekfac", (
        f"ekfac: {size}; all params in Linear/Conv2d layers; influence uses the EK-FAC "
        f"approximation of the Gauss-Newton matrix, not H"
    )


def _megabytes(mb: float) -> str:
    """A size in MB (2^20 bytes, the unit of ``hessian_budget_mb``), as 6.45 MB or 158,027 MB."""
    return f"{mb:,.0f} MB" if mb >= 100 else f"{mb:.3g} MB"
