"""Bad arguments to the explorer: each is a TypeError/ValueError (a TraitError for a synced trait)
whose message names the argument.

Cases (one parametrized test):
- class_names: 2 names for a 3-class model; 5 names; a bare string "abc" (it would be split into
  three one-letter names); 3 names for a model with one output (two classes); a number.
- feature_names: 3 names for 4 columns; 5 names; a bare string "abcd" (four letters for four
  columns); for image-like (non-tabular) data, a wrong count of the input values.
- selected: True (a bool is not an index), 2.0, "3".
- k and page_size: 0, True, 2.5.
- influence: not an Influence; data: not an iw.datasets Dataset.
- run_attack: eps=-1, eps=True, step=nan; run_verify: n_remove=0, n_remove=np.int64(0).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import traitlets

import influence_widgets as iw


@functools.cache
def _problem(outputs: int = 3):
    """30 points with 4 features, a linear model with ``outputs`` outputs and its Influence."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    y = torch.arange(30) % max(outputs, 2)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, outputs, dtype=torch.float64)
    loss = "smooth_hinge" if outputs == 1 else "cross_entropy"
    iw.train(model, (X, y), loss=loss, l2=0.1, progress=False)
    return X, y, iw.Influence(model, (X, y), loss=loss, l2=0.1, progress=False)


def _explorer(outputs: int = 3, **kwargs):
    X, y, inf = _problem(outputs)
    options = {"x_test": X[:6], "y_test": y[:6], "kind": "tabular", "fit_in_background": False}
    return iw.InfluenceExplorer(inf, **{**options, **kwargs})


@functools.cache
def _ready_explorer():
    ex = _explorer()
    ex.selected = 0
    return ex


def _select(value):
    _ready_explorer().selected = value


CASES = [
    ("class_names-too-few", lambda: _explorer(class_names=["a", "b"]), ValueError, "class_names"),
    ("class_names-too-many", lambda: _explorer(class_names=list("abcde")), ValueError, "class_names"),
    ("class_names-bare-string", lambda: _explorer(class_names="abc"), TypeError, "class_names"),
    (
        "class_names-one-output-is-two-classes",
        lambda: _explorer(1, class_names=["a", "b", "c"]),
        ValueError,
        r"class_names: got 3 names for 2 classes",
    ),
    ("class_names-number", lambda: _explorer(class_names=3), TypeError, "class_names"),
    ("feature_names-too-few", lambda: _explorer(feature_names=list("abc")), ValueError, "feature_names"),
    ("feature_names-too-many", lambda: _explorer(feature_names=list("abcde")), ValueError, "feature_names"),
    ("feature_names-bare-string", lambda: _explorer(feature_names="abcd"), TypeError, "feature_names"),
    (
        "feature_names-text-kind",
        lambda: _explorer(kind="text", test_display=["t"] * 6, train_display=["t"] * 30, feature_names=["a"]),
        ValueError,
        "feature_names",
    ),
    ("selected-bool", lambda: _select(True), traitlets.TraitError, "selected"),
    ("selected-float", lambda: _select(2.0), traitlets.TraitError, "selected"),
    ("selected-str", lambda: _select("3"), traitlets.TraitError, "selected"),
    ("k-zero", lambda: _explorer(k=0), ValueError, "k"),
    ("k-bool", lambda: _explorer(k=True), TypeError, "k"),
    ("k-float", lambda: _explorer(k=2.5), TypeError, "k"),
    ("page_size-zero", lambda: _explorer(page_size=0), ValueError, "page_size"),
    ("influence-not-an-Influence", lambda: iw.InfluenceExplorer("inf", x_test=[[0.0]], y_test=[0], kind="tabular"), TypeError, "influence"),
    ("data-not-a-Dataset", lambda: iw.InfluenceExplorer(_problem()[2], data=(1, 2)), TypeError, "data"),
    ("eps-negative", lambda: _ready_explorer().run_attack(eps=-1), ValueError, "eps"),
    ("eps-bool", lambda: _ready_explorer().run_attack(eps=True), TypeError, "eps"),
    ("step-nan", lambda: _ready_explorer().run_attack(step=float("nan")), ValueError, "step"),
    ("n_remove-zero", lambda: _ready_explorer().run_verify(n_remove=0), ValueError, "n_remove"),
    ("n_remove-numpy-zero", lambda: _ready_explorer().run_verify(n_remove=np.int64(0)), ValueError, "n_remove"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "error", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_rejected_by_name(call, error, names):
    with pytest.raises(error, match=names):
        call()
