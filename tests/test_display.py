"""What the explorer shows of a tabular point: every feature, the ones that matter first.

A training card lists every feature beside the test point's, ordered by the difference in units of
the feature's SD over the training set; the test point's own card and the gallery order its
features by how far they are from the training mean, in the same unit.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import influence_widgets as iw
from influence_widgets.widgets.display import DisplayData

LONG_NAMES = [f"worst concave points of feature group number {j}" for j in range(50)]


def _table(n: int = 40, d: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features on very different scales (SD 10^-3 ... 10^3), as in breast cancer's columns."""
    rng = np.random.default_rng(seed)
    scales = np.logspace(-3, 3, d)
    return rng.normal(size=(n, d)) * scales, rng.normal(size=(6, d)) * scales


def _display(train, test, names=None) -> DisplayData:
    return DisplayData(
        "tabular", train=train, test=test, class_names=["a", "b"], feature_names=names
    )


def test_a_training_card_lists_every_feature_most_different_in_sds_first(untouched):
    train, test = _table()
    display = _display(train, test, LONG_NAMES)
    with untouched(train, test):
        rows = display.differences(3, 1)
    assert len(rows) == 50 and sorted(r[0] for r in rows) == sorted(LONG_NAMES)
    sd = train.std(axis=0)
    for name, a, b, d in rows:
        j = LONG_NAMES.index(name)  # the full name, never cut: the browser ellipsizes it
        assert (a, b) == (train[3, j], test[1, j])
        assert d == pytest.approx((a - b) / sd[j])
    sizes = [abs(r[3]) for r in rows]
    assert sizes == sorted(sizes, reverse=True)


def test_the_test_point_row_has_every_feature_most_unusual_first(untouched):
    train, test = _table(d=13)
    display = _display(train, test)
    with untouched(train, test):
        row = display.item("test", 2)["row"]
    assert len(row) == 13 and {r[0] for r in row} == {f"x{j}" for j in range(13)}
    mean, sd = train.mean(axis=0), train.std(axis=0)
    for name, value, z in row:
        j = int(name[1:])
        assert value == test[2, j] and z == pytest.approx((value - mean[j]) / sd[j])
    assert [abs(r[2]) for r in row] == sorted((abs(r[2]) for r in row), reverse=True)


def test_differences_are_ranked_in_sds_not_in_raw_units():
    """A 500 difference in a feature of SD ~1000 matters less than 0.3 in one of SD ~0.1."""
    train = np.array([[-1000.0, -0.1, 1.0], [1000.0, 0.1, 1.0]])  # SDs 1000, 0.1, (1)
    test = np.array([[500.0, 0.3, 1.0]])
    rows = _display(train, np.array([[0.0, 0.0, 1.0]]), ["area", "smoothness", "c"])
    display = _display(train, test, ["area", "smoothness", "c"])
    assert [r[0] for r in display.differences(1, 0)] == ["smoothness", "area", "c"]
    assert [r[3] for r in display.differences(1, 0)] == pytest.approx([-2.0, 0.5, 0.0])
    ties = [r[0] for r in rows.item("test", 0)["row"]]
    assert ties == ["area", "smoothness", "c"]  # z = 0 for all three: the data's order


def test_a_feature_constant_in_training_is_measured_in_its_own_units():
    train = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    test = np.array([[3.0, 7.0]])
    display = _display(train, test, ["varies", "constant"])
    rows = display.differences(0, 0)
    assert rows == [
        ["constant", 5.0, 7.0, -2.0],
        ["varies", 1.0, 3.0, pytest.approx(-2 / np.std([1, 3, 5]))],
    ]
    assert display.item("test", 0)["row"][0] == ["constant", 7.0, 2.0]


def test_the_explorer_sends_every_feature_of_a_tabular_panel_as_json(untouched):
    torch.manual_seed(0)
    train, test = _table(n=60, d=50)
    X, Xt = torch.tensor(train), torch.tensor(test)
    y, yt = (X[:, 40] > 0).long(), (Xt[:, 40] > 0).long()
    model = torch.nn.Linear(50, 2, dtype=torch.float64)
    iw.train(model, (X, y), l2=0.1, progress=False)
    inf = iw.Influence(model, (X, y), l2=0.1, progress=False)
    with untouched(model, X, y, Xt, yt):
        ex = iw.InfluenceExplorer(
            inf,
            x_test=Xt,
            y_test=yt,
            kind="tabular",
            feature_names=LONG_NAMES,
            k=2,
            fit_in_background=False,
        )
        ex.selected = 1
    panel = ex.panel
    json.dumps(panel, allow_nan=False)  # what the front end receives: finite numbers only
    assert len(panel["test"]["row"]) == 50
    for item in panel["helpful"] + panel["harmful"]:
        assert "row" not in item and len(item["differences"]) == 50
        assert {r[0] for r in item["differences"]} == set(LONG_NAMES)
        assert all(r[2] == test[1, LONG_NAMES.index(r[0])] for r in item["differences"])
    assert len(ex.gallery[0]["row"]) == 50


def test_a_dataset_in_its_own_units_is_shown_in_them():
    """breast_cancer() is standardised for the model; the explorer shows its own units (mm, ...)
    for training and test points alike, unless the Influence was built on other points, when
    both sides show what the model reads (never two units side by side)."""
    from sklearn.datasets import load_breast_cancer

    data = iw.datasets.breast_cancer()
    model = iw.models.logistic_regression(data)
    iw.train(model, data, l2=0.01, progress=False)
    raw = load_breast_cancer().data
    inf = iw.Influence(model, data, l2=0.01, progress=False)
    shown = iw.InfluenceExplorer(inf, data, fit_in_background=False).display_data
    assert np.array_equal(np.asarray(shown.train), data.units[0])
    assert np.array_equal(np.asarray(shown.test), data.units[1])
    assert {tuple(r) for r in data.units[0]} <= {tuple(r) for r in raw}
    half = iw.Influence(model, (data.X_train[:200], data.y_train[:200]), l2=0.01, progress=False)
    shown = iw.InfluenceExplorer(half, data, fit_in_background=False).display_data
    assert np.array_equal(np.asarray(shown.train), data.X_train[:200].numpy())
    assert np.array_equal(np.asarray(shown.test), data.X_test.numpy())


def test_images_of_other_points_than_the_datasets_show_those_points():
    data = iw.datasets.digits()
    model = iw.models.logistic_regression(data)
    iw.train(model, data, l2=0.01, progress=False)
    inf = iw.Influence(model, (data.X_train[100:300], data.y_train[100:300]), progress=False)
    ex = iw.InfluenceExplorer(
        inf, data, x_test=data.X_test[5:9], y_test=data.y_test[5:9], fit_in_background=False
    )
    shown = ex.display_data
    assert np.array_equal(np.asarray(shown.train), data.images("train")[100:300])
    assert np.array_equal(np.asarray(shown.test), data.images("test")[5:9])
