"""Regenerate influence_widgets/assets/fmnist_extractor.pt, the attacks' frozen feature extractor.

Trains ``iw.models.fmnist_extractor_layers()`` with a temporary 8-way linear head on the 8
Fashion-MNIST classes other than ``EXTRACTOR_HELD_OUT`` (Sandal and Sneaker), all 48,000 of their
training images, float32, Adam (lr 2e-3, batches of 128, 3 epochs, seed 0), and saves the
extractor's weights only (about 110 kB). The two held-out classes are the binary task of the
attacks, as the paper's dog-vs-fish task was unseen by Inception's classes.

    .venv/bin/python scripts/train_fmnist_extractor.py
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

import influence_widgets as iw
from influence_widgets.models import (
    EXTRACTOR_FEATURES,
    EXTRACTOR_FILE,
    EXTRACTOR_HELD_OUT,
    fmnist_extractor_layers,
)

OUT = Path(iw.__file__).parent / EXTRACTOR_FILE


def main() -> None:
    torch.manual_seed(0)
    seen = [c for c in range(10) if c not in EXTRACTOR_HELD_OUT]
    data = iw.datasets.fashion_mnist(classes=seen)
    extractor = fmnist_extractor_layers()
    model = nn.Sequential(extractor, nn.Linear(EXTRACTOR_FEATURES, len(seen)))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    X, y = data.X_train, data.y_train
    start = time.perf_counter()
    for epoch in range(3):
        order = torch.randperm(len(X))
        for i in range(0, len(X), 128):
            idx = order[i : i + 128]
            opt.zero_grad()
            nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
        with torch.no_grad():
            acc = (model(data.X_test).argmax(1) == data.y_test).float().mean()
        print(f"epoch {epoch + 1}: test accuracy on the 8 classes {acc:.3f}", flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    torch.save(extractor.state_dict(), OUT)
    print(
        f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} kB) in {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
