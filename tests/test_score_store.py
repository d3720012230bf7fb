"""The score store's safety and correctness (issue: data loss, silent wrong results, raw errors).

- Paths: ``store=`` never deletes what the package did not write. An empty or non-string path is
  an error naming ``store``, raised before any scoring; an existing non-empty folder that is not a
  score store, an existing file, or a score store of an earlier run is replaced only with
  ``overwrite=True``; the current directory, its parents and the home directory never. The
  data-loss cases run in a scratch directory with a notebook, a text file and a sub-folder with a
  CSV that must survive.
- ``ScoreStore.check_matches`` refuses a store scored with other settings (model parameters,
  training points, l2, damping, Hessian, solver and its settings, loss, params) and names the
  difference.
- Dask: everything runs on the client passed, even when another Client is Dask's default; a
  bfloat16 model is scored (float32 scores); retries after a failed call succeed.

Every cluster here is a LocalCluster of one worker thread in this process (processes=False), so
that a worker's current directory is the test's scratch directory.
"""

from __future__ import annotations

import collections
import copy
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import influence_widgets as iw
from influence_widgets.output_paths import check_output_path
from tests.conftest import make_lr, make_mlp
from tests.test_distributed import PairDataset

pytest.importorskip("zarr")
distributed = pytest.importorskip("distributed")
SchedulerPlugin = distributed.diagnostics.plugin.SchedulerPlugin


def _local_client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    )
    return cluster, Client(cluster)


@pytest.fixture(scope="module")
def client():
    cluster, c = _local_client()
    with cluster, c:
        yield c


@pytest.fixture(scope="module")
def problem():
    pb = make_mlp()
    inf = iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, progress=False).fit()
    return pb, inf


class ForgottenKeys(SchedulerPlugin):
    """A scheduler plugin that counts how often each key is forgotten."""

    name = "forgotten-keys"

    def __init__(self) -> None:
        self.counts: collections.Counter = collections.Counter()

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if finish == "forgotten":
            self.counts[key] += 1


def _user_files(folder: Path) -> dict[str, str]:
    """A notebook, a text file and a sub-folder with a CSV: what must survive."""
    files = {
        "analysis.ipynb": '{"cells": [], "nbformat": 4}',
        "notes.txt": "do not delete",
        "data/important.csv": "a,b\n1,2\n",
    }
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return files


def _assert_survived(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        assert (folder / name).read_text() == text, f"{name} was changed or deleted"


# ----- data loss -----------------------------------------------------------------------------
def test_empty_store_path_is_an_error_and_deletes_nothing(client, problem, tmp_path, monkeypatch):
    pb, inf = problem
    monkeypatch.chdir(tmp_path)
    files = _user_files(tmp_path)
    with pytest.raises(ValueError, match="^store: an empty path"):
        iw.score_distributed(inf, pb.Xt, pb.yt, client=client, store="")
    _assert_survived(tmp_path, files)
    assert sorted(os.listdir(tmp_path)) == ["analysis.ipynb", "data", "notes.txt"]


def test_existing_user_folder_is_refused_and_kept(client, problem, tmp_path, monkeypatch):
    pb, inf = problem
    monkeypatch.chdir(tmp_path)
    files = _user_files(tmp_path)
    with pytest.raises(FileExistsError, match=r"^store: 'data' .*important\.csv.*overwrite=True"):
        iw.score_distributed(inf, pb.Xt, pb.yt, client=client, store="data")
    _assert_survived(tmp_path, files)
    with pytest.raises(FileExistsError, match=r"^store: 'notes.txt' is an existing file"):
        iw.score_distributed(inf, pb.Xt, pb.yt, client=client, store="notes.txt")
    _assert_survived(tmp_path, files)


def test_store_path_is_checked_before_scoring(problem, monkeypatch):
    """store=42 fails at once, before the solve (and before a LocalCluster is started)."""
    pb, _ = problem
    inf = iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, progress=False)

    def no_scoring(*args, **kwargs):
        raise AssertionError("scoring started before store= was checked")

    monkeypatch.setattr(inf, "s_test", no_scoring)
    with pytest.raises(TypeError, match="^store: expected a path"):
        iw.score_distributed(inf, pb.Xt, pb.yt, store=42)
    with pytest.raises(TypeError, match="^overwrite: expected True or False"):
        iw.score_distributed(inf, pb.Xt, pb.yt, store="s.zarr", overwrite="yes")


def test_a_store_of_ours_is_replaced_only_with_overwrite(client, problem, tmp_path, monkeypatch):
    pb, inf = problem
    monkeypatch.chdir(tmp_path)
    notebook = _user_files(tmp_path)["analysis.ipynb"]
    first = iw.score_distributed(inf, pb.Xt, pb.yt, client=client, chunk_size=16, store="s.zarr")
    assert first.n_test == len(pb.Xt)
    with pytest.raises(FileExistsError, match=r"^store: 's.zarr' holds a score store .*overwrite"):
        iw.score_distributed(inf, pb.Xt[:2], pb.yt[:2], client=client, store="s.zarr")
    assert iw.ScoreStore("s.zarr").n_test == len(pb.Xt)  # untouched by the refused call
    second = iw.score_distributed(
        inf, pb.Xt[:2], pb.yt[:2], client=client, store="s.zarr", overwrite=True
    )
    assert second.n_test == 2
    expected = inf.influence_on_loss(pb.Xt[:2], pb.yt[:2])
    torch.testing.assert_close(second.influence_on_loss(1), expected[1], rtol=0, atol=1e-10)
    for name in ["notes.txt", "data"]:  # a file, a foreign folder: replaced when asked
        iw.score_distributed(inf, pb.Xt, pb.yt, client=client, store=name, overwrite=True)
        assert iw.ScoreStore(name).n_test == len(pb.Xt)
    assert (tmp_path / "analysis.ipynb").read_text() == notebook


class FailsOnWorkers(PairDataset):
    """(x, y) items here; an error on a Dask worker (a worker that cannot read the data)."""

    def __getitem__(self, i: int):
        try:
            distributed.get_worker()
        except ValueError:  # not on a worker
            return self.X[i], self.y[i]
        raise RuntimeError("this worker cannot read the data")


def test_overwrite_keeps_the_old_store_when_scoring_fails(client, problem, tmp_path):
    pb, inf = problem
    path = tmp_path / "s.zarr"
    iw.score_distributed(inf, pb.Xt, pb.yt, client=client, chunk_size=16, store=path)
    failing = iw.Influence(pb.model, FailsOnWorkers(pb.X, pb.y), l2=pb.l2, progress=False)
    with pytest.raises(RuntimeError, match="this worker cannot read the data"):
        iw.score_distributed(failing, pb.Xt, pb.yt, client=client, store=path, overwrite=True)
    iw.ScoreStore(path).check_matches(inf, pb.Xt, pb.yt)  # the first store, intact


def test_current_parent_and_home_directories_are_never_replaced(
    client, problem, tmp_path, monkeypatch
):
    """Not even with overwrite=True: the current directory, a folder above it, the home
    directory."""
    pb, inf = problem
    work, home = tmp_path / "projects" / "work", tmp_path / "home"
    work.mkdir(parents=True)
    home.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    files = {**_user_files(work), **_user_files(home)}
    for store, what in [
        (".", "is the current directory"),
        ("..", "contains the current directory"),
        (str(tmp_path), "contains the current directory"),
        (str(home), "is the home directory"),
    ]:
        with pytest.raises(ValueError, match=f"^store: .* {what}"):
            iw.score_distributed(inf, pb.Xt, pb.yt, client=client, store=store, overwrite=True)
    _assert_survived(work, files)
    _assert_survived(home, files)


def test_output_path_check_for_a_file_writer(tmp_path):
    """The check later writers share (HTML export, benchmark JSON): a file is replaced only with
    overwrite=True, a folder never; a missing path whose parent is a file is named."""
    page = tmp_path / "page.html"
    assert check_output_path(page, "path", kind="file") == page
    page.write_text("<p>mine</p>")
    with pytest.raises(FileExistsError, match="^path: .*page.html.* overwrite=True"):
        check_output_path(page, "path", kind="file")
    assert check_output_path(page, "path", kind="file", overwrite=True) == page
    with pytest.raises(IsADirectoryError, match="^path: .* is a folder"):
        check_output_path(tmp_path, "path", kind="file", overwrite=True)
    with pytest.raises(NotADirectoryError, match="^out: .*page.html.* is a file, not a folder"):
        check_output_path(page / "results.json", "out", kind="file")
    assert page.read_text() == "<p>mine</p>"


# ----- a store must match the Influence it is read for --------------------------------------
@pytest.fixture(scope="module")
def written_store(client, problem, tmp_path_factory):
    pb, inf = problem
    path = tmp_path_factory.mktemp("store") / "scores.zarr"
    return iw.score_distributed(inf, pb.Xt, pb.yt, client=client, chunk_size=16, store=path)


def _perturbed_model(model):
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[0].weight[0, 0] += 1e-6  # a lower layer: not in params=top layer, still decides
    return other


def smoothed(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with label smoothing: another loss of the same labels."""
    return torch.nn.functional.cross_entropy(output, target, reduction="none", label_smoothing=0.1)


def _shuffled(pb):
    order = torch.arange(len(pb.X)).roll(1)
    return pb.X[order], pb.y[order]


MISMATCHES = {
    "l2": (lambda pb: {"l2": 0.01}, r"l2=0\.05, but the Influence has l2=0\.01"),
    "damping": (lambda pb: {"damping": 0.1}, r"damping='auto', but the Influence has damping=0\.1"),
    "hessian": (
        lambda pb: {"hessian": "gauss-newton"},
        r"hessian='exact', but the Influence has hessian='gauss-newton'",
    ),
    "solver": (lambda pb: {"solver": "cg"}, r"solver='direct', but the Influence has solver='cg'"),
    "loss": (lambda pb: {"loss": smoothed}, r"loss='cross_entropy', but .* loss='.*smoothed'"),
    "params": (
        lambda pb: {"params": ["2.weight", "2.bias"]},
        r"params=\['0\.weight', .*'2\.bias'\]",
    ),
    "model": (lambda pb: {"model": _perturbed_model(pb.model)}, r"other model parameters"),
    "train": (lambda pb: {"train": _shuffled(pb)}, r"other training points"),
}


@pytest.mark.parametrize("changed", list(MISMATCHES))
def test_check_matches_names_what_differs(written_store, problem, changed):
    pb, _ = problem
    make_overrides, pattern = MISMATCHES[changed]
    options = {"model": pb.model, "train": (pb.X, pb.y), "l2": pb.l2, "progress": False}
    options.update(make_overrides(pb))
    other = iw.Influence(options.pop("model"), options.pop("train"), **options)
    with pytest.raises(ValueError, match=f"^scores: the store was scored with {pattern}"):
        written_store.check_matches(other, pb.Xt, pb.yt)


def test_check_matches_names_solver_settings(client, problem, tmp_path):
    pb, _ = problem

    def cg(rtol: float):
        solver = iw.ConjugateGradient(rtol=rtol)
        return iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, solver=solver, progress=False)

    store = iw.score_distributed(cg(1e-8), pb.Xt, pb.yt, client=client, store=tmp_path / "s")
    store.check_matches(cg(1e-8), pb.Xt, pb.yt)
    with pytest.raises(ValueError, match=r"^scores: .* solver_settings=.*'rtol': 1e-08.*0\.001"):
        store.check_matches(cg(1e-3), pb.Xt, pb.yt)


def test_explorer_refuses_a_store_of_another_l2(written_store, problem):
    pb, _ = problem
    same = iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, progress=False)
    written_store.check_matches(same, pb.Xt, pb.yt)  # a new Influence of the same settings
    other = iw.Influence(pb.model, (pb.X, pb.y), l2=0.01, progress=False)
    with pytest.raises(ValueError, match=r"^scores: the store was scored with l2=0\.05, "):
        iw.InfluenceExplorer(
            other, x_test=pb.Xt, y_test=pb.yt, kind="tabular", scores=written_store
        )


# ----- Dask -----------------------------------------------------------------------------------
def test_everything_runs_on_the_client_passed(problem, tmp_path):
    """Client A passed while a second Client B is Dask's default: the store is written on A, the
    returned array's blocks are A's, nothing is sent to B."""
    pb, inf = problem
    expected = inf.influence_on_loss(pb.Xt, pb.yt)
    cluster_a, a = _local_client()
    cluster_b, b = _local_client()  # created last: Dask's default client
    with cluster_a, a, cluster_b, b:
        store = iw.score_distributed(
            inf, pb.Xt, pb.yt, client=a, chunk_size=16, store=tmp_path / "s.zarr"
        )
        for t in range(len(pb.Xt)):
            torch.testing.assert_close(store.influence_on_loss(t), expected[t], rtol=0, atol=1e-10)
        scores = iw.score_distributed(inf, pb.Xt, pb.yt, client=a, chunk_size=16)
        np.testing.assert_allclose(
            scores.compute(scheduler=a), expected.numpy(), rtol=0, atol=1e-10
        )
        assert not b.who_has()  # nothing was sent to B


@pytest.mark.filterwarnings(
    "ignore:The model is not at a minimum:influence_widgets.core.errors.InfluenceWarning"
)
def test_bfloat16_model_gives_float32_scores(client, tmp_path):
    pb = make_lr()
    dtype = torch.bfloat16
    inf = iw.Influence(
        copy.deepcopy(pb.model).to(dtype), (pb.X.to(dtype), pb.y), l2=pb.l2, progress=False
    )
    single = inf.influence_on_loss(pb.Xt.to(dtype), pb.yt).float().numpy()
    scores = iw.score_distributed(inf, pb.Xt.to(dtype), pb.yt, client=client, chunk_size=12)
    assert scores.dtype == np.float32
    tolerance = 1e-2 * np.abs(single).max()  # bfloat16 keeps 8 bits of mantissa
    np.testing.assert_allclose(scores.compute(scheduler=client), single, rtol=0, atol=tolerance)
    store = iw.score_distributed(
        inf, pb.Xt.to(dtype), pb.yt, client=client, chunk_size=12, store=tmp_path / "s.zarr"
    )
    assert store.array.dtype == np.float32
    np.testing.assert_allclose(
        store.influence_on_loss(3).numpy(), single[3], rtol=0, atol=tolerance
    )
    store.check_matches(inf, pb.Xt.to(dtype), pb.yt)


def _forgotten_keys_once_idle(dask_scheduler) -> dict | None:
    """On the scheduler: how often each key was forgotten, once it holds no task (else None)."""
    return None if dask_scheduler.tasks else dict(dask_scheduler.plugins[ForgottenKeys.name].counts)


def test_two_runs_share_no_keys(problem):
    """Every call scatters its data under fresh keys: a retry never reuses the keys of an
    earlier (failed, being released) run. Run twice, each time until the scheduler has
    forgotten every key: a reused key is forgotten twice."""
    pb, inf = problem
    cluster, c = _local_client()
    with cluster, c:
        c.register_plugin(ForgottenKeys())
        for _ in range(2):
            iw.score_distributed(inf, pb.Xt, pb.yt, client=c, chunk_size=16).compute(scheduler=c)
            for _ in range(200):
                counts = c.run_on_scheduler(_forgotten_keys_once_idle)
                if counts is not None:
                    break
                time.sleep(0.02)
        assert counts, "the scheduler still holds tasks"
        assert [k for k, times in counts.items() if times > 1] == []


def test_retries_after_a_failed_call_succeed(client, problem):
    pb, inf = problem
    expected = inf.influence_on_loss(pb.Xt, pb.yt).numpy()
    for _ in range(12):
        with pytest.raises(TypeError):  # now raised before scoring; originally after it
            iw.score_distributed(inf, pb.Xt, pb.yt, client=client, chunk_size=9, store=42)
        scores = iw.score_distributed(inf, pb.Xt, pb.yt, client=client, chunk_size=9)
        np.testing.assert_allclose(scores.compute(scheduler=client), expected, rtol=0, atol=1e-10)
