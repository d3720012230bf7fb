"""Matplotlib figures of the analyses (imported lazily: ``core`` and ``analysis`` never need it)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["correlation_text", "loo_scatter"]

LOO_FIGSIZE = (4.6, 4.4)  # inches: room for the labels and 4-5 ticks a side at any width shown


def correlation_text(r: float | None) -> str:
    """A correlation as every display of it writes it: 4 decimals, "n/a" when undefined (None
    or NaN, e.g. fewer than three removals), so the Verify tab's summary and the plot's title
    show the same digits."""
    return "n/a" if r is None or math.isnan(r) else f"{r:.4f}"


def loo_scatter(result, ax=None):
    """Actual against predicted change of the test loss on removal, with y = x (the paper's Fig 2).

    ``result`` is a :class:`~influence_widgets.analysis.LOOResult`; returns the Axes. The figure
    is drawn on a white card with at most 5 ticks a side, so its tick labels never overlap and it
    reads the same in a light and a dark notebook theme.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        _, ax = plt.subplots(figsize=LOO_FIGSIZE)
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
        f"Pearson R = {correlation_text(result.pearson)}, "
        f"Spearman = {correlation_text(result.spearman)}",
        fontsize=10,
    )
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(nbins=4))
    ax.ticklabel_format(style="sci", scilimits=(-3, 3))
    ax.tick_params(axis="x", labelrotation=30)
    ax.figure.set_facecolor("white")
    ax.figure.tight_layout()
    return ax
