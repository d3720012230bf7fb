"""Seeded random projections of per-example gradients, p -> k dimensions, in bounded memory.

phi = g P with P a p x k matrix of independent entries, N(0, 1/k) ("gaussian") or +-1/sqrt(k)
("rademacher"), so that E[P P^T] = I_p and inner products are kept in expectation:
E[(g P) . (g' P)] = g . g' (Johnson-Lindenstrauss; TRAK's projection, scaled by 1/sqrt(k) so that
a damping means the same at every k). "identity" is P = I_p (k = p): the exact gradients.

P is never needed whole: it is made of blocks of BLOCK_ROWS rows, block b from a
``torch.Generator`` on the compute device seeded by ``numpy.random.SeedSequence([seed, model,
b])``, so any block can be generated again, alone, with the same numbers, and P does not depend on
the memory budget. A :class:`Projection` keeps P when it fits its budget and otherwise generates
it at each use in chunks of whole blocks, one chunk of at most ``budget_mb`` (but at least one
block, BLOCK_ROWS x k numbers) at a time. The same seed gives the same P on the same kind of
device (CPU and CUDA generators differ).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["BLOCK_ROWS", "PROJECTIONS", "Projection", "projection_dtype"]

PROJECTIONS = ("gaussian", "rademacher", "identity")
BLOCK_ROWS = 1024  # rows of P drawn from one seed: a chunk is a whole number of blocks


def projection_dtype(gradient_dtype: torch.dtype) -> torch.dtype:
    """The dtype P and g P are computed in for gradients of ``gradient_dtype``: float32 for
    float64 (see the module's docstring), else the gradients' own."""
    return torch.float32 if gradient_dtype == torch.float64 else gradient_dtype


class Projection:
    """x -> x P for x (B, p): P of one model of an ensemble (``model`` picks its seed).

    Args:
        kind: one of :data:`PROJECTIONS`.
        p, k: the input and output dimensions (k = p for "identity").
        seed, model: P depends on both.
        dtype, device: P's (:func:`projection_dtype` of the gradients').
        budget_mb: memory for P: kept whole when p * k numbers fit (or p <= BLOCK_ROWS), else
            generated at each call in chunks of whole blocks of at most this size (at least one
            block).
    """

    def __init__(
        self,
        kind: str,
        p: int,
        k: int,
        *,
        seed: int,
        model: int,
        dtype: torch.dtype,
        device: torch.device,
        budget_mb: float,
    ) -> None:
        self.kind, self.p, self.k = kind, p, k
        self.seed, self.model = seed, model
        self.dtype, self.device = dtype, device
        itemsize = torch.empty((), dtype=dtype).element_size()
        blocks = max(1, int(budget_mb * 2**20 // (BLOCK_ROWS * k * itemsize)))
        self.chunk_rows = min(p, blocks * BLOCK_ROWS)
        self.kept = None
        if kind != "identity" and self.chunk_rows == p:
            self.kept = self.chunk(0)

    @property
    def n_chunks(self) -> int:
        return -(-self.p // self.chunk_rows)

    def block(self, b: int) -> torch.Tensor:
        """Rows [b * BLOCK_ROWS, (b + 1) * BLOCK_ROWS) of P (fewer for the last), unscaled."""
        rows = min(BLOCK_ROWS, self.p - b * BLOCK_ROWS)
        state = np.random.SeedSequence([self.seed, self.model, b]).generate_state(1, np.uint64)
        gen = torch.Generator(device=self.device).manual_seed(int(state[0]))
        shape = (rows, self.k)
        if self.kind == "gaussian":
            return torch.randn(shape, generator=gen, device=self.device, dtype=self.dtype)
        bits = torch.randint(0, 2, shape, generator=gen, device=self.device)
        return (2 * bits - 1).to(self.dtype)

    def chunk(self, c: int) -> torch.Tensor:
        """Rows [c * chunk_rows, (c + 1) * chunk_rows) of P, (rows, k): whole blocks."""
        first = c * self.chunk_rows // BLOCK_ROWS
        last = min(self.p, (c + 1) * self.chunk_rows)
        blocks = [self.block(b) for b in range(first, -(-last // BLOCK_ROWS))]
        return torch.cat(blocks) / self.k**0.5

    def __call__(self, G: torch.Tensor) -> torch.Tensor:
        """G P for G (B, p): (B, k), in G's dtype (computed in P's)."""
        if self.kind == "identity":
            return G
        Gp = G.to(self.dtype)
        if self.kept is not None:
            return (Gp @ self.kept).to(G.dtype)
        out = torch.zeros(len(G), self.k, dtype=self.dtype, device=G.device)
        for c in range(self.n_chunks):
            start = c * self.chunk_rows
            out += Gp[:, start : start + self.chunk_rows] @ self.chunk(c)
        return out.to(G.dtype)
