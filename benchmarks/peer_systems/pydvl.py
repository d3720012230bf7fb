"""pyDVL (``pydvl.influence.torch``): DirectInfluence, CgInfluence, LissaInfluence and
ArnoldiInfluence.

Regularisation: pyDVL's loss has no L2 term, so the L2 and the damping go into its Hessian
regularisation: ``regularization = l2 + damping`` (added to the diagonal of its mean-loss
Hessian). Everything else is its documented default, recorded per row (``settings``, and the
installed constructor's defaults in ``constructor_defaults``). DataLoader batches divide n evenly
(:func:`.cases.equal_batch`): pyDVL's CG, LiSSA and Arnoldi average batch Hessians without
weighting by batch size, so unequal batches would change their H; its LiSSA takes one batch per
iteration. It scores with ``influence_factors(x_test, y_test)`` then ``influences_from_factors``
per training batch (its documented way to avoid an n x p gradient matrix),
``mode=InfluenceMode.Up``.

Normalisation: -1 x ``influences(..., mode=InfluenceMode.Up)`` (documented as
+grad L_test^T H^-1 grad L(z), H the mean-loss Hessian).
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Adapter, Problem, data_loader, register

CLASSES = {
    "direct": "DirectInfluence",
    "cg": "CgInfluence",
    "lissa": "LissaInfluence",
    "arnoldi": "ArnoldiInfluence",
}


class PyDVL(Adapter):
    name = "pydvl"
    title = "pyDVL"
    distribution = "pyDVL"
    module = "pydvl.influence.torch"
    normalisation = (
        "-1 * influences(x_test, y_test, x, y, mode=InfluenceMode.Up): pyDVL documents "
        "I_up = +grad L(z_test)^T H^-1 grad L(z) with H the Hessian of the mean loss, the opposite "
        "sign to our I_up,loss; regularization = l2 + damping makes its H equal ours"
    )
    labels = {
        "direct": "Direct",
        "cg": "Cg",
        "lissa": "Lissa",
        "arnoldi": "Arnoldi (rank {rank})",
    }

    def regularisation(self, l2: float, damping: float, n: int) -> float:
        return float(l2 + damping)

    def settings(self, solver: str, problem: Problem) -> dict[str, Any]:
        if solver not in CLASSES:
            raise self.no_solver(solver)
        out = {
            "class": CLASSES[solver],
            "loss": "torch.nn.functional.cross_entropy (mean reduction)",
            "regularization": self.regularisation(problem.l2, problem.damping, problem.n),
            "dataloader_batch_size": problem.batch_size,
            "scoring": "influence_factors(x_test, y_test), then influences_from_factors"
            " per training batch, mode=InfluenceMode.Up",
        }
        if solver == "arnoldi":
            out["rank"] = problem.rank
        return out

    def run(self, model, X, y, Xt, yt, solver, settings, *, checkpoint=None, workdir=None):
        """Timed: fit on the DataLoader, the test points' factors, then their influences on
        every training batch. The state is the class, for its defaults."""
        from pydvl.influence import InfluenceMode
        from pydvl.influence import torch as pydvl_torch

        s = settings
        cls = getattr(pydvl_torch, CLASSES[solver])
        kwargs: dict[str, Any] = {"regularization": float(s["regularization"])}
        if solver == "arnoldi":
            kwargs["rank"] = int(s["rank"])
        if "maxiter" in s:  # only the untimed warm-up shortens the iterations
            kwargs["maxiter"] = int(s["maxiter"])
        loader = data_loader(X, y, s["dataloader_batch_size"])
        inf = cls(model, torch.nn.functional.cross_entropy, **kwargs).fit(loader)
        factors = inf.influence_factors(Xt, yt)
        b = s["dataloader_batch_size"]
        parts = [
            inf.influences_from_factors(factors, X[i : i + b], y[i : i + b], mode=InfluenceMode.Up)
            for i in range(0, len(X), b)
        ]
        return torch.cat(parts, dim=1), cls

    def normalise(self, raw, *, n_train, l2, s_dot_theta=None):
        return -raw

    def warm_up_settings(self, solver, settings, timed):
        if solver in ("cg", "lissa"):
            settings["maxiter"] = 5
        return settings


register(PyDVL())
