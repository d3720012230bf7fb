"""TRAK (Park et al., ICML 2023): projected output gradients, a projected Gauss-Newton inverse,
an ensemble over models. Plain PyTorch, streamed in batches.

For each of M models (independently trained, or checkpoints) theta^m and each point z = (x, y),
with f the margin log p(y|x) - log(1 - p(y|x)) (the model output TRAK and dattri use) and P_m a
seeded random p x k projection (:mod:`.projection`):

    phi_m(z) = P_m^T grad_theta f(z, theta^m)                (k,)   Phi_m = [phi_m(z_i)]_i (n, k)
    q_m(z)   = 1 - p(y | x, theta^m)                                Q_m = diag(q_m(z_i))
    K_m      = Phi_m^T W_m Phi_m + damping I                 (k, k)
    tau_m(z_test)_i = q_m(z_test) phi_m(z_test)^T K_m^-1 phi_m(z_i) q_m(z_i)
    scores = (1/M) sum_m tau_m                                (T, n)

``curvature="trak"`` (the paper's): W = I; ``"gauss-newton"``: W = R_m = diag(p_i (1 - p_i)),
which makes Phi^T R Phi the Gauss-Newton matrix of the cross-entropy as a function of the margin.

``ensemble="removal-effect"`` (the default) averages each model's tau_m whole, as above;
``ensemble="paper"`` averages the kernel terms and the weights apart, as Park et al.'s
Algorithm 1 (and dattri) do:

    scores(z_test)_i = qbar(z_test) [(1/M) sum_m phi_m(z_test)^T K_m^-1 phi_m(z_i)] qbar(z_i),
    qbar(z) = (1/M) sum_m q_m(z)

(the paper attributes the margin, without qbar(z_test); that positive factor per test point
leaves its ranking, and its LDS, as they are). With one model the two are the same.

Why this is a removal effect on the test loss. The cross-entropy is L = log(1 + exp(-f)), so
grad L = -(1 - p) grad f and its second derivative in f is p (1 - p). With the Gauss-Newton
matrix of the risk in the margin, G_f = (1/n) Phi^T R Phi (P = I), one Newton step predicts that
removing z_i moves theta by (1/n) (G_f + d I)^-1 grad L(z_i), which changes the test loss by
(1/n) grad L(z_test)^T (G_f + d I)^-1 grad L(z_i)
= q(z_test) phi(z_test)^T (Phi^T R Phi + n d I)^-1 phi(z_i) q(z_i): tau with W = R and
damping = n d. So with ``projection="identity"``, ``curvature="gauss-newton"`` and one model,
``scores`` equals ``Influence(model, train, hessian="gauss-newton", l2=0, damping=d)
.predicted_removal_effect`` for a two-class softmax model (where the Gauss-Newton matrix of the
softmax cross-entropy is exactly G_f), and the same formula with G_f for more classes. The sign
is the contract's: > 0, removing z_i would raise the test loss (z_i helped). The paper's
attribution is of the margin, phi_test^T K^-1 phi_i q_i; ours is that times q(z_test) > 0 (the
chain rule to the loss), which leaves each test point's ranking as it is. The paper (and dattri)
average the kernel terms and the weights Q_m over models separately; here each model's tau_m, a
removal effect of its own, is averaged whole (with one model the two are the same);
``ensemble="paper"`` averages as they do.

Memory: ``memory_mb`` bounds what fitting and scoring hold besides the result: half for a batch
of per-example gradients (B x p numbers, and their copy in the projection's float32), half for
the projection matrices (all M kept when they fit, else generated in chunks at each use: at least
one block of BLOCK_ROWS = 1024 rows, :mod:`.projection`; while model m is fitted, its P_m alone
is kept when it fits). The
result is, per model, L_m (the Cholesky factor of K_m, k x k, float64) and Phi_m^T Q_m (k x n;
Phi_m^T with ``ensemble="paper"``, and qbar (n,));
while one model is fitted also its Phi_m (n x k) and K_m. Scoring T test points solves with L_m
for their k x T features (k^2 T), so a click costs no solve over the training set.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from influence_widgets.core.errors import (
    NotPositiveDefiniteError,
    check_nonnegative,
    check_positive_int,
    check_seed,
    suggest_damping,
)
from influence_widgets.core.linalg import cholesky_solve
from influence_widgets.methods.base import Attribution, check_models, objectives_of
from influence_widgets.methods.checkpoints import CheckpointRecorder, model_at
from influence_widgets.methods.per_sample import cast_batches, margin_gradients
from influence_widgets.methods.projection import PROJECTIONS, Projection, projection_dtype

__all__ = ["CURVATURES", "ENSEMBLES", "TRAK"]

CURVATURES = ("trak", "gauss-newton")
ENSEMBLES = ("removal-effect", "paper")
DEFAULT_PROJECTION_DIM = 2048  # the TRAK paper's k for its image classifiers


def _models_of(models) -> tuple[list[torch.nn.Module], int]:
    """(the models, the index of the explained one): a recorder's checkpoints as models, the
    last explained; else :func:`check_models`, the first explained."""
    if isinstance(models, CheckpointRecorder):
        if not len(models):
            raise ValueError(
                "models: the CheckpointRecorder holds no checkpoint; call rec.save(lr=...) "
                "while training, or pass the trained models"
            )
        built = [model_at(models.model, c.state, f"models[{i}]") for i, c in enumerate(models)]
        return built, len(built) - 1
    return check_models(models), 0


class TRAK(Attribution):
    """TRAK attribution, ensembled over models (see :mod:`influence_widgets.methods.trak`).

    Args:
        models: a trained classifier, a list of them (the same architecture, e.g. trained with
            other seeds: the first is the one explained, whose predicted classes answer
            ``y_test=None``), or a :class:`~influence_widgets.CheckpointRecorder` (its
            checkpoints; the last is explained). Never modified.
        train: the training set, in any form ``Influence`` takes; class labels
            (the loss is the cross-entropy).
        projection_dim: k, the projected dimension; default min(2048, p). At most p, the number
            of parameters: more adds no information and leaves K singular.
        projection: "gaussian" (default), "rademacher", or "identity" (k = p, no projection:
            the exact gradients, for small models and for checking).
        damping: added to K's diagonal (>= 0). TRAK's default is 0; K is then singular when
            k > n, which is an error here that names the fix.
        curvature: "trak" (the paper's Phi^T Phi) or "gauss-newton" (Phi^T R Phi).
        ensemble: how several models' scores are averaged: "removal-effect" (each model's
            predicted removal effect, whole) or "paper" (the kernel terms and the weights
            1 - p apart, as Park et al. and dattri); the same for one model.
        seed: seeds every model's projection (model m gets its own P_m).
        params: names of the parameters to take gradients in (default all trainable).
        batch_size: training points per batch; default the most whose per-example gradients
            fit half of ``memory_mb`` (at most n, at most 1024).
        memory_mb: the memory budget described in the module docstring.
        device: where to compute (default the first model's); results lie there.
        progress: show progress bars.
    """

    def __init__(
        self,
        models,
        train,
        *,
        projection_dim: int | None = None,
        projection: str = "gaussian",
        damping: float = 0.0,
        curvature: str = "trak",
        ensemble: str = "removal-effect",
        seed: int = 0,
        params: Sequence[str] | None = None,
        batch_size: int | None = None,
        memory_mb: float = 1024,
        device: str | torch.device | None = None,
        progress: bool = True,
    ) -> None:
        found, explained = _models_of(models)
        if projection not in PROJECTIONS:
            raise ValueError(f"projection: expected one of {PROJECTIONS}, got {projection!r}")
        if curvature not in CURVATURES:
            raise ValueError(f"curvature: expected one of {CURVATURES}, got {curvature!r}")
        if ensemble not in ENSEMBLES:
            raise ValueError(f"ensemble: expected one of {ENSEMBLES}, got {ensemble!r}")
        self.ensemble = ensemble
        self.damping = check_nonnegative(damping, "damping")
        self.seed = check_seed(seed)
        self.memory_mb = check_nonnegative(memory_mb, "memory_mb")
        if self.memory_mb == 0:
            raise ValueError("memory_mb: must be > 0 (a budget in MB, e.g. memory_mb=1024)")
        self.objectives = objectives_of(
            found, loss="cross_entropy", params=params, device=device, name="models"
        )
        obj = self.objectives[explained]
        p = obj.n_params
        super().__init__(obj, train, batch_size=batch_size, progress=progress)
        if batch_size is None:  # half the budget for a batch of per-example gradients (B x p)
            # and, for a random projection, their copy in the projection's dtype
            copy = torch.empty((), dtype=projection_dtype(obj.dtype)).element_size()
            per_row = obj.theta.element_size() + (0 if projection == "identity" else copy)
            fits = int(self.memory_mb * 2**19 // (p * per_row))
            self.batch_size = max(1, min(self.batch_size, fits))
        self.projection = projection
        self.curvature = curvature
        self.k = self._projection_dim(projection_dim)
        if self.damping == 0 and self.k > self.n:
            raise ValueError(
                f"damping: 0 with projection_dim k = {self.k} > n = {self.n} training points: "
                f"the kernel Phi^T Phi has rank at most n and no inverse; pass damping > 0 or "
                f"projection_dim <= {self.n}"
            )
        self.projections = [
            self._projection(m, self.memory_mb / 2 / len(self.objectives))
            for m in range(len(self.objectives))
        ]
        # per model: the Cholesky factor L_m of K_m (k, k, float64) and Phi_m^T Q_m (k, n), or
        # Phi_m^T with ensemble="paper", which keeps qbar, the mean of the q_m (n,)
        self._factors: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._qbar: torch.Tensor | None = None
        self._self_scores: torch.Tensor | None = None

    def _projection(self, m: int, budget_mb: float) -> Projection:
        """Model m's projection P_m, kept whole when it fits ``budget_mb``: the same numbers
        whatever the budget (:mod:`.projection`)."""
        obj = self.objectives[m]
        return Projection(
            self.projection,
            self.p,
            self.k,
            seed=self.seed,
            model=m,
            dtype=projection_dtype(obj.dtype),
            device=obj.device,
            budget_mb=budget_mb,
        )

    def _projection_dim(self, projection_dim) -> int:
        p = self.p
        if self.projection == "identity":
            if projection_dim is not None and projection_dim != p:
                raise ValueError(
                    f"projection_dim: projection='identity' keeps all p = {p} dimensions; "
                    "leave projection_dim out (or pass a random projection)"
                )
            return p
        if projection_dim is None:
            return min(DEFAULT_PROJECTION_DIM, p)
        k = check_positive_int(projection_dim, "projection_dim")
        if k > p:
            raise ValueError(
                f"projection_dim: k = {k} exceeds the p = {p} parameters the gradients have: "
                f"projecting to more dimensions adds no information and leaves the kernel "
                f"singular; pass projection_dim <= {p}, or projection='identity' for the exact "
                "gradients"
            )
        return k

    # ----- features -------------------------------------------------------------------------
    def _project(
        self, m: int, x: torch.Tensor, y: torch.Tensor, projection: Projection | None = None
    ) -> tuple:
        """(phi_m (B, k), q_m (B,), p_m (B,)) for a cast batch (``projection``: P_m as another
        :class:`Projection` holds it, default ``projections[m]``)."""
        obj = self.objectives[m]
        x = obj.cast_inputs(x)
        project = projection or self.projections[m]
        phi, margin = margin_gradients(obj, x, y)
        # p(y|x) = sigmoid(f) (losses.class_margin); 1 - p = sigmoid(-f) without cancellation
        return project(phi), torch.sigmoid(-margin), torch.sigmoid(margin)

    def _kernel_factor(self, m: int, Phi: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
        """The lower Cholesky factor of K_m = Phi^T W Phi + damping I, in float64."""
        K = torch.zeros(self.k, self.k, dtype=torch.float64, device=Phi.device)
        for start in range(0, self.n, self.batch_size):
            rows = Phi[start : start + self.batch_size].double()
            w = prob[start : start + self.batch_size].double()
            weighted = rows if self.curvature == "trak" else rows * (w * (1 - w))[:, None]
            K.addmm_(weighted.T, rows)
        K.diagonal().add_(self.damping)
        L, info = torch.linalg.cholesky_ex(K)
        if int(info) != 0:
            smallest = float(torch.linalg.eigvalsh(K)[0])
            fix = suggest_damping(smallest, self.damping)
            raise NotPositiveDefiniteError(
                f"damping: the TRAK kernel Phi^T W Phi + {self.damping:g} I of models[{m}] is "
                f"not positive definite (smallest eigenvalue {smallest:.3g}; k = {self.k}, "
                f"n = {self.n}); pass damping={fix:.2g} or more, or a smaller projection_dim"
            )
        return L

    def _fit(self) -> tuple[str, int, dict[str, object]]:
        factors = []
        paper = self.ensemble == "paper"
        qbar = torch.zeros(self.n, dtype=self.objective.dtype, device=self.device)
        for m, obj in enumerate(self.objectives):
            Phi = torch.empty(self.n, self.k, dtype=obj.dtype, device=obj.device)
            q = torch.empty(self.n, dtype=obj.dtype, device=obj.device)
            prob = torch.empty_like(q)
            desc = "TRAK features" + (f" (model {m + 1})" if len(self.objectives) > 1 else "")
            # While model m is fitted, P_m may use the whole projection half of the budget
            # (unless the P_m kept for scoring is whole already).
            whole = self.projections[m]
            if whole.kept is None and whole.kind != "identity":
                whole = self._projection(m, self.memory_mb / 2)
            for x, y, sl in cast_batches(obj, self.train, self.batch_size, desc, self.progress):
                Phi[sl], q[sl], prob[sl] = self._project(m, x, y, whole)
            del whole
            # Kept: L_m and Phi_m^T Q_m, not K_m^-1 Phi_m^T Q_m: a solve with the T test
            # points' features at scoring costs k^2 T, one with the n training points' here
            # k^2 n (and T is a click's one point, or a page).
            weighted = Phi if paper else Phi * q[:, None]
            factors.append((self._kernel_factor(m, Phi, prob), weighted.T.contiguous()))
            if paper:
                qbar += q.to(qbar.device)
        self._factors = factors
        self._qbar = qbar / len(self.objectives) if paper else None
        self._self_scores = None
        kernel = "Phi^T Phi" if self.curvature == "trak" else "Phi^T R Phi"
        text = (
            f"TRAK: {len(self.objectives)} model(s), {self.projection} projection to k = "
            f"{self.k} of p = {self.p}, kernel {kernel} + {self.damping:g} I, margin gradients"
        )
        if paper and len(self.objectives) > 1:
            text += ", kernel terms and weights averaged apart (the paper's ensemble)"
        details = {
            "projection": self.projection,
            "projection_dim": self.k,
            "curvature": self.curvature,
            "ensemble": self.ensemble,
            "damping": self.damping,
            "seed": self.seed,
            "batch_size": self.batch_size,
        }
        return text, len(self.objectives), details

    # ----- the contract ---------------------------------------------------------------------
    def scores(self, x_test, y_test=None) -> torch.Tensor:
        """(1/M) sum_m q_m(z_test) phi_m(z_test)^T K_m^-1 Phi_m^T Q_m, (T, n): the predicted rise
        of the test loss when z_i is removed (> 0: helpful; ``ensemble="paper"``: qbar_test
        [(1/M) sum_m phi_m(z_test)^T K_m^-1 Phi_m^T] diag(qbar)); see the module docstring.
        ``y_test=None``: the explained model's predicted classes."""
        self.ensure_fit()
        x, y = self.test_points(x_test, y_test)
        out = torch.zeros(len(x), self.n, dtype=self.objective.dtype, device=self.device)
        q_test = torch.zeros(len(x), dtype=self.objective.dtype, device=self.device)
        for m, (L, B) in enumerate(self._factors):
            phi, q, _ = self._project(m, x, y)
            solved = cholesky_solve(L, phi.double().T).to(B.dtype)  # K_m^-1 phi_test^T, (k, T)
            if self._qbar is None:
                out += q[:, None] * (solved.T @ B)
            else:  # the paper's: sum the kernel terms, weigh by the mean q's at the end
                out += solved.T @ B
                q_test += q
        out /= len(self.objectives)
        if self._qbar is not None:
            out *= (q_test / len(self.objectives))[:, None] * self._qbar[None, :]
        return out

    def self_scores(self) -> torch.Tensor:
        """(1/M) sum_m q_m(z_i)^2 phi_m(z_i)^T K_m^-1 phi_m(z_i), (n,), >= 0 (``ensemble=
        "paper"``: qbar_i^2 (1/M) sum_m phi_m(z_i)^T K_m^-1 phi_m(z_i)): each training point's
        :meth:`scores` for itself (large for points fitted against the rest: check their labels
        first)."""
        self.ensure_fit()
        if self._self_scores is None:  # ||L_m^-1 Phi_m^T Q_m e_i||^2, in batches of columns
            selfs = torch.zeros(self.n, dtype=torch.float64, device=self.device)
            for L, B in self._factors:
                for start in range(0, self.n, self.batch_size):
                    cols = B[:, start : start + self.batch_size].double()
                    half = torch.linalg.solve_triangular(L, cols, upper=False)
                    selfs[start : start + self.batch_size] += half.pow(2).sum(0)
            selfs /= len(self.objectives)
            if self._qbar is not None:  # the paper's: qbar_i^2 times the mean kernel term
                selfs *= self._qbar.double().pow(2)
            self._self_scores = selfs.to(self.objective.dtype)
        return self._self_scores.clone()

    def __repr__(self) -> str:
        return (
            f"TRAK(n_train={self.n}, n_params={self.p}, models={len(self.objectives)}, "
            f"projection={self.projection!r}, projection_dim={self.k}, "
            f"damping={self.damping:g}, curvature={self.curvature!r}, ensemble={self.ensemble!r}, "
            f"fitted={self._fitted})"
        )
