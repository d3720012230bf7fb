"""The explorer's slow tabs, Verify (leave-one-out) and Attack, run off the kernel's main thread.

Each tab is a mixin of :class:`~influence_widgets.widgets.InfluenceExplorer`: its settings and its
state are synced traits, its work runs in a :class:`BackgroundJob` (one at a time per tab, with a
cancel event), and progress comes from the core's progress bars through ``report_progress``.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import traitlets

from influence_widgets.analysis.attack import AttackResult, craft_attack, eight_bit_levels
from influence_widgets.analysis.loo import LOOResult, validate_loo
from influence_widgets.core.errors import check_nonnegative, check_positive_int
from influence_widgets.core.progress import report_progress
from influence_widgets.plots import correlation_text
from influence_widgets.widgets.display import png_bytes
from influence_widgets.widgets.protocol import (
    IDLE,
    AttackItem,
    AttackState,
    JobState,
    VerifyState,
    job_failed,
    job_started,
)

__all__ = ["BACKGROUND_WORK", "AttackTab", "BackgroundJob", "VerifyTab"]

log = logging.getLogger("influence_widgets")

# torch.func's forward-mode AD (the Hessian-vector products) keeps its levels in state that two
# threads cannot use at once: two explorers precomputing together failed with "Trying to access a
# forward AD level with an invalid index". Every explorer's background work takes this lock
# (reentrant: an on_select callback may open another explorer from inside it).
BACKGROUND_WORK = threading.RLock()

# Orders a tab's progress updates (worker thread) and its switch to "cancelling" (kernel thread),
# so that a late progress update never overwrites "Cancelling...".
_JOB_STATE = threading.Lock()


class BackgroundJob:
    """At most one run of a slow function in a daemon thread, with a cancel event."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.cancel = threading.Event()

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self, target: Callable[..., None], *args) -> None:
        self.cancel = threading.Event()
        self.thread = threading.Thread(target=target, args=(*args, self.cancel), daemon=True)
        self.thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)


def _throttled(update: Callable[[str, float], None], step: str) -> Callable[[str, float], None]:
    """A progress listener for bars named ``step``, at most ~10 updates a second."""
    last = [0.0]

    def listener(name: str, fraction: float) -> None:
        now = time.perf_counter()
        if name == step and (now - last[0] > 0.1 or fraction >= 1.0):
            last[0] = now
            update(name, fraction)

    return listener


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _scatter_png(result: LOOResult) -> bytes:
    """The LOO scatter as PNG bytes, drawn without pyplot (safe off the main thread)."""
    from matplotlib.figure import Figure

    from influence_widgets.plots import LOO_FIGSIZE, loo_scatter

    fig = Figure(figsize=LOO_FIGSIZE, dpi=90)
    loo_scatter(result, ax=fig.add_subplot())
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _verify_message(result: LOOResult, n_remove: int) -> str:
    """The Verify tab's status line after a run: how many retrains were done, and when."""
    if result.cancelled:
        return (
            f"Cancelled: {result.n_removed} of {n_remove} retrains done in {result.seconds:.1f} s"
        )
    return f"{result.n_removed} retrains in {result.seconds:.1f} s"


class _Tab(traitlets.HasTraits):
    """What the tabs share: checks before a run, starting, waiting for and cancelling it."""

    def _cannot_start(self, job: BackgroundJob) -> str | None:
        if self.selected is None:
            return "Select a test point first."
        if self._failure is not None:
            return "Precomputation failed (see the error above): open a new explorer."
        if not self._fitted:
            return "Wait until precomputation has finished."
        if job.running:
            return "A run is already going; cancel it first."
        return None

    def _launch(
        self, trait: str, problem: str | None, started: JobState, work: tuple, wait: bool
    ) -> bool:
        """Show ``problem`` in the tab's state ``trait``, or set it to ``started`` and run
        ``work`` = (job, function, *args) in the BackgroundJob ``job``; ``wait=True`` blocks until
        the run ends. Returns whether it ran; with ``wait``, a problem or a failed run is a
        RuntimeError."""
        job, *call = work
        if problem is not None:
            setattr(self, trait, {**getattr(self, trait), "message": problem})
            if wait:
                raise RuntimeError(problem)
            return False
        setattr(self, trait, started)
        job.start(*call)
        if wait:
            job.join()
            state = getattr(self, trait)
            if state.get("state") == "error":
                raise RuntimeError(state.get("message"))
        return True

    def _analyse(
        self,
        analysis: Callable,
        index: int,
        cancel: threading.Event,
        listen: tuple[str, Callable[[str, float], None]],
        **options,
    ):
        """``analysis(influence, x_test[index], y_test[index], **options)`` for test point
        ``index``, cancellable, its progress bar ``listen[0]`` reported to ``listen[1]``."""
        step, show = listen

        def unless_cancelled(name: str, fraction: float) -> None:
            with _JOB_STATE:  # once cancelled, the bar and "Cancelling..." stay as they are
                if not cancel.is_set():
                    show(name, fraction)

        with BACKGROUND_WORK, report_progress(_throttled(unless_cancelled, step)):
            return analysis(
                self.influence,
                self.x_test[index : index + 1],
                self.y_test[index : index + 1],
                test_index=index,
                progress=False,
                cancel=cancel,
                **options,
            )

    def _finish(self, trait: str, state: JobState) -> None:
        """Set a run's final ``state`` (done, cancelled, error) in the tab's trait ``trait``; under
        the lock that ``_cancel`` takes, so a Cancel pressed as the run ends cannot leave
        "cancelling" behind."""
        with _JOB_STATE:
            setattr(self, trait, state)

    def _cancel(self, trait: str, job: BackgroundJob, message: str) -> None:
        """Ask the running job to stop and show state "cancelling" with ``message`` at once (the
        job's own final state replaces it when it has stopped)."""
        with _JOB_STATE:
            if job.running and getattr(self, trait).get("state") == "running":
                job.cancel.set()
                setattr(
                    self, trait, {**getattr(self, trait), "state": "cancelling", "message": message}
                )


class VerifyTab(_Tab):
    """Leave-one-out retraining for the selected test point: the scatter and R (paper's Fig 2)."""

    verify_n_remove = traitlets.Int(20).tag(sync=True)
    verify = traitlets.Dict(IDLE).tag(sync=True)  # a protocol.VerifyState
    verify_plot = traitlets.Bytes(b"").tag(sync=True)  # PNG of the LOO scatter

    def _init_verify(self) -> None:
        self._verify_job = BackgroundJob()
        self.loo_result: LOOResult | None = None  # the latest Verify run

    @property
    def verify_running(self) -> bool:
        return self._verify_job.running

    def run_verify(self, n_remove: int | None = None, *, wait: bool = False) -> LOOResult | None:
        """Check the selected test point against leave-one-out retraining, in the background.

        Runs :func:`~influence_widgets.validate_loo` (the ``n_remove`` training points of largest
        |influence|, default ``verify_n_remove``) and shows the scatter and R in the Verify tab.
        With ``wait=True`` blocks and returns the :class:`LOOResult`; it is also kept as
        ``explorer.loo_result``.
        """
        n_remove = check_positive_int(
            self.verify_n_remove if n_remove is None else n_remove, "n_remove"
        )
        problem = self._cannot_start(self._verify_job)
        if problem is None and n_remove > self.influence.n:
            problem = f"n_remove: at most {self.influence.n} (the training set size)"
        if problem is None:
            self.verify_plot = b""
            self.verify_n_remove = n_remove  # the box shows the number this run uses
        index = self.selected
        started: VerifyState = job_started(
            index, f"Retraining without each of {n_remove} training points...", n_remove=n_remove
        )
        work = (self._verify_job, self._verify_worker, index, n_remove)
        ran = self._launch("verify", problem, started, work, wait)
        return self.loo_result if ran and wait else None

    def cancel_verify(self) -> None:
        """Stop the running check: the retrain in progress is abandoned within about a second
        (at its next function evaluation); the retrains done so far are shown."""
        self._cancel("verify", self._verify_job, "Cancelling the retrain in progress...")

    def _verify_worker(self, index: int, n_remove: int, cancel: threading.Event) -> None:
        def show(_step: str, fraction: float) -> None:
            done = round(fraction * (n_remove + 1)) - 1  # the first step is the baseline
            message = (
                f"Retrained {done} of {n_remove}"
                if done >= 0
                else "Retraining the baseline on all points..."
            )
            self.verify = {**self.verify, "progress": fraction, "message": message}

        try:
            result = self._analyse(
                validate_loo, index, cancel, ("leave-one-out", show), n_remove=n_remove
            )
            self.loo_result = result
            self.verify_plot = _scatter_png(result) if result.n_removed else b""
            done: VerifyState = {
                "state": "cancelled" if result.cancelled else "done",
                "test_index": index,
                "n_remove": n_remove,
                "n_removed": result.n_removed,
                "progress": 1.0,
                "pearson": _finite_or_none(result.pearson),
                "spearman": _finite_or_none(result.spearman),
                "pearson_text": correlation_text(result.pearson),
                "spearman_text": correlation_text(result.spearman),
                "drift": result.drift,
                "seconds": result.seconds,
                "message": _verify_message(result, n_remove),
            }
            self._finish("verify", done)
        except Exception as err:  # shown in the tab and logged
            log.exception("InfluenceExplorer leave-one-out check failed")
            self._finish("verify", job_failed(index, "Leave-one-out check", err))


class AttackTab(_Tab):
    """A training-set attack on the selected test point (paper's Sec 5.2), shown side by side."""

    attack_n_poison = traitlets.Int(1).tag(sync=True)
    # eps and step: in 8-bit levels for images, in the data's units for other data
    attack_eps = traitlets.Float(2.0).tag(sync=True)
    attack_step = traitlets.Float(0.25).tag(sync=True)
    attack_max_iter = traitlets.Int(30).tag(sync=True)
    attack = traitlets.Dict(IDLE).tag(sync=True)  # a protocol.AttackState

    def _init_attack(self) -> None:
        self._attack_job = BackgroundJob()
        self.attack_result: AttackResult | None = None  # the latest Attack run
        X = self.influence.train.X
        self._input_range: tuple[float, float] | None = None
        if self.display_data.kind == "image" and X is not None and X.is_floating_point():
            lo, hi = float(X.min()), float(X.max())
            self._input_range = (0.0, 1.0) if lo >= 0 and hi <= 1 else (lo, hi)
            if lo >= 0 and 1 < hi <= 255:
                self._input_range = (0.0, 255.0)

    @property
    def attack_running(self) -> bool:
        return self._attack_job.running

    def _attack_units(self, value: float) -> float:
        """A slider value in the data's units: 8-bit levels for images."""
        if self._input_range is None:
            return float(value)
        lo, hi = self._input_range
        return eight_bit_levels(value, data_range=hi - lo)

    def run_attack(
        self,
        n_poison: int | None = None,
        eps: float | None = None,
        step: float | None = None,
        max_iter: int | None = None,
        *,
        wait: bool = False,
    ) -> AttackResult | None:
        """Attack the selected test point with :func:`~influence_widgets.craft_attack`, in the
        background. ``eps`` and ``step`` are 8-bit levels for images (data units otherwise);
        unset arguments come from the tab's sliders. ``wait=True`` blocks and returns the
        :class:`AttackResult`, also kept as ``explorer.attack_result``."""
        n_poison = check_positive_int(
            self.attack_n_poison if n_poison is None else n_poison, "n_poison"
        )
        max_iter = check_positive_int(
            self.attack_max_iter if max_iter is None else max_iter, "max_iter"
        )
        eps = check_nonnegative(self.attack_eps if eps is None else eps, "eps")
        step = check_nonnegative(self.attack_step if step is None else step, "step")
        problem = self._cannot_start(self._attack_job)
        if problem is None and n_poison > self.influence.n:
            problem = f"n_poison: at most {self.influence.n} (the training set size)"
        if problem is None and self._pred[self.selected] != self._true[self.selected]:
            problem = "This test point is already misclassified: pick a correct one to attack."
        index = self.selected
        started: AttackState = job_started(
            index, f"Perturbing {n_poison} training point(s), retraining after each step..."
        )
        settings = (n_poison, self._attack_units(eps), self._attack_units(step), max_iter)
        ran = self._launch(
            "attack",
            problem,
            started,
            (self._attack_job, self._attack_worker, index, settings),
            wait,
        )
        return self.attack_result if ran and wait else None

    def cancel_attack(self) -> None:
        """Stop the running attack after its current step."""
        self._cancel("attack", self._attack_job, "Cancelling after the current step...")

    def _attack_worker(self, index: int, settings: tuple, cancel: threading.Event) -> None:
        n_poison, eps, step, max_iter = settings

        def show(_step: str, fraction: float) -> None:
            done = round(fraction * max_iter)
            self.attack = {
                **self.attack,
                "progress": fraction,
                "message": f"Step {done} of at most {max_iter}",
            }

        try:
            result = self._analyse(
                craft_attack,
                index,
                cancel,
                ("attack", show),
                n_poison=n_poison,
                eps=eps,
                step_size=step,
                max_iter=max_iter,
                input_range=self._input_range,
            )
            self.attack_result = result
            verdict = "FLIPPED" if result.flipped else "not flipped"
            what = "Cancelled: " if result.cancelled else ""
            self.attack: AttackState = {
                "state": "cancelled" if result.cancelled else "done",
                "test_index": index,
                "progress": 1.0,
                "flipped": result.flipped,
                "prediction_before": self._label(result.prediction_before),
                "prediction_after": self._label(result.prediction_after),
                "probabilities": self._probability_rows(result),
                "iterations": result.iterations,
                "max_change": result.max_change,
                "seconds": result.seconds,
                "items": self._attack_items(result),
                "message": f"{what}{verdict} after {result.iterations} step(s) in "
                f"{result.seconds:.1f} s",
            }
        except Exception as err:  # shown in the tab and logged
            log.exception("InfluenceExplorer attack failed")
            self.attack = job_failed(index, "Attack", err)

    def _probability_rows(self, result: AttackResult) -> list:
        """[class name, before, after] for the classes that matter: top 5 by either."""
        before, after = result.probabilities_before, result.probabilities_after
        order = np.argsort(-np.maximum(before, after))[:5]
        return [[self._label(int(c)), float(before[c]), float(after[c])] for c in order]

    def _attack_items(self, result: AttackResult) -> list[AttackItem]:
        items = []
        labels = self.influence.train.take(result.poisoned)[1].tolist()
        for row, (j, label) in enumerate(zip(result.poisoned.tolist(), labels, strict=True)):
            old = result.original_inputs[row].detach().cpu().numpy().astype(np.float64)
            new = result.perturbed_inputs[row].detach().cpu().numpy().astype(np.float64)
            item: AttackItem = {"index": j, "label": self._label(int(label))}
            shape = np.asarray(self.display_data.train[j]).shape
            if self.display_data.kind == "image" and old.size == int(np.prod(shape)):
                diff = (new - old).reshape(shape)
                if diff.ndim == 3:  # colour: show the change of the channel mean
                    diff = diff.mean(axis=-1)
                bound = float(np.abs(diff).max()) or 1.0
                lo, hi = self._input_range or (float(old.min()), float(old.max()))
                item["original"] = png_bytes(old.reshape(shape), vrange=(lo, hi))
                item["perturbed"] = png_bytes(new.reshape(shape), vrange=(lo, hi))
                item["difference"] = png_bytes(diff, cmap="RdBu_r", vrange=(-bound, bound))
                item["amplification"] = (hi - lo) / (2 * bound)
            else:
                names = self.display_data.feature_names or [f"x{k}" for k in range(old.size)]
                changed = np.argsort(-np.abs(new - old).reshape(-1))[:8]
                item["changes"] = [
                    [names[k], float(old.reshape(-1)[k]), float(new.reshape(-1)[k])]
                    for k in changed
                    if new.reshape(-1)[k] != old.reshape(-1)[k]
                ]
            items.append(item)
        return items
