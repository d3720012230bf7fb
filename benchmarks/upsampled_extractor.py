"""The attack benchmark's upsampled input: Fashion-MNIST at 3x112x112, and an extractor for it.

Inception's inputs (the paper's attack, Koh & Liang 2017, Sec 5.2) have 299x299x3 = 268,203 values;
ours have 784. One sign step of eps moves the test loss by about eps times the L1 norm of
I_pert,loss, which grows with the number of input values, so ``benchmarks/attack.py --input
112x112x3`` repeats the attack on the same images upsampled: each 28x28 image bilinearly to
112x112 (4x per side) and repeated over 3 channels, 37,632 values (48x as many).

The extractor is of the shipped one's family (strided 5x5 tanh convolutions, a 32-unit tanh layer
for training only): two more stride-2 convolutions in front bring 112x112 down to the 28x28
geometry, so the head again sees 16 x 7 x 7 = 784 convolutional features (1,570 head
parameters, as at 28x28). It is trained here at run time, not shipped: on ``TRAIN_PER_CLASS``
images of each of the 8 classes the shipped extractor saw (a fixed random subset, seed 0),
float32, Adam (lr 2e-3, batches of 128, ``EPOCHS`` epochs, seed 0), and its weights are cached
under ``$XDG_CACHE_HOME/influence_widgets/`` (about 100 kB), so a resumed run reuses them. It
runs in float32 (double convolutions on 37,632 inputs are ~30x slower on a CPU); its features
are cast to float64 for the head, whose risk, Hessian and retraining stay in float64 as at 28x28.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import influence_widgets as iw
from influence_widgets.models import EXTRACTOR_HELD_OUT

SIDE = 112
CHANNELS = 3
INPUT = f"{SIDE}x{SIDE}x{CHANNELS}"
TRAIN_PER_CLASS = 2000
EPOCHS = 2
FEATURES = 32


def upsample(X: torch.Tensor) -> torch.Tensor:
    """Flat 28x28 grey images (n, 784) in [0, 1] as flat 3x112x112 images (n, 37,632), float32:
    bilinear upsampling (convex weights, so the values stay in [0, 1]), the grey copied to 3
    channels."""
    grey = nn.functional.interpolate(
        X.float().reshape(-1, 1, 28, 28), size=(SIDE, SIDE), mode="bilinear", align_corners=False
    )
    return grey.expand(-1, CHANNELS, -1, -1).reshape(len(X), -1).clamp(0.0, 1.0)


class Cast(nn.Module):
    """Casts its input to ``dtype``: a float32 extractor between float64 inputs and head."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype)


def extractor_layers() -> nn.Sequential:
    """Four stride-2 5x5 tanh convolutions (112 -> 56 -> 28 -> 14 -> 7), then 32 tanh units."""
    return nn.Sequential(
        nn.Unflatten(1, (CHANNELS, SIDE, SIDE)),
        nn.Conv2d(CHANNELS, 8, 5, stride=2, padding=2),
        nn.Tanh(),
        nn.Conv2d(8, 8, 5, stride=2, padding=2),
        nn.Tanh(),
        nn.Conv2d(8, 8, 5, stride=2, padding=2),
        nn.Tanh(),
        nn.Conv2d(8, 16, 5, stride=2, padding=2),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, FEATURES),
        nn.Tanh(),
    )


def cache_path(per_class: int, epochs: int) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "influence_widgets" / f"extractor_{INPUT}_{per_class}x8_{epochs}ep_seed0.pt"


def train_extractor(per_class: int, epochs: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train ``extractor_layers()`` with an 8-way linear head on the 8 seen classes (seed 0).
    Returns its weights and what the training did (8-class test accuracy, seconds)."""
    torch.manual_seed(0)
    seen = [c for c in range(10) if c not in EXTRACTOR_HELD_OUT]
    data = iw.datasets.fashion_mnist(classes=seen, progress=False)
    gen = torch.Generator().manual_seed(0)
    idx = torch.cat(
        [
            torch.nonzero(data.y_train == c).squeeze(1)[
                torch.randperm(int((data.y_train == c).sum()), generator=gen)[:per_class]
            ]
            for c in range(len(seen))
        ]
    )
    X, y = data.X_train[idx], data.y_train[idx]
    extractor = extractor_layers()
    model = nn.Sequential(extractor, nn.Linear(FEATURES, len(seen)))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(X))
        for i in range(0, len(X), 128):
            batch = order[i : i + 128]
            opt.zero_grad()
            nn.functional.cross_entropy(model(upsample(X[batch])), y[batch]).backward()
            opt.step()
    with torch.no_grad():
        correct = sum(
            int(
                (
                    model(upsample(data.X_test[i : i + 1000])).argmax(1)
                    == data.y_test[i : i + 1000]
                ).sum()
            )
            for i in range(0, len(data.X_test), 1000)
        )
    report = {
        "input": INPUT,
        "train_images": len(X),
        "epochs": epochs,
        "seed": 0,
        "test_accuracy_8_classes": correct / len(data.X_test),
        "train_seconds": time.perf_counter() - start,
    }
    return extractor.state_dict(), report


def load_extractor(
    per_class: int = TRAIN_PER_CLASS, epochs: int = EPOCHS
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The trained weights and training report, from the cache or trained now (then cached)."""
    path = cache_path(per_class, epochs)
    if path.exists():
        saved = torch.load(path, weights_only=True)
        return saved["state"], saved["report"]
    state, report = train_extractor(per_class, epochs)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": state, "report": report}, path.with_suffix(".partial"))
    os.replace(path.with_suffix(".partial"), path)
    return state, report


def attack_model(state: dict[str, torch.Tensor]) -> nn.Sequential:
    """The frozen float32 extractor up to the last convolution's tanh (784 features, cast to
    float64) and a zero float64 logistic-regression head over 2 classes, as
    ``iw.models.fmnist_attack_model()`` at 28x28: ``model[0]`` extractor, ``model[1]`` head."""
    layers = extractor_layers()
    layers.load_state_dict(state)
    for p in layers.parameters():
        p.requires_grad_(False)
    convs = list(layers)[:10]  # Unflatten, 4 x (conv, tanh), Flatten
    extractor = nn.Sequential(Cast(torch.float32), *convs, Cast(torch.float64))
    head = nn.Linear(16 * 7 * 7, 2, dtype=torch.float64)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return nn.Sequential(extractor, head).eval()
