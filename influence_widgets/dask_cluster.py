"""The Dask client every distributed computation of the package runs on: one passed by the user,
checked, or a LocalCluster of worker processes started for one call and closed after it.

Used by :func:`~influence_widgets.score_distributed` (scoring chunks of training points) and
:func:`~influence_widgets.lds` (one retrain per task). Dask is an optional extra: it is imported
only here and only when a distributed computation is asked for; without it the error says
``pip install "influence-widgets[dask]"``.

The LocalCluster is set up for torch compute (one process per worker, one thread each, torch
then uses one thread: Dask's nanny sets ``OMP_NUM_THREADS=1``) with two of Dask's worker
defaults changed, both measured in ``benchmarks/scale.py`` (benchmarks/README.md):

- ``MALLOC_TRIM_THRESHOLD_`` is not set in the workers (Dask sets it to 65536). Setting it turns
  off glibc's adaptive mmap threshold, so every tensor above 128 KiB is mapped and unmapped
  again: on the Fashion-MNIST scoring pass that was 1.75x the minor page faults, 1.8x the
  system time and 12-25% more CPU time per training point than the same code in a plain
  process.
- the statistical profiler of the workers is off: it feeds Dask's dashboard, which this cluster
  does not start (``dashboard_address=None``), and it samples the worker thread every 10 ms.

A worker environment of your own (``Client("tcp://...")``) keeps its settings; starting the
workers with ``MALLOC_TRIM_THRESHOLD_`` unset gives them the same speed. The workers inherit this
process's environment: where it has ``MALLOC_TRIM_THRESHOLD_`` (set by you, or written into it by
the nanny of a LocalCluster started with Dask's defaults earlier in this process), they keep it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

from influence_widgets.core.errors import check_positive_int

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["DASK_EXTRA", "check_client", "check_n_workers", "local_client", "require_distributed"]

DASK_EXTRA = 'pip install "influence-widgets[dask]"'
# The LocalCluster's changes to Dask's defaults (see the module docstring).
WORKER_CONFIG = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.worker.profile.enabled": False,
}


def require_distributed(what: str) -> None:
    """Import ``dask.distributed``, or raise an ImportError that says ``what`` needs it and how
    to install it."""
    try:
        import distributed  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"{what} needs Dask (dask[distributed]), which is not installed: {DASK_EXTRA}"
        ) from err


def check_client(client, what: str, none_means: str) -> None:
    """None, or a ``dask.distributed.Client``; else a TypeError naming ``client`` that says what
    None means for ``what``. Needs Dask only for a client that is not None."""
    if client is None:
        return
    require_distributed(what)
    from distributed import Client

    if not isinstance(client, Client):
        raise TypeError(
            f"client: expected a dask.distributed.Client (or None {none_means}), "
            f"got {type(client).__name__}"
        )


def check_n_workers(n_workers) -> int | None:
    """None (Dask's choice for this machine) or a positive integer; else an error naming it."""
    return None if n_workers is None else check_positive_int(n_workers, "n_workers")


@contextmanager
def main_module_spec() -> Iterator[None]:
    """``__main__.__spec__`` present while worker processes start. multiprocessing's spawn reads
    it, and IPython's user module (``__main__`` in a notebook) loses it when its namespace is
    cleared (``%reset``), after which every worker fails to start with an AttributeError. Where
    it is missing it is None (what a script run by path has) inside the block, and removed again
    afterwards."""
    main = sys.modules.get("__main__")
    missing = main is not None and not hasattr(main, "__spec__")
    if missing:
        main.__spec__ = None
    try:
        yield
    finally:
        if missing:
            with suppress(AttributeError):
                del main.__spec__


@contextmanager
def local_client(n_workers: int | None, what: str) -> Iterator[Client]:
    """A Client of a new ``LocalCluster`` of ``n_workers`` worker processes (None: Dask's choice
    for this machine), one thread each, set up for torch compute (module docstring); both are
    closed when the block ends, whatever happens in it. ``what`` names the caller in the
    ImportError raised without Dask."""
    require_distributed(what)
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set(WORKER_CONFIG), main_module_spec():  # config: read by each nanny
        cluster = LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
    with cluster, Client(cluster, set_as_default=False) as client:
        yield client
