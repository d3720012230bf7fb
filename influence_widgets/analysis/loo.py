"""Leave-one-out retraining: the actual change of test losses when training points are removed.

The paper's protocol (Fig 2): retrain without z_i, warm-started from theta_hat, on the same risk
(mean loss over the n - 1 remaining points plus the same (l2/2)||theta||^2), and compare the test
loss with that of a baseline retrained the same way on all n points (which removes the drift that
retraining alone causes). The user's model is never modified: every retrain works on a copy.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from influence_widgets.core.losses import LossFn, resolve_loss
from influence_widgets.core.objective import TrainingSet
from influence_widgets.training import train

__all__ = ["actual_removal_effects"]

Retrain = Callable[[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]], object]


def _test_losses(model, loss_fn: LossFn, x_test: torch.Tensor, y_test: torch.Tensor):
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        return loss_fn(model(x_test.to(dtype)), y_test).detach()


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

    Returns ``(effects, drift)``: effects (len(indices), T) = L(z_test, theta_-i) -
    L(z_test, theta_base), and drift (T,) = L(z_test, theta_base) - L(z_test, theta_hat), where
    theta_base is the baseline retrained on all n points.
    """
    loss_fn = resolve_loss(loss)
    ts = TrainingSet(train_data, "train_data")
    X, y = ts.take(torch.arange(ts.n))

    def fit(data) -> torch.nn.Module:
        m = copy.deepcopy(model)
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

    original = _test_losses(model, loss_fn, x_test, y_test)
    baseline = _test_losses(fit((X, y)), loss_fn, x_test, y_test)
    keep = torch.ones(ts.n, dtype=torch.bool)
    effects = torch.empty(len(indices), len(y_test), dtype=baseline.dtype)
    for row, i in enumerate(tqdm(indices, desc="leave-one-out", disable=not progress)):
        keep[i] = False
        effects[row] = _test_losses(fit((X[keep], y[keep])), loss_fn, x_test, y_test) - baseline
        keep[i] = True
    return effects, baseline - original
