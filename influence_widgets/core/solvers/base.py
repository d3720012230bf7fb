"""The solver contract and the registry of solvers by name: x = (H + damping I)^-1 b.

H is the Hessian of the regularised risk R at theta_hat (l2 included), or its Gauss-Newton matrix
G with ``hessian="gauss-newton"``, as in :mod:`influence_widgets.core.hvp`; every solver returns
the same quantity, with the same sign and scale, X = (H + damping I)^-1 B, and differs only in how
exactly and how fast it gets there (EK-FAC, whose ``curvature`` is "gauss-newton", always
approximates G).

``damping="auto"`` (the operator's ``auto_damping``) is settled in ``fit``, before anything is
factorised: a solver that knows lambda_min of H itself (direct, LiSSA, Arnoldi, EK-FAC) calls
:meth:`Solver.choose_damping` from its ``_fit`` and sets ``chooses_damping``; for any other, the
base class estimates lambda_min by Lanczos first (:mod:`~influence_widgets.core.damping` has the
ladder and the rule).

All solvers share one interface: ``fit(op)`` does the one-off work (factorisation, eigenvalue
estimates), ``solve(B)`` maps (p, m) right-hand sides to (p, m) solutions, and ``diagnostics``
reports residual, iterations, convergence and the eigenvalues that are known.

A solver instance made by the user holds settings only: :class:`~influence_widgets.Influence`
fits :meth:`Solver.unfitted`, a fresh copy, so one instance may configure any number of
``Influence`` objects.

A subclass that sets ``name`` in its class body is registered under that name when the class is
created: ``Influence(..., solver=name)``, the error for an unknown name, the magic's ``--solver``
and :func:`~influence_widgets.core.solvers.available_solvers` read :func:`registered_solvers`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar

import torch

from influence_widgets.core.damping import choose_damping
from influence_widgets.core.hvp import GAUSS_NEWTON, HessianOperator
from influence_widgets.core.objective import Objective
from influence_widgets.core.solvers.spectrum import smallest_eigenvalue

__all__ = [
    "Solver",
    "SolverDiagnostics",
    "registered_solvers",
    "unregister_solver",
]

# Names that a solver class cannot take: "auto" is the choice among them (choice.py).
RESERVED_NAMES = ("auto",)

# Lanczos steps for lambda_min when damping="auto" and the solver has no estimate of its own: a
# bound that is exact for p <= LANCZOS_STEPS (as smallest_eigenvalue's default).
LANCZOS_STEPS = 80


@dataclass
class SolverDiagnostics:
    """What a solver knows about its last fit and solve."""

    solver: str
    converged: bool | None = None
    residual: float | None = None  # max over columns of ||(H + dI) x - b|| / ||b||
    iterations: int | None = None
    min_eigenvalue: float | None = None  # of H + damping I
    max_eigenvalue: float | None = None  # of H + damping I
    fit_seconds: float | None = None
    extra: dict = field(default_factory=dict)
    hessian: str | None = None  # "exact" or "gauss-newton": the matrix H stands for
    damping: float | None = None  # the damping added to H's diagonal
    damping_reason: str | None = None  # why, when damping="auto" chose it (None: given)


_REGISTRY: dict[str, type[Solver]] = {}


class Solver(ABC):
    """Shared interface of the inverse-HVP solvers: X = (H + damping I)^-1 B.

    Settings come from ``__init__`` and are listed by :meth:`settings`; ``fit`` stores the
    operator and what it computed from it on the instance. :class:`~influence_widgets.Influence`
    never fits the instance it is given, only :meth:`unfitted` copies of it.

    A subclass that sets ``name`` (lower case, e.g. ``"cg"``) in its own class body is
    registered under it; ``summary`` is its one-line description (default: the first paragraph
    of its docstring). ``curvature``: the matrix it always uses whatever ``hessian=`` says
    (EK-FAC: "gauss-newton"), None for the operator's. ``chooses_damping``: its ``_fit`` settles
    ``damping="auto"`` itself with :meth:`choose_damping`.
    """

    name: ClassVar[str] = "solver"
    summary: ClassVar[str] = ""
    curvature: ClassVar[str | None] = None
    chooses_damping: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _register(cls)

    def __init__(self) -> None:
        self.op: HessianOperator | None = None
        self.diagnostics = SolverDiagnostics(solver=self.name)

    @classmethod
    def description(cls) -> str:
        """One line on what this solver computes: ``summary``, or its docstring's first
        paragraph."""
        if cls.summary:
            return cls.summary
        paragraph = (cls.__doc__ or "").strip().split("\n\n")[0]
        return " ".join(paragraph.split())

    def settings(self) -> dict[str, object]:
        """The keyword arguments of ``__init__`` that reproduce this solver (a subclass whose
        ``__init__`` takes arguments overrides this)."""
        return {}

    def unfitted(self) -> Solver:
        """A new solver with these settings and no fitted state."""
        return type(self)(**self.settings())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"

    def check(self, objective: Objective) -> None:  # noqa: B027 (optional hook)
        """Raise now, when ``Influence`` is built, if this solver cannot handle ``objective``
        (e.g. a layer it does not cover); most solvers handle any."""

    def fit(self, op: HessianOperator, progress: bool = True) -> Solver:
        """The one-off work on ``op``; with ``damping="auto"``, first the damping (see the module
        docstring), recorded with the Hessian in ``diagnostics``."""
        start = time.perf_counter()
        self.op = op
        d = self.diagnostics
        d.hessian, d.damping_reason = self.curvature or op.hessian, None
        if op.auto_damping:
            op.damping = 0.0  # the ladder starts from H itself, also when fitted again
            if not self.chooses_damping:
                exact = op.p <= LANCZOS_STEPS
                self.choose_damping(op, smallest_eigenvalue(op, k=LANCZOS_STEPS), exact)
        self._fit(op, progress)
        d.damping = op.damping
        d.fit_seconds = time.perf_counter() - start
        return self

    def choose_damping(
        self,
        op: HessianOperator,
        min_eigenvalue: float,
        exact: bool,
        accept: Callable[[float], bool] | None = None,
    ) -> float:
        """Settle ``damping="auto"`` from lambda_min of H (``exact``, else an upper bound on it):
        the rung of :func:`~influence_widgets.core.damping.choose_damping` (``accept(d)``: an
        extra check of H + d I) becomes ``op.damping``, its reason ``diagnostics.damping_reason``;
        returns it."""
        semidefinite = self.diagnostics.hessian == GAUSS_NEWTON
        choice = choose_damping(min_eigenvalue, exact, accept, semidefinite)
        op.damping = choice.damping
        self.diagnostics.damping_reason = choice.reason
        return choice.damping

    def _fit(self, op: HessianOperator, progress: bool) -> None:  # noqa: B027 (optional hook)
        """One-off work; most iterative solvers have none."""

    @abstractmethod
    def solve(self, B: torch.Tensor, progress: bool = False) -> torch.Tensor:
        """(H + damping I)^-1 B for B of shape (p, m)."""

    def _residual(self, X: torch.Tensor, B: torch.Tensor) -> float:
        R = self.op.matvec(X) - B
        return float((R.norm(dim=0) / B.norm(dim=0).clamp_min(1e-300)).max())


def _register(cls: type[Solver]) -> None:
    """Register ``cls`` under ``cls.name``. A class of the same module and qualified name
    replaces the old one (a module reloaded, a notebook cell run again); another class may not
    take a name in use."""
    name = cls.name
    if not isinstance(name, str) or not name or name != name.strip().lower():
        raise ValueError(f"name: a solver's name must be a non-empty lower-case str, got {name!r}")
    if name in RESERVED_NAMES:
        raise ValueError(f"name: {name!r} is reserved; choose another name for {cls.__name__}")
    old = _REGISTRY.get(name)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(
            f"name: solver name {name!r} is taken by {old.__module__}.{old.__qualname__}"
        )
    _REGISTRY[name] = cls


def registered_solvers() -> Mapping[str, type[Solver]]:
    """The registered solver classes by name, in the order they were defined (a read-only
    view that follows later registrations)."""
    return MappingProxyType(_REGISTRY)


def unregister_solver(name: str) -> type[Solver]:
    """Remove the solver registered as ``name`` and return its class (a KeyError if none)."""
    return _REGISTRY.pop(name)
