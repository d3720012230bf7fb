"""One contract for every attribution method: ``Influence`` and those of this package.

A method explains a model's test predictions by its n training points z_1..z_n:

- ``scores(x_test, y_test=None)``: (T, n), tau(z_test)_i on the scale and sign of
  ``Influence.predicted_removal_effect``: the predicted change of the test loss L(z_test) when z_i
  is removed from training. > 0: removing z_i would raise the test loss, so z_i was helpful;
  < 0: harmful. ``y_test=None`` explains each test point for its predicted class.
- ``top(x_test, y_test=None, k=10)``: a :class:`~influence_widgets.core.influence.TopInfluence`,
  the k largest (helpful) and k smallest (harmful) scores of each row.
- ``self_scores()``: (n,), each training point's score for itself (its own removal, its own
  loss), on the same sign: the largest are the first to check for wrong labels.
- ``predicted_labels(x_test)``: the classes ``y_test=None`` explains, (T,) on the CPU.
- ``fit()`` (returns the method) / ``ensure_fit()``: the precomputation, once, with progress bars;
  every call that needs it fits first.
- ``diagnostics``: what was computed; ``diagnostics.method`` says it in words.
- ``n``, ``train`` (the :class:`~influence_widgets.core.objective.TrainingSet`), ``objective``
  (the explained model's :class:`~influence_widgets.core.objective.Objective`) and ``device``
  (where every returned tensor lies but ``predicted_labels``).

Progress: every slow step is a ``tqdm.auto`` bar (``progress=False`` hides them) that
:func:`~influence_widgets.core.progress.report_progress` listens to. Cancel: inside
``with iw.cancellable(event):`` the next progress step after ``event.set()`` raises
:class:`~influence_widgets.Cancelled`; a cancelled fit leaves the method unfitted.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Protocol

import torch

from influence_widgets.core.influence import TopInfluence
from influence_widgets.core.objective import Objective, TrainingSet

__all__ = ["CONTRACT", "AttributionMethod", "MethodDiagnostics", "check_method"]


class AttributionMethod(Protocol):
    """What every attribution method offers (``Influence`` included): see the module docstring."""

    n: int
    train: TrainingSet
    objective: Objective

    @property
    def device(self) -> torch.device: ...

    @property
    def diagnostics(self) -> object: ...

    def fit(self) -> AttributionMethod: ...

    def ensure_fit(self) -> None: ...

    def scores(self, x_test, y_test=None) -> torch.Tensor: ...

    def top(self, x_test, y_test=None, k: int = 10) -> TopInfluence: ...

    def self_scores(self) -> torch.Tensor: ...

    def predicted_labels(self, x_test) -> torch.Tensor: ...


# The contract's members, as :func:`check_method` looks for them.
CONTRACT = (
    "n",
    "train",
    "objective",
    "device",
    "diagnostics",
    "fit",
    "ensure_fit",
    "scores",
    "top",
    "self_scores",
    "predicted_labels",
)
_MISSING = object()


@dataclass(frozen=True)
class MethodDiagnostics:
    """What a method of :mod:`influence_widgets.methods` computed at ``fit``.

    ``method``: in words (the method, its curvature or weights, its settings); ``details``: the
    same as numbers and names (projection, damping, learning rates, ...); ``n_models``: models or
    checkpoints the scores sum or average over.
    """

    method: str
    n_train: int
    n_params: int
    n_models: int
    fit_seconds: float
    details: dict[str, object] = field(default_factory=dict)

    def __repr__(self) -> str:
        parts = [
            f"method={self.method!r}",
            f"n_train={self.n_train}",
            f"n_params={self.n_params}",
            f"n_models={self.n_models}",
            f"fit_seconds={self.fit_seconds:.3g}",
        ]
        parts += [
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v!r}"
            for k, v in self.details.items()
        ]
        return f"MethodDiagnostics({', '.join(parts)})"


def check_method(value, name: str = "method") -> AttributionMethod:
    """``value`` if it offers the attribution contract, else a TypeError naming ``name``.

    Members are looked up statically (``inspect.getattr_static``): checking never runs a property
    such as ``diagnostics``, which would fit the method."""
    if any(inspect.getattr_static(value, m, _MISSING) is _MISSING for m in CONTRACT):
        raise TypeError(
            f"{name}: expected an attribution method (iw.Influence, iw.GradDot, iw.TracIn, "
            f"iw.TRAK, iw.InfluenceEnsemble), got {type(value).__name__}"
        )
    return value
