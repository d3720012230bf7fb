"""Progress bars for the engine's slow steps, with an optional listener per thread.

Every slow loop uses :func:`progress_bar` (a ``tqdm.auto`` bar). A front end that wants the same
progress elsewhere (the explorer's own bar) wraps the work in :func:`report_progress`; the listener
is called with the step's description and its completed fraction, even when the printed bar is
disabled. This keeps the core free of Jupyter while the widget shows real progress.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

__all__ = ["progress_bar", "report_progress"]

_local = threading.local()


class _ReportingBar(tqdm):
    """A tqdm bar that also tells this thread's listener, if any, how far it is."""

    def __init__(self, *, total: int, desc: str, **kwargs) -> None:
        # Own copies: a disabled tqdm keeps neither its description nor its count.
        self._step, self._total, self._done = desc, total, 0
        super().__init__(total=total, desc=desc, **kwargs)

    def update(self, n: float = 1) -> bool | None:
        self._done += n
        listener = getattr(_local, "listener", None)
        if listener is not None and self._total:
            listener(self._step, min(1.0, self._done / self._total))
        return super().update(n)

    def complete(self) -> None:
        """Mark a loop that stopped early because it converged as finished: the total becomes
        the steps done, so the bar closes as complete (a notebook bar stays red, "6% 64/1000",
        when it closes short of its total)."""
        if not self.disable and self.total and self.n < self.total:
            self.total = self.n
            self._total = self._done
            self.refresh()


def progress_bar(*, total: int, desc: str, disable: bool) -> _ReportingBar:
    """A progress bar for ``total`` steps, printed unless ``disable``; reported to any listener.
    A loop that can end early by converging calls its ``complete()`` before ``close()``."""
    return _ReportingBar(total=total, desc=desc, disable=disable, leave=False)


@contextmanager
def report_progress(listener: Callable[[str, float], None]) -> Iterator[None]:
    """Call ``listener(step, fraction)`` for every bar this thread updates inside the block."""
    previous = getattr(_local, "listener", None)
    _local.listener = listener
    try:
        yield
    finally:
        _local.listener = previous
