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
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch.func import functional_call

from influence_widgets.core.errors import check_nonnegative
from influence_widgets.core.losses import (
    LossFn,
    check_per_sample_losses,
    expects_binary_labels,
    expects_class_indices,
    mse,
    resolve_loss,
)
from influence_widgets.core.model_checks import (
    first_line,
    resolve_device,
    select_parameters,
    warn_train_mode,
)

__all__ = [
    "FUNCTORCH_LOCK",
    "Objective",
    "TrainingSet",
    "as_tensor",
    "cast_inputs",
    "cast_targets",
    "one_test_point",
    "validate_batch",
]

# The package's one lock for torch.func's forward-mode AD, shared by every objective (as
# ``Objective.lock``) and held around each forward pass and each forward-mode product (jvp,
# jacfwd, hessian): torch.func keeps its forward-AD levels in process-wide state, and two threads
# in it at once fail with "Trying to access a forward AD level with an invalid index" (an explorer
# precomputing in the background while the notebook calls inf.top(), or two explorers fitting
# together). Held per pass or per batch, never for a whole fit, so the other thread waits
# milliseconds, not the fit. Code outside the core that runs forward-mode products takes it too.
FUNCTORCH_LOCK = threading.RLock()


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


def cast_inputs(x: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Inputs on ``device``; floating-point inputs in the model's ``dtype``, others (token ids) as
    they are."""
    x = x.to(device)
    return x.to(dtype) if x.is_floating_point() else x


def cast_targets(
    loss_fn: LossFn, y: torch.Tensor, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Targets on ``device``: int64 for a loss that takes class indices or 0/1 labels, else
    floating-point targets in the model's ``dtype``."""
    y = y.to(device)
    if expects_class_indices(loss_fn) or expects_binary_labels(loss_fn):
        return y.long()
    return y.to(dtype) if y.is_floating_point() else y


def _one_feature_per_row(x: torch.Tensor, name: str, problem: str) -> ValueError:
    """The error for 1-D inputs that a model of feature vectors cannot take (``problem``: what
    went wrong); 1-D inputs are fine for a model that takes one id per sample (an embedding)."""
    return ValueError(
        f"{name}: has shape {tuple(x.shape)}, one number per sample, but the model expects one "
        "row of features per sample, shape (n, d): reshape with X[:, None] for one feature "
        f"({problem})"
    )


def _not_a_tensor(output: object) -> TypeError:
    """The error for a model whose forward returns a tuple, dict, ... with the wrapper to write."""
    kind = type(output).__name__
    if isinstance(output, dict):
        key = next((k for k, v in output.items() if isinstance(v, torch.Tensor)), "logits")
        pick = f"[{key!r}]"
    elif isinstance(output, tuple | list):
        pick = "[0]"
    else:
        return TypeError(f"model: forward must return a tensor of outputs (B, C), got a {kind}")
    return TypeError(
        f"model: forward must return a tensor of outputs (B, C), got a {kind}; wrap the model "
        "so that it returns the logits tensor, and pass the wrapper:\n\n"
        "    class Logits(torch.nn.Module):\n"
        "        def __init__(self, model):\n"
        "            super().__init__()\n"
        "            self.model = model\n\n"
        "        def forward(self, x):\n"
        f"            return self.model(x){pick}\n\n"
        "(parameter names, as in params=, then start with 'model.')"
    )


def probe_output(forward, x: torch.Tensor, name: str) -> torch.Tensor:
    """The model's output on the first two rows of ``x`` (one if there is one): a tensor with one
    row per input row. Else a ValueError naming ``name`` (inputs the model cannot take) or a
    TypeError naming ``model`` (an output that is not a tensor)."""
    rows = x[:2]
    try:
        with torch.no_grad():
            output = forward(rows)
    except (RuntimeError, ValueError, IndexError, TypeError) as err:
        if x.ndim == 1:
            raise _one_feature_per_row(x, name, f"the model failed: {first_line(err)}") from err
        raise ValueError(
            f"{name}: the model cannot take these inputs (one row has shape "
            f"{tuple(x.shape[1:])}): {first_line(err)}"
        ) from err
    if not isinstance(output, torch.Tensor):
        raise _not_a_tensor(output)
    if output.ndim == 0 or output.shape[0] != len(rows):
        problem = f"the model returns output of shape {tuple(output.shape)} for {len(rows)} row(s)"
        if x.ndim == 1:
            raise _one_feature_per_row(x, name, problem)
        raise ValueError(
            f"{name}: {problem} of shape {tuple(x.shape[1:])}; it must return one row per "
            "sample, batch dimension first: check the input shape the model expects"
        )
    return output


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


def validate_batch(
    forward,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    names: tuple[str, str],
    dtype: torch.dtype,
) -> None:
    """A batch fits the model and the loss: the model takes the (cast) inputs ``x`` and returns a
    tensor with one row per sample, the raw targets ``y`` fit the loss, and the loss returns one
    value per sample, shape (B,). ``names``: how to name x and y in errors."""
    x_name, y_name = names
    output = probe_output(forward, x, x_name)
    validate_targets(loss_fn, y, output, y_name)
    targets = cast_targets(loss_fn, y[: len(output)], dtype, output.device)
    check_per_sample_losses(loss_fn, output, targets, y_name)


def _item_pair(item: object, name: str) -> tuple[object, object]:
    """(x, y) from a Dataset item ``(x, y)`` or ``(x, y, *rest)``; else a TypeError naming
    ``name`` that says which items are expected."""
    is_sequence = isinstance(item, tuple | list)
    if is_sequence and len(item) >= 2:
        return item[0], item[1]
    expected = f"{name}: each item of the Dataset must be (x, y) or (x, y, ...)"
    if isinstance(item, dict):
        keys = list(item)
        x_key, y_key = keys[:2] if len(keys) >= 2 else ("x", "y")
        raise TypeError(
            f"{expected}, got a dict with keys {keys[:6]}; wrap it in a Dataset whose "
            f"__getitem__(i) returns (item[{x_key!r}], item[{y_key!r}]) for item = data[i]"
        )
    length = f" of length {len(item)}" if is_sequence else ""
    raise TypeError(f"{expected}, got a {type(item).__name__}{length}")


def _split(train, name: str) -> tuple[object, object, str, str]:
    """(X, y, x_name, y_name) from a pair or from an object's training split (``X_train``,
    ``y_train``); else a TypeError naming ``name`` that lists what is accepted."""
    if isinstance(train, tuple | list) and len(train) == 2:
        return train[0], train[1], f"{name}[0] (X)", f"{name}[1] (y)"
    if hasattr(train, "X_train") and hasattr(train, "y_train"):
        return train.X_train, train.y_train, f"{name}.X_train", f"{name}.y_train"
    raise TypeError(
        f"{name}: expected a pair (X, y) of tensors/arrays, a torch Dataset of (x, y) items "
        f"or a data set with X_train and y_train, got {type(train).__name__}"
    )


class TrainingSet:
    """The training points z_1..z_n, given as one of:

    - a pair ``(X, y)`` of tensors/arrays with one row per point;
    - a ``torch.utils.data.Dataset`` whose items are ``(x, y)`` or ``(x, y, *rest)`` (the rest,
      such as an index or a weight, is ignored);
    - any other object with ``X_train`` and ``y_train`` attributes, such as an
      ``iw.datasets`` Dataset: its training split, exactly as ``(data.X_train, data.y_train)``.

    Batches come out as stored (``cast_inputs``/``cast_targets`` cast them); the user's tensors
    are never written. ``x_name`` and ``y_name`` name the inputs and labels in errors.
    """

    def __init__(self, train, name: str = "train") -> None:
        self.name = name
        if isinstance(train, torch.utils.data.Dataset) and not isinstance(train, tuple | list):
            self.dataset = train
            self.X = self.y = None
            self.x_name, self.y_name = f"{name} item x", f"{name} item y"
            self.n = len(train)  # type: ignore[arg-type]
        else:
            self.dataset = None
            X, y, self.x_name, self.y_name = _split(train, name)
            self.X = as_tensor(X, self.x_name)
            self.y = as_tensor(y, self.y_name)
            if self.X.ndim == 0 or self.y.ndim == 0:
                raise ValueError(f"{name}: X and y must have a leading sample dimension")
            if len(self.X) != len(self.y):
                raise ValueError(
                    f"{name}: X has {len(self.X)} rows but y has {len(self.y)}; "
                    "they must have the same length"
                )
            _check_finite(self.X, self.x_name)
            _check_finite(self.y, self.y_name)
            self.n = len(self.X)
        if self.n == 0:
            raise ValueError(f"{name}: the training set is empty")

    def take(self, idx: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The points at ``idx`` as a batch (X[idx], y[idx]), before any casting, on the device
        where they are stored; ``idx`` may live on any device (``top()``'s indices on a GPU)."""
        idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
        if self.dataset is None:
            return self.X[idx.to(self.X.device)], self.y[idx.to(self.y.device)]
        pairs = [_item_pair(self.dataset[int(i)], self.name) for i in idx.tolist()]
        xs = torch.stack([as_tensor(x, self.x_name) for x, _ in pairs])
        ys = torch.stack([_label(as_tensor(y, self.y_name)) for _, y in pairs])
        _check_finite(xs, self.x_name)
        return xs, ys

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All n points (X, y), before any casting; the user's own tensors when given as such."""
        if self.dataset is None:
            return self.X, self.y
        return self.take(torch.arange(self.n))

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, slice]]:
        """(X, y, slice of indices) for consecutive batches covering all n points once."""
        for start in range(0, self.n, batch_size):
            stop = min(start + batch_size, self.n)
            if self.dataset is None:
                yield self.X[start:stop], self.y[start:stop], slice(start, stop)
            else:
                x, y = self.take(range(start, stop))
                yield x, y, slice(start, stop)


def _label(y: torch.Tensor) -> torch.Tensor:
    """One item's label: a scalar (a class index), or as it is when it has several values (mse)."""
    return y.reshape(()) if y.numel() == 1 else y


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

    The model is evaluated in eval mode, as at inference. A model left in train mode with modules
    that eval mode changes (BatchNorm, Dropout) gets one :class:`InfluenceWarning` naming them.
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
        selected = select_parameters(model, params)
        first = dict(model.named_parameters())[selected[0]]
        self.device = resolve_device(device, first.device)
        self.dtype = first.dtype
        if not self.dtype.is_floating_point:
            raise TypeError(f"model: parameters must be floating point, got {self.dtype}")
        # stacklevel 3: the caller of Influence(...), which builds this object
        warn_train_mode(model, "Influence is computed", stacklevel=3)

        self.module = copy.deepcopy(model).to(self.device).eval()
        # functional_call swaps tensors into self.module for the length of a forward pass, and
        # hooks are registered on its submodules around some passes: threads take turns here.
        self.lock = FUNCTORCH_LOCK
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
        with self.lock:  # never in the middle of another thread's forward pass
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
        """Inputs on this device, floating-point ones in the model's dtype."""
        return cast_inputs(x, self.dtype, self.device)

    def cast_targets(self, y: torch.Tensor) -> torch.Tensor:
        """Targets as the loss takes them, on this device (see :func:`cast_targets`)."""
        return cast_targets(self.loss_fn, y, self.dtype, self.device)

    def prepare(
        self, x: torch.Tensor, y: torch.Tensor, x_name: str, y_name: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate a raw batch against the model and the loss, then cast it for computing."""
        _check_finite(x, x_name)
        _check_finite(y, y_name)
        xc = self.cast_inputs(x)
        forward = partial(self.forward, self.theta)
        validate_batch(forward, self.loss_fn, xc, y, (x_name, y_name), self.dtype)
        return xc, self.cast_targets(y)

    # ----- the functions --------------------------------------------------------------------
    def forward(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The model's output at parameters theta (other parameters frozen); one thread at a time
        (``lock``)."""
        with self.lock:
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
