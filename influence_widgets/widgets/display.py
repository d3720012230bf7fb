"""How one data point looks in the explorer: a PNG thumbnail, a table row, or a text snippet.

Images are rendered on the Python side to PNG bytes (sent to the browser as binary buffers, only for
what is on screen); text is sent as plain strings and inserted with ``textContent`` in the browser.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["DisplayData", "KINDS"]

KINDS = ("image", "tabular", "text")


@functools.lru_cache(maxsize=8)
def _colormap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]  # a fresh copy on every lookup: keep one


def png_bytes(
    image: np.ndarray, cmap: str = "gray_r", vrange: tuple[float, float] | None = None
) -> bytes:
    """A PNG of an (H, W) grey image (colour-mapped, scaled from ``vrange``, default its min and
    max) or an (H, W, 3|4) image.

    matplotlib's colormap does the colouring and Pillow the encoding: about 10x faster per
    thumbnail than ``matplotlib.image.imsave``, which builds a figure for every call.
    """
    from PIL import Image

    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        lo, hi = vrange if vrange is not None else (float(img.min()), float(img.max()))
        scaled = np.clip((img - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(img)
        rgba = _colormap(cmap)(scaled, bytes=True)
    else:
        if img.max() > 1.0:
            img = img / 255.0
        rgba = (np.clip(img, 0.0, 1.0) * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class DisplayData:
    """What the explorer shows of the training and test points (not what the model reads).

    ``train`` and ``test`` are sequences indexed like the training and test sets: images
    (n, H, W[, C]) for "image", rows (n, d) for "tabular", strings for "text".
    """

    kind: str
    train: Sequence
    test: Sequence
    class_names: list[str]
    feature_names: list[str] | None = None
    snippet_chars: int = 160

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "image":
            for name, arr in (("train_display", self.train), ("test_display", self.test)):
                if np.asarray(arr[0]).ndim not in (2, 3):
                    raise ValueError(
                        f"{name}: image data must be (n, H, W) or (n, H, W, C), got items of "
                        f"shape {np.asarray(arr[0]).shape}"
                    )
        if self.kind == "text":
            for name, arr in (("train_display", self.train), ("test_display", self.test)):
                if not all(isinstance(t, str) for t in arr):
                    raise TypeError(f"{name}: text data must be a list of strings")
        if self.kind == "tabular" and self.feature_names is None:
            self.feature_names = [f"x{j}" for j in range(np.asarray(self.train[0]).size)]
        self._png_cache: dict[tuple[str, int], bytes] = {}

    def item(self, split: str, index: int) -> dict:
        """The display fields of one point: {"png": bytes} | {"text": str} | {"row": [...]}."""
        source = self.train if split == "train" else self.test
        if self.kind == "image":
            key = (split, index)
            if key not in self._png_cache:
                self._png_cache[key] = png_bytes(np.asarray(source[index]))
            return {"png": self._png_cache[key]}
        if self.kind == "text":
            text = source[index]
            cut = text if len(text) <= self.snippet_chars else text[: self.snippet_chars] + "..."
            return {"text": cut}
        row = np.asarray(source[index], dtype=np.float64).reshape(-1)
        return {"row": [[n, float(v)] for n, v in zip(self.feature_names, row, strict=True)][:6]}

    def differences(self, train_index: int, test_index: int, top: int = 3) -> list:
        """For tabular data: the features where a training point differs most from the test point."""
        if self.kind != "tabular":
            return []
        a = np.asarray(self.train[train_index], dtype=np.float64).reshape(-1)
        b = np.asarray(self.test[test_index], dtype=np.float64).reshape(-1)
        order = np.argsort(-np.abs(a - b))[:top]
        return [[self.feature_names[j], float(a[j]), float(b[j])] for j in order]
