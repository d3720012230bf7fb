"""Training-set attacks driven by I_pert,loss (Koh & Liang 2017, Section 5.2).

Moving training input x_i by a small delta changes the test loss, after retraining, by about
(1/n) I_pert,loss(z_i, z_test) . delta, where I_pert,loss = -grad L(z_test)^T H^-1 grad_x grad ell_i.
The attack repeatedly moves a few training inputs by ``step_size * sign(I_pert,loss)`` (the
direction that raises the test loss), projects them back into an L-infinity ball of radius ``eps``
around the originals and into the valid input range, retrains warm-started and recomputes
s_test, until the test prediction flips (with ``stop_margin``: until the new class leads the true
one by that much probability). The user's model and data are never modified: every
step works on copies, and ``AttackResult.poisoned_dataset()`` returns a new training set.
"""

from __future__ import annotations

import numbers
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch.func import grad_and_value

from influence_widgets.core.errors import (
    check_cancel_event,
    check_index,
    check_nonnegative,
    check_positive_int,
)
from influence_widgets.core.influence import Influence, check_influence, perturbation_along
from influence_widgets.core.linalg import cholesky_or_raise, cholesky_solve, preconditioned_cg
from influence_widgets.core.losses import class_probabilities
from influence_widgets.core.newton import newton_pcg
from influence_widgets.core.objective import Objective, one_test_point
from influence_widgets.core.progress import progress_bar
from influence_widgets.core.solvers import Direct
from influence_widgets.training import default_tolerance, train

__all__ = [
    "AttackResult",
    "EpsSearch",
    "check_stop_margin",
    "craft_attack",
    "eight_bit_levels",
    "percentage_points",
    "smallest_flipping_eps",
]

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


def percentage_points(difference: float) -> str:
    """A difference of two probabilities in words: 0.214 -> "21 percentage points"."""
    points = round(100 * difference)
    return f"{points} percentage point{'' if abs(points) == 1 else 's'}"


@dataclass(frozen=True)
class AttackResult:
    """What :func:`craft_attack` did to one test prediction.

    ``true_class_probability[t]`` is the model's probability of the test point's true class after
    t steps (t = 0: before the attack). ``flipped``: the prediction changed from the true class.
    ``stop_margin``: the lead over the true class that the attack was asked to reach before it
    stops (0: stop at the first flip); ``margin`` is the lead it reached.
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
    stop_margin: float = 0.0
    _train: tuple[torch.Tensor, torch.Tensor] = field(default=None, repr=False)

    def poisoned_dataset(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A new training set (X, y): a copy of the original with the perturbed inputs in."""
        X, y = self._train
        X = X.clone()
        X[torch.as_tensor(self.poisoned)] = self.perturbed_inputs.to(X.dtype)
        return X, y.clone()

    @property
    def margin(self) -> float:
        """The largest probability of another class minus the true class's, after the attack:
        > 0 when the prediction flipped (the new class's lead), < 0 when it held."""
        after = np.asarray(self.probabilities_after, dtype=np.float64)
        others = np.delete(after, self.prediction_before)
        return float(others.max() - after[self.prediction_before]) if others.size else 0.0

    @property
    def reached_margin(self) -> bool:
        """Flipped, with the new class at least ``stop_margin`` ahead of the true class."""
        return self.flipped and self.margin >= self.stop_margin

    @property
    def stop_reason(self) -> str:
        """Why the attack stopped, in words, with what to try when it did not flip."""
        steps = f"{self.iterations} step{'' if self.iterations == 1 else 's'}"
        if self.stopped == "flipped":
            lead = percentage_points(self.margin)
            return f"Flipped after {steps}: the new class leads by {lead}."
        not_yet = (
            f"flipped, but the new class leads by only {percentage_points(self.margin)}, short "
            f"of the {percentage_points(self.stop_margin)} asked (stop_margin)"
            if self.flipped
            else "not flipped"
        )
        if self.stopped == "cancelled":
            return f"Cancelled after {steps}, {not_yet}."
        if self.stopped == "fixed point":
            return (
                f"Stopped after {steps}, {not_yet}: every perturbed value reached its eps bound "
                "(or the input range) along its direction, a fixed point: raise eps or perturb "
                "more points."
            )
        return (
            f"Stopped after {steps} (the most allowed, max_iter), {not_yet}: raise the "
            "iterations or eps."
        )

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
    """Class probabilities of one test point at inf's theta, (C,): softmax, or sigmoid of a
    single score."""
    obj = inf.objective
    with torch.no_grad():
        return class_probabilities(obj.forward(obj.theta, obj.cast_inputs(x)))[0].cpu()


def _directions(obj: Objective, x: torch.Tensor, y: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """I_pert,loss of the training points (x, y) for one s_test S (1, p), shape (k, *x)."""
    return perturbation_along(obj, obj.cast_inputs(x), obj.cast_targets(y), S)[0]


class AttackState(Protocol):
    """The model under attack as the step loop sees it, at the current theta (retrained after
    every step). One implementation per way of retraining: :class:`WholeModel`,
    :class:`LinearHeadOnly` and :class:`LinearHeadNewton`."""

    def s_test(self) -> torch.Tensor:
        """s_test = H^-1 grad L(z_test) in the order of the whole model's theta, (1, p)."""

    def directions(self, X: torch.Tensor, idx: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        """I_pert,loss = -grad_x (grad ell_i^T s_test) of the training inputs X[idx] for s_test S,
        shape (k, *x)."""

    def retrain(self, X: torch.Tensor, rows: torch.Tensor) -> None:
        """Retrain, warm-started, on the training inputs X whose ``rows`` have just moved."""

    def probabilities(self) -> torch.Tensor:
        """The test point's class probabilities, (C,), on the CPU."""


class WholeModel(AttackState):
    """The attack's state for any model: after each step, retrain (L-BFGS over ``params`` or the
    user's function) and rebuild the Influence, whose s_test then refits."""

    def __init__(self, inf: Influence, x, y, y_train: torch.Tensor, retrain) -> None:
        self.inf, self.current = inf, inf
        self.x, self.y, self.y_train, self.retrain_fn = x, y, y_train, retrain

    def s_test(self) -> torch.Tensor:
        return self.current.s_test(self.x, self.y)

    def directions(self, X: torch.Tensor, idx: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        return _directions(self.current.objective, X[idx], self.y_train[idx], S)

    def retrain(self, X: torch.Tensor, rows: torch.Tensor) -> None:
        obj = self.current.objective
        model = obj.model_copy()
        if callable(self.retrain_fn):  # on copies: the function may write its data
            self.retrain_fn(model, (X.clone(), self.y_train.clone()))
        else:
            train(model, (X, self.y_train), l2=obj.l2, loss=obj.loss_fn,
                  params=list(obj.spec.names), progress=False)  # fmt: skip
        self.current = self.inf.rebuild(
            model, (X.clone(), self.y_train), damping=self.inf.damping, progress=False
        )

    def probabilities(self) -> torch.Tensor:
        return _probabilities(self.current, self.x)


class LinearHeadOnly(AttackState):
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
            self._linear(),
            (self.features.clone(), self.y_train),
            params=None,
            damping=self.inf.damping,  # the damping in effect ("auto": its rung), kept
            progress=False,
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
        return _directions(self.objective, X[idx], self.y_train[idx], S)

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


# LinearHeadNewton's steps. Retraining takes Newton steps (core.newton.newton_pcg), each solved by
# PCG to a relative error of NEWTON_RTOL, at most NEWTON_MAX_STEPS of them (from theta of the last
# step, 3 reach train's tolerance on Fashion-MNIST). s_test's PCG stops at an estimated relative
# error of PCG_RTOL (float64; PCG_RTOL_FLOAT32 otherwise); either PCG gives up after PCG_MAX_ITER
# iterations. Refactorising is a rent-or-buy choice: an aged factor costs more PCG iterations per
# step, a new one costs one assembly and Cholesky (13 s at p = 7,850, the time of about 250 PCG
# iterations). H is refactorised once the time the steps on a factor have spent beyond the first
# step's time on it exceeds what making the factor cost, which never spends more than twice what
# the best schedule in hindsight would.
NEWTON_MAX_STEPS = 20
NEWTON_RTOL = 1e-2
PCG_RTOL = 1e-12
PCG_RTOL_FLOAT32 = 1e-6
PCG_MAX_ITER = 100


Solve = Callable[[torch.Tensor], torch.Tensor]


class RefactorSchedule:
    """When an aged factor of H should be replaced: the rent-or-buy rule of the constants above.

    ``factored(seconds)`` starts a factor that took ``seconds`` to make; ``step(seconds)`` records
    the time one step spent iterating on it and says whether to refactorise now: once the steps'
    time beyond the first step's on this factor adds up to more than the factor cost.
    """

    def __init__(self, factor_seconds: float) -> None:
        self.factored(factor_seconds)

    def factored(self, seconds: float) -> None:
        self.factor_seconds, self.excess = float(seconds), 0.0
        self.first: float | None = None

    def step(self, seconds: float) -> bool:
        if self.first is None:
            self.first = seconds
            return False
        self.excess += max(0.0, seconds - self.first)
        return self.excess > self.factor_seconds


class LinearHeadNewton(LinearHeadOnly):
    """:class:`LinearHeadOnly` for the direct solver, with Newton steps preconditioned by L, the
    Cholesky factor of a recent H + damping I of the head (the risk is convex in the head, and a
    step moves only a few training points, so H changes little from step to step).

    Retraining is Newton's iteration theta <- theta - H(theta)^-1 grad R(theta) from the last
    theta, on the cached features, each step solved by conjugate gradients on the head's exact
    HVPs at theta, preconditioned with L (:func:`~influence_widgets.core.newton.newton_pcg`). It
    stops where ``train`` would, at ||grad R|| <= train's default tolerance; L only sets the
    number of PCG iterations. Should a step fail (PCG does not converge, or ||grad R|| would
    rise), H is refactorised at the current theta and the step retried; should it fail again,
    the warm-started L-BFGS of :class:`LinearHeadOnly` finishes and H is refactorised.
    s_test = H^-1 grad L(z_test) is solved by PCG the same way at the new theta. As L ages, both
    need more iterations; H is assembled and factorised afresh when the
    :class:`RefactorSchedule` says the extra iterations have cost as much as a new factor, or
    when PCG fails. (The chord iteration with L alone, gradient steps and solves only, slowed to
    a rate of 0.8 within 5 steps of an attack on Fashion-MNIST and refactorised every few steps.)

    The first step starts from the fitted Influence's own (H + damping I)^-1 at theta_hat when
    there is one (a fitted direct solver over the same parameters): assembling and factorising H
    afresh took about 13 s before the first step at p = 7,850. Its cost for the schedule is the
    fit's time.
    """

    def __init__(self, inf: Influence, X: torch.Tensor, x, y, y_train: torch.Tensor) -> None:
        self._solve: Solve | None = None  # (L L^T)^-1 for a recent H + damping I
        self._newton_iterations = 0
        # the last retrain's PCG time on the factor in use; None: no retrain since s_test
        self._retrain_seconds: float | None = None
        self._factored_at = -float("inf")  # time.perf_counter() when the last factor was made
        self._s: torch.Tensor | None = None
        super().__init__(inf, X, x, y, y_train)
        self._solve = self._fitted_inverse(inf)
        fit_seconds = inf.diagnostics.fit_seconds if self._solve is not None else 0.0
        self.schedule = RefactorSchedule(fit_seconds)

    def _fitted_inverse(self, inf: Influence) -> Solve | None:
        """The fitted direct solver's (H + damping I)^-1 at theta_hat, where the attack starts,
        when its theta is the head's in the same order; else None (s_test then factorises)."""
        if getattr(inf.solver, "H_inv", None) is None:
            return None
        dot = f"{self.name}." if self.name else ""
        head_names = [dot + n for n in self.head_inf.objective.spec.names]
        return inf.solver.solve if head_names == list(self.obj.spec.names) else None

    def factorise(self) -> None:
        """L = the Cholesky factor of H + damping I at the current theta (exact head formula)."""
        start = time.perf_counter()
        op = self.head_inf.op
        L = cholesky_or_raise(op.dense(progress=False), op.damping, "direct")
        self._solve = lambda B: cholesky_solve(L, B)
        self._factored_at = time.perf_counter()
        self.schedule.factored(self._factored_at - start)

    def s_test(self) -> torch.Tensor:
        if self._s is None:
            g = self.head_inf.test_gradients(self.test_features, self.y).T  # (p, 1)
            s = None
            start = time.perf_counter()
            if self._solve is not None:
                rtol = PCG_RTOL if g.dtype == torch.float64 else PCG_RTOL_FLOAT32
                s, _ = preconditioned_cg(
                    self.head_inf.op.matvec, g, self._solve, rtol, PCG_MAX_ITER
                )
            if s is None:
                self.factorise()
                s = self._solve(g)
            elif self._retrain_seconds is not None and self.schedule.step(
                self._retrain_seconds + time.perf_counter() - start
            ):
                self.factorise()  # for the next step; s is exact already
            self._retrain_seconds = None
            self._s = self._model_order(s[:, 0])
        return self._s

    def retrain(self, X: torch.Tensor, rows: torch.Tensor) -> None:
        self.features[rows] = self._features(X[rows])
        obj = self.head_inf.objective  # the head at the last theta
        y = obj.cast_targets(self.y_train)

        def risk(theta: torch.Tensor) -> torch.Tensor:
            return obj.loss(theta, self.features, y).mean() + 0.5 * obj.l2 * theta.dot(theta)

        tol = default_tolerance(obj.dtype)
        start = time.perf_counter()
        newton = newton_pcg(
            grad_and_value(risk),
            self._hessian_at,
            obj.theta,
            lambda B: self._solve(B),  # set by s_test before every retrain; _refactorise resets it
            tol,
            NEWTON_MAX_STEPS,
            rtol=NEWTON_RTOL,
            max_cg=PCG_MAX_ITER,
            refactorise=self._refactorise,
        )
        self._newton_iterations = newton.cg_iterations
        # on the factor in use now (one made during the steps counts from then)
        self._retrain_seconds = time.perf_counter() - max(start, self._factored_at)
        self.head_inf.objective.write_theta(self._linear(), newton.theta)
        if not newton.gradient_norm <= tol:  # Newton stalled: L-BFGS finishes, H refactorised
            self._train_head()
            self._solve = None
        self._rebuild()
        self._s = None

    def _hessian_at(self, theta: torch.Tensor) -> Solve:
        """V -> (H(theta) + damping I) V: the head's exact HVP with theta written into it."""
        self.head_inf.objective.write_theta(self._linear(), theta)
        self._rebuild()
        return self.head_inf.op.matvec

    @property
    def preconditioner(self) -> Solve | None:
        """(L L^T)^-1 for a recent H + damping I, applied to a (p, k) block: PCG's preconditioner
        in retraining and s_test; None when the next :meth:`s_test` factorises H afresh."""
        return self._solve

    @property
    def newton_iterations(self) -> int:
        """The PCG iterations of the last :meth:`retrain`'s Newton steps (0 before the first)."""
        return self._newton_iterations

    def _refactorise(self, theta: torch.Tensor) -> None:
        """A Newton step failed on L: refactorise at theta and retry it."""
        self.head_inf.objective.write_theta(self._linear(), theta)
        self._rebuild()
        self.factorise()


SELECT_STEP = "choosing training points"  # the progress bar of the grad_norm selection


def _select(
    influence: Influence,
    state: AttackState,
    X: torch.Tensor,
    n_poison: int,
    select,
    progress: bool = False,
) -> torch.Tensor:
    """The ``n_poison`` training indices to perturb (a progress bar over the training set for
    "grad_norm")."""
    if isinstance(select, str):
        if select != "grad_norm":
            raise ValueError(f"select: expected 'grad_norm' or a list of indices, got {select!r}")
        # The paper's choice: the largest L1 norm of the input gradient of influence.
        S = state.s_test()
        n = influence.n
        scores = torch.empty(n, dtype=S.dtype)
        bar = progress_bar(total=n, desc=SELECT_STEP, disable=not progress)
        for start in range(0, n, 256):
            idx = torch.arange(start, min(start + 256, n))
            scores[idx] = state.directions(X, idx, S).reshape(len(idx), -1).abs().sum(1).cpu()
            bar.update(len(idx))
        bar.close()
        return torch.argsort(scores, descending=True)[:n_poison]
    idx = influence.training_indices(select, "select")
    if len(idx) != n_poison or len(set(idx.tolist())) != n_poison:
        raise ValueError(f"select: expected {n_poison} distinct training indices, got {select!r}")
    return idx


# ----- craft_attack in four parts: the checks, the state, the steps, the result ----------------
@dataclass(frozen=True)
class _Plan:
    """craft_attack's checked arguments, and the test point's prediction before the attack."""

    influence: Influence
    x: torch.Tensor  # (1, *x)
    y: torch.Tensor  # (1,)
    true_class: int
    before: torch.Tensor  # (C,) class probabilities
    n_poison: int
    eps: float
    step_size: float
    max_iter: int
    stop_margin: float
    bounds: tuple[torch.Tensor, torch.Tensor] | None  # input_range, one input's shape


def _bound(value, X0: torch.Tensor) -> torch.Tensor | None:
    """One end of ``input_range``: a number, or one value per input value (a tensor or array of
    one input's shape), as a tensor like X0's rows; None when it is neither."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return torch.full(X0.shape[1:], float(value), dtype=X0.dtype, device=X0.device)
    if isinstance(value, torch.Tensor | np.ndarray) and tuple(value.shape) == tuple(X0.shape[1:]):
        bound = torch.as_tensor(value).to(X0.device, X0.dtype)
        return bound if not bound.dtype.is_complex else None
    return None


def _input_bounds(input_range, X0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``input_range`` as (low, high) tensors of one input's shape, checked against the training
    inputs; None: unbounded."""
    if input_range is None:
        return None
    pair = list(input_range) if isinstance(input_range, tuple | list) else None
    bounds = None if pair is None or len(pair) != 2 else [_bound(v, X0) for v in pair]
    if bounds is None or any(b is None for b in bounds):
        raise TypeError(
            f"input_range: expected a pair (low, high) of numbers, e.g. (0, 1) for images, or of "
            f"tensors of one input's shape {tuple(X0.shape[1:])} (per-feature bounds), or None "
            f"for unbounded data; got {input_range!r}"
        )
    lo, hi = bounds
    if not bool((lo < hi).all()):
        raise ValueError(f"input_range: expected (low, high) with low < high, got {input_range}")
    if bool((X0 < lo).any()) or bool((X0 > hi).any()):
        raise ValueError(
            f"input_range: the training inputs lie in [{float(X0.min()):.3g}, "
            f"{float(X0.max()):.3g}], outside {input_range}; pass the data's range, or "
            "input_range=None for unbounded (e.g. tabular) data"
        )
    return lo, hi


def _true_class(y: torch.Tensor, before: torch.Tensor) -> int:
    """The test point's label, a class of the model that the model predicts now."""
    if y.numel() != 1 or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"y_test: expected one class label, got {y!r}")
    label = float(y.reshape(()))
    n_classes = len(before)
    if not (label == int(label) and 0 <= label < n_classes):
        raise ValueError(
            f"y_test: expected a class label in [0, {n_classes - 1}] for a model with "
            f"{n_classes} classes, got {y.reshape(()).item()!r}"
        )
    predicted = int(before.argmax())
    if predicted != int(label):
        raise ValueError(
            f"x_test: the model already predicts class {predicted}, not the true class "
            f"{int(label)}; attack a correctly classified test point"
        )
    return int(label)


def check_stop_margin(stop_margin) -> float:
    """``stop_margin`` as a float in [0, 1); a ValueError naming it otherwise."""
    stop_margin = check_nonnegative(stop_margin, "stop_margin")
    if not stop_margin < 1:
        raise ValueError(
            f"stop_margin: a lead in probability, expected 0 <= stop_margin < 1 (0.2 = 20 "
            f"points), got {stop_margin}"
        )
    return stop_margin


def _check_arguments(
    influence, x_test, y_test, n_poison, eps, step_size, max_iter, stop_margin, retrain,
    input_range, cancel,
) -> _Plan:  # fmt: skip
    """Every check of craft_attack's arguments, before any work; the errors name the argument."""
    check_influence(influence)
    n_poison = check_positive_int(n_poison, "n_poison")
    if n_poison > influence.n:
        raise ValueError(f"n_poison: {n_poison} is more than the {influence.n} training points")
    eps = check_nonnegative(eps, "eps")
    step_size = eps / 12.5 if step_size is None else check_nonnegative(step_size, "step_size")
    max_iter = check_positive_int(max_iter, "max_iter")
    stop_margin = check_stop_margin(stop_margin)
    if retrain is not True and not callable(retrain):
        raise TypeError(
            f"retrain: expected True or a callable retrain(model, (X, y)), got {retrain!r}; "
            "the attack needs the retrained model after every step"
        )
    check_cancel_event(cancel)
    X0 = influence.train.X
    if X0 is None:
        raise TypeError("influence: craft_attack needs a training set given as (X, y) tensors")
    if not X0.is_floating_point():
        raise TypeError(f"training inputs are {X0.dtype}: an attack needs continuous inputs")
    bounds = _input_bounds(input_range, X0)
    x, y = one_test_point(x_test, y_test, "craft_attack")
    influence.objective.prepare(x, y, "x_test", "y_test")  # shapes, finiteness, the loss's labels
    before = _probabilities(influence, x)
    true_class = _true_class(y, before)
    return _Plan(
        influence, x, y, true_class, before, n_poison, eps, step_size, max_iter, stop_margin,
        bounds,
    )  # fmt: skip


def _choose_state(plan: _Plan, retrain: bool | Retrain) -> AttackState:
    """The fastest exact way to retrain: over the cached features of a frozen extractor when
    theta is exactly the final Linear (with Newton-type steps when H is factorised), else the
    whole model."""
    inf = plan.influence
    X0, y_train = inf.train.X, inf.train.y
    head = inf.op.head
    if retrain is True and head is not None and head.covers_theta:
        fast = isinstance(inf.solver, Direct)
        return (LinearHeadNewton if fast else LinearHeadOnly)(inf, X0, plan.x, plan.y, y_train)
    return WholeModel(inf, plan.x, plan.y, y_train, retrain)


def _flipped_by(probabilities: torch.Tensor, true_class: int, stop_margin: float) -> bool:
    """The prediction is another class than ``true_class``, at least ``stop_margin`` ahead of
    it in probability."""
    if int(probabilities.argmax()) == true_class:
        return False
    return float(probabilities.max() - probabilities[true_class]) >= stop_margin


@dataclass
class _Steps:
    """Where the step loop stopped."""

    X: torch.Tensor  # the working copy of the training inputs, perturbed at the poisoned rows
    history: list[float]  # p(true class) before the attack and after each step
    probabilities: torch.Tensor  # (C,) after the last step
    iterations: int
    stopped: str  # "flipped", "max_iter", "fixed point" or "cancelled"


def _run_steps(
    plan: _Plan,
    state: AttackState,
    poisoned: torch.Tensor,
    originals: torch.Tensor,
    progress: bool,
    cancel: threading.Event | None,
) -> _Steps:
    """Move X[poisoned] by step_size * sign(I_pert,loss) inside their eps boxes (and the input
    range), retraining after each step, until the prediction flips with the new class
    ``stop_margin`` ahead, a fixed point, max_iter steps or ``cancel``."""
    lower, upper = originals - plan.eps, originals + plan.eps
    if plan.bounds is not None:
        lower, upper = torch.maximum(lower, plan.bounds[0]), torch.minimum(upper, plan.bounds[1])
    X = plan.influence.train.X.clone()  # the working copy; the user's tensor is never written
    run = _Steps(X, [float(plan.before[plan.true_class])], plan.before, 0, "max_iter")
    bar = progress_bar(total=plan.max_iter, desc="attack", disable=not progress)
    try:
        while run.iterations < plan.max_iter:
            if _flipped_by(run.probabilities, plan.true_class, plan.stop_margin):
                run.stopped = "flipped"
                bar.complete()  # an early stop on success reads as complete, not failed
                break
            if cancel is not None and cancel.is_set():
                run.stopped = "cancelled"
                break
            direction = state.directions(X, poisoned, state.s_test())  # (k, *x)
            moved = X[poisoned] + plan.step_size * torch.sign(direction).to(X.device, X.dtype)
            moved = torch.minimum(torch.maximum(moved, lower), upper)
            if torch.equal(moved, X[poisoned]):
                # Every input sits on the boundary of its box along the direction: retraining
                # would give the same model and direction again, a fixed point. Stop.
                run.stopped = "fixed point"
                break
            X[poisoned] = moved
            state.retrain(X, poisoned)
            run.iterations += 1
            run.probabilities = state.probabilities()
            run.history.append(float(run.probabilities[plan.true_class]))
            bar.update()
    finally:
        bar.close()
    return run


def _result(
    plan: _Plan,
    run: _Steps,
    poisoned: torch.Tensor,
    originals: torch.Tensor,
    test_index: int | None,
    seconds: float,
) -> AttackResult:
    prediction_after = int(run.probabilities.argmax())
    flipped = prediction_after != plan.true_class
    reached = _flipped_by(run.probabilities, plan.true_class, plan.stop_margin)
    ts = plan.influence.train
    return AttackResult(
        test_index=test_index,
        poisoned=poisoned.cpu().numpy(),
        original_inputs=originals,
        perturbed_inputs=run.X[poisoned].clone(),
        true_class_probability=run.history,
        probabilities_before=plan.before.numpy(),
        probabilities_after=run.probabilities.numpy(),
        prediction_before=plan.true_class,
        prediction_after=prediction_after,
        flipped=flipped,
        iterations=run.iterations,
        eps=plan.eps,
        step_size=plan.step_size,
        seconds=seconds,
        cancelled=run.stopped == "cancelled",
        stopped="flipped" if reached else run.stopped,
        stop_margin=plan.stop_margin,
        _train=(ts.X, ts.y),
    )


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
    stop_margin: float = 0.0,
    input_range: tuple | None = (0.0, 1.0),
    test_index: int | None = None,
    progress: bool = True,
    cancel: threading.Event | None = None,
) -> AttackResult:
    """Perturb ``n_poison`` training inputs, within ``eps``, to flip one test prediction.

    Args:
        influence: the :class:`~influence_widgets.Influence` of the trained model (its ``params``,
            loss, L2, Hessian and damping are kept at every step, ``damping="auto"`` at the rung
            it chose for the trained model; with ``params`` a top layer, the Hessian
            is over that layer while I_pert,loss differentiates through the whole network down to
            the inputs, as in the paper).
        x_test, y_test: ONE test point with a leading batch dimension, correctly classified.
        n_poison: how many training points to perturb.
        eps: the L-infinity radius around each original input, in the data's units
            (:func:`eight_bit_levels` converts 8-bit levels).
        step_size: the move per step (default eps / 12.5: the paper's 0.02 levels for 0.5-level eps
            would take 25 steps to reach the boundary; this default takes 12.5).
        max_iter: the most steps; the attack stops early once the prediction flips (by
            ``stop_margin``), or at a fixed point (every input on the boundary of its eps box
            along its direction: further steps would change nothing). ``result.stopped`` says
            which.
        retrain: True: after each step retrain warm-started (full-batch L-BFGS on the same risk,
            over ``params``) and recompute s_test, as the paper; or ``retrain(model_copy, (X, y))``
            training the copy in place, for models that need another optimiser.
        select: "grad_norm" (the points with the largest L1 norm of I_pert,loss, as the paper) or
            explicit training indices.
        stop_margin: go on after the flip until the new class leads the true class by this much
            probability (0.2 = 20 points), so that the flip is clear rather than a near tie; 0
            (default): stop at the first flip, as the paper. ``result.margin`` is the lead reached.
        input_range: valid (low, high) input values: numbers, (0, 1) for images; or tensors of
            one input's shape, a range per feature (for tables, e.g. each feature's training
            range: a poisoned row then never leaves the values seen); None for unbounded data.
        test_index: recorded in the result: None or an integer >= 0.
        progress: a progress bar over the steps.
        cancel: a ``threading.Event``; when set, stop after the current step.
    """
    start = time.perf_counter()
    plan = _check_arguments(
        influence, x_test, y_test, n_poison, eps, step_size, max_iter, stop_margin, retrain,
        input_range, cancel,
    )  # fmt: skip
    test_index = None if test_index is None else check_index(test_index, "test_index")
    state = _choose_state(plan, retrain)
    X0 = influence.train.X
    poisoned = _select(influence, state, X0, n_poison, select, progress)
    originals = X0[poisoned].clone()
    run = _run_steps(plan, state, poisoned, originals, progress, cancel)
    return _result(plan, run, poisoned, originals, test_index, time.perf_counter() - start)


# ----- the smallest eps that flips ------------------------------------------------------------
@dataclass(frozen=True)
class EpsSearch:
    """What :func:`smallest_flipping_eps` found for one test point.

    ``eps``: the smallest eps tried whose attack flipped the prediction, by the attacks'
    ``stop_margin`` (None: none did);
    ``result``: the attack at that eps (when none flipped, the attack at the largest eps tried);
    ``tried``: every (eps, flipped) in the order tried; ``stopped``: "found", "no flip" (not even
    at ``eps_max``), "time budget" or "cancelled".
    """

    eps: float | None
    result: AttackResult | None
    tried: list[tuple[float, bool]]
    eps_max: float
    seconds: float
    stopped: str

    @property
    def largest_failure(self) -> float | None:
        """The largest eps tried below ``eps`` that did not flip (None: none below it)."""
        below = [
            e for e, flipped in self.tried if not flipped and (self.eps is None or e < self.eps)
        ]
        return max(below, default=None)

    def __repr__(self) -> str:
        tried = ", ".join(f"{e:.4g}{'*' if f else ''}" for e, f in self.tried)
        return (
            f"EpsSearch(eps={self.eps if self.eps is None else round(self.eps, 6)}, "
            f"stopped={self.stopped!r}, tried=[{tried}] (* flipped), seconds={self.seconds:.1f})"
        )


def _search_eps_values(eps_start: float, eps_max: float) -> list[float]:
    """The doubling phase: eps_start, 2 eps_start, 4 eps_start, ... and last eps_max itself."""
    values = [eps_start]
    while values[-1] < eps_max:
        values.append(min(2 * values[-1], eps_max))
    return values


def _check_search(
    eps_max: float, eps_start: float | None, bisections: int, time_budget: float | None
) -> tuple[float, float, int]:
    """smallest_flipping_eps's eps_max, eps_start (default eps_max / 16) and bisections,
    checked; a ValueError naming the argument otherwise."""
    eps_max = check_nonnegative(eps_max, "eps_max")
    if not eps_max > 0:
        raise ValueError(f"eps_max: must be > 0, got {eps_max}")
    eps_start = eps_max / 16 if eps_start is None else check_nonnegative(eps_start, "eps_start")
    if not 0 < eps_start <= eps_max:
        raise ValueError(
            f"eps_start: expected 0 < eps_start <= eps_max = {eps_max}, got {eps_start}"
        )
    bisections = check_nonnegative(bisections, "bisections")
    if bisections != int(bisections):
        raise ValueError(f"bisections: expected a whole number, got {bisections}")
    if time_budget is not None and not check_nonnegative(time_budget, "time_budget") > 0:
        raise ValueError(f"time_budget: must be > 0 seconds or None, got {time_budget}")
    return eps_max, eps_start, int(bisections)


def _double(
    attack: Callable[[float], AttackResult],
    doubling: list[float],
    over_budget: Callable[[], bool],
) -> tuple[AttackResult | None, AttackResult | None, float, str]:
    """The doubling phase: (the attack that flipped or None, the last attack, the largest eps
    that did not flip or 0, why it stopped)."""
    last, low = None, 0.0
    for eps in doubling:
        last = attack(eps)
        if last.reached_margin:
            return last, last, low, "found"
        low = eps
        if last.cancelled or (eps < doubling[-1] and over_budget()):
            return None, last, low, "cancelled" if last.cancelled else "time budget"
    return None, last, low, "no flip"


def _bisect(
    attack: Callable[[float], AttackResult],
    best: AttackResult,
    last: AttackResult,
    low: float,
    bisections: int,
    over_budget: Callable[[], bool],
) -> tuple[AttackResult, AttackResult, str]:
    """``bisections`` halvings of (low, best.eps): (the smallest flip, the last attack, why it
    stopped)."""
    for _ in range(bisections):
        if over_budget():
            return best, last, "time budget"
        mid = (low + best.eps) / 2
        last = attack(mid)
        if last.cancelled:
            return best, last, "cancelled"
        if last.reached_margin:
            best = last
        else:
            low = mid
    return best, last, "found"


def smallest_flipping_eps(
    influence: Influence,
    x_test,
    y_test,
    eps_max: float,
    *,
    eps_start: float | None = None,
    bisections: int = 3,
    time_budget: float | None = None,
    n_poison: int = 1,
    max_iter: int = 100,
    stop_margin: float = 0.0,
    select: str | Sequence[int] = "grad_norm",
    input_range: tuple | None = (0.0, 1.0),
    test_index: int | None = None,
    progress: bool = True,
    cancel: threading.Event | None = None,
) -> EpsSearch:
    """The smallest L-infinity radius eps at which :func:`craft_attack` flips one test prediction.

    Attacks at eps = ``eps_start`` (default eps_max / 16), doubling up to ``eps_max``, until one
    flips; then ``bisections`` halvings of the interval between the largest eps that did not flip
    (or 0) and the smallest that did. Every attack uses craft_attack's default step, eps / 12.5,
    and the other arguments as given (see :func:`craft_attack`); with ``stop_margin`` an attack
    counts as a flip only when the new class leads by that much (``AttackResult.reached_margin``). Flipping need not be monotone
    in eps: the answer is the smallest eps *tried* that flipped, within a factor
    1 + 2^-bisections of the largest tried below it that did not.

    Args:
        eps_max: the largest eps to try, in the data's units.
        eps_start: the first eps tried (0 < eps_start <= eps_max).
        bisections: halvings after the first flip (0: stop at the first flip).
        time_budget: seconds; no new attack starts after it (the search then stops with
            ``stopped="time budget"`` and the best eps so far).
        progress: a progress bar over the attacks; ``cancel``: a ``threading.Event`` that stops
            the current attack after its current step and ends the search.
    """
    start = time.perf_counter()
    eps_max, eps_start, bisections = _check_search(eps_max, eps_start, bisections, time_budget)
    doubling = _search_eps_values(eps_start, eps_max)
    tried: list[tuple[float, bool]] = []
    bar = progress_bar(total=len(doubling) + bisections, desc="eps search", disable=not progress)

    def attack(eps: float) -> AttackResult:
        result = craft_attack(
            influence, x_test, y_test, n_poison=n_poison, eps=eps, max_iter=max_iter,
            stop_margin=stop_margin, select=select, input_range=input_range,
            test_index=test_index, progress=False, cancel=cancel,
        )  # fmt: skip
        tried.append((eps, result.reached_margin))
        bar.update()
        return result

    def over_budget() -> bool:
        return time_budget is not None and time.perf_counter() - start >= time_budget

    try:
        best, last, low, stopped = _double(attack, doubling, over_budget)
        if best is not None:
            best, last, stopped = _bisect(attack, best, last, low, bisections, over_budget)
        bar.complete()
    finally:
        bar.close()
    return EpsSearch(
        eps=None if best is None else best.eps,
        result=best if best is not None else last,
        tried=tried,
        eps_max=eps_max,
        seconds=time.perf_counter() - start,
        stopped=stopped,
    )
