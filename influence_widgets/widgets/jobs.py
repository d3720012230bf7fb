"""The explorer's background work: one :class:`JobRunner` per explorer, through which every
background thread starts (the fit, the page lookahead, Verify, Attack, Review's ranking and
retrain), with progress, cancel and a clean stop at interpreter exit.

Why a stop at exit: at interpreter exit Python kills daemon threads wherever they are, and one
killed inside a torch kernel aborts the whole process ("terminate called without an active
exception", exit code 134): a script that opens an explorer and ends while it precomputes. At exit
every runner's jobs are cancelled, their progress listeners raise :class:`ExplorerClosing` at the
next progress step (the fit stops there) and every thread is waited for.

Threads of one explorer may run side by side (a Verify run while the page is scored ahead): the
one process-wide constraint, torch.func's forward-mode state, is handled by the core's lock around
each forward-mode pass (``core.objective.FUNCTORCH_LOCK``).
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import traitlets

from influence_widgets.core.progress import report_progress
from influence_widgets.widgets.protocol import JobState

__all__ = ["EXIT_WAIT_SECONDS", "ExplorerClosing", "Job", "JobRunner", "exiting"]

EXIT_WAIT_SECONDS = 60.0  # how long interpreter exit waits for each background thread

_EXITING = threading.Event()
_LIVE: set[Job] = set()
_LIVE_LOCK = threading.Lock()


class ExplorerClosing(BaseException):
    """Raised inside a background job's progress step once the interpreter is exiting (a
    BaseException, as KeyboardInterrupt: no ``except Exception`` on the way turns it into a
    failure to show)."""


def exiting() -> bool:
    """Whether the interpreter is exiting: background jobs stop at their next step."""
    return _EXITING.is_set()


@atexit.register
def _stop_every_job() -> None:
    _EXITING.set()
    with _LIVE_LOCK:
        live = list(_LIVE)
    for job in live:
        job.cancel.set()
    for job in live:
        job.join(EXIT_WAIT_SECONDS)


class Job:
    """At most one run at a time of a slow function in a daemon thread, with a cancel event."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.cancel = threading.Event()

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self, target: Callable[..., None], *args, with_cancel: bool = True) -> bool:
        """Run ``target(*args, cancel)`` (``with_cancel=False``: ``target(*args)``) in a new
        thread; False (nothing started) once the interpreter is exiting."""
        if exiting():
            return False
        self.cancel = threading.Event()
        call = (*args, self.cancel) if with_cancel else args
        self.thread = threading.Thread(target=self._run, args=(target, call), daemon=True)
        with _LIVE_LOCK:
            _LIVE.add(self)
        self.thread.start()
        return True

    def _run(self, target: Callable[..., None], args: tuple) -> None:
        try:
            target(*args)
        except ExplorerClosing:
            pass  # the interpreter is exiting: nothing is left to show
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(self)

    def join(self, timeout: float | None = None) -> None:
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


class JobRunner:
    """One explorer's background work: its jobs, the lock that orders each job's progress
    updates against its "cancelling" state, and the progress listeners.

    Args:
        view: the widget whose traits hold the jobs' states (:mod:`protocol`'s JobState dicts).
    """

    def __init__(self, view: traitlets.HasTraits) -> None:
        self.view = view
        # Orders a job's progress updates (worker thread) and its switch to "cancelling" (kernel
        # thread), so that a late progress update never overwrites "Cancelling...".
        self.state_lock = threading.Lock()

    def spawn(self, target: Callable[[], None]) -> Job | None:
        """Run ``target()`` in a new background thread of this explorer; None (nothing started)
        once the interpreter is exiting."""
        job = Job()
        return job if job.start(target, with_cancel=False) else None

    @contextmanager
    def progress(
        self,
        show: Callable[[str, float], None],
        step: str | None = None,
        cancel: threading.Event | None = None,
        *,
        throttle: bool = True,
    ) -> Iterator[None]:
        """Inside the block, progress bars named ``step`` (every bar when None) call
        ``show(step, fraction)``, at most ~10 times a second unless ``throttle=False``, and never
        once ``cancel`` is set; at interpreter exit the next bar update raises
        :class:`ExplorerClosing`."""
        last = [0.0]

        def listener(name: str, fraction: float) -> None:
            if exiting():
                raise ExplorerClosing
            now = time.perf_counter()
            if step is not None and name != step:
                return
            if throttle and now - last[0] <= 0.1 and fraction < 1.0:
                return
            last[0] = now
            with self.state_lock:  # once cancelled, the bar and "Cancelling..." stay as they are
                if cancel is None or not cancel.is_set():
                    show(name, fraction)

        with report_progress(listener):
            yield

    def launch(
        self, trait: str, problem: str | None, started: JobState, work: tuple, wait: bool
    ) -> bool:
        """Show ``problem`` in the job state ``trait``, or set it to ``started`` and run ``work``
        = (job, function, *args) in the :class:`Job` ``job``; ``wait=True`` blocks until the run
        ends. Returns whether it ran; with ``wait``, a problem or a failed run is a
        RuntimeError."""
        job, *call = work
        if problem is None and exiting():
            problem = "The interpreter is exiting: nothing more is run."
        if problem is not None:
            setattr(self.view, trait, {**getattr(self.view, trait), "message": problem})
            if wait:
                raise RuntimeError(problem)
            return False
        setattr(self.view, trait, started)
        job.start(*call)
        if wait:
            job.join()
            state = getattr(self.view, trait)
            if state.get("state") == "error":
                raise RuntimeError(state.get("message"))
        return True

    def finish(self, trait: str, state: JobState) -> None:
        """Set a run's final ``state`` (done, cancelled, error) in the trait ``trait``, under the
        lock that :meth:`cancel` takes, so a Cancel pressed as the run ends cannot leave
        "cancelling" behind."""
        with self.state_lock:
            setattr(self.view, trait, state)

    def cancel(self, trait: str, job: Job, message: str) -> None:
        """Ask the running ``job`` to stop and show state "cancelling" with ``message`` at once
        (the job's own final state replaces it when it has stopped)."""
        with self.state_lock:
            state = getattr(self.view, trait)
            if job.running and state.get("state") == "running":
                job.cancel.set()
                setattr(self.view, trait, {**state, "state": "cancelling", "message": message})
