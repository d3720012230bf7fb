"""Progress bars: a converged run closes its bar as complete (issue 15: iw.train's bars stayed red
and partly full, "L-BFGS 6% 64/1000", after a successful run)."""

from __future__ import annotations

import pytest
import torch

import influence_widgets as iw
from influence_widgets import training
from influence_widgets.core import progress


@pytest.fixture
def bars(monkeypatch):
    """Every bar iw.train makes, kept after it is closed."""
    made = []

    def keep(**kwargs):
        bar = progress.progress_bar(**kwargs)
        made.append(bar)
        return bar

    monkeypatch.setattr(training, "progress_bar", keep)
    return made


def test_a_converged_train_closes_its_bar_full(bars):
    data = iw.datasets.digits()
    model = iw.models.logistic_regression(data)
    report = iw.train(model, data, l2=0.01, progress=True)
    assert report.converged and 0 < report.iterations < 1000
    (bar,) = bars
    assert bar.n == bar.total == report.iterations


def test_a_run_that_stops_short_keeps_its_bar_short(bars):
    torch.manual_seed(0)
    data = iw.datasets.digits()
    model = iw.models.logistic_regression(data)
    report = iw.train(model, data, l2=0.01, max_iter=3, progress=True)
    assert not report.converged
    (bar,) = bars
    assert bar.total == 3
