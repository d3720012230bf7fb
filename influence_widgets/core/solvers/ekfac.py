"""``solver="ekfac"``: the eigenvalue-corrected Kronecker-factored inverse of the Gauss-Newton
matrix; its factors, and why they are written here, are in
:mod:`influence_widgets.core.solvers.ekfac_factors`."""

from __future__ import annotations

import torch

from influence_widgets.core.errors import check_positive_int, not_positive_definite
from influence_widgets.core.hvp import HessianOperator
from influence_widgets.core.objective import Objective
from influence_widgets.core.solvers.base import Solver
from influence_widgets.core.solvers.ekfac_factors import (
    CORRECTION_CHUNK_ELEMENTS,
    apply_inverse,
    coverage_gap,
    covered_layers,
    factor_eigenvalues,
    fit_factors,
    set_shift,
)

__all__ = ["CORRECTION_CHUNK_ELEMENTS", "EKFAC", "coverage_gap", "covered_layers"]


class EKFAC(Solver):
    """X = (G_EK + (l2 + damping) I)^-1 B, with G_EK the EK-FAC approximation of the exact
    Gauss-Newton matrix of R (George et al. 2018, as Grosse et al. 2023 use it for influence).

    The data term of H is replaced by the exact generalised Gauss-Newton matrix
    G = (1/n) sum_i J_i^T Lambda_i J_i, with J_i the Jacobian of the model's output o_i and
    Lambda_i = Hess_o L(o_i, y_i) the loss's exact Hessian in the outputs (no label sampling, no
    empirical Fisher; negative eigenvalues of Lambda_i, which a convex loss does not have, are set
    to 0). Per layer, with a~_it the layer's input at position t (a 1 appended when its bias is in
    theta) and g_ict the gradient of o_i^T S_i[:, c] in the layer's pre-activation
    (Lambda_i = S_i S_i^T), the per-sample gradient matrices are D_ic = sum_t g_ict a~_it^T and

        A = E[a~ a~^T] = Q_A diag Q_A^T,   G_out = E[g g^T] = Q_G diag Q_G^T,
        s_kj = (1/n) sum_i sum_c ((Q_G^T D_ic Q_A)_kj)^2,
        G_layer ~ (Q_G kron Q_A) diag(s) (Q_G kron Q_A)^T,

    block-diagonal across layers. The solve is exact for that matrix plus (l2 + damping) I:
    X = Q_G [(Q_G^T B Q_A) / (s + l2 + damping)] Q_A^T per layer. Exact (equal to H) for a
    single Linear layer under mse, whose G is I kron E[a~ a~^T].

    Covers ``nn.Linear`` and ``nn.Conv2d`` (zero padding, groups=1) whose weight and/or bias are
    in ``params``; any other parameter raises a ValueError naming ``params``. ``fit`` streams twice
    over the training set in batches of ``batch_size`` (default: the Influence's), with one
    backward pass per output dimension; a click is then two small matrix products per layer.
    ``diagnostics`` gives the extreme eigenvalues of the approximation (s + l2 + damping), not of
    H: the approximation's distance from H is not measured.

    Always the Gauss-Newton matrix (``curvature``): ``hessian="exact"``, the ``Influence``
    default, does not apply to it, and ``diagnostics.hessian`` says "gauss-newton" (an error
    instead would break every ``solver="ekfac"`` written without ``hessian=``, and
    ``solver="auto"`` picks EK-FAC beyond the memory budget). ``damping="auto"`` takes its rung
    from the approximation's exact smallest eigenvalue, min(s) + l2: 0 whenever l2 > 0.
    """

    name = "ekfac"
    summary = "EK-FAC approximation of the Gauss-Newton matrix (Linear/Conv2d layers only)"
    curvature = "gauss-newton"  # whatever hessian= says: see the class docstring
    chooses_damping = True  # from its own eigenvalues, exact for the approximation

    def __init__(self, batch_size: int | None = None) -> None:
        super().__init__()
        self.batch_size = (
            None if batch_size is None else check_positive_int(batch_size, "batch_size")
        )

    def settings(self) -> dict[str, object]:
        return {"batch_size": self.batch_size}

    def check(self, objective: Objective) -> None:
        """A ValueError naming ``params`` for a parameter outside a covered layer."""
        covered_layers(objective)

    def _fit(self, op: HessianOperator, progress: bool) -> None:
        self.layers = fit_factors(op, self.batch_size or op.batch_size, progress)
        self.shift = op.objective.l2 + op.damping
        eigs = factor_eigenvalues(self.layers, op.train.n) + self.shift
        if op.auto_damping:
            damping = self.choose_damping(op, float(eigs.min()), exact=True)
            self.shift, eigs = self.shift + damping, eigs + damping
        d = self.diagnostics
        d.min_eigenvalue, d.max_eigenvalue = float(eigs.min()), float(eigs.max())
        if d.min_eigenvalue <= 0:
            raise not_positive_definite(d.min_eigenvalue, op.damping, self.name)
        set_shift(self.layers, op.train.n, self.shift)
        d.converged, d.iterations, d.residual = True, 0, None
        d.extra["curvature"] = "exact Gauss-Newton, eigenvalue-corrected Kronecker factors"
        d.extra["layers"] = {layer.name: layer.kind for layer in self.layers}

    def solve(self, B: torch.Tensor, progress: bool = False) -> torch.Tensor:
        return apply_inverse(self.layers, B)
