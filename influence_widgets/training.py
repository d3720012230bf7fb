"""Train a model to a tight minimum of the regularised risk, as influence functions assume.

R(theta) = (1/n) sum_i L(z_i, theta) + (l2/2) ||theta||^2, minimised by full-batch L-BFGS with a
strong-Wolfe line search (the paper's code trains its convex models the same way).

With ``recorder=`` (an ``iw.CheckpointRecorder``) each round of L-BFGS iterations is saved for
TracIn as the state theta_k where the round starts, with the learning rate of the gradient step
of the same length: eta_k = ||theta_{k+1} - theta_k|| / ||grad R(theta_k)||. L-BFGS does not step
along -grad R, so TracIn over these checkpoints is TracIn's first-order reading of each round.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from influence_widgets.core.errors import check_nonnegative, check_positive_int
from influence_widgets.core.losses import LossFn, resolve_loss
from influence_widgets.core.model_checks import select_parameters, warn_train_mode
from influence_widgets.core.objective import (
    TrainingSet,
    cast_inputs,
    cast_targets,
    validate_batch,
)
from influence_widgets.core.progress import progress_bar
from influence_widgets.methods.checkpoints import CheckpointRecorder, copy_state

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


def _training_pair(data) -> tuple[torch.Tensor, torch.Tensor, TrainingSet]:
    """All training points (X, y) of ``data`` (any form ``Influence`` takes), uncast."""
    ts = TrainingSet(data, "data")
    return (*ts.tensors(), ts)


@contextlib.contextmanager
def _fitting(model: torch.nn.Module, names: Sequence[str]) -> Iterator[None]:
    """Every module in eval mode and only ``names`` trainable while fitting; afterwards each
    module's train/eval flag and each parameter's ``requires_grad`` and ``.grad`` as before."""
    modes = [(m, m.training) for m in model.modules()]
    saved = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    for name, p in model.named_parameters():
        p.requires_grad_(name in names)
    model.eval()
    try:
        yield
    finally:
        for p, flag, grad in saved:
            p.requires_grad_(flag)
            p.grad = grad
        for m, flag in modes:
            m.training = flag


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
    recorder: CheckpointRecorder | None = None,
) -> TrainingReport:
    """Fit ``model`` in place by full-batch L-BFGS on the mean loss plus (l2/2)||theta||^2.

    Args:
        model: the model to train (modified in place, like ``fit``); fitted in eval mode, as
            ``Influence`` evaluates it (an :class:`InfluenceWarning` names BatchNorm or Dropout
            modules left in train mode); each module's mode is restored afterwards.
        data: a pair ``(X, y)``, a torch Dataset of ``(x, y)`` items, or an ``iw.datasets``
            Dataset (its training split): any training set ``Influence`` takes.
        l2: L2 coefficient over the trained parameters; use the same value for ``Influence``.
        loss: as for ``Influence``.
        params: names of the parameters to train (default all trainable); others stay frozen.
        tol: stop once ||grad R|| <= tol; default 1e-8 in float64, 1e-5 in float32.
        max_iter: the most L-BFGS iterations.
        progress: show a progress bar.
        recorder: a :class:`~influence_widgets.CheckpointRecorder` of ``model`` that saves, for
            TracIn, the state where each round of (up to 20) L-BFGS iterations starts, with the
            round's step length ||Delta theta|| / ||grad R|| as its learning rate.

    Returns a :class:`TrainingReport`; ``converged`` is False when ``max_iter`` ran out first.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    l2 = check_nonnegative(l2, "l2")
    max_iter = check_positive_int(max_iter, "max_iter")
    if tol is not None and not check_nonnegative(tol, "tol") > 0:
        raise ValueError(f"tol: must be > 0, got {tol!r}")
    if recorder is not None and not (
        isinstance(recorder, CheckpointRecorder) and recorder.model is model
    ):
        raise TypeError(
            "recorder: expected an iw.CheckpointRecorder(model) of the model being trained, got "
            + (
                "a recorder of another model"
                if isinstance(recorder, CheckpointRecorder)
                else type(recorder).__name__
            )
        )
    loss_fn = resolve_loss(loss)
    names = select_parameters(model, params)
    named = dict(model.named_parameters())
    theta = [named[n] for n in names]
    dtype, device = theta[0].dtype, theta[0].device
    tol = tol if tol is not None else default_tolerance(dtype)
    X, y, ts = _training_pair(data)
    X = cast_inputs(X, dtype, device)
    warn_train_mode(model, "iw.train fits it", stacklevel=2)
    with _fitting(model, names):
        validate_batch(model, loss_fn, X, y, (ts.x_name, ts.y_name), dtype)
        y = cast_targets(loss_fn, y, dtype, device)
        return _minimise(model, loss_fn, X, y, theta, l2, tol, max_iter, progress, recorder)


@dataclass
class _Risk:
    """R(theta) = mean_i L(z_i, theta) + (l2/2) ||theta||^2 of ``model`` on (X, y), and its
    gradient norm, for the full-batch L-BFGS of :func:`_minimise`."""

    model: torch.nn.Module
    loss_fn: LossFn
    X: torch.Tensor
    y: torch.Tensor
    theta: list[torch.nn.Parameter]
    l2: float

    def __call__(self) -> torch.Tensor:
        value = self.loss_fn(self.model(self.X), self.y).mean()
        if self.l2:
            value = value + 0.5 * self.l2 * sum(p.pow(2).sum() for p in self.theta)
        return value

    def value(self) -> float:
        with torch.no_grad():
            return float(self())

    def grad_norm(self) -> float:
        """||grad R(theta)||."""
        self.model.zero_grad(set_to_none=True)
        self().backward()
        return float(torch.sqrt(sum(p.grad.pow(2).sum() for p in self.theta)))


def _lbfgs(risk: _Risk, tol: float) -> torch.optim.LBFGS:
    """Full-batch L-BFGS over theta with a strong-Wolfe line search, 20 iterations a step."""
    return torch.optim.LBFGS(
        risk.theta,
        lr=1.0,
        max_iter=20,
        history_size=50,
        line_search_fn="strong_wolfe",
        tolerance_grad=tol / 10,
        tolerance_change=1e-16,
    )


def _step_length(theta: list[torch.nn.Parameter], start: list[torch.Tensor]) -> float:
    """||theta - start|| over all trained parameters."""
    with torch.no_grad():
        return float(sum((p - q).pow(2).sum() for p, q in zip(theta, start, strict=True)).sqrt())


def _minimise(
    model: torch.nn.Module,
    loss_fn: LossFn,
    X: torch.Tensor,
    y: torch.Tensor,
    theta: list[torch.nn.Parameter],
    l2: float,
    tol: float,
    max_iter: int,
    progress: bool,
    recorder: CheckpointRecorder | None = None,
) -> TrainingReport:
    """Full-batch L-BFGS on R(theta) until ||grad R|| <= tol, the precision floor or max_iter;
    each round's starting state saved to ``recorder`` with its step length (module docstring)."""
    risk = _Risk(model, loss_fn, X, y, theta, l2)
    opt = _lbfgs(risk, tol)

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        value = risk()
        value.backward()
        return value

    start = time.perf_counter()
    iterations = 0
    bar = progress_bar(total=max_iter, desc="L-BFGS", disable=not progress)
    try:
        gn = risk.grad_norm()
        best, stalled, last_risk = gn, 0, risk.value()
        while gn > tol and iterations < max_iter:
            before = opt.state[theta[0]].get("n_iter", 0)
            state = copy_state(model) if recorder is not None else None
            start_theta = [p.detach().clone() for p in theta] if recorder is not None else None
            opt.step(closure)
            done = opt.state[theta[0]].get("n_iter", 0) - before
            if recorder is not None and gn > 0:
                recorder.save(lr=_step_length(theta, start_theta) / gn, state=state)
            iterations += done
            bar.update(done)
            gn, now_risk = risk.grad_norm(), risk.value()
            bar.set_postfix(grad_norm=f"{gn:.2e}")
            # Stop at the precision floor: three rounds of steps in which neither ||grad R|| fell
            # by 10% nor the risk moved beyond rounding. Both, because on a non-convex model the
            # gradient norm is not monotone while the risk still falls.
            risk_moved = last_risk - now_risk > 1e-12 * max(1.0, abs(last_risk))
            stalled = 0 if gn < 0.9 * best or risk_moved else stalled + 1
            best, last_risk = min(best, gn), now_risk
            if done == 0 or stalled >= 3:
                break
        final_risk = risk.value()
        if gn <= tol:
            bar.complete()  # converged: a full bar, not a red one stopped at 64/1000
    finally:
        bar.close()
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
    X, y, _ = _training_pair(data)
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
        w, b = lin.weight.double().cpu()[0], lin.bias.double().cpu()  # on the CPU, as X64
        margin = (2.0 * y.double().cpu() - 1.0) * (torch.as_tensor(X64) @ w + b)
        theta2 = w.pow(2).sum() + b.pow(2).sum()
        risk = float(torch.clamp(1 - margin, min=0).mean() + 0.5 * l2 * theta2)
    return TrainingReport(
        risk=risk,
        grad_norm=float("nan"),  # the hinge risk has no gradient at its kinks
        iterations=int(svc.n_iter_),
        converged=converged,
        seconds=time.perf_counter() - start,
    )
