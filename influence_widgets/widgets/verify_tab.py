"""The explorer's Verify tab: check the selected test point against retraining, one check at a
time, in the background, with a progress bar and Cancel.

- "loo": leave-one-out retraining, its scatter of actual against predicted change of the test
  loss and Pearson R (Koh & Liang 2017, Fig 2);
- "lds": the linear datamodeling score LDS(z) of the point with its noise floor, and its scatter
  of the retrained models' output against the scores' prediction over random subsets
  (:mod:`~influence_widgets.widgets.verify_lds`).

With several attribution methods the LDS checks the scores of the method the panel shows, with
the reference Influence's training recipe (its model, loss, l2 and parameters); every other ready
method is then scored against the same retrains (``LDSResult.rescore``), so switching methods shows
theirs without retraining, and the Compare view lists each. Leave-one-out needs the Hessian: it
always checks the reference Influence, and its state names it.

The tab's settings and state are the explorer's synced traits ``verify_mode`` (which check),
``verify_n_remove``, ``verify_subsets``, ``verify`` (a
:class:`~influence_widgets.widgets.protocol.VerifyState` or an
:class:`~influence_widgets.widgets.protocol.LDSState`, by its ``kind``) and ``verify_plot`` (PNG
bytes of the check's scatter).
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable

import numpy as np

from influence_widgets.analysis.lds import RETRAIN_STEP, LDSResult, lds
from influence_widgets.analysis.loo import LOOResult, validate_loo
from influence_widgets.core.errors import check_positive_int
from influence_widgets.plots import correlation_text
from influence_widgets.widgets.context import ExplorerContext
from influence_widgets.widgets.jobs import Job
from influence_widgets.widgets.protocol import (
    IDLE,
    VERIFY_CANCEL,
    VERIFY_RUN,
    LDSState,
    VerifyState,
    job_failed,
    job_started,
)
from influence_widgets.widgets.verify_lds import (
    LDS_FRACTION,
    check_subsets,
    lds_output,
    lds_png,
    lds_state,
    overall_progress,
    progress_message,
    resumable,
)

__all__ = ["R_SCALE", "VerifyTab", "loo_reading", "scatter_png"]

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


# How the tab reads Pearson R of leave-one-out: (lowest R, word, what it means), best first. R
# says how close the points lie to a straight line, not whether it is y = x. The digits demo's
# logistic regression with an exact solve reaches 0.9998 (benchmarks/README.md).
R_SCALE = (
    (0.99, "very good", "the actual changes lie almost on a line through the predicted ones"),
    (0.9, "good", "close to a line, with some scatter"),
    (0.7, "rough", "the trend holds, single points are off"),
    (-1.0, "poor", "the predictions barely track retraining"),
)
FEW_REMOVALS = 10  # below this, the reading adds that R rests on few points


def loo_reading(pearson: float, n_removed: int) -> str:
    """One line on what Pearson R = ``pearson`` over ``n_removed`` removals means, whether it is
    good, and the scale it is read on (``R_SCALE``); NaN: why there is no R."""
    if not np.isfinite(pearson):
        return "No R: it needs at least 3 removals whose actual changes are not all equal."
    word, meaning = next((w, m) for low, w, m in R_SCALE if pearson >= low)
    scale = ", ".join(f"{w} \u2265 {low:g}" for low, w, _ in R_SCALE[:-1])
    few = f" Only {n_removed} removals: R itself is rough." if n_removed < FEW_REMOVALS else ""
    return (
        f"R = {correlation_text(pearson)}, {word}: {meaning} ({scale}, {R_SCALE[-1][1]} below); "
        f"points on the dashed line y = x also have the predicted size.{few}"
    )


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
        "kind": "loo",
        "test_index": index,
        "n_remove": n_remove,
        "n_removed": result.n_removed,
        "progress": 1.0,
        "pearson": finite_or_none(result.pearson),
        "spearman": finite_or_none(result.spearman),
        "pearson_text": correlation_text(result.pearson),
        "spearman_text": correlation_text(result.spearman),
        "reading": loo_reading(result.pearson, result.n_removed),
        "drift": result.drift,
        "seconds": result.seconds,
        "message": verify_message(result, n_remove),
    }


class VerifyTab:
    """The selected test point checked against retraining in the background: leave-one-out or
    the LDS, whichever ``verify_mode`` names, one run at a time."""

    def __init__(self, context: ExplorerContext) -> None:
        self.context = context
        self.view = context.view
        self.job = Job()  # the one Verify job, whichever check it runs
        self.result: LOOResult | None = None  # the latest leave-one-out run's
        self.lds_result: LDSResult | None = None  # the latest LDS run's
        self.on_lds: Callable[[], None] | None = None  # called after an LDS run (Compare)
        self.view.observe(lambda _: self.forget(), names="verify_mode")

    @property
    def handlers(self) -> dict[str, Callable[[dict], None]]:
        """The front end's events this tab handles, by name (see protocol.EVENTS)."""
        return {VERIFY_RUN: lambda _: self.run_mode(), VERIFY_CANCEL: lambda _: self.cancel()}

    @property
    def running(self) -> bool:
        return self.job.running

    def forget(self) -> None:
        """Clear a finished run's state (the selection moved to another test point, or the tab
        to the other check)."""
        if not self.running:
            self.view.verify, self.view.verify_plot = dict(IDLE), b""

    def show_method(self, name: str) -> None:
        """The panel now shows method ``name``: a finished LDS of the selected test point shows
        that method's LDS against the same retrains (or is cleared when there is none); a
        leave-one-out result, of the reference Influence, stays."""
        state = self.view.verify
        if self.running or state.get("kind") != "lds" or state.get("state") == "idle":
            return
        index = state.get("test_index")
        result = self.context.methods.point_lds.get((name, index))
        if result is None or state.get("state") not in ("done", "cancelled"):
            self.forget()
            return
        self.view.verify_plot = lds_png(result, index, name) if result.n_subsets else b""
        self.view.verify = {**lds_state(index, result), "method": name}

    def show_problem(self, message: str) -> None:
        """A bad setting sent by the front end (``message`` names it), shown in the tab's status
        line: beside a running check, or in place of a finished one."""
        if self.running:
            self.view.verify = {**self.view.verify, "message": message}
        else:
            self.view.verify = {"state": "error", "kind": self.view.verify_mode, "message": message}
            self.view.verify_plot = b""

    def run_mode(self) -> None:
        """The front end's Run: the check that ``verify_mode`` names, with the tab's settings."""
        if self.view.verify_mode == "lds":
            self.run_lds()
        else:
            self.run()

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
        reference = self.context.methods.reference_name
        checks = "" if reference == self.context.shown else f" (checks {reference})"
        started: VerifyState = job_started(
            self.context.selected,
            f"Retraining without each of {n_remove} training points{checks}...",
            kind="loo",
            n_remove=n_remove,
            method=reference,
        )
        ran = self._launch(("loo", "verify_n_remove", n_remove), problem, started, wait)
        return self.result if ran and wait else None

    def run_lds(self, subsets: int | None = None, *, wait: bool = False) -> LDSResult | None:
        """LDS(z) of the selected test point with its noise floor (see
        ``InfluenceExplorer.run_lds``)."""
        subsets = check_subsets(self.view.verify_subsets if subsets is None else subsets)
        problem = self.context.cannot_start(self.running)
        name = self.context.shown
        if problem is None and self.context.methods.ready(name) is None:
            entry = self.context.methods.entry(name)
            problem = f"{name} is not ready yet ({entry.state}: {entry.message}); wait for it."
        earlier = self._earlier_lds(self.context.selected, subsets)
        kept = 0 if earlier is None else earlier.n_subsets
        what = (
            f"Going on from the earlier run's {kept} subsets: retraining on {subsets - kept} more"
            if kept
            else f"Retraining on {subsets} random subsets"
        )
        started: LDSState = job_started(
            self.context.selected,
            f"{what} of {LDS_FRACTION:.0%} of the training set, each twice, to check {name}'s "
            "scores...",
            kind="lds",
            subsets=subsets,
            n_subsets=0,
            fraction=LDS_FRACTION,
            method=name,
        )
        ran = self._launch(("lds", "verify_subsets", subsets), problem, started, wait)
        return self.lds_result if ran and wait else None

    def _launch(self, check: tuple[str, str, int], problem: str | None, started, wait) -> bool:
        """Run ``check`` = (mode, the trait of its number, the number) on the selected test
        point, or show ``problem``; the tab first shows the check and the number the run uses."""
        mode, trait, number = check
        view = self.view
        if problem is None:
            view.verify_mode, view.verify_plot = mode, b""
            setattr(view, trait, number)
        if mode == "lds":
            work = (self.job, self._lds_worker, self.context.selected, number, self.context.shown)
        else:
            work = (self.job, self._worker, self.context.selected, number)
        return self.context.jobs.launch("verify", problem, started, work, wait)

    def cancel(self) -> None:
        """Stop the running check: leave-one-out at the retrain's next function evaluation, the
        LDS once the retrain in progress ends; what was done so far is shown."""
        if self.view.verify.get("kind") == "lds":
            message = "Cancelling: the retrain in progress finishes first..."
        else:
            message = "Cancelling the retrain in progress..."
        self.context.jobs.cancel("verify", self.job, message)

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
            state = verify_state(index, n_remove, result)
            jobs.finish("verify", {**state, "method": self.context.methods.reference_name})
        except Exception as err:  # shown in the tab and logged
            log.exception("InfluenceExplorer leave-one-out check failed")
            jobs.finish("verify", job_failed(index, "Leave-one-out check", err))

    def _earlier_lds(self, index: int, subsets: int) -> LDSResult | None:
        """The LDS run of test point ``index`` (of any method: the retrains do not depend on
        the scores) that a run of ``subsets`` goes on from, or None."""
        point = [r for (_, i), r in self.context.methods.point_lds.items() if i == index]
        return resumable(point, subsets)

    def _lds_worker(self, index: int, subsets: int, name: str, cancel: threading.Event) -> None:
        earlier = self._earlier_lds(index, subsets)
        kept = 0 if earlier is None else earlier.n_subsets

        def show(_step: str, fraction: float) -> None:
            message = progress_message(fraction, subsets, kept)
            done = overall_progress(fraction, subsets, kept)
            self.view.verify = {**self.view.verify, "progress": done, "message": message}

        jobs, methods = self.context.jobs, self.context.methods
        obj = self.context.influence.objective  # the training recipe: the reference's
        x, y = self.context.tests.point(index)
        try:
            scores = methods.entries[name].method.scores(x, y).detach()
            with jobs.progress(show, RETRAIN_STEP, cancel):
                result = lds(
                    scores,
                    self.context.influence.train.tensors(),
                    x_test=x,
                    y_test=y,
                    subsets=subsets,
                    fraction=LDS_FRACTION,
                    output=lds_output(y),
                    model=obj.model_copy(),
                    loss=obj.loss_fn,
                    l2=obj.l2,
                    params=list(obj.spec.names),
                    progress=False,
                    cancel=cancel,
                    resume=earlier,
                )
            self.lds_result = result
            methods.point_lds[(name, index)] = result
            self._rescore_others(result, name, index)
            several = len(methods) > 1
            plot = lds_png(result, index, name if several else None) if result.n_subsets else b""
            self.view.verify_plot = plot
            jobs.finish("verify", {**lds_state(index, result), "method": name})
        except Exception as err:  # shown in the tab and logged
            log.exception("InfluenceExplorer LDS check failed")
            failed = job_failed(index, "LDS check", err)
            jobs.finish("verify", {**failed, "kind": "lds", "method": name})
        if self.on_lds is not None:
            self.on_lds()

    def _rescore_others(self, result: LDSResult, name: str, index: int) -> None:
        """Every other ready method's LDS of test point ``index`` against the retrains of
        ``result`` (no retraining): kept for the switch and the Compare view."""
        methods = self.context.methods
        x, y = self.context.tests.point(index)
        for other in methods.names:
            method = methods.ready(other)
            if other == name or method is None:
                continue
            try:
                methods.point_lds[(other, index)] = result.rescore(method.scores(x, y).detach())
            except Exception:  # that method's LDS is left out; the run itself stands
                log.exception("InfluenceExplorer could not rescore %s", other)
