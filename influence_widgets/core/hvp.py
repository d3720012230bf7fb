"""Products with the Hessian of the empirical risk or its Gauss-Newton matrix, and the matrix
assembled from them.

hessian="exact":         H = (1/n) sum_i Hess_theta L(z_i, theta_hat) + l2 I (+ damping I)
hessian="gauss-newton":  G = (1/n) sum_i J_i^T Lambda_i J_i + l2 I (+ damping I)

(J_i the Jacobian of the model's outputs in theta, Lambda_i the loss's Hessian in the outputs:
:mod:`~influence_widgets.core.gauss_newton`). HVPs are forward-over-reverse (``jvp`` of ``grad``),
Gauss-Newton products ``jvp`` then ``vjp``, both vmapped over several vectors at once and streamed
over the training set in batches, so no more than one batch's worth of per-sample work is ever in
memory. ``torch.func.hessian`` over the whole data set is never built.
"""

from __future__ import annotations

import torch
from torch.func import grad, hessian, jvp, vmap

from influence_widgets.core.affine_layer import AffineLayer, layer_input_output
from influence_widgets.core.damping import is_auto
from influence_widgets.core.gauss_newton import (
    gauss_newton_dense,
    gauss_newton_product,
    psd_factor,
)
from influence_widgets.core.objective import Objective, TrainingSet
from influence_widgets.core.progress import progress_bar

__all__ = [
    "EXACT",
    "GAUSS_NEWTON",
    "HESSIANS",
    "HESSIAN_NAMES",
    "HVP_BATCH",
    "HVP_CHUNK",
    "HessianOperator",
    "LinearHead",
    "check_hessian",
]

# Training points and basis vectors per vmapped HVP call when assembling H (see _dense_from_hvps).
HVP_BATCH = 128
HVP_CHUNK = 16

EXACT = "exact"
GAUSS_NEWTON = "gauss-newton"
HESSIANS = (EXACT, GAUSS_NEWTON)
HESSIAN_NAMES = {EXACT: "the exact Hessian", GAUSS_NEWTON: "the Gauss-Newton matrix"}  # in words


def check_hessian(value, name: str = "hessian") -> str:
    """``"exact"`` or ``"gauss-newton"``; else a ValueError/TypeError naming ``name``."""
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected 'exact' or 'gauss-newton', got {type(value).__name__}")
    if value not in HESSIANS:
        raise ValueError(
            f"{name}: expected 'exact' (the Hessian of R) or 'gauss-newton' (its Gauss-Newton "
            f"matrix, positive semi-definite), got {value!r}"
        )
    return value


class HessianOperator:
    """The damped curvature H + damping I of R at theta_hat, as a linear operator on R^p: H the
    exact Hessian, or with ``hessian="gauss-newton"`` the Gauss-Newton matrix G (same l2 term).

    Args:
        objective: the risk and the point theta_hat (``objective.theta``).
        train: the training set the risk averages over.
        batch_size: training points per HVP batch.
        damping: added to the diagonal, as the paper's code does for non-convex models; "auto"
            starts at 0 (``auto_damping`` is then True) and the solver's ``fit`` sets
            ``damping`` to the rung it chooses (:mod:`~influence_widgets.core.damping`).
        structured: use the exact structure of a final Linear layer (:class:`LinearHead`) and of
            an affine layer before it (:class:`AffineLayer`) where found; ``False`` forces generic
            HVPs (for testing one against the other).
        cache_mb: memory for caching the linear head's per-sample terms across products.
        hessian: "exact" (H) or "gauss-newton" (G).
    """

    def __init__(
        self,
        objective: Objective,
        train: TrainingSet,
        batch_size: int,
        damping: float | str = 0.0,
        structured: bool = True,
        cache_mb: float = 512,
        hessian: str = EXACT,
    ) -> None:
        self.objective = objective
        self.train = train
        self.batch_size = batch_size
        self.hessian = check_hessian(hessian)
        self.auto_damping = is_auto(damping)
        self.damping = 0.0 if self.auto_damping else float(damping)
        self.p = objective.n_params
        self.cache_mb = cache_mb
        gauss_newton = self.hessian == GAUSS_NEWTON
        self.head = LinearHead.detect(objective, train, gauss_newton) if structured else None
        self.hvp_count = 0

    # ----- products -------------------------------------------------------------------------
    def _batch_hvp(self, x: torch.Tensor, y: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """sum over the batch of Hess L(z_i) v (or J_i^T Lambda_i J_i v), for each column v of V
        (p, m) -> (p, m)."""
        if self.head is not None and self.head.covers_theta:
            return self.head.hvp_sum(*self.head.batch_terms(x, y)[:2], V)
        obj = self.objective
        if self.hessian == GAUSS_NEWTON:
            return gauss_newton_product(obj, x, y, V)
        theta = obj.theta

        def batch_loss(th: torch.Tensor) -> torch.Tensor:
            return obj.loss(th, x, y).sum()

        def one(v: torch.Tensor) -> torch.Tensor:
            return jvp(grad(batch_loss), (theta,), (v,))[1]

        with obj.lock:  # forward-mode AD: one thread at a time (objective.FUNCTORCH_LOCK)
            return vmap(one)(V.T).T

    def matvec(self, V: torch.Tensor, batch_idx: torch.Tensor | None = None) -> torch.Tensor:
        """(H + damping I) V (G + damping I with ``hessian="gauss-newton"``) for V of shape (p,)
        or (p, m).

        With ``batch_idx``, the data term averages over those training points only (LiSSA's
        stochastic estimate); otherwise over all n, in batches.
        """
        squeeze = V.ndim == 1
        V2 = V.reshape(self.p, -1)
        out = torch.zeros_like(V2)
        obj = self.objective
        if batch_idx is not None:
            cached = (
                self.head.cached_terms if self.head is not None and self.head.covers_theta else None
            )
            if cached is not None:
                out += self.head.hvp_sum(cached[0][batch_idx], cached[1][batch_idx], V2)
            else:
                x, y = self.train.take(batch_idx)
                out += self._batch_hvp(obj.cast_inputs(x), obj.cast_targets(y), V2)
            out /= len(batch_idx)
        elif self.head is not None and self.head.covers_theta:
            for phi, A, _ in self.head.terms(self.train, self.batch_size, self.cache_mb):
                out += self.head.hvp_sum(phi, A, V2)
            out /= self.train.n
        else:
            for x, y, _ in self.train.batches(self.batch_size):
                out += self._batch_hvp(obj.cast_inputs(x), obj.cast_targets(y), V2)
            out /= self.train.n
        out += (obj.l2 + self.damping) * V2
        self.hvp_count += V2.shape[1]
        return out.reshape(V.shape) if squeeze else out

    # ----- the whole matrix -----------------------------------------------------------------
    def dense(self, chunk: int | None = None, progress: bool = True) -> torch.Tensor:
        """The symmetric (p, p) matrix H + damping I (or G + damping I).

        A final ``nn.Linear`` whose weight (and bias) are in theta gets the exact structured formula
        of :class:`LinearHead` for its block, and the largest Conv2d/Linear layer before it the
        exact formula of :class:`AffineLayer` for its rows and columns; the remaining columns come
        from batched HVPs against chunks of basis vectors, and their rows by symmetry. G, unless
        the head covers theta, is the sum of the per-sample Gauss-Newton rows' Gram matrices
        (:func:`~influence_widgets.core.gauss_newton.gauss_newton_dense`).
        """
        head = self.head.positions if self.head is not None else None
        if self.head is not None and self.head.covers_theta:
            H = self.head.dense_sum(self.train, self.batch_size, self.cache_mb, progress)
            H = H / self.train.n
        elif self.hessian == GAUSS_NEWTON:
            H = gauss_newton_dense(self.objective, self.train, self.batch_size, progress)
        else:
            layer = self.head and AffineLayer.detect(self.objective, self.train, self.head)
            structured = [b for b in (head, layer.positions if layer else None) if b is not None]
            rest = torch.ones(self.p, dtype=torch.bool, device=self.objective.device)
            for block in structured:
                rest[block] = False
            rest = rest.nonzero().squeeze(1)
            H = self._dense_from_hvps(rest, chunk, progress)
            for block in structured:  # the HVP columns' mirror images
                H[rest[:, None], block[None, :]] = H[block[:, None], rest[None, :]].T
            if layer is not None:
                layer.fill(H, self.train, min(self.batch_size, HVP_BATCH), progress)
            if head is not None:
                H_head = self.head.dense_sum(self.train, self.batch_size, self.cache_mb, progress)
                H[head[:, None], head[None, :]] = H_head / self.train.n
        H = 0.5 * (H + H.T)
        H.diagonal().add_(self.objective.l2 + self.damping)
        return H

    def _dense_from_hvps(
        self, columns: torch.Tensor, chunk: int | None, progress: bool
    ) -> torch.Tensor:
        """H's data term with the given columns filled by HVPs against basis vectors (rest 0).

        Work is vmapped over ``chunk`` basis vectors and HVP_BATCH training points at a time:
        measured on 2 cores, small blocks that stay in cache beat one large vmapped call.
        """
        p, k = self.p, len(columns)
        obj = self.objective
        batch = min(self.batch_size, HVP_BATCH)
        chunk = chunk or HVP_CHUNK
        H = torch.zeros(p, p, dtype=obj.dtype, device=obj.device)
        n_batches = -(-self.train.n // batch)
        bar = progress_bar(
            total=-(-k // chunk) * n_batches, desc="Hessian from HVPs", disable=not progress
        )
        for start in range(0, k, chunk):
            cols = columns[start : start + chunk]
            E = torch.zeros(p, len(cols), dtype=obj.dtype, device=obj.device)
            E[cols, torch.arange(len(cols), device=obj.device)] = 1.0
            acc = torch.zeros_like(E)
            for x, y, _ in self.train.batches(batch):
                acc += self._batch_hvp(obj.cast_inputs(x), obj.cast_targets(y), E)
                bar.update()
            H[:, cols] = acc
        bar.close()
        self.hvp_count += k
        return H / self.train.n

    def top_eigenvalue(self, iters: int = 50, tol: float = 1e-4, seed: int = 0) -> float:
        """The largest eigenvalue of H + damping I, by power iteration on full-batch HVPs."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        v = torch.randn(self.p, generator=gen, dtype=self.objective.dtype)
        v = (v / v.norm()).to(self.objective.device)
        lam = 0.0
        for _ in range(iters):
            w = self.matvec(v)
            new = float(v.dot(w))
            norm = w.norm()
            if not torch.isfinite(norm) or norm == 0:
                break
            v = w / norm
            if abs(new - lam) <= tol * abs(new):
                lam = new
                break
            lam = new
        return lam


class LinearHead:
    """theta is the weight (and bias) of the model's final ``nn.Linear``: the Hessian is structured.

    With logits o_i = W phi_i + b linear in theta and the features phi_i independent of theta, the
    per-sample Hessian of L is A_i kron (phi~_i phi~_i^T), where A_i = Hess_o L(o_i, y_i) (C x C)
    and phi~_i = [phi_i, 1] (the 1 only when the bias is in theta). This is exact, not a
    Gauss-Newton approximation, because the logits are linear in theta; with ``gauss_newton``
    each A_i is replaced by its positive semi-definite part (the same for a loss convex in the
    logits), which makes it the Gauss-Newton matrix's block. HVPs become three small
    products per batch and the dense Hessian C(C+1)/2 blocks of X~^T diag(a) X~, about D/C times
    fewer flops than p generic HVPs. When theta also holds earlier layers, only their columns of H
    need HVPs: the head's own block comes from this formula and its cross terms from symmetry. No
    library computes this Kronecker-structured sum for us, hence written here. :meth:`detect`
    checks the structure on a real forward pass.
    """

    def __init__(
        self, obj: Objective, lin: torch.nn.Linear, prefix: str, gauss_newton: bool = False
    ) -> None:
        self.obj = obj
        self.lin = lin
        self.gauss_newton = gauss_newton
        self.weight_name = f"{prefix}weight"
        self.C, self.D = lin.out_features, lin.in_features
        names = obj.spec.names
        self.with_bias = f"{prefix}bias" in names
        self.Dt = self.D + int(self.with_bias)
        starts = torch.cumsum(torch.tensor((0, *obj.spec.numels[:-1])), 0).tolist()
        offsets = dict(zip(names, starts, strict=True))
        positions, layout = [], []
        for name in names:
            if name == f"{prefix}weight":
                grid = torch.arange(self.C)[:, None] * self.Dt + torch.arange(self.D)[None, :]
                layout.append(grid.reshape(-1))
            elif name == f"{prefix}bias":
                layout.append(torch.arange(self.C) * self.Dt + self.D)
            else:
                continue
            positions.append(offsets[name] + torch.arange(len(layout[-1])))
        # theta positions of the head's entries, and their places in the (class, feature~) layout
        self.positions = torch.cat(positions).to(obj.device)
        self.perm = torch.cat(layout).to(obj.device)
        self.inv_perm = torch.argsort(self.perm)
        self.covers_theta = len(self.positions) == obj.n_params
        self._cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

        def loss_of_logits(o: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return obj.loss_fn(o.unsqueeze(0), y.unsqueeze(0))[0]

        self._logit_hessians = vmap(hessian(loss_of_logits))
        self._logit_gradients = vmap(grad(loss_of_logits))

    @classmethod
    def detect(
        cls, obj: Objective, train: TrainingSet, gauss_newton: bool = False
    ) -> LinearHead | None:
        """The head if theta contains the weight of the Linear that produces the model's output
        (``gauss_newton``: its A_i made positive semi-definite)."""
        names = set(obj.spec.names)
        for prefix, mod in obj.module.named_modules():
            if not isinstance(mod, torch.nn.Linear):
                continue
            dot = f"{prefix}." if prefix else ""
            if f"{dot}weight" in names:
                head = cls(obj, mod, dot, gauss_newton)
                x0, _ = train.take([0])
                phi, out = head.features_and_output(obj.cast_inputs(x0))
                if phi is not None:
                    return head
        return None

    def features_and_output(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(phi~, logits) for a batch; phi~ is None when the Linear's output is not the model's."""
        phi, lin_out, out = layer_input_output(self.obj, self.lin, x)
        if lin_out is not out or out.ndim != 2 or phi is None or phi.ndim != 2:
            return None, out
        if self.with_bias:
            phi = torch.cat([phi, torch.ones_like(phi[:, :1])], dim=1)
        return phi, out

    def batch_terms(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For a cast batch: phi~ (B, D~), the per-sample logit Hessians A (B, C, C) and logit
        gradients r (B, C) = dL/do_i, so that grad_theta L(z_i) = r_i kron phi~_i. With
        ``gauss_newton``, A_i = S_i S_i^T, its positive semi-definite part."""
        phi, out = self.features_and_output(x)
        with self.obj.lock:  # hessian is forward-over-reverse (objective.FUNCTORCH_LOCK)
            A, r = self._logit_hessians(out, y), self._logit_gradients(out, y)
        if self.gauss_newton:
            S = psd_factor(A)
            A = S @ S.transpose(1, 2)
        return phi, A, r

    @property
    def cached_terms(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(phi~, A, r) over the whole training set once :meth:`terms` has cached them, else None."""
        return self._cache

    def terms(self, train: TrainingSet, batch_size: int, budget_mb: float):
        """Yield (phi~, A, r) over the training set in order, cached whole when it fits
        ``budget_mb``."""
        if self._cache is not None:
            yield self._cache
            return
        itemsize = self.obj.theta.element_size()
        fits = train.n * (self.Dt + self.C * self.C + self.C) * itemsize <= budget_mb * 2**20
        parts = []
        for x, y, _ in train.batches(batch_size):
            terms = self.batch_terms(self.obj.cast_inputs(x), self.obj.cast_targets(y))
            if fits:
                parts.append(terms)
            else:
                yield terms
        if fits:
            self._cache = tuple(torch.cat(column) for column in zip(*parts, strict=True))
            yield self._cache

    def gradient_dots(
        self, train: TrainingSet, batch_size: int, budget_mb: float, S: torch.Tensor
    ) -> torch.Tensor:
        """grad L(z_i)^T s for every training point and each column s of S (p, T) -> (T, n),
        as r_i^T S~ phi~_i with S~ the (C, D~) layout of s: one product over the features."""
        Sa = S[self.inv_perm].T.reshape(S.shape[1], self.C, self.Dt)
        parts = []
        for phi, _, r in self.terms(train, batch_size, budget_mb):
            # phi (B, D~) @ S~^T first: (B, T*C), never a (T, B, D~) intermediate.
            logit_dirs = (phi @ Sa.reshape(-1, self.Dt).T).reshape(len(phi), -1, self.C)
            parts.append((logit_dirs * r[:, None, :]).sum(-1).T)
        return torch.cat(parts, dim=1)

    def hvp_sum(self, phi: torch.Tensor, A: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """sum_i Hess L(z_i) V over the points whose terms are given, V (p, m) -> (p, m)."""
        m = V.shape[1]
        Va = V[self.inv_perm].T.reshape(m, self.C, self.Dt)
        tangent = torch.einsum("bd,mcd->mbc", phi, Va)
        curved = torch.einsum("bce,mbe->mbc", A, tangent)
        out = torch.einsum("mbc,bd->mcd", curved, phi).reshape(m, -1).T
        return out[self.perm]

    def hessian_sum(self, phi: torch.Tensor, A: torch.Tensor, H4: torch.Tensor) -> None:
        """Add sum_i A_i kron phi~_i phi~_i^T to H4 (C, D~, C, D~), one upper block row at a time."""
        C, Dt = self.C, self.Dt
        for c in range(C):
            M = (A[:, c, c:, None] * phi[:, None, :]).reshape(len(phi), -1)
            block = (phi.T @ M).reshape(Dt, C - c, Dt)  # [d, c', d']
            H4[c, :, c:, :] += block
            if c + 1 < C:
                H4[c + 1 :, :, c, :] += block[:, 1:, :].permute(1, 2, 0)

    def dense_sum(self, train: TrainingSet, batch_size: int, budget_mb: float, progress: bool):
        """sum_i Hess L(z_i) over the head's own entries, (h, h) in theta's order of them."""
        H4 = torch.zeros(
            self.C, self.Dt, self.C, self.Dt, dtype=self.obj.dtype, device=self.obj.device
        )
        bar = progress_bar(total=train.n, desc="Hessian (linear head)", disable=not progress)
        for phi, A, _ in self.terms(train, batch_size, budget_mb):
            for start in range(0, len(phi), batch_size):  # bounds the (B, C, D~) temporary
                self.hessian_sum(phi[start : start + batch_size], A[start : start + batch_size], H4)
                bar.update(len(phi[start : start + batch_size]))
        bar.close()
        H = H4.reshape(self.C * self.Dt, -1)
        return H[self.perm][:, self.perm]
