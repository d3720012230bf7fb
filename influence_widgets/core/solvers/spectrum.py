"""Eigenvalue estimates of H + damping I from HVPs alone: Lanczos, a bound on the smallest
eigenvalue, power iteration. Used by the CG, LiSSA and Arnoldi solvers."""

from __future__ import annotations

from collections.abc import Callable

import torch

from influence_widgets.core.hvp import HessianOperator
from influence_widgets.core.progress import progress_bar

__all__ = ["lanczos", "power_iteration", "smallest_eigenvalue"]


def power_iteration(
    matvec: Callable[[torch.Tensor], torch.Tensor], op: HessianOperator, iters: int = 30
) -> float:
    """The Rayleigh quotient after ``iters`` steps of power iteration on ``matvec`` (a (p,) ->
    (p,) product, e.g. a mini-batch's H + damping I) from the all-ones direction: an estimate of
    its largest eigenvalue in magnitude."""
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
