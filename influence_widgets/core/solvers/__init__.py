"""Inverse-HVP solvers: x = (H + damping I)^-1 b for several right-hand sides b at once.

One module per solver, each a :class:`~influence_widgets.core.solvers.base.Solver` subclass that
registers itself by its ``name`` when it is defined: ``direct`` (Cholesky), ``cg`` (block
conjugate gradient), ``lissa`` (the paper's recursion), ``arnoldi`` (low rank), ``ekfac``
(EK-FAC of the Gauss-Newton matrix); ``choice`` holds ``"auto"`` and :func:`make_solver`, and
``spectrum`` the eigenvalue estimates that several solvers share.

To add a solver: subclass ``Solver`` in a new module here with ``name = "..."``, a one-line
docstring summary (or ``summary``), ``settings``, ``_fit`` and ``solve``, and import its module
below. ``solver="..."``, the magic's ``--solver``, the error for an unknown name,
:func:`available_solvers` and this package's ``__all__`` read the registry.
"""

# isort: off
# The order of these imports is the order the solvers are listed in (registration order);
# a solver class is re-exported as `X as X` and listed in __all__ from the registry.
from influence_widgets.core.solvers.base import (
    Solver,
    SolverDiagnostics,
    registered_solvers,
    unregister_solver,
)
from influence_widgets.core.solvers.direct import EXACT_EIGENVALUES_UP_TO, factor_dtype
from influence_widgets.core.solvers.direct import Direct as Direct
from influence_widgets.core.solvers.cg import DIVERGED, ROUNDOFF
from influence_widgets.core.solvers.cg import ConjugateGradient as ConjugateGradient
from influence_widgets.core.solvers.lissa import LiSSA as LiSSA
from influence_widgets.core.solvers.arnoldi import Arnoldi as Arnoldi
from influence_widgets.core.solvers.ekfac import EKFAC as EKFAC
from influence_widgets.core.solvers.choice import (
    AUTO_SUMMARY,
    auto_solver,
    available_solvers,
    make_solver,
    solver_names,
)

# isort: on
from influence_widgets.core.errors import NotPositiveDefiniteError
from influence_widgets.core.solvers.spectrum import lanczos, power_iteration, smallest_eigenvalue

__all__ = [
    "AUTO_SUMMARY",
    "DIVERGED",
    "EXACT_EIGENVALUES_UP_TO",
    "NotPositiveDefiniteError",
    "ROUNDOFF",
    "Solver",
    "SolverDiagnostics",
    "auto_solver",
    "available_solvers",
    "factor_dtype",
    "lanczos",
    "make_solver",
    "power_iteration",
    "registered_solvers",
    "smallest_eigenvalue",
    "solver_names",
    "unregister_solver",
    # the solver classes, by their registered names
    *(cls.__name__ for cls in registered_solvers().values()),
]
