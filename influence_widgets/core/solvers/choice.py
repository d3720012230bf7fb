"""``solver="auto"`` and its reason, and solvers made from a name or an instance.

"auto" is a choice among the registered solvers (:mod:`~influence_widgets.core.solvers.base`),
not a solver of its own; :func:`make_solver` turns a name, "auto" or a configured instance into
the fresh, unfitted solver that an :class:`~influence_widgets.Influence` fits.
"""

from __future__ import annotations

import torch

from influence_widgets.core.objective import Objective
from influence_widgets.core.solvers.base import Solver, registered_solvers
from influence_widgets.core.solvers.ekfac_factors import coverage_gap

__all__ = ["AUTO_SUMMARY", "auto_solver", "available_solvers", "make_solver", "solver_names"]

AUTO_SUMMARY = (
    "direct while H fits hessian_budget_mb, else ekfac where every parameter is in a "
    "Linear/Conv2d layer, else cg; says why"
)


def solver_names() -> tuple[str, ...]:
    """Every name ``solver=`` accepts: "auto", then the registered solvers in the order they
    were defined."""
    return ("auto", *registered_solvers())


def available_solvers() -> dict[str, str]:
    """Every name ``solver=`` accepts, with a one-line description, "auto" first."""
    described = {name: cls.description() for name, cls in registered_solvers().items()}
    return {"auto": AUTO_SUMMARY, **described}


def make_solver(solver: str | Solver, objective: Objective, budget_mb: float) -> Solver:
    """A new, unfitted solver from a name or a configured instance (whose settings are copied, so
    the instance itself is never fitted); "auto" is chosen by :func:`auto_solver`, and its reason
    is kept in ``diagnostics.extra["auto"]``."""
    if isinstance(solver, Solver):
        return solver.unfitted()
    if not isinstance(solver, str):
        raise TypeError(f"solver: expected a name or a Solver, got {type(solver).__name__}")
    reason = None
    if solver == "auto":
        solver, reason = auto_solver(objective, budget_mb)
    made = _named_solver(solver)
    if reason is not None:
        made.diagnostics.extra["auto"] = reason
    return made


def _named_solver(solver: str) -> Solver:
    """A solver of the registered class named ``solver``, with its default settings."""
    cls = registered_solvers().get(solver)
    if cls is None:
        raise ValueError(
            f"solver: unknown solver {solver!r}; use one of {', '.join(map(repr, solver_names()))}"
        )
    return cls()


def auto_solver(objective: Objective, budget_mb: float) -> tuple[str, str]:
    """What ``solver="auto"`` picks for theta of p parameters, and why.

    "direct" while H and its Cholesky factor (2 p^2 numbers, which live together during the
    factorisation) fit ``budget_mb``; beyond it "ekfac" when every parameter in ``params`` is a
    weight or bias of a Linear/Conv2d layer (a click is then two small products per layer, but
    the curvature is EK-FAC's approximation of the Gauss-Newton matrix, not H), else "cg" (exact
    H, iterative: one run of HVP passes per click).
    """
    p = objective.n_params
    itemsize = torch.empty((), dtype=objective.dtype).element_size()
    need_mb = 2 * p * p * itemsize / 2**20
    size = f"H (p={p:,}) needs {_megabytes(need_mb)}"
    if need_mb <= budget_mb:
        return "direct", f"direct: {size} <= hessian_budget_mb={budget_mb:g}"
    size = f"{size} > hessian_budget_mb={budget_mb:g}"
    gap = coverage_gap(objective)
    if gap is not None:
        return "cg", f"cg: {size}; {gap}"
    return "ekfac", (
        f"ekfac: {size}; all params in Linear/Conv2d layers; influence uses the EK-FAC "
        f"approximation of the Gauss-Newton matrix, not H"
    )


def _megabytes(mb: float) -> str:
    """A size in MB (2^20 bytes, the unit of ``hessian_budget_mb``), as 6.45 MB or 158,027 MB."""
    return f"{mb:,.0f} MB" if mb >= 100 else f"{mb:.3g} MB"
