"""``solver="arnoldi"``: a low-rank inverse from the top eigenpairs of H + damping I."""

from __future__ import annotations

import torch

from influence_widgets.core.errors import check_positive_int, not_positive_definite
from influence_widgets.core.hvp import HessianOperator
from influence_widgets.core.solvers.base import Solver
from influence_widgets.core.solvers.spectrum import lanczos

__all__ = ["Arnoldi"]


class Arnoldi(Solver):
    """Low-rank inverse from the top-``rank`` eigenpairs of H + damping I (Schioppa et al. 2022).

    Lanczos (the symmetric Arnoldi process) on full-batch HVPs builds a Krylov basis of dimension
    min(p, rank + oversample); the top Ritz pairs (U, lambda) give
    (H + damping I)^-1 b ~ U diag(1/lambda) U^T b. With rank >= p this is the exact inverse.
    Written by hand rather than scipy's ARPACK because ARPACK cannot return all p eigenpairs and
    would move every HVP through numpy.
    """

    name = "arnoldi"
    summary = "low-rank inverse from the top eigenpairs of H + damping I (Lanczos)"
    chooses_damping = True  # from its smallest Ritz value: H + d I has the same, shifted by d

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
        if op.auto_damping:
            evals = evals + self.choose_damping(op, float(evals[0]), exact=k == op.p)
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
