"""The explorer's test points with the model's predictions, on their own so that every widget
module (the context, the method switch) can name them without importing each other."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["TestPoints"]


@dataclass(frozen=True)
class TestPoints:
    """The explorer's test points and the model's predictions on them at theta_hat.

    Attributes:
        x: the inputs, (T, ...).
        y: the labels the scores are for: the true labels, or without labels the predicted
            classes y_hat = argmax_c p(c | x, theta_hat).
        true: ``y`` as class indices, (T,) int64.
        predicted: y_hat as class indices, (T,) int64.
        confidence: p(y_hat | x, theta_hat), (T,).
        labelled: whether true labels were given (else ``true`` is ``predicted``).
    """

    x: torch.Tensor
    y: torch.Tensor
    true: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    labelled: bool

    def __len__(self) -> int:
        return len(self.true)

    def misclassified(self, index: int) -> bool:
        """Whether the model's prediction for test point ``index`` differs from its label."""
        return bool(self.predicted[index] != self.true[index])

    def point(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of test point ``index`` as one-point batches."""
        return self.x[index : index + 1], self.y[index : index + 1]
