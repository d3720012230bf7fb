"""InfluenceExplorer: click a test prediction, see the training points that helped and hurt it.

The composition root of the widget layer. The front end is plain ES modules and CSS (``js/``,
shipped as ``influence_widgets/static/``) run by anywidget; state the views share lives in the
synced traits below. Each tab is an object given one :class:`ExplorerContext` (Influence and the
other attribution methods, test points and predictions, display data, readiness, the job runner):
:class:`InfluenceTab` (what a click shows, by the method shown, and the Compare view),
:class:`VerifyTab`, :class:`AttackTab` and :class:`ReviewTab`; the front end's ``{"event": NAME}``
messages reach them through one dispatch table keyed by ``protocol``'s names.
"""

from __future__ import annotations

import itertools
import logging
import numbers
import os
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import anywidget
import numpy as np
import torch
import traitlets

from influence_widgets.analysis.attack import AttackResult, EpsSearch
from influence_widgets.analysis.lds import LDSResult
from influence_widgets.analysis.loo import LOOResult
from influence_widgets.analysis.mislabel import METHODS
from influence_widgets.core.errors import check_positive_int
from influence_widgets.core.influence import Influence, check_influence
from influence_widgets.core.progress import progress_bar
from influence_widgets.datasets import Dataset
from influence_widgets.distributed import ScoreStore
from influence_widgets.widgets.attack_tab import AttackTab
from influence_widgets.widgets.context import ExplorerContext, Readiness, TestPoints
from influence_widgets.widgets.influence_tab import InfluenceTab
from influence_widgets.widgets.inputs import (
    ExplorerInputs,
    class_probabilities_of,
    classes_of,
    targets_like,
)
from influence_widgets.widgets.jobs import JobRunner
from influence_widgets.widgets.lookahead import PageLookahead
from influence_widgets.widgets.method_switch import PLAIN_NAME, MethodSet, check_lds_result
from influence_widgets.widgets.minimum import curvature_text
from influence_widgets.widgets.precompute import Precomputation, failure_message
from influence_widgets.widgets.protocol import IDLE, VERIFY_MODES
from influence_widgets.widgets.review_retrain import ReviewResult
from influence_widgets.widgets.review_tab import ReviewTab
from influence_widgets.widgets.saved_page import (
    SavedPage,
    SharedRows,
    check_html_path,
    check_test_points,
)
from influence_widgets.widgets.verify_lds import LDS_SUBSETS
from influence_widgets.widgets.verify_tab import VerifyTab

__all__ = ["InfluenceExplorer", "check_score_store", "static_dir", "test_points_of"]

log = logging.getLogger("influence_widgets")


def static_dir() -> Path:
    """The built front-end files: ``influence_widgets/static`` in a wheel, ``js/`` in a checkout."""
    packaged = Path(__file__).resolve().parent.parent / "static"
    if (packaged / "explorer.js").exists():
        return packaged
    return Path(__file__).resolve().parents[2] / "js"


def check_score_store(scores: object, influence: Influence, x_test, y_test) -> None:
    """``scores``: None or a :class:`ScoreStore` written for this Influence and these test
    points (a TypeError or ValueError naming ``scores`` otherwise)."""
    if scores is None:
        return
    if not isinstance(scores, ScoreStore):
        raise TypeError(
            f"scores: expected an iw.ScoreStore (iw.ScoreStore(path)), got {type(scores).__name__}"
        )
    scores.check_matches(influence, x_test, y_test)


def test_points_of(
    influence: Influence, probabilities: torch.Tensor, x_test: torch.Tensor, y_test
) -> TestPoints:
    """The test points with the model's predictions at theta_hat (``probabilities``, (T, C)).
    Without labels (``y_test`` None) every point is explained for its predicted class: y =
    y_hat in the training labels' form (one-hot rows where they are, as for mse), none
    misclassified. Labels of several values per point are read as their argmax class."""
    confidence, predicted = (t.numpy() for t in probabilities.max(1))
    predicted = predicted.astype(np.int64)
    labelled = y_test is not None
    if not labelled:
        train = influence.train  # a Dataset's first item shows the labels' form
        like = train.y if train.y is not None else train.take([0])[1]
        y_test = targets_like(torch.from_numpy(predicted), like).cpu()
    return TestPoints(x_test, y_test, classes_of(y_test), predicted, confidence, labelled)


def methods_of(influence: object, methods: Mapping[str, object] | None) -> MethodSet:
    """The explorer's methods: ``influence`` alone (the plain form, one method named
    "influence") or the dict ``methods``; a TypeError naming the argument otherwise."""
    if methods is None:
        if isinstance(influence, Mapping):
            raise TypeError(
                "influence: got a dict; pass several methods as methods={...}, e.g. "
                "InfluenceExplorer(methods={'influence': inf, 'TRAK': trak}, data=data)"
            )
        return MethodSet({PLAIN_NAME: check_influence(influence)})
    if influence is not None:
        raise TypeError(
            "methods: pass the methods alone, with the Influence among them, not beside "
            "influence: InfluenceExplorer(methods={'influence': inf, 'TRAK': trak}, data=data)"
        )
    return MethodSet(methods)


def n_classes_of(influence: Influence, tests: TestPoints, n_outputs: int) -> int:
    """Classes the model tells apart (``n_outputs`` probabilities) or the labels use, whichever
    is more."""
    labels = [tests.true]
    if influence.train.y is not None:
        labels.append(classes_of(influence.train.y))
    largest = max((int(y.max()) for y in labels if y.size), default=-1)
    return max(n_outputs, largest + 1, 2)


class InfluenceExplorer(anywidget.AnyWidget):
    """An inline explorer of influence for one model.

    Tabs: Influence (the selected test point's most helpful and harmful training points, by the
    method shown; with several methods a switch and a Compare view of two side by side),
    Verify (leave-one-out retraining, or the point's linear datamodeling score), Attack (a training-set attack) and Review (training points
    ranked for a label check, fixes, and a retrain with them).

    Args:
        influence: an :class:`~influence_widgets.Influence` (fitted here, in the background,
            if it is not yet); or None with ``methods``.
        data: an ``iw.datasets`` Dataset; or None and the keyword arguments below.
        methods: instead of ``influence``, several attribution methods explaining the same
            model: ``{name: method}``, e.g. ``{"influence (CG)": inf, "TRAK x10": trak}``, each
            an ``iw.Influence``, ``iw.GradDot``, ``iw.TracIn``, ``iw.TRAK``,
            ``iw.InfluenceEnsemble`` (or another object on their contract), or a function of no
            arguments returning one (built in the background, e.g. when models must be trained
            first). At least one ``iw.Influence``: the first is the reference, whose model's
            predictions are shown and whose Hessian Verify's leave-one-out, Attack and Review
            use, whichever method is shown. Every method must score the same n training points
            (same labels) and predict the same classes on the test points; else a ValueError
            naming ``methods``. The others are fitted in the background after the reference,
            in order; the switch (the ``method`` trait) offers each once it is ready.
        x_test, y_test: the test points the gallery shows (from ``data`` when given), one row
            each: x_test finite, each point of a training input's shape (integer values for
            floating-point training inputs are cast to their dtype); y_test class indices, or
            one-hot rows (as ``loss="mse"`` takes them) read as their argmax class. A pandas
            DataFrame x_test names the features by its columns, and a pandas categorical y_test
            with named categories the classes (its codes are the labels), as ``%influence``
            does; ``feature_names`` and ``class_names`` take precedence.
            ``y_test=None`` (and no labels in ``data``): each point is explained for its
            predicted class y_hat = argmax_c p(c | x, theta_hat), the only label there is.
        kind: "image", "tabular" or "text" (from ``data`` when given).
        train_display, test_display: what to show of each point: images (n, H, W[, C]), rows
            (n, d) or strings; default the inputs themselves (reshaped for a Dataset's images).
        class_names: a list of one distinct name per class (default "0", "1", ...): as many as
            the model has outputs (one output: two classes), or more if the labels go higher.
        feature_names: a list of column names for tabular data (one per input value otherwise).
        k: how many helpful and how many harmful training points to show.
        page_size: test items per gallery page.
        scores: an :class:`~influence_widgets.ScoreStore` written by
            ``iw.score_distributed(influence, x_test, y_test, store=path)`` for these test points:
            a click then reads its row from the store instead of solving (a training set of
            10^6 points is a lookup); Verify, Attack and Review still use ``influence``. A store
            scored by another model, training set, loss, l2, damping, Hessian, solver or
            ``params`` is refused, naming what differs (:meth:`~influence_widgets.ScoreStore.check_matches`).
        fit_in_background: fit in a thread (the notebook stays free) or before returning.
        lookahead: when the first test point takes >= 0.5 s to score (a large network), score
            the other test points of the visible page in the background, so that a click on
            one of them is a lookup (the status line counts them); False keeps the CPU free.
            Each method keeps its own: switching back to a method finds its page scored.
    """

    _esm = static_dir() / "explorer.js"
    _css = static_dir() / "explorer.css"
    # Every explorer of this kernel by its number (1, 2, ... in the order they were opened), as
    # long as it exists: the code an explorer shows finds it so (``opened``).
    _opened: ClassVar[weakref.WeakValueDictionary[int, InfluenceExplorer]] = (
        weakref.WeakValueDictionary()
    )
    _numbers: ClassVar[Iterator[int]] = itertools.count(1)

    selected = traitlets.Any(None, allow_none=True).tag(sync=True)  # checked: _valid_selected
    k = traitlets.Int(8).tag(sync=True)
    kind = traitlets.Unicode("image").tag(sync=True)
    class_names = traitlets.List(traitlets.Unicode()).tag(sync=True)
    page = traitlets.Int(0).tag(sync=True)
    page_size = traitlets.Int(40).tag(sync=True)
    n_pages = traitlets.Int(1).tag(sync=True)
    n_shown = traitlets.Int(0).tag(sync=True)
    class_filter = traitlets.Int(-1).tag(sync=True)
    misclassified_only = traitlets.Bool(False).tag(sync=True)
    # False when no test labels were given: every point is explained for its predicted class
    labelled = traitlets.Bool(True).tag(sync=True)
    gallery = traitlets.List().tag(sync=True)
    panel = traitlets.Dict().tag(sync=True)  # a protocol.Panel, {} before the first selection
    status = traitlets.Unicode("starting").tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    notice = traitlets.Unicode("").tag(sync=True)  # a warning about the scores, with what to do
    compute_ms = traitlets.Float(0.0).tag(sync=True)
    progress = traitlets.Float(0.0).tag(sync=True)  # of the current precomputation step
    tab = traitlets.Enum(("influence", "verify", "attack", "review"), "influence").tag(sync=True)
    # Verify (VerifyTab): "loo" leave-one-out or "lds" the linear datamodeling score
    verify_mode = traitlets.Enum(VERIFY_MODES, "loo").tag(sync=True)
    verify_n_remove = traitlets.Int(20).tag(sync=True)
    verify_subsets = traitlets.Int(LDS_SUBSETS).tag(sync=True)  # checked when a run starts
    verify = traitlets.Dict(IDLE).tag(sync=True)  # a protocol.VerifyState or LDSState ("kind")
    verify_plot = traitlets.Bytes(b"").tag(sync=True)  # PNG of the check's scatter
    # Attack (AttackTab): eps and step in 8-bit levels for images, in the data's units otherwise
    attack_n_poison = traitlets.Int(10).tag(sync=True)
    attack_eps = traitlets.Float(32.0).tag(sync=True)
    attack_step = traitlets.Float(0.0).tag(sync=True)  # 0: auto, eps / 12.5 (as craft_attack)
    attack_max_iter = traitlets.Int(100).tag(sync=True)
    # go on after the flip until the new class leads by this probability (0: the first flip)
    attack_stop_margin = traitlets.Float(0.0).tag(sync=True)
    # the sliders' [min, max, step] by trait name (n_poison, eps, step, max_iter) and "unit"
    attack_limits = traitlets.Dict().tag(sync=True)
    # why the selected test point cannot be attacked, with what to do; "" when it can
    attack_blocked = traitlets.Unicode("").tag(sync=True)
    attack = traitlets.Dict(IDLE).tag(sync=True)  # a protocol.AttackState
    # Review (ReviewTab)
    review_method = traitlets.Enum(METHODS, "self_influence").tag(sync=True)
    review_page = traitlets.Int(0).tag(sync=True)
    review = traitlets.Dict(IDLE).tag(sync=True)  # a protocol.ReviewState: the ranking shown
    review_retrain = traitlets.Dict(IDLE).tag(sync=True)  # a protocol.ReviewRetrainState
    # The attribution methods (method_switch): the one the panel shows, and each one's state
    method = traitlets.Unicode(PLAIN_NAME).tag(sync=True)  # checked: _valid_method
    methods = traitlets.List().tag(sync=True)  # protocol.MethodInfo dicts, in order
    # The Influence tab's view: "panel" (the method shown) or "compare" (two side by side)
    influence_view = traitlets.Enum(("panel", "compare"), "panel").tag(sync=True)
    compare_pair = traitlets.List(traitlets.Unicode()).tag(sync=True)  # left and right names
    compare = traitlets.Dict().tag(sync=True)  # a protocol.CompareState

    def __init__(
        self,
        influence: Influence | None = None,
        data: Dataset | None = None,
        *,
        methods: Mapping[str, object] | None = None,
        x_test=None,
        y_test=None,
        kind: str | None = None,
        train_display: Sequence | None = None,
        test_display: Sequence | None = None,
        class_names: Sequence[str] | None = None,
        feature_names: Sequence[str] | None = None,
        k: int = 8,
        page_size: int = 40,
        scores: ScoreStore | None = None,
        fit_in_background: bool = True,
        lookahead: bool = True,
    ) -> None:
        method_set = methods_of(influence, methods)
        influence = method_set.reference
        k, page_size = check_positive_int(k, "k"), check_positive_int(page_size, "page_size")
        if not isinstance(lookahead, bool):
            raise TypeError(f"lookahead: expected True or False, got {lookahead!r}")
        inputs = (
            ExplorerInputs(
                x_test, y_test, kind, train_display, test_display, class_names, feature_names
            )
            .with_defaults_from(data)
            .with_names_from_pandas()
        )
        x_test, y_test = inputs.test_points(influence)
        check_score_store(scores, influence, x_test, y_test)
        probabilities = class_probabilities_of(influence, x_test)
        tests = test_points_of(influence, probabilities, x_test, y_test)
        for name, entry in method_set.entries.items():
            if entry.method is not None and entry.method is not influence:
                method_set.check_same_model(name, entry.method, tests)
        display = inputs.display(influence, n_classes_of(influence, tests, probabilities.shape[1]))
        super().__init__(
            k=k,
            kind=display.kind,
            class_names=display.class_names,
            page_size=page_size,
            labelled=tests.labelled,
            method=method_set.reference_name,
            methods=method_set.described(),
            compare_pair=method_set.names[:2] if len(method_set) > 1 else [],
        )
        self.influence, self.scores, self.display_data = influence, scores, display
        self.number = next(InfluenceExplorer._numbers)
        InfluenceExplorer._opened[self.number] = self
        self.context = ExplorerContext(
            self, influence, tests, display, Readiness(), JobRunner(self), self.number, method_set
        )
        self._compose(scores, lookahead)
        self._callbacks: list[Callable[[int], None]] = []
        self._refresh_gallery()
        self.observe(self._on_selected, names="selected")
        self.observe(
            lambda _: self._refresh_gallery(), names=["page", "class_filter", "misclassified_only"]
        )
        self.observe(lambda _: self._on_new_k(), names="k")
        self.observe(self._on_method, names="method")
        self.observe(lambda _: self._refresh_compare(), names=["influence_view", "compare_pair"])
        self.on_msg(lambda _widget, content, _buffers: self.handle_event(content))
        if fit_in_background:
            self.context.jobs.spawn(self.precomputation.run)
        else:
            self.precomputation.run()

    def _compose(self, scores: ScoreStore | None, lookahead: bool) -> None:
        """The tabs, each given the one context, and the dispatch table of their events."""
        context = self.context
        self.influence_tab = InfluenceTab(context, scores, lookahead)
        self.verify_tab = VerifyTab(context)
        self.verify_tab.on_lds = self._refresh_compare
        self.attack_tab = AttackTab(context)
        self.review_tab = ReviewTab(context)
        store = f"; clicks read from {scores!r}" if scores is not None else ""
        methods = context.methods
        subject = f"{methods.reference_name} " if len(methods) > 1 else ""
        self.precomputation = Precomputation(
            context, self._on_fitted, self.describe_failure, store, subject
        )
        # {event: (handler, where a bad value shows)}: the Verify tab shows a bad setting, the
        # Review tab a bad fix, in itself; None: in the explorer's error line
        self.dispatch: dict[str, tuple[Callable[[dict], None], Callable[[str], None] | None]] = {
            **{e: (h, self.verify_tab.show_problem) for e, h in self.verify_tab.handlers.items()},
            **{e: (h, None) for e, h in self.attack_tab.handlers.items()},
            **{e: (h, self.review_tab.show_problem) for e, h in self.review_tab.handlers.items()},
        }

    # ----- what the explorer shows ----------------------------------------------------------
    @property
    def test_points(self) -> TestPoints:
        """The test points, their labels and the model's predictions and confidences."""
        return self.context.tests

    @property
    def x_test(self) -> torch.Tensor:
        return self.context.tests.x

    @property
    def y_test(self) -> torch.Tensor:
        """The labels the scores are for (the predicted classes when none were given)."""
        return self.context.tests.y

    @property
    def lookahead(self) -> PageLookahead | None:
        """The page lookahead (None with ``lookahead=False`` or a score store)."""
        return self.influence_tab.lookahead

    def label(self, c: int) -> str:
        """Class index ``c`` as the explorer names it."""
        return self.context.label(c)

    def explain(self, index: int) -> str:
        """What the helpful and harmful points of test point ``index`` mean (the panel's text)."""
        return self.influence_tab.explain(index)

    def describe_failure(self, err: Exception) -> str:
        """What the widget says when precomputation raised ``err`` (a subclass may reword it)."""
        return failure_message(err)

    @traitlets.validate("selected")
    def _valid_selected(self, proposal) -> int | None:
        """``selected``: None or an integer (numpy integers too, bools not) test index."""
        value = proposal["value"]
        if value is None:
            return None
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
            raise traitlets.TraitError(
                f"selected: expected a test index (an int) or None, got {value!r} "
                f"({type(value).__name__})"
            )
        return int(value)

    @traitlets.validate("method")
    def _valid_method(self, proposal) -> str:
        """``method``: the name of one of the explorer's methods that is ready (or the
        reference, whose clicks wait for precomputation)."""
        value = proposal["value"]
        if "context" not in self.__dict__:  # set by the constructor, before the context
            return value
        methods = self.context.methods
        try:
            entry = methods.entry(value)
        except ValueError as err:
            raise traitlets.TraitError(str(err)) from err
        if entry.state != "ready" and value != methods.reference_name:
            raise traitlets.TraitError(
                f"method: {value!r} is not ready yet ({entry.state}: {entry.message}); the "
                "switch offers it once it is"
            )
        return value

    @traitlets.validate("compare_pair")
    def _valid_compare_pair(self, proposal) -> list[str]:
        """``compare_pair``: two names of the explorer's methods (left, right)."""
        value = list(proposal["value"])
        if "context" not in self.__dict__ or not value:
            return value
        names = self.context.methods.names
        if len(value) != 2 or any(v not in names for v in value):
            raise traitlets.TraitError(
                f"compare_pair: expected two of the explorer's methods ({', '.join(names)}), "
                f"got {value!r}"
            )
        return value

    # ----- the gallery ----------------------------------------------------------------------
    def _filtered(self) -> np.ndarray:
        tests = self.context.tests
        keep = np.ones(len(tests), dtype=bool)
        if self.class_filter >= 0:
            keep &= tests.true == self.class_filter
        if self.misclassified_only:
            keep &= tests.predicted != tests.true
        return np.nonzero(keep)[0]

    def _gallery_item(self, i: int) -> dict:
        tests, label = self.context.tests, self.context.label
        return {
            "index": i,
            "label": label(int(tests.true[i])),
            "pred": label(int(tests.predicted[i])),
            "confidence": float(tests.confidence[i]),
            "wrong": tests.misclassified(i),
            **self.display_data.item("test", i),
        }

    def _refresh_gallery(self) -> None:
        idx = self._filtered()
        n_pages = max(1, -(-len(idx) // self.page_size))
        page = min(max(self.page, 0), n_pages - 1)
        shown = idx[page * self.page_size : (page + 1) * self.page_size]
        items = [self._gallery_item(int(i)) for i in shown]
        with self.hold_sync():
            self.n_pages, self.n_shown = n_pages, len(idx)
            if page != self.page:
                self.page = page
            self.gallery = items
        self._follow_page()

    def _follow_page(self) -> None:
        """Have the visible page scored ahead by the method shown, once clicks can be served
        (after the fit)."""
        if self.lookahead is not None and self.context.readiness.fitted:
            self.lookahead.follow([item["index"] for item in self.gallery])

    # ----- selection ------------------------------------------------------------------------
    def on_select(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(test_index)`` after each selection's results are ready."""
        if not callable(callback):
            raise TypeError(f"callback: expected a callable, got {type(callback).__name__}")
        self._callbacks.append(callback)

    def _on_selected(self, change) -> None:
        index, readiness = change["new"], self.context.readiness
        self.verify_tab.forget()  # finished runs belong to the previous test point
        self.attack_tab.forget()
        if index is None:
            self.panel = {}
            return
        if not 0 <= index < len(self.context.tests):
            n = len(self.context.tests)
            self.error = f"selected: {index!r} is not a test index in [0, {n - 1}]"
            log.error(self.error)
            return
        with readiness.lock:
            waiting = not readiness.fitted and readiness.failure is None
            if waiting:
                readiness.pending = index  # the latest click wins once precomputation is done
                self.message = f"Test point {index} queued until precomputation finishes"
        if waiting:
            return
        if readiness.failure is not None:
            self.precomputation.show_failure(index)
            return
        self._compute(index)

    def _on_new_k(self) -> None:
        for lookahead in self.influence_tab.lookaheads.values():
            lookahead.forget()  # the top-k lists of another k
        if self.selected is not None and self.context.readiness.fitted:
            self._compute(self.selected)

    def _on_fitted(self, pending: int | None) -> None:
        """Precomputation is done: serve a click queued meanwhile, score the page ahead, and
        prepare the other methods in the background."""
        methods = self.context.methods
        methods.mark_reference_ready()
        self.methods = methods.described()
        self._show_status()
        if pending is not None and pending == self.selected:
            self._compute(pending)
        self._follow_page()
        if any(e.state != "ready" for e in methods.entries.values()):
            self.context.jobs.spawn(self._prepare_methods)

    def _prepare_methods(self) -> None:
        """Build, check and fit the methods but the reference (background thread)."""
        methods = self.context.methods
        methods.prepare(self.context.jobs, self.context.tests, self._on_methods_changed)

    def _on_methods_changed(self) -> None:
        """A method's preparation moved on: the switch, the status line, and the Compare view
        once one of its two methods is ready."""
        was_ready = {m["name"] for m in self.methods if m["state"] == "ready"}
        self.methods = self.context.methods.described()
        self._show_status()
        now_ready = {m["name"] for m in self.methods if m["state"] == "ready"}
        if (now_ready - was_ready) & set(self.compare_pair):
            self._refresh_compare()

    def status_text(self) -> str:
        """The status line once precomputation is done: the Ready line of the reference and,
        with several methods, the method the panel shows and those still being prepared."""
        ready = self.precomputation.ready_message
        methods = self.context.methods
        if len(methods) == 1:
            return ready
        preparing = methods.preparing_text()
        return f"{ready}; the panel shows {self.method}" + (f"; {preparing}" if preparing else "")

    def _show_status(self) -> None:
        if self.status != "ready":
            return
        self.influence_tab.ready_message = self.status_text()
        self.message = self.influence_tab.ready_message

    def _on_method(self, change) -> None:
        """The switch shows another method: its panel (from its page cache when scored ahead),
        its LDS in Verify, the status line."""
        old = self.influence_tab.lookaheads.get(change["old"])
        if old is not None:
            old.follow([])  # its cache stays: switching back finds the page scored
        self._show_status()
        self.verify_tab.show_method(change["new"])
        self._follow_page()
        if self.selected is not None and self.context.readiness.fitted:
            self._compute(self.selected)

    def _refresh_compare(self) -> None:
        """The Compare view of the selected test point (``compare``), while it is on screen."""
        if self.influence_view != "compare" or len(self.context.methods) < 2:
            return
        index = self.selected
        if index is None or not self.context.readiness.fitted:
            self.compare = {}
            return
        with self.influence_tab.lock:
            try:
                self.compare = self.influence_tab.compare(index, list(self.compare_pair))
            except Exception as err:  # shown in the widget and logged
                self.error = f"Could not compare the methods on test point {index}: {err}"
                log.exception("InfluenceExplorer compare failed")

    def set_lds(self, name: str, result: LDSResult) -> None:
        """Show ``result``, an LDS of method ``name``'s scores (``iw.lds`` or
        ``LDSResult.rescore``, over its own test points), beside the method's name in the
        Compare view: its mean, standard error, noise floor and number of test points. Replaces
        an LDS given before for that method; Verify's LDS of the selected point shows too."""
        entry = self.context.methods.entry(name, "name")
        entry.lds = check_lds_result(result)
        self.methods = self.context.methods.described()
        self._refresh_compare()

    def _compute(self, index: int) -> None:
        with self.influence_tab.lock:
            try:
                start = time.perf_counter()
                panel = self.influence_tab.panel(index)
                self.compute_ms = (time.perf_counter() - start) * 1000
                self.error = ""
                self.panel = panel
            except Exception as err:  # shown in the widget and logged
                self.error = f"Could not compute influence for test point {index}: {err}"
                log.exception("InfluenceExplorer selection failed")
                return
        self._refresh_compare()
        for callback in self._callbacks:
            try:
                callback(index)
            except Exception:  # a user's callback must not break the widget
                log.exception("on_select callback raised")

    # ----- messages from the front end -----------------------------------------------------
    def handle_event(self, content: object) -> None:
        """A message of the front end, ``{"event": NAME, ...}`` with NAME one of
        ``protocol.EVENTS`` or ``protocol.FIX_EVENTS``: handed to its tab. A bad value is shown
        in the widget, never raised (the front end cannot catch)."""
        event = content.get("event") if isinstance(content, dict) else None
        if event not in self.dispatch:
            return
        handler, show_bad_value = self.dispatch[event]
        try:
            handler(content)
        except (TypeError, ValueError) as err:
            if show_bad_value is None:
                self.error = f"{event}: {err}"
            else:
                show_bad_value(str(err))
        except Exception as err:  # shown, never a traceback
            self.error = f"{event}: {err}"
            log.exception("InfluenceExplorer could not handle %s", event)

    # ----- Verify: leave-one-out retraining (VerifyTab) ------------------------------------
    def run_verify(self, n_remove: int | None = None, *, wait: bool = False) -> LOOResult | None:
        """Check the selected test point against leave-one-out retraining, in the background.

        Runs :func:`~influence_widgets.validate_loo` (the ``n_remove`` training points of largest
        |influence|, default ``verify_n_remove``) and shows the scatter and R in the Verify tab
        (switched to its leave-one-out check). With ``wait=True`` blocks and returns the :class:`LOOResult`; it is also kept as
        ``explorer.loo_result``.
        """
        return self.verify_tab.run(n_remove, wait=wait)

    def run_lds(self, subsets: int | None = None, *, wait: bool = False) -> LDSResult | None:
        """The selected test point's linear datamodeling score LDS(z) with its noise floor, in
        the background (the Verify tab's "LDS" check).

        Runs :func:`~influence_widgets.lds` on that one point: ``subsets`` random subsets of
        half the training set (default ``verify_subsets``, at least 3 and at most 1000), each
        retrained from scratch twice (the second run gives the noise floor), and shows
        "LDS = ... (noise floor ..., m subsets)", one sentence on what it means and the scatter
        of the retrained models' output against the scores' prediction. The tab switches to
        "LDS" and its box to ``subsets``. With ``wait=True`` blocks and returns the
        :class:`LDSResult` (cancelled: the subsets done), also kept as ``explorer.lds_result``;
        its only test point, column 0, is the selected one (``explorer.verify["test_index"]``).
        One Verify check runs at a time: while one runs this is refused with a message
        (``wait=True``: a RuntimeError). Cancel with :meth:`cancel_verify`. A run goes on from
        the test point's earlier LDS run (of any method: the retrains do not depend on the
        scores) with the most subsets, up to ``subsets``, cancelled or not: only the subsets
        it lacks are retrained (``iw.lds(..., resume=...)``), so Run after Cancel continues
        and a larger ``subsets`` adds to a finished run.
        """
        return self.verify_tab.run_lds(subsets, wait=wait)

    def cancel_verify(self) -> None:
        """Stop the running check: a leave-one-out retrain in progress is abandoned within about
        a second (at its next function evaluation), an LDS run stops once the retrain in
        progress ends; what was done so far is shown."""
        self.verify_tab.cancel()

    @property
    def verify_running(self) -> bool:
        """Whether a Verify check (leave-one-out or LDS) is running."""
        return self.verify_tab.running

    @property
    def loo_result(self) -> LOOResult | None:
        """The latest leave-one-out run's :class:`LOOResult` (None before one)."""
        return self.verify_tab.result

    @property
    def lds_result(self) -> LDSResult | None:
        """The latest LDS run's :class:`LDSResult` (None before one); its one test point is the
        one selected when it ran."""
        return self.verify_tab.lds_result

    # ----- Attack: a training-set attack (AttackTab) ---------------------------------------
    def run_attack(
        self,
        n_poison: int | None = None,
        eps: float | None = None,
        step: float | None = None,
        max_iter: int | None = None,
        stop_margin: float | None = None,
        *,
        wait: bool = False,
    ) -> AttackResult | None:
        """Attack the selected test point with :func:`~influence_widgets.craft_attack`, in the
        background. ``eps`` and ``step`` are 8-bit levels for images (the model's input units
        otherwise, each feature kept inside its training range); ``step`` 0 is auto, eps / 12.5
        as craft_attack's default; ``stop_margin`` as craft_attack's (0.2: go on until the new
        class leads by 20 percentage points). Unset arguments come from the tab's sliders, and
        the sliders are set to the values used. ``wait=True`` blocks and returns the
        :class:`AttackResult`, also kept as ``explorer.attack_result``."""
        return self.attack_tab.run(n_poison, eps, step, max_iter, stop_margin, wait=wait)

    def cancel_attack(self) -> None:
        """Stop the running attack (or search) after its current step."""
        self.attack_tab.cancel()

    def find_smallest_eps(self, *, wait: bool = False) -> EpsSearch | None:
        """Search the smallest eps that flips the selected prediction with the tab's number of
        points and iterations (:func:`~influence_widgets.smallest_flipping_eps`: from eps max /
        64, doubling up to the eps slider's maximum, then 3 bisections; no new attack after
        120 s), in the background. The eps slider is then set to the eps found and the tab shows
        the attack there. ``wait=True`` blocks and returns the :class:`EpsSearch`, also kept as
        ``explorer.eps_search``."""
        return self.attack_tab.find_smallest_eps(wait=wait)

    @property
    def attack_running(self) -> bool:
        return self.attack_tab.running

    @property
    def attack_result(self) -> AttackResult | None:
        """The latest attack's :class:`AttackResult` (the search's, after a search)."""
        return self.attack_tab.result

    @property
    def eps_search(self) -> EpsSearch | None:
        """The latest smallest-eps search's :class:`EpsSearch`."""
        return self.attack_tab.search

    # ----- Review: ranked training points, fixes, retrain (ReviewTab) -----------------------
    @property
    def review_fixes(self) -> dict[int, int | None]:
        """The proposed fixes: {training index: new label (class index), or None = remove}."""
        return self.review_tab.fixes

    def relabel(self, i: int, label: int) -> None:
        """Propose class index ``label`` as training point ``i``'s label (kept here; the user's
        data is never written). Replaces an earlier fix of ``i``."""
        self.review_tab.relabel(i, label)

    def mark_for_removal(self, i: int) -> None:
        """Propose removing training point ``i`` from the training set (replaces a new label)."""
        self.review_tab.mark_for_removal(i)

    def clear_fix(self, i: int) -> None:
        """Drop the fix proposed for training point ``i`` (nothing happens if there is none)."""
        self.review_tab.clear_fix(i)

    def clear_fixes(self) -> None:
        """Drop every proposed fix."""
        self.review_tab.clear_fixes()

    def fixed_dataset(self) -> tuple[torch.Tensor, torch.Tensor]:
        """New tensors (X, y): the training set with the proposed labels and without the points
        marked for removal. The user's tensors, model and Dataset are never written."""
        return self.review_tab.fixed_dataset()

    def retrain_with_fixes(self, *, wait: bool = False) -> ReviewResult | None:
        """Retrain a copy of the model on :meth:`fixed_dataset`, in the background: ``iw.train``
        warm-started from theta_hat, with the Influence's loss, parameters and L2, so the result
        is the minimum of R on the fixed data. The tab then shows the test accuracy and loss
        before -> after and how the selected test point's prediction changed. ``wait=True``
        blocks and returns this run's :class:`ReviewResult`, or None when the run is cancelled
        (:meth:`cancel_retrain`, from another thread or the tab: a cancelled run keeps nothing);
        a failed run raises a RuntimeError. ``explorer.review_result`` keeps the result of the
        latest run that finished. The explorer's influence scores stay those of the original
        model."""
        return self.review_tab.retrain_with_fixes(wait=wait)

    def cancel_retrain(self) -> None:
        """Stop the running retrain at its next function evaluation; nothing is kept."""
        self.review_tab.cancel_retrain()

    @property
    def retrain_running(self) -> bool:
        """Whether a "Retrain with fixes" is running."""
        return self.review_tab.retrain.job.running

    @property
    def review_result(self) -> ReviewResult | None:
        """The latest finished "Retrain with fixes"'s :class:`ReviewResult`."""
        return self.review_tab.retrain.result

    def explore_retrained(self) -> InfluenceExplorer:
        """A new explorer on the model the latest "Retrain with fixes" trained
        (``review_result.model``) and the training data it was trained on (the training set with
        that run's fixes, ``review_result.fixes``), with this explorer's test points, class and
        feature names, displays, ``k`` and ``page_size``. Its Influence is this one's rebuilt on
        the retrained model (same loss, L2, damping, Hessian, solver and ``params``); training
        point r of the new explorer is the r-th point the fixes keep. Raises a RuntimeError
        before a retrain has finished."""
        result = self.review_result
        if result is None:
            raise RuntimeError(
                "explore_retrained: no retrain has finished yet; propose fixes in the Review "
                "tab (or relabel / mark_for_removal) and run retrain_with_fixes() first"
            )
        kept = self.review_tab.kept(result.fixes).numpy()
        display, tests = self.display_data, self.context.tests
        train = display.train
        shown = train[kept] if isinstance(train, np.ndarray) else [train[i] for i in kept]
        return type(self)(
            self.influence.rebuild(result.model, self.review_tab.fixed_dataset(result.fixes)),
            x_test=tests.x,
            y_test=tests.y if tests.labelled else None,
            kind=display.kind,
            train_display=shown,
            test_display=display.test,
            class_names=display.class_names,
            feature_names=display.feature_names,
            k=self.k,
            page_size=self.page_size,
        )

    @classmethod
    def opened(cls, number: int) -> InfluenceExplorer:
        """Explorer number ``number`` of this kernel (1 is the first opened, ``ex.number`` says
        which an explorer is): the code an explorer shows finds it so, with no ``ex = _``.
        Raises a LookupError naming the numbers open when there is no such explorer."""
        number = check_positive_int(number, "number")
        found = InfluenceExplorer._opened.get(number)
        if found is None:
            open_now = ", ".join(map(str, sorted(InfluenceExplorer._opened))) or "none"
            raise LookupError(
                f"number: no explorer {number} in this kernel (open: {open_now}); "
                "ex.number tells an explorer's number"
            )
        return found

    # ----- results --------------------------------------------------------------------------
    def results(self, as_frame: bool = False):
        """The current panel as a list of dicts (or a pandas DataFrame with ``as_frame=True``).

        One row per shown training point: test_index, kind ("helpful"/"harmful"), rank,
        train_index, label, score (predicted change of the test loss on removal).
        """
        panel = self.panel
        rows = [
            {
                "test_index": panel["test_index"],
                "kind": kind,
                "rank": rank,
                "train_index": item["index"],
                "label": item["label"],
                "score": item["score"],
            }
            for kind in ("helpful", "harmful")
            for rank, item in enumerate(panel.get(kind, []) if panel else [], start=1)
        ]
        if not as_frame:
            return rows
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError("results(as_frame=True) needs pandas: pip install pandas") from err
        return pd.DataFrame(rows)

    # ----- publishing: one HTML page that needs no kernel ------------------------------------
    def save_html(
        self,
        path: str | os.PathLike[str],
        test_points: Iterable[int] | None = None,
        *,
        overwrite: bool = False,
        progress: bool = True,
    ) -> Path:
        """Save the explorer as one self-contained HTML page that opens from disk or a course
        website with no Python, no Jupyter and no network, and answers clicks from saved scores.

        The page holds the gallery of ``test_points`` (default: every test point) and, for each,
        the panel a click shows here: its ``k`` most helpful and most harmful training points,
        ranked by predicted_removal_effect = -(1/n) I_up,loss(z_i, z_test), computed as a click
        computes them (one solve each, or a read of the score store), with a progress bar. The
        explorer's own front end (``explorer.js`` and ``explorer.css``) is inlined and each image
        is embedded once. Verify, Attack and Review run Python, so the page turns them off and
        says so. With several methods the page holds the method shown (``method``) and says so;
        save once per method for more. Waits for precomputation first.

        Args:
            path: the file to write: a name ending in .html or .htm, in a folder that exists.
            test_points: the test indices to save (any order, repeats ignored), or None for all.
            overwrite: replace an existing file at ``path`` (otherwise a FileExistsError).
            progress: show a progress bar while the panels are computed.

        Returns:
            ``path`` as a Path.
        """
        target = check_html_path(path, overwrite)
        indices = check_test_points(test_points, len(self.context.tests))
        self.wait_ready()
        tests, display = self.context.tests, self.display_data
        shown = f"{len(indices)} test point{'s' if len(indices) > 1 else ''}"
        rows = (
            SharedRows(display.feature_names, display.feature_sd.tolist())
            if display.kind == "tabular"
            else None
        )
        traits = self.get_state()
        # the panels are the method shown; the page's switch offers that one only
        traits["methods"] = [m for m in self.methods if m["name"] == self.method]
        page = SavedPage(traits, self._saved_message(shown), rows)
        with progress_bar(
            total=len(indices), desc="saving the explorer's panels", disable=not progress
        ) as bar:
            for i in indices:
                with self.influence_tab.lock:
                    panel = self.influence_tab.panel(i)
                page.add(self._gallery_item(i), int(tests.true[i]), panel)
                bar.update()
        html = page.html(static_dir(), f"{target.stem}: influence explorer")
        check_html_path(target, overwrite)  # nothing has appeared there meanwhile
        target.write_text(html, encoding="utf-8")
        return target

    def _saved_message(self, shown: str) -> str:
        """The saved page's status line: what it holds, scored by which method."""
        methods = self.context.methods
        if len(methods) == 1:
            scored = f"scored with the {curvature_text(self.influence)}"
        else:
            entry = methods.entries[self.method]
            others = ", ".join(n for n in methods.names if n != self.method)
            scored = (
                f"scored by {self.method} ({entry.description()}), the method shown when the "
                f"page was saved; the notebook's explorer also had {others}, which this page "
                "does not hold"
            )
        return (
            f"Saved from a notebook: the {self.k} most helpful and most harmful training points "
            f"of each of these {shown}, {scored}. Click a test point to see them."
        )

    def wait_ready(self, timeout: float = 600.0) -> InfluenceExplorer:
        """Block until precomputation is done (for scripts and tests); returns self."""
        if not self.context.readiness.done.wait(timeout):
            raise TimeoutError(f"precomputation did not finish within {timeout} s")
        if self.status == "error":
            raise RuntimeError(self.error)
        return self
