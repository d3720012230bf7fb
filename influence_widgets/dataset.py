"""The :class:`Dataset` that the built-in data sets return and the models and widgets take.

In its own module, imported by :mod:`~influence_widgets.datasets` (which re-exports it),
:mod:`~influence_widgets.models` and the Fashion-MNIST loader, so that none of them imports
another for the type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["Dataset"]


@dataclass(frozen=True)
class Dataset:
    """A data set's fixed train/test split, with what a display needs.

    Not a ``torch.utils.data.Dataset``: it holds a whole training split and a whole test split as
    tensors and is not indexed item by item. Where a training set is asked for,
    ``iw.Influence(model, data)`` and ``iw.train(model, data)`` take its training split
    ``(data.X_train, data.y_train)``; the test split holds the points to explain
    (``data.X_test[i : i + 1], data.y_test[i : i + 1]``).

    Attributes:
        name: short name of the data set.
        X_train, y_train, X_test, y_test: inputs (n, d) float32 and labels (n,) int64.
        class_names: one name per class index.
        kind: "image", "tabular" or "text".
        image_shape: (H, W) or (H, W, C) of one image when ``kind == "image"``, else None.
        feature_names: one name per input column for tabular data, else None.
        units: for tabular inputs that are standardised, the (train, test) rows in the data
            set's own units, which the explorer shows (``rows``); None when X is in them.
    """

    name: str
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    class_names: list[str]
    kind: str = "tabular"
    image_shape: tuple[int, ...] | None = None
    feature_names: list[str] | None = field(default=None)
    units: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    def images(self, split: str = "test") -> np.ndarray:
        """The inputs of ``split`` ("train" or "test") reshaped to images, as a numpy array."""
        if self.kind != "image" or self.image_shape is None:
            raise ValueError(f"images(): data set {self.name!r} is {self.kind}, not image data")
        if split not in ("train", "test"):
            raise ValueError(f"images(): split must be 'train' or 'test', got {split!r}")
        X = self.X_train if split == "train" else self.X_test
        return X.numpy().reshape(-1, *self.image_shape)

    def rows(self, split: str = "test") -> np.ndarray:
        """The inputs of ``split`` ("train" or "test") as (n, d) rows in the data set's own units
        (before any standardising), as a numpy array: what a display shows."""
        if split not in ("train", "test"):
            raise ValueError(f"rows(): split must be 'train' or 'test', got {split!r}")
        if self.units is not None:
            return self.units[0 if split == "train" else 1]
        X = self.X_train if split == "train" else self.X_test
        return X.numpy().reshape(len(X), -1)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, kind={self.kind!r}, n_train={len(self.y_train)}, "
            f"n_test={len(self.y_test)}, n_features={self.n_features}, "
            f"n_classes={self.n_classes})"
        )
