"""Bad input to the core engine (issue 14): each case must raise a TypeError/ValueError whose
message starts with the argument's name.

Cases:
- ``hessian_budget_mb`` negative, NaN, or a string;
- ``gradient_cache_mb`` negative, infinite, or None;
- ``Influence.top(k=...)`` with a bool, zero, or a float;
- ``Influence.rebuild(...)`` with an option Influence does not have, or a negative damping.
"""

from __future__ import annotations

import pytest
import torch

import influence_widgets as iw


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(12, 3, dtype=torch.float64, generator=gen), torch.arange(12) % 2


def _influence(**kw) -> iw.Influence:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2, dtype=torch.float64)
    return iw.Influence(model, _data(), l2=0.1, progress=False, **kw)


def _top(k):
    X, y = _data()
    return _influence().top(X[:2], y[:2], k=k)


def _rebuild(**overrides):
    inf = _influence()
    return inf.rebuild(inf.objective.module, _data(), **overrides)


CASES = [
    ("hessian_budget_negative", lambda: _influence(hessian_budget_mb=-1), ValueError,
     r"^hessian_budget_mb"),
    ("hessian_budget_nan", lambda: _influence(hessian_budget_mb=float("nan")), ValueError,
     r"^hessian_budget_mb"),
    ("hessian_budget_string", lambda: _influence(hessian_budget_mb="big"), TypeError,
     r"^hessian_budget_mb"),
    ("gradient_cache_negative", lambda: _influence(gradient_cache_mb=-5), ValueError,
     r"^gradient_cache_mb"),
    ("gradient_cache_inf", lambda: _influence(gradient_cache_mb=float("inf")), ValueError,
     r"^gradient_cache_mb"),
    ("gradient_cache_none", lambda: _influence(gradient_cache_mb=None), TypeError,
     r"^gradient_cache_mb"),
    ("top_k_bool", lambda: _top(True), TypeError, r"^k"),
    ("top_k_zero", lambda: _top(0), ValueError, r"^k"),
    ("top_k_float", lambda: _top(2.5), TypeError, r"^k"),
    ("rebuild_unknown_option", lambda: _rebuild(dampnig=0.1), TypeError, r"^dampnig"),
    ("rebuild_negative_damping", lambda: _rebuild(damping=-1.0), ValueError, r"^damping"),
]  # fmt: skip


@pytest.mark.parametrize("make, error, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_names_the_argument(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()
