"""The shared influence engine: HVPs, inverse-HVP solvers and the paper's quantities.

Imports torch and numpy only; nothing here knows about Jupyter.
"""

from influence_widgets.core.errors import (
    Cancelled,
    InfluenceWarning,
    NotPositiveDefiniteError,
    TrainingIndexError,
)
from influence_widgets.core.hvp import HessianOperator
from influence_widgets.core.influence import (
    Diagnostics,
    Influence,
    InfluenceConfig,
    TopInfluence,
)
from influence_widgets.core.losses import SmoothHinge, cross_entropy, mse
from influence_widgets.core.objective import Objective, TrainingSet
from influence_widgets.core.progress import cancellable
from influence_widgets.core.solvers import (
    EKFAC,
    Arnoldi,
    ConjugateGradient,
    Direct,
    LiSSA,
    Solver,
    SolverDiagnostics,
    available_solvers,
)

__all__ = [
    "Arnoldi",
    "Cancelled",
    "ConjugateGradient",
    "Diagnostics",
    "Direct",
    "EKFAC",
    "HessianOperator",
    "Influence",
    "InfluenceConfig",
    "InfluenceWarning",
    "LiSSA",
    "NotPositiveDefiniteError",
    "Objective",
    "SmoothHinge",
    "Solver",
    "SolverDiagnostics",
    "TopInfluence",
    "TrainingIndexError",
    "TrainingSet",
    "available_solvers",
    "cancellable",
    "cross_entropy",
    "mse",
]
