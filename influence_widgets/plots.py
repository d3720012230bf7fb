"""Matplotlib figures of the analyses (imported lazily: ``core`` and ``analysis`` never need it)."""

from __future__ import annotations

import numpy as np

__all__ = ["loo_scatter"]


def loo_scatter(result, ax=None):
    """Actual against predicted change of the test loss on removal, with y = x (the paper's Fig 2).

    ``result`` is a :class:`~influence_widgets.analysis.LOOResult`; returns the Axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.0))
    predicted, actual = np.asarray(result.predicted), np.asarray(result.actual)
    ax.scatter(predicted, actual, s=14, alpha=0.75, color="tab:blue", edgecolors="none")
    both = np.concatenate([predicted, actual]) if len(predicted) else np.zeros(1)
    lo, hi = float(both.min()), float(both.max())
    pad = 0.05 * (hi - lo) if hi > lo else 1e-6
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=1, ls="--", zorder=0)
    ax.set_xlabel("predicted change of test loss (influence)")
    ax.set_ylabel("actual change (leave-one-out retraining)")
    where = "" if result.test_index is None else f"test point {result.test_index}, "
    note = " (cancelled)" if result.cancelled else ""
    ax.set_title(
        f"{where}{result.n_removed} removals{note}\n"
        f"Pearson R = {result.pearson:.3f}, Spearman = {result.spearman:.3f}",
        fontsize=10,
    )
    ax.ticklabel_format(style="sci", scilimits=(-3, 3))
    ax.figure.tight_layout()
    return ax
