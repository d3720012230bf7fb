"""Training and test points as every attribution method checks them: the training set against
the model and the loss, and a test batch ``(x_test, y_test)``, or ``y_test=None`` for the model's
predicted classes.

Written once for ``Influence`` and the methods of :mod:`influence_widgets.methods`, so that bad
points get the same message from each.
"""

from __future__ import annotations

import torch

from influence_widgets.core.losses import (
    class_probabilities,
    expects_binary_labels,
    expects_class_indices,
)
from influence_widgets.core.objective import Objective, TrainingSet, as_tensor

__all__ = ["check_classifier", "check_training_points", "predicted_classes", "test_batch"]


def check_training_points(obj: Objective, train: TrainingSet) -> None:
    """Every training point fits ``obj``'s model and loss (for a torch Dataset: its first batch,
    not a whole pass); else the error of ``Objective.prepare`` naming the training set."""
    for x, y, _ in train.batches(min(train.n, 4096)):
        obj.prepare(x, y, train.x_name, train.y_name)
        if train.X is None:
            break


def check_classifier(obj: Objective) -> None:
    """``y_test=None`` needs a loss of class labels; else a ValueError naming ``y_test``."""
    if not (expects_class_indices(obj.loss_fn) or expects_binary_labels(obj.loss_fn)):
        raise ValueError(
            "y_test: None (explain the predicted class) needs a classification loss "
            "('cross_entropy' or 'smooth_hinge'); with this loss pass the test targets"
        )


def predicted_classes(obj: Objective, x: torch.Tensor) -> torch.Tensor:
    """y_hat = argmax_c p(c | x, theta_hat) for cast inputs ``x``, as cast targets (T,)."""
    with torch.no_grad():
        labels = class_probabilities(obj.forward(obj.theta, x)).argmax(dim=1)
    return obj.cast_targets(labels)


def test_batch(
    obj: Objective, train: TrainingSet, x_test, y_test
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cast test batch (x, y) for ``obj``'s model; ``y_test=None``: y = its predicted classes.
    ``train`` gives the shape of one input, to tell one point without a batch dimension from a
    batch. Errors name ``x_test`` / ``y_test`` and say how to pass one point."""
    x = as_tensor(x_test, "x_test")
    y = None if y_test is None else as_tensor(y_test, "y_test")
    one_input = train.take([0])[0][0]  # one training input, for its shape
    if x.ndim == 0 or x.shape == one_input.shape or (y is not None and y.ndim == 0):
        names, fix = ("x_test", "x[None] (or x[i:i+1])") if y is None else (
            "x_test, y_test", "x[None] and y[None] (or x[i:i+1], y[i:i+1])"
        )  # fmt: skip
        raise ValueError(
            f"{names}: expected a batch with a leading dimension; for one point pass {fix}"
        )
    if y is None:
        check_classifier(obj)
        y = torch.zeros(len(x), dtype=torch.long)  # for checking x only
    if len(x) != len(y):
        raise ValueError(f"x_test has {len(x)} rows but y_test has {len(y)}; they must match")
    if len(x) == 0:
        raise ValueError("x_test: is empty")
    x, y = obj.prepare(x, y, "x_test", "y_test")
    return x, (predicted_classes(obj, x) if y_test is None else y)
