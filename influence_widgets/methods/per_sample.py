"""Per-sample gradients of the loss and of the margin, through an :class:`Objective`.

The same functions of flat theta that ``Influence`` differentiates (``Objective.test_loss``, the
model's ``Objective.forward``), vmapped over a batch with ``torch.func.vmap(grad(...))``:

    loss_gradients:   g_i   = grad_theta L(z_i, theta)              (no L2 term), (B, p)
    margin_gradients: phi_i = grad_theta f(z_i, theta),              (B, p)
                      f = log p(y|x) - log(1 - p(y|x))  (:func:`~influence_widgets.core.losses.class_margin`)

with, from the same pass, the margins f(z_i, theta) themselves: p(y_i | x_i, theta) = sigmoid(f_i)
is the probability of the true class, which TRAK weights by (so it needs no second forward pass).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.func import grad, grad_and_value, vmap

from influence_widgets.core.losses import class_margin
from influence_widgets.core.objective import Objective, TrainingSet
from influence_widgets.core.progress import progress_bar

__all__ = [
    "cast_batches",
    "loss_gradients",
    "margin_gradients",
]


def loss_gradients(obj: Objective, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """g_i = grad_theta L(z_i, theta) at ``obj.theta`` for a cast batch, (B, p), without the L2
    term (the loss gradient Grad-Dot and TracIn use)."""
    return vmap(grad(obj.test_loss), in_dims=(None, 0, 0))(obj.theta, x, y)


def margin_gradients(
    obj: Objective, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(phi, f) at ``obj.theta`` for a cast batch of class indices: phi_i = grad_theta f(z_i,
    theta), (B, p), the gradient of the margin f = log p(y|x) - log(1 - p(y|x)) (TRAK's model
    output), and the margins f_i, (B,), from the same pass (p(y_i | x_i) = sigmoid(f_i))."""

    def margin(theta: torch.Tensor, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return class_margin(obj.forward(theta, xi.unsqueeze(0)), yi.unsqueeze(0))[0]

    return vmap(grad_and_value(margin), in_dims=(None, 0, 0))(obj.theta, x, y)


def cast_batches(
    obj: Objective, train: TrainingSet, batch_size: int, desc: str, progress: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor, slice]]:
    """(x, y, slice) for consecutive batches of the training set, cast for ``obj``, with a
    progress bar ``desc`` (shown when ``progress`` and there is more than one batch)."""
    n_batches = -(-train.n // batch_size)
    bar = progress_bar(total=n_batches, desc=desc, disable=not (progress and n_batches > 1))
    try:
        for x, y, sl in train.batches(batch_size):
            yield obj.cast_inputs(x), obj.cast_targets(y), sl
            bar.update()
    finally:
        bar.close()
