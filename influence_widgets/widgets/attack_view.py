"""What the Attack tab shows of a finished attack or eps search (protocol.AttackState): the
settings used, the class probabilities before and after, and each poisoned training point
(original, perturbed and difference images, or the changed features of tabular data).

Slider units: eps and step are 8-bit levels for images (``input_range`` given) and the model's
input units for other data; :class:`SliderUnits` converts both ways. A table's changes are shown
in the data set's own units, as the gallery shows its rows (:class:`FeatureUnits`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from influence_widgets.analysis.attack import (
    AttackResult,
    EpsSearch,
    eight_bit_levels,
    percentage_points,
)
from influence_widgets.widgets.context import ExplorerContext
from influence_widgets.widgets.display import DisplayData, png_bytes
from influence_widgets.widgets.inputs import classes_of
from influence_widgets.widgets.protocol import AttackItem, AttackState

__all__ = ["FeatureUnits", "SliderUnits", "attack_state", "search_summary"]


class SliderUnits:
    """eps and step as the sliders show them: 8-bit levels of ``input_range`` for images, the
    data's units otherwise (``input_range=None``)."""

    def __init__(self, input_range: tuple[float, float] | None) -> None:
        self.input_range = input_range

    def to_data(self, value: float) -> float:
        """A slider value in the data's units."""
        if self.input_range is None:
            return float(value)
        lo, hi = self.input_range
        return eight_bit_levels(value, data_range=hi - lo)

    def to_slider(self, value: float) -> float:
        """A value in the data's units as the sliders show it."""
        return value / self.to_data(1.0)


@dataclass(frozen=True)
class FeatureUnits:
    """How a table's model inputs map to the rows the gallery shows: display = offset + scale *
    input, per feature (breast_cancer's model reads standardised values, its gallery shows mm and
    mm^2). Fitted by least squares over the training set; ``scale`` None when the display is not
    such a map of the inputs (then changes are shown in the model's input units)."""

    scale: np.ndarray | None  # (d,) display units per input unit

    # The largest residual of the per-feature fit, relative to the feature's display spread, that
    # still counts as an exact affine map (float32 inputs carry about 1e-7 relative error).
    TOLERANCE = 1e-4

    @classmethod
    def fit(cls, X: torch.Tensor | None, display: DisplayData) -> FeatureUnits:
        """The map from the training inputs ``X`` to ``display.train``; for tabular data only."""
        if display.kind != "tabular" or X is None or not X.is_floating_point():
            return cls(None)
        inputs = X.detach().cpu().double().numpy().reshape(len(X), -1)
        shown = np.asarray(display.train, dtype=np.float64).reshape(len(display.train), -1)
        if shown.shape != inputs.shape:
            return cls(None)
        x_mean, s_mean = inputs.mean(0), shown.mean(0)
        dx, ds = inputs - x_mean, shown - s_mean
        var = (dx**2).sum(0)
        scale = np.where(var > 0, (dx * ds).sum(0) / np.where(var > 0, var, 1.0), 1.0)
        residual = np.abs(ds - dx * scale).max(0)
        spread = np.maximum(np.abs(ds).max(0), 1e-12)
        return cls(scale if bool((residual <= cls.TOLERANCE * spread).all()) else None)

    @property
    def in_data_units(self) -> bool:
        """Changes are shown in the data set's own units (the map was found)."""
        return self.scale is not None

    def rows(self, display_row: np.ndarray, old: np.ndarray, new: np.ndarray):
        """(before, after) of one poisoned row as shown: the gallery's row and it moved by the
        attack's change in display units; the model inputs when there is no map."""
        if self.scale is None:
            return old, new
        before = np.asarray(display_row, dtype=np.float64).reshape(-1)
        return before, before + self.scale * (new - old)


def probability_rows(context: ExplorerContext, result: AttackResult) -> list:
    """[class name, before, after] for the classes that matter: top 5 by either."""
    before, after = result.probabilities_before, result.probabilities_after
    order = np.argsort(-np.maximum(before, after))[:5]
    return [[context.label(int(c)), float(before[c]), float(after[c])] for c in order]


def image_item(
    item: AttackItem, old: np.ndarray, new: np.ndarray, shape: tuple, units: SliderUnits
) -> None:
    """Add the original, perturbed and difference images (and the legend's numbers) to
    ``item``; a colour image's difference is that of its channel mean."""
    diff = (new - old).reshape(shape)
    if diff.ndim == 3:
        diff = diff.mean(axis=-1)
    bound = float(np.abs(diff).max()) or 1.0
    lo, hi = units.input_range or (float(old.min()), float(old.max()))
    item["original"] = png_bytes(old.reshape(shape), vrange=(lo, hi))
    item["perturbed"] = png_bytes(new.reshape(shape), vrange=(lo, hi))
    item["difference"] = png_bytes(diff, cmap="RdBu_r", vrange=(-bound, bound))
    item["amplification"] = (hi - lo) / (2 * bound)
    item["difference_bound"] = units.to_slider(bound)


def feature_changes(
    names: list[str] | None, old: np.ndarray, new: np.ndarray, moved: np.ndarray
) -> list:
    """[feature, before, after] for the (at most 8) features the attack moved most, ``moved``
    being each feature's change in the model's input units (its eps box is the same for all)."""
    old, new, moved = old.reshape(-1), new.reshape(-1), moved.reshape(-1)
    names = names or [f"x{k}" for k in range(old.size)]
    changed = np.argsort(-np.abs(moved), kind="stable")[:8]
    return [[names[k], float(old[k]), float(new[k])] for k in changed if moved[k] != 0]


def attack_items(
    context: ExplorerContext, result: AttackResult, units: SliderUnits, features: FeatureUnits
) -> list[AttackItem]:
    """One item per poisoned training point: its index, label and what the attack changed."""
    items = []
    labels = classes_of(context.influence.train.take(result.poisoned)[1]).tolist()
    display = context.display
    for row, (j, label) in enumerate(zip(result.poisoned.tolist(), labels, strict=True)):
        old = result.original_inputs[row].detach().cpu().numpy().astype(np.float64)
        new = result.perturbed_inputs[row].detach().cpu().numpy().astype(np.float64)
        item: AttackItem = {"index": j, "label": context.label(int(label))}
        shape = np.asarray(display.train[j]).shape
        if display.kind == "image" and old.size == int(np.prod(shape)):
            image_item(item, old, new, shape, units)
        else:
            before, after = features.rows(display.train[j], old, new)
            item["changes"] = feature_changes(display.feature_names, before, after, new - old)
        items.append(item)
    return items


def attack_state(
    context: ExplorerContext,
    index: int,
    result: AttackResult,
    message: str,
    units: SliderUnits,
    features: FeatureUnits,
) -> AttackState:
    """The ``attack`` trait after a finished (or cancelled) attack on test point ``index``."""
    return {
        "state": "cancelled" if result.cancelled else "done",
        "test_index": index,
        "progress": 1.0,
        "flipped": result.flipped,
        "prediction_before": context.label(result.prediction_before),
        "prediction_after": context.label(result.prediction_after),
        "probabilities": probability_rows(context, result),
        "iterations": result.iterations,
        "max_change": result.max_change,
        "seconds": result.seconds,
        "stopped": result.stopped,
        "stop_reason": result.stop_reason,
        "n_poison": len(result.poisoned),
        "eps": units.to_slider(result.eps),
        "step": units.to_slider(result.step_size),
        "stop_margin": result.stop_margin,
        "margin": result.margin,
        "changes_in_data_units": features.in_data_units,
        "items": attack_items(context, result, units, features),
        "message": message,
    }


def search_summary(
    search: EpsSearch, settings: tuple[int, int, float, float, float], unit: str, units: SliderUnits
) -> str:
    """What an eps search found, in the slider's units; ``settings`` = (n_poison, max_iter,
    eps max in slider units, the search's time budget in seconds, the stop margin)."""
    n_poison, max_iter, eps_max, budget, stop_margin = settings
    tried = len(search.tried)
    if search.eps is not None:
        below = search.largest_failure
        not_below = "" if below is None else f"; {units.to_slider(below):.3g} did not"
        lead = f" by {percentage_points(stop_margin)}" if stop_margin > 0 else ""
        return (
            f"Smallest eps that flips{lead}: {units.to_slider(search.eps):.3g} {unit} ({tried} "
            f"attacks tried{not_below}). The eps slider is set to it; below, the attack at that "
            "eps."
        )
    if search.stopped == "cancelled":
        return f"Search cancelled after {tried} attacks: no eps tried flipped."
    if search.stopped == "time budget":
        largest = units.to_slider(max(e for e, _ in search.tried))
        return (
            f"Search stopped at its time budget ({budget:.0f} s): no eps up to "
            f"{largest:.3g} {unit} flipped. Try more training points."
        )
    return (
        f"No eps up to {eps_max:g} {unit} flips with {n_poison} training point(s) and "
        f"{max_iter} iterations: try more training points or iterations."
    )
