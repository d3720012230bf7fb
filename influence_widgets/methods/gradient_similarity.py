"""Grad-Dot and TracIn: attribution by dot products of loss gradients, no Hessian.

With g(z, theta) = grad_theta L(z, theta), the loss gradient WITHOUT the L2 term (as both papers
define it: the gradient of the loss being trained; the regulariser is not a training point's):

    Grad-Dot (Charpiat et al., NeurIPS 2019):  tau(z_test)_i = g(z_test, theta_hat) . g(z_i, theta_hat)
    TracIn (Pruthi et al., NeurIPS 2020, TracInCP):
                                   tau(z_test)_i = sum_k eta_k g(z_test, theta_k) . g(z_i, theta_k)

over checkpoints theta_1..theta_K saved during training with the learning rates eta_k in use
there. Sign: one gradient step of size eta on z_i changes the test loss by about
-eta g(z_test) . g(z_i), so tau > 0 means z_i's steps lowered the test loss, and removing z_i would
raise it: helpful, the sign of ``Influence.predicted_removal_effect``. Scale: that of one
per-example step of size eta_k per checkpoint (Grad-Dot: a step of size 1); with mini-batches of
B points each step on z_i is eta_k / B, a positive factor that leaves every ranking as it is.
TracIn with one checkpoint at theta_hat equals its learning rate times Grad-Dot.

Self-scores (Pruthi et al.'s self-influence, for finding mislabeled points):
sum_k eta_k ||g(z_i, theta_k)||^2 (Grad-Dot: ||g(z_i, theta_hat)||^2), >= 0.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import torch

from influence_widgets.core.errors import check_nonnegative
from influence_widgets.core.losses import LossFn
from influence_widgets.core.objective import Objective
from influence_widgets.core.progress import progress_bar
from influence_widgets.methods.base import Attribution
from influence_widgets.methods.checkpoints import check_checkpoints, model_at
from influence_widgets.methods.per_sample import cast_batches, loss_gradients

__all__ = ["GradDot", "TracIn"]


class _GradientSimilarity(Attribution):
    """sum_k w_k g(z_test, theta_k) . g(z_i, theta_k) over weighted models (objective_k, w_k)."""

    def __init__(
        self,
        explained: Objective,
        weighted: list[tuple[Objective, float]],
        train,
        *,
        batch_size: int | None,
        progress: bool,
        gradient_cache_mb: float,
    ) -> None:
        super().__init__(explained, train, batch_size=batch_size, progress=progress)
        self.weighted = weighted
        self.gradient_cache_mb = check_nonnegative(gradient_cache_mb, "gradient_cache_mb")
        self._grads: list[torch.Tensor] | None = None

    @abstractmethod
    def _description(self) -> str:
        """The ``diagnostics.method`` text."""

    def _fit(self) -> tuple[str, int, dict[str, object]]:
        itemsize = self.objective.theta.element_size()
        cached = len(self.weighted) * self.n * self.p * itemsize <= self.gradient_cache_mb * 2**20
        self._grads = None
        if cached:
            grads = []
            for k, (obj, _) in enumerate(self.weighted):
                G = torch.empty(self.n, self.p, dtype=obj.dtype, device=obj.device)
                for x, y, sl in self._batches(obj, k, "training gradients"):
                    G[sl] = loss_gradients(obj, x, y)
                grads.append(G)
            self._grads = grads
        details = {
            "learning_rates": [w for _, w in self.weighted],
            "gradients": "cached" if cached else "streamed",
            "l2_in_gradients": False,
        }
        return self._description(), len(self.weighted), details

    def _batches(self, obj: Objective, k: int, what: str):
        desc = what if len(self.weighted) == 1 else f"{what} (checkpoint {k + 1})"
        return cast_batches(obj, self.train, self.batch_size, desc, self.progress)

    def _training_gradients(self, k: int):
        """(gradient batch (B, p), slice) over the training set at model k: cached or streamed."""
        if self._grads is not None:
            for start in range(0, self.n, self.batch_size):
                sl = slice(start, min(start + self.batch_size, self.n))
                yield self._grads[k][sl], sl
            return
        obj = self.weighted[k][0]
        for x, y, sl in self._batches(obj, k, "scoring training points"):
            yield loss_gradients(obj, x, y), sl

    def scores(self, x_test, y_test=None) -> torch.Tensor:
        """tau(z_test)_i = sum_k eta_k g(z_test, theta_k) . g(z_i, theta_k), (T, n); > 0: z_i
        helped the test point (see the module docstring). ``y_test=None``: the explained
        model's predicted classes, the same labels at every checkpoint."""
        self.ensure_fit()
        x, y = self.test_points(x_test, y_test)
        out = torch.zeros(len(x), self.n, dtype=self.objective.dtype, device=self.device)
        for k, (obj, weight) in enumerate(self.weighted):
            Gt = loss_gradients(obj, obj.cast_inputs(x), y)  # (T, p)
            for G, sl in self._training_gradients(k):
                out[:, sl] += weight * (Gt @ G.T)
        return out

    def self_scores(self) -> torch.Tensor:
        """sum_k eta_k ||g(z_i, theta_k)||^2, (n,), >= 0: large for points the training kept
        pushing on (the first to check for wrong labels)."""
        self.ensure_fit()
        out = torch.zeros(self.n, dtype=self.objective.dtype, device=self.device)
        for k, (_, weight) in enumerate(self.weighted):
            for G, sl in self._training_gradients(k):
                out[sl] += weight * G.pow(2).sum(1)
        return out


class GradDot(_GradientSimilarity):
    """Grad-Dot: tau(z_test)_i = grad L(z_test, theta_hat) . grad L(z_i, theta_hat) (no Hessian;
    loss gradients without the L2 term). See :mod:`influence_widgets.methods.gradient_similarity`.

    Args:
        model: the trained model; never modified.
        train: the training set, in any form ``Influence`` takes.
        loss: as for ``Influence``.
        params: names of the parameters to take gradients in (default all trainable).
        batch_size: training points per batch (default min(n, 1024)).
        device: where to compute (default the model's); results lie there.
        progress: show progress bars.
        gradient_cache_mb: the (n, p) training-gradient matrix is kept at ``fit`` when it fits
            this budget; otherwise each call streams the gradients batch by batch.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        train,
        *,
        loss: str | LossFn = "cross_entropy",
        params: Sequence[str] | None = None,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        progress: bool = True,
        gradient_cache_mb: float = 512,
    ) -> None:
        obj = Objective(model, loss=loss, params=params, device=device)
        super().__init__(
            obj,
            [(obj, 1.0)],
            train,
            batch_size=batch_size,
            progress=progress,
            gradient_cache_mb=gradient_cache_mb,
        )

    def _description(self) -> str:
        return "Grad-Dot: grad L(z_test) . grad L(z_i) at the trained parameters (no L2 term)"

    def __repr__(self) -> str:
        return f"GradDot(n_train={self.n}, n_params={self.p}, fitted={self._fitted})"


class TracIn(_GradientSimilarity):
    """TracIn (TracInCP, Pruthi et al. 2020): tau(z_test)_i = sum_k eta_k grad L(z_test, theta_k)
    . grad L(z_i, theta_k) over saved checkpoints (loss gradients without the L2 term). See
    :mod:`influence_widgets.methods.gradient_similarity`.

    Args:
        model: the trained model: its architecture takes each checkpoint's state, and its
            predicted classes answer ``y_test=None``; never modified. It counts as a checkpoint
            only when one was saved at its state.
        train: the training set, in any form ``Influence`` takes.
        checkpoints: a :class:`~influence_widgets.CheckpointRecorder` (``rec.save(lr=...)`` in the
            training loop, or ``iw.train(..., recorder=rec)``) or a list of
            :class:`~influence_widgets.Checkpoint`, at least one, each with the learning rate
            eta_k in use there.
        loss, params, batch_size, device, progress, gradient_cache_mb: as for :class:`GradDot`;
            the cache holds one (n, p) matrix per checkpoint.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        train,
        checkpoints=None,
        *,
        loss: str | LossFn = "cross_entropy",
        params: Sequence[str] | None = None,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        progress: bool = True,
        gradient_cache_mb: float = 512,
    ) -> None:
        found = check_checkpoints(checkpoints)
        explained = Objective(model, loss=loss, params=params, device=device)
        weighted = []
        bar = progress_bar(total=len(found), desc="loading checkpoints", disable=not progress)
        for i, ck in enumerate(found):
            copy = model_at(model, ck.state, f"checkpoints[{i}]")
            obj = Objective(copy, loss=loss, params=params, device=explained.device)
            weighted.append((obj, ck.lr))
            bar.update()
        bar.close()
        super().__init__(
            explained,
            weighted,
            train,
            batch_size=batch_size,
            progress=progress,
            gradient_cache_mb=gradient_cache_mb,
        )

    def _description(self) -> str:
        return (
            f"TracIn: sum over {len(self.weighted)} checkpoint(s) of lr_k x "
            "grad L(z_test, theta_k) . grad L(z_i, theta_k) (no L2 term)"
        )

    def __repr__(self) -> str:
        return (
            f"TracIn(n_train={self.n}, n_params={self.p}, checkpoints={len(self.weighted)}, "
            f"fitted={self._fitted})"
        )
