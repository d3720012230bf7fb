"""The empirical risk as a pure function of a flat parameter vector.

R(theta) = (1/n) sum_i ell_i(theta),   ell_i(theta) = L(z_i, theta) + (l2/2) ||theta||^2

where theta is the flat vector of the parameters influence is taken over (``params=``, default all
trainable ones) and every other parameter and buffer is frozen at its trained value. Writing the L2
term into each training term ell_i is how the paper's code treats a training point (its gradient
includes the regulariser) and is what makes removing z_i the same as upweighting ell_i by -1/n when
leave-one-out retraining keeps l2 fixed for n - 1 points. Test losses L(z_test, theta) exclude it.

The user's model is never touched: it is deep-copied once, in eval mode, and evaluated with
``torch.func.functional_call`` over parameter tensors owned by this object.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call

from influence_widgets.core.errors import check_nonnegative
from influence_widgets.core.losses import (
    LossFn,
    expects_binary_labels,
    expects_class_indices,
    mse,
    resolve_loss,
)

__all__ = [
    "Objective",
    "TrainingSet",
    "as_tensor",
    "one_test_point",
    "probe_output",
    "validate_targets",
]


def as_tensor(value, name: str) -> torch.Tensor:
    """A tensor view of ``value`` (tensor or array-like) without copying or mutating it."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name}: expected a torch tensor or array, got {type(value).__name__}"
        ) from err


def one_test_point(x_test, y_test, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_test, y_test)`` as tensors holding exactly one test point with its batch dimension;
    else a ValueError naming both and saying how to pass one (``what``: who needs one point)."""
    x = as_tensor(x_test, "x_test")
    y = as_tensor(y_test, "y_test")
    if x.ndim == 0 or y.ndim == 0 or len(x) != 1 or len(y) != 1:
        raise ValueError(
            f"x_test, y_test: {what} takes one test point at a time, with its batch dimension; "
            "pass X[i:i+1], y[i:i+1]"
        )
    return x, y


def _check_finite(t: torch.Tensor, name: str) -> None:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name}: contains {bad} NaN or infinite value(s); clean or impute them")


def probe_output(forward, x: torch.Tensor, name: str) -> torch.Tensor:
    """The model's output on the first row of ``x``; a ValueError naming ``name`` if it cannot run."""
    try:
        with torch.no_grad():
            return forward(x[:1])
    except (RuntimeError, ValueError, IndexError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{name}: the model cannot take these inputs (one row has shape "
            f"{tuple(x.shape[1:])}): {first}"
        ) from err


def validate_targets(loss_fn: LossFn, y: torch.Tensor, output: torch.Tensor, name: str) -> None:
    """Targets fit the loss, checked before any casting.

    cross_entropy: integer class indices in [0, C), shape (B,). smooth_hinge: 0/1 labels, shape
    (B,), a one-output model. mse: as many values per sample as the model has outputs.
    """
    n_out = output.reshape(output.shape[0], -1).shape[1]
    if expects_class_indices(loss_fn) or expects_binary_labels(loss_fn):
        what = "class indices" if expects_class_indices(loss_fn) else "labels 0 or 1"
        if y.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D tensor of {what}, got shape {tuple(y.shape)}")
        if y.is_floating_point() and not bool((y == y.round()).all()):
            raise ValueError(f"{name}: expected integer {what}, found fractional values")
        if y.is_complex() or y.dtype == torch.bool:
            raise TypeError(f"{name}: expected integer {what}, got {y.dtype}")
    if expects_class_indices(loss_fn):
        n_classes = output.shape[-1] if output.ndim > 1 else 1
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= n_classes:
            raise ValueError(
                f"{name}: labels must lie in [0, {n_classes - 1}] for a model with "
                f"{n_classes} outputs; found labels from {lo} to {hi}"
            )
    elif expects_binary_labels(loss_fn):
        bad = ~((y == 0) | (y == 1))
        if bool(bad.any()):
            raise ValueError(f"{name}: smooth_hinge needs labels 0 or 1, found {y[bad][0].item()}")
        if n_out != 1:
            raise ValueError(
                f"model: smooth_hinge needs a model with one output, got output shape "
                f"{tuple(output.shape)}"
            )
    elif loss_fn is mse:
        per_sample = y.reshape(y.shape[0], -1).shape[1] if y.ndim else 0
        if per_sample != n_out:
            raise ValueError(
                f"{name}: mse needs {n_out} target value(s) per sample to match the model's "
                f"outputs, got shape {tuple(y.shape)}"
            )


class TrainingSet:
    """The training points z_1..z_n, from ``(X, y)`` tensors/arrays or a ``torch.utils.data.Dataset``.

    Batches come out cast to the model's dtype and device; the user's tensors are never written.
    """

    def __init__(self, train, name: str = "train") -> None:
        if isinstance(train, torch.utils.data.Dataset) and not isinstance(train, tuple | list):
            self.dataset = train
            self.X = self.y = None
            self.n = len(train)  # type: ignore[arg-type]
        elif isinstance(train, tuple | list) and len(train) == 2:
            self.dataset = None
            self.X = as_tensor(train[0], f"{name}[0] (X)")
            self.y = as_tensor(train[1], f"{name}[1] (y)")
            if self.X.ndim == 0 or self.y.ndim == 0:
                raise ValueError(f"{name}: X and y must have a leading sample dimension")
            if len(self.X) != len(self.y):
                raise ValueError(
                    f"{name}: X has {len(self.X)} rows but y has {len(self.y)}; "
                    "they must have the same length"
                )
            _check_finite(self.X, f"{name}[0] (X)")
            _check_finite(self.y, f"{name}[1] (y)")
            self.n = len(self.X)
        else:
            raise TypeError(
                f"{name}: expected a pair (X, y) of tensors/arrays or a torch Dataset, "
                f"got {type(train).__name__}"
            )
        if self.n == 0:
            raise ValueError(f"{name}: the training set is empty")

    def take(self, idx: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The points at ``idx`` as a batch (X[idx], y[idx]), before any casting."""
        idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
        if self.dataset is None:
            return self.X[idx], self.y[idx]
        items = [self.dataset[int(i)] for i in idx]
        xs = torch.stack([as_tensor(x, "train dataset item x") for x, _ in items])
        ys = torch.stack([as_tensor(y, "train dataset item y").reshape(()) for _, y in items])
        _check_finite(xs, "train dataset item x")
        return xs, ys

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, slice]]:
        """(X, y, slice of indices) for consecutive batches covering all n points once."""
        for start in range(0, self.n, batch_size):
            stop = min(start + batch_size, self.n)
            if self.dataset is None:
                yield self.X[start:stop], self.y[start:stop], slice(start, stop)
            else:
                x, y = self.take(range(start, stop))
                yield x, y, slice(start, stop)


@dataclass(frozen=True)
class _ParamSpec:
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    numels: tuple[int, ...]


class Objective:
    """Model + per-sample loss + selected parameters + L2 -> pure functions of flat theta.

    Args:
        model: a trained ``torch.nn.Module``; deep-copied, never modified.
        loss: a name ("cross_entropy", "mse", "smooth_hinge") or a callable returning per-sample
            losses.
        l2: the L2 coefficient; the regulariser is (l2/2) ||theta||^2 over the selected parameters.
        params: names (as in ``model.named_parameters()``) of the parameters theta; default all
            with ``requires_grad``.
        device: where to compute; default the model's device.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss: str | LossFn = "cross_entropy",
        l2: float = 0.0,
        params: Sequence[str] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        self.l2 = check_nonnegative(l2, "l2")
        self.loss_fn = resolve_loss(loss)
        named = dict(model.named_parameters())
        if params is None:
            selected = [n for n, p in named.items() if p.requires_grad]
            if not selected:
                raise ValueError(
                    "model: has no trainable parameters (all requires_grad=False); pass params=[...] "
                    "to name the parameters to take influence over"
                )
        else:
            if isinstance(params, str):
                params = [params]
            if not isinstance(params, Sequence) or not all(isinstance(n, str) for n in params):
                raise TypeError(f"params: expected a list of parameter names (str), got {params!r}")
            selected = list(params)
            unknown = [n for n in selected if n not in named]
            if unknown:
                raise ValueError(
                    f"params: no parameter named {unknown[0]!r} in the model; "
                    f"available: {list(named)}"
                )
            if not selected or len(set(selected)) != len(selected):
                raise ValueError("params: must name at least one parameter, each at most once")
        first = named[selected[0]]
        try:
            self.device = torch.device(device) if device is not None else first.device
        except (RuntimeError, TypeError) as err:
            raise ValueError(
                f"device: not a torch device: {device!r} (try 'cpu' or 'cuda')"
            ) from err
        self.dtype = first.dtype
        if not self.dtype.is_floating_point:
            raise TypeError(f"model: parameters must be floating point, got {self.dtype}")

        self.module = copy.deepcopy(model).to(self.device).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        state = {k: v.detach() for k, v in self.module.named_parameters()}
        state.update({k: v.detach() for k, v in self.module.named_buffers()})
        self.spec = _ParamSpec(
            names=tuple(selected),
            shapes=tuple(state[n].shape for n in selected),
            numels=tuple(state[n].numel() for n in selected),
        )
        self.frozen = {k: v for k, v in state.items() if k not in set(selected)}
        self.theta = torch.cat([state[n].reshape(-1) for n in selected]).to(self.dtype)
        self.n_params = self.theta.numel()

    # ----- flat parameter views -------------------------------------------------------------
    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """The flat vector theta as a dict of parameter-shaped views, in ``params`` order."""
        chunks = torch.split(theta, self.spec.numels)
        return {
            n: c.reshape(s)
            for n, c, s in zip(self.spec.names, chunks, self.spec.shapes, strict=True)
        }

    def model_copy(self, theta: torch.Tensor | None = None) -> torch.nn.Module:
        """A fresh copy of the model with ``theta`` (default theta_hat) written in, trainable in
        ``params`` only, for retraining."""
        model = copy.deepcopy(self.module)
        self.write_theta(model, self.theta if theta is None else theta)
        for name, p in model.named_parameters():
            p.requires_grad_(name in self.spec.names)
        return model

    def read_theta(self, model: torch.nn.Module) -> torch.Tensor:
        """The flat vector of ``model``'s parameters named in ``params``, in this dtype."""
        named = dict(model.named_parameters())
        return torch.cat([named[n].detach().reshape(-1) for n in self.spec.names]).to(self.dtype)

    def write_theta(self, model: torch.nn.Module, theta: torch.Tensor) -> None:
        """Copy the flat vector theta into ``model``'s parameters named in ``params``, in place,
        each cast to that parameter's dtype. ``model`` has this objective's architecture (a copy of
        the user's model, never the user's own)."""
        named = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.unflatten(theta).items():
                named[name].copy_(value.to(named[name].dtype))

    # ----- inputs ---------------------------------------------------------------------------
    def cast_inputs(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        return x.to(self.dtype) if x.is_floating_point() else x

    def cast_targets(self, y: torch.Tensor) -> torch.Tensor:
        y = y.to(self.device)
        if expects_class_indices(self.loss_fn) or expects_binary_labels(self.loss_fn):
            return y.long()
        return y.to(self.dtype) if y.is_floating_point() else y

    def prepare(
        self, x: torch.Tensor, y: torch.Tensor, x_name: str, y_name: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate a raw batch against the model and the loss, then cast it for computing."""
        _check_finite(x, x_name)
        _check_finite(y, y_name)
        xc = self.cast_inputs(x)
        output = probe_output(lambda rows: self.forward(self.theta, rows), xc, x_name)
        validate_targets(self.loss_fn, y, output, y_name)
        return xc, self.cast_targets(y)

    # ----- the functions --------------------------------------------------------------------
    def forward(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The model's output at parameters theta (other parameters frozen)."""
        return functional_call(self.module, {**self.frozen, **self.unflatten(theta)}, (x,))

    def loss(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample test losses L(z, theta), shape (B,), without the L2 term."""
        return self.loss_fn(self.forward(theta, x), y)

    def train_terms(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample training terms ell_i = L(z_i, theta) + (l2/2)||theta||^2, shape (B,)."""
        return self.loss(theta, x, y) + 0.5 * self.l2 * theta.dot(theta)

    def train_term(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """ell(z, theta) for ONE sample (x, y without batch dimension), a scalar; for vmap."""
        return self.train_terms(theta, x.unsqueeze(0), y.unsqueeze(0))[0]

    def test_loss(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """L(z, theta) for ONE sample, a scalar; for vmap."""
        return self.loss(theta, x.unsqueeze(0), y.unsqueeze(0))[0]
