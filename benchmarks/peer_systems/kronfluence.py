"""Kronfluence (``kronfluence.analyzer``): its EK-FAC, against ours (cases 2 and 4).

Strategy ``"ekfac"``: its Task's training loss is the cross-entropy summed over the batch
(per-sample gradients are then those of L(z_i)), its measurement the test cross-entropy, likewise
summed. It fits ``fit_all_factors`` then ``compute_pairwise_scores`` (all test points in one query
batch) and reads the scores back, all timed, writing its files under the child's temporary
directory. Its curvature is an EK-FAC of the Fisher of the mean loss with labels SAMPLED from the
model's softmax (``use_empirical_fisher=False``, its default, is the only true-Fisher option it
has: one sampled label per training point in each of its two passes, seeded with
``torch.manual_seed(0)``), where ours takes the exact expectation over labels (for the
cross-entropy, the Gauss-Newton matrix); its eigenvalue corrections are divided by the number of
points and ``damping_factor`` is added to them, so ``damping_factor = l2 + damping`` matches our
(G + (l2 + damping) I). Every ``*_dtype`` argument is set to float64 (its defaults are float32
except the eigendecomposition's); ``cpu=True`` (``cpu=False`` with ``--device cuda``: it then
computes on the current CUDA device, which the child sets to the one named), no Accelerate
launcher.

Normalisation: -1 x its pairwise scores (+grad L_test^T (G_EK + damping_factor I)^-1 grad L(z_i),
positive for a training point that lowers the test loss; G_EK of the mean loss).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

from .base import Adapter, Problem, constructor_defaults, register


def cross_entropy_task():
    """Kronfluence's Task: L = the cross-entropy summed over the batch; labels drawn from the
    model's softmax when Kronfluence asks for a sample (its true-Fisher passes)."""
    from kronfluence.task import Task

    class CrossEntropyTask(Task):
        def compute_train_loss(self, batch, model: nn.Module, sample: bool = False):
            inputs, labels = batch
            logits = model(inputs)
            if sample:
                with torch.no_grad():
                    probs = torch.softmax(logits.detach(), dim=-1)
                    labels = torch.multinomial(probs, num_samples=1).squeeze(-1)
            return torch.nn.functional.cross_entropy(logits, labels, reduction="sum")

        def compute_measurement(self, batch, model: nn.Module):
            inputs, labels = batch
            return torch.nn.functional.cross_entropy(model(inputs), labels, reduction="sum")

    return CrossEntropyTask()


def arguments(s: dict[str, Any]):
    """(FactorArguments, ScoreArguments) of a row's settings, every dtype float64."""
    from kronfluence.arguments import FactorArguments, ScoreArguments

    f64 = torch.float64
    factor_args = FactorArguments(
        strategy="ekfac",
        use_empirical_fisher=bool(s["use_empirical_fisher"]),
        activation_covariance_dtype=f64,
        gradient_covariance_dtype=f64,
        eigendecomposition_dtype=f64,
        per_sample_gradient_dtype=f64,
        lambda_dtype=f64,
    )
    score_args = ScoreArguments(
        damping_factor=float(s["damping_factor"]),
        query_gradient_svd_dtype=f64,
        per_sample_gradient_dtype=f64,
        precondition_dtype=f64,
        score_dtype=f64,
    )
    return factor_args, score_args


class Kronfluence(Adapter):
    name = "kronfluence"
    title = "Kronfluence"
    distribution = "kronfluence"
    module = "kronfluence.analyzer"
    normalisation = (
        "-1 * its pairwise scores: +grad L(z_test)^T (G_EK + damping_factor I)^-1 "
        "grad L(z_i), G_EK its EK-FAC of the mean loss's Fisher (sampled labels), per-sample "
        "gradients of the summed loss; damping_factor = l2 + damping matches our (G + (l2 + "
        "damping) I)"
    )
    labels = {"ekfac": "EK-FAC (sampled-label Fisher)"}

    def regularisation(self, l2: float, damping: float, n: int) -> float:
        return float(l2 + damping)

    def settings(self, solver: str, problem: Problem) -> dict[str, Any]:
        if solver != "ekfac":
            raise self.no_solver(solver)
        on_cpu = torch.device(problem.device).type == "cpu"
        return {
            "class": f"Analyzer(cpu={on_cpu}, disable_tqdm=True), "
            "output_dir: the child's temporary directory",
            "strategy": "ekfac",
            "use_empirical_fisher": False,
            "curvature": "true Fisher with sampled labels: one label per training point drawn "
            "from the model's softmax in each of its two passes (covariances, eigenvalue "
            "corrections), torch.manual_seed(0); ours takes the exact expectation over labels",
            "damping_factor": self.regularisation(problem.l2, problem.damping, problem.n),
            "dtype": "float64: every *_dtype argument of FactorArguments and ScoreArguments "
            "(its defaults are float32 except eigendecomposition_dtype)",
            "train_loss": "cross_entropy(reduction='sum') on the batch's labels (sampled labels "
            "for the factors)",
            "measurement": "cross_entropy(reduction='sum') on the test points",
            "per_device_batch_size": problem.batch_size,
            "per_device_train_batch_size": problem.batch_size,
            "per_device_query_batch_size": "all test points",
            "scoring": "fit_all_factors, compute_pairwise_scores, load_pairwise_scores"
            "['all_modules']",
        }

    def run(self, model, X, y, Xt, yt, solver, settings, *, checkpoint=None, workdir=None):
        """Timed: its EK-FAC factors, its pairwise scores (T, n) and reading them back, on a
        copy of ``model`` (its ``prepare_model`` wraps the layers in place and freezes them), on
        the model's device, its files under ``workdir``. The state is its two argument classes,
        for their defaults."""
        from kronfluence.analyzer import Analyzer, prepare_model
        from torch.utils.data import TensorDataset

        if solver != "ekfac":
            raise ValueError(f"kronfluence: unknown solver {solver!r}")
        factor_args, score_args = arguments(settings)
        torch.manual_seed(0)  # the sampled labels
        task = cross_entropy_task()
        # Kronfluence wraps a model's child modules: a model that is itself one Linear layer
        # (case 1's logistic regression, the warm-up) goes inside a Sequential, which computes
        # the same function.
        tracked = prepare_model(nn.Sequential(copy.deepcopy(model)), task)
        analyzer = Analyzer(
            "peers",
            tracked,
            task,
            cpu=next(model.parameters()).device.type == "cpu",
            log_level=logging.WARNING,
            disable_tqdm=True,
            output_dir=str(workdir),
        )
        train = TensorDataset(X, y)
        analyzer.fit_all_factors(
            "ekfac",
            train,
            per_device_batch_size=int(settings["per_device_batch_size"]),
            factor_args=factor_args,
            overwrite_output_dir=True,
        )
        analyzer.compute_pairwise_scores(
            "scores",
            "ekfac",
            TensorDataset(Xt, yt),
            train,
            per_device_query_batch_size=len(Xt),
            per_device_train_batch_size=int(settings["per_device_train_batch_size"]),
            score_args=score_args,
            overwrite_output_dir=True,
        )
        scores = analyzer.load_pairwise_scores("scores")["all_modules"]
        return scores, (type(factor_args), type(score_args))

    def after(self, state) -> dict[str, Any]:
        """The defaults of its two argument classes, each named by its class."""
        return {
            "defaults": {
                f"{cls.__name__}.{k}": v
                for cls in state
                for k, v in constructor_defaults(cls).items()
            }
        }

    def normalise(self, raw, *, n_train, l2, s_dot_theta=None):
        return -raw


register(Kronfluence())
