"""Influence functions averaged over independently trained models (seeds).

For M models theta^1..theta^M trained on the same n points (other seeds, other initialisations),
each with its own ``Influence`` (the same options),

    scores(z_test)_i = (1/M) sum_m -(1/n) I_up,loss^m(z_i, z_test)
                     = (1/M) sum_m predicted_removal_effect^m(z_test)_i

the predicted change of the test loss when z_i is removed, averaged over the models: the spread
of influence over training seeds (Basu et al., ICLR 2021) averages out, as TRAK's ensembles do.
The training gradients include the L2 term and the test gradients do not, as in ``Influence``.
"""

from __future__ import annotations

import torch

from influence_widgets.core.influence import Influence
from influence_widgets.core.progress import progress_bar
from influence_widgets.methods.base import Attribution, check_models
from influence_widgets.methods.checkpoints import check_state_fits

__all__ = ["InfluenceEnsemble"]


class InfluenceEnsemble(Attribution):
    """``Influence`` averaged over models: see :mod:`influence_widgets.methods.ensemble`.

    Args:
        models: a list of trained models of one architecture (the first is the one explained:
            its predicted classes answer ``y_test=None``, for every member); never modified.
        train: the training set they were all trained on, in any form ``Influence`` takes.
        **options: keyword arguments of :class:`~influence_widgets.Influence` (``l2``,
            ``damping``, ``hessian``, ``solver``, ``params``, ``device``, ``progress``, ...),
            the same for every model. ``members`` holds the M Influence objects.
    """

    def __init__(self, models, train, **options) -> None:
        found = check_models(models)
        for i, model in enumerate(found[1:], start=1):
            check_state_fits(found[0], model.state_dict(), f"models[{i}]")
        self.members = [Influence(model, train, **options) for model in found]
        first = self.members[0]
        super().__init__(
            first.objective, first.train, batch_size=first.batch_size, progress=first.progress
        )

    def _fit(self) -> tuple[str, int, dict[str, object]]:
        bar = progress_bar(
            total=len(self.members), desc="influence ensemble", disable=not self.progress
        )
        for member in self.members:
            member.fit()
            bar.update()
        bar.close()
        first = self.members[0].diagnostics
        text = f"influence ensemble of {len(self.members)} models, each an {first.method}"
        details = {
            "dampings": [m.diagnostics.damping for m in self.members],
            "grad_norms": [m.diagnostics.grad_norm for m in self.members],
            "solver": first.solver.solver,
            "hessian": first.hessian,
        }
        return text, len(self.members), details

    def scores(self, x_test, y_test=None) -> torch.Tensor:
        """(1/M) sum_m ``members[m].predicted_removal_effect(x_test, y)``, (T, n); > 0: helpful.
        ``y_test=None``: y = the first model's predicted classes, for every member."""
        self.ensure_fit()
        labels = self.predicted_labels(x_test) if y_test is None else y_test
        total = sum(m.predicted_removal_effect(x_test, labels) for m in self.members)
        return total / len(self.members)

    def self_scores(self) -> torch.Tensor:
        """(1/M) sum_m ``members[m].self_scores()``, (n,), >= 0 for positive-definite H."""
        self.ensure_fit()
        return sum(m.self_scores() for m in self.members) / len(self.members)

    def __repr__(self) -> str:
        return (
            f"InfluenceEnsemble(models={len(self.members)}, n_train={self.n}, "
            f"n_params={self.p}, fitted={self._fitted})"
        )
