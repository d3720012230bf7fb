"""Scoring a large training set on Dask workers, and a Zarr store of the scores.

I_up,loss(z_i, z_test) = -grad L(z_test)^T H^-1 grad ell_i (Koh & Liang 2017, eq. 2) for T test
points and n training points is one solve, s_test = H^-1 grad L(z_test) (T columns, done here, in
this process, by the :class:`~influence_widgets.core.Influence`'s own solver), then an
embarrassingly parallel pass: every training point's gradient dotted with every s_test.
:func:`score_distributed` splits that pass into chunks of training points, one Dask task each, on
workers that hold a copy of the model at theta_hat and the s_test vectors (sent once to every
worker). Each task scores its chunk with ``Influence.score_against``, the single-process path's
own per-batch scoring, so the numbers are the same.

:class:`ScoreStore` opens scores written to Zarr (``score_distributed(..., store=path)``) so that
``top()`` for a test point is a read of one row, however large n is.

Needs the ``dask`` extra: ``pip install "influence-widgets[dask]"`` (``dask[distributed]`` and
``zarr``); both are imported only when these functions run.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from influence_widgets.core.errors import check_positive_int
from influence_widgets.core.influence import Influence, TopInfluence, _ranked, check_influence
from influence_widgets.core.objective import as_tensor

if TYPE_CHECKING:
    import dask.array
    from distributed import Client

__all__ = ["ScoreStore", "score_distributed"]

QUANTITY = "influence_on_loss"  # what a store holds: I_up,loss, (T, n), Influence's sign


@dataclass
class _ChunkScorer:
    """What every worker holds once: the model at theta_hat (parameters ``params`` trainable),
    the options that rebuild the Influence on a chunk, and S = [s_test_1 .. s_test_T] (p, T)."""

    model: torch.nn.Module
    options: dict[str, Any]
    S: torch.Tensor

    def __call__(self, part) -> np.ndarray:
        """I_up,loss of the training points ``part`` ((X, y) or a Dataset) against S, (T, b)."""
        influence = Influence(self.model, part, **self.options)
        return (-influence.score_against(self.S)).cpu().numpy()


def _score_tensors(scorer: _ChunkScorer, part: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
    return scorer(part)


def _score_dataset(
    scorer: _ChunkScorer, dataset: torch.utils.data.Dataset, start: int, stop: int
) -> np.ndarray:
    return scorer(torch.utils.data.Subset(dataset, range(start, stop)))


def _chunk_scorer(influence: Influence, x_test, y_test) -> _ChunkScorer:
    """s_test for the test points, solved here, and the settings the workers rebuild from."""
    S = influence.s_test(x_test, y_test).T.contiguous()
    obj = influence.objective
    options = influence.config.options()
    # The copy has theta_hat and only ``params`` trainable; workers stream (cache nothing) and
    # report no progress bars.
    options.update(params=list(obj.spec.names), progress=False, gradient_cache_mb=0)
    return _ChunkScorer(model=obj.model_copy(), options=options, S=S)


def test_points_digest(x_test, y_test=None) -> str:
    """SHA-256 of the test points (inputs and labels as float64; ``y_test=None``: "predicted
    classes"): what a store's rows were scored for."""
    h = hashlib.sha256()
    for value, name in ((x_test, "x_test"), (y_test, "y_test")):
        if value is None:
            h.update(b"predicted classes")
            continue
        t = as_tensor(value, name).detach().cpu().to(torch.float64).contiguous()
        h.update(str(tuple(t.shape)).encode() + t.numpy().tobytes())
    return h.hexdigest()


def _check_client(client) -> None:
    from distributed import Client

    if client is not None and not isinstance(client, Client):
        raise TypeError(
            f"client: expected a dask.distributed.Client (or None for a LocalCluster), "
            f"got {type(client).__name__}"
        )


def _chunk_futures(client: Client, scorer, influence: Influence, chunk_size: int) -> list:
    """One future per chunk of ``chunk_size`` training points, in order: (T, b) scores each."""
    scorer_future = client.scatter(scorer, broadcast=True)
    train = influence.train
    bounds = [(a, min(a + chunk_size, train.n)) for a in range(0, train.n, chunk_size)]
    if train.dataset is not None:
        dataset = client.scatter(train.dataset, broadcast=True)
        return [client.submit(_score_dataset, scorer_future, dataset, a, b) for a, b in bounds]
    parts = client.scatter([(train.X[a:b], train.y[a:b]) for a, b in bounds])
    return [client.submit(_score_tensors, scorer_future, part) for part in parts]


def _as_dask_array(futures: list, n_test: int, sizes: list[int], dtype) -> dask.array.Array:
    import dask.array as da

    blocks = [
        da.from_delayed(f, shape=(n_test, b), dtype=dtype)
        for f, b in zip(futures, sizes, strict=True)
    ]
    return da.concatenate(blocks, axis=1)


def score_distributed(
    influence: Influence,
    x_test,
    y_test=None,
    *,
    client: Client | None = None,
    chunk_size: int = 65_536,
    store: str | os.PathLike[str] | None = None,
    n_workers: int | None = None,
) -> dask.array.Array | ScoreStore:
    """I_up,loss(z_i, z_test) = -grad L(z_test)^T H^-1 grad ell_i for every training point, scored
    on Dask workers: the (T, n) array of :meth:`Influence.influence_on_loss` (same sign: negative =
    z_i helps the test point; divide by -n for ``predicted_removal_effect``).

    s_test = H^-1 grad L(z_test) is solved ONCE, here (``influence`` fits first if needed); the
    training set is split into chunks of ``chunk_size`` points, each scored by one task on a
    worker that holds the model at theta_hat and the s_test vectors (sent to every worker once).

    What each worker must be able to load: ``influence_widgets`` and the same torch; the model's
    class and a callable ``loss`` (both are pickled with cloudpickle, so a class defined in a
    notebook travels, one from a module must be importable there). The training points: given as
    tensors (X, y), each chunk is sent from this process; given as a ``torch.utils.data.Dataset``,
    the Dataset object is pickled to every worker once and indexed there, so the files it reads
    must be readable at the same paths on every worker (a shared file system). Workers compute on
    the Influence's ``device`` (``"cuda"``: every worker needs a GPU). With ``store=``, every
    worker writes its chunks to that path: on a cluster, a path all of them can write.

    Args:
        influence: the fitted (or to be fitted) :class:`Influence`.
        x_test, y_test: T test points, as for ``influence_on_loss`` (``y_test=None``: explained
            for their predicted classes).
        client: a ``dask.distributed.Client`` of any cluster (``Client("tcp://host:8786")``,
            dask-jobqueue, dask-kubernetes); None starts a ``LocalCluster`` of worker processes
            (``n_workers``, one thread each) and closes it before returning.
        chunk_size: training points per task (each task makes one pass over its chunk in batches
            of the Influence's ``batch_size``).
        store: a directory for a Zarr array of the scores (chunked by test point and
            ``chunk_size``, overwritten if present); then the return value is its
            :class:`ScoreStore`.
        n_workers: worker processes of the LocalCluster started when ``client`` is None
            (default: Dask's choice for this machine); ignored with a ``client``.

    Returns:
        A (T, n) dask array, one block per chunk (held on the cluster when ``client`` is given,
        in this process when the LocalCluster was closed), or the :class:`ScoreStore` of ``store``.
    """
    influence = check_influence(influence)
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    if n_workers is not None:
        n_workers = check_positive_int(n_workers, "n_workers")
    _check_client(client)
    scorer = _chunk_scorer(influence, x_test, y_test)
    if client is not None:
        return _run(client, scorer, influence, (x_test, y_test), chunk_size, store, local=False)
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as own_client,
    ):
        return _run(own_client, scorer, influence, (x_test, y_test), chunk_size, store, local=True)


def _run(client: Client, scorer, influence: Influence, tests, chunk_size, store, *, local: bool):
    """Submit the chunks; write ``store`` or return the scores (computed here when ``local``:
    the caller closes its LocalCluster next)."""
    import dask.array as da

    n = influence.n
    futures = _chunk_futures(client, scorer, influence, chunk_size)
    sizes = [min(chunk_size, n - a) for a in range(0, n, chunk_size)]
    dtype = np.dtype(str(scorer.S.dtype).removeprefix("torch."))
    scores = _as_dask_array(futures, scorer.S.shape[1], sizes, dtype)
    if store is not None:
        return ScoreStore.write(scores, store, influence, tests, chunk_size)
    if local:
        return da.from_array(scores.compute(), chunks=scores.chunks)
    return scores


class ScoreStore:
    """Precomputed scores I_up,loss(z_i, z_t) (T test points x n training points) in a Zarr
    array, written by ``score_distributed(..., store=path)``: lookups read one row (one test
    point) at a time, so ``top(t)`` on 10^6 training points needs no model and no solve.

    Args:
        path: the store's directory.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import zarr

        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path: expected a directory path, got {type(path).__name__}")
        try:
            self.array = zarr.open_array(os.fspath(path), mode="r")
        except (FileNotFoundError, zarr.errors.NodeNotFoundError) as err:
            raise FileNotFoundError(
                f"path: no Zarr score store at {os.fspath(path)!r}; write one with "
                "iw.score_distributed(influence, x_test, store=path)"
            ) from err
        if self.array.attrs.get("quantity") != QUANTITY or self.array.ndim != 2:
            raise ValueError(
                f"path: {os.fspath(path)!r} is a Zarr array but not a score store written by "
                "iw.score_distributed"
            )
        self.path = os.fspath(path)
        self.n_test, self.n = self.array.shape

    @classmethod
    def write(
        cls,
        scores: dask.array.Array,
        path: str | os.PathLike[str],
        influence: Influence,
        tests: tuple,
        chunk_size: int,
    ) -> ScoreStore:
        """Write (T, n) scores to ``path`` in chunks of one test point x ``chunk_size`` training
        points (a click reads one row), with what they are (and ``tests`` = (x_test, y_test)'s
        digest) in the attributes; open it."""
        import zarr

        path = os.fspath(path)
        scores.rechunk((1, chunk_size)).to_zarr(path, overwrite=True)
        attrs = zarr.open_array(path, mode="r+").attrs
        attrs.update(
            quantity=QUANTITY,
            definition="I_up,loss(z_i, z_test) = -grad L(z_test)^T H^-1 grad ell_i",
            n_train=influence.n,
            n_params=influence.p,
            solver=influence.solver.name,
            damping=influence.damping,
            l2=influence.objective.l2,
            test_points_sha256=test_points_digest(*tests),
        )
        return cls(path)

    def check_matches(self, influence: Influence, x_test, y_test=None) -> None:
        """A ValueError naming ``scores`` unless this store was scored for these test points (the
        same inputs and labels in order; ``y_test=None``: for the predicted classes) against a training set of ``influence.n`` points: what a viewer such as
        the explorer checks before it reads its clicks from the store."""
        if self.n != influence.n:
            raise ValueError(
                f"scores: the store has {self.n} training points but the Influence has "
                f"{influence.n}; write the store from this Influence"
            )
        if self.array.attrs.get("test_points_sha256") != test_points_digest(x_test, y_test):
            raise ValueError(
                "scores: the store's rows were scored for other test points (or labels); write "
                "it with iw.score_distributed(influence, x_test, y_test, store=path) for these"
            )

    def _row_index(self, test_index) -> int:
        if isinstance(test_index, bool) or not isinstance(test_index, int | np.integer):
            raise TypeError(
                f"test_index: expected an integer row of the store, got {type(test_index).__name__}"
            )
        if not -self.n_test <= int(test_index) < self.n_test:
            raise IndexError(
                f"test_index: {int(test_index)} is out of range for a store of {self.n_test} "
                "test points"
            )
        return int(test_index) % self.n_test

    def influence_on_loss(self, test_index: int) -> torch.Tensor:
        """I_up,loss(z_i, z_test) for every training point, (n,), for the store's test point
        ``test_index``: the row ``Influence.influence_on_loss(x_test)[test_index]``."""
        return torch.from_numpy(np.asarray(self.array[self._row_index(test_index)]))

    def predicted_removal_effect(self, test_index: int) -> torch.Tensor:
        """-(1/n) I_up,loss: the predicted change of the test loss when z_i is removed, (n,)
        (positive: z_i helped)."""
        return -self.influence_on_loss(test_index) / self.n

    def top(self, test_index: int, k: int = 10) -> TopInfluence:
        """The k most helpful and k most harmful training points for the store's test point
        ``test_index``, as ``Influence.top(x_test[test_index : test_index + 1], k=k)``: a
        :class:`TopInfluence` of shape (1, k), ranked by :meth:`predicted_removal_effect`."""
        k = min(check_positive_int(k, "k"), self.n)
        return _ranked(self.predicted_removal_effect(test_index)[None], k)

    def __repr__(self) -> str:
        return f"ScoreStore({self.path!r}, n_test={self.n_test}, n_train={self.n})"
