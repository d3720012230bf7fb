"""EK-FAC moved to :mod:`influence_widgets.core.solvers.ekfac`, beside the other solvers; this
module keeps ``from influence_widgets.core.ekfac import EKFAC`` working."""

from influence_widgets.core.solvers.ekfac import (
    CORRECTION_CHUNK_ELEMENTS,
    EKFAC,
    coverage_gap,
    covered_layers,
)

__all__ = ["CORRECTION_CHUNK_ELEMENTS", "EKFAC", "coverage_gap", "covered_layers"]
