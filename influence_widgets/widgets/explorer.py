"""InfluenceExplorer: click a test prediction, see the training points that helped and hurt it.

The front end is plain ES modules and CSS (``js/``, shipped as ``influence_widgets/static/``) run by
anywidget. State the views share lives in synced traits: ``selected`` (the test index), the current
gallery page and the result panel. Thumbnails go as binary buffers, only for what is on screen.
"""

from __future__ import annotations

import logging
import numbers
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import anywidget
import numpy as np
import torch
import traitlets

from influence_widgets.core.ekfac import EKFAC
from influence_widgets.core.errors import NotPositiveDefiniteError, check_positive_int
from influence_widgets.core.influence import Influence, TopInfluence, check_influence
from influence_widgets.core.progress import report_progress
from influence_widgets.datasets import Dataset
from influence_widgets.distributed import ScoreStore
from influence_widgets.widgets.inputs import (
    ExplorerInputs,
    class_probabilities_of,
    classes_of,
    targets_like,
)
from influence_widgets.widgets.lookahead import PageLookahead
from influence_widgets.widgets.minimum import MINIMUM_TOL, at_minimum, not_at_minimum_notice
from influence_widgets.widgets.protocol import (
    ATTACK_CANCEL,
    ATTACK_RUN,
    IDLE,
    VERIFY_CANCEL,
    VERIFY_RUN,
    Panel,
    TrainItem,
)
from influence_widgets.widgets.review import ReviewTab
from influence_widgets.widgets.tabs import BACKGROUND_WORK, AttackTab, VerifyTab

__all__ = ["InfluenceExplorer"]

log = logging.getLogger("influence_widgets")


def static_dir() -> Path:
    """The built front-end files: ``influence_widgets/static`` in a wheel, ``js/`` in a checkout."""
    packaged = Path(__file__).resolve().parent.parent / "static"
    if (packaged / "explorer.js").exists():
        return packaged
    return Path(__file__).resolve().parents[2] / "js"


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


def explanation(label: str | None, pred: str, correct: bool) -> str:
    """What the helpful and harmful points mean for one test point, true label ``label``,
    predicted ``pred``. Scores are for the test loss of the true label, L(z_test, theta_hat):
    for a misclassified point, helpful points support the true label, not the prediction.
    ``label=None`` (no label given): the scores are for the predicted class, z_test = (x, pred).
    """
    if label is None:
        return (
            f"No label given: explained for the predicted class {pred}. Scores are for the "
            f"loss of {pred}, so helpful points (score > 0) support predicting {pred}: removing "
            f"one would raise that loss. Harmful points (score < 0) work against predicting "
            f"{pred}: removing one would lower it."
        )
    if correct:
        return (
            f"Correctly classified as {label}. Helpful points (score > 0) support this "
            f"prediction: removing one would raise the loss of the label {label}. Harmful points "
            f"(score < 0) work against it: removing one would lower that loss."
        )
    return (
        f"Misclassified: the true label is {label}, the model predicts {pred}. Scores are for the "
        f"loss of the true label {label}, so helpful points (score > 0) support the true label "
        f"{label}: they push the model toward it, against the prediction {pred}; removing one "
        f"would raise that loss. Harmful points (score < 0) work against the true label "
        f"{label}, as the prediction {pred} does: removing one would lower the loss of {label}."
    )


class InfluenceExplorer(VerifyTab, AttackTab, ReviewTab, anywidget.AnyWidget):
    """An inline explorer of influence for one model.

    Tabs: Influence (the selected test point's most helpful and harmful training points),
    Verify (leave-one-out retraining), Attack (a training-set attack) and Review (training points
    ranked for a label check, fixes, and a retrain with them: see :class:`ReviewTab`).

    Args:
        influence: an :class:`~influence_widgets.Influence` (fitted here, in the background,
            if it is not yet).
        data: an ``iw.datasets`` Dataset; or None and the keyword arguments below.
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
            10^6 points is a lookup); Verify, Attack and Review still use ``influence``.
        fit_in_background: fit in a thread (the notebook stays free) or before returning.
        lookahead: when the first test point takes >= 0.5 s to score (a large network), score
            the other test points of the visible page in the background, so that a click on
            one of them is a lookup (the status line counts them); False keeps the CPU free.
    """

    _esm = static_dir() / "explorer.js"
    _css = static_dir() / "explorer.css"

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

    def __init__(
        self,
        influence: Influence,
        data: Dataset | None = None,
        *,
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
        influence = check_influence(influence)
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
        labelled, n_outputs = self._init_test_points(influence, inputs, scores)
        display = inputs.display(influence, self._n_classes(influence, n_outputs))
        super().__init__(
            k=k,
            kind=display.kind,
            class_names=display.class_names,
            page_size=page_size,
            labelled=labelled,
        )
        self.influence = influence
        self.display_data = display
        self._init_clicks(lookahead and scores is None)
        self._init_verify()
        self._init_attack()
        self._init_review()
        self._refresh_gallery()
        self.observe(self._on_selected, names="selected")
        self.observe(
            lambda _: self._refresh_gallery(), names=["page", "class_filter", "misclassified_only"]
        )
        self.observe(lambda _: self._on_new_k(), names="k")
        self.on_msg(self._on_front_end_message)
        if fit_in_background:
            threading.Thread(target=self._precompute, daemon=True).start()
        else:
            self._precompute()

    def _init_clicks(self, lookahead: bool) -> None:
        """The state that serves clicks: before, during and after precomputation."""
        self._callbacks: list[Callable[[int], None]] = []
        self._lock = threading.Lock()  # one panel computed at a time
        self._fit_lock = threading.Lock()  # guards _fitted, _failure and _pending
        self._pending: int | None = None
        self._fitted = False  # precomputation done: clicks are served at once
        self._failure: str | None = None  # precomputation failed: what happened and what to do
        self._ready = threading.Event()  # set once any queued click is served too (or on error)
        self._ready_message = ""
        # Slow clicks (>= LOOKAHEAD_SECONDS): the visible page is scored ahead in the background.
        self._lookahead: PageLookahead | None = (
            PageLookahead(self._score_ahead, self._lookahead_progress) if lookahead else None
        )

    # ----- inputs ---------------------------------------------------------------------------
    def _init_test_points(
        self, influence: Influence, inputs: ExplorerInputs, scores: ScoreStore | None
    ) -> tuple[bool, int]:
        """Set the test points, the score store, the predictions and the labels; returns
        (whether labels were given, the number of classes the model's outputs tell apart)."""
        self.x_test, y_test = inputs.test_points(influence)
        if scores is not None:
            if not isinstance(scores, ScoreStore):
                raise TypeError(
                    f"scores: expected an iw.ScoreStore (iw.ScoreStore(path)), got "
                    f"{type(scores).__name__}"
                )
            scores.check_matches(influence, self.x_test, y_test)
        self.scores = scores
        probabilities = class_probabilities_of(influence, self.x_test)
        self._conf, self._pred = (t.numpy() for t in probabilities.max(dim=1))
        # Without labels every point is explained for its predicted class: y_test = y_hat in the
        # training labels' form (the scores, Verify), and no point counts as misclassified. The
        # Attack tab needs a label. Labels of several values per point (one-hot, for mse) are
        # read as their argmax class wherever a class is shown.
        labelled = y_test is not None
        self.y_test = y_test if labelled else self._predicted_labels(influence)
        self._true = classes_of(self.y_test)
        return labelled, probabilities.shape[1]

    def _predicted_labels(self, influence: Influence) -> torch.Tensor:
        """y_hat of every test point as labels of the training labels' form (one-hot rows where
        they are one-hot rows); a Dataset's first item shows that form."""
        train = influence.train
        like = train.y if train.y is not None else train.take([0])[1]
        return targets_like(torch.from_numpy(self._pred.astype(np.int64)), like).cpu()

    def _n_classes(self, influence: Influence, n_outputs: int) -> int:
        """Classes the model tells apart (one output: two) or the labels use, whichever is more."""
        labels = [self._true]
        if influence.train.y is not None:
            labels.append(classes_of(influence.train.y))
        largest = max((int(y.max()) for y in labels if y.size), default=-1)
        return max(n_outputs, largest + 1, 2)

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

    def _explain(self, index: int) -> str:
        """The panel's explanation of test point ``index``: for its true label, or for its
        predicted class when the explorer was given no labels."""
        pred = self._label(int(self._pred[index]))
        if not self.labelled:
            return explanation(None, pred, True)
        label = self._label(int(self._true[index]))
        return explanation(label, pred, bool(self._true[index] == self._pred[index]))

    def _label(self, c: int) -> str:
        names = self.display_data.class_names
        return names[c] if 0 <= c < len(names) else str(c)

    # ----- the gallery ----------------------------------------------------------------------
    def _filtered(self) -> np.ndarray:
        keep = np.ones(len(self._true), dtype=bool)
        if self.class_filter >= 0:
            keep &= self._true == self.class_filter
        if self.misclassified_only:
            keep &= self._pred != self._true
        return np.nonzero(keep)[0]

    def _refresh_gallery(self) -> None:
        idx = self._filtered()
        n_pages = max(1, -(-len(idx) // self.page_size))
        page = min(max(self.page, 0), n_pages - 1)
        items = []
        for i in idx[page * self.page_size : (page + 1) * self.page_size]:
            i = int(i)
            items.append(
                {
                    "index": i,
                    "label": self._label(int(self._true[i])),
                    "pred": self._label(int(self._pred[i])),
                    "confidence": float(self._conf[i]),
                    "wrong": bool(self._pred[i] != self._true[i]),
                    **self.display_data.item("test", i),
                }
            )
        with self.hold_sync():
            self.n_pages, self.n_shown = n_pages, len(idx)
            if page != self.page:
                self.page = page
            self.gallery = items
        self._follow_page()

    def _follow_page(self) -> None:
        """Have the visible page scored ahead, once clicks can be served (after the fit)."""
        if self._lookahead is not None and self._fitted:
            self._lookahead.follow([item["index"] for item in self.gallery])

    # ----- selection ------------------------------------------------------------------------
    def on_select(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(test_index)`` after each selection's results are ready."""
        if not callable(callback):
            raise TypeError(f"callback: expected a callable, got {type(callback).__name__}")
        self._callbacks.append(callback)

    def _on_selected(self, change) -> None:
        index = change["new"]
        self._forget_finished_runs()  # they belong to the previous test point
        if index is None:
            self.panel = {}
            return
        if not 0 <= index < len(self._true):
            self.error = f"selected: {index!r} is not a test index in [0, {len(self._true) - 1}]"
            log.error(self.error)
            return
        with self._fit_lock:
            waiting = not self._fitted and self._failure is None
            if waiting:
                self._pending = index  # the latest click wins once precomputation is done
                self.message = f"Test point {index} queued until precomputation finishes"
        if waiting:
            return
        if self._failure is not None:
            self._show_failure(index)
            return
        self._compute(index)

    def _forget_finished_runs(self) -> None:
        if not self.verify_running:
            self.verify, self.verify_plot = dict(IDLE), b""
        if not self.attack_running:
            self.attack = dict(IDLE)

    def _on_new_k(self) -> None:
        if self._lookahead is not None:
            self._lookahead.forget()  # the top-k lists of another k
        if self.selected is not None and self._fitted:
            self._compute(self.selected)

    # ----- precomputation -------------------------------------------------------------------
    def _precompute(self) -> None:
        """Fit, once no other explorer is working in the background (see tabs.BACKGROUND_WORK)."""
        if not BACKGROUND_WORK.acquire(blocking=False):
            self.status = "fitting"
            self.message = "Waiting for another explorer's background work to finish..."
            BACKGROUND_WORK.acquire()
        try:
            self._precompute_alone()
        finally:
            BACKGROUND_WORK.release()

    def _precompute_alone(self) -> None:
        self.status = "fitting"
        self.message = "Precomputing the Hessian and its factorisation..."
        start = time.perf_counter()
        try:
            with report_progress(self._fit_progress_listener()):
                self._fit_with_retry()
        except Exception as err:  # shown in the widget and logged; nothing else to do here
            log.exception("InfluenceExplorer precomputation failed")
            self._fit_failed(err)
            return
        self._fit_done(time.perf_counter() - start)

    def _fit_progress_listener(self) -> Callable[[str, float], None]:
        last = [0.0]

        def show(step: str, fraction: float) -> None:
            now = time.perf_counter()
            if now - last[0] > 0.1 or fraction >= 1.0:  # at most ~10 updates a second
                last[0] = now
                self.progress = fraction
                self.message = f"Precomputing: {step} {fraction:.0%}"

        return show

    def _fit_done(self, seconds: float) -> None:
        with self._fit_lock:
            self._fitted = True
            pending, self._pending = self._pending, None
        self.notice = self._minimum_notice()
        self.progress = 1.0
        self.status = "ready"
        warned = ", but see the warning below" if self.notice else ""
        store = f"; clicks read from {self.scores!r}" if self.scores is not None else ""
        approximate = (
            "; scores from EK-FAC, an approximation: check them in the Verify tab"
            if isinstance(self.influence.solver, EKFAC)
            else ""
        )
        self._ready_message = f"Ready (precomputed in {seconds:.1f} s{store}{approximate}){warned}"
        self.message = self._ready_message
        if pending is not None and pending == self.selected:
            self._compute(pending)
        self._ready.set()
        self._follow_page()

    def _minimum_notice(self) -> str:
        """The warning shown when theta_hat is not a minimum of R (else ""), with what to do."""
        if self.influence.diagnostics.grad_norm <= MINIMUM_TOL:
            return ""
        return not_at_minimum_notice(at_minimum(self.influence))

    def _failure_text(self, err: Exception) -> str:
        """What the widget shows after precomputation raised ``err``."""
        return failure_message(err)

    def _fit_failed(self, err: Exception) -> None:
        """No influence can be shown: say why and what to do, also to a click queued earlier."""
        with self._fit_lock:
            self._failure = self._failure_text(err)
            pending, self._pending = self._pending, None
            self.status = "error"
            self._show_failure(pending)
        self._ready.set()

    def _show_failure(self, index: int | None) -> None:
        self.error = self._failure
        shown = "" if index is None else f": test point {index} cannot be shown"
        self.message = f"Precomputation failed{shown} (see below)"

    def _fit_with_retry(self, attempts: int = 3) -> None:
        """``influence.fit()``, retried when CPython 3.11 raises its spurious SystemError.

        Compiling code in this thread while the kernel compiles the next cell on the main thread
        (a notebook's "Run All") can raise "AST constructor recursion depth mismatch" in CPython
        3.11 (a race in the interpreter, not a problem with the inputs); the fit is pure
        computation, so running it again is safe.
        """
        for attempt in range(attempts):
            try:
                self.influence.fit()
                return
            except SystemError as err:
                if "recursion depth mismatch" not in str(err) or attempt == attempts - 1:
                    raise
                log.warning("retrying precomputation after CPython's spurious SystemError")

    def _compute(self, index: int) -> None:
        with self._lock:
            try:
                start = time.perf_counter()
                panel = self._panel(index)
                self.compute_ms = (time.perf_counter() - start) * 1000
                self.error = ""
                self.panel = panel
            except Exception as err:  # shown in the widget and logged
                self.error = f"Could not compute influence for test point {index}: {err}"
                log.exception("InfluenceExplorer selection failed")
                return
        for callback in self._callbacks:
            try:
                callback(index)
            except Exception:  # a user's callback must not break the widget
                log.exception("on_select callback raised")

    def _top(self, index: int) -> TopInfluence:
        """The k most helpful and harmful training points of test point ``index``: read from the
        score store, or scored ahead (``lookahead``), or computed now (and kept)."""
        if self.scores is not None:  # precomputed: one row of the store, no solve
            return self.scores.top(index, self.k)
        if self._lookahead is not None and (top := self._lookahead.cached(index)) is not None:
            return top
        start = time.perf_counter()
        top = self._score(index)
        if self._lookahead is not None:
            self._lookahead.store(index, top, time.perf_counter() - start)
        return top

    def _score(self, index: int) -> TopInfluence:
        """Test point ``index``'s top-k lists, computed: one solve and one pass over the data."""
        return self.influence.top(
            self.x_test[index : index + 1], self.y_test[index : index + 1], self.k
        )

    def _score_ahead(self, index: int) -> TopInfluence:
        """:meth:`_score` for the lookahead thread, one panel at a time (``self._lock``)."""
        with self._lock:
            return self._score(index)

    def _lookahead_progress(self, done: int, total: int) -> None:
        """The status line while (and once) the visible page is scored ahead."""
        if self.status != "ready":
            return
        ahead = (
            f"all {total} test points of this page scored ahead: a click on one is instant"
            if done == total
            else f"scoring this page ahead: {done} of {total} test points (clicks on them "
            "are then instant)"
        )
        self.message = f"{self._ready_message}; {ahead}"

    def _panel(self, index: int) -> Panel:
        top = self._top(index)
        label, pred = self._label(int(self._true[index])), self._label(int(self._pred[index]))
        correct = bool(self._true[index] == self._pred[index])
        return {
            "test_index": index,
            "label": label,
            "pred": pred,
            "confidence": float(self._conf[index]),
            "correct": correct,
            "explanation": self._explain(index),
            "test": self.display_data.item("test", index),
            "helpful": self._train_items(top.helpful[0], top.helpful_scores[0], index),
            "harmful": self._train_items(top.harmful[0], top.harmful_scores[0], index),
        }

    def _train_items(
        self, idx: torch.Tensor, scores: torch.Tensor, test_index: int
    ) -> list[TrainItem]:
        y_train = classes_of(self.influence.train.take(idx)[1])
        items = []
        for j, s, label in zip(idx.tolist(), scores.tolist(), y_train.tolist(), strict=True):
            item: TrainItem = {"index": j, "label": self._label(int(label)), "score": float(s)}
            if self.display_data.kind == "tabular":  # the card is a table beside the test point
                item["differences"] = self.display_data.differences(j, test_index)
            else:
                item.update(self.display_data.item("train", j))
            items.append(item)
        return items

    # ----- messages from the front end -----------------------------------------------------
    def _on_front_end_message(self, _widget, content, _buffers) -> None:
        """Button presses of the slow tabs: {"event": NAME}, NAME one of ``protocol.EVENTS``."""
        actions = {
            VERIFY_RUN: self.run_verify,
            VERIFY_CANCEL: self.cancel_verify,
            ATTACK_RUN: self.run_attack,
            ATTACK_CANCEL: self.cancel_attack,
        }
        event = content.get("event") if isinstance(content, dict) else None
        if event in actions:
            try:
                actions[event]()
            except Exception as err:  # a bad slider value, say: shown, never a traceback
                self.error = f"{event}: {err}"
                log.exception("InfluenceExplorer could not handle %s", event)

    # ----- results --------------------------------------------------------------------------
    def results(self, as_frame: bool = False):
        """The current panel as a list of dicts (or a pandas DataFrame with ``as_frame=True``).

        One row per shown training point: test_index, kind ("helpful"/"harmful"), rank,
        train_index, label, score (predicted change of the test loss on removal).
        """
        panel = self.panel
        rows = (
            [
                {
                    "test_index": panel["test_index"],
                    "kind": kind,
                    "rank": rank,
                    "train_index": item["index"],
                    "label": item["label"],
                    "score": item["score"],
                }
                for kind in ("helpful", "harmful")
                for rank, item in enumerate(panel.get(kind, []), start=1)
            ]
            if panel
            else []
        )
        if not as_frame:
            return rows
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError("results(as_frame=True) needs pandas: pip install pandas") from err
        return pd.DataFrame(rows)

    def wait_ready(self, timeout: float = 600.0) -> InfluenceExplorer:
        """Block until precomputation is done (for scripts and tests); returns self."""
        if not self._ready.wait(timeout):
            raise TimeoutError(f"precomputation did not finish within {timeout} s")
        if self.status == "error":
            raise RuntimeError(self.error)
        return self
