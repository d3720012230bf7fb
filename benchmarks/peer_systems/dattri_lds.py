"""dattri 0.3.0 on the LDS benchmark (benchmarks/lds.py): its attributors on our models and data.

Not a :class:`.base.Adapter` of the peers benchmark (which compares solves against a reference
matrix in child processes): here each dattri attributor gives a (T, n) score matrix for the same
model, training points and test points as ours, and benchmarks/lds.py scores it against the same
retrains. :func:`scores` runs one method; :func:`settings` says what it ran with (recorded in every
row). Sign: every matrix is returned as (T, n) with positive = the training point is helpful (its
removal would raise the test loss), the sign of ``Influence.predicted_removal_effect``; the IF
family is divided by n, which puts it on that scale too (the LDS only needs the sign).

Methods (``METHODS``), all on a deep copy of the model (dattri's AttributionTask loads checkpoints
into the model it is given):

- ``explicit``, ``cg``, ``lissa``, ``arnoldi``: ``IFAttributor*`` with the loss the mean
  cross-entropy of the batch (no L2: dattri's Hessian is that of the mean loss), its
  regularisation our l2 + our damping, so that H + rI is our (H_R + damping I). dattri scores
  g_test^T (H + rI)^-1 g_train, which is already our sign (Pearson +1 with our direct solver on
  digits LR, tests/test_lds_benchmark.py). CG: ``max_iter`` 100, ``tol`` 1e-10. LiSSA: the
  recursion h <- v + (1 - d) h - H_batch h / s (divided by s at the end) converges to
  (H + d s I)^-1 v, so ``damping`` d = r / s; ``scaling`` s = 1.5 x our LiSSA's estimate of
  lambda_max(H + rI) when one is given (dattri's default 50 diverges above lambda_max = 100),
  batches of 100 (its MNIST benchmark's first setting), ``recursion_depth`` 1000, one repeat.
  Arnoldi: ``max_iter`` 70 Arnoldi steps and ``proj_dim`` 50 kept eigenpairs (our Arnoldi's
  Krylov dimension and rank). The training set is one batch (dattri sums its IHVP over the
  batches of the cached loader, so more than one would not solve with H).
- ``ekfac``: ``IFAttributorEKFAC`` on every ``torch.nn.Linear`` module (its default: a CNN's
  convolutions are left out, so its scores use the linear layers' gradients only), the Fisher of
  the mean loss with the true labels (the empirical Fisher: its target function is the loss),
  ``damping`` r = l2 + our EK-FAC's damping added to its corrected eigenvalues. The model goes in
  wrapped in a ``torch.nn.Sequential`` (dattri names a layer by its module path, and finds no
  layer in a model that is itself one ``Linear``, as digits LR is).
- ``grad-dot``: ``TracInAttributor`` on the final model, weight 1, gradients not normalised,
  projected by dattri's default random projection (512 dimensions, Gaussian, seed 0), as its
  MNIST benchmark runs Grad-Dot.
- ``tracin``: ``TracInAttributor`` on the checkpoints given (their weights: the learning rate,
  or 1 for L-BFGS checkpoints), the same projection.
- ``trak``: ``TRAKAttributor`` on the checkpoints given (models trained on random halves, its
  benchmark's ``models_half``), the output the margin log p - log(1 - p) of the true label, the
  correct-class probability p, ``proj_dim`` 512, ``regularization`` 0 (its defaults).

Scores are dattri's own float32 or float64 as its code leaves them, returned as float64 numpy.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

METHODS = ("explicit", "cg", "lissa", "arnoldi", "ekfac", "grad-dot", "tracin", "trak")
TITLES = {
    "explicit": "IF explicit",
    "cg": "IF CG",
    "lissa": "IF LiSSA",
    "arnoldi": "IF Arnoldi",
    "ekfac": "IF EK-FAC",
    "grad-dot": "Grad-Dot",
    "tracin": "TracIn",
    "trak": "TRAK",
}
IF_METHODS = ("explicit", "cg", "lissa", "arnoldi", "ekfac")
PROJECTION = {"proj_dim": 512, "proj_max_batch_size": 32, "proj_seed": 0, "device": "cpu"}
CG = {"max_iter": 100, "tol": 1e-10}
LISSA = {"batch_size": 100, "num_repeat": 1, "recursion_depth": 1000, "default_scaling": 50.0}
ARNOLDI = {"max_iter": 70, "proj_dim": 50, "seed": 0}
# The loaders' batches of Grad-Dot, TracIn and TRAK: as many points as keep one batch's per-sample
# gradients within PER_SAMPLE_BUDGET_MB (float64), as a user would choose: the whole set for the
# digits models, 659 Fashion-MNIST images (a batch of all 5,000 made 4.1 GB blocks, over the cap;
# batches of 100 made digits' Grad-Dot 13x slower than one batch).
PER_SAMPLE_BUDGET_MB = 512


def per_sample_batch(target: Target) -> int:
    """The batch size of dattri's per-sample methods on ``target`` (see PER_SAMPLE_BUDGET_MB)."""
    p = sum(t.numel() for t in target.model.parameters())
    return max(1, min(len(target.X), PER_SAMPLE_BUDGET_MB * 2**20 // (8 * p)))


@dataclass
class Target:
    """What a dattri method attributes: the trained model, the n training points and the T test
    points, and (TracIn, TRAK) the checkpoints with their weights."""

    model: torch.nn.Module
    X: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    checkpoints: list[dict[str, torch.Tensor]] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


def settings(method: str, l2: float, damping: float, top_eigenvalue: float | None = None) -> dict:
    """The arguments ``method`` runs with, for regularisation l2 + ``damping`` (the damping our
    solver chose) and, for LiSSA, our estimate of lambda_max(H + (l2 + damping) I)."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    reg = l2 + damping
    if method in ("explicit", "arnoldi"):
        return {"regularization": reg, **(ARNOLDI if method == "arnoldi" else {})}
    if method == "cg":
        return {"regularization": reg, **CG}
    if method == "lissa":
        top = LISSA["default_scaling"] if top_eigenvalue is None else 1.5 * top_eigenvalue
        return {
            "batch_size": LISSA["batch_size"],
            "num_repeat": LISSA["num_repeat"],
            "recursion_depth": LISSA["recursion_depth"],
            "scaling": top,
            "damping": reg / top,
        }
    if method == "ekfac":
        return {"damping": reg}
    return {"projector_kwargs": dict(PROJECTION)}


def _mean_loss(model: torch.nn.Module) -> Callable:
    """dattri's loss_func of a batch: the mean cross-entropy, inputs cast to the model's dtype
    (its LiSSA casts batches to float32) and labels to integers."""
    dtype = next(model.parameters()).dtype

    def loss(params, batch):
        x, y = batch
        out = torch.func.functional_call(model, params, x.to(dtype))
        return torch.nn.functional.cross_entropy(out, y.long())

    return loss


def _one_sample(model: torch.nn.Module, value: str) -> Callable:
    """A function of (params, one sample): its cross-entropy (``value="loss"``), the margin log p
    - log(1 - p) of its label (``"margin"``) or p (``"probability"``)."""
    dtype = next(model.parameters()).dtype

    def f(params, sample):
        x, y = sample
        out = torch.func.functional_call(model, params, x.unsqueeze(0).to(dtype))
        loss = torch.nn.functional.cross_entropy(out, y.long().unsqueeze(0))
        if value == "loss":
            return loss
        if value == "probability":
            return torch.exp(-loss)
        return -loss - torch.log1p(-torch.exp(-loss))

    return f


def _loaders(target: Target, batch_size: int | None = None) -> tuple:
    """(training loader, test loader), in order: one batch each (the IF methods: dattri sums
    its IHVP over the batches), or batches of ``batch_size`` (Grad-Dot, TracIn and TRAK, which
    are per sample: one batch of the 5,000 Fashion-MNIST images makes dattri form their 5,000 x
    101,770 gradients at once, 4.1 GB and more)."""
    train = torch.utils.data.TensorDataset(target.X, target.y)
    test = torch.utils.data.TensorDataset(target.x_test, target.y_test)
    loader = torch.utils.data.DataLoader
    b_train, b_test = (len(train), len(test)) if batch_size is None else (batch_size,) * 2
    return loader(train, batch_size=b_train), loader(test, batch_size=b_test)


def import_modules() -> None:
    """Import the dattri modules the methods use (before timing: each method imports its own on
    first use, and the first one timed would pay for them all)."""
    from dattri.algorithm import influence_function, tracin, trak  # noqa: F401
    from dattri.task import AttributionTask  # noqa: F401


def _influence(method: str, target: Target, args: dict) -> torch.Tensor:
    """An IFAttributor's (n, T) scores on the final model."""
    from dattri.algorithm import influence_function as inf
    from dattri.task import AttributionTask

    model = copy.deepcopy(target.model)
    if method == "ekfac":  # it names layers by module path, and the root's is empty
        model = torch.nn.Sequential(model)
    task = AttributionTask(loss_func=_mean_loss(model), model=model, checkpoints=model.state_dict())
    cls = {
        "explicit": inf.IFAttributorExplicit,
        "cg": inf.IFAttributorCG,
        "lissa": inf.IFAttributorLiSSA,
        "arnoldi": inf.IFAttributorArnoldi,
        "ekfac": inf.IFAttributorEKFAC,
    }[method]
    attributor = cls(task=task, device="cpu", **args)
    train, test = _loaders(target)
    attributor.cache(train)
    with torch.no_grad():
        return attributor.attribute(train, test) / len(target.X)


def _tracin(target: Target, checkpoints: list, weights: list, args: dict) -> torch.Tensor:
    """TracInAttributor's (n, T) scores: sum over checkpoints of weight x projected g . g."""
    from dattri.algorithm.tracin import TracInAttributor
    from dattri.task import AttributionTask

    model = copy.deepcopy(target.model)
    task = AttributionTask(
        loss_func=_one_sample(model, "loss"), model=model, checkpoints=list(checkpoints)
    )
    attributor = TracInAttributor(
        task=task,
        weight_list=torch.tensor(weights, dtype=torch.float64),
        normalized_grad=False,
        device="cpu",
        **args,
    )
    train, test = _loaders(target, per_sample_batch(target))
    with torch.no_grad():
        return attributor.attribute(train, test)


def _trak(target: Target, args: dict) -> torch.Tensor:
    """TRAKAttributor's (n, T) scores over the checkpoints (an ensemble of models)."""
    from dattri.algorithm.trak import TRAKAttributor
    from dattri.task import AttributionTask

    model = copy.deepcopy(target.model)
    task = AttributionTask(
        loss_func=_one_sample(model, "margin"), model=model, checkpoints=target.checkpoints
    )
    attributor = TRAKAttributor(
        task=task,
        correct_probability_func=_one_sample(model, "probability"),
        device="cpu",
        **args,
    )
    train, test = _loaders(target, per_sample_batch(target))
    attributor.cache(train)
    with torch.no_grad():
        return attributor.attribute(test)


def scores(method: str, target: Target, args: dict[str, Any]) -> np.ndarray:
    """dattri's ``method`` on ``target`` with ``args`` (from :func:`settings`): (T, n) float64,
    positive = helpful. TracIn and TRAK need ``target.checkpoints``; Grad-Dot uses the model. Runs
    with torch's default dtype set to the model's (dattri's Arnoldi makes its start vector and
    Hessenberg matrix in the default dtype), restored afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(next(target.model.parameters()).dtype)
    try:
        out = _run(method, target, args)
    finally:
        torch.set_default_dtype(previous)
    return out.T.detach().double().cpu().numpy()


def _run(method: str, target: Target, args: dict[str, Any]) -> torch.Tensor:
    """:func:`scores` as dattri returns them, (n, T)."""
    if method in IF_METHODS:
        out = _influence(method, target, args)
    elif method == "grad-dot":
        out = _tracin(target, [target.model.state_dict()], [1.0], args)
    elif method in ("tracin", "trak"):
        if not target.checkpoints:
            raise ValueError(f"target: {method} needs checkpoints, got none")
        if method == "trak":
            out = _trak(target, args)
        else:
            out = _tracin(target, target.checkpoints, target.weights, args)
    else:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    return out
