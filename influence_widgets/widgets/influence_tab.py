"""The explorer's Influence tab: what a click on a test point shows, the k training points whose
removal would raise its test loss most (helpful) and lower it most (harmful), ranked by
``predicted_removal_effect`` = -(1/n) I_up,loss(z_i, z_test) (Koh & Liang 2017, eq. 2).

One click costs one solve, s_test = H^-1 grad L(z_test, theta_hat), and one pass over the training
set; a score store (``scores=``) makes it a read of one row, and the page lookahead
(:mod:`lookahead`) scores the visible page ahead when clicks are slow.
"""

from __future__ import annotations

import threading
import time

import torch

from influence_widgets.core.influence import TopInfluence
from influence_widgets.distributed import ScoreStore
from influence_widgets.widgets.context import ExplorerContext
from influence_widgets.widgets.inputs import classes_of
from influence_widgets.widgets.lookahead import PageLookahead
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
    """The top-k lists and the panel of a selected test point.

    Args:
        context: the explorer's context.
        scores: a score store to read clicks from, or None to compute them.
        lookahead: score the visible page ahead when clicks are slow (ignored with ``scores``).
    """

    def __init__(
        self, context: ExplorerContext, scores: ScoreStore | None, lookahead: bool
    ) -> None:
        self.context = context
        self.scores = scores
        self.lock = threading.Lock()  # one panel computed at a time
        self.lookahead: PageLookahead | None = (
            PageLookahead(self._score_ahead, self._lookahead_progress, context.jobs)
            if lookahead and scores is None
            else None
        )
        self.ready_message = ""  # the status line once precomputation is done

    def explain(self, index: int) -> str:
        """The panel's explanation of test point ``index``: for its true label, or for its
        predicted class when the explorer was given no labels."""
        tests, label = self.context.tests, self.context.label
        pred = label(int(tests.predicted[index]))
        if not tests.labelled:
            return explanation(None, pred, True)
        return explanation(label(int(tests.true[index])), pred, not tests.misclassified(index))

    def top(self, index: int) -> TopInfluence:
        """The k most helpful and harmful training points of test point ``index``: read from the
        score store, or scored ahead (``lookahead``), or computed now (and kept)."""
        k = self.context.view.k
        if self.scores is not None:  # precomputed: one row of the store, no solve
            return self.scores.top(index, k)
        if self.lookahead is not None and (top := self.lookahead.cached(index)) is not None:
            return top
        start = time.perf_counter()
        top = self.score(index)
        if self.lookahead is not None:
            self.lookahead.store(index, top, time.perf_counter() - start)
        return top

    def score(self, index: int) -> TopInfluence:
        """Test point ``index``'s top-k lists, computed: one solve and one pass over the data."""
        x, y = self.context.tests.point(index)
        return self.context.influence.top(x, y, self.context.view.k)

    def _score_ahead(self, index: int) -> TopInfluence:
        """:meth:`score` for the lookahead thread, one panel at a time (``self.lock``)."""
        with self.lock:
            return self.score(index)

    def _lookahead_progress(self, done: int, total: int) -> None:
        """The status line while (and once) the visible page is scored ahead."""
        view = self.context.view
        if view.status != "ready":
            return
        ahead = (
            f"all {total} test points of this page scored ahead: a click on one is instant"
            if done == total
            else f"scoring this page ahead: {done} of {total} test points (clicks on them "
            "are then instant)"
        )
        view.message = f"{self.ready_message}; {ahead}"

    def panel(self, index: int) -> Panel:
        """What the Influence tab shows for test point ``index`` (the ``panel`` trait)."""
        top = self.top(index)
        tests, label = self.context.tests, self.context.label
        helpful = self._train_items(top.helpful[0], top.helpful_scores[0], index)
        harmful = self._train_items(top.harmful[0], top.harmful_scores[0], index)
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
        }

    def _train_items(
        self, idx: torch.Tensor, scores: torch.Tensor, test_index: int
    ) -> list[TrainItem]:
        """Training points ``idx`` of test point ``test_index``'s panel, in the order given (most
        helpful, or most harmful, first)."""
        display, label = self.context.display, self.context.label
        y_train = classes_of(self.context.influence.train.take(idx)[1])
        items = []
        for j, s, c in zip(idx.tolist(), scores.tolist(), y_train.tolist(), strict=True):
            item: TrainItem = {"index": j, "label": label(int(c)), "score": float(s)}
            if display.kind == "tabular":  # the card is a table beside the test point
                item["differences"] = display.differences(j, test_index)
            else:
                item.update(display.item("train", j))
            items.append(item)
        return items
