"""Train a model to a tight minimum of the regularised risk, as influence functions assume.

R(theta) = (1/n) sum_i L(z_i, theta) + (l2/2) ||theta||^2, minimised by full-batch L-BFGS with a
strong-Wolfe line search (the paper's code trains its convex models the same way).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from influence_widgets.core.errors import check_nonnegative, check_positive_int
from influence_widgets.core.losses import (
    LossFn,
    expects_binary_labels,
    expects_class_indices,
    resolve_loss,
)
from influence_widgets.core.objective import TrainingSet, probe_output, validate_targets
from influence_widgets.core.progress import progress_bar
from influence_widgets.datasets import Dataset

__all__ = ["TrainingReport", "train", "train_hinge"]


@dataclass(frozen=True)
class TrainingReport:
    """How training ended: the risk, ||grad R|| and whether it is below ``tol``."""

    risk: float
    grad_norm: float
    iterations: int
    converged: bool
    seconds: float

    def __repr__(self) -> str:
        return (
            f"TrainingReport(risk={self.risk:.6g}, grad_norm={self.grad_norm:.3g}, "
            f"iterations={self.iterations}, converged={self.converged}, "
            f"seconds={self.seconds:.3g})"
        )


def default_tolerance(dtype: torch.dtype) -> float:
    """The ||grad R|| at which training stops by default: 1e-8 in float64, 1e-5 otherwise."""
    return 1e-8 if dtype == torch.float64 else 1e-5


def _training_pair(data) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, Dataset):
        return data.X_train, data.y_train
    ts = TrainingSet(data, "data")
    return ts.take(torch.arange(ts.n))


def train(
    model: torch.nn.Module,
    data,
    *,
    l2: float = 0.0,
    loss: str | LossFn = "cross_entropy",
    params: Sequence[str] | None = None,
    tol: float | None = None,
    max_iter: int = 1000,
    progress: bool = True,
) -> TrainingReport:
    """Fit ``model`` in place by full-batch L-BFGS on the mean loss plus (l2/2)||theta||^2.

    Args:
        model: the model to train (modified in place, like ``fit``); evaluated in eval mode.
        data: an ``iw.datasets`` Dataset (its training split) or a pair ``(X, y)``.
        l2: L2 coefficient over the trained parameters; use the same value for ``Influence``.
        loss: as for ``Influence``.
        params: names of the parameters to train (default all trainable); others stay frozen.
        tol: stop once ||grad R|| <= tol; default 1e-8 in float64, 1e-5 in float32.
        max_iter: the most L-BFGS iterations.
        progress: show a progress bar.

    Returns a :class:`TrainingReport`; ``converged`` is False when ``max_iter`` ran out first.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    l2 = check_nonnegative(l2, "l2")
    max_iter = check_positive_int(max_iter, "max_iter")
    if tol is not None and not check_nonnegative(tol, "tol") > 0:
        raise ValueError(f"tol: must be > 0, got {tol!r}")
    loss_fn = resolve_loss(loss)
    named = dict(model.named_parameters())
    if params is None:
        names = [n for n, p in named.items() if p.requires_grad]
        if not names:
            raise ValueError("model: has no trainable parameters; pass params=[...] to name some")
    else:
        names = [params] if isinstance(params, str) else list(params)
        unknown = [n for n in names if not isinstance(n, str) or n not in named]
        if unknown:
            raise ValueError(f"params: no parameter named {unknown[0]!r}; available: {list(named)}")
        if not names or len(set(names)) != len(names):
            raise ValueError("params: must name at least one parameter, each at most once")
    theta = [named[n] for n in names]
    dtype, device = theta[0].dtype, theta[0].device
    tol = tol if tol is not None else default_tolerance(dtype)

    X, y = _training_pair(data)
    for t, name in ((X, "data X"), (y, "data y")):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: contains NaN or infinite values")
    X = X.to(device=device, dtype=dtype) if X.is_floating_point() else X.to(device)
    validate_targets(loss_fn, y, probe_output(model, X, "data X"), "data y")
    y = y.to(device)
    if expects_class_indices(loss_fn) or expects_binary_labels(loss_fn):
        y = y.long()
    elif y.is_floating_point():
        y = y.to(dtype)

    was_training = model.training
    frozen = {n: p.requires_grad for n, p in named.items()}
    for n, p in named.items():
        p.requires_grad_(n in names)
    model.eval()

    def risk() -> torch.Tensor:
        value = loss_fn(model(X), y).mean()
        if l2:
            value = value + 0.5 * l2 * sum(p.pow(2).sum() for p in theta)
        return value

    def grad_norm() -> float:
        model.zero_grad(set_to_none=True)
        risk().backward()
        return float(torch.sqrt(sum(p.grad.pow(2).sum() for p in theta)))

    opt = torch.optim.LBFGS(
        theta,
        lr=1.0,
        max_iter=20,
        history_size=50,
        line_search_fn="strong_wolfe",
        tolerance_grad=tol / 10,
        tolerance_change=1e-16,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        value = risk()
        value.backward()
        return value

    start = time.perf_counter()
    iterations = 0
    bar = progress_bar(total=max_iter, desc="L-BFGS", disable=not progress)
    try:
        gn = grad_norm()
        best, stalled = gn, 0
        with torch.no_grad():
            last_risk = float(risk())
        while gn > tol and iterations < max_iter:
            before = opt.state[opt._params[0]].get("n_iter", 0)
            opt.step(closure)
            done = opt.state[opt._params[0]].get("n_iter", 0) - before
            iterations += done
            bar.update(done)
            gn = grad_norm()
            with torch.no_grad():
                now_risk = float(risk())
            bar.set_postfix(grad_norm=f"{gn:.2e}")
            # Stop at the precision floor: three rounds of steps in which neither ||grad R|| fell
            # by 10% nor the risk moved beyond rounding. Both, because on a non-convex model the
            # gradient norm is not monotone while the risk still falls.
            risk_moved = last_risk - now_risk > 1e-12 * max(1.0, abs(last_risk))
            stalled = 0 if gn < 0.9 * best or risk_moved else stalled + 1
            best, last_risk = min(best, gn), now_risk
            if done == 0 or stalled >= 3:
                break
        with torch.no_grad():
            final_risk = float(risk())
    finally:
        bar.close()
        for n, p in named.items():
            p.requires_grad_(frozen[n])
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return TrainingReport(
        risk=final_risk,
        grad_norm=gn,
        iterations=iterations,
        converged=gn <= tol,
        seconds=time.perf_counter() - start,
    )


def train_hinge(
    model: torch.nn.Module,
    data,
    *,
    l2: float,
    tol: float = 1e-10,
    max_iter: int = 1_000_000,
) -> TrainingReport:
    """Fit a binary linear model to the minimum of the plain (non-differentiable) hinge risk.

    R(w, b) = (1/n) sum_i max(0, 1 - y_i (w^T x_i + b)) + (l2/2) (||w||^2 + b^2), y_i = -1/+1 for
    labels 0/1: the paper's Fig 3 computes influence (through the smooth hinge) at this solution.
    L-BFGS cannot minimise a kink, so this calls liblinear's dual coordinate descent (scikit-learn's
    ``LinearSVC`` with C = 1/(n l2) and ``intercept_scaling=1``, which regularises b like w: the same
    minimiser as R) and writes the solution into the model.

    Args:
        model: a model with one ``nn.Linear`` of one output, such as ``iw.models.linear_svm``
            (modified in place).
        data: an ``iw.datasets`` Dataset or ``(X, y)`` with labels 0/1.
        l2: the L2 coefficient (> 0).
        tol, max_iter: liblinear's stopping tolerance and iteration limit.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    l2 = check_nonnegative(l2, "l2")
    if l2 == 0:
        raise ValueError("l2: must be > 0 for the hinge risk to have a unique minimum")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if len(linears) != 1 or linears[0].out_features != 1 or linears[0].bias is None:
        raise TypeError(
            "model: train_hinge needs a linear model with one output and a bias "
            "(iw.models.linear_svm)"
        )
    lin = linears[0]
    X, y = _training_pair(data)
    labels = torch.unique(y)
    if not set(labels.tolist()) <= {0, 1}:
        raise ValueError(f"data y: expected labels 0 and 1, got {labels.tolist()[:5]}")
    X64 = X.reshape(len(X), -1).double().cpu().numpy()
    svc = LinearSVC(
        loss="hinge",
        dual=True,
        C=1.0 / (len(X64) * l2),
        fit_intercept=True,
        intercept_scaling=1.0,
        tol=tol,
        max_iter=max_iter,
    )
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        svc.fit(X64, y.cpu().numpy().astype(int))
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(svc.coef_, dtype=lin.weight.dtype))
        lin.bias.copy_(torch.as_tensor(svc.intercept_, dtype=lin.bias.dtype))
        margin = (2.0 * y.double() - 1.0) * (
            torch.as_tensor(X64) @ lin.weight.double()[0] + lin.bias.double()
        )
        theta2 = lin.weight.double().pow(2).sum() + lin.bias.double().pow(2).sum()
        risk = float(torch.clamp(1 - margin, min=0).mean() + 0.5 * l2 * theta2)
    return TrainingReport(
        risk=risk,
        grad_norm=float("nan"),  # the hinge risk has no gradient at its kinks
        iterations=int(svc.n_iter_),
        converged=converged,
        seconds=time.perf_counter() - start,
    )
