"""influence-widgets: influence functions (Koh & Liang, ICML 2017) and other training-data
attribution methods (Grad-Dot, TracIn, TRAK) for PyTorch, inline in Jupyter."""

from influence_widgets import datasets, models
from influence_widgets.analysis import (
    AttackResult,
    ChordNewtonRetrain,
    EpsSearch,
    LDSResult,
    LOOResult,
    MislabelRecovery,
    craft_attack,
    eight_bit_levels,
    lds,
    mislabel_recovery,
    review_order,
    smallest_flipping_eps,
    validate_loo,
)
from influence_widgets.core import (
    EKFAC,
    Arnoldi,
    Cancelled,
    ConjugateGradient,
    Direct,
    Influence,
    InfluenceWarning,
    LiSSA,
    NotPositiveDefiniteError,
    SmoothHinge,
    TopInfluence,
    cancellable,
)
from influence_widgets.distributed import ScoreStore, score_distributed
from influence_widgets.methods import (
    TRAK,
    AttributionMethod,
    Checkpoint,
    CheckpointRecorder,
    GradDot,
    InfluenceEnsemble,
    MethodDiagnostics,
    TracIn,
    check_method,
)
from influence_widgets.training import TrainingReport, train, train_hinge
from influence_widgets.widgets import InfluenceExplorer
from influence_widgets.widgets.review_retrain import ReviewResult

__version__ = "0.1.0"

__all__ = [
    "TRAK",
    "Arnoldi",
    "AttackResult",
    "AttributionMethod",
    "Cancelled",
    "Checkpoint",
    "CheckpointRecorder",
    "ChordNewtonRetrain",
    "ConjugateGradient",
    "Direct",
    "EKFAC",
    "EpsSearch",
    "GradDot",
    "Influence",
    "InfluenceEnsemble",
    "InfluenceExplorer",
    "InfluenceWarning",
    "LDSResult",
    "LOOResult",
    "LiSSA",
    "MethodDiagnostics",
    "MislabelRecovery",
    "NotPositiveDefiniteError",
    "ReviewResult",
    "ScoreStore",
    "SmoothHinge",
    "TopInfluence",
    "TracIn",
    "TrainingReport",
    "cancellable",
    "check_method",
    "craft_attack",
    "datasets",
    "eight_bit_levels",
    "lds",
    "mislabel_recovery",
    "models",
    "review_order",
    "score_distributed",
    "smallest_flipping_eps",
    "train",
    "train_hinge",
    "validate_loo",
]


def load_ipython_extension(ipython) -> None:
    """``%load_ext influence_widgets``: register the ``%influence`` magic."""
    from influence_widgets.magic import InfluenceMagics

    ipython.register_magics(InfluenceMagics)
