"""The explorer's Attack tab: a training-set attack on the selected test point (Koh & Liang
2017, Sec 5.2), driven by I_pert,loss, and a search for the smallest eps that flips it.

The sliders and the state are the explorer's synced traits ``attack_n_poison``, ``attack_eps``,
``attack_step`` (0: auto, shown as the "step: auto" checkbox), ``attack_max_iter``,
``attack_stop_margin``, ``attack_limits``, ``attack_blocked`` and ``attack`` (a
:class:`~influence_widgets.widgets.protocol.AttackState`). A run from Python sets the sliders to
the values it uses, so the tab always shows the settings of the result on screen.

Images keep their valid range ((0, 1) or (0, 255)); a table's poisoned rows keep every feature
inside the range the training set spans, so a positive measurement never turns negative.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import torch

from influence_widgets.analysis.attack import (
    SELECT_STEP,
    AttackResult,
    EpsSearch,
    check_stop_margin,
    craft_attack,
    smallest_flipping_eps,
)
from influence_widgets.core.errors import check_nonnegative, check_positive_int
from influence_widgets.widgets.attack_view import (
    FeatureUnits,
    SliderUnits,
    attack_state,
    search_summary,
)
from influence_widgets.widgets.context import ExplorerContext
from influence_widgets.widgets.jobs import Job
from influence_widgets.widgets.protocol import (
    ATTACK_CANCEL,
    ATTACK_RUN,
    ATTACK_SEARCH,
    IDLE,
    AttackState,
    job_failed,
    job_started,
)

__all__ = ["AttackTab", "feature_ranges", "image_input_range", "tabular_unit"]

log = logging.getLogger("influence_widgets")


def image_input_range(context: ExplorerContext) -> tuple[float, float] | None:
    """The valid range of image inputs ((0, 1), (0, 255) or the data's own); None for data
    that is not a floating-point image (then eps is in the data's units)."""
    X = context.influence.train.X
    if context.display.kind != "image" or X is None or not X.is_floating_point():
        return None
    lo, hi = float(X.min()), float(X.max())
    if lo >= 0 and hi <= 1:
        return (0.0, 1.0)
    return (0.0, 255.0) if lo >= 0 and hi <= 255 else (lo, hi)


def feature_ranges(context: ExplorerContext) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Each input value's (low, high) over the training set, the box a poisoned table row stays
    in; None for images (they have :func:`image_input_range`) and non-float inputs."""
    X = context.influence.train.X
    if context.display.kind == "image" or X is None or not X.is_floating_point():
        return None
    return X.amin(0), X.amax(0)


def tabular_unit(X: torch.Tensor | None) -> str:
    """The tabular sliders' unit: "SD" when the model reads standardised features (every
    feature's training standard deviation within 10% of 1), else "model input units"."""
    if X is not None and X.is_floating_point() and len(X) > 1:
        sd = X.reshape(len(X), -1).double().std(0)
        if bool(((sd - 1).abs() <= 0.1).all()):
            return "SD"
    return "model input units"


def progress_words(name: str, fraction: float, max_iter: int) -> str | None:
    """The status line for the attack's progress bar ``name``, or None for other bars."""
    if name == SELECT_STEP:
        return f"Choosing the training points to perturb... {fraction:.0%}"
    if name == "attack":
        return f"Step {round(fraction * max_iter)} of at most {max_iter}"
    if name.startswith("Hessian"):
        return f"Factorising the Hessian of the retrained model... {fraction:.0%}"
    return None


class AttackTab:
    """An attack on the selected test point, and the smallest-eps search, in the background."""

    # The sliders' ranges, [min, max, step]: generous maxima (255 levels lets a poisoned image take
    # any value; 200 points and 300 steps). The step slider is for a fixed step; auto (eps / 12.5,
    # craft_attack's default) is the trait value 0, a checkbox in the tab. Tabular data: eps and
    # step in units of the training features' typical (median) standard deviation. The stop
    # margin is a lead in probability (0: stop at the first flip). The smallest-eps search starts
    # at eps max / SEARCH_START_DIVISOR, doubles, bisects SEARCH_BISECTIONS times, and starts no
    # attack after SEARCH_SECONDS.
    IMAGE_LIMITS = {"n_poison": [1, 200, 1], "eps": [0.5, 255, 0.5], "step": [0.05, 32, 0.05]}
    TABULAR_LIMITS = {"n_poison": [1, 200, 1], "eps": [0.01, 8, 0.01], "step": [0.005, 1, 0.005]}
    MAX_ITER_LIMITS = [1, 300, 1]
    STOP_MARGIN_LIMITS = [0, 0.9, 0.05]
    SEARCH_START_DIVISOR = 64
    SEARCH_BISECTIONS = 3
    SEARCH_SECONDS = 120.0

    def __init__(self, context: ExplorerContext) -> None:
        self.context = context
        self.view = context.view
        self.job = Job()
        self.result: AttackResult | None = None  # the latest attack
        self.search: EpsSearch | None = None  # the latest smallest-eps search
        self.input_range = image_input_range(context)
        self.bounds = self.input_range or feature_ranges(context)  # craft_attack's input_range
        self.units = SliderUnits(self.input_range)
        self.changes = FeatureUnits.fit(context.influence.train.X, context.display)
        self._set_sliders()
        self.view.observe(self._selected, names="selected")

    @property
    def handlers(self) -> dict[str, Callable[[dict], None]]:
        """The front end's events this tab handles, by name (see protocol.EVENTS)."""
        return {
            ATTACK_RUN: lambda _: self.run(),
            ATTACK_CANCEL: lambda _: self.cancel(),
            ATTACK_SEARCH: lambda _: self.find_smallest_eps(),
        }

    @property
    def running(self) -> bool:
        return self.job.running

    def forget(self) -> None:
        """Clear a finished run's state (the selection moved to another test point)."""
        if not self.running:
            self.view.attack = dict(IDLE)

    def _set_sliders(self) -> None:
        """Ranges and defaults from the data: 8-bit levels for images; for other data, units of
        the typical feature standard deviation s (eps 1 s, range up to 8 s)."""
        view, X = self.view, self.context.influence.train.X
        if self.input_range is not None:
            base, unit = self.IMAGE_LIMITS, "8-bit levels"
            limits = {k: list(r) for k, r in base.items()}
        else:
            base, unit, s = self.TABULAR_LIMITS, tabular_unit(X), 1.0
            if X is not None and X.is_floating_point() and len(X) > 1:
                s = float(X.reshape(len(X), -1).double().std(0).median()) or 1.0
            limits = {k: [round(v * s, 6) for v in r] for k, r in base.items()}
            view.attack_eps = round(s, 6)
        n = self.context.influence.n
        limits["n_poison"] = [1, min(base["n_poison"][1], n), 1]
        view.attack_n_poison = min(view.attack_n_poison, n)
        view.attack_limits = {
            **limits,
            "max_iter": self.MAX_ITER_LIMITS,
            "stop_margin": self.STOP_MARGIN_LIMITS,
            "unit": unit,
            "kind": "image" if self.input_range is not None else "table",
        }

    # ----- can the selected point be attacked? ----------------------------------------------
    def _selected(self, change) -> None:
        index = change["new"]
        self.view.attack_blocked = "" if index is None else (self.problem(index) or "")

    def problem(self, index: int) -> str | None:
        """Why test point ``index`` cannot be attacked, with what to do; None when it can."""
        X, tests = self.context.influence.train.X, self.context.tests
        if X is None:
            return (
                "The attack needs the training set as (X, y) tensors; this Influence reads a "
                "Dataset: build it with (X, y) to attack."
            )
        if not X.is_floating_point():
            return f"The training inputs are {X.dtype}: an attack moves continuous inputs only."
        if not 0 <= index < len(tests):
            return None  # the explorer reports a bad index itself
        if not tests.labelled:
            return (
                "This explorer was given no test labels: an attack flips a correct prediction, so "
                "it needs the true label. Open the explorer with y_test to attack."
            )
        if tests.misclassified(index):
            label = self.context.label
            return (
                f"Test point #{index} is already misclassified (labelled "
                f"{label(int(tests.true[index]))}, predicted {label(int(tests.predicted[index]))}"
                "): there is no correct prediction to flip. Pick a correctly classified test "
                "point to attack."
            )
        return None

    def _checks(self, n_poison: int) -> str | None:
        problem = self.context.cannot_start(self.running)
        if problem is None:
            problem = self.problem(self.context.selected)
        if problem is None and n_poison > self.context.influence.n:
            problem = f"n_poison: at most {self.context.influence.n} (the training set size)"
        return problem

    # ----- one attack -----------------------------------------------------------------------
    def run(
        self,
        n_poison: int | None = None,
        eps: float | None = None,
        step: float | None = None,
        max_iter: int | None = None,
        stop_margin: float | None = None,
        *,
        wait: bool = False,
    ) -> AttackResult | None:
        """Attack the selected test point (see ``InfluenceExplorer.run_attack``)."""
        view = self.view
        n_poison = check_positive_int(
            view.attack_n_poison if n_poison is None else n_poison, "n_poison"
        )
        max_iter = check_positive_int(
            view.attack_max_iter if max_iter is None else max_iter, "max_iter"
        )
        eps = check_nonnegative(view.attack_eps if eps is None else eps, "eps")
        step = check_nonnegative(view.attack_step if step is None else step, "step")
        stop_margin = check_stop_margin(
            view.attack_stop_margin if stop_margin is None else stop_margin
        )
        problem = self._checks(n_poison)
        if problem is None:
            with view.hold_sync():
                view.attack_n_poison, view.attack_eps = n_poison, eps
                view.attack_step, view.attack_max_iter = step, max_iter
                view.attack_stop_margin = stop_margin
        index = self.context.selected
        started: AttackState = job_started(
            index, f"Perturbing {n_poison} training point(s), retraining after each step..."
        )
        options = {
            "n_poison": n_poison,
            "eps": self.units.to_data(eps),
            "step_size": self.units.to_data(step) if step > 0 else None,
            "max_iter": max_iter,
            "stop_margin": stop_margin,
        }
        work = (self.job, self._attack_worker, index, options)
        ran = self.context.jobs.launch("attack", problem, started, work, wait)
        return self.result if ran and wait else None

    def cancel(self) -> None:
        """Stop the running attack (or search) after its current step."""
        self.context.jobs.cancel("attack", self.job, "Cancelling after the current step...")

    def _listener(self, max_iter: int, prefix: Callable[[], str] = lambda: ""):
        """A progress listener for the attack's bars, at most ~10 updates a second; its
        messages start with ``prefix()``."""
        last = [0.0]

        def listener(name: str, fraction: float) -> None:
            now = time.perf_counter()
            message = progress_words(name, fraction, max_iter)
            if message is None or (now - last[0] < 0.1 and fraction < 1.0):
                return
            last[0] = now
            attack = {**self.view.attack, "progress": fraction, "message": prefix() + message}
            self.view.attack = attack

        return listener

    def _attack_worker(self, index: int, options: dict, cancel: threading.Event) -> None:
        jobs = self.context.jobs
        try:
            listener = self._listener(options["max_iter"])
            with jobs.progress(listener, cancel=cancel, throttle=False):
                result = craft_attack(
                    self.context.influence,
                    *self.context.tests.point(index),
                    input_range=self.bounds,
                    test_index=index,
                    progress=False,
                    cancel=cancel,
                    **options,
                )
            self.result = result
            what = "Cancelled" if result.cancelled else "Finished"
            message = f"{what} in {result.seconds:.1f} s (test point #{index})."
            state = attack_state(self.context, index, result, message, self.units, self.changes)
            jobs.finish("attack", state)
        except Exception as err:  # shown in the tab and logged
            log.exception("InfluenceExplorer attack failed")
            jobs.finish("attack", job_failed(index, "Attack", err))

    # ----- the smallest eps that flips ------------------------------------------------------
    def find_smallest_eps(self, *, wait: bool = False) -> EpsSearch | None:
        """Search the smallest eps that flips the selected prediction (see
        ``InfluenceExplorer.find_smallest_eps``)."""
        n_poison = check_positive_int(self.view.attack_n_poison, "n_poison")
        max_iter = check_positive_int(self.view.attack_max_iter, "max_iter")
        stop_margin = check_stop_margin(self.view.attack_stop_margin)
        problem = self._checks(n_poison)
        index = self.context.selected
        eps_max = self.view.attack_limits["eps"][1]
        started: AttackState = job_started(index, "Searching the smallest eps that flips...")
        settings = (n_poison, max_iter, eps_max, self.SEARCH_SECONDS, stop_margin)
        work = (self.job, self._search_worker, index, settings)
        ran = self.context.jobs.launch("attack", problem, started, work, wait)
        return self.search if ran and wait else None

    def _search(self, index: int, settings: tuple, cancel: threading.Event) -> EpsSearch:
        """smallest_flipping_eps on test point ``index``, its progress shown in the tab."""
        n_poison, max_iter, eps_max, budget, stop_margin = settings
        done = [0]  # attacks finished
        show = self._listener(max_iter, lambda: f"Searching eps, attack {done[0] + 1}: ")

        def listener(name: str, fraction: float) -> None:
            if name == "eps search":
                done[0] += 1
            else:
                show(name, fraction)

        with self.context.jobs.progress(listener, cancel=cancel, throttle=False):
            return smallest_flipping_eps(
                self.context.influence,
                *self.context.tests.point(index),
                self.units.to_data(eps_max),
                eps_start=self.units.to_data(eps_max / self.SEARCH_START_DIVISOR),
                bisections=self.SEARCH_BISECTIONS,
                time_budget=budget,
                n_poison=n_poison,
                max_iter=max_iter,
                stop_margin=stop_margin,
                input_range=self.bounds,
                test_index=index,
                progress=False,
                cancel=cancel,
            )

    def _search_worker(self, index: int, settings: tuple, cancel: threading.Event) -> None:
        view, jobs, units = self.view, self.context.jobs, self.units
        unit = view.attack_limits["unit"]
        try:
            search = self._search(index, settings, cancel)
            self.search, self.result = search, search.result
            summary = search_summary(search, settings, unit, units)
            summary += f" The search took {search.seconds:.0f} s."
            with view.hold_sync():
                if search.eps is not None:
                    view.attack_eps, view.attack_step = units.to_slider(search.eps), 0.0
                state = attack_state(
                    self.context, index, search.result, summary, units, self.changes
                )
                state["search"] = {
                    "eps": None if search.eps is None else units.to_slider(search.eps),
                    "tried": [[units.to_slider(e), f] for e, f in search.tried],
                    "stopped": search.stopped,
                    "unit": unit,
                }
                jobs.finish("attack", state)
        except Exception as err:  # shown in the tab and logged
            log.exception("InfluenceExplorer eps search failed")
            jobs.finish("attack", job_failed(index, "Smallest-eps search", err))
