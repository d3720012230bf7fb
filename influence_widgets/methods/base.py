"""What the methods of this package share: the training set, the explained model, test batches,
ranking, a fit done once, and the diagnostics (the contract of :mod:`.contract`)."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from influence_widgets.core.errors import check_positive_int
from influence_widgets.core.influence import TopInfluence, ranked
from influence_widgets.core.losses import LossFn
from influence_widgets.core.objective import Objective, TrainingSet
from influence_widgets.core.points import check_training_points, test_batch
from influence_widgets.methods.checkpoints import check_state_fits
from influence_widgets.methods.contract import MethodDiagnostics

__all__ = ["Attribution", "check_models", "objectives_of"]


def check_models(models, name: str = "models") -> list[torch.nn.Module]:
    """One ``torch.nn.Module`` or a non-empty sequence of them, as a list; else a TypeError or
    ValueError naming ``name``."""
    if isinstance(models, torch.nn.Module):
        return [models]
    if not isinstance(models, Sequence) or isinstance(models, str | bytes):
        raise TypeError(
            f"{name}: expected a torch.nn.Module or a list of them, got {type(models).__name__}"
        )
    found = list(models)
    if not found:
        raise ValueError(f"{name}: the list is empty; pass at least one trained model")
    bad = next((i for i, m in enumerate(found) if not isinstance(m, torch.nn.Module)), None)
    if bad is not None:
        raise TypeError(
            f"{name}: item {bad} is a {type(found[bad]).__name__}, not a torch.nn.Module"
        )
    return found


def objectives_of(
    models: list[torch.nn.Module],
    *,
    loss: str | LossFn,
    params: Sequence[str] | None,
    device: str | torch.device | None,
    name: str,
) -> list[Objective]:
    """One :class:`Objective` (no L2 term) per model, all on one device; a model whose state does
    not fit the first model's architecture is a ValueError naming ``name`` and the model."""
    first = models[0]
    objectives = [Objective(first, loss=loss, params=params, device=device)]
    device = objectives[0].device
    for i, model in enumerate(models[1:], start=1):
        check_state_fits(first, model.state_dict(), f"{name}[{i}]")
        objectives.append(Objective(model, loss=loss, params=params, device=device))
    return objectives


class Attribution(ABC):
    """The shared half of a method: ``objective`` is the explained model (its predicted classes
    answer ``y_test=None``), ``train`` the n training points.

    Subclasses implement ``_fit`` (returning the diagnostics' ``method`` text,
    number of models and details), ``scores`` and ``self_scores``.
    """

    def __init__(
        self,
        objective: Objective,
        train,
        *,
        batch_size: int | None,
        progress: bool,
    ) -> None:
        self.objective = objective
        self.train = train if isinstance(train, TrainingSet) else TrainingSet(train, "train")
        check_training_points(objective, self.train)
        self.n = self.train.n
        self.p = objective.n_params
        if batch_size is not None:
            batch_size = check_positive_int(batch_size, "batch_size")
        self.batch_size = batch_size or min(self.n, 1024)
        self.progress = progress
        self._fit_lock = threading.RLock()
        self._fitted = False
        self._diagnostics: MethodDiagnostics | None = None

    @property
    def device(self) -> torch.device:
        """Where this method computes and where its results lie."""
        return self.objective.device

    # ----- fitting once ---------------------------------------------------------------------
    @abstractmethod
    def _fit(self) -> tuple[str, int, dict[str, object]]:
        """The precomputation; returns (``method`` in words, n_models, details)."""

    def fit(self) -> Attribution:
        """Precompute once (with progress bars); returns ``self``. A cancelled fit
        (:func:`~influence_widgets.cancellable`) keeps nothing and leaves the method unfitted."""
        with self._fit_lock:
            start = time.perf_counter()
            method, n_models, details = self._fit()
            self._diagnostics = MethodDiagnostics(
                method=method,
                n_train=self.n,
                n_params=self.p,
                n_models=n_models,
                fit_seconds=time.perf_counter() - start,
                details=details,
            )
            self._fitted = True
        return self

    def ensure_fit(self) -> None:
        """Fit unless fitted; a thread that asks while another fits waits for that fit."""
        if not self._fitted:
            with self._fit_lock:
                if not self._fitted:
                    self.fit()

    @property
    def diagnostics(self) -> MethodDiagnostics:
        """What was computed (fits first)."""
        self.ensure_fit()
        return self._diagnostics

    # ----- test points ----------------------------------------------------------------------
    def test_points(self, x_test, y_test=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The checked, cast test batch (x, y); ``y_test=None``: y = the explained model's
        predicted classes."""
        return test_batch(self.objective, self.train, x_test, y_test)

    def predicted_labels(self, x_test) -> torch.Tensor:
        """y_hat = argmax_c p(c | x_test) of the explained model, (T,) int64 on the CPU: the
        classes ``y_test=None`` explains."""
        return self.test_points(x_test, None)[1].long().cpu()

    @abstractmethod
    def scores(self, x_test, y_test=None) -> torch.Tensor:
        """(T, n): > 0 when removing z_i would raise the test loss (helpful)."""

    @abstractmethod
    def self_scores(self) -> torch.Tensor:
        """(n,): each training point's score for itself."""

    def top(self, x_test, y_test=None, k: int = 10) -> TopInfluence:
        """The k most helpful (largest :meth:`scores`) and k most harmful (smallest) training
        points for each test point."""
        k = min(check_positive_int(k, "k"), self.n)
        return ranked(self.scores(x_test, y_test), k)
