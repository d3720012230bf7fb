"""Unusual training sets that ``Influence`` accepts, each tested to give the numbers of the plain
``(X, y)`` pair with the user's objects untouched: a ``Dataset`` of ``(x, y, index)`` items, a
``Dataset`` of vector targets for ``mse``, and an ``iw.datasets`` Dataset as
``Influence(model, data)`` (its training split, whose fields errors name)."""

from __future__ import annotations

import pytest
import torch

import influence_widgets as iw
from tests.tiny_inputs import L2, C, D, Items, blobs, influence, linear


def trained_linear(X: torch.Tensor, y: torch.Tensor) -> torch.nn.Linear:
    model = linear(X.shape[1])
    iw.train(model, (X, y), l2=L2, progress=False)
    return model


def test_a_dataset_of_triples_gives_the_numbers_of_the_pair(untouched):
    X, y = blobs()
    model = trained_linear(X, y)
    triples = Items(X, y, lambda x, t, i: (x, t, i))
    expected = influence(model, (X, y)).influence_on_loss(X[:2], y[:2])
    with untouched(model, X, y):
        inf = influence(model, triples).fit()
        got = inf.influence_on_loss(X[:2], y[:2])
    torch.testing.assert_close(got, expected)


def test_a_dataset_of_vector_targets_works_with_mse(untouched):
    X, _ = blobs()
    Y = X @ torch.ones(D, C, dtype=torch.float64) + 0.1 * X.flip(1)[:, :C]
    model = linear()
    iw.train(model, (X, Y), l2=L2, loss="mse", progress=False)
    expected = influence(model, (X, Y), loss="mse").self_influence()
    with untouched(model, X, Y):
        got = influence(model, Items(X, Y, lambda x, t, i: (x, t)), loss="mse").self_influence()
    torch.testing.assert_close(got, expected)


def iw_dataset(X: torch.Tensor, y: torch.Tensor) -> iw.datasets.Dataset:
    return iw.datasets.Dataset(
        name="blobs",
        X_train=X,
        y_train=y,
        X_test=X[:3],
        y_test=y[:3],
        class_names=[f"c{k}" for k in range(C)],
    )


def test_an_iw_dataset_is_its_training_split(untouched):
    X, y = blobs()
    model = trained_linear(X, y)
    data = iw_dataset(X, y)
    expected = influence(model, (data.X_train, data.y_train)).influence_on_loss(X[:2], y[:2])
    with untouched(model, data):
        got = iw.Influence(model, data, l2=L2, progress=False).influence_on_loss(X[:2], y[:2])
    torch.testing.assert_close(got, expected)


def test_an_iw_dataset_names_its_fields_in_errors():
    X, y = blobs()
    bad = X.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"^train\.X_train: contains 1 NaN"):
        influence(linear(), iw_dataset(bad, y))
