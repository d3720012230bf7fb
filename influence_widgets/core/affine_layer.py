"""The Hessian rows of the layer before the linear head, without HVPs through the network.

A ``Conv2d`` or ``Linear`` layer computes u_i = W P~_i: per output position s, u_i[c, s] =
sum_q W[c, q] P~_i[s, q], with P~_i the im2col patches of its input (a column of ones when the bias
is in theta). Its input does not depend on its own parameters theta_L, so the loss depends on
theta_L only through u_i; when the only parameters in theta after it are those of the final
Linear head o = W_h phi~ (phi = the head's input, a parameter-free function of u), exactly (no
Gauss-Newton approximation):

    Hess_{theta_L theta_L} L(z_i) = U_i^T K_i U_i,    K_i = d^2 L / du^2                      (m x m)
    d^2 L / du_d dW_h[c, e] = (A_i W_h J_i)[c, d] phi~_ie + r_ic J_i[e, d],   J_i = dphi / du

with U_i = du_i/dtheta_L the patch map, A_i and r_i the Hessian and gradient of L in the logits.
K_i and J_i come from forward-mode derivatives with respect to u (m tangents per sample through
the layers after this one only); the contractions with the patches are matrix products. For the
paper's small CNN on digits this replaces 584 of the 664 HVPs through the whole network (the
second convolution) by m = 128 tangents through the tanh and the head. No library computes these
blocks for us, hence written here; :meth:`AffineLayer.detect` checks the assumptions on a real
forward pass, and the result is tested against generic HVPs.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch.func import grad, jacfwd, vmap

from influence_widgets.core.objective import Objective, TrainingSet
from influence_widgets.core.progress import progress_bar

__all__ = ["AffineLayer", "Head", "layer_input_output"]


class Head(Protocol):
    """What :class:`AffineLayer` uses of the model's linear head, :class:`hvp.LinearHead
    <influence_widgets.core.hvp.LinearHead>` (described here, not imported: hvp imports this
    module)."""

    lin: torch.nn.Linear
    weight_name: str
    C: int  # classes (the head's outputs)
    D: int  # the head's input features
    Dt: int  # D, plus 1 when the bias is in theta
    positions: torch.Tensor  # theta positions of the head's entries
    perm: torch.Tensor  # their places in the (class, feature~) layout

    def batch_terms(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


def layer_input_output(
    obj: Objective, module: torch.nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """(first input of ``module``, its output, the model's output) in one forward pass at
    theta_hat without gradients; the first two are None when the pass does not call ``module``."""
    captured: dict[str, torch.Tensor] = {}

    def hook(_mod, inputs, output):
        captured["input"], captured["output"] = inputs[0], output

    with obj.lock:  # the hook must see this thread's pass only
        handle = module.register_forward_hook(hook)
        try:
            with torch.no_grad():
                out = obj.forward(obj.theta, x)
        finally:
            handle.remove()
    return captured.get("input"), captured.get("output"), out


class AffineLayer:
    """A Conv2d/Linear layer whose weight (and bias) are in theta, called once per forward."""

    def __init__(self, obj: Objective, module: torch.nn.Module, prefix: str, head: Head) -> None:
        self.obj = obj
        self.head = head
        self.module = module
        names = obj.spec.names
        weight = module.weight
        self.C = weight.shape[0]
        self.Q = weight[0].numel()
        self.with_bias = module.bias is not None and f"{prefix}bias" in names
        self.Qt = self.Q + int(self.with_bias)
        starts = torch.cumsum(torch.tensor((0, *obj.spec.numels[:-1])), 0).tolist()
        offsets = dict(zip(names, starts, strict=True))
        grid = offsets[f"{prefix}weight"] + torch.arange(self.C * self.Q).reshape(self.C, self.Q)
        if self.with_bias:
            bias = offsets[f"{prefix}bias"] + torch.arange(self.C)
            grid = torch.cat([grid, bias[:, None]], dim=1)
        # theta positions of the layer's entries in the (output channel, patch entry~) layout
        self.positions = grid.reshape(-1).to(obj.device)

    # ----- detection --------------------------------------------------------------------------
    @classmethod
    def detect(cls, obj: Objective, train: TrainingSet, head: Head) -> AffineLayer | None:
        """The layer with the most parameters in theta whose downstream parameters in theta are
        exactly the head's (only parameter-free or frozen modules between them), or None."""
        names = set(obj.spec.names)
        candidates = []
        for prefix, mod in obj.module.named_modules():
            dot = f"{prefix}." if prefix else ""
            if mod is head.lin or f"{dot}weight" not in names:
                continue
            if isinstance(mod, torch.nn.Linear) or (
                type(mod) is torch.nn.Conv2d
                and mod.groups == 1
                and mod.padding_mode == "zeros"
                and not isinstance(mod.padding, str)
            ):
                candidates.append(cls(obj, mod, dot, head))
        x0, _ = train.take([0, min(1, train.n - 1)])
        x0 = obj.cast_inputs(x0)
        head_positions = torch.sort(head.positions).values
        for layer in sorted(candidates, key=lambda c: -len(c.positions)):
            downstream = layer._downstream_positions(x0)
            if downstream is not None and torch.equal(downstream, head_positions):
                return layer
        return None

    def _downstream_positions(self, x: torch.Tensor) -> torch.Tensor | None:
        """theta positions that the layer's input does NOT depend on (structurally, by autograd),
        minus the layer's own; None if the layer is not called exactly once per forward or its
        input has an unsupported shape."""
        obj = self.obj
        leaves = {n: v.clone().requires_grad_(True) for n, v in obj.unflatten(obj.theta).items()}
        seen: list[torch.Tensor] = []

        def hook(_mod, inputs):
            seen.append(inputs[0])

        with obj.lock:  # the hook must see this thread's pass only
            handle = self.module.register_forward_pre_hook(hook)
            try:
                with torch.enable_grad():
                    torch.func.functional_call(obj.module, {**obj.frozen, **leaves}, (x,))
            finally:
                handle.remove()
        expected_ndim = 4 if isinstance(self.module, torch.nn.Conv2d) else 2
        if len(seen) != 1 or seen[0].ndim != expected_ndim:
            return None
        a = seen[0]
        depends = [False] * len(leaves)
        if a.requires_grad:
            grads = torch.autograd.grad(
                a.sum(), list(leaves.values()), allow_unused=True, materialize_grads=False
            )
            depends = [g is not None for g in grads]
        mask = torch.cat(
            [
                torch.full((numel,), dep, dtype=torch.bool)
                for numel, dep in zip(obj.spec.numels, depends, strict=True)
            ]
        ).to(obj.device)
        if bool(mask[self.positions].any()):
            return None  # the layer's input depends on its own parameters
        mask[self.positions] = True  # the layer's own parameters are not downstream
        return (~mask).nonzero().squeeze(1)

    # ----- the blocks -------------------------------------------------------------------------
    def _patches(self, a: torch.Tensor) -> torch.Tensor:
        """P~ (B, S, Q~): the layer's input as patches, a column of ones when the bias is in theta."""
        mod = self.module
        if isinstance(mod, torch.nn.Conv2d):
            P = F.unfold(
                a, mod.kernel_size, dilation=mod.dilation, padding=mod.padding, stride=mod.stride
            ).transpose(1, 2)
        else:
            P = a[:, None, :]
        if self.with_bias:
            P = torch.cat([P, torch.ones_like(P[..., :1])], dim=2)
        return P

    def _inputs_and_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, u, _ = layer_input_output(self.obj, self.module, x)
        return a, u

    def _tail_derivatives(
        self, x: torch.Tensor, y: torch.Tensor, u: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample K_i = d^2 L/du^2 (B, m, m) and the Jacobian J_i = dphi/du of the head's
        features (B, D, m), by forward-mode derivatives with the layer's output replaced by u."""
        obj, head = self.obj, self.head
        replacement: dict[str, torch.Tensor] = {}
        features: dict[str, torch.Tensor] = {}

        def replace(_mod, _inputs, output):
            return replacement["u"].reshape(output.shape)

        def capture(_mod, inputs):
            features["phi"] = inputs[0]

        def loss_of(u_i, x_i, y_i):
            replacement["u"] = u_i.unsqueeze(0)
            loss = obj.loss(obj.theta, x_i.unsqueeze(0), y_i.unsqueeze(0))[0]
            return loss, features["phi"][0]

        # d/du of (dL/du, phi): K and J in one forward-mode pass
        second = vmap(jacfwd(grad(loss_of, has_aux=True)))
        with obj.lock:  # the hooks must see this thread's passes only
            handles = [
                self.module.register_forward_hook(replace),
                head.lin.register_forward_pre_hook(capture),
            ]
            try:
                K, J = second(u.reshape(len(u), -1), x, y)
            finally:
                for handle in handles:
                    handle.remove()
        return K, J

    def fill(self, H: torch.Tensor, train: TrainingSet, batch_size: int, progress: bool) -> None:
        """Write sum_i of the exact blocks (L, L), (L, head) and (head, L) into H."""
        obj, head = self.obj, self.head
        C, Qt, L = self.C, self.Qt, self.positions
        W = obj.unflatten(obj.theta)[head.weight_name]  # (C_o, D)
        H_LL = torch.zeros(C, Qt, C, Qt, dtype=obj.dtype, device=obj.device)
        H_Lh = torch.zeros(C, Qt, head.C, head.Dt, dtype=obj.dtype, device=obj.device)
        bar = progress_bar(total=train.n, desc="Hessian (affine layer)", disable=not progress)
        for x, y, _ in train.batches(batch_size):
            x, y = obj.cast_inputs(x), obj.cast_targets(y)
            a, u = self._inputs_and_outputs(x)
            P = self._patches(a)  # (B, S, Q~)
            B, S = P.shape[0], P.shape[1]
            K, J = self._tail_derivatives(x, y, u)
            # (L, L): sum_{s, s'} P~[i, s, q] K[i, c, s, c', s'] P~[i, s', q']
            T = (K.reshape(B, C * S * C, S) @ P).reshape(B, C, S, C, Qt)
            H_LL += torch.einsum("isq,icsdr->cqdr", P, T)
            # (L, head): with o = W phi~ linear in the head, d^2 L/du_d dW[c, e] =
            # (A W J)[c, d] phi~_e + r_c J[e, d], where A, r are the logits' Hessian and gradient.
            phi, A, r = head.batch_terms(x, y)
            G = (A @ W @ J).reshape(B, head.C, C, S)
            Z = torch.einsum("isq,ikcs->icqk", P, G).reshape(B, -1)
            H_Lh += (Z.T @ phi).reshape(C, Qt, head.C, head.Dt)
            N = torch.einsum("isq,iecs->icqe", P, J.reshape(B, -1, C, S))
            H_Lh[..., : head.D] += torch.einsum("ik,icqe->cqke", r, N)
            bar.update(B)
        bar.close()
        H_LL = H_LL.reshape(C * Qt, C * Qt) / train.n
        # the head's columns in theta's order (LinearHead.perm maps them to its layout)
        H_Lh = H_Lh.reshape(C * Qt, -1)[:, head.perm] / train.n
        hp = head.positions
        H[L[:, None], L[None, :]] = H_LL
        H[L[:, None], hp[None, :]] = H_Lh
        H[hp[:, None], L[None, :]] = H_Lh.T
