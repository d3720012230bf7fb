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
from torch.func import grad

from influence_widgets.core.errors import (
    check_nonnegative,
    check_positive_int,
    not_positive_definite,
)
from influence_widgets.core.influence import Influence, perturbation_along
from influence_widgets.core.objective import Objective, as_tensor
from influence_widgets.core.progress import progress_bar
from influence_widgets.core.solvers import Direct
from influence_widgets.training import default_tolerance, train

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
    stopped: str = "max_iter"  # "flipped", "max_iter", "fixed point" or "cancelled"
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
            f"eps={self.eps:.4g}, stopped={self.stopped!r}, seconds={self.seconds:.1f}{state})"
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


class _WholeModel:
    """The attack's state for any model: after each step, retrain (L-BFGS over ``params`` or the
    user's function) and rebuild the Influence, whose s_test then refits."""

    def __init__(self, inf: Influence, x, y, y_train: torch.Tensor, retrain) -> None:
        self.inf, self.current = inf, inf
        self.x, self.y, self.y_train, self.retrain_fn = x, y, y_train, retrain

    def s_test(self) -> torch.Tensor:
        return self.current.s_test(self.x, self.y)

    def directions(self, X: torch.Tensor, idx: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        """I_pert,loss of the training inputs X[idx] for s_test S, (k, *x)."""
        obj = self.current.objective
        xs, ys = obj.cast_inputs(X[idx]), obj.cast_targets(self.y_train[idx])
        return perturbation_along(obj, xs, ys, S)[0]

    def retrain(self, X: torch.Tensor, rows: torch.Tensor) -> None:
        obj = self.current.objective
        model = obj.model_copy()
        if callable(self.retrain_fn):
            self.retrain_fn(model, (X.clone(), self.y_train))
        else:
            train(model, (X, self.y_train), l2=obj.l2, loss=obj.loss_fn,
                  params=list(obj.spec.names), progress=False)  # fmt: skip
        self.current = self.inf.rebuild(model, (X.clone(), self.y_train), progress=False)

    def probabilities(self) -> torch.Tensor:
        return _probabilities(self.current, self.x)


class _LinearHeadOnly:
    """The attack's state when theta is exactly the final Linear (a frozen extractor with a
    trainable top layer, the paper's setting). The features of untouched training points cannot
    change, so they are computed once and only the poisoned rows are recomputed; retraining and
    s_test work on the head over the features alone (the same risk and Hessian as over the whole
    model), and only I_pert,loss differentiates through the extractor to the pixels."""

    def __init__(self, inf: Influence, X: torch.Tensor, x, y, y_train: torch.Tensor) -> None:
        obj, head = inf.objective, inf.op.head
        self.inf, self.obj, self.head, self.y, self.y_train = inf, obj, head, y, y_train
        self.name = next(n for n, m in obj.module.named_modules() if m is head.lin)
        parts = [self._features(X[i : i + 1024]) for i in range(0, len(X), 1024)]
        self.features = torch.cat(parts)
        self.test_features = self._features(x)
        self.model = obj.model_copy()
        self._rebuild()

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head.features_and_output(self.obj.cast_inputs(x))[0][:, : self.head.D]

    def _linear(self) -> torch.nn.Module:
        return self.model.get_submodule(self.name) if self.name else self.model

    def _rebuild(self) -> None:
        self.head_inf = self.inf.rebuild(
            self._linear(), (self.features.clone(), self.y_train), params=None, progress=False
        )
        self.objective = Objective(self.model, loss=self.obj.loss_fn, l2=self.obj.l2,
                                   params=list(self.obj.spec.names), device=self.obj.device)  # fmt: skip

    def s_test(self) -> torch.Tensor:
        """s_test over the head, in the order of the whole model's theta, (1, p)."""
        return self._model_order(self.head_inf.s_test(self.test_features, self.y)[0])

    def _model_order(self, s: torch.Tensor) -> torch.Tensor:
        """A vector over the head's parameters, (p,), reordered as the whole model's theta, (1, p)."""
        dot = f"{self.name}." if self.name else ""
        named = {dot + k: v for k, v in self.head_inf.objective.unflatten(s).items()}
        return torch.cat([named[n].reshape(-1) for n in self.obj.spec.names])[None]

    def directions(self, X: torch.Tensor, idx: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        obj = self.objective
        xs, ys = obj.cast_inputs(X[idx]), obj.cast_targets(self.y_train[idx])
        return perturbation_along(obj, xs, ys, S)[0]

    def retrain(self, X: torch.Tensor, rows: torch.Tensor) -> None:
        self.features[rows] = self._features(X[rows])
        self._train_head()
        self._rebuild()

    def _train_head(self) -> None:
        """Full-batch L-BFGS on the cached features, warm-started from the last head."""
        train(
            self._linear(),
            (self.features, self.y_train),
            l2=self.obj.l2,
            loss=self.obj.loss_fn,
            progress=False,
        )

    def probabilities(self) -> torch.Tensor:
        return _probabilities(self.head_inf, self.test_features)


# _LinearHeadNewton's steps. The chord iteration goes on while ||grad R|| falls, for at most
# CHORD_MAX_ITER steps; once a step leaves more than CHORD_SLOW_RATE of ||grad R||, H is
# refactorised at the current theta, at most once per retrain (that costs about 60 chord steps at
# p = 1,570, and 30 chord steps at a rate of 0.7 gain less than 5 decades). PCG stops at an
# estimated relative error of PCG_RTOL (float64; PCG_RTOL_FLOAT32 otherwise), or gives up after
# PCG_MAX_ITER iterations. H is refactorised once a
# step needs REFACTOR_GROWTH times the iterations (chord + PCG) of the first step on the factor.
CHORD_MAX_ITER = 30
CHORD_SLOW_RATE = 0.5
PCG_RTOL = 1e-12
PCG_RTOL_FLOAT32 = 1e-6
PCG_MAX_ITER = 100
REFACTOR_GROWTH = 2


def _cholesky_solve(L: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """(L L^T)^-1 B by two triangular solves (6x faster than ``torch.cholesky_solve`` for one
    column at p = 1,570, measured on one core)."""
    return torch.linalg.solve_triangular(
        L.mT, torch.linalg.solve_triangular(L, B, upper=False), upper=True
    )


def _pcg(
    matvec, b: torch.Tensor, L: torch.Tensor, rtol: float, max_iter: int
) -> tuple[torch.Tensor | None, int]:
    """(x, iterations): x = H^-1 b by conjugate gradients on ``matvec`` (H), preconditioned with
    M = L L^T, the Cholesky factor of a nearby H; b (p, 1). Stops once ||M^-1 (b - H x)||, an
    estimate of the error ||H^-1 b - x|| while M ~ H, is at most rtol ||x||; x is None when
    max_iter iterations did not get there (e.g. H is not positive definite)."""
    x = torch.zeros_like(b)
    r = b.clone()
    z = _cholesky_solve(L, r)
    direction, rz = z, (r * z).sum()
    iterations = 0
    while not z.norm() <= rtol * x.norm():  # also goes on through NaN, to max_iter
        if iterations == max_iter:
            return None, iterations
        iterations += 1
        Hd = matvec(direction)
        alpha = rz / (direction * Hd).sum()
        x += alpha * direction
        r -= alpha * Hd
        z = _cholesky_solve(L, r)
        rz, rz_old = (r * z).sum(), rz
        direction = z + (rz / rz_old) * direction
    return x, iterations


class _LinearHeadNewton(_LinearHeadOnly):
    """:class:`_LinearHeadOnly` for the direct solver, with Newton-type steps around L, the
    Cholesky factor of a recent H + damping I of the head (the risk is convex in the head, and a
    step moves only a few training points, so H changes little from step to step).

    Retraining is the chord iteration theta <- theta - (L L^T)^-1 grad R(theta) from the last
    theta, on the cached features. Its fixed points are exactly the stationary points of R (L only
    sets the speed: a linear rate of about ||I - (L L^T)^-1 H||), so it stops where ``train``
    would, at ||grad R|| <= train's default tolerance. When it contracts slowly (L has aged, or a
    small l2 makes the head ill-conditioned), H is refactorised at the current theta and the
    steps go on as Newton steps. Should it still stall above the tolerance, the
    warm-started L-BFGS of :class:`_LinearHeadOnly` finishes from the chord's last point, and H is
    refactorised. s_test = H^-1 grad L(z_test) is solved by conjugate gradients on the head's
    exact HVPs at the new theta, preconditioned with L. As L ages both need more iterations; H is
    assembled and factorised afresh once a step needs REFACTOR_GROWTH times the iterations of the
    first step on L, or when PCG fails.
    """

    def __init__(self, inf: Influence, X: torch.Tensor, x, y, y_train: torch.Tensor) -> None:
        self._L: torch.Tensor | None = None
        self._first_iterations: int | None = None  # chord + PCG, in the first step on L
        self._chord_iterations = 0
        self._s: torch.Tensor | None = None
        super().__init__(inf, X, x, y, y_train)

    def _factorise(self) -> None:
        """L = the Cholesky factor of H + damping I at the current theta (exact head formula)."""
        op = self.head_inf.op
        H = op.dense(progress=False)
        L, info = torch.linalg.cholesky_ex(H)
        if int(info) != 0:
            raise not_positive_definite(float(torch.linalg.eigvalsh(H)[0]), op.damping, "direct")
        self._L, self._first_iterations = L, None

    def s_test(self) -> torch.Tensor:
        if self._s is None:
            g = self.head_inf.test_gradients(self.test_features, self.y).T  # (p, 1)
            s = None
            if self._L is not None:
                rtol = PCG_RTOL if g.dtype == torch.float64 else PCG_RTOL_FLOAT32
                s, pcg_iterations = _pcg(self.head_inf.op.matvec, g, self._L, rtol, PCG_MAX_ITER)
            if s is None:
                self._factorise()
                s = _cholesky_solve(self._L, g)
            else:
                iterations = self._chord_iterations + pcg_iterations
                if self._first_iterations is None:
                    self._first_iterations = iterations
                elif iterations > REFACTOR_GROWTH * self._first_iterations:
                    self._factorise()  # for the next step; s is exact already
            self._s = self._model_order(s[:, 0])
        return self._s

    def retrain(self, X: torch.Tensor, rows: torch.Tensor) -> None:
        self.features[rows] = self._features(X[rows])
        obj = self.head_inf.objective  # the head at the last theta
        y = obj.cast_targets(self.y_train)

        def risk(theta: torch.Tensor) -> torch.Tensor:
            return obj.loss(theta, self.features, y).mean() + 0.5 * obj.l2 * theta.dot(theta)

        gradient = grad(risk)
        tol = default_tolerance(obj.dtype)
        theta, g = obj.theta, gradient(obj.theta)
        self._chord_iterations = 0
        refreshed = False
        while g.norm() > tol and self._chord_iterations < CHORD_MAX_ITER:
            self._chord_iterations += 1  # L: factorised by s_test, which precedes every retrain
            candidate = theta - _cholesky_solve(self._L, g[:, None])[:, 0]
            g_next = gradient(candidate)
            rate = g_next.norm() / g.norm()
            if rate < 1:
                theta, g = candidate, g_next
            if rate > CHORD_SLOW_RATE and not refreshed:
                # L has aged too far from H: refactorise at the current theta (a Newton step).
                self._set_head(theta)
                self._rebuild()
                self._factorise()
                self._chord_iterations, refreshed = 0, True
            elif not rate < 1:
                break
        self._set_head(theta)
        if not g.norm() <= tol:  # the chord stalled: L-BFGS finishes, and H is refactorised
            self._train_head()
            self._L = None
        self._rebuild()
        self._s = None

    def _set_head(self, theta: torch.Tensor) -> None:
        """Write theta (the head's flat parameters) into the working model's head."""
        named = dict(self._linear().named_parameters())
        with torch.no_grad():
            for name, value in self.head_inf.objective.unflatten(theta).items():
                named[name].copy_(value)


def _select(state, X: torch.Tensor, n: int, n_poison: int, select) -> torch.Tensor:
    if isinstance(select, str):
        if select != "grad_norm":
            raise ValueError(f"select: expected 'grad_norm' or a list of indices, got {select!r}")
        # The paper's choice: the largest L1 norm of the input gradient of influence.
        S = state.s_test()
        scores = torch.empty(n, dtype=S.dtype)
        for start in range(0, n, 256):
            idx = torch.arange(start, min(start + 256, n))
            scores[idx] = state.directions(X, idx, S).reshape(len(idx), -1).abs().sum(1).cpu()
        return torch.argsort(scores, descending=True)[:n_poison]
    idx = state.inf.training_indices(select, "select")
    if len(idx) != n_poison or len(set(idx.tolist())) != n_poison:
        raise ValueError(f"select: expected {n_poison} distinct training indices, got {select!r}")
    return idx


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
        max_iter: the most steps; the attack stops early once the prediction flips, or at a fixed
            point (every input on the boundary of its eps box along its direction: further steps
            would change nothing). ``result.stopped`` says which.
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
    before = _probabilities(influence, x)
    pred_before = int(before.argmax())
    if pred_before != true_class:
        raise ValueError(
            f"x_test: the model already predicts class {pred_before}, not the true class "
            f"{true_class}; attack a correctly classified test point"
        )
    head = influence.op.head
    if retrain is True and head is not None and head.covers_theta:
        fast = isinstance(influence.solver, Direct)
        state = (_LinearHeadNewton if fast else _LinearHeadOnly)(influence, X0, x, y, y_train)
    else:
        state = _WholeModel(influence, x, y, y_train, retrain)
    poisoned = _select(state, X0, influence.n, n_poison, select)
    X = X0.clone()  # the working copy; the user's tensor is never written
    originals = X0[poisoned].clone()
    lower = originals - eps
    upper = originals + eps
    if input_range is not None:
        lower, upper = lower.clamp(min=lo), upper.clamp(max=hi)
    history = [float(before[true_class])]
    probs = before
    steps = 0
    reason = "max_iter"
    bar = progress_bar(total=max_iter, desc="attack", disable=not progress)
    try:
        while steps < max_iter:
            if int(probs.argmax()) != true_class:
                reason = "flipped"
                break
            if cancel is not None and cancel.is_set():
                reason = "cancelled"
                break
            direction = state.directions(X, poisoned, state.s_test())  # (k, *x)
            moved = X[poisoned] + step_size * torch.sign(direction).to(X.dtype).cpu()
            moved = torch.minimum(torch.maximum(moved, lower), upper)
            if torch.equal(moved, X[poisoned]):
                # Every input sits on the boundary of its box along the direction: retraining
                # would give the same model and direction again, a fixed point. Stop.
                reason = "fixed point"
                break
            X[poisoned] = moved
            state.retrain(X, poisoned)
            steps += 1
            probs = state.probabilities()
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
        cancelled=reason == "cancelled",
        stopped=reason if int(probs.argmax()) == true_class else "flipped",
        _train=(X0, y_train),
    )
