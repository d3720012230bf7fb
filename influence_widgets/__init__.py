"""influence-widgets: influence functions (Koh & Liang, ICML 2017) for PyTorch, inline in Jupyter."""

from influence_widgets import datasets, models
from influence_widgets.core import (
    Arnoldi,
    ConjugateGradient,
    Direct,
    Influence,
    InfluenceWarning,
    LiSSA,
    NotPositiveDefiniteError,
    SmoothHinge,
)
from influence_widgets.training import TrainingReport, train

__version__ = "0.1.0"

__all__ = [
    "Arnoldi",
    "ConjugateGradient",
    "Direct",
    "Influence",
    "InfluenceWarning",
    "LiSSA",
    "NotPositiveDefiniteError",
    "SmoothHinge",
    "TrainingReport",
    "datasets",
    "models",
    "train",
]
