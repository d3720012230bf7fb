"""Captum (``captum.influence``): NaiveInfluenceFunction with its default projection
(projection_dim = 50) and without it (projection_dim = p, its exact path), and
ArnoldiInfluenceFunction at the cases' rank.

Regularisation: Captum's loss has no L2 term, so the L2 and the damping go into its Hessian
regularisation: ``hessian_reg = n (l2 + damping)`` (added to the diagonal of its summed-loss
Hessian: the loss is ``CrossEntropyLoss(reduction="none")``, which Captum requires and sums;
Captum adds it through a float32 identity, so its H is off by ~1e-7 relative). Everything else is
its documented default, recorded per row (``settings``, and the installed constructor's defaults
in ``constructor_defaults``). It scores with ``influence((x_test, y_test))``.

Normalisation: -n x ``influence(...)`` (grad L_test^T H_sum^-1 grad L(z) with H_sum = n H).
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Adapter, Problem, data_loader, register


class Captum(Adapter):
    name = "captum"
    title = "Captum"
    distribution = "captum"
    module = "captum.influence"
    normalisation = (
        "-n * influence((x_test, y_test)): Captum's score is grad L(z_test)^T H_sum^-1 "
        "grad L(z) with H_sum the Hessian of the summed per-example losses (n * the mean); "
        "hessian_reg = n * (l2 + damping) makes H_sum + hessian_reg I = n * our H"
    )
    labels = {
        "naive": "NaiveInfluenceFunction (its default projection)",
        "naive_no_projection": "NaiveInfluenceFunction without projection",
        "arnoldi": "ArnoldiInfluenceFunction (rank {rank})",
    }

    def regularisation(self, l2: float, damping: float, n: int) -> float:
        return float(n * (l2 + damping))

    def settings(self, solver: str, problem: Problem) -> dict[str, Any]:
        base = {
            "loss_fn": "torch.nn.CrossEntropyLoss(reduction='none')",
            "hessian_reg": self.regularisation(problem.l2, problem.damping, problem.n),
            "dataloader_batch_size": problem.batch_size,
            "scoring": "influence((x_test, y_test))",
        }
        if solver == "naive":
            return {"class": "NaiveInfluenceFunction", **base}  # projection_dim: its default
        if solver == "naive_no_projection":
            return {"class": "NaiveInfluenceFunction", **base, "projection_dim": problem.p}
        if solver == "arnoldi":
            return {"class": "ArnoldiInfluenceFunction", **base, "projection_dim": problem.rank}
        raise self.no_solver(solver)

    def run(self, model, X, y, Xt, yt, solver, settings, *, checkpoint=None, workdir=None):
        """Timed: construction on the DataLoader and the saved model (``checkpoint``), then
        ``influence``. The state is the class, for its defaults."""
        from captum.influence import NaiveInfluenceFunction

        # captum 0.9 does not export ArnoldiInfluenceFunction from captum.influence
        from captum.influence._core.arnoldi_influence_function import ArnoldiInfluenceFunction

        if solver not in self.labels:
            raise self.no_solver(solver)
        cls = ArnoldiInfluenceFunction if solver == "arnoldi" else NaiveInfluenceFunction
        kwargs: dict[str, Any] = {"hessian_reg": float(settings["hessian_reg"])}
        if "projection_dim" in settings:
            kwargs["projection_dim"] = int(settings["projection_dim"])
        inst = cls(
            model,
            data_loader(X, y, settings["dataloader_batch_size"]),
            checkpoint=checkpoint,
            loss_fn=torch.nn.CrossEntropyLoss(reduction="none"),
            **kwargs,
        )
        return inst.influence((Xt, yt)), cls

    def normalise(self, raw, *, n_train, l2, s_dot_theta=None):
        return -float(n_train) * raw


register(Captum())
