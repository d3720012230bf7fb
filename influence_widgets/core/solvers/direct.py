"""``solver="direct"``: assemble H + damping I and factorise it once (Cholesky)."""

from __future__ import annotations

import torch

from influence_widgets.core.hvp import HessianOperator
from influence_widgets.core.linalg import cholesky_or_raise
from influence_widgets.core.solvers.base import Solver

__all__ = ["EXACT_EIGENVALUES_UP_TO", "Direct", "factor_dtype"]

# Direct reports H's exact extreme eigenvalues up to this many parameters; above it, eigvalsh costs
# more than the factorisation itself (0.7 s at p = 1,570 on one core), and the smallest eigenvalue
# is estimated from H^-1 instead.
EXACT_EIGENVALUES_UP_TO = 1000


class Direct(Solver):
    """X = (H + damping I)^-1 B exactly: assemble H + damping I from batched HVPs (or the exact
    linear-head formula) and factorise it once.

    Cholesky when H + damping I is positive definite; otherwise an eigendecomposition finds the
    negative eigenvalues and a :class:`NotPositiveDefiniteError` says which damping fixes it.
    With ``damping="auto"`` a successful Cholesky of H itself means no damping; else H's exact
    smallest eigenvalue (eigvalsh) picks the rung, which a Cholesky of H + d I confirms (or the
    next rung is tried).
    A float16 or bfloat16 model's H is factorised in float32 (torch has no half-precision
    Cholesky) and the solutions are cast back to the model's dtype.
    """

    name = "direct"
    summary = "exact: H + damping I assembled once and factorised (Cholesky)"
    chooses_damping = True

    def _fit(self, op: HessianOperator, progress: bool) -> None:
        H = op.dense(progress=progress)
        H = H.to(factor_dtype(H.dtype))
        if op.auto_damping:
            L = self._auto_factor(H, op)
        else:
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

    def _auto_factor(self, H: torch.Tensor, op: HessianOperator) -> torch.Tensor:
        """The Cholesky factor of H + d I for the rung d that ``damping="auto"`` takes (H is
        shifted in place to H + d I, and ``op.damping`` set to d)."""
        L, info = torch.linalg.cholesky_ex(H)
        if int(info) == 0:
            self.diagnostics.damping_reason = (
                "auto: H is positive definite (its Cholesky factorisation succeeded): no damping"
            )
            return L
        shift = 0.0

        def accept(d: float) -> bool:
            nonlocal L, shift
            H.diagonal().add_(d - shift)
            shift = d
            L, info = torch.linalg.cholesky_ex(H)
            return int(info) == 0

        self.choose_damping(op, float(torch.linalg.eigvalsh(H)[0]), exact=True, accept=accept)
        return L

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
