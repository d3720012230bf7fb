"""iw.lds(..., client=...) and (n_workers=...): every retrain is one Dask task, and the result is
the in-process result exactly (same subsets, seeds and outputs); progress advances as retrains
finish, cancel returns the subsets done, a failing recipe says what the in-process run says,
and the client passed is the one used. Dask stays optional: without it, only these arguments
fail, naming the extra to install."""

from __future__ import annotations

import re
import sys
import threading

import numpy as np
import pytest

import influence_widgets as iw
from influence_widgets.analysis.lds import RETRAIN_STEP, TrainFromScratch
from influence_widgets.core.progress import report_progress
from tests.conftest import make_lr

pytest.importorskip("distributed")

SUBSETS = 5


@pytest.fixture(scope="module")
def client():
    """One worker thread in this process: no process start, no pickling (the slow test has
    worker processes)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=False,
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        Client(cluster, set_as_default=False) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def problem():
    pb = make_lr()
    return pb, iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, progress=False)


def _lds(problem, **kw):
    pb, inf = problem
    kw = {"x_test": pb.Xt, "y_test": pb.yt, "subsets": SUBSETS, "progress": False, **kw}
    return iw.lds(inf, (pb.X, pb.y), **kw)


@pytest.fixture(scope="module")
def here(problem):
    """The in-process result the Dask runs must equal."""
    return _lds(problem)


def _assert_same(result, expected, rows=None):
    """Every array of ``result`` equals ``expected``'s, or those of its subsets ``rows``: then
    ``predicted`` = masks @ scores.T to rounding (a product of another shape, summed in another
    order by BLAS)."""
    exact = rows is None
    rows = np.arange(expected.n_subsets) if exact else rows
    for name in ("masks", "seeds", "actual", "rerun"):
        np.testing.assert_array_equal(getattr(result, name), getattr(expected, name)[rows])
    np.testing.assert_allclose(
        result.predicted, expected.predicted[rows], rtol=0 if exact else 1e-12, atol=0
    )
    np.testing.assert_array_equal(result.labels, expected.labels)


def _raising(model_factory, X, y, seed):
    raise ValueError("boom")


def _no_model(model_factory, X, y, seed):
    return None


def test_same_result_as_in_this_process(client, problem, here):
    result = _lds(problem, client=client)
    _assert_same(result, here)
    np.testing.assert_array_equal(result.per_test, here.per_test)
    assert (result.mean, result.noise_floor) == (here.mean, here.noise_floor)
    assert not result.cancelled and result.n_subsets == SUBSETS


def test_progress_reaches_the_total_as_retrains_finish(client, problem):
    seen = []
    with report_progress(lambda step, fraction: seen.append((step, fraction))):
        _lds(problem, client=client)
    fractions = [f for step, f in seen if step == RETRAIN_STEP]
    assert fractions == pytest.approx([k / (2 * SUBSETS) for k in range(1, 2 * SUBSETS + 1)])


def test_cancel_returns_the_subsets_done(client, problem, here):
    cancel = threading.Event()

    def cancel_after_three(step, fraction):
        if step == RETRAIN_STEP and fraction >= 3 / (2 * SUBSETS):
            cancel.set()

    with report_progress(cancel_after_three):
        result = _lds(problem, client=client, cancel=cancel)
    assert result.cancelled and 1 <= result.n_subsets < SUBSETS
    rows = [int(np.flatnonzero((here.masks == mask).all(1))[0]) for mask in result.masks]
    assert rows == sorted(rows)  # in order of j
    _assert_same(result, here, np.array(rows))


@pytest.mark.parametrize(
    ("train_fn", "error"),
    [(_raising, RuntimeError), (_no_model, TypeError)],
    ids=["raises", "none"],
)
def test_failing_train_fn_says_what_the_in_process_run_says(client, problem, train_fn, error):
    with pytest.raises(error) as in_process:
        _lds(problem, train_fn=train_fn)
    with pytest.raises(error) as on_dask:
        _lds(problem, train_fn=train_fn, client=client)
    # The first retrain to fail on Dask need not be subset 0's first run: the seed may differ.
    seedless = [re.sub(r"seed \d+", "seed S", str(e.value)) for e in (in_process, on_dask)]
    assert seedless[0] == seedless[1]
    assert seedless[1].startswith(
        ("train_fn: raised ValueError: boom (on a subset", "train_fn: must")
    )


def test_the_client_passed_is_used_not_the_default(client, problem, here):
    from distributed import Client, LocalCluster, get_task_stream

    with (
        LocalCluster(
            n_workers=1, processes=False, dashboard_address=None, worker_dashboard_address=None
        ) as other_cluster,
        Client(other_cluster) as default,  # Dask's default client from here on
        get_task_stream(client=client) as ours,
        get_task_stream(client=default) as theirs,
    ):
        result = _lds(problem, client=client)
    _assert_same(result, here)
    assert len([t for t in ours.data if "call_shared" in str(t["key"])]) == 2 * SUBSETS
    assert not theirs.data


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"client": "tcp://scheduler:8786"}, TypeError, "^client: expected a dask.distributed"),
        ({"n_workers": 0}, ValueError, "^n_workers: must be a positive integer"),
        ({"n_workers": 1.5}, TypeError, "^n_workers: expected a positive integer"),
    ],
)
def test_bad_client_and_n_workers_name_themselves(problem, kwargs, error, match):
    with pytest.raises(error, match=match):
        _lds(problem, **kwargs)


def test_dask_is_needed_only_for_client_and_n_workers(problem, here, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    _assert_same(_lds(problem), here)
    for call in (
        lambda: _lds(problem, n_workers=1),
        lambda: iw.score_distributed(problem[1], problem[0].Xt, n_workers=1),
    ):
        with pytest.raises(ImportError, match=r'pip install "influence-widgets\[dask\]"'):
            call()


@pytest.mark.slow
def test_worker_processes_give_the_same_result_and_errors(problem, here):
    """n_workers=2 and a Client of two worker processes (everything pickled): about 30 s on two
    shared cores, most of it starting the processes."""
    from distributed import Client, LocalCluster

    _assert_same(_lds(problem, n_workers=2), here)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster, set_as_default=False) as processes,
    ):
        with pytest.raises(RuntimeError, match="^train_fn: raised ValueError: boom"):
            _lds(problem, train_fn=_raising, client=processes)
        lock = threading.Lock()

        def unpicklable(model_factory, X, y, seed):
            with lock:
                return TrainFromScratch(l2=0.05, loss="cross_entropy")(model_factory, X, y, seed)

        with pytest.raises(TypeError, match="^train_fn: cannot be sent to the Dask workers"):
            _lds(problem, train_fn=unpicklable, client=processes)
        _assert_same(_lds(problem, client=processes), here)


@pytest.mark.slow  # about 10 s: one worker process started
def test_workers_start_after_the_notebook_namespace_lost_main_spec(monkeypatch):
    """IPython's %reset clears the user module that is __main__, __spec__ with it; spawn then
    fails in every worker unless local_client puts it back for the start."""
    import sys
    import types

    from influence_widgets.dask_cluster import local_client

    bare = types.ModuleType("__main__")
    del bare.__spec__
    monkeypatch.setitem(sys.modules, "__main__", bare)
    with local_client(1, "test") as client:
        assert client.submit(sum, [1, 2]).result() == 3
    assert not hasattr(bare, "__spec__")  # taken away again
