"""Matplotlib figures of the analyses (imported lazily: ``core`` and ``analysis`` never need it)."""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "correlation_text",
    "lds_histogram",
    "lds_scatter",
    "loo_scatter",
    "power_of_ten",
]

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

    if ax is None:
        _, ax = plt.subplots(figsize=LOO_FIGSIZE)
    predicted, actual = np.asarray(result.predicted), np.asarray(result.actual)
    ax.scatter(predicted, actual, s=14, alpha=0.75, color="tab:blue", edgecolors="none")
    both = np.concatenate([predicted, actual]) if len(predicted) else np.zeros(1)
    lo, hi = float(both.min()), float(both.max())
    pad = 0.05 * (hi - lo) if hi > lo else 1e-6
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=1, ls="--", zorder=0)
    where = "" if result.test_index is None else f"test point {result.test_index}, "
    note = " (cancelled)" if result.cancelled else ""
    ax.set_title(
        f"{where}{result.n_removed} removals{note}\n"
        f"Pearson R = {correlation_text(result.pearson)}, "
        f"Spearman = {correlation_text(result.spearman)}",
        fontsize=10,
    )
    ax.tick_params(axis="x", labelrotation=30)
    _white_card(
        ax, "predicted change of test loss (influence)", "actual change (leave-one-out retraining)"
    )
    return ax


# "-0123456789" as superscripts, for "×10⁻⁴"
SUPERSCRIPT = str.maketrans(
    "-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"
)


def power_of_ten(largest: float) -> int:
    """The power of ten an axis states once in its label for values up to ``largest`` in
    magnitude: 0 (plain numbers) from 1e-3 to below 1e4, else the value's own power."""
    if not (np.isfinite(largest) and largest > 0):
        return 0
    power = math.floor(math.log10(largest))
    return power if power < -3 or power > 3 else 0


def _scale_in_label(axis, label: str) -> None:
    """``axis`` labelled ``label``, with its ticks' power of ten stated in the label (" (×10⁻⁴)")
    instead of matplotlib's offset text, which sits under the last tick label and runs into the
    axis label; no additive offset either (tick labels show the values themselves)."""
    from matplotlib.ticker import FuncFormatter, ScalarFormatter

    lo, hi = axis.get_view_interval()
    power = power_of_ten(max(abs(lo), abs(hi)))
    if power == 0:
        formatter = ScalarFormatter(useOffset=False)
        formatter.set_scientific(False)
    else:
        scale = 10.0**power
        formatter = FuncFormatter(lambda v, _pos: f"{v / scale:.6g}".replace("-", "\u2212"))
        label = f"{label} (\u00d710{str(power).translate(SUPERSCRIPT)})"
    axis.set_major_formatter(formatter)
    axis.set_label_text(label)


def _white_card(ax, xlabel: str, ylabel: str) -> None:
    """At most 4 major ticks a side, each axis's power of ten in its label (never an offset
    text), a white figure."""
    from matplotlib.ticker import MaxNLocator

    for axis, label in ((ax.xaxis, xlabel), (ax.yaxis, ylabel)):
        axis.set_major_locator(MaxNLocator(nbins=4))
        _scale_in_label(axis, label)
    ax.figure.set_facecolor("white")
    ax.figure.tight_layout()


def _with_se(value: float, se: float) -> str:
    """``0.8123 +- 0.0210``, or the value alone when its standard error is undefined."""
    text = correlation_text(value)
    return text if math.isnan(se) else f"{text} ± {se:.4f}"


def lds_histogram(result, ax=None):
    """LDS(z) of every test point as a histogram, the mean (solid) and the noise floor (dashed)
    marked, both with their standard errors in the legend.

    ``result`` is a :class:`~influence_widgets.analysis.LDSResult`; returns the Axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=LOO_FIGSIZE)
    values = np.asarray(result.per_test, dtype=float)
    values = values[np.isfinite(values)]
    ax.hist(values, bins=np.linspace(-1, 1, 41), color="tab:blue", alpha=0.75)
    ax.axvline(
        result.mean, color="tab:blue", lw=1.5, label=f"LDS {_with_se(result.mean, result.se)}"
    )
    if result.noise_floor_per_test is not None:
        floor = _with_se(result.noise_floor, result.noise_floor_se)
        ax.axvline(result.noise_floor, color="0.3", lw=1.5, ls="--", label=f"noise floor {floor}")
    ax.set_xlim(-1.02, 1.02)
    note = " (cancelled)" if result.cancelled else ""
    ax.set_title(
        f"{len(values)} test points, {result.n_subsets} subsets of {result.fraction:g}{note}",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper left")
    _white_card(ax, f"LDS(z): Spearman over subsets ({result.output})", "test points")
    ax.set_xticks([-1, -0.5, 0, 0.5, 1])  # a correlation's whole range, in round steps
    return ax


def lds_scatter(result, test_index: int, ax=None, *, name: str | None = None):
    """For one test point: the retrained models' output f_j(z) against the attribution's
    prediction g_j(z) = sum over i in S_j of tau(z)_i, one dot per subset, LDS(z) in the title.

    ``result`` is a :class:`~influence_widgets.analysis.LDSResult`; ``name``: what the title
    calls the point (default "test point {test_index}"; the explorer gives its own index for a
    result of one point). Returns the Axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=LOO_FIGSIZE)
    t = int(test_index)
    label = name or f"test point {t}"
    ax.scatter(
        result.predicted[:, t], result.actual[:, t], s=14, alpha=0.75, color="tab:blue",
        edgecolors="none",
    )  # fmt: skip
    quantity = "margin log p(y|x) - log(1 - p(y|x))" if result.output == "margin" else "test loss"
    floor = ""
    if result.noise_floor_per_test is not None:
        floor = f", noise floor {correlation_text(result.noise_floor_per_test[t])}"
    ax.set_title(
        f"{label}, {result.n_subsets} subsets\nLDS = {correlation_text(result.per_test[t])}{floor}",
        fontsize=10,
    )
    ax.tick_params(axis="x", labelrotation=30)
    _white_card(ax, "predicted: sum of scores over the subset", f"actual: {quantity}")
    return ax
