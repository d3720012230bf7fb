"""Bad inputs of the Verify / unlabeled-test-point area (issue 15): each case is a call that must
raise the exception type given, with a message matching a regex that names the argument first.
Self-contained, to be merged into tests/test_bad_input.py."""

from __future__ import annotations

import threading

import pytest
import torch

import influence_widgets as iw
from tests.conftest import make_regression_influence


def _classifier():
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    y = (X[:, 0] > 0).long()
    model = torch.nn.Linear(3, 2, dtype=torch.float64)
    iw.train(model, (X, y), l2=0.1, progress=False)
    return iw.Influence(model, (X, y), l2=0.1, progress=False), X


def _top_without_label_for_mse():
    inf, X = make_regression_influence()
    inf.top(X[:2])


def _loo_without_label_for_mse():
    inf, X = make_regression_influence()
    iw.validate_loo(inf, X[:1], None, n_remove=3, progress=False)


def _loo_without_label_two_points():
    inf, X = _classifier()
    iw.validate_loo(inf, X[:2], None, n_remove=3, progress=False)


def _predicted_labels_scalar():
    inf, _ = _classifier()
    inf.predicted_labels(torch.tensor(1.0))


def _explorer_without_test_points():
    inf, _ = _classifier()
    iw.InfluenceExplorer(inf, kind="tabular", fit_in_background=False)


def _loo_cancel_not_an_event():
    inf, X = _classifier()
    iw.validate_loo(inf, X[:1], None, n_remove=3, progress=False, cancel=threading.Lock())


CASES = [
    pytest.param(_top_without_label_for_mse, ValueError, r"^y_test: None", id="top-no-label-mse"),
    pytest.param(_loo_without_label_for_mse, ValueError, r"^y_test: None", id="loo-no-label-mse"),
    pytest.param(
        _loo_without_label_two_points, ValueError, r"^x_test, y_test", id="loo-no-label-2"
    ),
    pytest.param(_predicted_labels_scalar, ValueError, r"^x_test: ", id="labels-scalar"),
    pytest.param(_explorer_without_test_points, ValueError, r"^x_test", id="explorer-no-x-test"),
    pytest.param(_loo_cancel_not_an_event, TypeError, r"^cancel", id="loo-cancel-lock"),
]


@pytest.mark.parametrize(("call", "error", "pattern"), CASES)
def test_bad_input_names_the_argument(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
