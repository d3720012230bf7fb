"""``solver="lissa"``: the paper's stochastic Neumann-series recursion (Agarwal et al. 2017)."""

from __future__ import annotations

import math
import warnings

import torch

from influence_widgets.core.errors import (
    InfluenceWarning,
    check_nonnegative,
    check_positive_int,
    not_positive_definite,
)
from influence_widgets.core.hvp import HessianOperator
from influence_widgets.core.progress import progress_bar
from influence_widgets.core.solvers.base import LANCZOS_STEPS, Solver
from influence_widgets.core.solvers.spectrum import power_iteration, smallest_eigenvalue

__all__ = ["LiSSA"]


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
    summary = "the paper's stochastic recursion (LiSSA), its scale chosen so it cannot diverge"
    chooses_damping = True  # from the Lanczos bound on lambda_min it computes anyway

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
        low = smallest_eigenvalue(op, k=LANCZOS_STEPS, seed=self.seed)
        if op.auto_damping:
            low += self.choose_damping(op, low, exact=op.p <= LANCZOS_STEPS)
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
                batch_tops.append(power_iteration(lambda v, i=idx: op.matvec(v, i), op))
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
