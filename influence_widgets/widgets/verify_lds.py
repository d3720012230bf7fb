"""The Verify tab's second check: the linear datamodeling score of the selected test point.

LDS(z) (Park et al. 2023, "TRAK"; :func:`~influence_widgets.lds`) retrains the model from scratch
on ``subsets`` random subsets of the training set, each keeping ``LDS_FRACTION`` of the points,
and takes Spearman's rank correlation, over the subsets, between the retrained models' output on
z (its margin, or its loss for labels that are not classes) and what the influence scores predict
for each subset: the sum of the scores of the points it keeps. Every subset is trained twice with
different seeds; the two runs' correlation is the noise floor, how well one retraining predicts
another (not a ceiling: see :mod:`influence_widgets.analysis.lds`).

The LDS is defined per test point (the published number is its mean over many): the tab computes
it for the point on screen, so a click reads "LDS = 0.9931 (noise floor 1.0000, 20 subsets)" with
one sentence saying what that means. This module builds what the tab shows: the checked number of
subsets, the :class:`~influence_widgets.widgets.protocol.LDSState`, its reading and the scatter.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from influence_widgets.analysis.lds import MIN_SUBSETS, LDSResult
from influence_widgets.core.errors import check_positive_int
from influence_widgets.plots import LOO_FIGSIZE, correlation_text
from influence_widgets.widgets.protocol import LDSState

__all__ = [
    "LDS_FRACTION",
    "LDS_SUBSETS",
    "MAX_SUBSETS",
    "check_subsets",
    "lds_message",
    "lds_output",
    "lds_png",
    "lds_reading",
    "lds_state",
    "overall_progress",
    "progress_message",
    "resumable",
]

# The tab's default number of subsets, measured on the digits demo on a 2-core machine: 20 (40
# retrains with the noise floor) take 5-6 s (4.9 s with one torch thread, 5.8 s in a JupyterLab
# kernel), and about 75 s when other work keeps both cores busy (torch's 2 threads then wait on
# each other); 50 take 12.5 s with one thread, 127 s so loaded. TRAK uses 100.
LDS_SUBSETS = 20
LDS_FRACTION = 0.5  # of the training set each subset keeps, as TRAK and dattri
MAX_SUBSETS = 1000  # more is iw.lds's job, outside the explorer
NEAR_FLOOR = 0.05  # an LDS this close to its noise floor (or above it) reads as "at the floor"
CHANCE = 0.1  # |LDS| up to this reads as "about chance"


def check_subsets(value: object) -> int:
    """The number of subsets: an integer in [MIN_SUBSETS, MAX_SUBSETS]; else a TypeError or
    ValueError naming ``subsets``."""
    subsets = check_positive_int(value, "subsets")
    if subsets < MIN_SUBSETS:
        raise ValueError(
            f"subsets: need at least {MIN_SUBSETS} for a rank correlation, got {subsets} "
            f"(20 give a rough LDS, TRAK uses 100)"
        )
    if subsets > MAX_SUBSETS:
        raise ValueError(
            f"subsets: at most {MAX_SUBSETS} in the explorer, got {subsets}; for more, call "
            "iw.lds with its subsets argument in a cell (docs/api.md, the LDS)"
        )
    return subsets


def lds_output(y: torch.Tensor) -> str:
    """What the retrained models are measured by on labels ``y``: "margin" for integer class
    labels (TRAK's), "loss" for other targets (one-hot rows, real values)."""
    integer = not (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool)
    return "margin" if integer and y.ndim == 1 else "loss"


def lds_reading(lds: float, floor: float, n_subsets: int) -> str:
    """One sentence saying what LDS(z) = ``lds`` over ``n_subsets`` subsets means against its
    noise floor ``floor`` (NaN when undefined), with the scale it is read on."""
    what = _lds_meaning(lds, floor, n_subsets)
    if n_subsets < MIN_SUBSETS or not np.isfinite(lds):
        return what
    return (
        f"{what} (Best: within {NEAR_FLOOR:g} of the noise floor; above {CHANCE:g}: better than "
        f"chance; {-CHANCE:g} to {CHANCE:g}: about chance.)"
    )


def _lds_meaning(lds: float, floor: float, n_subsets: int) -> str:
    """What ``lds_reading`` says before the scale."""
    if n_subsets < MIN_SUBSETS:
        what = "1 subset" if n_subsets == 1 else f"{n_subsets} subsets"
        return (
            f"Only {what} retrained: a rank correlation needs at least {MIN_SUBSETS}. Run "
            "again and let it finish."
        )
    if not np.isfinite(lds):
        return (
            "No rank correlation: the retrained outputs or the predictions are equal on all "
            "subsets."
        )
    ceiling = floor if np.isfinite(floor) else 1.0
    if lds >= ceiling - NEAR_FLOOR:
        if ceiling >= 0.95:
            return "The scores order the subsets almost exactly as retraining on them does."
        return (
            "The scores order the subsets at least as well as a second retraining of them does: "
            "retraining is that noisy here. The noise floor is not a ceiling: scores that "
            "predicted the average over seeds could reach about its square root, "
            f"{np.sqrt(max(ceiling, 0.0)):.2f}."
        )
    if lds > CHANCE:
        return (
            f"The scores order the subsets better than chance (0) but below the noise floor: the "
            f"gap of {ceiling - lds:.2f} is the scores' error, not retraining noise."
        )
    if lds >= -CHANCE:
        return (
            "About chance (0): the scores do not predict how a model retrained on a subset does "
            "on this point."
        )
    return "Below chance: the scores order the subsets the opposite way round to retraining."


def overall_progress(fraction: float, subsets: int, kept: int = 0) -> float:
    """The fraction of a run's 2 x ``subsets`` retrains done when ``kept`` subsets came from an
    earlier run and ``fraction`` of the rest are retrained."""
    return (kept + fraction * (subsets - kept)) / subsets


def progress_message(fraction: float, subsets: int, kept: int = 0) -> str:
    """The status line at ``fraction`` of the retrains still to do, of 2 x ``subsets`` in all,
    ``kept`` subsets (both runs) taken from an earlier run of the same test point."""
    total = 2 * subsets
    done = round(overall_progress(fraction, subsets, kept) * total)
    earlier = f"; {kept} from the earlier run" if kept else ""
    return f"Retrained {done} of {total} models ({subsets} subsets, each twice{earlier})"


def resumable(results: list[LDSResult], subsets: int) -> LDSResult | None:
    """Of the LDS runs ``results`` of one test point, the one a run of ``subsets`` goes on from:
    the most subsets done, at most ``subsets``, with the tab's fraction and a noise-floor run
    (the tab's subsets are all drawn with seed 0, so the first m of a run of M are those of a
    run of m); None where none has a subset."""
    fits = [
        r
        for r in results
        if 0 < r.n_subsets <= subsets and r.fraction == LDS_FRACTION and r.rerun is not None
    ]
    return max(fits, key=lambda r: r.n_subsets, default=None)


def lds_message(result: LDSResult) -> str:
    """The tab's status line after a run: how many subsets were retrained, and when."""
    if result.cancelled and result.n_subsets == 0:
        return f"Cancelled after {result.seconds:.1f} s, before a subset was retrained twice"
    if result.cancelled:
        return (
            f"Cancelled: {result.n_subsets} of {result.subsets} subsets done in "
            f"{result.seconds:.1f} s; the LDS below is over those {result.n_subsets}. Run LDS "
            "again to go on from them"
        )
    return f"{result.n_subsets} subsets, each retrained twice, in {result.seconds:.1f} s"


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def lds_state(index: int, result: LDSResult) -> LDSState:
    """The ``verify`` trait after a finished (or cancelled) LDS run on test point ``index``
    (the result's only test point)."""
    lds, floor = float(result.per_test[0]), result.noise_floor
    return {
        "state": "cancelled" if result.cancelled else "done",
        "kind": "lds",
        "test_index": index,
        "progress": 1.0,
        "subsets": result.subsets,
        "n_subsets": result.n_subsets,
        "fraction": result.fraction,
        "output": result.output,
        "lds": _finite_or_none(lds),
        "noise_floor": _finite_or_none(floor),
        "lds_text": correlation_text(lds),
        "noise_floor_text": correlation_text(floor),
        "reading": lds_reading(lds, floor, result.n_subsets),
        "seconds": result.seconds,
        "message": lds_message(result),
    }


def lds_png(result: LDSResult, index: int, method: str | None = None) -> bytes:
    """The scatter of actual against predicted output over the subsets (``LDSResult.plot``) as
    PNG bytes, titled with the explorer's test index (and the ``method`` whose scores predict,
    when given), drawn without pyplot (safe off the main thread)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=LOO_FIGSIZE, dpi=90)
    name = f"test point {index}" + (f", {method}" if method else "")
    result.plot(test_index=0, ax=fig.add_subplot(), name=name)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
