"""The explorer's Review tab: training points ranked for a label check (Koh & Liang 2017, Sec 5.4),
fixes proposed per point, and a retrain with the fixes.

The ranking is :func:`~influence_widgets.review_order`'s: largest |I_up,loss(z_i, z_i)| =
grad ell_i^T H^-1 grad ell_i first, or largest training loss L(z_i, theta_hat), or random. Fixes
(a new label, or removal) are kept in the explorer, never written into the user's data; the retrain
fits a copy of the model at theta_hat (warm start) with ``iw.train`` and the Influence's L2.
"""

from __future__ import annotations

import logging
import numbers
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
import traitlets

from influence_widgets.analysis.loo import RetrainCancelled, stop_on_cancel
from influence_widgets.analysis.mislabel import METHODS, training_losses
from influence_widgets.core.losses import class_probabilities
from influence_widgets.core.objective import cast_inputs, cast_targets
from influence_widgets.core.progress import report_progress
from influence_widgets.widgets.inputs import class_probabilities_of, classes_of, targets_like
from influence_widgets.widgets.protocol import (
    IDLE,
    REVIEW_CANCEL,
    REVIEW_CLEAR,
    REVIEW_CLEAR_ALL,
    REVIEW_RELABEL,
    REVIEW_REMOVE,
    REVIEW_RETRAIN,
    ReviewItem,
    ReviewRetrainState,
    ReviewState,
    job_failed,
)
from influence_widgets.widgets.tabs import (
    _JOB_STATE,
    BACKGROUND_WORK,
    BackgroundJob,
    _Tab,
    _throttled,
)

__all__ = ["ReviewResult", "ReviewTab"]

log = logging.getLogger("influence_widgets")

# What each method's score is, as the tab names it.
SCORE_NAMES = {"self_influence": "|self-influence|", "loss": "training loss", "random": None}


@dataclass(frozen=True)
class ReviewResult:
    """What "Retrain with fixes" measured: the test set before -> after, and the selected point.

    Attributes:
        accuracy_before, accuracy_after: test accuracy of the original model and of the model
            retrained on the fixed training data (None when the explorer has no test labels).
        loss_before, loss_after: mean test loss L(z_test, theta) (without the L2 term), likewise.
        n_relabelled, n_removed: the fixes the retrain used.
        selected: the test point selected when the retrain started (None if none was).
        prediction_before, prediction_after: its predicted class names (None without a selection).
        probability_before, probability_after: the probability of each predicted class.
        model: the retrained copy of the model; build a new Influence on it to explore it.
        seconds: how long the retrain took.
    """

    accuracy_before: float | None
    accuracy_after: float | None
    loss_before: float | None
    loss_after: float | None
    n_relabelled: int
    n_removed: int
    selected: int | None
    prediction_before: str | None
    prediction_after: str | None
    probability_before: float | None
    probability_after: float | None
    model: torch.nn.Module
    seconds: float


def _check_index(value: object, name: str) -> int:
    """``value`` as an int: a Python or numpy integer, or a one-element integer tensor (such as
    ``y[i]``); never a bool or a float."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        integral = not (value.is_floating_point() or value.is_complex())
        if integral and value.dtype != torch.bool:
            return int(value)
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {value!r} ({type(value).__name__})")
    return int(value)


class ReviewTab(_Tab):
    """Training points ranked for review, per-point fixes, and a retrain with the fixes."""

    REVIEW_PAGE_SIZE = 12
    TEST_BATCH = 2048  # test points per forward pass when measuring before and after

    review_method = traitlets.Enum(METHODS, "self_influence").tag(sync=True)
    review_page = traitlets.Int(0).tag(sync=True)
    review = traitlets.Dict(IDLE).tag(sync=True)  # a protocol.ReviewState: the ranking shown
    review_retrain = traitlets.Dict(IDLE).tag(sync=True)  # a protocol.ReviewRetrainState

    def _init_review(self) -> None:
        self._rank_job = BackgroundJob()
        self._retrain_job = BackgroundJob()
        self._rankings: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._fixes: dict[int, int | None] = {}
        self.review_result: ReviewResult | None = None
        self._rank_lock = threading.Lock()  # guards _ranking_busy and the worker's exit
        self._ranking_busy = False
        self.observe(self._review_wanted, names=["tab", "status"])
        self.observe(self._method_chosen, names="review_method")
        self.observe(lambda _: self._show_review_page(), names="review_page")
        self.on_msg(self._on_review_message)

    # ----- the fixes ------------------------------------------------------------------------
    @property
    def review_fixes(self) -> dict[int, int | None]:
        """The proposed fixes: {training index: new label (class index), or None = remove}."""
        return dict(self._fixes)

    def _n_label_classes(self) -> int:
        return len(self.display_data.class_names)

    def _training_index(self, i: object) -> int:
        i = _check_index(i, "i")
        if not 0 <= i < self.influence.n:
            raise ValueError(f"i: {i} is not a training index in [0, {self.influence.n - 1}]")
        return i

    def _given_label(self, i: int) -> int:
        """Training point ``i``'s class (the argmax of a one-hot row)."""
        return int(classes_of(self.influence.train.take([i])[1])[0])

    def relabel(self, i: int, label: int) -> None:
        """Propose class index ``label`` as training point ``i``'s label (kept here; the user's
        data is never written). Replaces an earlier fix of ``i``."""
        i = self._training_index(i)
        label = _check_index(label, "label")
        n_classes = self._n_label_classes()
        if not 0 <= label < n_classes:
            raise ValueError(f"label: {label} is not a class index in [0, {n_classes - 1}]")
        if label == self._given_label(i):
            raise ValueError(
                f"label: training point {i} is already labelled {self._label(label)}; "
                f"use clear_fix({i}) to drop its fix"
            )
        self._fixes[i] = label
        self._show_review_page()

    def mark_for_removal(self, i: int) -> None:
        """Propose removing training point ``i`` from the training set (replaces a new label)."""
        self._fixes[self._training_index(i)] = None
        self._show_review_page()

    def clear_fix(self, i: int) -> None:
        """Drop the fix proposed for training point ``i`` (nothing happens if there is none)."""
        self._fixes.pop(self._training_index(i), None)
        self._show_review_page()

    def clear_fixes(self) -> None:
        """Drop every proposed fix."""
        self._fixes.clear()
        self._show_review_page()

    def fixed_dataset(self) -> tuple[torch.Tensor, torch.Tensor]:
        """New tensors (X, y): the training set with the proposed labels (as one-hot rows in y's
        dtype where y holds one-hot rows, as for mse) and without the points marked for removal.
        The user's tensors, model and Dataset are never written."""
        return self._fixed(dict(self._fixes))

    def _fixed(self, fixes: dict[int, int | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """The training set with ``fixes`` applied, as new tensors (X, y)."""
        X, y = self.influence.train.tensors()
        y = y.clone()
        relabelled = [i for i, label in fixes.items() if label is not None]
        if relabelled:
            y[relabelled] = targets_like(torch.tensor([fixes[i] for i in relabelled]), y)
        keep = torch.ones(len(y), dtype=torch.bool)
        keep[[i for i, label in fixes.items() if label is None]] = False
        return X[keep].clone(), y[keep]

    # ----- the ranking ----------------------------------------------------------------------
    def _review_wanted(self, _change=None) -> None:
        """Rank (in the background) when the tab shows and the method's ranking is not known;
        a ranking already running ranks the newly chosen method next."""
        if self.tab != "review" or not self._fitted:
            return
        with self._rank_lock:
            start = self.review_method not in self._rankings and not self._ranking_busy
            if start:
                self._ranking_busy = True
                self._rank_job.start(self._rank_worker)
        if self.review_method in self._rankings:
            self._show_review_page()

    def _method_chosen(self, _change) -> None:
        self.review_page = 0
        self._review_wanted()

    def _rank_worker(self, _cancel: threading.Event) -> None:
        """Rank by the selected method until its ranking is known (the selector may change
        while a ranking is computed), then show the first page."""
        while True:
            with self._rank_lock:
                method = self.review_method
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
                self.review = {**failed, "message": failed["message"] + fix, "method": method}
                return
        self._show_review_page()

    def _rank_with_progress(self, method: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        def show(_step: str, fraction: float) -> None:
            if self.review_method == method:  # not over another method's page, shown meanwhile
                message = f"Computing the self-influence of every training point... {fraction:.0%}"
                self.review = {**self.review, "progress": fraction, "message": message}

        self.review = {
            "state": "running",
            "progress": 0.0,
            "method": method,
            "message": "Ranking the training points...",
            **self._fix_counts(),
        }
        with BACKGROUND_WORK, report_progress(_throttled(show, "self-influence")):
            return self._ranking(method)

    def _ranking(self, method: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(order, score) as :func:`review_order` ranks: largest score first, stable; random:
        its permutation with seed 0, no score."""
        inf = self.influence
        if method == "random":
            return torch.randperm(inf.n, generator=torch.Generator().manual_seed(0)), None
        score = inf.self_influence().abs() if method == "self_influence" else training_losses(inf)
        score = score.detach().cpu()
        return torch.argsort(score, descending=True, stable=True), score

    def _show_review_page(self) -> None:
        method = self.review_method
        if method not in self._rankings:
            self.review = {**self.review, **self._fix_counts()}
            return
        order, score = self._rankings[method]
        size = self.REVIEW_PAGE_SIZE
        n_pages = max(1, -(-len(order) // size))
        page = min(max(self.review_page, 0), n_pages - 1)
        shown = order[page * size : (page + 1) * size]
        state: ReviewState = {
            "state": "done",
            "progress": 1.0,
            "method": method,
            "score_name": SCORE_NAMES[method],
            "page": page,
            "n_pages": n_pages,
            "n": len(order),
            "items": self._review_items(shown, page * size, score),
            "message": self._ranking_message(method),
            **self._fix_counts(),
        }
        self.review = state

    def _ranking_message(self, method: str) -> str:
        if method == "random":
            return "Training points in a random order (seed 0): the baseline to compare with."
        what = (
            "|self-influence| = |I_up,loss(z_i, z_i)|, how much a point's own loss depends on "
            "keeping it"
            if method == "self_influence"
            else "training loss L(z_i, theta_hat)"
        )
        return f"Most suspect first, by {what}."

    def _fix_counts(self) -> dict:
        removed = sum(label is None for label in self._fixes.values())
        return {"n_relabelled": len(self._fixes) - removed, "n_removed": removed}

    def _review_items(
        self, shown: torch.Tensor, first_rank: int, score: torch.Tensor | None
    ) -> list[ReviewItem]:
        X, labels = self.influence.train.take(shown)
        probabilities = class_probabilities_of(self.influence, X)
        confidence, predicted = probabilities.max(dim=1)
        y = classes_of(labels)
        items = []
        for row, j in enumerate(shown.tolist()):
            fix = self._fixes.get(j, -1)
            item: ReviewItem = {
                "rank": first_rank + row + 1,
                "index": j,
                "label": self._label(int(y[row])),
                "label_index": int(y[row]),
                "pred": self._label(int(predicted[row])),
                "probability": float(confidence[row]),
                "score": None if score is None else float(score[j]),
                "proposed": -1 if fix is None else fix,
                "remove": fix is None,
                **self.display_data.item("train", j),
            }
            items.append(item)
        return items

    # ----- retraining -----------------------------------------------------------------------
    @property
    def retrain_running(self) -> bool:
        """Whether a "Retrain with fixes" is running."""
        return self._retrain_job.running

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
        if not self._fixes:
            problem = (
                "review_fixes: none proposed; propose a label (relabel(i, label)) or a removal "
                "(mark_for_removal(i)) first"
            )
            self.review_retrain = {**self.review_retrain, "message": problem}
            raise ValueError(problem)
        if sum(label is None for label in self._fixes.values()) == self.influence.n:
            problem = (
                "review_fixes: every training point is marked for removal; keep at least one "
                "(clear_fix(i))"
            )
            self.review_retrain = {**self.review_retrain, "message": problem}
            raise ValueError(problem)
        problem = None
        if self._failure is not None:
            problem = "Precomputation failed (see the error above): open a new explorer."
        elif not self._fitted:
            problem = "Wait until precomputation has finished."
        elif self._retrain_job.running:
            problem = "A retrain is already going; cancel it first."
        counts = self._fix_counts()
        started = {
            "state": "running",
            "progress": 0.0,
            "message": f"Retraining with {self._fixes_text(counts)}...",
        }
        finished: list[ReviewResult] = []  # this run's result, once it has one
        work = (self._retrain_job, self._retrain_worker, dict(self._fixes), self.selected, finished)
        self._launch("review_retrain", problem, started, work, wait)
        return finished[0] if wait and finished else None

    def cancel_retrain(self) -> None:
        """Stop the running retrain at its next function evaluation; nothing is kept."""
        self._cancel("review_retrain", self._retrain_job, "Cancelling the retrain...")

    @staticmethod
    def _fixes_text(counts: dict) -> str:
        return f"{counts['n_relabelled']} relabelled, {counts['n_removed']} removed"

    def _retrain_worker(
        self, fixes: dict, selected: int | None, finished: list, cancel: threading.Event
    ) -> None:
        from influence_widgets.training import train

        data = self._fixed(fixes)  # the fixes when Retrain was pressed, even if edited since
        inf = self.influence
        max_iter = 1000

        def show(_step: str, fraction: float) -> None:
            iterations = round(fraction * max_iter)
            message = f"Retraining: {iterations} L-BFGS iterations so far..."
            with _JOB_STATE:  # once cancelled, the bar and "Cancelling..." stay as they are
                if not cancel.is_set():
                    self.review_retrain = {
                        **self.review_retrain,
                        "progress": fraction,
                        "message": message,
                    }

        try:
            start = time.perf_counter()
            model = inf.objective.model_copy()
            with (
                BACKGROUND_WORK,
                report_progress(_throttled(show, "L-BFGS")),
                stop_on_cancel(cancel, model),
            ):
                train(
                    model,
                    data,
                    l2=inf.objective.l2,
                    loss=inf.config.loss,
                    params=list(inf.objective.spec.names),  # theta only: a top layer stays one
                    max_iter=max_iter,
                    progress=False,
                )
            result = self._review_result(model, fixes, selected, time.perf_counter() - start)
        except RetrainCancelled:
            self._finish(
                "review_retrain",
                {"state": "cancelled", "progress": 1.0, "message": "Retrain cancelled."},
            )
            return
        except Exception as err:  # shown in the tab and logged
            log.exception("InfluenceExplorer retrain with fixes failed")
            failed = job_failed(-1, "Retrain with fixes", err)
            fix = (
                " What to do: check the fixes (ex.review_fixes, ex.fixed_dataset()); "
                "ex.clear_fixes() starts over."
            )
            self._finish("review_retrain", {**failed, "message": failed["message"] + fix})
            return
        self.review_result = result
        finished.append(result)
        self._finish("review_retrain", self._retrain_state(result))

    def _test_metrics(self, model: torch.nn.Module) -> tuple[float | None, float | None]:
        """(accuracy, mean test loss) of ``model`` on the explorer's test points; (None, None)
        without test labels."""
        if not self.labelled:
            return None, None
        param = next(model.parameters())
        loss_fn = self.influence.objective.loss_fn
        losses, preds = [], []
        with torch.no_grad():
            for start in range(0, len(self.x_test), self.TEST_BATCH):
                part = slice(start, start + self.TEST_BATCH)
                output = model(cast_inputs(self.x_test[part], param.dtype, param.device))
                y = cast_targets(loss_fn, self.y_test[part], param.dtype, param.device)
                losses.append(loss_fn(output, y).double().cpu())
                preds.append(class_probabilities(output).argmax(1).cpu())
        pred = torch.cat(preds).numpy()
        return float(np.mean(pred == self._true)), float(torch.cat(losses).mean())

    def _review_result(
        self, model: torch.nn.Module, fixes: dict, selected: int | None, seconds: float
    ) -> ReviewResult:
        before = self._test_metrics(self.influence.objective.model_copy())
        after = self._test_metrics(model)
        removed = sum(label is None for label in fixes.values())
        point: dict = dict.fromkeys(
            ("prediction_before", "prediction_after", "probability_before", "probability_after")
        )
        if selected is not None:
            param = next(model.parameters())
            with torch.no_grad():
                x = cast_inputs(self.x_test[selected : selected + 1], param.dtype, param.device)
                p = class_probabilities(model(x))[0].cpu()
            point = {
                "prediction_before": self._label(int(self._pred[selected])),
                "probability_before": float(self._conf[selected]),
                "prediction_after": self._label(int(p.argmax())),
                "probability_after": float(p.max()),
            }
        return ReviewResult(
            accuracy_before=before[0],
            accuracy_after=after[0],
            loss_before=before[1],
            loss_after=after[1],
            n_relabelled=len(fixes) - removed,
            n_removed=removed,
            selected=selected,
            model=model,
            seconds=seconds,
            **point,
        )

    def _retrain_state(self, result: ReviewResult) -> ReviewRetrainState:
        counts = {"n_relabelled": result.n_relabelled, "n_removed": result.n_removed}
        return {
            "state": "done",
            "progress": 1.0,
            "message": f"Retrained with {self._fixes_text(counts)} in {result.seconds:.1f} s.",
            "accuracy_before": result.accuracy_before,
            "accuracy_after": result.accuracy_after,
            "loss_before": result.loss_before,
            "loss_after": result.loss_after,
            "selected": result.selected,
            "prediction_before": result.prediction_before,
            "prediction_after": result.prediction_after,
            "probability_before": result.probability_before,
            "probability_after": result.probability_after,
            **counts,
        }

    # ----- messages from the front end -----------------------------------------------------
    def _on_review_message(self, _widget, content, _buffers) -> None:
        """The Review tab's controls: {"event": NAME, "index": i, "label": c} (see protocol)."""
        event = content.get("event") if isinstance(content, dict) else None
        actions = {
            REVIEW_RELABEL: lambda: self.relabel(content.get("index"), content.get("label")),
            REVIEW_REMOVE: lambda: self.mark_for_removal(content.get("index")),
            REVIEW_CLEAR: lambda: self.clear_fix(content.get("index")),
            REVIEW_CLEAR_ALL: self.clear_fixes,
            REVIEW_RETRAIN: self.retrain_with_fixes,
            REVIEW_CANCEL: self.cancel_retrain,
        }
        if event in actions:
            try:
                actions[event]()
            except (TypeError, ValueError) as err:  # shown in the tab, never a traceback
                self.review_retrain = {**self.review_retrain, "message": str(err)}
            except Exception as err:
                self.error = f"{event}: {err}"
                log.exception("InfluenceExplorer could not handle %s", event)
