"""Leave-one-out retraining: the actual change of test losses when training points are removed.

The paper's protocol (Fig 2): retrain without z_i, warm-started from theta_hat, on the same risk
(mean loss over the n - 1 remaining points plus the same (l2/2)||theta||^2), and compare the test
loss with that of a baseline retrained the same way on all n points (which removes the drift that
retraining alone causes). The user's model is never modified: every retrain works on a copy.

:func:`validate_loo` puts the two sides together for one test point: the prediction
-(1/n) I_up,loss(z_i, z_test) (``Influence.predicted_removal_effect``) against the actual change.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from influence_widgets.core.errors import (
    check_cancel_event,
    check_index,
    check_positive_int,
    check_seed,
)
from influence_widgets.core.influence import Influence, check_influence
from influence_widgets.core.losses import LossFn, resolve_loss
from influence_widgets.core.objective import TrainingSet, one_test_point
from influence_widgets.core.progress import progress_bar
from influence_widgets.training import train

__all__ = ["LOOResult", "actual_removal_effects", "validate_loo"]

Retrain = Callable[[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]], object]
STRATEGIES = ("maxinf", "random")


class RetrainCancelled(Exception):
    """Raised inside a retrain when the cancel event is set: the retrain is abandoned."""


@contextmanager
def stop_on_cancel(cancel: threading.Event | None, model: torch.nn.Module) -> Iterator[None]:
    """Inside the block, every forward call of ``model`` (a retrain's copy) first checks
    ``cancel`` and raises :class:`RetrainCancelled` once it is set: a retrain in progress stops at
    its next function evaluation, not after up to ``max_iter`` L-BFGS steps."""
    if cancel is None:
        yield
        return

    def check(_module, _args) -> None:
        if cancel.is_set():
            raise RetrainCancelled

    check(model, ())
    handle = model.register_forward_pre_hook(check)
    try:
        yield
    finally:
        handle.remove()


def _test_losses(model, loss_fn: LossFn, x_test: torch.Tensor, y_test: torch.Tensor):
    """L(z_test, theta) of ``model`` for each test point, (T,), on the model's device."""
    param = next(model.parameters())
    x = x_test.to(param.device)
    x = x.to(param.dtype) if x.is_floating_point() else x
    with torch.no_grad():
        return loss_fn(model(x), y_test.to(param.device)).detach()


def actual_removal_effects(
    model: torch.nn.Module,
    train_data,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    indices: Sequence[int],
    *,
    l2: float = 0.0,
    loss: str | LossFn = "cross_entropy",
    params: Sequence[str] | None = None,
    tol: float | None = None,
    max_iter: int = 1000,
    retrain: Retrain | None = None,
    progress: bool = True,
    cancel: threading.Event | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Actual change of each test loss when each training point is removed and the model retrained.

    Args:
        model: the trained model at theta_hat (copied, never modified).
        train_data: ``(X, y)`` or a torch Dataset, the n training points.
        x_test, y_test: T test points.
        indices: the training points to remove, one at a time.
        l2, loss, params, tol, max_iter: the risk and the L-BFGS settings, as for ``iw.train``.
        retrain: ``retrain(model_copy, (X_minus_i, y_minus_i))`` that trains the copy in place, for
            models that need SGD/Adam; default full-batch L-BFGS warm-started from theta_hat.
        cancel: when set (from another thread), stop at once: the retrain in progress is
            abandoned at the copy's next forward call (a custom ``retrain`` too, as long as it
            calls the model it is given), the retrains already done are kept.

    Returns ``(effects, drift)``: effects (m, T) = L(z_test, theta_-i) - L(z_test, theta_base) for
    the first m indices (m < len(indices) only when cancelled), and drift (T,) =
    L(z_test, theta_base) - L(z_test, theta_hat), where theta_base is the baseline retrained on
    all n points (NaN when cancelled before the baseline was done); both on the model's device
    (the test points are moved there, the training data is moved by ``iw.train``).
    """
    loss_fn = resolve_loss(loss)
    check_cancel_event(cancel)
    ts = TrainingSet(train_data, "train_data")
    X, y = ts.take(torch.arange(ts.n))

    def fit(data) -> torch.nn.Module:
        m = copy.deepcopy(model)
        with stop_on_cancel(cancel, m):
            if retrain is not None:
                retrain(m, data)
            else:
                train(
                    m,
                    data,
                    l2=l2,
                    loss=loss_fn,
                    params=params,
                    tol=tol,
                    max_iter=max_iter,
                    progress=False,
                )
        return m

    bar = progress_bar(total=len(indices) + 1, desc="leave-one-out", disable=not progress)
    original = _test_losses(model, loss_fn, x_test, y_test)
    rows = []
    try:
        baseline = _test_losses(fit((X.clone(), y.clone())), loss_fn, x_test, y_test)
        bar.update()
        keep = torch.ones(ts.n, dtype=torch.bool)
        for i in indices:
            keep[i] = False
            rows.append(_test_losses(fit((X[keep], y[keep])), loss_fn, x_test, y_test) - baseline)
            keep[i] = True
            bar.update()
    except RetrainCancelled:
        if not rows:  # cancelled before any removal: no baseline either
            baseline = torch.full_like(original, float("nan"))
    finally:
        bar.close()
    effects = torch.stack(rows) if rows else baseline.new_zeros(0, len(baseline))
    return effects, baseline - original


@dataclass(frozen=True)
class LOOResult:
    """Influence's prediction against leave-one-out retraining, for one test point.

    ``predicted[j]`` is -(1/n) I_up,loss(z_removed[j], z_test), the predicted change of the test
    loss when that training point is removed; ``actual[j]`` is the change measured by retraining,
    relative to a baseline retrained on all n points (``drift`` is that baseline's own change from
    theta_hat: near 0 when theta_hat was a tight minimum). Positive: the point helped.
    """

    test_index: int | None
    removed: np.ndarray  # (m,) training indices, in the order they were retrained
    predicted: np.ndarray  # (m,)
    actual: np.ndarray  # (m,)
    pearson: float  # NaN below 3 points or with no spread
    spearman: float
    drift: float
    strategy: str
    solver: str
    seconds: float
    cancelled: bool = False

    @property
    def n_removed(self) -> int:
        return len(self.removed)

    def plot(self, ax=None):
        """Scatter of actual against predicted with the line y = x and R in the title (Fig 2)."""
        from influence_widgets.plots import loo_scatter

        return loo_scatter(self, ax=ax)

    def __repr__(self) -> str:
        state = ", cancelled" if self.cancelled else ""
        return (
            f"LOOResult(n_removed={self.n_removed}, pearson={self.pearson:.4f}, "
            f"spearman={self.spearman:.4f}, drift={self.drift:.3g}, strategy={self.strategy!r}, "
            f"solver={self.solver!r}, seconds={self.seconds:.1f}{state})"
        )


def _correlations(predicted: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    if len(predicted) < 3 or np.ptp(predicted) == 0 or np.ptp(actual) == 0:
        return float("nan"), float("nan")
    return float(pearsonr(predicted, actual).statistic), float(spearmanr(predicted, actual)[0])


def _checked_loo_arguments(
    influence, test: tuple, n_remove, strategy, retrain, seed, test_index, cancel
) -> tuple:
    """validate_loo's arguments checked (errors name the argument): (x, y) of the one test point
    ``test`` = (x_test, y_test) (y the predicted class when not given), n_remove, the seed and
    the test index."""
    check_influence(influence)
    n_remove = check_positive_int(n_remove, "n_remove")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {STRATEGIES}, got {strategy!r}")
    if retrain is not None and not callable(retrain):
        raise TypeError(f"retrain: expected a callable or None, got {type(retrain).__name__}")
    check_cancel_event(cancel)
    seed = check_seed(seed)
    test_index = None if test_index is None else check_index(test_index, "test_index")
    x_test, y_test = test
    if y_test is None:
        y_test = influence.predicted_labels(x_test)
    x, y = one_test_point(x_test, y_test, "validate_loo")
    if n_remove > influence.n:
        raise ValueError(f"n_remove: {n_remove} is more than the {influence.n} training points")
    return x, y, n_remove, seed, test_index


def _points_to_remove(
    predicted: torch.Tensor, n_remove: int, strategy: str, seed: int
) -> torch.Tensor:
    """The training indices validate_loo removes: ``"maxinf"``, the ``n_remove`` of largest
    |predicted removal effect|; ``"random"``, ``n_remove`` drawn uniformly with ``seed``."""
    if strategy == "maxinf":
        return torch.argsort(predicted.abs(), descending=True)[:n_remove]
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(len(predicted), generator=gen)[:n_remove]


def validate_loo(
    influence: Influence,
    x_test,
    y_test,
    n_remove: int = 40,
    strategy: str = "maxinf",
    retrain: Retrain | None = None,
    seed: int = 0,
    *,
    test_index: int | None = None,
    tol: float | None = None,
    max_iter: int = 1000,
    progress: bool = True,
    cancel: threading.Event | None = None,
) -> LOOResult:
    """Check influence against leave-one-out retraining on one test point, as in the paper's Fig 2.

    Predicts the removal effect of every training point, picks ``n_remove`` of them (``"maxinf"``:
    largest |prediction|, as the paper; ``"random"``: uniformly, seeded), retrains without each
    one and measures the change of the test loss.

    Args:
        influence: a fitted (or fittable) :class:`~influence_widgets.Influence`; its model copy,
            loss, L2 and ``params`` define the retraining. The user's model is never touched.
        x_test, y_test: ONE test point, with a leading batch dimension (``X[i:i+1]``);
            ``y_test=None`` checks the loss of the predicted class, L(z_test, theta_hat) with
            z_test = (x_test, argmax_c p(c | x_test, theta_hat)).
        n_remove: how many training points to remove, one at a time.
        strategy: "maxinf" or "random".
        retrain: ``retrain(model_copy, (X, y))`` training the copy in place; default full-batch
            L-BFGS warm-started from theta_hat to ``tol`` (1e-8 in float64), up to ``max_iter``.
        seed: for ``strategy="random"``, an integer in [0, 2**64).
        test_index: recorded in the result (the explorer passes the gallery index): None or an
            integer >= 0.
        progress: a progress bar over the retrains (also reported to the explorer).
        cancel: a ``threading.Event``; when set, abandon the retrain in progress (at the model
            copy's next forward call) and return the retrains done (``cancelled=True``).

    Returns a :class:`LOOResult` with Pearson and Spearman R and ``plot()``.
    """
    x, y, n_remove, seed, test_index = _checked_loo_arguments(
        influence, (x_test, y_test), n_remove, strategy, retrain, seed, test_index, cancel
    )
    start = time.perf_counter()
    predicted_all = influence.predicted_removal_effect(x, y)[0].detach().cpu()
    removed = _points_to_remove(predicted_all, n_remove, strategy, seed)
    obj = influence.objective
    ts = influence.train
    train_data = (ts.X, ts.y) if ts.X is not None else ts.dataset
    effects, drift = actual_removal_effects(
        obj.model_copy(),
        train_data,
        obj.cast_inputs(x),
        obj.cast_targets(y),
        removed.tolist(),
        l2=obj.l2,
        loss=obj.loss_fn,
        params=list(obj.spec.names),
        tol=tol,
        max_iter=max_iter,
        retrain=retrain,
        progress=progress,
        cancel=cancel,
    )
    done = len(effects)
    predicted = predicted_all[removed[:done]].numpy()
    actual = effects[:, 0].detach().cpu().numpy()
    pearson, spearman = _correlations(predicted, actual)
    return LOOResult(
        test_index=test_index,
        removed=removed[:done].numpy(),
        predicted=predicted,
        actual=actual,
        pearson=pearson,
        spearman=spearman,
        drift=float(drift[0]),
        strategy=strategy,
        solver=influence.solver.name,
        seconds=time.perf_counter() - start,
        cancelled=done < n_remove,
    )
