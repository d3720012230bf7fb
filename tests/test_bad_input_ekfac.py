"""Bad inputs of the EK-FAC solver (issue 17, section 1): each case is a call that must raise the
exception type given, with a message matching a regex that names the argument first, and leaves
the model and data untouched. Self-contained, to be merged into tests/test_bad_input.py."""

from __future__ import annotations

import pytest
import torch

import influence_widgets as iw

pytestmark = pytest.mark.filterwarnings("ignore::influence_widgets.InfluenceWarning")


def _data():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    return X, (X[:, 0] > 0).long()


def _bn_model():
    return torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2)
    ).double()


class _Scaled(torch.nn.Module):
    """A Linear layer and a free parameter outside any Linear/Conv2d."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.scale * self.lin(x)


class _Unused(torch.nn.Module):
    """A Linear layer whose weights are used without calling the layer."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x):
        return x @ self.lin.weight.T


def _fit(model, **kwargs):
    X, y = _data()
    iw.Influence(model, (X, y), l2=0.1, progress=False, **kwargs).ensure_fit()


CASES = [
    (
        "batchnorm-layer",
        lambda: _fit(_bn_model(), solver="ekfac"),
        ValueError,
        r"^params: layer '1' \(BatchNorm1d\) is not covered by EK-FAC; pass params=\[.*solver='cg'",
    ),
    (
        "free-parameter",
        lambda: _fit(_Scaled().double(), solver="ekfac"),
        ValueError,
        r"^params: layer '\(the model itself\)' \(_Scaled\) is not covered by EK-FAC",
    ),
    (
        "layer-never-called",
        lambda: _fit(_Unused().double(), solver="ekfac", params=["lin.weight"]),
        ValueError,
        r"^params: layer 'lin' \(Linear\) is never called",
    ),
    (
        "grouped-conv",
        lambda: _fit(
            torch.nn.Sequential(
                torch.nn.Unflatten(1, (3, 1, 1)),
                torch.nn.Conv2d(3, 3, 1, groups=3),
                torch.nn.Flatten(),
                torch.nn.Linear(3, 2),
            ).double(),
            solver="ekfac",
        ),
        ValueError,
        r"^params: layer '1' \(Conv2d\) has groups=3.*groups=1",
    ),
    ("batch-size-zero", lambda: iw.EKFAC(batch_size=0), ValueError, r"^batch_size"),
    ("batch-size-float", lambda: iw.EKFAC(batch_size=2.5), TypeError, r"^batch_size"),
    (
        "unknown-solver-lists-ekfac",
        lambda: _fit(torch.nn.Linear(3, 2).double(), solver="ekfca"),
        ValueError,
        r"^solver: unknown solver 'ekfca'.*'ekfac'",
    ),
]


@pytest.mark.parametrize(("case", "call", "error", "pattern"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_ekfac(case, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_rejected_model_untouched(untouched):
    model, (X, y) = _bn_model().train(), _data()
    with untouched(model, X, y), pytest.raises(ValueError, match="^params"):
        iw.Influence(model, (X, y), l2=0.1, solver="ekfac", progress=False).ensure_fit()


def test_an_uncovered_layer_is_named_when_the_influence_is_built():
    """Influence(..., solver="ekfac") names an uncovered layer at construction, before any fit."""
    X, y = _data()
    with pytest.raises(ValueError, match=r"^params: layer '1' \(BatchNorm1d\) is not covered"):
        iw.Influence(_bn_model(), (X, y), l2=0.1, solver="ekfac", progress=False)
