"""Attribution methods beside influence functions, on the contract of ``Influence``
(:mod:`.contract`): Grad-Dot, TracIn, TRAK and influence ensembles over models.

Imports torch, numpy and the core only; nothing here knows about Jupyter.
"""

from influence_widgets.methods.checkpoints import Checkpoint, CheckpointRecorder
from influence_widgets.methods.contract import AttributionMethod, MethodDiagnostics, check_method
from influence_widgets.methods.ensemble import InfluenceEnsemble
from influence_widgets.methods.gradient_similarity import GradDot, TracIn
from influence_widgets.methods.trak import TRAK

__all__ = [
    "TRAK",
    "AttributionMethod",
    "Checkpoint",
    "CheckpointRecorder",
    "GradDot",
    "InfluenceEnsemble",
    "MethodDiagnostics",
    "TracIn",
    "check_method",
]
