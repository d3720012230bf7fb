"""The explorer's Review tab: training points ranked for a label check (Koh & Liang 2017, Sec 5.4),
fixes proposed per point, and a retrain with the fixes (:mod:`review_retrain`).

The ranking is :func:`~influence_widgets.review_order`'s: largest |I_up,loss(z_i, z_i)| =
grad ell_i^T H^-1 grad ell_i first, or largest training loss L(z_i, theta_hat), or random. Fixes
(a new label, or removal) are kept here, never written into the user's data. The tab's state is
the explorer's synced traits ``review_method``, ``review_page``, ``review`` (a
:class:`~influence_widgets.widgets.protocol.ReviewState`) and ``review_retrain``.
"""

from __future__ import annotations

import logging
import numbers
import threading
from collections.abc import Callable

import numpy as np
import torch

from influence_widgets.analysis.mislabel import training_losses
from influence_widgets.widgets.context import ExplorerContext
from influence_widgets.widgets.inputs import class_probabilities_of, classes_of, targets_like
from influence_widgets.widgets.jobs import Job
from influence_widgets.widgets.protocol import (
    REVIEW_CANCEL,
    REVIEW_CLEAR,
    REVIEW_CLEAR_ALL,
    REVIEW_RELABEL,
    REVIEW_REMOVE,
    REVIEW_RETRAIN,
    ReviewItem,
    ReviewState,
    job_failed,
)
from influence_widgets.widgets.review_retrain import Retrain, ReviewResult, fixes_text

__all__ = ["ReviewTab", "check_index"]

log = logging.getLogger("influence_widgets")

# What each method's score is, as the tab names it.
SCORE_NAMES = {"self_influence": "|self-influence|", "loss": "training loss", "random": None}


def check_index(value: object, name: str) -> int:
    """``value`` as an int: a Python or numpy integer, or a one-element integer tensor (such as
    ``y[i]``); never a bool or a float."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        integral = not (value.is_floating_point() or value.is_complex())
        if integral and value.dtype != torch.bool:
            return int(value)
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {value!r} ({type(value).__name__})")
    return int(value)


def ranking_message(method: str) -> str:
    """The status line above a ranking: what it ranks by."""
    if method == "random":
        return "Training points in a random order (seed 0): the baseline to compare with."
    what = (
        "|self-influence| = |I_up,loss(z_i, z_i)|, how much a point's own loss depends on "
        "keeping it"
        if method == "self_influence"
        else "training loss L(z_i, theta_hat)"
    )
    return f"Most suspect first, by {what}."


class ReviewTab:
    """Training points ranked for review, per-point fixes, and a retrain with the fixes."""

    PAGE_SIZE = 12

    def __init__(self, context: ExplorerContext) -> None:
        self.context = context
        self.view = context.view
        self.retrain = Retrain(context)
        self.rank_job = Job()
        self._rankings: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._fixes: dict[int, int | None] = {}
        self._rank_lock = threading.Lock()  # guards _ranking_busy and the worker's exit
        self._ranking_busy = False
        self.view.observe(lambda _: self.rank_if_wanted(), names=["tab", "status"])
        self.view.observe(self._method_chosen, names="review_method")
        self.view.observe(lambda _: self.show_page(), names="review_page")

    @property
    def handlers(self) -> dict[str, Callable[[dict], None]]:
        """The front end's events this tab handles, by name (see protocol): {"event": NAME,
        "index": i, "label": c}."""
        return {
            REVIEW_RELABEL: lambda m: self.relabel(m.get("index"), m.get("label")),
            REVIEW_REMOVE: lambda m: self.mark_for_removal(m.get("index")),
            REVIEW_CLEAR: lambda m: self.clear_fix(m.get("index")),
            REVIEW_CLEAR_ALL: lambda _: self.clear_fixes(),
            REVIEW_RETRAIN: lambda _: self.retrain_with_fixes(),
            REVIEW_CANCEL: lambda _: self.cancel_retrain(),
        }

    def show_problem(self, message: str) -> None:
        """A bad fix or retrain request from the front end, shown in the retrain's status."""
        self.view.review_retrain = {**self.view.review_retrain, "message": message}

    # ----- the fixes ------------------------------------------------------------------------
    @property
    def fixes(self) -> dict[int, int | None]:
        """The proposed fixes: {training index: new label (class index), or None = remove}."""
        return dict(self._fixes)

    def _training_index(self, i: object) -> int:
        i, n = check_index(i, "i"), self.context.influence.n
        if not 0 <= i < n:
            raise ValueError(f"i: {i} is not a training index in [0, {n - 1}]")
        return i

    def _given_label(self, i: int) -> int:
        """Training point ``i``'s class (the argmax of a one-hot row)."""
        return int(classes_of(self.context.influence.train.take([i])[1])[0])

    def relabel(self, i: int, label: int) -> None:
        """Propose class index ``label`` as training point ``i``'s label."""
        i = self._training_index(i)
        label = check_index(label, "label")
        n_classes = len(self.context.display.class_names)
        if not 0 <= label < n_classes:
            raise ValueError(f"label: {label} is not a class index in [0, {n_classes - 1}]")
        if label == self._given_label(i):
            raise ValueError(
                f"label: training point {i} is already labelled {self.context.label(label)}; "
                f"use clear_fix({i}) to drop its fix"
            )
        self._fixes[i] = label
        self.show_page()

    def mark_for_removal(self, i: int) -> None:
        """Propose removing training point ``i`` from the training set (replaces a new label)."""
        self._fixes[self._training_index(i)] = None
        self.show_page()

    def clear_fix(self, i: int) -> None:
        """Drop the fix proposed for training point ``i`` (nothing happens if there is none)."""
        self._fixes.pop(self._training_index(i), None)
        self.show_page()

    def clear_fixes(self) -> None:
        """Drop every proposed fix."""
        self._fixes.clear()
        self.show_page()

    def fixed_dataset(self, fixes: dict[int, int | None] | None = None) -> tuple:
        """New tensors (X, y): the training set with ``fixes`` (default: the proposed ones),
        new labels as one-hot rows in y's dtype where y holds one-hot rows (as for mse)."""
        fixes = self._fixes if fixes is None else fixes
        X, y = self.context.influence.train.tensors()
        y = y.clone()
        relabelled = [i for i, label in fixes.items() if label is not None]
        if relabelled:
            y[relabelled] = targets_like(torch.tensor([fixes[i] for i in relabelled]), y)
        keep = self.kept(fixes)
        return X[keep].clone(), y[keep]

    def kept(self, fixes: dict[int, int | None]) -> torch.Tensor:
        """The training indices that ``fixes`` keep (all but those marked for removal), in
        order: row r of :meth:`fixed_dataset` is training point ``kept(fixes)[r]``."""
        keep = torch.ones(self.context.influence.n, dtype=torch.bool)
        keep[[i for i, label in fixes.items() if label is None]] = False
        return torch.nonzero(keep).flatten()

    def _fix_counts(self) -> dict:
        removed = sum(label is None for label in self._fixes.values())
        return {"n_relabelled": len(self._fixes) - removed, "n_removed": removed}

    # ----- the ranking ----------------------------------------------------------------------
    def rank_if_wanted(self) -> None:
        """Rank (in the background) when the tab shows and the method's ranking is not known;
        a ranking already running ranks the newly chosen method next."""
        if self.view.tab != "review" or not self.context.readiness.fitted:
            return
        with self._rank_lock:
            start = self.view.review_method not in self._rankings and not self._ranking_busy
            if start:
                self._ranking_busy = self.rank_job.start(self._rank_worker, with_cancel=False)
        if self.view.review_method in self._rankings:
            self.show_page()

    def _method_chosen(self, _change) -> None:
        self.view.review_page = 0
        self.rank_if_wanted()

    def _rank_worker(self) -> None:
        """Rank by the selected method until its ranking is known (the selector may change
        while a ranking is computed), then show the first page."""
        while True:
            with self._rank_lock:
                method = self.view.review_method
                if method in self._rankings:
                    self._ranking_busy = False
                    break
            try:
                self._rankings[method] = self._rank_with_progress(method)
            except Exception as err:  # shown in the tab and logged
                log.exception("InfluenceExplorer review ranking failed")
                with self._rank_lock:
                    self._ranking_busy = False
                failed = job_failed(-1, "Ranking", err)
                fix = " Try another method, or open the tab again to retry."
                self.view.review = {**failed, "message": failed["message"] + fix, "method": method}
                return
        self.show_page()

    def _rank_with_progress(self, method: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        view = self.view

        def show(_step: str, fraction: float) -> None:
            if view.review_method == method:  # not over another method's page, shown meanwhile
                message = f"Computing the self-influence of every training point... {fraction:.0%}"
                view.review = {**view.review, "progress": fraction, "message": message}

        view.review = {
            "state": "running",
            "progress": 0.0,
            "method": method,
            "message": "Ranking the training points...",
            **self._fix_counts(),
        }
        with self.context.jobs.progress(show, "self-influence"):
            return self.ranking(method)

    def ranking(self, method: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(order, score) as :func:`review_order` ranks: largest score first, stable; random:
        its permutation with seed 0, no score."""
        inf = self.context.influence
        if method == "random":
            return torch.randperm(inf.n, generator=torch.Generator().manual_seed(0)), None
        score = inf.self_influence().abs() if method == "self_influence" else training_losses(inf)
        score = score.detach().cpu()
        return torch.argsort(score, descending=True, stable=True), score

    @property
    def ranking_running(self) -> bool:
        """Whether a ranking is being computed."""
        return self.rank_job.running

    def show_page(self) -> None:
        """Show the page ``review_page`` of the selected method's ranking (or the fix counts
        while it is not known)."""
        view, method = self.view, self.view.review_method
        if method not in self._rankings:
            view.review = {**view.review, **self._fix_counts()}
            return
        order, score = self._rankings[method]
        size = self.PAGE_SIZE
        n_pages = max(1, -(-len(order) // size))
        page = min(max(view.review_page, 0), n_pages - 1)
        shown = order[page * size : (page + 1) * size]
        state: ReviewState = {
            "state": "done",
            "progress": 1.0,
            "method": method,
            "score_name": SCORE_NAMES[method],
            "page": page,
            "n_pages": n_pages,
            "n": len(order),
            "items": self._items(shown, page * size, score),
            "message": ranking_message(method),
            **self._fix_counts(),
        }
        view.review = state

    def _items(
        self, shown: torch.Tensor, first_rank: int, score: torch.Tensor | None
    ) -> list[ReviewItem]:
        context = self.context
        X, labels = context.influence.train.take(shown)
        confidence, predicted = class_probabilities_of(context.influence, X).max(dim=1)
        y = classes_of(labels)
        items = []
        for row, j in enumerate(shown.tolist()):
            fix = self._fixes.get(j, -1)
            item: ReviewItem = {
                "rank": first_rank + row + 1,
                "index": j,
                "label": context.label(int(y[row])),
                "label_index": int(y[row]),
                "pred": context.label(int(predicted[row])),
                "probability": float(confidence[row]),
                "score": None if score is None else float(score[j]),
                "proposed": -1 if fix is None else fix,
                "remove": fix is None,
                **context.display.item("train", j),
            }
            items.append(item)
        return items

    # ----- retraining -----------------------------------------------------------------------
    def _retrain_problem(self) -> str | None:
        """Why a retrain cannot start, with what to do (a ValueError for bad fixes)."""
        if not self._fixes:
            problem = (
                "review_fixes: none proposed; propose a label (relabel(i, label)) or a removal "
                "(mark_for_removal(i)) first"
            )
        elif sum(label is None for label in self._fixes.values()) == self.context.influence.n:
            problem = (
                "review_fixes: every training point is marked for removal; keep at least one "
                "(clear_fix(i))"
            )
        else:
            problem = self.context.readiness.problem()
            if problem is None and self.retrain.job.running:
                return "A retrain is already going; cancel it first."
            return problem
        self.show_problem(problem)
        raise ValueError(problem)

    def retrain_with_fixes(self, *, wait: bool = False) -> ReviewResult | None:
        """Retrain a copy of the model on the fixed data (see
        ``InfluenceExplorer.retrain_with_fixes``)."""
        problem = self._retrain_problem()
        fixes = dict(self._fixes)
        started = {
            "state": "running",
            "progress": 0.0,
            "message": f"Retraining with {fixes_text(self._fix_counts())}...",
        }
        data = self.fixed_dataset(fixes) if problem is None else None
        finished: list[ReviewResult] = []  # this run's result, once it has one
        work = (self.retrain.job, self.retrain.worker, data, fixes, self.context.selected, finished)
        self.context.jobs.launch("review_retrain", problem, started, work, wait)
        return finished[0] if wait and finished else None

    def cancel_retrain(self) -> None:
        """Stop the running retrain at its next function evaluation; nothing is kept."""
        self.context.jobs.cancel("review_retrain", self.retrain.job, "Cancelling the retrain...")
