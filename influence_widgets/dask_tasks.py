"""Many independent calls of one function as Dask tasks: the results handed back in this thread
as the tasks finish, a cancel event honoured, a task's error raised here.

What every call shares (a model, the training tensors) is sent to each worker once
(``scatter(broadcast=True, hash=False)``: fresh keys, never an earlier run's); each task carries
only its own arguments and has a key of its own (``pure=False``). Every Dask call goes to the
client passed, never to Dask's default client. Used by :func:`~influence_widgets.lds` (one
retrain per task).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from influence_widgets.core.model_checks import first_line

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["POLL_SECONDS", "call_shared", "run_tasks"]

POLL_SECONDS = 0.05  # how often the loop looks for finished tasks and at the cancel event


def call_shared(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``: a task's body, ``fn`` being the shared object (resolved on the worker)."""
    return fn(*args)


def run_tasks(
    client: Client,
    fn: Callable[..., Any],
    jobs: Sequence[tuple],
    on_result: Callable[[int, Any], None],
    cancel: threading.Event | None = None,
    *,
    name: str = "fn",
) -> bool:
    """``fn(*jobs[k])`` for every k, one task each on ``client``; ``on_result(k, value)`` is
    called in this thread as each finishes, in the order they finish. Returns True when every
    task is done, False when ``cancel`` was set: the tasks not yet finished are then cancelled
    (queued ones never start; running ones are abandoned) and the results already in are the
    ones given. A task that raises cancels the others, and its exception is raised here as the
    task raised it. ``fn`` is sent to every worker once; if it cannot be pickled, a TypeError
    naming ``name`` says so."""
    from distributed import as_completed

    try:
        shared = client.scatter(fn, broadcast=True, hash=False)
    except TypeError as err:
        raise TypeError(
            f"{name}: cannot be sent to the Dask workers: it, or what it is sent with, does not "
            f"pickle ({first_line(err)}); define it at the top level of a module or notebook, or "
            "run in this process (client=None)"
        ) from err
    futures = [client.submit(call_shared, shared, *job, pure=False) for job in jobs]
    index = {future.key: k for k, future in enumerate(futures)}
    finished = as_completed(futures, loop=client.loop, with_results=True, raise_errors=False)
    stop = cancel if cancel is not None else threading.Event()
    try:
        while not finished.is_empty():
            batch = finished.next_batch(block=False)
            for future, value in batch:
                if future.status != "finished":
                    future.result()  # raises the task's exception (or its cancellation)
                on_result(index[future.key], value)
            if stop.is_set():
                return False
            if not batch:
                stop.wait(POLL_SECONDS)
        return True
    finally:
        client.cancel([future for future in futures if not future.done()])
