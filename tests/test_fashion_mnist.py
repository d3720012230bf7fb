"""Tests of the Fashion-MNIST loader on tiny synthetic IDX files and a local HTTP mirror."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

import influence_widgets.fashion_mnist_files as fm
from influence_widgets.fashion_mnist_files import fashion_mnist
from tests.conftest import REQUIRE_FASHION_MNIST, fashion_mnist_unavailable, require_fashion_mnist

ROOT = Path(__file__).resolve().parents[1]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
N_TRAIN, N_TEST = 12, 6
STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# --------------------------------------------------------------------------- synthetic data


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (magic 0x0000080N, big-endian dimensions)."""
    header = (0x0800 + array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def synthetic_arrays() -> dict[str, np.ndarray]:
    """Small deterministic images and labels; every image differs from every other."""
    rng = np.random.default_rng(1234)
    return {
        "train_images": rng.integers(0, 256, size=(N_TRAIN, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(N_TRAIN) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, size=(N_TEST, 28, 28), dtype=np.uint8),
        "test_labels": ((np.arange(N_TEST) + 3) % 10).astype(np.uint8),
    }


def write_files(directory: Path, gz: bool = True) -> dict[str, np.ndarray]:
    """Write the four synthetic IDX files into ``directory`` (gzipped or raw); return the arrays."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = synthetic_arrays()
    for key, stem in STEMS.items():
        data = idx_bytes(arrays[key])
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (directory / stem).write_bytes(data)
    return arrays


def files_table(directory: Path) -> dict[str, tuple[int, str]]:
    """Sizes and MD5s of the ``.gz`` files in ``directory``, in the format of ``fm.FILES``."""
    table = {}
    for stem in STEMS.values():
        data = (directory / f"{stem}.gz").read_bytes()
        table[f"{stem}.gz"] = (len(data), hashlib.md5(data).hexdigest())
    return table


def pixels(X) -> np.ndarray:
    """Undo the [0, 1] scaling of flattened images and return them as (n, 28, 28) uint8."""
    return np.rint(X.numpy() * 255).astype(np.uint8).reshape(-1, 28, 28)


def gz_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep every test away from the real data, the user's cache and the network."""
    monkeypatch.delenv(fm.DATA_ENV, raising=False)
    monkeypatch.delenv(fm.MIRROR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "no-such-system-dir")
    monkeypatch.setattr(fm, "MIRROR_URL", "http://127.0.0.1:9/never-used/")


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_loads_synthetic_files(tmp_path: Path, gz: bool) -> None:
    arrays = write_files(tmp_path / "data", gz=gz)
    ds = fashion_mnist(path=tmp_path / "data")

    assert ds.name == "fashion_mnist"
    assert ds.kind == "image" and ds.image_shape == (28, 28)
    assert ds.class_names == fm.CLASS_NAMES and len(ds.class_names) == 10
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert tuple(ds.X_train.shape) == (N_TRAIN, 784) and tuple(ds.X_test.shape) == (N_TEST, 784)
    assert str(ds.X_train.dtype) == "torch.float32" and str(ds.y_train.dtype) == "torch.int64"
    assert str(ds.X_test.dtype) == "torch.float32" and str(ds.y_test.dtype) == "torch.int64"
    assert float(ds.X_train.min()) >= 0.0 and float(ds.X_train.max()) <= 1.0
    np.testing.assert_array_equal(pixels(ds.X_train), arrays["train_images"])
    np.testing.assert_array_equal(pixels(ds.X_test), arrays["test_images"])
    np.testing.assert_array_equal(ds.y_train.numpy(), arrays["train_labels"])
    np.testing.assert_array_equal(ds.y_test.numpy(), arrays["test_labels"])
    np.testing.assert_array_equal(ds.images("test"), arrays["test_images"] / np.float32(255))


def test_scaling_maps_0_and_255_to_0_and_1(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    write_files(directory, gz=False)
    images = np.zeros((N_TRAIN, 28, 28), dtype=np.uint8)
    images[0] = 255
    (directory / STEMS["train_images"]).write_bytes(idx_bytes(images))
    X = fashion_mnist(path=directory).X_train.numpy()
    assert X[0].min() == 1.0 and X[1:].max() == 0.0


def test_classes_filter_and_relabel_in_given_order(tmp_path: Path) -> None:
    arrays = write_files(tmp_path / "data")
    ds = fashion_mnist(path=tmp_path / "data", classes=[5, 1, 0])

    assert ds.class_names == ["Sandal", "Trouser", "T-shirt/top"]
    for split in ("train", "test"):
        labels = arrays[f"{split}_labels"]
        keep = np.isin(labels, [5, 1, 0])
        expected = np.select([labels[keep] == 5, labels[keep] == 1], [0, 1], 2)
        y = (ds.y_train if split == "train" else ds.y_test).numpy()
        X = ds.X_train if split == "train" else ds.X_test
        np.testing.assert_array_equal(y, expected)
        np.testing.assert_array_equal(pixels(X), arrays[f"{split}_images"][keep])
    assert len(ds.y_train) == 5  # labels 0, 1, 5, 0, 1 among the 12 training images


@pytest.mark.parametrize("classes", [[10], [-1], [1, 1], [], ["a"]])
def test_bad_classes_raise(tmp_path: Path, classes: list) -> None:
    write_files(tmp_path / "data")
    with pytest.raises(ValueError, match="classes"):
        fashion_mnist(path=tmp_path / "data", classes=classes)


def test_subsets_are_seeded_sorted_and_independent(tmp_path: Path) -> None:
    arrays = write_files(tmp_path / "data")
    a = fashion_mnist(5, 3, path=tmp_path / "data", seed=7)
    b = fashion_mnist(5, 3, path=tmp_path / "data", seed=7)
    c = fashion_mnist(5, 3, path=tmp_path / "data", seed=8)
    only_test = fashion_mnist(None, 3, path=tmp_path / "data", seed=7)

    assert tuple(a.X_train.shape) == (5, 784) and tuple(a.X_test.shape) == (3, 784)
    np.testing.assert_array_equal(a.X_train.numpy(), b.X_train.numpy())
    np.testing.assert_array_equal(a.y_test.numpy(), b.y_test.numpy())
    assert not np.array_equal(a.X_train.numpy(), c.X_train.numpy())
    # The test subset does not depend on how many training images were asked for.
    np.testing.assert_array_equal(a.X_test.numpy(), only_test.X_test.numpy())
    assert len(only_test.y_train) == N_TRAIN

    # The subset keeps the original order: its rows are the originals at increasing indices.
    flat = arrays["train_images"].reshape(N_TRAIN, -1)
    rows = pixels(a.X_train).reshape(5, -1)
    index = [int(np.flatnonzero((flat == row).all(axis=1))[0]) for row in rows]
    assert index == sorted(index) and len(set(index)) == 5
    np.testing.assert_array_equal(a.y_train.numpy(), arrays["train_labels"][index])


def test_subset_of_filtered_classes(tmp_path: Path) -> None:
    write_files(tmp_path / "data")
    # Among the classes 3 and 1 there are 3 training images (labels 1, 3, 1) and 1 test image.
    ds = fashion_mnist(2, 1, path=tmp_path / "data", classes=[3, 1])
    assert len(ds.y_train) == 2 and set(ds.y_train.tolist()) <= {0, 1}
    assert ds.y_test.tolist() == [0]
    with pytest.raises(ValueError, match="n_train.*between 1 and 3"):
        fashion_mnist(4, path=tmp_path / "data", classes=[3, 1])


@pytest.mark.parametrize(
    ("n_train", "n_test", "arg"),
    [(N_TRAIN + 1, None, "n_train"), (0, None, "n_train"), (None, N_TEST + 1, "n_test"),
     (None, -2, "n_test")],
)  # fmt: skip
def test_subset_size_out_of_range(tmp_path: Path, n_train, n_test, arg: str) -> None:
    write_files(tmp_path / "data")
    with pytest.raises(ValueError, match=arg):
        fashion_mnist(n_train, n_test, path=tmp_path / "data")


def test_whole_split_as_subset_size(tmp_path: Path) -> None:
    write_files(tmp_path / "data")
    ds = fashion_mnist(N_TRAIN, N_TEST, path=tmp_path / "data")
    assert len(ds.y_train) == N_TRAIN and len(ds.y_test) == N_TEST


# --------------------------------------------------------------------------- corrupt files


def test_truncated_gz_names_the_file(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    write_files(directory)
    file = directory / f"{STEMS['train_images']}.gz"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with pytest.raises(ValueError, match=STEMS["train_images"]):
        fashion_mnist(path=directory)


def test_garbage_gz_names_the_file(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    write_files(directory)
    (directory / f"{STEMS['test_labels']}.gz").write_bytes(b"this is not gzip data at all")
    with pytest.raises(ValueError, match=STEMS["test_labels"]):
        fashion_mnist(path=directory)


@pytest.mark.parametrize("cut", [10, 784 * 3, 20000])
def test_truncated_raw_names_the_file(tmp_path: Path, cut: int) -> None:
    directory = tmp_path / "data"
    write_files(directory, gz=False)
    file = directory / STEMS["test_images"]
    file.write_bytes(file.read_bytes()[:-cut])
    with pytest.raises(ValueError, match=f"{STEMS['test_images']}.*truncated"):
        fashion_mnist(path=directory)


def test_trailing_bytes_rejected(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    write_files(directory, gz=False)
    file = directory / STEMS["train_labels"]
    file.write_bytes(file.read_bytes() + b"\x00")
    with pytest.raises(ValueError, match=f"{STEMS['train_labels']}.*trailing"):
        fashion_mnist(path=directory)


def test_wrong_magic_rejected(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    write_files(directory, gz=False)
    # A label file where an image file belongs: magic 0x00000801 instead of 0x00000803.
    labels = np.zeros(N_TRAIN, dtype=np.uint8)
    (directory / STEMS["train_images"]).write_bytes(idx_bytes(labels))
    with pytest.raises(ValueError, match=f"{STEMS['train_images']}.*magic.*0x00000801"):
        fashion_mnist(path=directory)


def test_wrong_image_size_rejected(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    write_files(directory, gz=False)
    (directory / STEMS["test_images"]).write_bytes(idx_bytes(np.zeros((N_TEST, 8, 8), np.uint8)))
    with pytest.raises(ValueError, match=STEMS["test_images"]):
        fashion_mnist(path=directory)


def test_label_out_of_range_rejected(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    write_files(directory, gz=False)
    (directory / STEMS["test_labels"]).write_bytes(idx_bytes(np.full(N_TEST, 10, np.uint8)))
    with pytest.raises(ValueError, match=STEMS["test_labels"]):
        fashion_mnist(path=directory)


def test_image_and_label_counts_must_agree(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    write_files(directory, gz=False)
    (directory / STEMS["train_labels"]).write_bytes(idx_bytes(np.zeros(N_TRAIN - 1, np.uint8)))
    with pytest.raises(ValueError, match=f"{N_TRAIN} images.*{N_TRAIN - 1} labels") as info:
        fashion_mnist(path=directory)
    assert STEMS["train_images"] in str(info.value) and STEMS["train_labels"] in str(info.value)


# --------------------------------------------------------------------------- lookup


@pytest.mark.parametrize("subfolder", ["", "fashion-mnist"])
def test_env_var_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, subfolder: str) -> None:
    arrays = write_files(tmp_path / "env" / subfolder)
    monkeypatch.setenv(fm.DATA_ENV, str(tmp_path / "env"))
    ds = fashion_mnist(download=False, cache_dir=tmp_path / "empty-cache")
    np.testing.assert_array_equal(ds.y_train.numpy(), arrays["train_labels"])


def test_system_dir_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_files(tmp_path / "system")
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "system")
    assert len(fashion_mnist(download=False).y_test) == N_TEST


def test_env_var_comes_before_system_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_files(tmp_path / "system")
    write_files(tmp_path / "env")
    (tmp_path / "env" / f"{STEMS['train_labels']}.gz").unlink()
    (tmp_path / "env" / STEMS["train_labels"]).write_bytes(idx_bytes(np.full(N_TRAIN, 9, np.uint8)))
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setenv(fm.DATA_ENV, str(tmp_path / "env"))
    assert set(fashion_mnist(download=False).y_train.tolist()) == {9}


def test_default_cache_dir_uses_xdg(tmp_path: Path) -> None:
    write_files(tmp_path / "xdg-cache" / "influence_widgets" / "fashion-mnist")
    assert len(fashion_mnist(download=False).y_train) == N_TRAIN


def test_explicit_missing_path_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_files(tmp_path / "env")
    monkeypatch.setenv(fm.DATA_ENV, str(tmp_path / "env"))  # must not be used as a fallback
    missing = tmp_path / "does-not-exist"
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        fashion_mnist(path=missing)


def test_explicit_incomplete_path_raises(tmp_path: Path) -> None:
    write_files(tmp_path / "data")
    (tmp_path / "data" / f"{STEMS['test_labels']}.gz").unlink()
    with pytest.raises(FileNotFoundError, match=STEMS["test_labels"]) as info:
        fashion_mnist(path=tmp_path / "data")
    assert str(tmp_path / "data") in str(info.value)


def test_nothing_found_without_download(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError) as info:
        fashion_mnist(download=False, cache_dir=cache)
    message = str(info.value)
    for expected in (str(cache), str(fm.SYSTEM_DIR), fm.DATA_ENV, "dataset-fashion-mnist", "path="):
        assert expected in message
    assert not cache.exists()


def test_error_says_what_each_searched_directory_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each searched directory's line says why it was passed over; the fix names every way in."""
    write_files(tmp_path / "env")
    (tmp_path / "env" / f"{STEMS['test_labels']}.gz").unlink()
    monkeypatch.setenv(fm.DATA_ENV, str(tmp_path / "env"))
    (tmp_path / "cache").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        fashion_mnist(download=False, cache_dir=tmp_path / "cache")
    lines = {line.split("  (")[0].strip("- "): line for line in str(info.value).splitlines()}
    assert lines[str(tmp_path / "env")].endswith(f"lacks {STEMS['test_labels']}[.gz]")
    assert lines[str(tmp_path / "env" / "fashion-mnist")].endswith("no such directory")
    assert lines[str(fm.SYSTEM_DIR)].endswith("no such directory")
    assert lines[str(tmp_path / "cache")].endswith("holds none of the four files")
    for stem in STEMS.values():
        assert f"{stem}[.gz]" in str(info.value)
    assert fm.MIRROR_ENV in str(info.value)


# --------------------------------------------------------------------------- download


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory, records each requested path, and keeps quiet."""

    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


class Mirror(NamedTuple):
    url: str  # its base URL, with a trailing slash
    root: Path  # the directory it serves
    requests: list[str]  # the paths asked for, in order
    cache: Path  # an empty cache directory for the download


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Mirror]:
    """A local HTTP mirror of the synthetic ``.gz`` files, which the loader is pointed at."""
    root = tmp_path / "mirror"
    write_files(root, gz=True)
    requests: list[str] = []
    handler = type("Handler", (CountingHandler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    monkeypatch.setenv(fm.MIRROR_ENV, url)
    monkeypatch.setattr(fm, "FILES", files_table(root))
    try:
        yield Mirror(url, root, requests, tmp_path / "cache")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_verifies_caches_and_loads(mirror: Mirror) -> None:
    arrays = synthetic_arrays()
    ds = fashion_mnist(cache_dir=mirror.cache, progress=True)
    assert sorted(mirror.requests) == sorted(f"/{name}" for name in fm.FILES)
    assert gz_files(mirror.cache) == sorted(fm.FILES)  # no temporary files left over
    for name in fm.FILES:
        assert (mirror.cache / name).read_bytes() == (mirror.root / name).read_bytes()
    np.testing.assert_array_equal(pixels(ds.X_train), arrays["train_images"])
    np.testing.assert_array_equal(ds.y_test.numpy(), arrays["test_labels"])

    again = fashion_mnist(cache_dir=mirror.cache, progress=False)
    assert len(mirror.requests) == 4  # served from the cache
    np.testing.assert_array_equal(again.X_test.numpy(), ds.X_test.numpy())


def test_download_only_fetches_missing_files(mirror: Mirror) -> None:
    mirror.cache.mkdir()
    for stem in (STEMS["train_images"], STEMS["test_images"]):
        (mirror.cache / f"{stem}.gz").write_bytes((mirror.root / f"{stem}.gz").read_bytes())

    fashion_mnist(cache_dir=mirror.cache, progress=False)
    assert sorted(mirror.requests) == sorted(
        [f"/{STEMS['train_labels']}.gz", f"/{STEMS['test_labels']}.gz"]
    )


def test_mirror_url_without_trailing_slash(monkeypatch: pytest.MonkeyPatch, mirror: Mirror) -> None:
    monkeypatch.setenv(fm.MIRROR_ENV, mirror.url.rstrip("/"))
    fashion_mnist(cache_dir=mirror.cache, progress=False)
    assert len(mirror.requests) == 4


@pytest.mark.parametrize("wrong", ["md5", "size"])
def test_checksum_mismatch_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, mirror: Mirror, wrong: str
) -> None:
    name = f"{STEMS['train_labels']}.gz"
    size, md5 = fm.FILES[name]
    bad = (size, "0" * 32) if wrong == "md5" else (size + 1, md5)
    monkeypatch.setitem(fm.FILES, name, bad)

    with pytest.raises(ValueError, match=name) as info:
        fashion_mnist(cache_dir=mirror.cache, progress=False)
    assert md5 in str(info.value) and bad[1] in str(info.value)
    assert name not in gz_files(mirror.cache)
    assert not [f for f in gz_files(mirror.cache) if f.endswith(".part")]


def closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_unreachable_mirror_gives_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = closed_port_url()
    monkeypatch.setenv(fm.MIRROR_ENV, url)
    cache = tmp_path / "cache"

    with pytest.raises(RuntimeError) as info:
        fashion_mnist(cache_dir=cache, progress=False)
    message = str(info.value)
    for expected in (
        "not found",
        str(cache),
        str(fm.SYSTEM_DIR),
        fm.DATA_ENV,
        url,
        "failed",
        "apt-get install dataset-fashion-mnist",
        "path=",
    ):
        assert expected in message, expected
    assert gz_files(cache) == []


def test_missing_file_on_mirror_gives_clear_error(mirror: Mirror) -> None:
    (mirror.root / f"{STEMS['test_images']}.gz").unlink()
    with pytest.raises(RuntimeError, match="404"):
        fashion_mnist(cache_dir=mirror.cache, progress=False)
    assert not [f for f in gz_files(mirror.cache) if f.endswith(".part")]


# --------------------------------------------------------------------------- tests that need the data
# The ``isolated`` fixture leaves the loader without any data and without network, as offline.


def test_helper_skips_with_how_to_get_the_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_FASHION_MNIST, raising=False)
    reason = fashion_mnist_unavailable()
    assert reason is not None
    with pytest.raises(pytest.skip.Exception) as info:
        require_fashion_mnist(reason)
    for expected in ("apt-get install dataset-fashion-mnist", fm.DATA_ENV, "path=", "127.0.0.1:9"):
        assert expected in str(info.value), expected
    assert f"set {REQUIRE_FASHION_MNIST}=1 to fail" in str(info.value)


def test_helper_fails_when_ci_requires_the_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_FASHION_MNIST, "1")
    with pytest.raises(pytest.fail.Exception) as info:
        require_fashion_mnist(fashion_mnist_unavailable())
    assert "apt-get install dataset-fashion-mnist" in str(info.value)
    assert f"{REQUIRE_FASHION_MNIST}=1 is set" in str(info.value)


def test_helper_lets_the_test_run_when_the_data_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_files(tmp_path / "env")
    monkeypatch.setenv(fm.DATA_ENV, str(tmp_path / "env"))
    monkeypatch.setenv(REQUIRE_FASHION_MNIST, "1")
    assert fashion_mnist_unavailable() is None
    require_fashion_mnist(None)  # neither skips nor fails


# Imported by every Python process of the offline run (pytest, the notebook's kernel, the
# benchmark's subprocess): the loader is given a Debian directory that does not exist.
OFFLINE_SITECUSTOMIZE = """
import importlib.abc, importlib.util, pathlib, sys

class HideSystemDir(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "influence_widgets.fashion_mnist_files":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.SYSTEM_DIR = pathlib.Path("/nonexistent-iw-system-dir")

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, HideSystemDir())
"""
# The tests that load Fashion-MNIST (a notebook, a benchmark's subprocess), without their own skip.
NEEDS_DATA = [
    "tests/test_attack_benchmark.py::test_attack_quick_run_flips_writes_its_table_and_resumes",
    "tests/test_attack_benchmark.py::test_attack_quick_run_on_upsampled_inputs",
    "tests/test_attack_tab.py::test_the_attack_demo_opens_quickly_and_its_defaults_flip_a_correct_point",
    "tests/test_notebooks.py::test_notebook_runs_headless[03_training_set_attacks.ipynb]",
]


def run_offline(tmp_path: Path, require: bool) -> subprocess.CompletedProcess:
    """pytest on NEEDS_DATA with no data anywhere and the mirror on a closed local port."""
    (tmp_path / "sitecustomize.py").write_text(OFFLINE_SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if k not in (fm.DATA_ENV, REQUIRE_FASHION_MNIST)}
    env.update(
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT), env.get("PYTHONPATH", "")]),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        **{fm.MIRROR_ENV: "http://127.0.0.1:9/"},
        **({REQUIRE_FASHION_MNIST: "1"} if require else {}),
    )
    command = [sys.executable, "-m", "pytest", "-rsE", "-p", "no:cacheprovider", *NEEDS_DATA]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


@pytest.mark.slow
@pytest.mark.timeout(1300)
def test_offline_the_tests_that_need_the_data_skip_or_fail_under_ci(tmp_path: Path) -> None:
    """As ``make test`` on a machine without network or data, and as CI when the data is missing."""
    skipped = run_offline(tmp_path, require=False)
    assert skipped.returncode == 0, skipped.stdout[-3000:]
    assert f"{len(NEEDS_DATA)} skipped" in skipped.stdout, skipped.stdout[-3000:]
    assert "apt-get install dataset-fashion-mnist" in skipped.stdout
    assert "URLError" not in skipped.stdout

    failed = run_offline(tmp_path, require=True)
    assert failed.returncode == 1, failed.stdout[-3000:]
    assert f"{len(NEEDS_DATA)} errors" in failed.stdout, failed.stdout[-3000:]
    assert f"{REQUIRE_FASHION_MNIST}=1 is set" in failed.stdout


# --------------------------------------------------------------------------- the real data


def test_real_data_from_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """The files of the Debian package (which CI installs) parse into the real data set."""
    try:
        fm.locate(path=DEBIAN_DIR)
    except FileNotFoundError as err:
        require_fashion_mnist(f"{err}: sudo apt-get install dataset-fashion-mnist")
    monkeypatch.setattr(fm, "SYSTEM_DIR", DEBIAN_DIR)
    ds = fashion_mnist(1000, 200, download=False)
    assert tuple(ds.X_train.shape) == (1000, 784) and tuple(ds.X_test.shape) == (200, 784)
    assert ds.n_classes == 10 and set(ds.y_train.tolist()) == set(range(10))
    assert 0.0 <= float(ds.X_train.min()) and float(ds.X_train.max()) <= 1.0
