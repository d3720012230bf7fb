"""The explorer's Verify tab: leave-one-out retraining for the selected test point, its scatter
of actual against predicted change of the test loss and Pearson R (Koh & Liang 2017, Fig 2).

The tab's settings and state are the explorer's synced traits ``verify_n_remove``, ``verify`` (a
:class:`~influence_widgets.widgets.protocol.VerifyState`) and ``verify_plot`` (PNG bytes).
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable

import numpy as np

from influence_widgets.analysis.loo import LOOResult, validate_loo
from influence_widgets.core.errors import check_positive_int
from influence_widgets.plots import correlation_text
from influence_widgets.widgets.context import ExplorerContext
from influence_widgets.widgets.jobs import Job
from influence_widgets.widgets.protocol import (
    IDLE,
    VERIFY_CANCEL,
    VERIFY_RUN,
    VerifyState,
    job_failed,
    job_started,
)

__all__ = ["VerifyTab", "scatter_png"]

log = logging.getLogger("influence_widgets")


def finite_or_none(x: float) -> float | None:
    """``x`` as a float, or None when it is not finite (JSON has no NaN)."""
    return float(x) if np.isfinite(x) else None


def scatter_png(result: LOOResult) -> bytes:
    """The LOO scatter as PNG bytes, drawn without pyplot (safe off the main thread)."""
    from matplotlib.figure import Figure

    from influence_widgets.plots import LOO_FIGSIZE, loo_scatter

    fig = Figure(figsize=LOO_FIGSIZE, dpi=90)
    loo_scatter(result, ax=fig.add_subplot())
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def verify_message(result: LOOResult, n_remove: int) -> str:
    """The Verify tab's status line after a run: how many retrains were done, and when."""
    if result.cancelled:
        return (
            f"Cancelled: {result.n_removed} of {n_remove} retrains done in {result.seconds:.1f} s"
        )
    return f"{result.n_removed} retrains in {result.seconds:.1f} s"


def verify_state(index: int, n_remove: int, result: LOOResult) -> VerifyState:
    """The ``verify`` trait after a finished (or cancelled) run."""
    return {
        "state": "cancelled" if result.cancelled else "done",
        "test_index": index,
        "n_remove": n_remove,
        "n_removed": result.n_removed,
        "progress": 1.0,
        "pearson": finite_or_none(result.pearson),
        "spearman": finite_or_none(result.spearman),
        "pearson_text": correlation_text(result.pearson),
        "spearman_text": correlation_text(result.spearman),
        "drift": result.drift,
        "seconds": result.seconds,
        "message": verify_message(result, n_remove),
    }


class VerifyTab:
    """Leave-one-out retraining of the selected test point, in the background."""

    def __init__(self, context: ExplorerContext) -> None:
        self.context = context
        self.view = context.view
        self.job = Job()
        self.result: LOOResult | None = None  # the latest run's

    @property
    def handlers(self) -> dict[str, Callable[[dict], None]]:
        """The front end's events this tab handles, by name (see protocol.EVENTS)."""
        return {VERIFY_RUN: lambda _: self.run(), VERIFY_CANCEL: lambda _: self.cancel()}

    @property
    def running(self) -> bool:
        return self.job.running

    def forget(self) -> None:
        """Clear a finished run's state (the selection moved to another test point)."""
        if not self.running:
            self.view.verify, self.view.verify_plot = dict(IDLE), b""

    def run(self, n_remove: int | None = None, *, wait: bool = False) -> LOOResult | None:
        """Check the selected test point against leave-one-out retraining (see
        ``InfluenceExplorer.run_verify``)."""
        view, influence = self.view, self.context.influence
        n_remove = check_positive_int(
            view.verify_n_remove if n_remove is None else n_remove, "n_remove"
        )
        problem = self.context.cannot_start(self.running)
        if problem is None and n_remove > influence.n:
            problem = f"n_remove: at most {influence.n} (the training set size)"
        if problem is None:
            view.verify_plot = b""
            view.verify_n_remove = n_remove  # the box shows the number this run uses
        index = self.context.selected
        started: VerifyState = job_started(
            index, f"Retraining without each of {n_remove} training points...", n_remove=n_remove
        )
        work = (self.job, self._worker, index, n_remove)
        ran = self.context.jobs.launch("verify", problem, started, work, wait)
        return self.result if ran and wait else None

    def cancel(self) -> None:
        """Stop the running check at its next function evaluation; the retrains done so far
        are shown."""
        self.context.jobs.cancel("verify", self.job, "Cancelling the retrain in progress...")

    def _worker(self, index: int, n_remove: int, cancel: threading.Event) -> None:
        def show(_step: str, fraction: float) -> None:
            done = round(fraction * (n_remove + 1)) - 1  # the first step is the baseline
            message = (
                f"Retrained {done} of {n_remove}"
                if done >= 0
                else "Retraining the baseline on all points..."
            )
            self.view.verify = {**self.view.verify, "progress": fraction, "message": message}

        jobs, tests = self.context.jobs, self.context.tests
        try:
            with jobs.progress(show, "leave-one-out", cancel):
                result = validate_loo(
                    self.context.influence,
                    *tests.point(index),
                    n_remove=n_remove,
                    test_index=index,
                    progress=False,
                    cancel=cancel,
                )
            self.result = result
            self.view.verify_plot = scatter_png(result) if result.n_removed else b""
            jobs.finish("verify", verify_state(index, n_remove, result))
        except Exception as err:  # shown in the tab and logged
            log.exception("InfluenceExplorer leave-one-out check failed")
            jobs.finish("verify", job_failed(index, "Leave-one-out check", err))
