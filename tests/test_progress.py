"""Progress bars: a converged run closes its bar as complete (issue 15: iw.train's bars stayed red
and partly full, "L-BFGS 6% 64/1000", after a successful run)."""

from __future__ import annotations

import pytest
import torch

import influence_widgets as iw
from influence_widgets import training
from influence_widgets.core import progress, solvers
from influence_widgets.core.solvers import cg, lissa, spectrum


@pytest.fixture
def bars(monkeypatch):
    """Every bar iw.train makes, kept after it is closed."""
    made = []

    def keep(**kwargs):
        bar = progress.progress_bar(**kwargs)
        made.append(bar)
        return bar

    monkeypatch.setattr(training, "progress_bar", keep)
    for module in (cg, lissa, spectrum):  # the solvers' modules that draw bars
        monkeypatch.setattr(module, "progress_bar", keep)
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


@pytest.fixture(scope="module")
def tiny_lr():
    """A float64 3-class logistic regression at a minimum: 60 points, 5 features."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(60, 5, generator=gen, dtype=torch.float64)
    y = torch.arange(60) % 3
    model = iw.models.logistic_regression((5, 3))
    iw.train(model, (X, y), l2=0.1, progress=False)
    return model, X, y


@pytest.mark.parametrize(
    ("solver", "desc", "most"),
    [
        (solvers.ConjugateGradient(maxiter=1000), "CG", 1000),
        (solvers.LiSSA(depth=100_000), "LiSSA", 100_000),
    ],
    ids=["cg", "lissa"],
)
def test_a_solver_that_converges_early_closes_its_bar_full(bars, tiny_lr, solver, desc, most):
    model, X, y = tiny_lr
    inf = iw.Influence(model, (X, y), l2=0.1, solver=solver, progress=True)
    inf.influence_on_loss(X[:3], y[:3])
    assert inf.solver.diagnostics.converged is not False
    (bar,) = [b for b in bars if b.step == desc]
    assert 0 < bar.n == bar.total < most


def test_a_solver_that_runs_out_of_iterations_keeps_its_bar_short(bars, tiny_lr):
    model, X, y = tiny_lr
    inf = iw.Influence(model, (X, y), l2=0.1, solver=solvers.ConjugateGradient(maxiter=2))
    inf.progress = True
    with pytest.warns(iw.InfluenceWarning, match="maxiter=2"):
        inf.influence_on_loss(X[:3], y[:3])
    assert not inf.solver.diagnostics.converged
    (bar,) = [b for b in bars if b.step == "CG"]
    assert bar.n == bar.total == 2
