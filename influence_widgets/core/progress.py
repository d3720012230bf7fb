"""Progress bars for the engine's slow steps, with an optional listener and cancel event per
thread.

Every slow loop uses :func:`progress_bar` (a ``tqdm.auto`` bar). A front end that wants the same
progress elsewhere (the explorer's own bar) wraps the work in :func:`report_progress`; the listener
is called with the step's description and its completed fraction, even when the printed bar is
disabled. This keeps the core free of Jupyter while the widget shows real progress.

The same steps make every attribution method cancellable, ``Influence`` included, without an
argument of its own: inside ``with cancellable(event):`` the first bar that starts or advances
after ``event`` is set raises :class:`~influence_widgets.core.errors.Cancelled` in that thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

from influence_widgets.core.errors import Cancelled, check_cancel_event

__all__ = ["cancellable", "progress_bar", "report_progress"]

_local = threading.local()


# In a notebook, tqdm.auto's bars are ipywidgets (tqdm.notebook); elsewhere text on stderr.
_WIDGET_BARS = any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)


class _ReportingBar(tqdm):
    """A tqdm bar that also tells this thread's listener, if any, how far it is.

    In a notebook the bar is a widget shown under a display id: when a finished bar closes
    (``leave=False``) its view is replaced by empty output, so the saved notebook holds no view
    of a closed widget (after a page reload such a view reads "Error displaying widget: model
    not found").
    """

    def __init__(self, *, total: int, desc: str, **kwargs) -> None:
        # Own copies: a disabled tqdm keeps neither its description nor its count.
        self._step, self._total, self._done = desc, total, 0
        self._shown = None  # the notebook display of the bar's widget
        widget = _WIDGET_BARS and not kwargs.get("disable")
        if widget:
            kwargs["display"] = False  # shown below, with a display id
        super().__init__(total=total, desc=desc, **kwargs)
        if widget:
            from IPython.display import display

            self._shown = display(self.container, display_id=True)
            self.displayed = True

    @property
    def step(self) -> str:
        """The step's description, as given and as the listener hears it (kept even when the
        printed bar is disabled)."""
        return self._step

    def close(self) -> None:
        super().close()
        if self._shown is not None and self.container.comm is None:  # tqdm closed the widget
            self._shown.update({"text/plain": ""}, raw=True)
            for part in self.container.children:
                part.close()
            self._shown = None

    def update(self, n: float = 1) -> bool | None:
        _stop_if_cancelled(self._step)
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


def _stop_if_cancelled(step: str) -> None:
    """Raise :class:`Cancelled` when this thread runs inside :func:`cancellable` and its event is
    set."""
    event = getattr(_local, "cancel", None)
    if event is not None and event.is_set():
        raise Cancelled(f"cancelled during {step!r}")


def progress_bar(*, total: int, desc: str, disable: bool) -> _ReportingBar:
    """A progress bar for ``total`` steps, printed unless ``disable``; reported to any listener.
    A loop that can end early by converging calls its ``complete()`` before ``close()``. Inside
    :func:`cancellable` with its event set, raises :class:`Cancelled` instead."""
    _stop_if_cancelled(desc)
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


@contextmanager
def cancellable(cancel: threading.Event | None) -> Iterator[None]:
    """Inside the block, the first progress bar of this thread that starts or advances after
    ``cancel`` is set raises :class:`~influence_widgets.core.errors.Cancelled`: a fit or a scoring
    pass stops within one batch. ``cancel=None`` changes nothing. A method whose ``fit`` was
    cancelled stays unfitted and fits from the start when next asked."""
    previous = getattr(_local, "cancel", None)
    _local.cancel = check_cancel_event(cancel)
    try:
        yield
    finally:
        _local.cancel = previous
