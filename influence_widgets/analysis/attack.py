"""Training-set attacks driven by I_pert,loss (Koh & Liang 2017, Section 5.2).

Moving training input x_i by a small delta changes the test loss, after retraining, by about
(1/n) I_pert,loss(z_i, z_test) . delta, where I_pert,loss = -grad L(z_test)^T H^-1 grad_x grad ell_i.
The attack repeatedly moves a few training inputs by ``step_size * sign(I_pert,loss)`` (the
direction that raises the test loss), projects them back into an L-infinity ball of radius ``eps``
around the originals and into the valid input range, retrains warm-started and recomputes
s_test, until the test prediction flips. The user's model and data are never modified: every
step works on copies, and ``AttackResult.poisoned_dataset()`` returns a new training set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from influence_widgets.core.errors import check_nonnegative, check_positive_int
from influence_widgets.core.influence import Influence
from influence_widgets.core.objective import as_tensor
from influence_widgets.core.progress import progress_bar
from influence_widgets.training import train

__all__ = ["AttackResult", "craft_attack", "eight_bit_levels"]

Retrain = Callable[[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]], object]


def eight_bit_levels(levels: float, data_range: float = 1.0) -> float:
    """``levels`` steps of an 8-bit image, in the data's units: levels * data_range / 255.

    With pixels in [0, 1], ``eight_bit_levels(0.5)`` is the paper's eps: a perturbation that
    leaves every rounded 8-bit pixel value unchanged.
    """
    check_nonnegative(levels, "levels")
    if not check_nonnegative(data_range, "data_range") > 0:
        raise ValueError(f"data_range: must be > 0, got {data_range}")
    return float(levels) * float(data_range) / 255.0


@dataclass(frozen=True)
class AttackResult:
    """What :func:`craft_attack` did to one test prediction.

    ``true_class_probability[t]`` is the model's probability of the test point's true class after
    t steps (t = 0: before the attack). ``flipped``: the prediction changed from the true class.
    """

    test_index: int | None
    poisoned: np.ndarray  # (k,) training indices that were perturbed
    original_inputs: torch.Tensor  # (k, *x) their inputs before
    perturbed_inputs: torch.Tensor  # (k, *x) and after
    true_class_probability: list[float]
    probabilities_before: np.ndarray  # (C,)
    probabilities_after: np.ndarray  # (C,)
    prediction_before: int
    prediction_after: int
    flipped: bool
    iterations: int
    eps: float
    step_size: float
    seconds: float
    cancelled: bool = False
    _train: tuple[torch.Tensor, torch.Tensor] = field(default=None, repr=False)

    def poisoned_dataset(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A new training set (X, y): a copy of the original with the perturbed inputs in."""
        X, y = self._train
        X = X.clone()
        X[torch.as_tensor(self.poisoned)] = self.perturbed_inputs.to(X.dtype)
        return X, y.clone()

    @property
    def max_change(self) -> float:
        """The largest absolute change of any input value (<= eps)."""
        return float((self.perturbed_inputs - self.original_inputs).abs().max())

    def __repr__(self) -> str:
        state = ", cancelled" if self.cancelled else ""
        return (
            f"AttackResult(poisoned={self.poisoned.tolist()}, flipped={self.flipped}, "
            f"prediction {self.prediction_before} -> {self.prediction_after}, "
            f"p(true) {self.true_class_probability[0]:.3f} -> "
            f"{self.true_class_probability[-1]:.3f}, iterations={self.iterations}, "
            f"eps={self.eps:.4g}, seconds={self.seconds:.1f}{state})"
        )


def _probabilities(inf: Influence, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities of one test point: softmax, or sigmoid of a single score."""
    obj = inf.objective
    with torch.no_grad():
        out = obj.forward(obj.theta, obj.cast_inputs(x)).reshape(-1)
    if out.numel() == 1:
        p1 = torch.sigmoid(out)[0]
        return torch.stack([1 - p1, p1]).cpu()
    return torch.softmax(out, dim=0).cpu()


def _select(
    inf: Influence, x: torch.Tensor, y: torch.Tensor, n_poison: int, select
) -> torch.Tensor:
    if isinstance(select, str):
        if select != "grad_norm":
            raise ValueError(f"select: expected 'grad_norm' or a list of indices, got {select!r}")
        # The paper's choice: the largest L1 norm of the input gradient of influence.
        scores = torch.empty(inf.n, dtype=inf.objective.dtype)
        for start in range(0, inf.n, 256):
            idx = torch.arange(start, min(start + 256, inf.n))
            pert = inf.perturbation_influence(x, y, idx)[0]
            scores[idx] = pert.reshape(len(idx), -1).abs().sum(1).cpu()
        return torch.argsort(scores, descending=True)[:n_poison]
    idx = inf._index(select, "select")
    if len(idx) != n_poison or len(set(idx.tolist())) != n_poison:
        raise ValueError(f"select: expected {n_poison} distinct training indices, got {select!r}")
    return idx


class _HeadRetrainer:
    """Warm-started retraining when theta is exactly the final Linear layer (a frozen extractor
    with a trainable top layer, the paper's setting): the features of the untouched training
    points cannot change, so they are computed once and only the poisoned rows are recomputed;
    L-BFGS then fits the head on the features alone, the same risk as ``iw.train`` over the whole
    model without running the extractor on every point at every step."""

    def __init__(self, inf: Influence, X: torch.Tensor) -> None:
        obj, head = inf.objective, inf.op.head
        self.head = head
        self.D = head.D
        self.name = next(n for n, m in obj.module.named_modules() if m is head.lin)
        parts = [head._forward(obj.cast_inputs(X[i : i + 1024]))[0] for i in range(0, len(X), 1024)]
        self.features = torch.cat(parts)[:, : self.D]

    def __call__(self, inf: Influence, X: torch.Tensor, y: torch.Tensor, rows: torch.Tensor):
        """A model copy with its head retrained on the training set whose ``rows`` changed."""
        obj = inf.objective
        self.features[rows] = self.head._forward(obj.cast_inputs(X[rows]))[0][:, : self.D]
        model = obj.model_copy()
        lin = model.get_submodule(self.name) if self.name else model
        train(lin, (self.features, y), l2=obj.l2, loss=obj.loss_fn, progress=False)
        return model


def craft_attack(
    influence: Influence,
    x_test,
    y_test,
    n_poison: int = 1,
    eps: float = eight_bit_levels(0.5),
    step_size: float | None = None,
    max_iter: int = 100,
    retrain: bool | Retrain = True,
    select: str | Sequence[int] = "grad_norm",
    *,
    input_range: tuple[float, float] | None = (0.0, 1.0),
    test_index: int | None = None,
    progress: bool = True,
    cancel: threading.Event | None = None,
) -> AttackResult:
    """Perturb ``n_poison`` training inputs, within ``eps``, to flip one test prediction.

    Args:
        influence: the :class:`~influence_widgets.Influence` of the trained model (its ``params``,
            loss, L2 and damping are kept at every step; with ``params`` a top layer, the Hessian
            is over that layer while I_pert,loss differentiates through the whole network down to
            the inputs, as in the paper).
        x_test, y_test: ONE test point with a leading batch dimension, correctly classified.
        n_poison: how many training points to perturb.
        eps: the L-infinity radius around each original input, in the data's units
            (:func:`eight_bit_levels` converts 8-bit levels).
        step_size: the move per step (default eps / 12.5: the paper's 0.02 levels for 0.5-level eps
            would take 25 steps to reach the boundary; this default takes 12.5).
        max_iter: the most steps; the attack stops early once the prediction flips.
        retrain: True: after each step retrain warm-started (full-batch L-BFGS on the same risk,
            over ``params``) and recompute s_test, as the paper; or ``retrain(model_copy, (X, y))``
            training the copy in place, for models that need another optimiser.
        select: "grad_norm" (the points with the largest L1 norm of I_pert,loss, as the paper) or
            explicit training indices.
        input_range: valid (low, high) input values, (0, 1) for images; None for unbounded data.
        test_index: recorded in the result.
        progress: a progress bar over the steps.
        cancel: a ``threading.Event``; when set, stop after the current step.
    """
    if not isinstance(influence, Influence):
        raise TypeError(f"influence: expected an iw.Influence, got {type(influence).__name__}")
    n_poison = check_positive_int(n_poison, "n_poison")
    if n_poison > influence.n:
        raise ValueError(f"n_poison: {n_poison} is more than the {influence.n} training points")
    eps = check_nonnegative(eps, "eps")
    step_size = eps / 12.5 if step_size is None else check_nonnegative(step_size, "step_size")
    max_iter = check_positive_int(max_iter, "max_iter")
    if retrain is not True and not callable(retrain):
        raise TypeError(
            f"retrain: expected True or a callable retrain(model, (X, y)), got {retrain!r}; "
            "the attack needs the retrained model after every step"
        )
    if cancel is not None and not isinstance(cancel, threading.Event):
        raise TypeError(f"cancel: expected a threading.Event, got {type(cancel).__name__}")
    ts = influence.train
    if ts.X is None:
        raise TypeError("influence: craft_attack needs a training set given as (X, y) tensors")
    X0, y_train = ts.X, ts.y
    if not X0.is_floating_point():
        raise TypeError(f"training inputs are {X0.dtype}: an attack needs continuous inputs")
    if input_range is not None:
        lo, hi = (float(v) for v in input_range)
        if not lo < hi:
            raise ValueError(
                f"input_range: expected (low, high) with low < high, got {input_range}"
            )
        if float(X0.min()) < lo or float(X0.max()) > hi:
            raise ValueError(
                f"input_range: the training inputs lie in [{float(X0.min()):.3g}, "
                f"{float(X0.max()):.3g}], outside {input_range}; pass the data's range, or "
                "input_range=None for unbounded (e.g. tabular) data"
            )
    x = as_tensor(x_test, "x_test")
    y = as_tensor(y_test, "y_test")
    if x.ndim == 0 or y.ndim == 0 or len(x) != 1 or len(y) != 1:
        raise ValueError("x_test, y_test: craft_attack targets one test point; pass X[i:i+1]")
    true_class = int(y[0])

    start = time.perf_counter()
    current = influence
    before = _probabilities(current, x)
    pred_before = int(before.argmax())
    if pred_before != true_class:
        raise ValueError(
            f"x_test: the model already predicts class {pred_before}, not the true class "
            f"{true_class}; attack a correctly classified test point"
        )
    poisoned = _select(current, x, y, n_poison, select)
    X = X0.clone()  # the working copy; the user's tensor is never written
    originals = X0[poisoned].clone()
    lower = originals - eps
    upper = originals + eps
    if input_range is not None:
        lower, upper = lower.clamp(min=lo), upper.clamp(max=hi)
    fast = (
        _HeadRetrainer(current, X)
        if retrain is True and current.op.head is not None and current.op.head.covers_theta
        else None
    )
    history = [float(before[true_class])]
    probs = before
    steps = 0
    bar = progress_bar(total=max_iter, desc="attack", disable=not progress)
    try:
        while steps < max_iter and int(probs.argmax()) == true_class:
            if cancel is not None and cancel.is_set():
                break
            direction = current.perturbation_influence(x, y, poisoned)[0]  # (k, *x)
            moved = X[poisoned] + step_size * torch.sign(direction).to(X.dtype).cpu()
            X[poisoned] = torch.minimum(torch.maximum(moved, lower), upper)
            if fast is not None:
                model = fast(current, X, y_train, poisoned)
            elif callable(retrain):
                model = current.objective.model_copy()
                retrain(model, (X.clone(), y_train))
            else:
                model = current.objective.model_copy()
                obj = current.objective
                train(model, (X, y_train), l2=obj.l2, loss=obj.loss_fn,
                      params=list(obj.spec.names), progress=False)  # fmt: skip
            current = influence.rebuild(model, (X.clone(), y_train))
            current.progress = False
            steps += 1
            probs = _probabilities(current, x)
            history.append(float(probs[true_class]))
            bar.update()
    finally:
        bar.close()
    return AttackResult(
        test_index=test_index,
        poisoned=poisoned.cpu().numpy(),
        original_inputs=originals,
        perturbed_inputs=X[poisoned].clone(),
        true_class_probability=history,
        probabilities_before=before.numpy(),
        probabilities_after=probs.numpy(),
        prediction_before=pred_before,
        prediction_after=int(probs.argmax()),
        flipped=int(probs.argmax()) != true_class,
        iterations=steps,
        eps=eps,
        step_size=step_size,
        seconds=time.perf_counter() - start,
        cancelled=cancel is not None and cancel.is_set(),
        _train=(X0, y_train),
    )
