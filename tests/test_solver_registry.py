"""Adding a solver, as the README's "where to change what" says: subclass Solver with a name, and
it is registered, listed by the magic's --solver and reachable as Influence(..., solver=name)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from IPython.core.error import UsageError

import influence_widgets as iw
from influence_widgets.core import solvers
from influence_widgets.core.solvers import (
    Solver,
    available_solvers,
    registered_solvers,
    solver_names,
    unregister_solver,
)
from influence_widgets.magic import InfluenceMagics

BUILT_IN = ("direct", "cg", "lissa", "arnoldi", "ekfac")


@pytest.fixture
def toy():
    """A solver defined the way a contributor would: torch.linalg.solve on the dense H."""

    class DenseSolve(Solver):
        """Solves with torch.linalg.solve on the dense H + damping I (a test's toy)."""

        name = "toy"

        def _fit(self, op, progress: bool) -> None:
            self.H = op.dense(progress=False)

        def solve(self, B: torch.Tensor, progress: bool = False) -> torch.Tensor:
            return torch.linalg.solve(self.H, B)

    yield DenseSolve
    unregister_solver("toy")


@pytest.fixture(scope="module")
def problem():
    """A float64 logistic regression on 40 points, trained to a tight minimum."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    y = (X[:, 0] - X[:, 1] > 0).long()
    model = iw.models.logistic_regression((3, 2))
    iw.train(model, (X, y), l2=0.1, tol=1e-12, progress=False)
    return model, X, y


def test_a_subclass_with_a_name_is_registered_and_described(toy):
    assert registered_solvers()["toy"] is toy
    assert solver_names() == ("auto", *BUILT_IN, "toy")
    assert available_solvers()["toy"] == (
        "Solves with torch.linalg.solve on the dense H + damping I (a test's toy)."
    )


def test_the_toy_is_in_the_magics_solver_help_and_choices(toy):
    parser = InfluenceMagics.influence.parser
    assert "arnoldi, ekfac, toy" in " ".join(parser.format_help().split())
    args = parser.parse_argstring("m --train X y --test Xt yt --solver toy")
    assert args.solver == "toy"


def test_influence_with_the_toy_equals_direct(toy, problem):
    model, X, y = problem
    got = iw.Influence(model, (X, y), l2=0.1, solver="toy", progress=False)
    direct = iw.Influence(model, (X, y), l2=0.1, solver="direct", progress=False)
    assert isinstance(got.solver, toy)
    expected = direct.influence_on_loss(X[:4], y[:4])
    torch.testing.assert_close(got.influence_on_loss(X[:4], y[:4]), expected, rtol=0, atol=1e-10)
    assert float(expected.abs().max()) > 1e-2  # not a vacuous comparison


def test_an_unknown_name_lists_the_registered_solvers(toy, problem):
    model, X, y = problem
    with pytest.raises(ValueError, match=r"^solver: unknown solver 'nope'; use one of 'auto', "):
        iw.Influence(model, (X, y), l2=0.1, solver="nope")
    with pytest.raises(ValueError, match=r"'ekfac', 'toy'$"):
        iw.Influence(model, (X, y), l2=0.1, solver="nope")
    with pytest.raises(UsageError, match=r"--solver: invalid choice: 'nope'.*'toy'"):
        InfluenceMagics.influence.parser.parse_argstring("m --train X y --test Xt yt --solver nope")


def test_an_unregistered_solver_is_gone(problem):
    model, X, y = problem

    class Gone(Solver):
        name = "gone"

        def solve(self, B, progress=False):
            return B

    assert unregister_solver("gone") is Gone
    assert "gone" not in solver_names()
    with pytest.raises(ValueError, match="unknown solver 'gone'"):
        iw.Influence(model, (X, y), l2=0.1, solver="gone")


def test_a_taken_or_reserved_name_is_refused(toy):
    with pytest.raises(ValueError, match=r"name: solver name 'cg' is taken by .*ConjugateGradient"):
        type("Other", (Solver,), {"name": "cg", "solve": lambda self, B, progress=False: B})
    with pytest.raises(ValueError, match="'auto' is reserved"):
        type("Auto", (Solver,), {"name": "auto", "solve": lambda self, B, progress=False: B})
    with pytest.raises(ValueError, match="lower-case"):
        type("Upper", (Solver,), {"name": "Upper", "solve": lambda self, B, progress=False: B})
    assert registered_solvers()["cg"] is iw.ConjugateGradient


def test_a_subclass_without_its_own_name_is_not_registered():
    class Tuned(iw.ConjugateGradient):
        """CG with other defaults."""

    assert registered_solvers()["cg"] is iw.ConjugateGradient and Tuned.name == "cg"


def test_exports_follow_the_registry():
    built_in = [registered_solvers()[name] for name in BUILT_IN]
    for cls in built_in:
        assert cls.__name__ in solvers.__all__
        assert getattr(solvers, cls.__name__) is cls
        assert getattr(iw, cls.__name__) is cls
    assert set(available_solvers()) == {"auto", *BUILT_IN}
    assert all(text and "\n" not in text for text in available_solvers().values())
    assert iw.core.available_solvers is available_solvers


def _unnamed(page: str) -> list[str]:
    """The registered solvers ``page`` (README.md, docs/api.md) does not name as "name"."""
    text = (Path(__file__).resolve().parents[1] / page).read_text()
    return [name for name in solver_names() if f'"{name}"' not in text]


@pytest.mark.parametrize("page", ["README.md", "docs/api.md"])
def test_the_readme_and_the_api_page_name_every_registered_solver(page, request):
    """The README's API table and docs/api.md list the solvers a user can pick: every registered
    one, so a new solver file without a line in them fails here (as the toy does)."""
    assert _unnamed(page) == []
    request.getfixturevalue("toy")
    assert _unnamed(page) == ["toy"]
