"""The Review tab's "Retrain with fixes": a copy of the model retrained on the fixed training data
(``iw.train`` warm-started from theta_hat, with the Influence's loss, parameters and L2, so the
result is the minimum of R on the fixed data), and the test set measured before -> after.

The outcome's fields are defined once, in :class:`~influence_widgets.widgets.protocol.ReviewOutcome`
(what the front end shows); :class:`ReviewResult` has them as attributes, with the model.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import numpy as np
import torch

from influence_widgets import training
from influence_widgets.analysis.loo import RetrainCancelled, stop_on_cancel
from influence_widgets.core.losses import class_probabilities
from influence_widgets.core.objective import cast_inputs, cast_targets
from influence_widgets.widgets.context import ExplorerContext
from influence_widgets.widgets.hints import fixes_code, retrained_code
from influence_widgets.widgets.jobs import Job
from influence_widgets.widgets.protocol import ReviewOutcome, ReviewRetrainState, job_failed

__all__ = ["ReviewResult", "Retrain", "fixes_text"]

log = logging.getLogger("influence_widgets")

ReviewResult = dataclasses.make_dataclass(
    "ReviewResult",
    [
        *ReviewOutcome.__annotations__.items(),
        ("model", "torch.nn.Module"),
        ("seconds", "float"),
        ("fixes", "dict[int, int | None]"),
    ],
    frozen=True,
)
ReviewResult.__module__ = __name__  # make_dataclass takes module= only from Python 3.12
ReviewResult.__doc__ = """What "Retrain with fixes" measured: the attributes of
:class:`~influence_widgets.widgets.protocol.ReviewOutcome` (accuracy_before, accuracy_after,
loss_before, loss_after (mean test loss without the L2 term; None without test labels),
n_relabelled, n_removed, selected (the test point selected when it started, or None),
prediction_before, prediction_after, probability_before, probability_after), and ``model``: the
retrained copy of the model (``InfluenceExplorer.explore_retrained`` opens an explorer on it),
``seconds``: how long the retrain took, ``fixes``: the fixes it used, {training index: new label
(class index), or None = removed}."""


def fixes_text(counts: dict) -> str:
    """'<n> relabelled, <m> removed' for fix counts {n_relabelled, n_removed}."""
    return f"{counts['n_relabelled']} relabelled, {counts['n_removed']} removed"


def retrain_state(result: ReviewResult, number: int) -> ReviewRetrainState:
    """The ``review_retrain`` trait after a finished retrain by explorer number ``number``."""
    outcome = {name: getattr(result, name) for name in ReviewOutcome.__annotations__}
    return {
        "state": "done",
        "progress": 1.0,
        "message": f"Retrained with {fixes_text(outcome)} in {result.seconds:.1f} s.",
        "code": retrained_code(number),
        **outcome,
    }


class Retrain:
    """Retrains a copy of the model with fixes {training index: new label, or None = remove}."""

    MAX_ITER = 1000  # L-BFGS iterations
    TEST_BATCH = 2048  # test points per forward pass when measuring before and after

    def __init__(self, context: ExplorerContext) -> None:
        self.context = context
        self.job = Job()
        self.result: ReviewResult | None = None  # the latest finished retrain's

    def worker(
        self, data: tuple, fixes: dict, selected: int | None, finished: list, cancel
    ) -> None:
        """Retrain on ``data`` (the training set with ``fixes``), then show the outcome; the
        result is appended to ``finished`` (not when cancelled or failed)."""
        jobs, view = self.context.jobs, self.context.view

        def show(_step: str, fraction: float) -> None:
            message = f"Retraining: {round(fraction * self.MAX_ITER)} L-BFGS iterations so far..."
            view.review_retrain = {**view.review_retrain, "progress": fraction, "message": message}

        try:
            start = time.perf_counter()
            with jobs.progress(show, "L-BFGS", cancel):
                model = self._retrained(data, cancel)
            result = self._result(model, fixes, selected, time.perf_counter() - start)
        except RetrainCancelled:
            cancelled = {"state": "cancelled", "progress": 1.0, "message": "Retrain cancelled."}
            jobs.finish("review_retrain", cancelled)
            return
        except Exception as err:  # shown in the tab and logged
            log.exception("InfluenceExplorer retrain with fixes failed")
            failed = job_failed(-1, "Retrain with fixes", err)
            fix = (
                f" What to do: check the fixes, in a cell: {fixes_code(self.context.number)}; then "
                "ex.clear_fixes() starts over."
            )
            jobs.finish("review_retrain", {**failed, "message": failed["message"] + fix})
            return
        self.result = result
        finished.append(result)
        jobs.finish("review_retrain", retrain_state(result, self.context.number))

    def _retrained(self, data: tuple, cancel: threading.Event) -> torch.nn.Module:
        """A copy of the model at theta_hat, trained on ``data`` to the minimum of R."""
        inf = self.context.influence
        model = inf.objective.model_copy()
        with stop_on_cancel(cancel, model):
            training.train(
                model,
                data,
                l2=inf.objective.l2,
                loss=inf.config.loss,
                params=list(inf.objective.spec.names),  # theta only: a top layer stays one
                max_iter=self.MAX_ITER,
                progress=False,
            )
        return model

    def test_metrics(self, model: torch.nn.Module) -> tuple[float | None, float | None]:
        """(accuracy, mean test loss) of ``model`` on the explorer's test points; (None, None)
        without test labels."""
        tests = self.context.tests
        if not tests.labelled:
            return None, None
        param = next(model.parameters())
        loss_fn = self.context.influence.objective.loss_fn
        losses, preds = [], []
        with torch.no_grad():
            for start in range(0, len(tests), self.TEST_BATCH):
                part = slice(start, start + self.TEST_BATCH)
                output = model(cast_inputs(tests.x[part], param.dtype, param.device))
                y = cast_targets(loss_fn, tests.y[part], param.dtype, param.device)
                losses.append(loss_fn(output, y).double().cpu())
                preds.append(class_probabilities(output).argmax(1).cpu())
        pred = torch.cat(preds).numpy()
        return float(np.mean(pred == tests.true)), float(torch.cat(losses).mean())

    def _prediction(self, model: torch.nn.Module, selected: int | None) -> dict:
        """The selected test point's prediction before and after (None without a selection)."""
        if selected is None:
            return dict.fromkeys(
                ("prediction_before", "prediction_after", "probability_before", "probability_after")
            )
        tests, label = self.context.tests, self.context.label
        param = next(model.parameters())
        with torch.no_grad():
            x = cast_inputs(tests.x[selected : selected + 1], param.dtype, param.device)
            p = class_probabilities(model(x))[0].cpu()
        return {
            "prediction_before": label(int(tests.predicted[selected])),
            "probability_before": float(tests.confidence[selected]),
            "prediction_after": label(int(p.argmax())),
            "probability_after": float(p.max()),
        }

    def _result(
        self, model: torch.nn.Module, fixes: dict, selected: int | None, seconds: float
    ) -> ReviewResult:
        before = self.test_metrics(self.context.influence.objective.model_copy())
        after = self.test_metrics(model)
        removed = sum(label is None for label in fixes.values())
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
            fixes=dict(fixes),
            **self._prediction(model, selected),
        )
