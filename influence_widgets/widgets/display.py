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
        """The display fields of one point: {"png": bytes} | {"text": str} | {"row": [...]}.

        A tabular ``row`` holds every feature, most unusual first: ``[name, value, z]`` with
        z = (value - mean) / SD, the mean and SD over the training set (see ``feature_sd``).
        """
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
        row = self._row(source, index)
        z = (row - self._feature_mean) / self.feature_sd
        return {"row": self._by_size(z, self.feature_names, row, z)}

    def differences(self, train_index: int, test_index: int) -> list:
        """For tabular data: every feature of a training point beside the test point's, the
        features where they differ most first: ``[name, train value, test value, d]`` with
        d = (train value - test value) / SD, the difference in training-set SDs."""
        if self.kind != "tabular":
            return []
        a, b = self._row(self.train, train_index), self._row(self.test, test_index)
        d = (a - b) / self.feature_sd
        return self._by_size(d, self.feature_names, a, b, d)

    @functools.cached_property
    def _train_rows(self) -> np.ndarray:
        return np.asarray(self.train, dtype=np.float64).reshape(len(self.train), -1)

    @functools.cached_property
    def _feature_mean(self) -> np.ndarray:
        return self._train_rows.mean(axis=0)

    @functools.cached_property
    def feature_sd(self) -> np.ndarray:
        """Each feature's standard deviation over the training set, the unit in which the
        explorer measures differences (1 for a feature that is constant there)."""
        sd = self._train_rows.std(axis=0)
        return np.where(sd > 0, sd, 1.0)

    @staticmethod
    def _row(source: Sequence, index: int) -> np.ndarray:
        return np.asarray(source[index], dtype=np.float64).reshape(-1)

    @staticmethod
    def _by_size(key: np.ndarray, *columns) -> list:
        """Rows of ``columns`` (names, then float arrays), largest ``|key|`` first (a stable
        sort: ties keep the data's order)."""
        order = np.argsort(-np.abs(key), kind="stable")
        names, values = columns[0], columns[1:]
        return [[names[j], *(float(v[j]) for v in values)] for j in order]
