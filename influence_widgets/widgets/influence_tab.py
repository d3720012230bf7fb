"""The explorer's Influence tab: what a click on a test point shows, the k training points whose
removal would raise its test loss most (helpful) and lower it most (harmful), ranked by
``predicted_removal_effect`` = -(1/n) I_up,loss(z_i, z_test) (Koh & Liang 2017, eq. 2).

One click costs one solve, s_test = H^-1 grad L(z_test, theta_hat), and one pass over the training
set; a score store (``scores=``) makes it a read of one row, and the page lookahead
(:mod:`lookahead`) scores the visible page ahead when clicks are slow. With several attribution
methods (:mod:`method_switch`) the panel ranks by the method shown, on the same sign (> 0:
helpful), and the Compare view (:mod:`compare`) puts two methods' lists side by side.
"""

from __future__ import annotations

import threading
import time
from functools import partial

import torch

from influence_widgets.core.influence import TopInfluence
from influence_widgets.distributed import ScoreStore
from influence_widgets.widgets.compare import Overlap, overlap_of, point_lds_text
from influence_widgets.widgets.context import ExplorerContext
from influence_widgets.widgets.inputs import classes_of
from influence_widgets.widgets.lookahead import PageLookahead
from influence_widgets.widgets.method_switch import lds_words, score_words
from influence_widgets.widgets.protocol import Panel, TrainItem

__all__ = ["InfluenceTab", "explanation", "surprise_note"]


def explanation(label: str | None, pred: str, correct: bool) -> str:
    """What the helpful and harmful points mean for one test point, true label ``label``,
    predicted ``pred``: two short lines (joined by a newline). Scores are for the test loss of
    the true label, L(z_test, theta_hat): for a misclassified point, helpful points support the
    true label, not the prediction. ``label=None`` (no label given): the scores are for the
    predicted class, z_test = (x, pred).
    """
    if label is None:
        return (
            f"No label given: explained for the predicted class {pred}.\n"
            f"Scores are for the loss of {pred}: helpful points support predicting {pred}, "
            "harmful points work against it."
        )
    if correct:
        return (
            f"Correctly classified as {label}.\n"
            f"Helpful points support this prediction, harmful points work against it."
        )
    return (
        f"Misclassified: the true label is {label}, the model predicts {pred}.\n"
        f"Scores are for the loss of the true label {label}: helpful points support {label}, "
        f"harmful points work against it."
    )


# Why a point scores against what its label suggests: one line beside it on the panel. The scores
# are for the loss of the label ``label`` (the true one, or the predicted class without labels).
SAME_LABEL_HARMFUL = (
    "Same label {label}, yet harmful: removing it would lower this test loss. It can look like "
    "another class, or fitting it can move the boundary the wrong way for this point."
)
OTHER_LABEL_HELPFUL = (
    "Other label, yet helpful: removing it would raise this test loss. Fitting it as its own class "
    "can move the boundary away from this point."
)


def surprise_note(kind: str, train_label: str, label: str) -> str | None:
    """The one-line reason shown beside a training point labelled ``train_label`` in the list
    ``kind`` ("helpful" or "harmful") of a test point whose scores are for ``label``: for a
    harmful point of the same label or a helpful point of another; None for the others.

    Harmful means that removing the point would lower the test loss, whatever its label (and
    helpful that it would raise it); the note says so and names ways this can happen.
    """
    if kind == "harmful" and train_label == label:
        return SAME_LABEL_HARMFUL.format(label=label)
    if kind == "helpful" and train_label != label:
        return OTHER_LABEL_HELPFUL
    return None


class InfluenceTab:
    """The top-k lists and the panel of a selected test point, by the method shown, and the
    Compare view of two methods.

    Args:
        context: the explorer's context.
        scores: a score store to read the reference Influence's clicks from, or None to compute
            them.
        lookahead: score the visible page ahead when clicks are slow (one cache per method; not
            for the clicks the store serves).
    """

    def __init__(
        self, context: ExplorerContext, scores: ScoreStore | None, lookahead: bool
    ) -> None:
        self.context = context
        self.scores = scores
        self.lock = threading.Lock()  # one panel computed at a time
        reference = context.methods.reference_name
        self.lookaheads: dict[str, PageLookahead] = {
            name: PageLookahead(
                partial(self._score_ahead, name),
                partial(self._lookahead_progress, name),
                context.jobs,
            )
            for name in context.methods.names
            if lookahead and not (scores is not None and name == reference)
        }
        self.ready_message = ""  # the status line once precomputation is done

    @property
    def lookahead(self) -> PageLookahead | None:
        """The page lookahead of the method shown (None without one)."""
        return self.lookaheads.get(self.context.shown)

    def explain(self, index: int) -> str:
        """The panel's explanation of test point ``index``: for its true label, or for its
        predicted class when the explorer was given no labels."""
        tests, label = self.context.tests, self.context.label
        pred = label(int(tests.predicted[index]))
        if not tests.labelled:
            return explanation(None, pred, True)
        return explanation(label(int(tests.true[index])), pred, not tests.misclassified(index))

    def top(self, index: int, name: str | None = None) -> TopInfluence:
        """The k most helpful and harmful training points of test point ``index`` by method
        ``name`` (default the one shown): read from the score store (the reference Influence),
        or scored ahead (``lookahead``), or computed now (and kept)."""
        name = self.context.shown if name is None else name
        k = self.context.view.k
        if self.scores is not None and name == self.context.methods.reference_name:
            return self.scores.top(index, k)  # precomputed: one row of the store, no solve
        lookahead = self.lookaheads.get(name)
        if lookahead is not None and (top := lookahead.cached(index)) is not None:
            return top
        start = time.perf_counter()
        top = self.score(index, name)
        if lookahead is not None:
            lookahead.store(index, top, time.perf_counter() - start)
        return top

    def score(self, index: int, name: str | None = None) -> TopInfluence:
        """Test point ``index``'s top-k lists by method ``name`` (default the one shown),
        computed: for an Influence one solve and one pass over the data."""
        name = self.context.shown if name is None else name
        method = self.context.methods.ready(name)
        if method is None:
            entry = self.context.methods.entry(name)
            raise RuntimeError(f"{name} is not ready yet ({entry.state}: {entry.message})")
        x, y = self.context.tests.point(index)
        return method.top(x, y, self.context.view.k)

    def _score_ahead(self, name: str, index: int) -> TopInfluence:
        """:meth:`score` for the lookahead thread, one panel at a time (``self.lock``)."""
        with self.lock:
            return self.score(index, name)

    def _lookahead_progress(self, name: str, done: int, total: int) -> None:
        """The status line while (and once) the visible page is scored ahead by the method
        shown."""
        view = self.context.view
        if view.status != "ready" or name != self.context.shown:
            return
        ahead = (
            f"all {total} test points of this page scored ahead: a click on one is instant"
            if done == total
            else f"scoring this page ahead: {done} of {total} test points (clicks on them "
            "are then instant)"
        )
        view.message = f"{self.ready_message}; {ahead}"

    def panel(self, index: int) -> Panel:
        """What the Influence tab shows for test point ``index`` (the ``panel`` trait), by the
        method shown."""
        name = self.context.shown
        top = self.top(index, name)
        tests, label = self.context.tests, self.context.label
        helpful = self.train_items(top.helpful[0], top.helpful_scores[0], index)
        harmful = self.train_items(top.harmful[0], top.harmful_scores[0], index)
        scored_for = label(int(tests.true[index]))  # the predicted class when unlabelled
        notes: dict[str, str] = {}
        for kind, items in (("helpful", helpful), ("harmful", harmful)):
            for item in items:
                note = surprise_note(kind, item["label"], scored_for)
                if note is not None:
                    item["surprise"] = True
                    notes[kind] = note
        return {
            "test_index": index,
            "label": label(int(tests.true[index])),
            "pred": label(int(tests.predicted[index])),
            "confidence": float(tests.confidence[index]),
            "correct": not tests.misclassified(index),
            "explanation": self.explain(index),
            "test": self.context.display.item("test", index),
            "helpful": helpful,
            "harmful": harmful,
            "notes": notes,
            "method": name,
            **self._score_words(name),
        }

    def _score_words(self, name: str) -> dict[str, str]:
        """The panel's ``score_help`` and ``score_axis`` for method ``name`` (see
        :func:`~influence_widgets.widgets.method_switch.score_words`)."""
        help_text, axis = score_words(self.context.methods.entries[name].method)
        return {"score_help": help_text, "score_axis": axis}

    def compare(self, index: int, names: list[str]) -> dict:
        """The Compare view of test point ``index`` (the ``compare`` trait): the two methods
        ``names``, each with its lists (or why there are none yet) and its LDS in words, the
        overlap of their top k and each listed training point's mark (``shared``: "both" or
        "opposite", see :class:`~influence_widgets.widgets.compare.Overlap`)."""
        methods = self.context.methods
        tops = {n: self.top(index, n) for n in names if methods.ready(n) is not None}
        found = overlap_of(*tops.values()) if len(tops) == 2 else None
        return {
            "test_index": index,
            "methods": list(names),
            "columns": [self._compare_column(index, n, tops.get(n), found) for n in names],
            "overlap": None
            if found is None
            else {
                "helpful": found.helpful,
                "harmful": found.harmful,
                "opposite": found.opposite,
                "k": found.k,
                "text": found.text(),
            },
        }

    def _compare_column(
        self, index: int, name: str, top: TopInfluence | None, found: Overlap | None
    ) -> dict:
        entry = self.context.methods.entries[name]
        lds = [
            text
            for text in (
                point_lds_text(self.context.methods, name, index),
                None if entry.lds is None else lds_words(entry.lds)["text"],
            )
            if text
        ]
        column = {
            "name": name,
            "state": entry.state,
            "message": entry.message,
            "description": entry.description(),
            "lds": lds,
            "helpful": [],
            "harmful": [],
            **self._score_words(name),
        }
        if top is None:
            return column
        for kind, idx, scores in (
            ("helpful", top.helpful[0], top.helpful_scores[0]),
            ("harmful", top.harmful[0], top.harmful_scores[0]),
        ):
            items = self.train_items(idx, scores, index, compact=True)
            for item in items:
                mark = found.mark(item["index"]) if found is not None else None
                if mark is not None:
                    item["shared"] = mark
            column[kind] = items
        return column

    def train_items(
        self, idx: torch.Tensor, scores: torch.Tensor, test_index: int, *, compact: bool = False
    ) -> list[TrainItem]:
        """Training points ``idx`` of test point ``test_index``'s panel, in the order given (most
        helpful, or most harmful, first); ``compact``: a tabular point without its table of
        differences (the Compare view's narrow columns)."""
        display, label = self.context.display, self.context.label
        y_train = classes_of(self.context.influence.train.take(idx)[1])
        items = []
        for j, s, c in zip(idx.tolist(), scores.tolist(), y_train.tolist(), strict=True):
            item: TrainItem = {"index": j, "label": label(int(c)), "score": float(s)}
            if display.kind == "tabular":  # the card is a table beside the test point
                if not compact:
                    item["differences"] = display.differences(j, test_index)
            else:
                item.update(display.item("train", j))
            items.append(item)
        return items
