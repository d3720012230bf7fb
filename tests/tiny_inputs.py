"""A tiny problem and the odd inputs built on it, shared by the bad-input cases
(``test_bad_input.py``) and the tests of accepted inputs and train-mode models.

The problem: N = 12 points with D = 3 float64 features and labels covering C = 3 classes, a
``Linear(D, C)`` model, and ``Influence`` / ``iw.train`` with l2 = L2 and no progress bars.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import influence_widgets as iw

N, D, C, L2 = 12, 3, 3, 0.1


def blobs(n: int = N, d: int = D) -> tuple[torch.Tensor, torch.Tensor]:
    """X (n, d) float64 and labels y (n,) covering all C classes."""
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, d, dtype=torch.float64, generator=gen), torch.arange(n) % C


def linear(d: int = D) -> nn.Linear:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Linear(d, C, dtype=torch.float64)


def influence(model: nn.Module, train, **kwargs) -> iw.Influence:
    return iw.Influence(model, train, **{"l2": L2, "progress": False, **kwargs})


def train(model: nn.Module, data, **kwargs) -> iw.TrainingReport:
    return iw.train(model, data, **{"l2": L2, "progress": False, "max_iter": 5, **kwargs})


class Items(torch.utils.data.Dataset):
    """A map-style Dataset whose item i is ``make(X[i], y[i], i)``."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, make) -> None:
        self.X, self.y, self.make = X, y, make

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, i: int):
        return self.make(self.X[i], self.y[i], i)


def mean_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A wrong ``loss``: one number, the mean, instead of one loss per sample."""
    return F.cross_entropy(output, target)


def per_output_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A wrong ``loss``: one loss per sample and output, shape (B, C), instead of (B,)."""
    return (output - F.one_hot(target, C).to(output.dtype)).pow(2)
