"""What the paper does with the core: leave-one-out validation (attacks and debugging to come)."""

from influence_widgets.analysis.loo import LOOResult, actual_removal_effects, validate_loo

__all__ = ["LOOResult", "actual_removal_effects", "validate_loo"]
