"""Bad input to the analyses (craft_attack, validate_loo, actual_removal_effects,
ChordNewtonRetrain): each case raises a TypeError or ValueError whose message names the argument.

Cases:
- craft_attack: ``input_range=(0,)``, ``"ab"``, ``(0, "x")``, ``(True, 1)``, ``(1, 0)``;
  ``y_test`` out of range (10 and -1 for 10 classes, also with a custom loss), fractional, or
  more than one value; ``x_test`` of the wrong width; ``cancel=True``; ``influence`` not an
  Influence.
- validate_loo: ``influence`` not an Influence, ``cancel=True``, two test points.
- actual_removal_effects: ``cancel=True``.
- ChordNewtonRetrain: ``influence`` not an Influence, ``max_steps=0``, ``max_steps="3"``,
  ``batch_size=0``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

import influence_widgets as iw


@functools.cache
def _ten_classes() -> tuple:
    """A float64 10-class logistic regression on 50 points in [0, 1]^4, trained, with a
    correctly classified test point."""
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(50, 4, generator=gen, dtype=torch.float64)
    y = torch.arange(50) % 10
    model = iw.models.logistic_regression((4, 10))
    iw.train(model, (X, y), l2=0.05, progress=False)
    with torch.no_grad():
        t = int(torch.nonzero(model(X).argmax(1) == y)[0])
    return model, X, y, X[t : t + 1], y[t : t + 1]


def _influence(**kw) -> iw.Influence:
    model, X, y, _, _ = _ten_classes()
    return iw.Influence(model, (X, y), l2=0.05, progress=False, **kw)


def _attack(x_test=None, y_test=None, loss="cross_entropy", **kw):
    _, _, _, xt, yt = _ten_classes()
    x_test = xt if x_test is None else x_test
    y_test = yt if y_test is None else y_test
    args = {"max_iter": 1, "progress": False, **kw}
    return iw.craft_attack(_influence(loss=loss), x_test, y_test, **args)


def _loo(**kw):
    _, X, y, xt, yt = _ten_classes()
    return iw.validate_loo(
        kw.pop("influence", _influence()), xt, yt, n_remove=2, progress=False, **kw
    )


def _per_sample_cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(output, target.long(), reduction="none")


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[], object]
    error: type[Exception]
    names: str  # a regex that the message must start with: the argument's name


CASES = [
    Case(
        "attack-input_range-one-value", lambda: _attack(input_range=(0,)), TypeError, "input_range"
    ),
    Case("attack-input_range-string", lambda: _attack(input_range="ab"), TypeError, "input_range"),
    Case(
        "attack-input_range-not-a-number",
        lambda: _attack(input_range=(0, "x")),
        TypeError,
        "input_range",
    ),
    Case(
        "attack-input_range-bool", lambda: _attack(input_range=(True, 1)), TypeError, "input_range"
    ),
    Case(
        "attack-input_range-reversed",
        lambda: _attack(input_range=(1, 0)),
        ValueError,
        "input_range",
    ),
    Case(
        "attack-y_test-10-of-10-classes",
        lambda: _attack(y_test=torch.tensor([10])),
        ValueError,
        "y_test",
    ),
    Case(
        "attack-y_test-negative", lambda: _attack(y_test=torch.tensor([-1])), ValueError, "y_test"
    ),
    Case(
        "attack-y_test-10-custom-loss",
        lambda: _attack(y_test=torch.tensor([10]), loss=_per_sample_cross_entropy),
        ValueError,
        "y_test",
    ),
    Case(
        "attack-y_test-fractional-custom-loss",
        lambda: _attack(
            y_test=torch.tensor([0.5], dtype=torch.float64), loss=_per_sample_cross_entropy
        ),
        ValueError,
        "y_test",
    ),
    Case(
        "attack-y_test-two-values",
        lambda: _attack(y_test=torch.tensor([[1, 2]])),
        ValueError,
        "y_test",
    ),
    Case(
        "attack-x_test-wrong-width",
        lambda: _attack(x_test=torch.zeros(1, 5, dtype=torch.float64)),
        ValueError,
        "x_test",
    ),
    Case("attack-cancel-bool", lambda: _attack(cancel=True), TypeError, "cancel"),
    Case(
        "attack-influence-not-influence",
        lambda: iw.craft_attack("model", None, None),
        TypeError,
        "influence",
    ),
    Case("loo-influence-not-influence", lambda: _loo(influence="model"), TypeError, "influence"),
    Case("loo-cancel-bool", lambda: _loo(cancel=True), TypeError, "cancel"),
    Case(
        "loo-two-test-points",
        lambda: iw.validate_loo(_influence(), _ten_classes()[1][:2], _ten_classes()[2][:2]),
        ValueError,
        "x_test, y_test",
    ),
    Case(
        "removal-effects-cancel-bool",
        lambda: iw.analysis.actual_removal_effects(
            *_ten_classes()[:2], *_ten_classes()[3:], [0], cancel=True
        ),
        TypeError,
        "cancel",
    ),
    Case(
        "chord-influence-not-influence",
        lambda: iw.ChordNewtonRetrain("model"),
        TypeError,
        "influence",
    ),
    Case(
        "chord-max_steps-zero",
        lambda: iw.ChordNewtonRetrain(_influence(solver="direct"), max_steps=0),
        ValueError,
        "max_steps",
    ),
    Case(
        "chord-max_steps-string",
        lambda: iw.ChordNewtonRetrain(_influence(solver="direct"), max_steps="3"),
        TypeError,
        "max_steps",
    ),
    Case(
        "chord-batch_size-zero",
        lambda: iw.ChordNewtonRetrain(_influence(solver="direct"), batch_size=0),
        ValueError,
        "batch_size",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_names_the_argument(case: Case):
    with pytest.raises(case.error) as info:
        case.call()
    assert re.match(case.names, str(info.value)), f"the message does not start with {case.names}"
