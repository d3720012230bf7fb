"""Bad inputs of the Dask scoring and the Zarr score store (issue 17, section 2): each case is a
call that must raise the exception type given, with a message matching a regex that names the
argument first. None of them starts a cluster. Self-contained, to be merged into
tests/test_bad_input.py."""

from __future__ import annotations

import pytest
import torch

import influence_widgets as iw

pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")


def _influence():
    gen = torch.Generator().manual_seed(2)
    X = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    y = (X[:, 0] > 0).long()
    model = torch.nn.Linear(3, 2, dtype=torch.float64)
    iw.train(model, (X, y), l2=0.1, progress=False)
    return iw.Influence(model, (X, y), l2=0.1, progress=False), X, y


def _score(**kwargs):
    inf, X, y = _influence()
    iw.score_distributed(inf, X[:2], y[:2], **kwargs)


def _file(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    return tmp_path / "notes.txt"


def _group(tmp_path):
    zarr.open_group(str(tmp_path / "group"), mode="w")
    return tmp_path / "group"


def _store(tmp_path, quantity="influence_on_loss"):
    array = zarr.open_array(str(tmp_path / "scores"), mode="w", shape=(3, 20), dtype="f8")
    array[:] = 0.0
    array.attrs["quantity"] = quantity
    return iw.ScoreStore(tmp_path / "scores")


CASES = [
    (
        "influence",
        lambda _: iw.score_distributed("influence", torch.zeros(1, 3)),
        TypeError,
        r"^influence: expected an iw\.Influence",
    ),
    ("client_type", lambda _: _score(client="tcp://x:8786"), TypeError, r"^client: expected"),
    ("chunk_size_zero", lambda _: _score(chunk_size=0), ValueError, r"^chunk_size: must be"),
    ("chunk_size_negative", lambda _: _score(chunk_size=-5), ValueError, r"^chunk_size:"),
    ("chunk_size_float", lambda _: _score(chunk_size=2.5), TypeError, r"^chunk_size: expected"),
    ("n_workers_zero", lambda _: _score(n_workers=0), ValueError, r"^n_workers: must be"),
    ("store_type", lambda _: _score(store=42), TypeError, r"^store: expected a path"),
    (
        "overwrite_type",
        lambda tmp: _score(store=tmp / "s", overwrite=1),
        TypeError,
        r"^overwrite: expected True or False",
    ),
    (
        "store_below_a_file",
        lambda tmp: _score(store=_file(tmp) / "s"),
        NotADirectoryError,
        r"^store: .* is a file, not a folder",
    ),
    (
        "store_a_zarr_group",
        lambda tmp: iw.ScoreStore(_group(tmp)),
        ValueError,
        r"^path: .* is not a score store",
    ),
    (
        "store_missing",
        lambda tmp: iw.ScoreStore(tmp / "nothing"),
        FileNotFoundError,
        r"^path: no Zarr score store",
    ),
    ("store_path_type", lambda _: iw.ScoreStore(3), TypeError, r"^path: expected a directory"),
    (
        "store_not_scores",
        lambda tmp: _store(tmp, quantity="other"),
        ValueError,
        r"^path: .* not a score store",
    ),
    ("test_index_range", lambda tmp: _store(tmp).top(3), IndexError, r"^test_index: 3 is out"),
    ("test_index_type", lambda tmp: _store(tmp).top(1.0), TypeError, r"^test_index: expected"),
    ("k_zero", lambda tmp: _store(tmp).top(0, k=0), ValueError, r"^k: must be"),
]


@pytest.mark.parametrize("call, error, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_distributed(call, error, pattern, tmp_path):
    with pytest.raises(error, match=pattern):
        call(tmp_path)
