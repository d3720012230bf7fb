"""Influence: the paper's quantities for a trained model at theta_hat.

Notation (Koh & Liang 2017): R(theta) = (1/n) sum_i ell_i(theta) with training terms
ell_i = L(z_i, theta) + (l2/2)||theta||^2, H = Hess R(theta_hat) + damping I (with
``hessian="gauss-newton"``, H = G + l2 I + damping I, G the Gauss-Newton matrix of the data term),
training gradients g_i = grad ell_i(theta_hat) (with the L2 term, as in the paper's code), test
gradients g_test = grad L(z_test, theta_hat) (without it), s_test = H^-1 g_test.

| method                      | quantity                                       | shape          |
| influence_on_params(idx)    | I_up,params = -H^-1 g_i                        | (k, p)         |
| influence_on_loss(Xt, yt)   | I_up,loss = -g_test^T H^-1 g_i                 | (T, n)         |
| predicted_removal_effect    | -(1/n) I_up,loss: change of test loss when     | (T, n)         |
|                             | z_i is removed (> 0: z_i helped the test point)|                |
| perturbation_influence      | I_pert,loss = -g_test^T H^-1 grad_x g_i        | (T, k, *x)     |
| self_influence()            | I_up,loss(z_i, z_i) = -g_i^T H^-1 g_i  (<= 0)  | (n,)           |

A set of test points {z_t} (all misclassified points of a class, say) is scored against its summed
test loss sum_t L(z_t, theta_hat) with ONE solve, s_set = H^-1 sum_t g_t (``s_test_of_set``):
``influence_on_set_loss`` = sum_t I_up,loss(z_i, z_t), (n,); ``predicted_removal_effect_of_set``
= -(1/n) times it; ``top_of_set`` ranks by the latter.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.func import grad, jvp, vmap

from influence_widgets.core.damping import AUTO, check_damping
from influence_widgets.core.errors import (
    InfluenceWarning,
    TrainingIndexError,
    check_nonnegative,
    check_positive_int,
)
from influence_widgets.core.hvp import EXACT, HESSIAN_NAMES, HessianOperator, check_hessian
from influence_widgets.core.losses import LossFn
from influence_widgets.core.objective import Objective, TrainingSet
from influence_widgets.core.points import check_training_points, test_batch
from influence_widgets.core.progress import progress_bar
from influence_widgets.core.solvers.base import Solver, SolverDiagnostics
from influence_widgets.core.solvers.choice import make_solver
from influence_widgets.core.solvers.direct import Direct

__all__ = [
    "Diagnostics",
    "Influence",
    "InfluenceConfig",
    "InfluenceWarning",
    "TopInfluence",
    "TrainingIndexError",
    "check_influence",
]


def _from_solver(name: str) -> property:
    """A read-only property of :class:`Diagnostics` that reads the solver's diagnostics."""
    return property(lambda self: getattr(self.solver, name), doc=f"The solver's {name}.")


@dataclass
class Diagnostics:
    """The state of an :class:`Influence` after ``fit()`` and its latest solve."""

    grad_norm: float  # ||grad R(theta_hat)||, ~0 at a minimum
    solver: SolverDiagnostics
    n_train: int
    n_params: int
    fit_seconds: float

    converged = _from_solver("converged")
    residual = _from_solver("residual")
    iterations = _from_solver("iterations")
    min_eigenvalue = _from_solver("min_eigenvalue")
    hessian = _from_solver("hessian")  # "exact" or "gauss-newton": what H stands for
    damping = _from_solver("damping")  # added to H's diagonal (the rung, with damping="auto")
    damping_reason = _from_solver("damping_reason")  # why "auto" chose it; None when given

    @property
    def method(self) -> str:
        """What was computed, in words (the attribution contract's ``diagnostics.method``)."""
        s = self.solver
        return (
            f"influence function with {HESSIAN_NAMES[s.hessian]} + {s.damping:g} I "
            f"(solver {s.solver!r})"
        )

    def __repr__(self) -> str:
        s = self.solver
        parts = [
            f"solver={s.solver!r}",
            f"hessian={s.hessian!r}",
            f"damping={s.damping:g}",
            f"grad_norm={self.grad_norm:.3g}",
            f"n_train={self.n_train}",
            f"n_params={self.n_params}",
            f"fit_seconds={self.fit_seconds:.3g}",
        ]
        for name in ("converged", "residual", "iterations", "min_eigenvalue", "max_eigenvalue"):
            value = getattr(s, name)
            if value is not None:
                parts.append(
                    f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}"
                )
        parts += [
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v!r}" for k, v in s.extra.items()
        ]
        if s.damping_reason is not None:
            parts.append(f"damping_reason={s.damping_reason!r}")
        return f"Diagnostics({', '.join(parts)})"


# Why damping="auto" is the default: a model trained with Adam/SGD (not to a minimum) then opens
# with every default (in the explorer and %influence too) instead of raising until the user guesses
# a damping, while a positive-definite H (every model trained to a minimum with l2 > 0) still gets
# damping 0 and the same results, bit for bit, as damping=0.
AUTO_DAMPING_DEFAULT = AUTO


@dataclass(frozen=True)
class InfluenceConfig:
    """How an :class:`Influence` was configured: its keyword arguments, checked, in one place.

    ``Influence.rebuild(model, train, **overrides)`` makes a new Influence from
    ``dataclasses.replace(config, **overrides)``; a new option of ``Influence`` is a new field here.
    A solver instance is held as an unfitted copy (:meth:`Solver.unfitted`).
    """

    loss: str | LossFn
    l2: float
    damping: float | str
    hessian: str
    params: Sequence[str] | None
    solver: str | Solver
    batch_size: int | None
    device: str | torch.device | None
    progress: bool
    hessian_budget_mb: float
    gradient_cache_mb: float

    def __post_init__(self) -> None:
        checked = {
            "damping": check_damping(self.damping, "damping"),
            "hessian": check_hessian(self.hessian, "hessian"),
            "hessian_budget_mb": check_nonnegative(self.hessian_budget_mb, "hessian_budget_mb"),
            "gradient_cache_mb": check_nonnegative(self.gradient_cache_mb, "gradient_cache_mb"),
        }
        if self.batch_size is not None:
            checked["batch_size"] = check_positive_int(self.batch_size, "batch_size")
        for name, value in checked.items():  # frozen: store the checked values once, here
            object.__setattr__(self, name, value)

    def options(self) -> dict[str, object]:
        """The keyword arguments of ``Influence(model, train, **options)``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class TopInfluence:
    """The k most helpful and most harmful training points for each of T test points (one row for
    a whole set of test points from ``Influence.top_of_set``).

    Scores are ``predicted_removal_effect``: the predicted change of the test loss when the training
    point is removed. Helpful points (largest scores, > 0) would raise the test loss if removed;
    harmful points (smallest scores, < 0) would lower it. All four lie on the Influence's
    ``device``; ``Influence.train.take(helpful[0])`` and ``training_indices`` take them as they are.
    """

    helpful: torch.Tensor  # (T, k) training indices, most helpful first
    helpful_scores: torch.Tensor  # (T, k)
    harmful: torch.Tensor  # (T, k) training indices, most harmful first
    harmful_scores: torch.Tensor  # (T, k)


class Influence:
    """Influence functions for a trained PyTorch model (Koh & Liang, ICML 2017).

    Args:
        model: the trained model, at (or near) a minimum theta_hat of the risk; never modified.
        train: the training set: ``(X, y)`` tensors/arrays, a ``torch.utils.data.Dataset`` whose
            items are ``(x, y)`` or ``(x, y, ...)``, or an ``iw.datasets`` data set (its training
            split).
        loss: "cross_entropy", "mse", "smooth_hinge" (or ``SmoothHinge(t)``), or a callable
            ``(output, target) -> per-sample losses``.
        l2: the L2 coefficient the model was trained with: R includes (l2/2)||theta||^2.
        damping: a number >= 0 added to H's diagonal (the paper's code uses 0.01 for its CNN),
            or "auto" (the default): the smallest rung of 0, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03,
            0.1, 0.3, 1, 3, 10, 30, 100 that makes H + damping I positive definite with a margin:
            0 when H is positive definite (results exactly those of ``damping=0``), else the
            smallest rung >= 1.5 x (-lambda_min(H)), lambda_min exact for "direct" and "ekfac",
            a Lanczos estimate for "cg" (80 extra HVP passes at ``fit``), "lissa" and "arnoldi"
            (:mod:`~influence_widgets.core.damping`). ``fit`` warns when it is > 0, and
            ``diagnostics.damping`` / ``damping_reason`` say which and why. A number is used as
            given: H + damping I that is not positive definite raises
            :class:`~influence_widgets.NotPositiveDefiniteError` with the damping that fixes it.
        hessian: "exact" (the default): H is the Hessian of R, as in the paper; or
            "gauss-newton": the generalised Gauss-Newton matrix
            G = (1/n) sum_i J_i^T Lambda_i J_i + l2 I (J_i the Jacobian of the model's outputs in
            theta, Lambda_i the loss's Hessian in the outputs), positive semi-definite wherever
            theta_hat is, equal to H for a model linear in theta, as EK-FAC, Kronfluence and TRAK
            use it (:mod:`~influence_widgets.core.gauss_newton`). "ekfac" always approximates G,
            whatever this says (``diagnostics.hessian`` and :attr:`hessian` say "gauss-newton").
        params: names of the parameters theta to take influence over (e.g. the top layer);
            default all trainable. ``perturbation_influence`` still differentiates to the inputs
            through the whole network.
        solver: "auto", "direct", "cg", "lissa", "arnoldi", "ekfac" (EK-FAC of the Gauss-Newton
            matrix, Linear and Conv2d layers only) or any other registered name
            (:func:`~influence_widgets.core.solvers.available_solvers` lists them with a line
            on each), or a configured solver instance: its settings
            are copied and the copy is fitted (``self.solver``), so one instance may configure
            several Influence objects. "auto" is "direct" while H and its factor fit
            ``hessian_budget_mb``; beyond it "ekfac" when every parameter in ``params`` is in a
            Linear/Conv2d layer (an approximation: check it in the explorer's Verify tab), else
            "cg". ``diagnostics.solver.extra["auto"]`` says which and why.
        batch_size: training points per batch in every pass; default min(n, 1024).
        device: where to compute; default the model's device.
            The model is copied there (the user's model stays where it is); the training and
            test data may live on any device and are moved batch by batch.
        progress: show progress bars for the slow steps.
        hessian_budget_mb: memory (MB) allowed for H and its factor when ``solver="auto"``.
        gradient_cache_mb: the n x p training-gradient matrix is kept when it fits this budget;
            otherwise scoring streams forward-mode JVPs over the training set.

    Every tensor a method returns (scores, s_test, :class:`TopInfluence`) lies on ``device``
    (a GPU's results stay there: ``.cpu()`` them for numpy), except ``predicted_labels`` and the
    indices of ``training_indices``, which are on the CPU.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        train,
        *,
        loss: str | LossFn = "cross_entropy",
        l2: float = 0.0,
        damping: float | str = AUTO_DAMPING_DEFAULT,
        hessian: str = EXACT,
        params: Sequence[str] | None = None,
        solver: str | Solver = "auto",
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        progress: bool = True,
        hessian_budget_mb: float = 2048,
        gradient_cache_mb: float = 512,
    ) -> None:
        self.config = InfluenceConfig(
            loss=loss,
            l2=l2,
            damping=damping,
            hessian=hessian,
            params=params,
            solver=solver.unfitted() if isinstance(solver, Solver) else solver,
            batch_size=batch_size,
            device=device,
            progress=progress,
            hessian_budget_mb=hessian_budget_mb,
            gradient_cache_mb=gradient_cache_mb,
        )
        cfg = self.config
        self.objective = Objective(model, loss=loss, l2=l2, params=params, device=device)
        self.train = TrainingSet(train, "train")
        check_training_points(self.objective, self.train)
        self.n = self.train.n
        self.p = self.objective.n_params
        self.batch_size = cfg.batch_size or min(self.n, 1024)
        self.progress = progress
        # The solver this object fits: a fresh one, never the instance passed in.
        self.solver = make_solver(cfg.solver, self.objective, cfg.hessian_budget_mb)
        self.solver.check(self.objective)  # e.g. an uncovered layer is named now, not at fit()
        # The matrix H stands for: EK-FAC's own (the Gauss-Newton matrix) or the one asked for.
        self.hessian = self.solver.curvature or cfg.hessian
        self.gradient_cache_mb = cfg.gradient_cache_mb
        self.op = HessianOperator(
            self.objective,
            self.train,
            self.batch_size,
            cfg.damping,
            cache_mb=cfg.gradient_cache_mb,
            hessian=cfg.hessian,
        )
        self._fitted = False
        self._fit_lock = threading.RLock()
        self._grads: torch.Tensor | None = None
        self._loss_gradient: torch.Tensor | None = None  # grad L(theta_hat), computed once
        self._diagnostics: Diagnostics | None = None

    def rebuild(self, model: torch.nn.Module, train, **overrides) -> Influence:
        """A new, unfitted Influence with this one's settings (but ``overrides``, any of
        :class:`InfluenceConfig`'s fields) for another model or training set (after retraining, or
        with perturbed training inputs)."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(InfluenceConfig)})
        if unknown:
            raise TypeError(
                f"{unknown[0]}: not an option of Influence; rebuild() accepts "
                f"{', '.join(f.name for f in dataclasses.fields(InfluenceConfig))}"
            )
        return Influence(model, train, **dataclasses.replace(self.config, **overrides).options())

    # ----- setup ----------------------------------------------------------------------------
    def fit(self) -> Influence:
        """Precompute once: gradient norm at theta_hat, the solver's factorisation, gradients.

        Warns (:class:`InfluenceWarning`) when theta_hat is not a stationary point of R, and when
        ``damping="auto"`` had to add a damping > 0 (H not positive definite). Raises
        :class:`~influence_widgets.core.solvers.NotPositiveDefiniteError` (a ``ValueError``) with a
        suggested ``damping`` when H + damping I is not positive definite for the number given.
        Returns ``self``.
        """
        with self._fit_lock:  # one fit, however many threads ask (see ensure_fit)
            start = time.perf_counter()
            grad_norm = self._risk_gradient_norm()
            if grad_norm > 1e-3:
                warnings.warn(
                    f"The model is not at a minimum of the training risk: ||grad R(theta)|| = "
                    f"{grad_norm:.3g}. Influence assumes theta_hat minimises R; train to a tighter "
                    f"tolerance (iw.train) or check that l2={self.objective.l2:g} matches training.",
                    InfluenceWarning,
                    stacklevel=2,
                )
            self.solver.fit(self.op, progress=self.progress)
            if self.op.auto_damping and self.op.damping > 0:
                warnings.warn(
                    f"damping='auto' added damping={self.op.damping:g} to "
                    f"{HESSIAN_NAMES[self.hessian]}: {self.solver.diagnostics.damping_reason}. "
                    f"Influence is computed with (H + {self.op.damping:g} I)^-1.",
                    InfluenceWarning,
                    stacklevel=2,
                )
            itemsize = self.objective.theta.element_size()
            if self.n * self.p * itemsize <= self.gradient_cache_mb * 2**20:
                self._grads = self._training_gradients()
            self._diagnostics = Diagnostics(
                grad_norm=grad_norm,
                solver=self.solver.diagnostics,
                n_train=self.n,
                n_params=self.p,
                fit_seconds=time.perf_counter() - start,
            )
            self._fitted = True
        return self

    def ensure_fit(self) -> None:
        """Fit unless fitted: a thread that asks while another fits (the explorer precomputing in
        the background, the notebook calling ``top()``) waits for that fit instead of starting
        a second one."""
        if not self._fitted:
            with self._fit_lock:
                if not self._fitted:
                    self.fit()

    @property
    def damping(self) -> float:
        """The damping added to H's diagonal: the number given, or with ``damping="auto"`` the rung
        chosen at ``fit`` (fits first; ``diagnostics.damping_reason`` says why)."""
        if self.op.auto_damping:
            self.ensure_fit()
        return self.op.damping

    @property
    def device(self) -> torch.device:
        """Where this Influence computes and where its results lie."""
        return self.objective.device

    @property
    def diagnostics(self) -> Diagnostics:
        """Gradient norm, solver residual/iterations/convergence, known eigenvalues (fits first)."""
        self.ensure_fit()
        return self._diagnostics

    # ----- gradients ------------------------------------------------------------------------
    @property
    def cached_gradients(self) -> torch.Tensor | None:
        """The training gradients grad ell_i(theta_hat), (n, p), L2 term included, that ``fit``
        keeps when n * p numbers fit ``gradient_cache_mb``; else None (before ``fit``, or when
        they do not fit: scoring then streams them batch by batch)."""
        return self._grads

    def mean_loss_gradient(self) -> torch.Tensor:
        """grad L(theta_hat) = (1/n) sum_i grad L(z_i, theta_hat), without the L2 term, (p,);
        grad R(theta_hat) = grad L(theta_hat) + l2 theta_hat. One pass over the training set, the
        first time (``fit``, the explorer and the magic all ask for it)."""
        if self._loss_gradient is None:
            obj = self.objective
            total = torch.zeros_like(obj.theta)
            for x, y, _ in self._batches("gradient at theta_hat"):
                total += grad(lambda th, x=x, y=y: obj.loss(th, x, y).sum())(obj.theta)
            self._loss_gradient = total / self.n
        return self._loss_gradient.clone()

    def _risk_gradient_norm(self) -> float:
        obj = self.objective
        return float((self.mean_loss_gradient() + obj.l2 * obj.theta).norm())

    def _batches(self, desc: str):
        obj = self.objective
        n_batches = -(-self.n // self.batch_size)
        show = self.progress and n_batches > 1
        bar = progress_bar(total=n_batches, desc=desc, disable=not show)
        for x, y, sl in self.train.batches(self.batch_size):
            yield obj.cast_inputs(x), obj.cast_targets(y), sl
            bar.update()
        bar.close()

    def _per_sample_train_grads(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """g_i = grad ell_i(theta_hat) for a batch, (B, p), L2 term included."""
        obj = self.objective
        return vmap(grad(obj.train_term), in_dims=(None, 0, 0))(obj.theta, x, y)

    def _training_gradients(self) -> torch.Tensor:
        G = torch.empty(self.n, self.p, dtype=self.objective.dtype, device=self.objective.device)
        for x, y, sl in self._batches("training gradients"):
            G[sl] = self._per_sample_train_grads(x, y)
        return G

    def _train_grads_at(self, idx: torch.Tensor) -> torch.Tensor:
        if self._grads is not None:
            return self._grads[idx]
        obj = self.objective
        x, y = self.train.take(idx)
        return self._per_sample_train_grads(obj.cast_inputs(x), obj.cast_targets(y))

    def _test_batch(self, x_test, y_test) -> tuple[torch.Tensor, torch.Tensor]:
        """The cast test batch (x, y); ``y_test=None``: y = the predicted classes."""
        return test_batch(self.objective, self.train, x_test, y_test)

    def predicted_labels(self, x_test) -> torch.Tensor:
        """y_hat = argmax_c p(c | x_test, theta_hat) for each test point, (T,) int64 on the CPU:
        the classes for which ``y_test=None`` explains the points (needs a classification loss).
        """
        return self._test_batch(x_test, None)[1].long().cpu()

    def test_gradients(self, x_test, y_test=None) -> torch.Tensor:
        """grad L(z_test, theta_hat) without the L2 term, (T, p). ``y_test=None``: for the
        predicted classes, z_test = (x_test, y_hat), y_hat = argmax_c p(c | x_test, theta_hat)."""
        x, y = self._test_batch(x_test, y_test)
        obj = self.objective
        return vmap(grad(obj.test_loss), in_dims=(None, 0, 0))(obj.theta, x, y)

    def s_test(self, x_test, y_test=None) -> torch.Tensor:
        """s_test = H^-1 grad L(z_test) for each test point, (T, p): one solve for all columns."""
        self.ensure_fit()
        G = self.test_gradients(x_test, y_test)
        return self.solver.solve(G.T, progress=self.progress and len(G) > 1).T

    def _summed_test_gradient(self, x_test, y_test) -> torch.Tensor:
        """sum_t grad L(z_t, theta_hat) over the test set, without the L2 term, (p,): streamed in
        batches of ``batch_size`` test points, never a (T, p) matrix."""
        x, y = self._test_batch(x_test, y_test)
        obj = self.objective
        total = torch.zeros_like(obj.theta)
        for start in range(0, len(x), self.batch_size):
            xb, yb = x[start : start + self.batch_size], y[start : start + self.batch_size]
            total += grad(lambda th, xb=xb, yb=yb: obj.loss(th, xb, yb).sum())(obj.theta)
        return total

    def s_test_of_set(self, x_test, y_test=None) -> torch.Tensor:
        """s_set = H^-1 sum_t grad L(z_t, theta_hat): s_test of the SUMMED test loss of the T test
        points, (p,). One solve for the whole set (not one per point); equals
        ``s_test(x_test, y_test).sum(0)``. ``y_test=None``: each z_t = (x_t, y_hat_t), its
        predicted class (see :meth:`influence_on_loss`)."""
        g = self._summed_test_gradient(x_test, y_test)
        self.ensure_fit()
        return self.solver.solve(g[:, None])[:, 0]

    def training_indices(self, idx, name: str = "idx") -> torch.Tensor:
        """``idx`` (any integers, on any device; None: all n) as int64 training indices in
        [0, n) on the CPU; else a TypeError or :class:`TrainingIndexError` naming ``name``."""
        if idx is None:
            return torch.arange(self.n)
        if isinstance(idx, str | bytes):
            raise TypeError(f"{name}: expected integer training indices, got a string")
        try:
            t = torch.as_tensor(idx)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name}: expected integer training indices, got {idx!r}") from err
        if t.numel() == 0:
            return torch.zeros(0, dtype=torch.long)
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name}: expected integer training indices, got {t.dtype}")
        t = t.long().reshape(-1).cpu()
        if len(t) and (int(t.min()) < -self.n or int(t.max()) >= self.n):
            bad = int(t[(t >= self.n) | (t < -self.n)][0])
            raise TrainingIndexError(
                f"{name}: index {bad} is out of range for {self.n} training points"
            )
        return t % self.n

    def score_against(self, S: torch.Tensor) -> torch.Tensor:
        """g_i . s for every training point and each column s of S (p, T) -> (T, n)."""
        if self._grads is not None:
            return (self._grads @ S).T
        obj = self.objective
        head = self.op.head
        if head is not None and head.covers_theta:
            dots = head.gradient_dots(self.train, self.batch_size, self.op.cache_mb, S)
            return dots + obj.l2 * (obj.theta @ S)[:, None]
        out = torch.empty(S.shape[1], self.n, dtype=S.dtype, device=S.device)
        for x, y, sl in self._batches("scoring training points"):

            def dot_along(s: torch.Tensor, x=x, y=y) -> torch.Tensor:
                return jvp(lambda th: obj.train_terms(th, x, y), (obj.theta,), (s,))[1]

            with obj.lock:  # forward-mode AD: one thread at a time (objective.FUNCTORCH_LOCK)
                out[:, sl] = vmap(dot_along)(S.T)
        return out

    # ----- the paper's quantities -----------------------------------------------------------
    def influence_on_params(self, idx=None) -> torch.Tensor:
        """I_up,params(z_i) = -H^-1 grad ell_i(theta_hat) for each index, shape (k, p).

        Upweighting z_i by eps moves theta_hat by about eps * I_up,params; removing it is
        eps = -1/n.
        """
        self.ensure_fit()
        idx = self.training_indices(idx)
        G = self._train_grads_at(idx)
        return -self.solver.solve(G.T).T

    def influence_on_loss(self, x_test, y_test=None) -> torch.Tensor:
        """I_up,loss(z_i, z_test) = -grad L(z_test)^T H^-1 grad ell_i, shape (T, n).

        Negative values: upweighting z_i lowers the test loss (z_i is helpful). Without labels
        (``y_test=None``) each test point is explained for its predicted class: z_test =
        (x_test, y_hat) with y_hat = argmax_c p(c | x_test, theta_hat), so the loss is
        L(z_test, theta_hat) = -log p(y_hat | x_test) and helpful points support the prediction.
        This needs a classification loss; the same holds for every method taking ``y_test``.
        """
        S = self.s_test(x_test, y_test)
        return -self.score_against(S.T)

    def predicted_removal_effect(self, x_test, y_test=None) -> torch.Tensor:
        """-(1/n) I_up,loss: the predicted change of each test loss when z_i is removed, (T, n).

        Positive: removing z_i raises the test loss, so z_i was helpful. This is the paper code's
        ``predicted_loss_diffs``.
        """
        return -self.influence_on_loss(x_test, y_test) / self.n

    def scores(self, x_test, y_test=None) -> torch.Tensor:
        """The attribution contract's scores (:class:`~influence_widgets.AttributionMethod`):
        :meth:`predicted_removal_effect`, (T, n); > 0: removing z_i would raise the test loss."""
        return self.predicted_removal_effect(x_test, y_test)

    def influence_on_set_loss(self, x_test, y_test=None) -> torch.Tensor:
        """sum_t I_up,loss(z_i, z_t) = -(sum_t grad L(z_t))^T H^-1 grad ell_i, shape (n,): the
        influence of upweighting each training point z_i on the SUMMED loss of the T test points.

        Equals ``influence_on_loss(x_test, y_test).sum(0)`` (same sign: negative = z_i helps the
        set; same training gradients ell_i, with the L2 term) at the cost of one solve
        (:meth:`s_test_of_set`) and one pass over the training set, whatever T. Divide by T for
        the mean test loss. ``y_test=None`` explains each point for its predicted class.
        """
        s = self.s_test_of_set(x_test, y_test)
        return -self.score_against(s[:, None])[0]

    def predicted_removal_effect_of_set(self, x_test, y_test=None) -> torch.Tensor:
        """-(1/n) sum_t I_up,loss(z_i, z_t): the predicted change of the summed test loss of the
        T test points when z_i is removed, (n,); ``predicted_removal_effect(...).sum(0)``.

        Positive: removing z_i raises the set's loss, so z_i was helpful to the set.
        """
        return -self.influence_on_set_loss(x_test, y_test) / self.n

    def perturbation_influence(self, x_test, y_test=None, idx=None) -> torch.Tensor:
        """I_pert,loss(z_i, z_test) = -grad L(z_test)^T H^-1 grad_x grad ell_i, (T, k, *x_i.shape).

        Moving training input x_i by a small delta changes the test loss by about
        I_pert,loss . delta (after retraining). Differentiates through the whole network to the
        inputs even when ``params`` selects a subset.
        """
        idx = self.training_indices(idx)
        S = self.s_test(x_test, y_test)
        obj = self.objective
        x, y = self.train.take(idx)
        x, y = obj.cast_inputs(x), obj.cast_targets(y)
        if not x.is_floating_point():
            raise TypeError(
                f"perturbation_influence: training inputs are {x.dtype}, not continuous; "
                "I_pert,loss needs inputs that can be perturbed (floating point)"
            )
        return perturbation_along(obj, x, y, S)

    def self_influence(self) -> torch.Tensor:
        """I_up,loss(z_i, z_i) = -grad ell_i^T H^-1 grad ell_i for every training point, (n,).

        Always <= 0 for a positive-definite H; the most negative are the points whose removal
        would change their own loss the most: the first to check for wrong labels.
        """
        self.ensure_fit()
        out = torch.empty(self.n, dtype=self.objective.dtype, device=self.objective.device)
        direct = isinstance(self.solver, Direct)
        chunk = self.batch_size if direct else max(1, min(self.batch_size, 256))
        bar = progress_bar(total=self.n, desc="self-influence", disable=not self.progress)
        for start in range(0, self.n, chunk):
            idx = torch.arange(start, min(start + chunk, self.n))
            G = self._train_grads_at(idx).T  # (p, b)
            out[start : start + len(idx)] = -(G * self.solver.solve(G)).sum(0)
            bar.update(len(idx))
        bar.close()
        return out

    def self_scores(self) -> torch.Tensor:
        """The attribution contract's self-scores: -(1/n) I_up,loss(z_i, z_i) =
        (1/n) grad ell_i^T H^-1 grad ell_i (>= 0), the predicted rise of z_i's own training term
        when z_i is removed, (n,): :meth:`self_influence` on the scale and sign of
        :meth:`scores`. The largest are the first to check for wrong labels."""
        return -self.self_influence() / self.n

    def top(self, x_test, y_test=None, k: int = 10) -> TopInfluence:
        """The k most helpful and k most harmful training points for each test point.

        Ranked by :meth:`predicted_removal_effect`: helpful first by largest score, harmful by
        smallest (most negative). ``y_test=None`` ranks them for the predicted classes y_hat
        (see :meth:`influence_on_loss`): helpful points support the prediction.
        """
        k = min(check_positive_int(k, "k"), self.n)
        return ranked(self.predicted_removal_effect(x_test, y_test), k)

    def top_of_set(self, x_test, y_test=None, k: int = 10) -> TopInfluence:
        """The k most helpful and k most harmful training points for the whole set of T test
        points, as one row: a :class:`TopInfluence` of shape (1, k), like ``top`` for one point.

        Ranked by :meth:`predicted_removal_effect_of_set` (the predicted change of the summed test
        loss when z_i is removed): helpful first by largest score, harmful by smallest. One solve
        for the whole set.
        """
        k = min(check_positive_int(k, "k"), self.n)
        return ranked(self.predicted_removal_effect_of_set(x_test, y_test)[None], k)

    def _damping_text(self) -> str:
        """The damping as repr shows it without fitting: 0.01, 'auto' or 0.1 (auto)."""
        if not self.op.auto_damping:
            return f"{self.op.damping:g}"
        return f"{self.op.damping:g} (auto)" if self._fitted else repr(AUTO)

    def __repr__(self) -> str:
        return (
            f"Influence(n_train={self.n}, n_params={self.p}, solver={self.solver.name!r}, "
            f"l2={self.objective.l2:g}, damping={self._damping_text()}, "
            f"hessian={self.hessian!r}, fitted={self._fitted})"
        )


def ranked(scores: torch.Tensor, k: int) -> TopInfluence:
    """The k largest (helpful) and k smallest (harmful) removal effects of each row of ``scores``
    (T, n)."""
    hs, hi = torch.topk(scores, k, dim=1, largest=True)
    ls, li = torch.topk(scores, k, dim=1, largest=False)
    return TopInfluence(helpful=hi, helpful_scores=hs, harmful=li, harmful_scores=ls)


def check_influence(value, name: str = "influence") -> Influence:
    """``value`` if it is an :class:`Influence`, else a TypeError naming ``name``."""
    if not isinstance(value, Influence):
        raise TypeError(f"{name}: expected an iw.Influence, got {type(value).__name__}")
    return value


def perturbation_along(
    obj: Objective, x: torch.Tensor, y: torch.Tensor, S: torch.Tensor
) -> torch.Tensor:
    """-grad_x (grad ell(x_i, y_i)^T s) for each row s of S (T, p) and each cast training point
    (x, y): I_pert,loss when s = s_test = H^-1 grad L(z_test), shape (T, k, *x_i.shape)."""

    def directional(xi: torch.Tensor, yi: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        # grad ell_i(theta)^T s as a function of the input x_i
        return jvp(lambda th: obj.train_term(th, xi, yi), (obj.theta,), (s,))[1]

    grad_x = vmap(vmap(grad(directional), in_dims=(0, 0, None)), in_dims=(None, None, 0))
    with obj.lock:  # forward-mode AD: one thread at a time (objective.FUNCTORCH_LOCK)
        return -grad_x(x, y, S)
