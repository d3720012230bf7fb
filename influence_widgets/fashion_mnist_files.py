"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017): 70,000 grey-scale 28x28 images of clothing.

The four IDX files are looked up on disk (an explicit directory, the ``INFLUENCE_WIDGETS_DATA``
environment variable, the Debian package ``dataset-fashion-mnist``, a user cache) and, if none holds
them, downloaded once into the cache from the public mirror and checked against known sizes and MD5
checksums. The files are parsed with numpy, without any third-party data-set library.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import operator
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from influence_widgets.dataset import Dataset

__all__ = ["CLASS_NAMES", "FILES", "MIRROR_URL", "SYSTEM_DIR", "fashion_mnist", "locate"]

#: Base URL of the public mirror used by the Zalando Fashion-MNIST project.
MIRROR_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

#: Environment variable that replaces :data:`MIRROR_URL` when set.
MIRROR_ENV = "INFLUENCE_WIDGETS_FASHION_MNIST_MIRROR"

#: Environment variable naming a data directory (searched directly and in ``fashion-mnist/``).
DATA_ENV = "INFLUENCE_WIDGETS_DATA"

#: Where the Debian package ``dataset-fashion-mnist`` installs the four ``.gz`` files.
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Size in bytes and MD5 of each file as served by the mirror (the MD5s are those published in the
#: Fashion-MNIST README). Downloads are checked against this table. The Debian package stores the
#: same IDX data but recompresses it without the original file name in the gzip header, so its
#: ``.gz`` files are 23-24 bytes smaller and have other checksums; files found on disk are never
#: checked against this table, only parsed.
FILES: dict[str, tuple[int, str]] = {
    "train-images-idx3-ubyte.gz": (26421880, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    "train-labels-idx1-ubyte.gz": (29515, "25c81989df183df01b3e8a0aad5dffbe"),
    "t10k-images-idx3-ubyte.gz": (4422102, "bef4ecab320f06d8554ea6380940ec79"),
    "t10k-labels-idx1-ubyte.gz": (5148, "bb300cfdad3c16e7a12a480ee83cd310"),
}

#: Names of the ten classes, indexed by label.
CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

IMAGE_SHAPE = (28, 28)

# (images, labels) file stems of each split; each file may exist raw or with a ".gz" suffix.
_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_STEMS = tuple(stem for pair in _SPLITS.values() for stem in pair)
_FOUR_FILES = ", ".join(f"{stem}[.gz]" for stem in _STEMS)

_IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension

_DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK_BYTES = 1 << 16


# --------------------------------------------------------------------------- IDX parsing


def _read_bytes(file: Path) -> bytes:
    """Return the contents of ``file``, decompressed if its name ends in ``.gz``."""
    raw = file.read_bytes()
    if file.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{file}: not a valid gzip file (corrupt or truncated): {err}") from err


def _parse_idx(data: bytes, magic: int, file: Path) -> np.ndarray:
    """Parse the IDX bytes ``data`` of ``file`` into a uint8 array, checking magic and length.

    ``magic`` is the expected 32-bit magic number; its lowest byte is the number of dimensions.
    The returned array is a read-only view of ``data``.
    """
    ndim = magic & 0xFF
    header = 4 * (1 + ndim)
    if len(data) < header:
        raise ValueError(
            f"{file}: truncated IDX file ({len(data)} bytes, the header alone needs {header})"
        )
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ValueError(
            f"{file}: not an IDX file of the expected kind (magic number 0x{found:08x}, "
            f"expected 0x{magic:08x})"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"{file}: IDX file {problem}: header gives shape {dims}, i.e. {expected} bytes, "
            f"but the file holds {len(data)}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _read_images(file: Path) -> np.ndarray:
    """Read an IDX image file into a uint8 array of shape (n, 28, 28)."""
    images = _parse_idx(_read_bytes(file), _IMAGE_MAGIC, file)
    if images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"{file}: images are {images.shape[1:]}, expected {IMAGE_SHAPE}")
    return images


def _read_labels(file: Path) -> np.ndarray:
    """Read an IDX label file into a uint8 array of shape (n,) with values in 0..9."""
    labels = _parse_idx(_read_bytes(file), _LABEL_MAGIC, file)
    if labels.size and int(labels.max()) >= len(CLASS_NAMES):
        raise ValueError(
            f"{file}: label {int(labels.max())} out of range (expected 0..{len(CLASS_NAMES) - 1})"
        )
    return labels


def _load_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read the images (n, 28, 28) and labels (n,) of ``split`` ("train" or "test")."""
    image_file, label_file = (_find_file(directory, stem) for stem in _SPLITS[split])
    if image_file is None or label_file is None:
        raise FileNotFoundError(f"{directory}: Fashion-MNIST {split} files missing")
    images = _read_images(image_file)
    labels = _read_labels(label_file)
    if len(images) != len(labels):
        raise ValueError(
            f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} labels"
        )
    return images, labels


# --------------------------------------------------------------------------- locating files


def _find_file(directory: Path, stem: str) -> Path | None:
    """Return ``directory/stem`` if it exists, else ``directory/stem.gz`` if that exists, else None.

    The uncompressed file is preferred because it loads faster.
    """
    for name in (stem, stem + ".gz"):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _missing_files(directory: Path) -> list[str]:
    """Return the stems of the four files that ``directory`` lacks (in neither form)."""
    return [stem for stem in _STEMS if _find_file(directory, stem) is None]


def _default_cache_dir() -> Path:
    """Return ``$XDG_CACHE_HOME/influence_widgets/fashion-mnist`` (``~/.cache`` if unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "influence_widgets" / "fashion-mnist"


def _search_dirs(cache: Path) -> list[tuple[Path | None, str]]:
    """Return the directories to search, in order, each with a note on where it comes from.

    The path is None for the environment variable when it is unset, so that it still shows up in
    error messages.
    """
    dirs: list[tuple[Path | None, str]] = []
    env = os.environ.get(DATA_ENV)
    if env:
        base = Path(env).expanduser()
        dirs.append((base, f"${DATA_ENV}"))
        dirs.append((base / "fashion-mnist", f"${DATA_ENV}/fashion-mnist"))
    else:
        dirs.append((None, f"${DATA_ENV} (not set)"))
    dirs.append((Path(SYSTEM_DIR), "Debian package dataset-fashion-mnist"))
    dirs.append((cache, "user cache"))
    return dirs


def _first_complete(dirs: list[tuple[Path | None, str]]) -> Path | None:
    """Return the first directory in ``dirs`` that holds all four files, or None."""
    for directory, _ in dirs:
        if directory is not None and directory.is_dir() and not _missing_files(directory):
            return directory
    return None


def _status(directory: Path) -> str:
    """Say why ``directory`` was not used: it does not exist, or which files it lacks."""
    if not directory.is_dir():
        return "no such directory"
    missing = _missing_files(directory)
    if len(missing) == len(_STEMS):
        return "holds none of the four files"
    return "lacks " + ", ".join(f"{stem}[.gz]" for stem in missing)


def _describe(dirs: list[tuple[Path | None, str]]) -> str:
    """Format the searched directories, each with where it comes from and what it lacks."""
    lines = [f"  - {note}" if d is None else f"  - {d}  ({note}): {_status(d)}" for d, note in dirs]
    return "\n".join(lines)


def _explicit_dir(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` as a directory holding all four files, or raise FileNotFoundError."""
    directory = Path(path).expanduser()
    if directory.is_dir() and not _missing_files(directory):
        return directory
    raise FileNotFoundError(
        f"fashion_mnist(path={str(path)!r}): {_status(directory)}; it must hold {_FOUR_FILES}"
    )


# --------------------------------------------------------------------------- downloading


def _mirror_url() -> str:
    """Return the mirror's base URL (``$INFLUENCE_WIDGETS_FASHION_MNIST_MIRROR`` or the default)."""
    base = os.environ.get(MIRROR_ENV) or MIRROR_URL
    return base if base.endswith("/") else base + "/"


def _fetch(url: str, out: BinaryIO, bar: Any) -> str:
    """Stream ``url`` into the binary file ``out``, advancing ``bar``; return the MD5 hex digest."""
    digest = hashlib.md5(usedforsecurity=False)
    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
        while chunk := response.read(_CHUNK_BYTES):
            out.write(chunk)
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _download_file(name: str, cache: Path, bar: Any) -> None:
    """Download ``name`` from the mirror into ``cache``, verifying it against :data:`FILES`.

    The data goes to a temporary file in ``cache`` that is renamed into place only after its size
    and MD5 match; on any failure the temporary file is deleted. A checksum or size mismatch
    raises ValueError; network failures propagate as OSError or http.client.HTTPException.
    """
    size, md5 = FILES[name]
    url = _mirror_url() + name
    fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=f".{name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            got_md5 = _fetch(url, out, bar)
        got_size = tmp.stat().st_size
        if got_size != size or got_md5 != md5:
            raise ValueError(
                f"downloaded {name} from {url} does not match the expected file: "
                f"md5 {got_md5} ({got_size} bytes), expected md5 {md5} ({size} bytes)"
            )
        os.replace(tmp, cache / name)
    finally:
        tmp.unlink(missing_ok=True)


def _download_missing(cache: Path, progress: bool) -> None:
    """Download into ``cache`` each file of :data:`FILES` that it does not hold yet."""
    from tqdm.auto import tqdm

    cache.mkdir(parents=True, exist_ok=True)
    todo = [name for name in FILES if _find_file(cache, name.removesuffix(".gz")) is None]
    total = sum(FILES[name][0] for name in todo)
    with tqdm(
        total=total, unit="B", unit_scale=True, desc="Fashion-MNIST", disable=not progress
    ) as bar:
        for name in todo:
            _download_file(name, cache, bar)


def _reason(err: BaseException) -> str:
    """Return a short description of why a download failed."""
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        return str(err.reason)
    return str(err) or type(err).__name__


def _unavailable_message(dirs: list[tuple[Path | None, str]], reason: str) -> str:
    """Explain that the files were not found, why they could not be fetched, and how to fix it."""
    return (
        f"Fashion-MNIST files not found: no directory holds all four of {_FOUR_FILES}. "
        "Searched, in this order:\n"
        f"{_describe(dirs)}\n"
        f"{reason}\n"
        "To fix this, do one of:\n"
        "  - install the Debian package: sudo apt-get install dataset-fashion-mnist\n"
        f"  - put the four files in a directory and set the environment variable {DATA_ENV} "
        "to it\n"
        "  - pass the directory holding them as fashion_mnist(path=...)\n"
        f"  - go online once (they are downloaded into the user cache), or set {MIRROR_ENV} "
        "to a mirror that serves them"
    )


def locate(
    *,
    path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """Return the directory holding the four files, downloading them into the cache if allowed.

    The search and the arguments are those of :func:`fashion_mnist`, which reads the files from
    here; this only finds (or fetches) them, so that a caller can tell whether the data can be had.

    Raises:
        FileNotFoundError: ``path`` lacks the files, or nothing was found and ``download`` is false.
        RuntimeError: nothing was found and the download failed.
    """
    if path is not None:
        return _explicit_dir(path)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
    dirs = _search_dirs(cache)
    found = _first_complete(dirs)
    if found is not None:
        return found
    if not download:
        raise FileNotFoundError(
            _unavailable_message(dirs, "Downloading is disabled (download=False).")
        )
    url = _mirror_url()
    try:
        _download_missing(cache, progress)
    except (OSError, http.client.HTTPException) as err:
        reason = f"Downloading from {url} into {cache} failed: {_reason(err)}"
        raise RuntimeError(_unavailable_message(dirs, reason)) from err
    return cache


# --------------------------------------------------------------------------- selection


def _check_classes(classes: Sequence[int]) -> list[int]:
    """Validate ``classes`` (distinct labels in 0..9, at least one) and return them as ints."""
    try:
        chosen = [operator.index(c) for c in classes]
    except TypeError as err:
        raise ValueError(f"fashion_mnist(): classes must be integers, got {classes!r}") from err
    if not chosen:
        raise ValueError("fashion_mnist(): classes must name at least one class")
    bad = [c for c in chosen if not 0 <= c < len(CLASS_NAMES)]
    if bad:
        raise ValueError(f"fashion_mnist(): classes must lie in 0..9, got {bad}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"fashion_mnist(): classes must be distinct, got {chosen}")
    return chosen


def _filter_classes(
    images: np.ndarray, labels: np.ndarray, classes: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the examples whose label is in ``classes`` and relabel ``classes[i]`` as ``i``."""
    relabel = np.full(len(CLASS_NAMES), -1, dtype=np.int64)
    relabel[classes] = np.arange(len(classes))
    keep = np.isin(labels, classes)
    return images[keep], relabel[labels[keep]]


def _check_size(size: int | None, arg: str) -> int | None:
    """Validate that a requested subset size is None or a positive integer and return it."""
    if size is None:
        return None
    size = operator.index(size)
    if size < 1:
        raise ValueError(f"fashion_mnist(): {arg} must be at least 1, got {size}")
    return size


def _subset(
    images: np.ndarray,
    labels: np.ndarray,
    size: int | None,
    rng: np.random.Generator,
    arg: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Return a random subset of ``size`` examples, kept in their original order (all if None)."""
    if size is None:
        return images, labels
    if size > len(labels):
        raise ValueError(
            f"fashion_mnist(): {arg} must be between 1 and {len(labels)} "
            f"(the number of examples available), got {size}"
        )
    keep = np.sort(rng.choice(len(labels), size=size, replace=False))
    return images[keep], labels[keep]


def _to_float(images: np.ndarray) -> np.ndarray:
    """Flatten uint8 images to float32 rows of 784 values scaled to [0, 1]."""
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)


# --------------------------------------------------------------------------- public API


def fashion_mnist(
    n_train: int | None = None,
    n_test: int | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    classes: Sequence[int] | None = None,
    seed: int = 0,
    download: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Dataset:
    """Fashion-MNIST: 60,000 training and 10,000 test images of clothing in 10 classes.

    Images are 28x28 grey-scale, returned flattened row by row as float32 vectors of 784 values in
    [0, 1]; labels are int64. The split is the data set's own train/test split.

    The four IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each raw or gzipped with a ``.gz``
    suffix) are taken from the first of these directories that holds all four:

    1. ``path``, if given; if it lacks a file, FileNotFoundError is raised and nothing else is
       searched;
    2. ``$INFLUENCE_WIDGETS_DATA`` and ``$INFLUENCE_WIDGETS_DATA/fashion-mnist``;
    3. ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``);
    4. the cache: ``cache_dir``, else ``$XDG_CACHE_HOME/influence_widgets/fashion-mnist``, else
       ``~/.cache/influence_widgets/fashion-mnist``.

    If none does and ``download`` is true, the missing ``.gz`` files (about 30 MB) are downloaded
    into the cache from :data:`MIRROR_URL` (or ``$INFLUENCE_WIDGETS_FASHION_MNIST_MIRROR``) and
    checked against the sizes and MD5s in :data:`FILES`.

    Args:
        n_train: number of training images to keep, as a fixed random subset of the (class-filtered)
            training split; None keeps all. Koh & Liang (2017) trained on 55,000 images, and
            ``n_train=55000`` gives a training set of that size (a random subset of the 60,000,
            not necessarily the same images).
        n_test: the same for the test split.
        path: directory holding the four files; skips the search.
        classes: keep only these class labels (0-9), relabelled 0..k-1 in the order given;
            ``class_names`` follows that order. None keeps all ten classes.
        seed: seed of the random subsets; the same seed always selects the same images. The train
            and test subsets are drawn independently, so one does not depend on the other's size.
        download: whether to download the files when they are not found.
        cache_dir: directory to search last and to download into.
        progress: whether to show a progress bar while downloading.

    Returns:
        A ``Dataset`` named "fashion_mnist" with ``kind="image"`` and ``image_shape=(28, 28)``.

    Raises:
        FileNotFoundError: ``path`` lacks the files, or nothing was found and ``download`` is false.
        RuntimeError: nothing was found and the download failed (offline, mirror unreachable).
        ValueError: a file is corrupt or truncated, a download does not match its checksum, or an
            argument is out of range.
    """
    sizes = {"train": _check_size(n_train, "n_train"), "test": _check_size(n_test, "n_test")}
    chosen = _check_classes(classes) if classes is not None else None
    directory = locate(path=path, cache_dir=cache_dir, download=download, progress=progress)
    seeds = np.random.SeedSequence(seed).spawn(2)

    arrays = {}
    for split, child_seed in zip(("train", "test"), seeds, strict=True):
        images, labels = _load_split(directory, split)
        if chosen is not None:
            images, labels = _filter_classes(images, labels, chosen)
        rng = np.random.default_rng(child_seed)
        images, labels = _subset(images, labels, sizes[split], rng, f"n_{split}")
        arrays[split] = (_to_float(images), labels.astype(np.int64))

    names = [CLASS_NAMES[c] for c in chosen] if chosen is not None else list(CLASS_NAMES)
    return Dataset(
        name="fashion_mnist",
        X_train=torch.from_numpy(arrays["train"][0]),
        y_train=torch.from_numpy(arrays["train"][1]),
        X_test=torch.from_numpy(arrays["test"][0]),
        y_test=torch.from_numpy(arrays["test"][1]),
        class_names=names,
        kind="image",
        image_shape=IMAGE_SHAPE,
    )
