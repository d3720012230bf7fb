"""What the paper does with the core: leave-one-out validation (attacks and debugging to come)."""

from influence_widgets.analysis.loo import actual_removal_effects

__all__ = ["actual_removal_effects"]
