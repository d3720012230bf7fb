"""Per-sample losses L(z, theta) as functions of a model's output and the label.

Every loss maps ``(output, target)`` for a batch to a vector of per-sample losses, shape (B,). A
callable given by the user must do the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from influence_widgets.core.errors import check_nonnegative
from influence_widgets.core.model_checks import first_line

__all__ = [
    "LossFn",
    "SmoothHinge",
    "check_per_sample_losses",
    "class_margin",
    "class_probabilities",
    "cross_entropy",
    "mse",
    "resolve_loss",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of logits (B, C) against class indices (B,)."""
    return F.cross_entropy(output, target, reduction="none")


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error averaged over output dimensions: mean_k (f_k(x) - y_k)^2, one value a sample."""
    diff = output.reshape(output.shape[0], -1) - target.reshape(target.shape[0], -1)
    return diff.pow(2).mean(dim=1)


@dataclass(frozen=True)
class SmoothHinge:
    """The paper's smooth hinge (Fig 3): SmoothHinge(s, t) = t log(1 + exp((1 - s) / t)).

    ``s = y_pm * f(x)`` is the margin of a binary linear model with one output, with labels 0/1
    mapped to y_pm = -1/+1. As t -> 0 it tends to the hinge max(0, 1 - s); ``temperature=0`` gives
    the plain (non-differentiable) hinge, for comparison.
    """

    temperature: float = 0.001

    def __post_init__(self) -> None:
        check_nonnegative(self.temperature, "temperature")

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        score = output.reshape(output.shape[0])
        sign = 2.0 * target.to(score.dtype) - 1.0
        margin = 1.0 - sign * score
        if self.temperature == 0:
            return torch.clamp(margin, min=0.0)
        t = self.temperature
        return t * F.softplus(margin / t)


_NAMED: dict[str, Callable[[], LossFn]] = {
    "cross_entropy": lambda: cross_entropy,
    "mse": lambda: mse,
    "smooth_hinge": lambda: SmoothHinge(),
}


def resolve_loss(loss: str | LossFn) -> LossFn:
    """A loss name ("cross_entropy", "mse", "smooth_hinge") or a callable -> the per-sample loss."""
    if isinstance(loss, str):
        if loss not in _NAMED:
            raise ValueError(
                f"loss: unknown loss {loss!r}; use one of {sorted(_NAMED)} or a callable "
                f"(output, target) -> per-sample losses of shape (B,)"
            )
        return _NAMED[loss]()
    if callable(loss):
        return loss
    raise TypeError(f"loss: expected a name or a callable, got {type(loss).__name__}")


def _shape_fix(shape: tuple[int, ...], batch: int) -> str:
    if not shape:
        return (
            "a reduced loss (mean or sum) gives one number: pass reduction='none', e.g. "
            "F.cross_entropy(output, target, reduction='none')"
        )
    if shape[0] == batch:
        return (
            "one value per output: reduce all but the batch dimension, e.g. "
            "F.mse_loss(output, target, reduction='none').mean(dim=1)"
        )
    return "pass reduction='none' and reduce all but the batch dimension"


def check_per_sample_losses(
    loss_fn: LossFn, output: torch.Tensor, target: torch.Tensor, target_name: str = "y"
) -> None:
    """``loss_fn(output, target)`` returns one loss per sample, shape (B,), for a batch of B >= 1
    outputs; else a TypeError/ValueError naming ``loss`` and the fix. A loss that raises on these
    targets names ``target_name`` first (the targets are the likelier cause), then ``loss``."""
    batch = output.shape[0]
    try:
        with torch.no_grad():
            value = loss_fn(output, target)
    except (RuntimeError, ValueError, IndexError, TypeError) as err:
        raise ValueError(
            f"{target_name}: the loss fails on the model's output of shape "
            f"{tuple(output.shape)} with these targets of shape {tuple(target.shape)}: "
            f"{first_line(err)}. Check the targets' values and shape, or the loss callable "
            "(loss=: (output, target) -> per-sample losses of shape (B,))"
        ) from err
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"loss: must return a tensor of per-sample losses, shape (B,), got "
            f"{type(value).__name__}"
        )
    if tuple(value.shape) != (batch,):
        raise ValueError(
            f"loss: must return one loss per sample, shape (B,) = ({batch},) here, got shape "
            f"{tuple(value.shape)}; {_shape_fix(tuple(value.shape), batch)}"
        )


def expects_class_indices(loss_fn: LossFn) -> bool:
    """Whether targets must be integer class indices in [0, C) for this loss."""
    return loss_fn is cross_entropy


def expects_binary_labels(loss_fn: LossFn) -> bool:
    """Whether targets must be 0/1 labels for a single-output model."""
    return isinstance(loss_fn, SmoothHinge)


def class_probabilities(output: torch.Tensor) -> torch.Tensor:
    """Class probabilities (B, C) from a classifier's outputs (B, C) or (B,) / (B, 1).

    One output per sample is a binary score s (logit of class 1): probabilities (1 - sigmoid(s),
    sigmoid(s)). Several outputs are logits: softmax over the last dimension.
    """
    out = output.reshape(output.shape[0], -1)
    if out.shape[1] == 1:
        p1 = torch.sigmoid(out[:, 0])
        return torch.stack([1 - p1, p1], dim=1)
    return torch.softmax(out, dim=1)


def class_margin(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The margin f = log p(y|x) - log(1 - p(y|x)) of each of B outputs, (B,), for class indices
    ``labels`` (B,) (int64, in range: the caller checks them).

    ``output`` (B, C), C >= 2: logits, p = softmax, and f = logit_y - logsumexp_{c != y} logit_c
    (computed so, without rounding p). ``output`` (B,) or (B, 1): a binary score s (the logit of
    class 1): f = s for y = 1 and -s for y = 0. Since p(y|x) = sigmoid(f), the cross-entropy is
    L = -log p(y|x) = log(1 + exp(-f)), with dL/df = -(1 - p(y|x)).
    """
    out = output.reshape(output.shape[0], -1)
    if out.shape[1] == 1:
        return torch.where(labels == 1, out[:, 0], -out[:, 0])
    own = out.gather(1, labels[:, None])[:, 0]
    others = out.scatter(1, labels[:, None], float("-inf"))
    return own - torch.logsumexp(others, dim=1)
