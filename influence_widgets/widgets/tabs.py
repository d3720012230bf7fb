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

from influence_widgets.analysis.attack import (
    SELECT_STEP,
    AttackResult,
    EpsSearch,
    craft_attack,
    eight_bit_levels,
    smallest_flipping_eps,
)
from influence_widgets.analysis.loo import LOOResult, validate_loo
from influence_widgets.core.errors import check_nonnegative, check_positive_int
from influence_widgets.core.progress import report_progress
from influence_widgets.plots import correlation_text
from influence_widgets.widgets.display import png_bytes
from influence_widgets.widgets.inputs import classes_of
from influence_widgets.widgets.protocol import (
    ATTACK_SEARCH,
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
    """A training-set attack on the selected test point (paper's Sec 5.2), shown side by side,
    and a search for the smallest eps that flips it.

    The sliders are the traits below; a run from Python (``run_attack(eps=...)``) sets them to
    the values it uses, so the tab always shows the settings of the result on screen.
    """

    # The Attack tab's slider ranges, [min, max, step]: generous maxima (255 levels lets a poisoned
    # image take any value; 100 points and 300 steps), "step" 0 is auto (eps / 12.5, craft_attack's
    # default). Tabular data: eps and step in units of the training features' typical (median)
    # standard deviation. The smallest-eps search starts at eps max / SEARCH_START_DIVISOR, doubles,
    # bisects SEARCH_BISECTIONS times, and starts no attack after SEARCH_SECONDS.
    IMAGE_LIMITS = {"n_poison": [1, 100, 1], "eps": [0.5, 255, 0.5], "step": [0, 32, 0.05]}
    TABULAR_LIMITS = {"n_poison": [1, 100, 1], "eps": [0.01, 8, 0.01], "step": [0, 1, 0.005]}
    MAX_ITER_LIMITS = [1, 300, 1]
    SEARCH_START_DIVISOR = 64
    SEARCH_BISECTIONS = 3
    SEARCH_SECONDS = 120.0

    attack_n_poison = traitlets.Int(10).tag(sync=True)
    # eps and step: in 8-bit levels for images, in the data's units for other data
    attack_eps = traitlets.Float(32.0).tag(sync=True)
    attack_step = traitlets.Float(0.0).tag(sync=True)  # 0: auto, eps / 12.5 (as craft_attack)
    attack_max_iter = traitlets.Int(100).tag(sync=True)
    # the sliders' [min, max, step] by trait name (n_poison, eps, step, max_iter) and "unit"
    attack_limits = traitlets.Dict().tag(sync=True)
    # why the selected test point cannot be attacked, with what to do; "" when it can
    attack_blocked = traitlets.Unicode("").tag(sync=True)
    attack = traitlets.Dict(IDLE).tag(sync=True)  # a protocol.AttackState

    def _init_attack(self) -> None:
        self._attack_job = BackgroundJob()
        self.attack_result: AttackResult | None = None  # the latest Attack run
        self.eps_search: EpsSearch | None = None  # the latest smallest-eps search
        X = self.influence.train.X
        self._input_range: tuple[float, float] | None = None
        if self.display_data.kind == "image" and X is not None and X.is_floating_point():
            lo, hi = float(X.min()), float(X.max())
            self._input_range = (0.0, 1.0) if lo >= 0 and hi <= 1 else (lo, hi)
            if lo >= 0 and 1 < hi <= 255:
                self._input_range = (0.0, 255.0)
        self._init_attack_sliders(X)
        self.observe(self._attack_selected, names="selected")
        self.on_msg(self._on_attack_message)

    def _init_attack_sliders(self, X) -> None:
        """Ranges and defaults from the data: 8-bit levels for images; for other data, units of
        the typical feature standard deviation s (eps 1 s, range up to 8 s)."""
        if self._input_range is not None:
            limits, unit = self.IMAGE_LIMITS, "8-bit levels"
        else:
            s = 1.0
            if X is not None and X.is_floating_point() and len(X) > 1:
                s = float(X.reshape(len(X), -1).double().std(0).median()) or 1.0
            limits = {k: [round(v * s, 6) for v in r] for k, r in self.TABULAR_LIMITS.items()}
            limits["n_poison"] = self.TABULAR_LIMITS["n_poison"]
            unit = "data units"
            self.attack_eps = round(s, 6)
        n = self.influence.n
        limits = {**limits, "n_poison": [1, min(limits["n_poison"][1], n), 1]}
        self.attack_n_poison = min(self.attack_n_poison, n)
        self.attack_limits = {**limits, "max_iter": self.MAX_ITER_LIMITS, "unit": unit}

    @property
    def attack_running(self) -> bool:
        return self._attack_job.running

    def _attack_units(self, value: float) -> float:
        """A slider value in the data's units: 8-bit levels for images."""
        if self._input_range is None:
            return float(value)
        lo, hi = self._input_range
        return eight_bit_levels(value, data_range=hi - lo)

    def _slider_units(self, value: float) -> float:
        """A value in the data's units as the sliders show it (8-bit levels for images)."""
        return value / self._attack_units(1.0)

    # ----- can the selected point be attacked? ----------------------------------------------
    def _attack_selected(self, change) -> None:
        index = change["new"]
        self.attack_blocked = "" if index is None else (self._attack_problem(index) or "")

    def _attack_problem(self, index: int) -> str | None:
        """Why test point ``index`` cannot be attacked, with what to do; None when it can."""
        X = self.influence.train.X
        if X is None:
            return (
                "The attack needs the training set as (X, y) tensors; this Influence reads a "
                "Dataset: build it with (X, y) to attack."
            )
        if not X.is_floating_point():
            return f"The training inputs are {X.dtype}: an attack moves continuous inputs only."
        if not 0 <= index < len(self._true):
            return None  # the explorer reports a bad index itself
        if not self.labelled:
            return (
                "This explorer was given no test labels: an attack flips a correct prediction, so "
                "it needs the true label. Open the explorer with y_test to attack."
            )
        if self._pred[index] != self._true[index]:
            return (
                f"Test point #{index} is already misclassified (labelled "
                f"{self._label(int(self._true[index]))}, predicted "
                f"{self._label(int(self._pred[index]))}): there is no correct prediction to "
                "flip. Pick a correctly classified test point to attack."
            )
        return None

    def _attack_checks(self, n_poison: int) -> str | None:
        problem = self._cannot_start(self._attack_job)
        if problem is None:
            problem = self._attack_problem(self.selected)
        if problem is None and n_poison > self.influence.n:
            problem = f"n_poison: at most {self.influence.n} (the training set size)"
        return problem

    # ----- one attack -----------------------------------------------------------------------
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
        ``step`` 0 is auto, eps / 12.5 as craft_attack's default. Unset arguments come from the
        tab's sliders, and the sliders are set to the values used. ``wait=True`` blocks and
        returns the :class:`AttackResult`, also kept as ``explorer.attack_result``."""
        n_poison = check_positive_int(
            self.attack_n_poison if n_poison is None else n_poison, "n_poison"
        )
        max_iter = check_positive_int(
            self.attack_max_iter if max_iter is None else max_iter, "max_iter"
        )
        eps = check_nonnegative(self.attack_eps if eps is None else eps, "eps")
        step = check_nonnegative(self.attack_step if step is None else step, "step")
        problem = self._attack_checks(n_poison)
        if problem is None:
            with self.hold_sync():
                self.attack_n_poison, self.attack_eps = n_poison, eps
                self.attack_step, self.attack_max_iter = step, max_iter
        index = self.selected
        started: AttackState = job_started(
            index, f"Perturbing {n_poison} training point(s), retraining after each step..."
        )
        options = {
            "n_poison": n_poison,
            "eps": self._attack_units(eps),
            "step_size": self._attack_units(step) if step > 0 else None,
            "max_iter": max_iter,
        }
        work = (self._attack_job, self._attack_worker, index, options)
        ran = self._launch("attack", problem, started, work, wait)
        return self.attack_result if ran and wait else None

    def cancel_attack(self) -> None:
        """Stop the running attack (or search) after its current step."""
        self._cancel("attack", self._attack_job, "Cancelling after the current step...")

    def _attack_listener(self, max_iter: int, prefix: Callable[[], str] = lambda: ""):
        """A progress listener for the attack's bars, at most ~10 updates a second; its
        messages start with ``prefix()``."""
        last = [0.0]

        def listener(name: str, fraction: float) -> None:
            now = time.perf_counter()
            if now - last[0] < 0.1 and fraction < 1.0:
                return
            last[0] = now
            if name == SELECT_STEP:
                message = f"Choosing the training points to perturb... {fraction:.0%}"
            elif name == "attack":
                message = f"Step {round(fraction * max_iter)} of at most {max_iter}"
            elif name.startswith("Hessian"):
                message = f"Factorising the Hessian of the retrained model... {fraction:.0%}"
            else:
                return
            self.attack = {**self.attack, "progress": fraction, "message": prefix() + message}

        return listener

    def _attack_worker(self, index: int, options: dict, cancel: threading.Event) -> None:
        try:
            with BACKGROUND_WORK, report_progress(self._attack_listener(options["max_iter"])):
                result = craft_attack(
                    self.influence,
                    self.x_test[index : index + 1],
                    self.y_test[index : index + 1],
                    input_range=self._input_range,
                    test_index=index,
                    progress=False,
                    cancel=cancel,
                    **options,
                )
            self.attack_result = result
            what = "Cancelled" if result.cancelled else "Finished"
            message = f"{what} in {result.seconds:.1f} s (test point #{index})."
            self._finish("attack", self._attack_state(index, result, message))
        except Exception as err:  # shown in the tab and logged
            log.exception("InfluenceExplorer attack failed")
            self._finish("attack", job_failed(index, "Attack", err))

    def _attack_state(self, index: int, result: AttackResult, message: str) -> AttackState:
        return {
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
            "stopped": result.stopped,
            "stop_reason": result.stop_reason,
            "n_poison": len(result.poisoned),
            "eps": self._slider_units(result.eps),
            "step": self._slider_units(result.step_size),
            "items": self._attack_items(result),
            "message": message,
        }

    # ----- the smallest eps that flips ------------------------------------------------------
    def find_smallest_eps(self, *, wait: bool = False) -> EpsSearch | None:
        """Search the smallest eps that flips the selected prediction with the tab's number of
        points and iterations (:func:`~influence_widgets.smallest_flipping_eps`: from eps max /
        64, doubling up to the eps slider's maximum, then 3 bisections; no new attack after
        120 s), in the background. The eps slider is then set to the eps found and the tab shows
        the attack there. ``wait=True`` blocks and returns the :class:`EpsSearch`, also kept as
        ``explorer.eps_search``."""
        n_poison = check_positive_int(self.attack_n_poison, "n_poison")
        max_iter = check_positive_int(self.attack_max_iter, "max_iter")
        problem = self._attack_checks(n_poison)
        index = self.selected
        eps_max = self.attack_limits["eps"][1]
        started: AttackState = job_started(index, "Searching the smallest eps that flips...")
        work = (self._attack_job, self._search_worker, index, (n_poison, max_iter, eps_max))
        ran = self._launch("attack", problem, started, work, wait)
        return self.eps_search if ran and wait else None

    def _search_worker(self, index: int, settings: tuple, cancel: threading.Event) -> None:
        n_poison, max_iter, eps_max = settings
        unit = self.attack_limits["unit"]
        done = [0]  # attacks finished
        show = self._attack_listener(max_iter, lambda: f"Searching eps, attack {done[0] + 1}: ")

        def listener(name: str, fraction: float) -> None:
            if name == "eps search":
                done[0] += 1
            else:
                show(name, fraction)

        try:
            with BACKGROUND_WORK, report_progress(listener):
                search = smallest_flipping_eps(
                    self.influence,
                    self.x_test[index : index + 1],
                    self.y_test[index : index + 1],
                    self._attack_units(eps_max),
                    eps_start=self._attack_units(eps_max / self.SEARCH_START_DIVISOR),
                    bisections=self.SEARCH_BISECTIONS,
                    time_budget=self.SEARCH_SECONDS,
                    n_poison=n_poison,
                    max_iter=max_iter,
                    input_range=self._input_range,
                    test_index=index,
                    progress=False,
                    cancel=cancel,
                )
            self.eps_search = search
            self.attack_result = search.result
            summary = self._search_summary(search, n_poison, max_iter, eps_max, unit)
            summary += f" The search took {search.seconds:.0f} s."
            with self.hold_sync():
                if search.eps is not None:
                    self.attack_eps, self.attack_step = self._slider_units(search.eps), 0.0
                state = self._attack_state(index, search.result, summary)
                state["search"] = {
                    "eps": None if search.eps is None else self._slider_units(search.eps),
                    "tried": [[self._slider_units(e), f] for e, f in search.tried],
                    "stopped": search.stopped,
                    "unit": unit,
                }
                self._finish("attack", state)
        except Exception as err:  # shown in the tab and logged
            log.exception("InfluenceExplorer eps search failed")
            self._finish("attack", job_failed(index, "Smallest-eps search", err))

    def _search_summary(
        self, search: EpsSearch, n_poison: int, max_iter: int, eps_max: float, unit: str
    ) -> str:
        tried = len(search.tried)
        if search.eps is not None:
            eps = self._slider_units(search.eps)
            below = search.largest_failure
            not_below = "" if below is None else f"; {self._slider_units(below):.3g} did not"
            return (
                f"Smallest eps that flips: {eps:.3g} {unit} ({tried} attacks tried{not_below}). "
                f"The eps slider is set to it; below, the attack at that eps."
            )
        if search.stopped == "cancelled":
            return f"Search cancelled after {tried} attacks: no eps tried flipped."
        if search.stopped == "time budget":
            largest = self._slider_units(max(e for e, _ in search.tried))
            return (
                f"Search stopped at its time budget ({self.SEARCH_SECONDS:.0f} s): no eps up to "
                f"{largest:.3g} {unit} flipped. Try more training points."
            )
        return (
            f"No eps up to {eps_max:g} {unit} flips with {n_poison} training point(s) and "
            f"{max_iter} iterations: try more training points or iterations."
        )

    def _on_attack_message(self, _widget, content, _buffers) -> None:
        """The search button: {"event": ATTACK_SEARCH} (the explorer handles the others)."""
        if isinstance(content, dict) and content.get("event") == ATTACK_SEARCH:
            try:
                self.find_smallest_eps()
            except Exception as err:  # a bad slider value, say: shown, never a traceback
                self.error = f"{ATTACK_SEARCH}: {err}"
                log.exception("InfluenceExplorer could not handle %s", ATTACK_SEARCH)

    # ----- what the tab shows ---------------------------------------------------------------
    def _probability_rows(self, result: AttackResult) -> list:
        """[class name, before, after] for the classes that matter: top 5 by either."""
        before, after = result.probabilities_before, result.probabilities_after
        order = np.argsort(-np.maximum(before, after))[:5]
        return [[self._label(int(c)), float(before[c]), float(after[c])] for c in order]

    def _attack_items(self, result: AttackResult) -> list[AttackItem]:
        items = []
        labels = classes_of(self.influence.train.take(result.poisoned)[1]).tolist()
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
                item["difference_bound"] = self._slider_units(bound)
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
