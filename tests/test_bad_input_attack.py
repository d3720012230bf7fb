"""Bad inputs of the attack area (issue 15): ``smallest_flipping_eps`` and the Attack tab's
``run_attack``. Each case: an id, a callable, the exception type and a regex that must name the
argument; self-contained, so that the cases can move into tests/test_bad_input.py as they are."""

from __future__ import annotations

import re

import pytest
import torch

import influence_widgets as iw


def _problem():
    """A fitted 2-class logistic regression on 40 points in [0, 1]^3 and one test point."""
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(40, 3, generator=gen, dtype=torch.float64)
    y = (X[:, 0] > 0.5).long()
    model = iw.models.logistic_regression((3, 2))
    iw.train(model, (X, y), l2=0.1, progress=False)
    inf = iw.Influence(model, (X, y), l2=0.1, progress=False)
    with torch.no_grad():
        right = int(torch.nonzero(model(X).argmax(1) == y)[0])
    return inf, X[right : right + 1], y[right : right + 1]


def _search(**options):
    def call():
        inf, x, y = _problem()
        iw.smallest_flipping_eps(inf, x, y, progress=False, **{"eps_max": 0.5, **options})

    return call


def _tab_attack(**options):
    def call():
        inf, _, _ = _problem()
        X, y = inf.train.X, inf.train.y
        explorer = iw.InfluenceExplorer(
            inf, x_test=X[:5], y_test=y[:5], kind="tabular", fit_in_background=False
        )
        explorer.selected = 0
        explorer.run_attack(**options)

    return call


CASES = [
    ("search_eps_max_zero", _search(eps_max=0.0), ValueError, r"^eps_max"),
    ("search_eps_max_negative", _search(eps_max=-1.0), ValueError, r"^eps_max"),
    ("search_eps_max_string", _search(eps_max="big"), TypeError, r"^eps_max"),
    ("search_eps_start_above_max", _search(eps_start=1.0), ValueError, r"^eps_start"),
    ("search_eps_start_zero", _search(eps_start=0.0), ValueError, r"^eps_start"),
    ("search_bisections_fraction", _search(bisections=1.5), ValueError, r"^bisections"),
    ("search_bisections_negative", _search(bisections=-1), ValueError, r"^bisections"),
    ("search_time_budget_zero", _search(time_budget=0), ValueError, r"^time_budget"),
    ("search_n_poison_zero", _search(n_poison=0), ValueError, r"^n_poison"),
    ("tab_step_negative", _tab_attack(step=-1.0), ValueError, r"^step"),
    ("tab_eps_nan", _tab_attack(eps=float("nan")), ValueError, r"^eps"),
    ("tab_n_poison_too_many", _tab_attack(n_poison=41, wait=True), RuntimeError, r"^n_poison"),
]


@pytest.mark.parametrize(("case_id", "call", "error", "pattern"), CASES, ids=[c[0] for c in CASES])
def test_bad_attack_input_names_the_argument(case_id, call, error, pattern):
    with pytest.raises(error) as info:
        call()
    assert re.search(pattern, str(info.value)), f"{case_id}: {info.value}"
