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
``top()`` for a test point is a read of one row, however large n is. A store records what decided
its scores (:func:`scoring_record`: the model's parameters, the training points, l2, damping,
the Hessian, solver and its settings, loss, params) and the test points' digest; a viewer checks them with
:meth:`ScoreStore.check_matches` before it reads its clicks from the store.

Paths: ``store=`` is checked by :func:`~influence_widgets.output_paths.check_output_path` before
any scoring: nothing the package did not write is deleted, and an earlier store, a file or a
non-empty folder is replaced only with ``overwrite=True``.

Every Dask call goes to the client passed (never to Dask's default client), and every call
scatters its data under fresh keys, so a retry never meets the keys of a failed run.

What each worker must be able to load: ``influence_widgets`` and the same torch; the model's class
and a callable ``loss`` (both are pickled with cloudpickle, so a class defined in a notebook
travels, one from a module must be importable there). The training points: given as tensors
(X, y), each chunk is sent from this process; given as a ``torch.utils.data.Dataset``, the Dataset
object is pickled to every worker once and indexed there, so the files it reads must be readable
at the same paths on every worker (a shared file system). Workers compute on the Influence's
``device`` (``"cuda"``: every worker needs a GPU). With ``store=``, every worker writes its chunks
to that path: on a cluster, a path all of them can write.

Without a client, the workers are a LocalCluster started for the call
(:func:`~influence_widgets.dask_cluster.local_client`: one process and one torch thread per
worker, set up for torch compute) and closed after it.

Needs the ``dask`` extra: ``pip install "influence-widgets[dask]"`` (``dask[distributed]`` and
``zarr``); both are imported only when these functions run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from influence_widgets.core.errors import check_positive_int
from influence_widgets.core.influence import Influence, TopInfluence, check_influence, ranked
from influence_widgets.core.objective import TrainingSet, as_tensor
from influence_widgets.dask_cluster import (
    check_client,
    check_n_workers,
    local_client,
    require_distributed,
)
from influence_widgets.output_paths import check_output_path

if TYPE_CHECKING:
    import dask.array
    from distributed import Client

__all__ = [
    "ScoreStore",
    "balanced_chunk_size",
    "loss_description",
    "model_digest",
    "score_distributed",
    "score_dtype",
    "scoring_record",
    "test_points_digest",
    "training_digest",
]

QUANTITY = "influence_on_loss"  # what a store holds: I_up,loss, (T, n), Influence's sign


@dataclass
class _ChunkScorer:
    """What every worker holds once: the model at theta_hat (parameters ``params`` trainable),
    the options that rebuild the Influence on a chunk, S = [s_test_1 .. s_test_T] (p, T), and the
    dtype of the scores it returns (:func:`score_dtype`)."""

    model: torch.nn.Module
    options: dict[str, Any]
    S: torch.Tensor
    dtype: torch.dtype

    def __call__(self, part) -> np.ndarray:
        """I_up,loss of the training points ``part`` ((X, y) or a Dataset) against S, (T, b)."""
        influence = Influence(self.model, part, **self.options)
        return (-influence.score_against(self.S)).to(self.dtype).cpu().numpy()


def score_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of distributed scores for a model of ``dtype``: the same, but float32 for
    bfloat16 (numpy, dask and Zarr have no bfloat16; every bfloat16 value is exact in float32)."""
    return torch.float32 if dtype == torch.bfloat16 else dtype


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
    return _ChunkScorer(model=obj.model_copy(), options=options, S=S, dtype=score_dtype(S.dtype))


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


def _hash_tensor(h: Any, t: torch.Tensor) -> None:
    """Add ``t``'s dtype, shape and bytes, as stored (any dtype, bfloat16 included), to ``h``."""
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy())


def model_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer of ``model`` (names, dtypes, shapes, values): all of
    them decide the scores, the parameters outside ``params`` too."""
    h = hashlib.sha256()
    for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
        h.update(name.encode())
        _hash_tensor(h, t)
    return h.hexdigest()


def training_digest(train: TrainingSet) -> str | None:
    """SHA-256 of the training tensors X and y, in order; None for a ``torch.utils.data.Dataset``
    (hashing its items would be a pass over its files: a Dataset is checked by its size only)."""
    if train.dataset is not None:
        return None
    h = hashlib.sha256()
    _hash_tensor(h, train.X)
    _hash_tensor(h, train.y)
    return h.hexdigest()


def loss_description(loss: object) -> str:
    """A loss as a store records it: its name, a function's qualified name, or a loss object's
    repr (``SmoothHinge(temperature=0.001)``)."""
    if isinstance(loss, str):
        return loss
    name = getattr(loss, "__qualname__", None)
    if name is not None:
        return f"{getattr(loss, '__module__', '')}.{name}"
    text = repr(loss)
    return f"{type(loss).__module__}.{type(loss).__qualname__}" if " at 0x" in text else text


def scoring_record(influence: Influence) -> dict[str, Any]:
    """Everything besides the test points that decides the scores of ``influence``, as the JSON
    values a store records and :meth:`ScoreStore.check_matches` compares, in the order checked:
    the training set (size and digest), ``params``, the model (every parameter and buffer at
    theta_hat, :func:`model_digest`), the loss, l2, damping (a number, or "auto": the rung it
    takes is decided by everything else recorded here), the Hessian ("exact" or "gauss-newton"),
    the solver and its settings. Nothing here needs ``influence`` fitted."""
    obj = influence.objective
    record = {
        "n_train": influence.n,
        "train_sha256": training_digest(influence.train),
        "params": list(obj.spec.names),
        "n_params": influence.p,
        "model_sha256": model_digest(obj.module),
        "loss": loss_description(influence.config.loss),
        "l2": obj.l2,
        "damping": influence.config.damping,
        "hessian": influence.hessian,
        "solver": influence.solver.name,
        "solver_settings": influence.solver.settings(),
    }
    return json.loads(json.dumps(record, default=repr))  # as read back from the store


# What a digest in scoring_record stands for, in messages; an entry a store lacks.
DIGESTS = {"train_sha256": "training points", "model_sha256": "model parameters"}
MISSING = object()


MAX_CHUNK = 65_536  # training points per task at most when chunk_size=None
TASKS_PER_THREAD = 2  # chunk_size=None: at least this many tasks per worker thread


def balanced_chunk_size(n: int, threads: int) -> int:
    """The ``chunk_size`` that None stands for: n training points in equal chunks, their number
    a multiple of the workers' ``threads`` (an equal share for each) with at least
    TASKS_PER_THREAD per thread, and at most MAX_CHUNK points each. 240,000 points on 2 workers:
    4 chunks of 60,000 (65,536 would give 4 chunks of which the last is short, 50,000 five: one
    worker would score 3 of them)."""
    threads = max(1, threads)
    tasks = max(TASKS_PER_THREAD * threads, -(-n // MAX_CHUNK))
    tasks = threads * -(-tasks // threads)
    return max(1, -(-n // tasks))


def _chunk_futures(client: Client, scorer, influence: Influence, chunk_size: int) -> list:
    """One future per chunk of ``chunk_size`` training points, in order: (T, b) scores each.
    Scattered under fresh keys (``hash=False``): content-hashed keys would be shared with an
    earlier run whose data the scheduler may be releasing ("lost dependencies"). A Dataset is
    sent to every worker once and indexed there; tensors are sent chunk by chunk."""
    scorer_future = client.scatter(scorer, broadcast=True, hash=False)
    train = influence.train
    bounds = [(a, min(a + chunk_size, train.n)) for a in range(0, train.n, chunk_size)]
    if train.dataset is not None:
        dataset = client.scatter(train.dataset, broadcast=True, hash=False)
        return [client.submit(_score_dataset, scorer_future, dataset, a, b) for a, b in bounds]
    parts = client.scatter([(train.X[a:b], train.y[a:b]) for a, b in bounds], hash=False)
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
    chunk_size: int | None = None,
    store: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    n_workers: int | None = None,
) -> dask.array.Array | ScoreStore:
    """I_up,loss(z_i, z_test) = -grad L(z_test)^T H^-1 grad ell_i for every training point, scored
    on Dask workers: the (T, n) array of :meth:`Influence.influence_on_loss` (same sign: negative =
    z_i helps the test point; divide by -n for ``predicted_removal_effect``).

    s_test = H^-1 grad L(z_test) is solved ONCE, here (``influence`` fits first if needed); each
    chunk of ``chunk_size`` training points is one task on a worker (which must load what the
    module docstring lists). The scores have the model's dtype; a bfloat16 model's are float32
    (:func:`score_dtype`), the single-process scores cast to float32.

    Args:
        influence: the fitted (or to be fitted) :class:`Influence`.
        x_test, y_test: T test points, as for ``influence_on_loss`` (``y_test=None``: explained
            for their predicted classes).
        client: a ``dask.distributed.Client`` of any cluster (``Client("tcp://host:8786")``,
            dask-jobqueue, dask-kubernetes), used for every Dask call even when another Client is
            Dask's default; None starts a ``LocalCluster`` of ``n_workers`` processes, one
            thread each, closed on return (:func:`~influence_widgets.dask_cluster.local_client`).
        chunk_size: training points per task (each task makes one pass over its chunk in batches
            of the Influence's ``batch_size``); None: equal chunks, two or more per worker thread
            of the cluster and their number a multiple of the threads, at most 65,536 points
            each (:func:`balanced_chunk_size`), so that every worker gets the same share.
        store: a new (or empty) folder for a Zarr array of the scores; then the return value is
            its :class:`ScoreStore`. Checked before any scoring (:meth:`ScoreStore.check_path`):
            an empty path and the current or home directory are refused; a file, a non-empty
            folder or an earlier store is replaced only with ``overwrite=True``.
        overwrite: replace what is at ``store`` (deleted once the scores are computed).
        n_workers: worker processes of the LocalCluster started when ``client`` is None
            (default: Dask's choice for this machine); ignored with a ``client``.

    Returns:
        The :class:`ScoreStore` of ``store``, or a (T, n) dask array, one block per chunk: in
        this process after a LocalCluster; with a ``client``, held on its cluster (while another
        Client is Dask's default, compute it with ``scores.compute(scheduler=client)``).
    """
    require_distributed("iw.score_distributed")
    influence = check_influence(influence)
    if chunk_size is not None:
        chunk_size = check_positive_int(chunk_size, "chunk_size")
    n_workers = check_n_workers(n_workers)
    check_client(client, "iw.score_distributed", "for a LocalCluster")
    store = None if store is None else ScoreStore.check_path(store, overwrite)  # before scoring
    target = _Target(store, overwrite, (x_test, y_test))
    scorer = _chunk_scorer(influence, x_test, y_test)
    if client is not None:
        return _run(client, scorer, influence, chunk_size, target, local=False)
    with local_client(n_workers, "iw.score_distributed") as own_client:
        return _run(own_client, scorer, influence, chunk_size, target, local=True)


def _raise_if_failed(client: Client, futures: list) -> None:
    """Wait (on ``client``) for every chunk; raise the first failed chunk's error, if any."""
    from distributed import as_completed

    for future in as_completed(futures, loop=client.loop):
        if future.status == "error":
            future.result()


@dataclass
class _Target:
    """Where the scores go: a checked ``store`` path (or None: returned), whether to replace
    what is there, and the test points (x_test, y_test) they are for."""

    store: Path | None
    overwrite: bool
    tests: tuple


def _run(client: Client, scorer, influence: Influence, chunk_size, target: _Target, *, local):
    """Submit the chunks; write the store or return the scores (computed on ``client`` when
    ``local``: the caller closes its LocalCluster next)."""
    import dask.array as da

    n = influence.n
    if chunk_size is None:
        chunk_size = balanced_chunk_size(n, sum(client.nthreads().values()))
    futures = _chunk_futures(client, scorer, influence, chunk_size)
    sizes = [min(chunk_size, n - a) for a in range(0, n, chunk_size)]
    dtype = torch.empty(0, dtype=scorer.dtype).numpy().dtype
    scores = _as_dask_array(futures, scorer.S.shape[1], sizes, dtype)
    if target.store is not None:
        _raise_if_failed(client, futures)  # scored before anything at ``store`` is replaced
        return ScoreStore.write(
            scores,
            target.store,
            influence,
            target.tests,
            chunk_size,
            client=client,
            overwrite=target.overwrite,
        )
    if local:
        return da.from_array(client.compute(scores).result(), chunks=scores.chunks)
    return scores


class ScoreStore:
    """Precomputed scores I_up,loss(z_i, z_t) (T test points x n training points) in a Zarr
    array, written by ``score_distributed(..., store=path)``: lookups read one row (one test
    point) at a time, so ``top(t)`` on 10^6 training points needs no model and no solve.

    Its attributes record what decided the scores (:func:`scoring_record`) and the test points'
    digest, for :meth:`check_matches`.

    Args:
        path: the store's directory.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path: expected a directory path, got {type(path).__name__}")
        self.path = os.fspath(path)
        self.array = self._open(self.path)
        if self.array.attrs.get("quantity") != QUANTITY or self.array.ndim != 2:
            raise ValueError(
                f"path: {self.path!r} is a Zarr array but not a score store written by "
                "iw.score_distributed"
            )
        self.n_test, self.n = self.array.shape

    @staticmethod
    def _open(path: str):
        import zarr

        try:
            return zarr.open_array(path, mode="r")
        except (FileNotFoundError, zarr.errors.NodeNotFoundError) as err:
            raise FileNotFoundError(
                f"path: no Zarr score store at {path!r}; write one with "
                "iw.score_distributed(influence, x_test, store=path)"
            ) from err
        except (OSError, ValueError) as err:  # a Zarr group, unreadable metadata
            raise ValueError(
                f"path: {path!r} is not a score store written by iw.score_distributed ({err})"
            ) from err

    @staticmethod
    def is_store(path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` holds a score store written by ``iw.score_distributed``."""
        try:
            ScoreStore(path)
        except (OSError, ValueError):
            return False
        return True

    @staticmethod
    def check_path(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """``path`` as a Path where a store may be written, else an error naming ``store``:
        :func:`~influence_widgets.output_paths.check_output_path` for a folder; a store of an
        earlier run, a file or a non-empty folder is replaced only with ``overwrite=True``."""
        return check_output_path(
            path,
            "store",
            overwrite=overwrite,
            kind="folder",
            is_ours=ScoreStore.is_store,
            what="score store",
        )

    @classmethod
    def write(
        cls,
        scores: dask.array.Array,
        path: str | os.PathLike[str],
        influence: Influence,
        tests: tuple,
        chunk_size: int,
        *,
        client: Client,
        overwrite: bool = False,
    ) -> ScoreStore:
        """Write (T, n) scores to ``path`` on ``client`` in chunks of one test point x
        ``chunk_size`` training points (a click reads one row), with what they are
        (:func:`scoring_record`, and ``tests`` = (x_test, y_test)'s digest) in the attributes,
        written last; open it. ``path`` is checked again (:meth:`check_path`) first: what is
        there is replaced only with ``overwrite=True``. Workers write to its absolute path."""
        import zarr

        target = cls.check_path(path, overwrite).absolute()  # the same folder for every worker
        if target.is_file() or target.is_symlink():
            target.unlink()  # a file (or link) the user asked to replace: Zarr writes a folder
        stored = scores.rechunk((1, chunk_size)).to_zarr(
            os.fspath(target), overwrite=True, compute=False
        )
        client.compute(stored).result()
        attrs = zarr.open_array(os.fspath(target), mode="r+").attrs
        attrs.update(
            quantity=QUANTITY,
            definition="I_up,loss(z_i, z_test) = -grad L(z_test)^T H^-1 grad ell_i",
            test_points_sha256=test_points_digest(*tests),
            **scoring_record(influence),
        )
        return cls(target)

    def check_matches(self, influence: Influence, x_test, y_test=None) -> None:
        """A ValueError naming ``scores`` unless this store was scored by an Influence like
        ``influence`` (every entry of :func:`scoring_record`: training set, ``params``, model
        parameters, loss, l2, damping, Hessian, solver and its settings) for these test points (the same
        inputs and labels in order; ``y_test=None``: for the predicted classes). The message
        says which differs. What a viewer such as the explorer checks before it reads its clicks
        from the store."""
        fix = (
            "write the store from this Influence: iw.score_distributed(influence, x_test, "
            "y_test, store=path, overwrite=True)"
        )
        for key, ours in scoring_record(influence).items():
            theirs = self.array.attrs.get(key, MISSING)
            if theirs == ours:
                continue
            if theirs is MISSING:
                raise ValueError(
                    f"scores: the store does not record {key} (written by an older "
                    f"influence-widgets); {fix}"
                )
            if key in DIGESTS:
                raise ValueError(
                    f"scores: the store was scored with other {DIGESTS[key]} ({key} "
                    f"{str(theirs)[:12]}... in the store, {str(ours)[:12]}... here); {fix}"
                )
            raise ValueError(
                f"scores: the store was scored with {key}={theirs!r}, but the Influence has "
                f"{key}={ours!r}; {fix}"
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
        return ranked(self.predicted_removal_effect(test_index)[None], k)

    def __repr__(self) -> str:
        return f"ScoreStore({self.path!r}, n_test={self.n_test}, n_train={self.n})"
