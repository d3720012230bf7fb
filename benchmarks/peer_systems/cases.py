"""The four cases: data, model, regularisation, and which (system, solver) runs in which order.

Cases (cross-entropy, the same H everywhere: the Hessian of R plus ``damping`` I):

1. ``digits_lr``: 10-class logistic regression with bias on the built-in digits (1,300 training
   points, 650 parameters), l2 = 0.01, no damping, the first 100 test points (20 with ``--quick``).
   Ours direct / cg / lissa; pyDVL DirectInfluence / CgInfluence / LissaInfluence; Captum
   NaiveInfluenceFunction with its default projection (projection_dim = 50) and without it
   (projection_dim = p). Peers' DataLoader: one batch of 1,300.
2. ``digits_cnn``: ``iw.models.small_cnn`` on digits (1,954 parameters, tanh), l2 = 1e-3,
   damping = 0.01 (at the L-BFGS stopping point H alone is not positive definite; the case records
   lambda_min(H + damping I)), up to 1,000 L-BFGS iterations, the first 10 test points (every
   iterative solve is a pass of CNN HVPs per test point). The same systems as case 1, plus our
   EK-FAC against Kronfluence's. Peers' DataLoader: batches of 100 (pyDVL's Direct Hessian of one
   1,300 batch needs more than 20 GB).
3. ``fmnist_lr_paper``: the paper's scale: Fashion-MNIST logistic regression without bias (55,000 x
   784, 7,840 parameters), l2 = 0.01, the first 10 test points. Ours direct / cg, pyDVL Direct / Cg,
   Captum NaiveInfluenceFunction without projection (its exact path; p backward passes and a dense
   non-symmetric eig: expected to pass the time limit). Peers' DataLoader: batches of 1,100.
4. ``fmnist_mlp``: a 784-128-10 tanh MLP (101,770 parameters) on a Fashion-MNIST subset
   (``--case4-n-train``, default 5,000 training points; the first 10 test points), l2 = 0.01,
   damping = 0.01, up to 1,000 L-BFGS iterations. Ours cg / lissa / arnoldi, pyDVL Cg / Lissa /
   Arnoldi, Captum ArnoldiInfluenceFunction, every low-rank method at the same rank (``--rank``,
   default 50), and our EK-FAC against Kronfluence's. Peers' DataLoader: batches of 1,000.

Every case trains its model once in the parent process with ``iw.train`` (full-batch L-BFGS on
R(theta) = (1/n) sum_i L(z_i, theta) + (l2/2)||theta||^2, float64 models) and saves the model and
data for the children (:func:`prepare_case`). A case's ``runs`` are also the order of its rows in
the README's tables.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import influence_widgets as iw

DEFAULT_RANK = 50
QUICK_N_TEST = 20  # --quick: case 1 on 20 test points (pyDVL's CG solves them one at a time)

EXACT_RUNS = (  # cases 1 and 2
    ("ours", "direct"),
    ("ours", "cg"),
    ("ours", "lissa"),
    ("pydvl", "direct"),
    ("pydvl", "cg"),
    ("pydvl", "lissa"),
    ("captum", "naive"),
    ("captum", "naive_no_projection"),
)
EKFAC_RUNS = (("ours", "ekfac"), ("kronfluence", "ekfac"))  # cases 2 and 4
PAPER_RUNS = (  # case 3
    ("ours", "direct"),
    ("ours", "cg"),
    ("pydvl", "direct"),
    ("pydvl", "cg"),
    ("captum", "naive_no_projection"),
)
MLP_RUNS = (  # case 4
    ("ours", "cg"),
    ("ours", "lissa"),
    ("ours", "arnoldi"),
    ("pydvl", "cg"),
    ("pydvl", "lissa"),
    ("pydvl", "arnoldi"),
    ("captum", "arnoldi"),
    *EKFAC_RUNS,
)


@dataclass(frozen=True)
class Case:
    number: int
    name: str
    description: str
    model: str  # "lr", "lr_nobias", "cnn", "mlp"
    dataset: str  # "digits", "fashion_mnist"
    n_train: int
    n_test: int
    l2: float
    damping: float
    batch_size: int  # the peers' DataLoader batch size
    runs: tuple[tuple[str, str], ...]  # (system, solver) in the order they run
    reference: str  # "direct" or "cg"
    repeats: int
    rank: int | None = None
    train_max_iter: int = 1000


def make_cases(
    case4_n_train: int = 5000, rank: int = DEFAULT_RANK, quick: bool = False
) -> dict[int, Case]:
    """The four cases; ``quick`` keeps case 1 to its first QUICK_N_TEST test points."""
    return {**digits_cases(quick), **fashion_mnist_cases(case4_n_train, rank)}


def digits_cases(quick: bool) -> dict[int, Case]:
    """Cases 1 and 2: every exact solver of every system on digits, three repeats."""
    digits = {
        "dataset": "digits",
        "n_train": 1300,
        "reference": "direct",
        "runs": EXACT_RUNS,
        "repeats": 3,
    }
    return {
        1: Case(
            number=1,
            name="digits_lr",
            description="digits 10-class logistic regression with bias, 1,300 x 64",
            model="lr",
            n_test=QUICK_N_TEST if quick else 100,
            l2=0.01,
            damping=0.0,
            batch_size=1300,
            **digits,
        ),
        2: Case(
            number=2,
            name="digits_cnn",
            description="iw.models.small_cnn on digits (tanh, 1,954 parameters)",
            model="cnn",
            n_test=10,
            l2=1e-3,
            damping=0.01,
            batch_size=100,
            **{**digits, "runs": EXACT_RUNS + EKFAC_RUNS},
        ),
    }


def fashion_mnist_cases(case4_n_train: int, rank: int) -> dict[int, Case]:
    """Cases 3 and 4: the paper's logistic regression, and an MLP where H does not fit."""
    return {
        3: Case(
            number=3,
            name="fmnist_lr_paper",
            description="Fashion-MNIST logistic regression without bias, 55,000 x 784",
            model="lr_nobias",
            dataset="fashion_mnist",
            n_train=55_000,
            n_test=10,
            l2=0.01,
            damping=0.0,
            batch_size=1100,
            runs=PAPER_RUNS,
            reference="direct",
            repeats=1,
        ),
        4: Case(
            number=4,
            name="fmnist_mlp",
            description="784-128-10 tanh MLP on a Fashion-MNIST subset",
            model="mlp",
            dataset="fashion_mnist",
            n_train=case4_n_train,
            n_test=10,
            l2=0.01,
            damping=0.01,
            batch_size=equal_batch(case4_n_train, 1000),
            runs=MLP_RUNS,
            reference="cg",
            repeats=1,
            rank=rank,
        ),
    }


def equal_batch(n: int, target: int) -> int:
    """The largest batch size <= target that divides n (pyDVL averages batches unweighted)."""
    for b in range(min(n, target), 0, -1):
        if n % b == 0:
            return b
    return n


def mlp(n_features: int, n_classes: int, hidden: int = 128, seed: int = 0) -> nn.Sequential:
    """784-128-10 tanh multilayer perceptron in float64 (101,770 parameters on Fashion-MNIST)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Linear(n_features, hidden, dtype=torch.float64),
            nn.Tanh(),
            nn.Linear(hidden, n_classes, dtype=torch.float64),
        )


def build_model(kind: str, meta: dict[str, Any]) -> nn.Module:
    """An untrained model of ``kind`` for data of ``meta`` (as :func:`prepare_case` saves it)."""
    d, c = meta["n_features"], meta["n_classes"]
    if kind in ("lr", "lr_nobias"):
        return iw.models.logistic_regression((d, c), bias=kind == "lr")
    if kind == "cnn":
        shape = tuple(meta["image_shape"])
        stub = iw.datasets.Dataset(
            "stub",
            torch.zeros(1, d),
            torch.zeros(1, dtype=torch.long),
            torch.zeros(1, d),
            torch.zeros(1, dtype=torch.long),
            [str(k) for k in range(c)],
            kind="image",
            image_shape=shape,
        )
        return iw.models.small_cnn(stub)
    if kind == "mlp":
        return mlp(d, c)
    raise ValueError(f"unknown model kind {kind!r}")


def load_data(case: Case) -> iw.datasets.Dataset:
    if case.dataset == "digits":
        return iw.datasets.digits(n_train=case.n_train)
    return iw.datasets.fashion_mnist(
        n_train=case.n_train, n_test=max(case.n_test, 1000), progress=False
    )


def prepare_case(case: Case, workdir: Path) -> dict[str, Any]:
    """Train once, save model and data under workdir; return the case's record."""
    data = load_data(case)
    meta = {
        "n_features": data.n_features,
        "n_classes": data.n_classes,
        "image_shape": list(data.image_shape) if data.image_shape else None,
    }
    model = build_model(case.model, meta)
    start = time.perf_counter()
    report = iw.train(model, data, l2=case.l2, max_iter=case.train_max_iter, progress=False)
    training = {
        "seconds": time.perf_counter() - start,
        "iterations": report.iterations,
        "grad_norm": report.grad_norm,
        "converged": report.converged,
        "risk": report.risk,
    }
    workdir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), workdir / "model.pt")
    X_test, y_test = data.X_test[: case.n_test], data.y_test[: case.n_test]
    torch.save(
        {"X_train": data.X_train, "y_train": data.y_train, "X_test": X_test, "y_test": y_test},
        workdir / "data.pt",
    )
    (workdir / "meta.json").write_text(json.dumps(meta))
    record = case_record(case, len(data.y_train), len(y_test), model, training)
    if case.damping > 0:  # non-convex: show that H + damping I is positive definite
        record.update(min_eigenvalue(case, model, data))
    return record


def case_record(
    case: Case, n_train: int, n_test: int, model: nn.Module, training: dict[str, Any]
) -> dict[str, Any]:
    """The JSON's record of a trained case."""
    return {
        "name": case.name,
        "description": case.description,
        "n_train": n_train,
        "n_test": n_test,
        "test_points": f"the first {n_test} of the test split",
        "n_params": sum(p.numel() for p in model.parameters()),
        "l2": case.l2,
        "damping": case.damping,
        "batch_size": case.batch_size,
        "repeats": case.repeats,
        "rank": case.rank,
        "training": training,
    }


def min_eigenvalue(case: Case, model: nn.Module, data: iw.datasets.Dataset) -> dict[str, Any]:
    """The smallest Ritz value of H + damping I, for the case's record."""
    from influence_widgets.core.solvers import smallest_eigenvalue

    inf = iw.Influence(
        model, (data.X_train, data.y_train), l2=case.l2, damping=case.damping, progress=False
    )
    return {
        "min_eigenvalue_with_damping": smallest_eigenvalue(inf.op),
        "min_eigenvalue_note": (
            "smallest Ritz value of H + damping I after 40 Lanczos steps (an upper bound)"
        ),
    }
