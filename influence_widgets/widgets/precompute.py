"""The explorer's precomputation: ``influence.fit()`` (the Hessian and its factorisation, or the
solver's setup), run once, with its progress in the explorer's status line, and what the widget
says when it is done (which Hessian and damping it used; a warning when theta_hat is not a minimum
of R) or has failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from influence_widgets.core.ekfac import EKFAC
from influence_widgets.core.errors import NotPositiveDefiniteError
from influence_widgets.widgets.context import ExplorerContext
from influence_widgets.widgets.minimum import (
    MINIMUM_TOL,
    at_minimum,
    curvature_notice,
    curvature_text,
    not_at_minimum_notice,
)

__all__ = ["Precomputation", "failure_message"]

log = logging.getLogger("influence_widgets")


def failure_message(err: Exception) -> str:
    """What the widget shows when precomputation raised ``err``: the error and what to do."""
    if isinstance(err, NotPositiveDefiniteError):
        fix = (
            "build a new Influence with the damping it suggests (inf.rebuild(model, train, "
            "damping=...) or iw.Influence(..., damping=...)) and open a new explorer on it"
        )
    else:
        fix = "fix the cause, build a new Influence and open a new explorer on it"
    return (
        f"Precomputation failed: {type(err).__name__}: {err} What to do: {fix}; this explorer "
        "cannot show influence."
    )


def fit_with_retry(fit: Callable[[], object], attempts: int = 3) -> None:
    """``fit()``, retried when CPython 3.11 raises its spurious SystemError.

    Compiling code in this thread while the kernel compiles the next cell on the main thread
    (a notebook's "Run All") can raise "AST constructor recursion depth mismatch" in CPython
    3.11 (a race in the interpreter, not a problem with the inputs); the fit is pure
    computation, so running it again is safe.
    """
    for attempt in range(attempts):
        try:
            fit()
            return
        except SystemError as err:
            if "recursion depth mismatch" not in str(err) or attempt == attempts - 1:
                raise
            log.warning("retrying precomputation after CPython's spurious SystemError")


class Precomputation:
    """Fits the explorer's Influence and reports it in the explorer's ``status``, ``message``,
    ``progress``, ``notice`` and ``error`` traits.

    Args:
        context: the explorer's context (its ``readiness`` is set here).
        on_done: called with the click queued meanwhile (or None) once the fit is done.
        describe: the widget's words for a failed fit (default :func:`failure_message`).
        store_text: what the ready message adds about a score store ("" without one).
        subject: what was precomputed, as the ready message names it ("" for the explorer's
            one Influence; "NAME " among several methods).
    """

    def __init__(
        self,
        context: ExplorerContext,
        on_done: Callable[[int | None], None],
        describe: Callable[[Exception], str] = failure_message,
        store_text: str = "",
        subject: str = "",
    ) -> None:
        self.context = context
        self.on_done = on_done
        self.describe = describe
        self.store_text = store_text
        self.subject = subject
        self.ready_message = ""

    def run(self) -> None:
        """Fit; then mark the explorer ready (or failed) and serve a queued click."""
        view = self.context.view
        view.status = "fitting"
        view.message = "Precomputing the Hessian and its factorisation..."
        start = time.perf_counter()

        def show(step: str, fraction: float) -> None:
            view.progress = fraction
            view.message = f"Precomputing: {step} {fraction:.0%}"

        try:
            with self.context.jobs.progress(show):
                fit_with_retry(self.context.influence.fit)
        except Exception as err:  # shown in the widget and logged; nothing else to do here
            log.exception("InfluenceExplorer precomputation failed")
            self._failed(err)
            return
        self._done(time.perf_counter() - start)

    def _done(self, seconds: float) -> None:
        view, readiness = self.context.view, self.context.readiness
        with readiness.lock:
            readiness.fitted = True
            pending, readiness.pending = readiness.pending, None
        view.notice = self.minimum_notice()
        view.progress = 1.0
        view.status = "ready"
        warned = ", but see the warning below" if view.notice else ""
        approximate = (
            "; scores from EK-FAC, an approximation: check them in the Verify tab"
            if isinstance(self.context.influence.solver, EKFAC)
            else ""
        )
        self.ready_message = (
            f"Ready ({self.subject}precomputed in {seconds:.1f} s; "
            f"{curvature_text(self.context.influence)}{self.store_text}{approximate}){warned}"
        )
        view.message = self.ready_message
        self.on_done(pending)
        readiness.done.set()

    def minimum_notice(self) -> str:
        """The warning shown when theta_hat is not a minimum of R (else ""), with what to do:
        its gradient is not 0, or its Hessian needed damping='auto' to be positive definite."""
        influence = self.context.influence
        stationary = influence.diagnostics.grad_norm <= MINIMUM_TOL
        gradient = "" if stationary else not_at_minimum_notice(at_minimum(influence))
        return " ".join(text for text in (gradient, curvature_notice(influence)) if text)

    def _failed(self, err: Exception) -> None:
        """No influence can be shown: say why and what to do, also to a click queued earlier."""
        readiness = self.context.readiness
        with readiness.lock:
            readiness.failure = self.describe(err)
            pending, readiness.pending = readiness.pending, None
            self.context.view.status = "error"
            self.show_failure(pending)
        readiness.done.set()

    def show_failure(self, index: int | None) -> None:
        """Show why precomputation failed (``index``: the test point that cannot be shown)."""
        view = self.context.view
        view.error = self.context.readiness.failure
        shown = "" if index is None else f": test point {index} cannot be shown"
        view.message = f"Precomputation failed{shown} (see below)"
