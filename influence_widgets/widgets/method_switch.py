"""The explorer's attribution methods and the switch between them.

``InfluenceExplorer(methods={"influence (CG)": inf, "TRAK x10": trak, ...})`` explains one model's
predictions with several methods on one contract (:mod:`influence_widgets.methods.contract`): the
panel shows one of them at a time (the ``method`` trait), the Compare view two side by side. Every
method scores the same n training points with tau(z_test)_i > 0 when removing z_i would raise the
test loss (helpful), as ``Influence.predicted_removal_effect``.

The first :class:`~influence_widgets.Influence` among them is the explorer's reference: its model
gives the predictions the gallery shows, and the tabs that need a Hessian (Verify's leave-one-out,
Attack, Review) use it whichever method the panel shows. A value may also be a function of no
arguments that returns a method (a method that needs training first, as the demos' TRAK models):
it is built in the background after the reference is fitted, with its progress in the status line,
and checked then. Every other method is fitted in the background too, in the order given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from influence_widgets.analysis.lds import LDSResult
from influence_widgets.core.influence import Influence
from influence_widgets.methods.contract import AttributionMethod, check_method
from influence_widgets.methods.ensemble import InfluenceEnsemble
from influence_widgets.methods.gradient_similarity import GradDot, TracIn
from influence_widgets.methods.trak import TRAK
from influence_widgets.widgets.inputs import classes_of
from influence_widgets.widgets.jobs import JobRunner
from influence_widgets.widgets.test_points import TestPoints

__all__ = [
    "PLAIN_NAME",
    "MethodEntry",
    "MethodSet",
    "check_lds_result",
    "lds_words",
    "score_words",
]

PLAIN_NAME = "influence"  # the one method of ``InfluenceExplorer(influence, ...)``


def score_words(method: AttributionMethod) -> tuple[str, str]:
    """(what a score of ``method`` is, in one sentence for the panel; the bar chart's axis title),
    both "" for an ``Influence`` (the panel's own words: the predicted change of the test loss)."""
    if isinstance(method, Influence):
        return "", ""
    if isinstance(method, TracIn):
        k = len(method.weighted)
        return (
            f"Score = TracIn (Pruthi et al. 2020): the sum over {k} saved checkpoint"
            f"{'s' if k > 1 else ''} of learning rate \u00d7 the dot product of this test "
            "point's and the training point's loss gradients; > 0: the training point's steps "
            "lowered this test loss (helpful).",
            "TracIn score",
        )
    if isinstance(method, GradDot):
        return (
            "Score = Grad-Dot: the dot product of this test point's and the training point's loss "
            "gradients at the trained parameters (no Hessian); > 0: a step on the training point "
            "lowers this test loss (helpful).",
            "Grad-Dot score",
        )
    if isinstance(method, TRAK):
        m = len(method.objectives)
        return (
            f"Score = TRAK (Park et al. 2023): the predicted change of this test point's loss if "
            f"the training point were removed, from randomly projected gradients and a "
            f"Gauss-Newton inverse, averaged over {m} model{'s' if m > 1 else ''}.",
            "TRAK: change of test loss if removed",
        )
    if isinstance(method, InfluenceEnsemble):
        m = len(method.members)
        return (
            f"Score = predicted change of this test point's loss if the training point were "
            f"removed (Koh & Liang 2017), averaged over {m} models' influence functions.",
            "change of test loss if removed (mean)",
        )
    return (
        f"Score of {type(method).__name__}: > 0 when removing the training point would raise "
        "this test point's loss (helpful), as every attribution method here.",
        f"{type(method).__name__} score",
    )


def check_lds_result(value: object, name: str = "result") -> LDSResult:
    """``value`` if it is an :class:`~influence_widgets.LDSResult`, else a TypeError naming
    ``name`` and how to make one."""
    if not isinstance(value, LDSResult):
        raise TypeError(
            f"{name}: expected an iw.LDSResult (iw.lds(scores, data, x_test=..., y_test=..., "
            f"model=...) or result.rescore(scores)), got {type(value).__name__}"
        )
    return value


@dataclass
class MethodEntry:
    """One method of the explorer and how far it is.

    ``method`` is None until a deferred method (``build``) is built; ``state`` one of "waiting",
    "preparing", "ready", "error"; ``message`` what it is doing, or why it failed; ``lds`` an
    LDS given with ``InfluenceExplorer.set_lds`` (over its own test points)."""

    name: str
    method: AttributionMethod | None
    build: Callable[[], object] | None = None
    state: str = "waiting"
    progress: float = 0.0
    message: str = ""
    lds: LDSResult | None = None

    @property
    def is_influence(self) -> bool:
        return isinstance(self.method, Influence)

    def description(self) -> str:
        """What the method computed (``diagnostics.method``) once it is ready, else ""."""
        if self.state != "ready" or self.method is None:
            return ""
        return str(self.method.diagnostics.method)


def _checked_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise TypeError(
            f"methods: keys name the methods in the switch, non-empty strings; got {name!r}"
        )
    return name


class MethodSet:
    """The explorer's methods by name, in the order given, and the reference Influence.

    Args:
        methods: {name: method}, each an attribution method (``iw.Influence``, ``iw.TRAK``, ...)
            or a function of no arguments returning one (built in the background); at least one
            ``iw.Influence`` (the reference, see the module docstring). Errors name ``methods``.
    """

    def __init__(self, methods: Mapping[str, object]) -> None:
        if not isinstance(methods, Mapping):
            raise TypeError(
                "methods: expected a dict {name: method}, e.g. {'influence': inf, 'TRAK': trak}, "
                f"got {type(methods).__name__}"
            )
        if not methods:
            raise ValueError("methods: the dict is empty; pass at least one iw.Influence")
        self.entries: dict[str, MethodEntry] = {}
        for name, value in methods.items():
            name = _checked_name(name)
            if callable(value) and not _offers_contract(value):
                self.entries[name] = MethodEntry(name, None, build=value)
            else:
                method = check_method(value, f"methods[{name!r}]")
                self.entries[name] = MethodEntry(name, method)
        reference = next((e for e in self.entries.values() if e.is_influence), None)
        if reference is None:
            raise ValueError(
                "methods: needs at least one iw.Influence: its model's predictions are the ones "
                "explained, and Verify's leave-one-out, Attack and Review use its Hessian; add "
                "e.g. 'influence': iw.Influence(model, train, l2=...)"
            )
        self.reference_name = reference.name
        self.reference: Influence = reference.method  # type: ignore[assignment]
        for entry in self.entries.values():
            if entry.method is not None and entry is not reference:
                self._check_training_set(entry.name, entry.method)
        # {(method name, test index): LDSResult of that one test point}: the LDS measured in
        # this explorer (Verify's LDS), every ready method rescored against the same retrains
        self.point_lds: dict[tuple[str, int], LDSResult] = {}

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def entry(self, name: object, argument: str = "method") -> MethodEntry:
        """The entry named ``name``; else a ValueError naming ``argument`` and the names."""
        if not isinstance(name, str) or name not in self.entries:
            raise ValueError(
                f"{argument}: {name!r} is not one of the explorer's methods "
                f"({', '.join(self.names)})"
            )
        return self.entries[name]  # type: ignore[index]

    def ready(self, name: str) -> AttributionMethod | None:
        """The method named ``name`` once it is ready to score, else None."""
        entry = self.entries[name]
        return entry.method if entry.state == "ready" else None

    # ----- checks: one model, one training set -----------------------------------------------
    def _check_training_set(self, name: str, method: AttributionMethod) -> None:
        """``method`` scores the reference's n training points with the same labels; else a
        ValueError naming ``methods``."""
        ref = self.reference
        if method.n != ref.n:
            raise ValueError(
                f"methods: {name!r} scores {method.n} training points but {self.reference_name!r} "
                f"{ref.n}; every method must explain the same model trained on the same training "
                "set"
            )
        ours, theirs = ref.train.y, getattr(method.train, "y", None)
        if ours is not None and theirs is not None and ours.shape == theirs.shape:
            if not np.array_equal(classes_of(ours.cpu()), classes_of(theirs.cpu())):
                raise ValueError(
                    f"methods: {name!r} has other training labels than {self.reference_name!r}; "
                    "every method must explain the same model trained on the same training set"
                )

    def check_same_model(self, name: str, method: AttributionMethod, tests: TestPoints) -> None:
        """``method`` explains the model the explorer shows: its predicted classes on the test
        points are the reference model's (``tests.predicted``); else a ValueError naming
        ``methods``."""
        predicted = method.predicted_labels(tests.x).numpy()
        differ = int((predicted != tests.predicted).sum())
        if differ:
            raise ValueError(
                f"methods: {name!r} explains another model: its predicted class differs from "
                f"{self.reference_name!r}'s on {differ} of {len(tests)} test points; build every "
                "method on the same trained model (TRAK and ensembles: that model first)"
            )

    # ----- preparing: build and fit every method but the reference, in the background --------
    def prepare(self, jobs: JobRunner, tests: TestPoints, on_change: Callable[[], None]) -> None:
        """Build (a deferred method), check and fit each method that is not ready, in order,
        showing its progress through ``on_change()``; a failure marks that method "error" with
        the reason and the others go on. Runs in a background thread of the explorer."""
        for entry in list(self.entries.values()):
            if entry.state in ("ready", "error"):
                continue
            self._prepare_one(entry, jobs, tests, on_change)

    def _prepare_one(
        self,
        entry: MethodEntry,
        jobs: JobRunner,
        tests: TestPoints,
        on_change: Callable[[], None],
    ) -> None:
        def show(step: str, fraction: float) -> None:
            entry.progress, entry.message = fraction, f"{step} {fraction:.0%}"
            on_change()

        entry.state, entry.message = "preparing", "starting"
        on_change()
        start = time.perf_counter()
        try:
            with jobs.progress(show):
                if entry.method is None:
                    built = entry.build()  # type: ignore[misc]
                    method = check_method(built, f"methods[{entry.name!r}] (what it returned)")
                    self._check_training_set(entry.name, method)
                    entry.method = method
                if entry.method is not self.reference:
                    self.check_same_model(entry.name, entry.method, tests)
                entry.method.fit()
        except Exception as err:  # shown beside the method in the switch
            entry.state, entry.message = "error", f"{type(err).__name__}: {err}"
            on_change()
            return
        seconds = time.perf_counter() - start
        entry.state, entry.progress = "ready", 1.0
        entry.message = f"ready in {seconds:.1f} s"
        on_change()

    def mark_reference_ready(self) -> None:
        """The reference Influence was fitted by the explorer's precomputation."""
        entry = self.entries[self.reference_name]
        entry.state, entry.progress, entry.message = "ready", 1.0, "ready"

    def mark_reference_failed(self, why: str) -> None:
        entry = self.entries[self.reference_name]
        entry.state, entry.message = "error", why

    # ----- what the front end shows --------------------------------------------------------
    def preparing_text(self) -> str:
        """The status line's part on methods still being built or fitted ("" when none)."""
        busy = [e for e in self.entries.values() if e.state in ("waiting", "preparing")]
        if not busy:
            return ""
        now = busy[0]
        doing = f"{now.name}: {now.message}" if now.state == "preparing" else f"{now.name}"
        more = f" (then {', '.join(e.name for e in busy[1:])})" if len(busy) > 1 else ""
        return f"preparing {doing}{more}; the switch offers each once it is ready"

    def described(self) -> list[dict]:
        """The ``methods`` trait: one dict per method, in order: name, state, progress, message,
        what it computed (``description``), whether it is an Influence (``influence``) or the
        reference, and its given LDS (``lds``, see :func:`lds_words`) or None."""
        return [
            {
                "name": e.name,
                "state": e.state,
                "progress": e.progress,
                "message": e.message,
                "description": e.description(),
                "influence": e.is_influence,
                "reference": e.name == self.reference_name,
                "lds": None if e.lds is None else lds_words(e.lds),
            }
            for e in self.entries.values()
        ]


def lds_words(result: LDSResult) -> dict:
    """An LDS given for a method, as the Compare view shows it beside the method's name: mean and
    standard error over its test points, and its noise floor."""
    t = len(result.per_test)

    def number(x: float) -> float | None:
        return float(x) if np.isfinite(x) else None

    mean, se, floor = number(result.mean), number(result.se), number(result.noise_floor)
    spread = f" \u00b1 {se:.2f}" if se is not None else ""
    return {
        "lds": mean,
        "se": se,
        "noise_floor": floor,
        "n_test": t,
        "n_subsets": result.n_subsets,
        "text": (
            f"LDS {'n/a' if mean is None else f'{mean:.2f}'}{spread} (noise floor "
            f"{'n/a' if floor is None else f'{floor:.2f}'}), mean over {t} test point"
            f"{'s' if t != 1 else ''}, {result.n_subsets} subsets"
        ),
    }


def _offers_contract(value: object) -> bool:
    try:
        check_method(value)
    except TypeError:
        return False
    return True
