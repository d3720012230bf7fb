"""EK-FAC's factors: the eigenvalue-corrected Kronecker-factored approximation G_EK of the
Gauss-Newton matrix (George et al. 2018), fitted over the training set, and its shifted inverse
applied to parameter-space vectors. Used by the ``solver="ekfac"`` solver
(:mod:`influence_widgets.core.solvers.ekfac`, which documents the quantity) and as CG's
preconditioner (:mod:`influence_widgets.core.solvers.cg`).

Written here rather than taken from a library (evaluated for issue 17):

- ``kronfluence`` 1.0.1 (2024-07) computes pairwise influence scores through its own task/
  analysis pipeline that writes factors to disk; it has no ``solve(B)`` for arbitrary right-hand
  sides in our flat parameter order, approximates the Fisher by sampling labels, and imports
  ``accelerate``, ``einconv`` and ``safetensors`` (it declares ``torchvision`` too, without
  importing it; ``make bench-peers`` installs it with ``--no-deps`` for that reason).
- ``curvlinops-for-pytorch`` 3.0.1 has an EK-FAC operator with the exact GGN ("type-2") and an
  inverse with exact damping, but only for ``nn.MSELoss``/``CrossEntropyLoss``/
  ``BCEWithLogitsLoss`` on an ``nn.Module`` evaluated in place (our losses are per-sample
  callables, our models run through ``functional_call`` on a flat theta), and it depends on
  ``backpack-for-pytorch`` (which requires ``torchvision``), ``linear_operator``, ``einconv`` and
  ``opt-einsum``.
- ``nngeometry`` 0.4 requires ``torchvision`` and orders parameters by its own layer collection.

The method needs a forward hook per layer and two passes over the data, about 200 lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F

from influence_widgets.core.gauss_newton import output_hessian_factor
from influence_widgets.core.hvp import HessianOperator
from influence_widgets.core.objective import Objective
from influence_widgets.core.progress import progress_bar

__all__ = [
    "CORRECTION_CHUNK_ELEMENTS",
    "apply_inverse",
    "coverage_gap",
    "covered_layers",
    "factor_eigenvalues",
    "fit_factors",
    "set_shift",
]

# Elements of the per-sample gradient matrices D_ic held at once in the correction pass of a layer
# whose inputs have several positions (a convolution, or a Linear layer on sequences).
CORRECTION_CHUNK_ELEMENTS = 2**22


def fit_factors(op: HessianOperator, batch_size: int, progress: bool) -> list[_Layer]:
    """The EK-FAC factors Q_A, Q_G and the corrected eigenvalues n s (before dividing by n) of
    every covered layer of ``op``'s objective: two streams over the training set in batches of
    ``batch_size``, one backward pass per output dimension each."""
    obj = op.objective
    layers = covered_layers(obj)
    n_batches = -(-op.train.n // batch_size)
    bar = progress_bar(total=2 * n_batches, desc="EK-FAC", disable=not progress)
    try:
        for x, y, _ in op.train.batches(batch_size):
            for layer, (a, g) in zip(layers, _capture(obj, layers, x, y), strict=True):
                layer.add_covariances(a, g)
            bar.update()
        for layer in layers:
            layer.diagonalise()
        for x, y, _ in op.train.batches(batch_size):
            for layer, (a, g) in zip(layers, _capture(obj, layers, x, y), strict=True):
                layer.add_correction(a, g)
            bar.update()
    finally:
        bar.close()
    return layers


def factor_eigenvalues(layers: list[_Layer], n: int) -> torch.Tensor:
    """The eigenvalues s of the approximation G_EK of the Gauss-Newton matrix, all layers, flat."""
    return torch.cat([layer.s.reshape(-1) / n for layer in layers])


def set_shift(layers: list[_Layer], n: int, shift: float) -> None:
    """Make :func:`apply_inverse` solve with G_EK + ``shift`` I (``shift`` > 0 if s has zeros)."""
    for layer in layers:
        layer.denominator = layer.s / n + shift


def apply_inverse(layers: list[_Layer], B: torch.Tensor) -> torch.Tensor:
    """X = (G_EK + shift I)^-1 B for B (p, m), per layer Q_G [(Q_G^T B Q_A) / (s + shift)] Q_A^T
    (:func:`set_shift` sets the shift)."""
    X = torch.empty_like(B)
    for layer in layers:
        M = layer.gather(B.to(layer.Q_A.dtype))
        M = torch.einsum("ok,ojm,jl->klm", layer.Q_G, M, layer.Q_A)
        M = M / layer.denominator[:, :, None]
        M = torch.einsum("ko,ojm,lj->klm", layer.Q_G, M, layer.Q_A)
        layer.scatter(X, M.to(B.dtype))
    return X


@dataclass
class _Layer:
    """One covered layer: where its weight (out, in) and bias (out,) sit in theta, and its EK-FAC
    factors over the matrix [W | b] of shape (out, in_eff)."""

    name: str
    module: torch.nn.Module
    kind: str
    weight: slice | None
    bias: slice | None
    out: int
    A: torch.Tensor | None = None
    G: torch.Tensor | None = None
    Q_A: torch.Tensor | None = None
    Q_G: torch.Tensor | None = None
    s: torch.Tensor | None = None
    denominator: torch.Tensor | None = field(default=None, repr=False)

    def add_covariances(self, a: torch.Tensor, g: torch.Tensor) -> None:
        """A += sum a~ a~^T and G_out += sum g g^T over a batch: a (B, T, in_eff), g (B, C, T, out)."""
        A = torch.einsum("btj,btk->jk", a, a)
        G = torch.einsum("bctk,bctl->kl", g, g)
        self.A = A if self.A is None else self.A + A
        self.G = G if self.G is None else self.G + G

    def diagonalise(self) -> None:
        self.Q_A = torch.linalg.eigh(self.A)[1]
        self.Q_G = torch.linalg.eigh(self.G)[1]
        self.A = self.G = None
        self.s = self.Q_A.new_zeros(self.Q_G.shape[0], self.Q_A.shape[0])

    def add_correction(self, a: torch.Tensor, g: torch.Tensor) -> None:
        """s += sum_i sum_c (Q_G^T D_ic Q_A)^2 over a batch."""
        a, g = a @ self.Q_A, g @ self.Q_G
        if a.shape[1] == 1:  # one position: D_ic = g_ic a~_i^T, and the square factorises
            self.s += torch.einsum("bck,bj->kj", g[:, :, 0].pow(2), a[:, 0].pow(2))
            return
        per_sample = g.shape[1] * g.shape[3] * a.shape[2]
        step = max(1, CORRECTION_CHUNK_ELEMENTS // per_sample)
        for start in range(0, a.shape[0], step):
            D = torch.einsum("bctk,btj->bckj", g[start : start + step], a[start : start + step])
            self.s += D.pow(2).sum(dim=(0, 1))

    def gather(self, B: torch.Tensor) -> torch.Tensor:
        """The rows of B (p, m) for this layer as [W | b] matrices, (out, in_eff, m)."""
        parts = []
        if self.weight is not None:
            parts.append(B[self.weight].reshape(self.out, -1, B.shape[1]))
        if self.bias is not None:
            parts.append(B[self.bias].reshape(self.out, 1, B.shape[1]))
        return torch.cat(parts, dim=1)

    def scatter(self, X: torch.Tensor, M: torch.Tensor) -> None:
        """Write [W | b] matrices (out, in_eff, m) back to this layer's rows of X (p, m)."""
        if self.weight is not None:
            X[self.weight] = M[:, : M.shape[1] - (self.bias is not None)].reshape(-1, X.shape[1])
        if self.bias is not None:
            X[self.bias] = M[:, -1]


def covered_layers(objective: Objective) -> list[_Layer]:
    """The Linear/Conv2d layers holding theta, in theta's order; a ValueError naming ``params``
    for any parameter of theta that is not such a layer's weight or bias."""
    gap = coverage_gap(objective)
    if gap is not None:
        raise ValueError(
            f"params: {gap}; pass params=[...] with only Linear/Conv2d weights and biases, "
            f"or use solver='cg'"
        )
    modules = dict(objective.module.named_modules())
    layers: dict[str, _Layer] = {}
    start = 0
    for name, numel in zip(objective.spec.names, objective.spec.numels, strict=True):
        where = slice(start, start + numel)
        start += numel
        owner, _, leaf = name.rpartition(".")
        module = modules[owner]
        layer = layers.setdefault(
            owner, _Layer(owner, module, type(module).__name__, None, None, module.weight.shape[0])
        )
        setattr(layer, leaf, where)
    return list(layers.values())


def coverage_gap(objective: Objective) -> str | None:
    """Why EK-FAC cannot cover theta (the first parameter outside a covered Linear/Conv2d
    layer, named), or None when it covers every parameter in ``params``."""
    modules = dict(objective.module.named_modules())
    for name in objective.spec.names:
        owner, _, leaf = name.rpartition(".")
        gap = _layer_gap(owner, modules[owner], leaf)
        if gap is not None:
            return gap
    return None


def _layer_gap(owner: str, module: torch.nn.Module, leaf: str) -> str | None:
    label = f"layer {owner or '(the model itself)'!r} ({type(module).__name__})"
    if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) or leaf not in ("weight", "bias"):
        return f"{label} is not covered by EK-FAC"
    if isinstance(module, torch.nn.Conv2d) and (
        module.groups != 1 or isinstance(module.padding, str) or module.padding_mode != "zeros"
    ):
        return (
            f"{label} has groups={module.groups}, padding={module.padding!r}, "
            f"padding_mode={module.padding_mode!r}; EK-FAC covers Conv2d with groups=1 and "
            f"numeric zero padding only"
        )
    return None


def _capture(
    obj: Objective, layers: list[_Layer], x: torch.Tensor, y: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the inputs a~ (B, T, in_eff) and the pre-activation gradients g (B, C, T, out)
    of o_i^T S_i[:, c] for a batch, T positions over every call of the layer."""
    x, y = obj.cast_inputs(x), obj.cast_targets(y)
    theta = obj.theta.detach().requires_grad_(True)
    records: dict[str, list] = {layer.name: [] for layer in layers}
    with obj.lock, torch.enable_grad():
        hooks = [
            layer.module.register_forward_hook(partial(_record, records[layer.name]))
            for layer in layers
        ]
        try:
            output = obj.forward(theta, x)
        finally:
            for h in hooks:
                h.remove()
    for layer in layers:
        if not records[layer.name]:
            raise ValueError(
                f"params: layer {layer.name!r} ({layer.kind}) is never called in the model's "
                f"forward pass (its weights are used another way); EK-FAC cannot see its inputs. "
                f"Leave it out of params=, or use solver='cg'"
            )
    o = output.reshape(output.shape[0], -1)
    S = output_hessian_factor(obj, output.detach(), y)
    pre = [s for layer in layers for _, s in records[layer.name]]
    grads = [
        torch.autograd.grad((o * S[:, :, c]).sum(), pre, retain_graph=True, allow_unused=True)
        for c in range(S.shape[2])
    ]
    out, k = [], 0
    for layer in layers:
        calls = records[layer.name]
        a = torch.cat([_inputs(layer, inp) for inp, _ in calls], dim=1)
        g = torch.stack(
            [
                torch.cat([_positions(layer, gr[k + j], s) for j, (_, s) in enumerate(calls)], 1)
                for gr in grads
            ],
            dim=1,
        )
        k += len(calls)
        out.append((a, g))
    return out


def _record(store: list, module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
    store.append((inputs[0].detach(), output))


def _inputs(layer: _Layer, inp: torch.Tensor) -> torch.Tensor:
    """a~ (B, T, in_eff) for one call: the layer's input (unfolded for Conv2d) and/or a 1."""
    m = layer.module
    if isinstance(m, torch.nn.Conv2d):
        a = F.unfold(inp, m.kernel_size, m.dilation, m.padding, m.stride).transpose(1, 2)
    else:
        a = inp.reshape(inp.shape[0], -1, inp.shape[-1])
    parts = [a] if layer.weight is not None else []
    if layer.bias is not None:
        parts.append(torch.ones_like(a[..., :1]))
    return torch.cat(parts, dim=2)


def _positions(layer: _Layer, g: torch.Tensor | None, pre: torch.Tensor) -> torch.Tensor:
    """A pre-activation gradient as (B, T, out): Conv2d's (B, out, H, W) or Linear's (B, ..., out);
    zeros where the output does not depend on this call (``g`` None)."""
    g = torch.zeros_like(pre) if g is None else g
    if isinstance(layer.module, torch.nn.Conv2d):
        return g.flatten(2).transpose(1, 2)
    return g.reshape(g.shape[0], -1, g.shape[-1])
