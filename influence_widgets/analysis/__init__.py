"""What the paper (and the field) does with the core: leave-one-out validation, the linear
datamodeling score, training-set attacks and finding mislabeled training points."""

from influence_widgets.analysis.attack import (
    AttackResult,
    EpsSearch,
    craft_attack,
    eight_bit_levels,
    smallest_flipping_eps,
)
from influence_widgets.analysis.lds import LDSResult, lds
from influence_widgets.analysis.loo import LOOResult, actual_removal_effects, validate_loo
from influence_widgets.analysis.mislabel import MislabelRecovery, mislabel_recovery, review_order
from influence_widgets.analysis.retrain import ChordNewtonRetrain, RetrainReport

__all__ = [
    "AttackResult",
    "ChordNewtonRetrain",
    "EpsSearch",
    "LDSResult",
    "LOOResult",
    "MislabelRecovery",
    "RetrainReport",
    "actual_removal_effects",
    "craft_attack",
    "eight_bit_levels",
    "lds",
    "mislabel_recovery",
    "review_order",
    "smallest_flipping_eps",
    "validate_loo",
]
