"""The devices that device-parametrized tests run on: the CPU always, CUDA when a GPU is visible.

Each CUDA case is a ``pytest.param`` marked ``skipif``, so on a machine without a GPU it shows as
skipped with its reason ("no CUDA GPU visible") instead of being silently absent.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")

#: "cpu" always, "cuda" (skipped without a GPU): for ``@pytest.mark.parametrize("device", DEVICES)``
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=NO_CUDA)]


@dataclass(frozen=True)
class Placement:
    """Where a test puts the user's model and data, and the ``device=`` it passes to Influence;
    ``compute`` is where influence is then computed (and where its results come back)."""

    model: str
    data: str
    device: str | None

    @property
    def compute(self) -> str:
        return self.device or self.model


#: the model and data on the CPU; the model on CUDA (data on the CPU, as a user's usually is); a
#: CPU model with ``device="cuda"``; model and data both on CUDA
PLACEMENTS = [
    pytest.param(Placement("cpu", "cpu", None), id="cpu"),
    pytest.param(Placement("cuda", "cpu", None), id="cuda-model", marks=NO_CUDA),
    pytest.param(Placement("cpu", "cpu", "cuda"), id="cpu-model-device-cuda", marks=NO_CUDA),
    pytest.param(Placement("cuda", "cuda", None), id="cuda-model-and-data", marks=NO_CUDA),
]
