"""The attribution methods ``%influence --demo NAME --methods influence,tracin,trak`` shows beside
each other, built on the demo's own model and training recipe (``iw.train`` to the minimum of
R(theta) = (1/n) sum_i L(z_i, theta) + (l2/2) ||theta||^2, full-batch L-BFGS).

- ``influence``: the demo's ``iw.Influence`` (the explorer's reference).
- ``graddot``: ``iw.GradDot`` on the demo model.
- ``tracin``: ``iw.TracIn`` on the checkpoints the demo model's own training saved
  (``iw.train(..., recorder=rec)``: one per round of L-BFGS iterations, with its step length as
  the learning rate).
- ``trak``: ``iw.TRAK`` over the demo model and ``TRAK_MODELS - 1`` more models, each trained
  with the same recipe on a random half of the training set (seeded), a 512-dimensional Gaussian
  projection (as the LDS benchmark's TRAK rows), no damping. The models are trained in the
  background by the explorer (a deferred method, see
  :mod:`~influence_widgets.widgets.method_switch`), with progress in its status line.

Nothing here imports Jupyter; the user's model and data are never modified (every extra model is
a copy).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from influence_widgets.core.influence import Influence
from influence_widgets.core.progress import progress_bar, report_progress
from influence_widgets.methods.checkpoints import CheckpointRecorder
from influence_widgets.methods.gradient_similarity import GradDot, TracIn
from influence_widgets.methods.trak import TRAK
from influence_widgets.training import train

__all__ = [
    "METHOD_CHOICES",
    "TRAK_MODELS",
    "TRAK_PROJECTION",
    "demo_methods",
    "parse_methods",
    "trak_on_halves",
]

METHOD_CHOICES = ("influence", "graddot", "tracin", "trak")
# TRAK's ensemble in the demos: the demo model and 9 half-data models (dattri's smaller setting,
# TRAK-10), each trained in well under a second on digits' 1,300 points; 512 projected dimensions
# as the LDS benchmark's TRAK rows.
TRAK_MODELS = 10
TRAK_PROJECTION = 512
TRAK_SEED = 0


def parse_methods(text: str) -> list[str]:
    """``--methods``'s value: comma-separated names from :data:`METHOD_CHOICES`, influence among
    them (the explorer's reference), each once; else a ValueError naming ``--methods``."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in METHOD_CHOICES]
    if unknown or not names:
        raise ValueError(
            f"--methods: unknown method {unknown[0] if unknown else text!r}; pass "
            f"comma-separated names from {', '.join(METHOD_CHOICES)}, e.g. influence,tracin,trak"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"--methods: each method once, got {text!r}")
    if "influence" not in names:
        raise ValueError(
            "--methods: include influence (e.g. influence,tracin,trak): its Hessian serves "
            "Verify's leave-one-out, Attack and Review, and its model's predictions are shown"
        )
    return names


def _quiet(_step: str, _fraction: float) -> None:
    """A progress listener that shows nothing."""


def trak_on_halves(
    model: torch.nn.Module, train_points: tuple[torch.Tensor, torch.Tensor], l2: float
) -> TRAK:
    """TRAK over ``model`` (explained) and ``TRAK_MODELS - 1`` copies of it, each trained with
    ``iw.train(copy, half, l2=l2)`` on a random half of ``train_points`` (numpy seed TRAK_SEED),
    with a progress bar "training TRAK's models on random halves"."""
    X, y = train_points
    n = len(y)
    rng = np.random.default_rng(TRAK_SEED)
    models = [model]
    bar = progress_bar(
        total=TRAK_MODELS - 1, desc="training TRAK's models on random halves", disable=True
    )
    for _ in range(TRAK_MODELS - 1):
        half = torch.from_numpy(np.sort(rng.choice(n, n // 2, replace=False)))
        other = copy.deepcopy(model)  # from the demo model: the same minimum, found faster
        with report_progress(_quiet):  # the line shows the models, not each one's L-BFGS
            train(other, (X[half], y[half]), l2=l2, progress=False)
        models.append(other)
        bar.update()
    bar.close()
    return TRAK(
        models, train_points, projection_dim=TRAK_PROJECTION, seed=TRAK_SEED, progress=False
    )


def demo_methods(
    names: list[str],
    model: torch.nn.Module,
    influence: Influence,
    recorder: CheckpointRecorder | None,
) -> dict[str, object]:
    """``{switch name: method}`` for the explorer's ``methods``: the demo's ``influence`` (of the
    trained ``model``) and the methods ``names`` asks for, on its model, training set and l2
    (TracIn on ``recorder``'s checkpoints, TRAK deferred: its models are trained in the
    background)."""
    obj = influence.objective
    train_points = influence.train.tensors()
    built: dict[str, object] = {}
    for name in names:
        if name == "influence":
            built["influence"] = influence
        elif name == "graddot":
            built["Grad-Dot"] = GradDot(model, train_points, progress=False)
        elif name == "tracin":
            if recorder is None or not len(recorder):
                raise ValueError("--methods: tracin needs the demo trained with a recorder")
            built[f"TracIn ({len(recorder)} checkpoints)"] = TracIn(
                model, train_points, recorder, progress=False
            )
        else:
            deferred: Callable[[], TRAK] = partial(trak_on_halves, model, train_points, obj.l2)
            built[f"TRAK \u00d7{TRAK_MODELS}"] = deferred
    return built
