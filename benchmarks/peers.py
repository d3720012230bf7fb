"""This package against pyDVL, Captum and Kronfluence on the same trained models: speed, accuracy,
memory.

Every case trains its model once in this (parent) process with ``iw.train`` (full-batch L-BFGS on
R(theta) = (1/n) sum_i L(z_i, theta) + (l2/2)||theta||^2, float64 models), saves the model and data
to a temporary directory, then for each repeat runs every (system, solver) in turn, each in its own
child process (``peers.py --child``), alternating systems within a repeat. A child loads the model
and data (inputs cast to float64), runs the same system once on a tiny problem (untimed warm-up:
lazy initialisation, first-call costs), then times only the influence work: construction, fit or
factorisation, and the all-train influence matrix (T test points x n training points). It writes
the matrix, the seconds and its peak resident memory during that work (VmHWM after resetting the
mark through /proc/self/clear_refs; the process's lifetime ru_maxrss where that is not allowed, and
``peak_scope`` says so), with the resident memory just before it (``rss_before_mb``; the table's
``+MB`` is the increment). Seconds are medians over repeats; a run past ``--time-limit`` is killed
(and not repeated: its row says so) and, like a crash (out of memory) or an exception, becomes a
row with ``seconds: null`` and a ``note``, never a number. A result with NaN (``has_nan``),
infinities (``has_inf``) or entries 1e6 times the reference's largest is noted as diverged.

On a GPU (``--device cuda`` or ``cuda:N``; default ``cpu``) every child moves the model and all
data (training and test tensors, hence every DataLoader batch) to that device before the warm-up;
ours gets ``device=``, pyDVL computes on its model's device, Captum on the model's and the
batches', Kronfluence with ``Analyzer(cpu=False)`` on the current CUDA device (the child sets it to
the one named). Training stays in the parent on the CPU. The timed work ends with
``torch.cuda.synchronize()`` (and waits for queued work before it starts); each row names its
``device`` and adds the GPU's peak allocated memory during the influence work (``peak_gpu_mb``,
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``) beside VmHWM; the machine
facts name the device and the GPU. On the CPU nothing else changes. Rows of another device are not
mixed into one file (``--append``, ``--include`` refuse them).

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

Our settings (``settings`` in each row): block CG (groups of 32 columns) at rtol 1e-6 (relative
error about 1e-6 on case 1); LiSSA in full batch (a deterministic Neumann series, scale 1.1 x the
top eigenvalue, so it cannot diverge) stopped at a relative change of 1e-4 (case 1: r = 0.999998),
except case 4, where one full-batch step costs seconds and LiSSA runs the paper's stochastic
recursion instead (mini-batches of 100, depth 5,000, as benchmarks/loo_fidelity.py does at paper
scale); Arnoldi with 20 extra Krylov vectors; EK-FAC (``iw.EKFAC()``: the exact Gauss-Newton
matrix's eigenvalue-corrected Kronecker factors, fitted in the Influence's batches); the Influence
batch size min(n, 1024).

Regularisation: pyDVL's and Captum's losses have no L2 term, so the L2 and the damping go into their
Hessian regularisation: pyDVL ``regularization = l2 + damping`` (added to the diagonal of its
mean-loss Hessian), Captum ``hessian_reg = n (l2 + damping)`` (added to the diagonal of its
summed-loss Hessian: the loss is ``CrossEntropyLoss(reduction="none")``, which Captum requires and
sums; Captum adds it through a float32 identity, so its H is off by ~1e-7 relative). Everything
else is each peer's documented default, recorded per row (``settings``, and the installed
constructor's defaults in ``constructor_defaults``). DataLoader batches divide n evenly: pyDVL's CG,
LiSSA and Arnoldi average batch Hessians without weighting by batch size, so unequal batches would
change their H; pyDVL's LiSSA takes one batch per iteration. pyDVL scores with
``influence_factors(x_test, y_test)`` then ``influences_from_factors`` per training batch (its
documented way to avoid an n x p gradient matrix), ``mode=InfluenceMode.Up``; Captum with
``influence((x_test, y_test))``.

Kronfluence (cases 2 and 4, strategy ``"ekfac"``): its Task's training loss is the cross-entropy
summed over the batch (per-sample gradients are then those of L(z_i)), its measurement the test
cross-entropy, likewise summed. It fits ``fit_all_factors`` then ``compute_pairwise_scores`` (all
test points in one query batch) and reads the scores back, all timed, writing its files under the
child's temporary directory. Its curvature is an EK-FAC of the Fisher of the mean loss with labels
SAMPLED from the model's softmax (``use_empirical_fisher=False``, its default, is the only true-
Fisher option it has: one sampled label per training point in each of its two passes, seeded with
``torch.manual_seed(0)``), where ours takes the exact expectation over labels (for the
cross-entropy, the Gauss-Newton matrix); its eigenvalue corrections are divided by the number of
points and ``damping_factor`` is added to them, so ``damping_factor = l2 + damping`` matches our
(G + (l2 + damping) I). Every ``*_dtype`` argument is set to float64 (its defaults are float32
except the eigendecomposition's); ``cpu=True`` (``cpu=False`` with ``--device cuda``), no
Accelerate launcher.

Normalisation (checked against a float64 brute-force formula in tests/test_peers_benchmark.py):
every matrix is mapped onto I_ref = -grad L(z_test)^T (H + damping I)^-1 grad L(z_i), our
I_up,loss with the training gradients taken WITHOUT the L2 term (as the peers take them):

* ours: I_up,loss + l2 (s_test . theta) per test row (our g_i includes l2 theta; s_test is the
  solver's own solution, captured during the timed call);
* pyDVL: -1 x ``influences(..., mode=InfluenceMode.Up)`` (documented as
  +grad L_test^T H^-1 grad L(z), H the mean-loss Hessian);
* Captum: -n x ``influence(...)`` (grad L_test^T H_sum^-1 grad L(z) with H_sum = n H);
* Kronfluence: -1 x its pairwise scores (+grad L_test^T (G_EK + damping_factor I)^-1 grad L(z_i),
  positive for a training point that lowers the test loss; G_EK of the mean loss).

Accuracy is Pearson r over all T x n entries and the relative Frobenius error
||X - X_ref|| / ||X_ref||, against our float64 direct solution (cases 1-3: the ``ours direct`` run
of the first repeat, or a separate child when ours is not run) or our float64 CG at rtol 1e-10
(case 4, where H does not fit; the JSON ``reference`` field says which).

Targets (from the issue, 2 CPU cores): exact at least 2x faster than pyDVL Direct at equal error;
CG at least 20x faster than pyDVL Cg with relative error <= 1e-4; LiSSA never NaN, Pearson r >= 0.999
and faster than pyDVL Lissa; Arnoldi agreeing better with the reference than Captum's at the same
rank; EK-FAC at equal or better Pearson r than Kronfluence's and faster. The table and the JSON
``targets`` say met or missed for every case that has both rows; a peer that timed out counts as
the time limit. The table's "ours vs peer" is the peer's seconds over ours: pyDVL's same solver,
or Kronfluence for EK-FAC.

Run from the repository root (``make bench-peers`` sets up .venv-peers and runs the first):

    .venv-peers/bin/python benchmarks/peers.py --json benchmarks/results/peers.json
    .venv-peers/bin/python benchmarks/peers.py --quick --json /tmp/peers_quick.json   # < 3 minutes
    .venv/bin/python benchmarks/peers.py --quick --systems ours --json /tmp/peers_ours.json
    python benchmarks/peers.py --device cuda --cases 1,2 --systems ours,pydvl,captum,kronfluence \
        --json peers_cuda.json                                   # on a GPU machine

Flags: ``--cases 1,2,3,4``, ``--systems ours,pydvl,captum,kronfluence``, ``--device cpu|cuda|cuda:N``
(default cpu), ``--repeats N`` (default 3 for cases 1-2, 1 for cases 3-4), ``--quick`` (case 1 on 20 test points, one repeat), ``--time-limit`` seconds
per child (900), ``--threads`` (default: usable cores), ``--case4-n-train``, ``--rank``,
``--n-test`` (fewer test points, for smoke runs), ``--keep-tmp``, ``--json PATH`` (written after
every run, ``complete: false`` until the end), ``--append`` (keep the rows of --json this run does
not redo). Child processes run on the same machine one at a time; timings on a shared machine are
only indicative. Two runs may go in parallel, one per core (``--threads 1``), each appending to its
own copy of the JSON; ``--merge-only --include COPY --cases ... --systems ... --solvers ...`` then
copies the selected rows of a copy into --json (with their cases' records, commands, seconds and
machines; both files must name the same package versions) and recomputes the targets.
``--markdown PATH`` writes the tables of benchmarks/README.md; ``--merge-only --json FILE
--markdown PATH`` writes those of an existing file and leaves it as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import importlib.metadata
import inspect
import json
import logging
import math
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import machine_info, usable_cores, utc_now
from proc_memory import lifetime_peak_mb, release_freed_memory, reset_peak_rss, status_kb
from torch import nn

import influence_widgets as iw
from influence_widgets.core.model_checks import resolve_device

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ("ours", "pydvl", "captum", "kronfluence")
SOLVERS = ("direct", "cg", "lissa", "arnoldi", "naive", "naive_no_projection", "ekfac")
DEFAULT_TIME_LIMIT = 900.0
REFERENCE_TIME_LIMIT = 3600.0
DEFAULT_RANK = 50
QUICK_N_TEST = 20  # --quick: case 1 on 20 test points (pyDVL's CG solves them one at a time)

# Our solver settings, chosen so that CG reaches relative error <= 1e-4 and LiSSA Pearson r >= 0.999
# on case 1 (measured: CG rtol 1e-6 -> 7e-7; LiSSA rtol 1e-4 -> r 0.999998, error 2.4e-3).
OUR_CG = {"rtol": 1e-6, "maxiter": 1000, "block_size": 32}
OUR_LISSA = {"depth": 10_000, "rtol": 1e-4, "batch_size": None, "scale": None}
# Case 4: a full-batch Neumann step is an HVP over all 5,000 points for every test point (seconds
# each), so LiSSA runs the paper's stochastic recursion instead, as benchmarks/loo_fidelity.py does
# at paper scale: mini-batches of 100, depth 5,000, the scale from the top eigenvalue.
OUR_LISSA_STOCHASTIC = {"depth": 5000, "rtol": None, "batch_size": 100, "scale": None}
OUR_ARNOLDI_OVERSAMPLE = 20
REFERENCE_CG = {"rtol": 1e-10, "maxiter": 10_000, "block_size": 32}

# What each target compares, with the issue's reference numbers (case 1, pyDVL, 2 cores).
ISSUE_REFERENCE = {"direct": "0.57 s", "cg": "49 s", "lissa": "27 s, r = 0.997, unconverged"}


# ----- the cases --------------------------------------------------------------------------------
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
    exact_runs = (
        ("ours", "direct"),
        ("ours", "cg"),
        ("ours", "lissa"),
        ("pydvl", "direct"),
        ("pydvl", "cg"),
        ("pydvl", "lissa"),
        ("captum", "naive"),
        ("captum", "naive_no_projection"),
    )
    ekfac_runs = (("ours", "ekfac"), ("kronfluence", "ekfac"))  # cases 2 and 4
    # cases 1 and 2: every exact solver of every system on digits, three repeats
    digits = {
        "dataset": "digits",
        "n_train": 1300,
        "reference": "direct",
        "runs": exact_runs,
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
            **{**digits, "runs": exact_runs + ekfac_runs},
        ),
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
            runs=(
                ("ours", "direct"),
                ("ours", "cg"),
                ("pydvl", "direct"),
                ("pydvl", "cg"),
                ("captum", "naive_no_projection"),
            ),
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
            batch_size=_equal_batch(case4_n_train, 1000),
            runs=(
                ("ours", "cg"),
                ("ours", "lissa"),
                ("ours", "arnoldi"),
                ("pydvl", "cg"),
                ("pydvl", "lissa"),
                ("pydvl", "arnoldi"),
                ("captum", "arnoldi"),
                *ekfac_runs,
            ),
            reference="cg",
            repeats=1,
            rank=rank,
        ),
    }


def _equal_batch(n: int, target: int) -> int:
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


# ----- settings and normalisation (shared by parent, children and tests) -------------------------
def regularisation(case_l2: float, damping: float, n: int) -> dict[str, float]:
    """Our (l2, damping) as each peer's Hessian regularisation (see the module docstring)."""
    return {
        "pydvl": float(case_l2 + damping),
        "captum": float(n * (case_l2 + damping)),
        "kronfluence": float(case_l2 + damping),
    }


def settings_for(
    system: str,
    solver: str,
    *,
    l2: float,
    damping: float,
    n: int,
    p: int,
    batch_size: int,
    rank: int | None,
    our_lissa: dict[str, Any] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """The constructor arguments of one (system, solver), as recorded in the JSON; ``device``
    (``--device``) only changes Kronfluence's ``cpu`` flag (the others follow the model's)."""
    reg = regularisation(l2, damping, n)
    if system == "ours":
        base = {"l2": l2, "damping": damping, "batch_size": min(n, 1024), "progress": False}
        if solver == "direct":
            return {**base, "solver": "Direct()"}
        if solver == "cg":
            return {**base, "solver": "ConjugateGradient", **OUR_CG}
        if solver == "lissa":
            lissa = our_lissa or OUR_LISSA
            kind = (
                "full batch: deterministic Neumann"
                if lissa["batch_size"] is None
                else (f"stochastic, mini-batches of {lissa['batch_size']}")
            )
            return {**base, "solver": f"LiSSA ({kind})", **lissa}
        if solver == "arnoldi":
            return {**base, "solver": "Arnoldi", "rank": rank, "oversample": OUR_ARNOLDI_OVERSAMPLE}
        if solver == "ekfac":
            return {
                **base,
                "solver": "EKFAC() (exact Gauss-Newton, eigenvalue-corrected Kronecker factors; "
                "fitted in the Influence's batches)",
                "ekfac_batch_size": None,
            }
        if solver == "reference_cg":
            return {**base, "solver": "ConjugateGradient", **REFERENCE_CG}
    pydvl_classes = {
        "direct": "DirectInfluence",
        "cg": "CgInfluence",
        "lissa": "LissaInfluence",
        "arnoldi": "ArnoldiInfluence",
    }
    if system == "pydvl" and solver in pydvl_classes:
        base = {
            "loss": "torch.nn.functional.cross_entropy (mean reduction)",
            "regularization": reg["pydvl"],
            "dataloader_batch_size": batch_size,
            "scoring": "influence_factors(x_test, y_test), then influences_from_factors"
            " per training batch, mode=InfluenceMode.Up",
        }
        out = {"class": pydvl_classes[solver], **base}
        if solver == "arnoldi":
            out["rank"] = rank
        return out
    if system == "captum":
        base = {
            "loss_fn": "torch.nn.CrossEntropyLoss(reduction='none')",
            "hessian_reg": reg["captum"],
            "dataloader_batch_size": batch_size,
            "scoring": "influence((x_test, y_test))",
        }
        if solver == "naive":
            return {"class": "NaiveInfluenceFunction", **base}  # projection_dim: its default
        if solver == "naive_no_projection":
            return {"class": "NaiveInfluenceFunction", **base, "projection_dim": p}
        if solver == "arnoldi":
            return {"class": "ArnoldiInfluenceFunction", **base, "projection_dim": rank}
    if system == "kronfluence" and solver == "ekfac":
        return {
            "class": f"Analyzer(cpu={torch.device(device).type == 'cpu'}, disable_tqdm=True), "
            "output_dir: the child's temporary directory",
            "strategy": "ekfac",
            "use_empirical_fisher": False,
            "curvature": "true Fisher with sampled labels: one label per training point drawn "
            "from the model's softmax in each of its two passes (covariances, eigenvalue "
            "corrections), torch.manual_seed(0); ours takes the exact expectation over labels",
            "damping_factor": reg["kronfluence"],
            "dtype": "float64: every *_dtype argument of FactorArguments and ScoreArguments "
            "(its defaults are float32 except eigendecomposition_dtype)",
            "train_loss": "cross_entropy(reduction='sum') on the batch's labels (sampled labels "
            "for the factors)",
            "measurement": "cross_entropy(reduction='sum') on the test points",
            "per_device_batch_size": batch_size,
            "per_device_train_batch_size": batch_size,
            "per_device_query_batch_size": "all test points",
            "scoring": "fit_all_factors, compute_pairwise_scores, load_pairwise_scores"
            "['all_modules']",
        }
    raise ValueError(f"no solver {solver!r} for system {system!r}")


NORMALISATION = {
    "ours": "I_up,loss + l2 * (s_test . theta) per test row: removes the L2 term l2*theta from our "
    "training gradients (the peers' training gradients have none); factor 1",
    "pydvl": "-1 * influences(x_test, y_test, x, y, mode=InfluenceMode.Up): pyDVL documents "
    "I_up = +grad L(z_test)^T H^-1 grad L(z) with H the Hessian of the mean loss, the opposite "
    "sign to our I_up,loss; regularization = l2 + damping makes its H equal ours",
    "captum": "-n * influence((x_test, y_test)): Captum's score is grad L(z_test)^T H_sum^-1 "
    "grad L(z) with H_sum the Hessian of the summed per-example losses (n * the mean); "
    "hessian_reg = n * (l2 + damping) makes H_sum + hessian_reg I = n * our H",
    "kronfluence": "-1 * its pairwise scores: +grad L(z_test)^T (G_EK + damping_factor I)^-1 "
    "grad L(z_i), G_EK its EK-FAC of the mean loss's Fisher (sampled labels), per-sample "
    "gradients of the summed loss; damping_factor = l2 + damping matches our (G + (l2 + damping) "
    "I)",
}


def normalise(
    system: str, raw: np.ndarray, *, n_train: int, l2: float, s_dot_theta: np.ndarray | None = None
) -> np.ndarray:
    """Map a system's (T, n) output onto I_ref = -grad L(z_test)^T H^-1 grad L(z_i) (no L2 term
    in the training gradient), following :data:`NORMALISATION`."""
    raw = np.asarray(raw, dtype=np.float64)
    if system == "ours":
        if s_dot_theta is None:
            raise ValueError("ours: s_dot_theta (s_test . theta per test point) is required")
        return raw + l2 * np.asarray(s_dot_theta, dtype=np.float64)[:, None]
    if system in ("pydvl", "kronfluence"):
        return -raw
    if system == "captum":
        return -float(n_train) * raw
    raise ValueError(f"unknown system {system!r}")


def agreement(matrix: np.ndarray, reference: np.ndarray) -> tuple[float | None, float | None]:
    """(Pearson r over all entries, relative Frobenius error); None where not finite."""
    from scipy.stats import pearsonr

    a, b = np.ravel(matrix), np.ravel(reference)
    if a.shape != b.shape or not np.isfinite(a).all():
        return None, None
    rel = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    r = float(pearsonr(a, b).statistic) if np.std(a) > 0 else None
    return r, rel


# ----- the three systems (run inside a child) ----------------------------------------------------
def _loader(X: torch.Tensor, y: torch.Tensor, batch_size: int):
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(TensorDataset(X, y), batch_size=batch_size, shuffle=False)


def our_solver(solver: str, s: dict[str, Any]):
    if solver == "direct":
        return iw.Direct()
    if solver in ("cg", "reference_cg"):
        return iw.ConjugateGradient(
            rtol=s["rtol"], maxiter=s["maxiter"], block_size=s["block_size"]
        )
    if solver == "lissa":
        return iw.LiSSA(depth=s["depth"], rtol=s["rtol"], batch_size=s["batch_size"])
    if solver == "arnoldi":
        return iw.Arnoldi(rank=s["rank"], oversample=s["oversample"])
    if solver == "ekfac":
        return iw.EKFAC(batch_size=s["ekfac_batch_size"])
    raise ValueError(f"ours: unknown solver {solver!r}")


def run_ours(model, X, y, Xt, yt, solver: str, s: dict[str, Any]):
    """Timed: Influence(...).influence_on_loss(Xt, yt). Returns (matrix, state for after_ours)."""
    inf = iw.Influence(
        model,
        (X, y),
        l2=s["l2"],
        damping=s["damping"],
        solver=our_solver(solver, s),
        batch_size=s["batch_size"],
        progress=False,
        device=next(model.parameters()).device,  # the child's --device
    )
    captured: dict[str, torch.Tensor] = {}
    solve = inf.solver.solve

    def capturing_solve(B: torch.Tensor, progress: bool = False) -> torch.Tensor:
        out = solve(B, progress=progress)
        captured["S"] = out  # a reference, no copy: s_test for the normalisation
        return out

    inf.solver.solve = capturing_solve
    return inf.influence_on_loss(Xt, yt), (inf, captured)


def after_ours(state) -> dict[str, Any]:
    inf, captured = state
    theta = inf.objective.theta
    d = inf.diagnostics
    s = d.solver
    return {
        "s_dot_theta": (captured["S"].T @ theta).detach().cpu().numpy(),
        "diagnostics": {
            "grad_norm": d.grad_norm,
            "converged": s.converged,
            "residual": s.residual,
            "iterations": s.iterations,
            "min_eigenvalue": s.min_eigenvalue,
            "max_eigenvalue": s.max_eigenvalue,
            **{k: v for k, v in s.extra.items() if isinstance(v, int | float | str | bool)},
        },
    }


def run_pydvl(model, X, y, Xt, yt, solver: str, s: dict[str, Any]):
    from pydvl.influence import InfluenceMode
    from pydvl.influence.torch import (
        ArnoldiInfluence,
        CgInfluence,
        DirectInfluence,
        LissaInfluence,
    )

    cls = {
        "direct": DirectInfluence,
        "cg": CgInfluence,
        "lissa": LissaInfluence,
        "arnoldi": ArnoldiInfluence,
    }[solver]
    kwargs: dict[str, Any] = {"regularization": float(s["regularization"])}
    if solver == "arnoldi":
        kwargs["rank"] = int(s["rank"])
    if "maxiter" in s:  # only the untimed warm-up shortens the iterations
        kwargs["maxiter"] = int(s["maxiter"])
    loader = _loader(X, y, s["dataloader_batch_size"])
    inf = cls(model, torch.nn.functional.cross_entropy, **kwargs).fit(loader)
    factors = inf.influence_factors(Xt, yt)
    b = s["dataloader_batch_size"]
    parts = [
        inf.influences_from_factors(factors, X[i : i + b], y[i : i + b], mode=InfluenceMode.Up)
        for i in range(0, len(X), b)
    ]
    return torch.cat(parts, dim=1), cls


def run_captum(model, X, y, Xt, yt, solver: str, s: dict[str, Any], checkpoint: str):
    from captum.influence import NaiveInfluenceFunction

    # captum 0.9 does not export ArnoldiInfluenceFunction from captum.influence
    from captum.influence._core.arnoldi_influence_function import ArnoldiInfluenceFunction

    cls = ArnoldiInfluenceFunction if solver == "arnoldi" else NaiveInfluenceFunction
    kwargs: dict[str, Any] = {"hessian_reg": float(s["hessian_reg"])}
    if "projection_dim" in s:
        kwargs["projection_dim"] = int(s["projection_dim"])
    inst = cls(
        model,
        _loader(X, y, s["dataloader_batch_size"]),
        checkpoint=checkpoint,
        loss_fn=torch.nn.CrossEntropyLoss(reduction="none"),
        **kwargs,
    )
    return inst.influence((Xt, yt)), cls


def run_kronfluence(model, X, y, Xt, yt, solver: str, s: dict[str, Any], workdir: Path):
    """Timed: Kronfluence's EK-FAC factors, its pairwise scores (T, n) and reading them back, on
    a copy of ``model`` (its ``prepare_model`` wraps the layers in place and freezes them), on the
    model's device (``cpu=False`` on CUDA: Kronfluence then uses the current CUDA device). Returns (scores, its two argument classes, for their defaults)."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task
    from torch.utils.data import TensorDataset

    if solver != "ekfac":
        raise ValueError(f"kronfluence: unknown solver {solver!r}")

    class CrossEntropyTask(Task):
        """L = the cross-entropy summed over the batch; labels drawn from the model's softmax
        when Kronfluence asks for a sample (its true-Fisher passes)."""

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
    torch.manual_seed(0)  # the sampled labels
    task = CrossEntropyTask()
    # Kronfluence wraps a model's child modules: a model that is itself one Linear layer (case 1's
    # logistic regression, the warm-up) goes inside a Sequential, which computes the same function.
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
        per_device_batch_size=int(s["per_device_batch_size"]),
        factor_args=factor_args,
        overwrite_output_dir=True,
    )
    analyzer.compute_pairwise_scores(
        "scores",
        "ekfac",
        TensorDataset(Xt, yt),
        train,
        per_device_query_batch_size=len(Xt),
        per_device_train_batch_size=int(s["per_device_train_batch_size"]),
        score_args=score_args,
        overwrite_output_dir=True,
    )
    return analyzer.load_pairwise_scores("scores")["all_modules"], (FactorArguments, ScoreArguments)


def constructor_defaults(cls) -> dict[str, Any]:
    """The installed class's keyword defaults, for the record of what 'defaults' meant."""
    out = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if param.default is not inspect.Parameter.empty:
            value = param.default
            out[name] = value if isinstance(value, int | float | str | bool | None) else repr(value)
    return out


def peer_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"torch": torch.__version__}
    for dist in ("influence-widgets", "pyDVL", "captum", "kronfluence", "numpy", "scipy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


# ----- the child --------------------------------------------------------------------------------
def _tiny_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A tiny trained float64 LR (40 features, 4 classes, 164 parameters) for the warm-up."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(80, 40, generator=gen, dtype=torch.float64)
    y = torch.arange(80) % 4
    model = iw.models.logistic_regression((40, 4))
    iw.train(model, (X, y), l2=0.1, progress=False)
    return model, X, y, X[:2], y[:2]


def _run_system(spec, model, X, y, Xt, yt, settings, checkpoint: str, workdir: Path):
    system, solver = spec["system"], spec["solver"]
    if system == "ours":
        return run_ours(model, X, y, Xt, yt, solver, settings)
    if system == "pydvl":
        return run_pydvl(model, X, y, Xt, yt, solver, settings)
    if system == "kronfluence":
        return run_kronfluence(model, X, y, Xt, yt, solver, settings, workdir)
    return run_captum(model, X, y, Xt, yt, solver, settings, checkpoint)


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work (``--device cuda``), so that a timer reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(spec: dict[str, Any], workdir: Path, device: torch.device) -> str | None:
    """Run the same system once on a tiny problem on ``device``, untimed; its error (if any) as
    a string."""
    model, *data = _tiny_problem()
    model = model.to(device)
    X, y, Xt, yt = (t.to(device) for t in data)
    n, p = len(X), sum(q.numel() for q in model.parameters())
    settings = settings_for(
        spec["system"],
        spec["solver"].replace("reference_cg", "cg"),
        l2=0.1,
        damping=0.0,
        n=n,
        p=p,
        batch_size=40,
        rank=min(spec["case"]["rank"] or 10, 20),
        device=str(device),
    )
    if spec["system"] == "ours" and spec["solver"] == "lissa":
        batch = spec["settings"]["batch_size"]
        settings.update(depth=5, batch_size=None if batch is None else min(batch, 40))
    if spec["system"] == "pydvl" and spec["solver"] in ("cg", "lissa"):
        settings["maxiter"] = 5
    checkpoint = workdir / "warmup.pt"
    torch.save(model.state_dict(), checkpoint)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.CRITICAL)
            _run_system(spec, model, X, y, Xt, yt, settings, str(checkpoint), workdir / "warm-up")
            synchronize(device)
    except Exception as err:  # the real run will report it
        return f"{type(err).__name__}: {err}"
    finally:
        logging.disable(logging.NOTSET)
    return None


class _LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage()[:300])


def child_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out_dir"])
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    result: dict[str, Any] = {"system": spec["system"], "solver": spec["solver"]}
    phases: dict[str, float] = {}  # untimed overheads, for the record
    result["child_phases_seconds"] = phases
    t0 = time.perf_counter()
    try:
        if spec["system"] == "pydvl":
            import pydvl.influence.torch  # noqa: F401  (imports are not timed)
        elif spec["system"] == "captum":
            import captum.influence  # noqa: F401
        elif spec["system"] == "kronfluence":
            import kronfluence.analyzer  # noqa: F401
        if device.type == "cuda" and device.index is not None:
            torch.cuda.set_device(device)  # Kronfluence's "cuda" is the current device
        case_dir = Path(spec["case_dir"])
        meta = json.loads((case_dir / "meta.json").read_text())
        data = torch.load(case_dir / "data.pt", weights_only=True)
        model = build_model(spec["case"]["model"], meta)
        model.load_state_dict(torch.load(case_dir / "model.pt", weights_only=True))
        model.eval().to(device)
        X, Xt = (data[k].to(device, torch.float64) for k in ("X_train", "X_test"))
        y, yt = data["y_train"].to(device), data["y_test"].to(device)
        phases["peer_import_and_load"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        result["warmup_error"] = warm_up(spec, out, device)
        phases["warm_up"] = time.perf_counter() - t0
        logs = _LogCapture()
        logging.getLogger().addHandler(logs)
        release_freed_memory()
        if device.type == "cuda":
            synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        per_phase = reset_peak_rss()
        before = status_kb("VmRSS")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            matrix, state = _run_system(
                spec, model, X, y, Xt, yt, spec["settings"], str(case_dir / "model.pt"), out / "run"
            )
            synchronize(device)
            seconds = time.perf_counter() - start
        peak_kb = status_kb("VmHWM") if per_phase else None
        if device.type == "cuda":
            result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        result.update(
            seconds=seconds,
            rss_before_mb=None if before is None else before / 1024,
            peak_mb=peak_kb / 1024 if peak_kb is not None else lifetime_peak_mb(),
            peak_scope="influence work" if peak_kb is not None else "process lifetime",
            warnings=sorted({str(w.message)[:300] for w in caught} | set(logs.messages)),
        )
        t0 = time.perf_counter()
        matrix = matrix.detach().to(torch.float64).cpu().numpy()
        result["has_nan"] = bool(np.isnan(matrix).any())
        result["shape"] = list(matrix.shape)
        np.save(out / "matrix.npy", matrix)
        if spec["system"] == "ours":
            extra = after_ours(state)
            np.save(out / "s_dot_theta.npy", extra.pop("s_dot_theta"))
            result.update(extra)
        elif isinstance(state, tuple):  # Kronfluence: its two argument classes
            result["defaults"] = {
                f"{cls.__name__}.{k}": v
                for cls in state
                for k, v in constructor_defaults(cls).items()
            }
        else:
            result["defaults"] = constructor_defaults(state)
        phases["after"] = time.perf_counter() - t0
    except Exception as err:  # recorded as the row's note; the traceback goes to the log
        traceback.print_exc()
        result["error"] = f"{type(err).__name__}: {err}"[:1000]
    (out / "result.json").write_text(json.dumps(result, default=_json_default))
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


# ----- the parent -------------------------------------------------------------------------------
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
    n_params = sum(p.numel() for p in model.parameters())
    record: dict[str, Any] = {
        "name": case.name,
        "description": case.description,
        "n_train": len(data.y_train),
        "n_test": len(y_test),
        "test_points": f"the first {len(y_test)} of the test split",
        "n_params": n_params,
        "l2": case.l2,
        "damping": case.damping,
        "batch_size": case.batch_size,
        "repeats": case.repeats,
        "rank": case.rank,
        "training": training,
    }
    if case.damping > 0:  # non-convex: show that H + damping I is positive definite
        from influence_widgets.core.solvers import smallest_eigenvalue

        inf = iw.Influence(
            model, (data.X_train, data.y_train), l2=case.l2, damping=case.damping, progress=False
        )
        record["min_eigenvalue_with_damping"] = smallest_eigenvalue(inf.op)
        record["min_eigenvalue_note"] = (
            "smallest Ritz value of H + damping I after 40 Lanczos steps (an upper bound)"
        )
    return record


@dataclass
class Job:
    case: Case
    system: str
    solver: str
    repeat: int
    settings: dict[str, Any]
    device: str = "cpu"  # --device: where the child computes


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the child's process group (it runs in its own session) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def child_spec(job: Job, case_dir: Path, out: Path, threads: int) -> dict[str, Any]:
    """What a child reads (``--child SPEC``): the case, the run, its settings and device."""
    return {
        "case": asdict(job.case),
        "case_dir": str(case_dir),
        "system": job.system,
        "solver": job.solver,
        "settings": job.settings,
        "device": job.device,
        "threads": threads,
        "out_dir": str(out),
    }


def run_child(job: Job, case_dir: Path, workdir: Path, threads: int, limit: float) -> dict:
    """One child process; its result dict (with ``matrix``/``s_dot_theta`` paths) or a failure."""
    tag = f"{job.case.number}-{job.system}-{job.solver}-{job.repeat}"
    out = workdir / tag
    out.mkdir(parents=True, exist_ok=True)
    spec_path = out / "spec.json"
    spec_path.write_text(json.dumps(child_spec(job, case_dir, out, threads)))
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    log_path = out / "child.log"
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return {"error": f"timed out: killed after {limit:.0f} s", "timed_out": True}
        except BaseException:  # Ctrl-C or SIGTERM of the parent: take the child down with it
            _kill_group(proc)
            raise
    wall = time.perf_counter() - start
    result_path = out / "result.json"
    if not result_path.exists():
        tail = log_path.read_text()[-600:].strip().replace("\n", " | ")
        return {"error": f"crashed (return code {rc}) after {wall:.0f} s: {tail}"}
    result = json.loads(result_path.read_text())
    result["child_wall_seconds"] = wall
    if (out / "matrix.npy").exists():
        result["matrix_path"] = str(out / "matrix.npy")
    if (out / "s_dot_theta.npy").exists():
        result["s_dot_theta_path"] = str(out / "s_dot_theta.npy")
    return result


def normalised_matrix(result: dict, system: str, case_record: dict) -> np.ndarray | None:
    if "matrix_path" not in result:
        return None
    raw = np.load(result["matrix_path"])
    s_dot = np.load(result["s_dot_theta_path"]) if "s_dot_theta_path" in result else None
    return normalise(
        system, raw, n_train=case_record["n_train"], l2=case_record["l2"], s_dot_theta=s_dot
    )


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(vals) if vals else None


def build_row(case: Case, record: dict, system: str, solver: str, runs: list[dict]) -> dict:
    ok = [r for r in runs if r.get("seconds") is not None and "error" not in r]
    notes = sorted({r[k] for r in runs for k in ("error", "diverged", "no_reference") if k in r})
    row: dict[str, Any] = {
        "case": case.number,
        "case_name": case.name,
        "system": system,
        "solver": solver,
        "seconds": _median([r["seconds"] for r in ok]),
        "pearson_vs_exact": _median([r.get("pearson") for r in ok]),
        "rel_err_vs_exact": _median([r.get("rel_err") for r in ok]),
        "peak_mb": max((r["peak_mb"] for r in ok), default=None),
        "rss_before_mb": _median([r.get("rss_before_mb") for r in ok]),
        "peak_scope": ok[0]["peak_scope"] if ok else None,
        "device": runs[0].get("device", "cpu") if runs else "cpu",
        "has_nan": any(r.get("has_nan") for r in runs),
        "has_inf": any(r.get("has_inf") for r in runs),
        "runs_seconds": [r.get("seconds") if r in ok else None for r in runs],
        "repeats": len(runs),
        "n_train": record["n_train"],
        "n_test": record["n_test"],
        "n_params": record["n_params"],
        "settings": runs[0]["settings"] if runs else None,
        "normalisation": NORMALISATION[system],
    }
    if row["peak_mb"] is not None and row["rss_before_mb"] is not None:
        row["peak_increment_mb"] = row["peak_mb"] - row["rss_before_mb"]
    gpu_peaks = [r["peak_gpu_mb"] for r in ok if r.get("peak_gpu_mb") is not None]
    if gpu_peaks:
        row["peak_gpu_mb"] = max(gpu_peaks)
    if ok and ok[0].get("defaults"):
        row["constructor_defaults"] = ok[0]["defaults"]
    if ok:
        row["child_wall_seconds"] = _median([r.get("child_wall_seconds") for r in ok])
        row["child_phases_seconds"] = ok[0].get("child_phases_seconds")
    if ok and ok[0].get("diagnostics"):
        row["diagnostics"] = ok[0]["diagnostics"]
    warns = sorted({w for r in runs for w in r.get("warnings", [])})
    if warns:
        row["warnings"] = warns[:5]
    if any(r.get("timed_out") for r in runs):
        row["timed_out"] = True
    if notes:
        row["note"] = "; ".join(notes)
    if row["has_nan"]:
        row["note"] = "; ".join(filter(None, [row.get("note"), "NaN in the result"]))
    return row


# ----- targets ----------------------------------------------------------------------------------
def _find(rows: list[dict], case: int, system: str, solver: str) -> dict | None:
    return next(
        (r for r in rows if r["case"] == case and r["system"] == system and r["solver"] == solver),
        None,
    )


SYSTEM_NAMES = {"ours": "ours", "pydvl": "pyDVL", "captum": "Captum", "kronfluence": "Kronfluence"}
# The peer whose same solver an "ours" row's speed-up is taken against: pyDVL, except EK-FAC.
SPEED_PEER = {"ekfac": "kronfluence"}


def _speed(ours: dict, peer: dict, limit: float) -> tuple[float | None, str | None]:
    """(peer seconds / our seconds, note). A peer that timed out counts as the time limit, so the
    ratio is a lower bound; a peer that failed otherwise gives no ratio."""
    name = SYSTEM_NAMES[peer["system"]]
    if ours["seconds"] is None:
        return None, f"ours did not finish: {ours.get('note')}"
    if peer["seconds"] is not None:
        return peer["seconds"] / ours["seconds"], peer.get("note") and f"{name}: {peer['note']}"
    if peer.get("timed_out"):
        limit = peer.get("time_limit_seconds", limit)
        return limit / ours["seconds"], f"{name} timed out at {limit:.0f} s: a lower bound"
    return None, f"{name} produced no result: {peer.get('note')}"


def versus_peer(row: dict, rows: list[dict], limit: float) -> str:
    """An "ours" row's speed-up over the same solver of its peer (:data:`SPEED_PEER`, else
    pyDVL), as text ("" where there is none); ">= " where the peer timed out, so that the ratio
    is a lower bound."""
    peer_system = SPEED_PEER.get(row["solver"], "pydvl")
    peer = _find(rows, row["case"], peer_system, row["solver"])
    if row["system"] != "ours" or peer is None:
        return ""
    value, note = _speed(row, peer, limit)
    if value is None:
        return ""
    return f"{'>= ' if note and 'lower bound' in note else ''}{value:.1f}x"


def _target(case: int, name: str, target: str, measured, met: bool, note, **extra) -> dict:
    return {"case": case, "name": name, "target": target, "measured": measured, "met": bool(met),
            "note": note, **extra}  # fmt: skip


def targets(rows: list[dict], time_limit: float) -> list[dict]:
    """The issues' five targets for every case that has both rows."""
    out = []
    for case in sorted({r["case"] for r in rows}):
        ours, peer = _find(rows, case, "ours", "direct"), _find(rows, case, "pydvl", "direct")
        if ours and peer:
            ratio, note = _speed(ours, peer, time_limit)
            err = peer["rel_err_vs_exact"]
            equal = err is None or err <= 1e-6  # None: pyDVL has no result to be equal to
            out.append(_target(
                case, "exact: speed-up over pyDVL Direct at equal error",
                ">= 2x, pyDVL relative error <= 1e-6", ratio,
                ratio is not None and ratio >= 2 and equal, note, pydvl_rel_err=err,
                issue_reference=f"pyDVL Direct {ISSUE_REFERENCE['direct']} on case 1",
            ))  # fmt: skip
        ours, peer = _find(rows, case, "ours", "cg"), _find(rows, case, "pydvl", "cg")
        if ours and peer:
            ratio, note = _speed(ours, peer, time_limit)
            err = ours["rel_err_vs_exact"]
            out.append(_target(
                case, "CG: speed-up over pyDVL Cg at relative error <= 1e-4",
                ">= 20x, our relative error <= 1e-4", ratio,
                ratio is not None and ratio >= 20 and err is not None and err <= 1e-4, note,
                ours_rel_err=err, issue_reference=f"pyDVL Cg {ISSUE_REFERENCE['cg']} on case 1",
            ))  # fmt: skip
        ours, peer = _find(rows, case, "ours", "lissa"), _find(rows, case, "pydvl", "lissa")
        if ours and peer:
            ratio, note = _speed(ours, peer, time_limit)
            r = ours["pearson_vs_exact"]
            good = not ours["has_nan"] and not ours["has_inf"] and r is not None and r >= 0.999
            faster = ratio > 1 if ratio is not None else ours["seconds"] is not None
            out.append(_target(
                case, "LiSSA: no NaN, Pearson r >= 0.999, faster than pyDVL Lissa",
                "r >= 0.999, speed-up > 1", ratio, good and faster, note, ours_pearson=r,
                pydvl_pearson=peer["pearson_vs_exact"],
                issue_reference=f"pyDVL Lissa {ISSUE_REFERENCE['lissa']} on case 1",
            ))  # fmt: skip
        ours, peer = _find(rows, case, "ours", "arnoldi"), _find(rows, case, "captum", "arnoldi")
        if ours and peer:
            a, b = ours["pearson_vs_exact"], peer["pearson_vs_exact"]
            out.append(_target(
                case, "Arnoldi: Pearson r above Captum's at the same rank", "ours r > Captum r",
                a, a is not None and (b is None or a > b),
                None if b is not None else f"Captum: {peer.get('note')}", captum_pearson=b,
                ours_rel_err=ours["rel_err_vs_exact"], captum_rel_err=peer["rel_err_vs_exact"],
            ))  # fmt: skip
        ours, peer = _find(rows, case, "ours", "ekfac"), _find(rows, case, "kronfluence", "ekfac")
        if ours and peer:
            ratio, note = _speed(ours, peer, time_limit)
            a, b = ours["pearson_vs_exact"], peer["pearson_vs_exact"]
            as_good = a is not None and (b is None or a >= b)
            faster = ratio > 1 if ratio is not None else False
            out.append(_target(
                case, "EK-FAC: at equal or better Pearson r than Kronfluence, faster",
                "ours r >= Kronfluence r, speed-up > 1", ratio, as_good and faster, note,
                ours_pearson=a, kronfluence_pearson=b, ours_rel_err=ours["rel_err_vs_exact"],
                kronfluence_rel_err=peer["rel_err_vs_exact"],
            ))  # fmt: skip
    return out


# ----- output -----------------------------------------------------------------------------------
def fmt(value: Any, spec: str) -> str:
    width = int("".join(ch for ch in spec.split(".")[0] if ch.isdigit()) or 0)
    if value is None:
        return "-".rjust(width)
    return format(value, spec)


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"\n{m['cpu']}, {m['usable_cores']} cores, {m['threads']} torch threads per child")
    device = m.get("device", "cpu")  # files written before --device: the CPU
    print(f"device {device}" + (f" ({m.get('gpu')})" if device != "cpu" else ""))
    v = report["versions"]
    print(
        f"torch {v['torch']}, pyDVL {v.get('pyDVL')}, captum {v.get('captum')}, "
        f"kronfluence {v.get('kronfluence')}"
    )
    for number, c in report["cases"].items():
        if "error" in c:
            print(f"\ncase {number}: {c['error']}")
            continue
        t = c["training"]
        print(
            f"\ncase {number} {c['name']}: n={c['n_train']}, T={c['n_test']}, p={c['n_params']}, "
            f"l2={c['l2']:g}, damping={c['damping']:g}, batch {c['batch_size']}, "
            f"repeats {c['repeats']}; trained in {t['seconds']:.1f} s "
            f"({t['iterations']} L-BFGS iterations, grad norm {t['grad_norm']:.1e})"
        )
        print(f"  reference: {report['reference'].get(str(number))}")
        if "min_eigenvalue_with_damping" in c:
            print(f"  lambda_min(H + damping I) <= {c['min_eigenvalue_with_damping']:.4g}")
    head = (
        f"{'case':>4} {'system':<11} {'solver':<20} {'seconds':>9} {'vs peer':>8} "
        f"{'pearson':>10} {'rel err':>9} {'peak MB':>8} {'+MB':>7}  note"
    )
    print(f"\n{head}\n{'-' * len(head)}")
    rows = report["results"]
    for r in rows:
        ratio = versus_peer(r, rows, report["time_limit_seconds"]) or "-"
        print(
            f"{r['case']:>4} {r['system']:<11} {r['solver']:<20} {fmt(r['seconds'], '9.3f')} "
            f"{ratio:>8} {fmt(r['pearson_vs_exact'], '10.6f')} "
            f"{fmt(r['rel_err_vs_exact'], '9.1e')} {fmt(r['peak_mb'], '8.0f')} "
            f"{fmt(r.get('peak_increment_mb'), '7.0f')}  {(r.get('note') or '')[:90]}"
        )
    print("\ntargets")
    for t in report["targets"]:
        verdict = "met" if t["met"] else "MISSED"
        measured = fmt(t["measured"], ".4g")
        extra = f" ({t['note']})" if t.get("note") else ""
        ref = f"; issue reference: {t['issue_reference']}" if t.get("issue_reference") else ""
        print(f"  [{verdict:>6}] case {t['case']}: {t['name']}: {measured}{extra}{ref}")
    print(
        f"\ntotal {report['total_seconds']:.0f} s over {len(report['command_seconds'])} command(s)"
    )


SOLVER_LABELS = {
    ("ours", "direct"): "direct",
    ("ours", "cg"): "cg ({iterations} block iterations)",
    ("ours", "lissa"): "lissa ({iterations} steps, {batches})",
    ("ours", "arnoldi"): "arnoldi (rank {rank})",
    ("pydvl", "direct"): "Direct",
    ("pydvl", "cg"): "Cg",
    ("pydvl", "lissa"): "Lissa",
    ("pydvl", "arnoldi"): "Arnoldi (rank {rank})",
    ("captum", "naive"): "NaiveInfluenceFunction (its default projection)",
    ("captum", "naive_no_projection"): "NaiveInfluenceFunction without projection",
    ("captum", "arnoldi"): "ArnoldiInfluenceFunction (rank {rank})",
    ("ours", "ekfac"): "ekfac",
    ("kronfluence", "ekfac"): "EK-FAC (sampled-label Fisher)",
}


def _g(value: float) -> str:
    """Three significant figures, thousands separated."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _retrained(case: dict[str, Any], rows: list[dict]) -> str | None:
    """The ``measured`` stamp of a case's latest rows when the run that made them trained a
    different model from the earlier rows' (its record keeps ``earlier_training``), else None."""
    before, now = case.get("earlier_training"), case.get("training")
    keys = ("iterations", "risk")
    if not before or not now or all(before[k] == now[k] for k in keys):
        return None
    stamps = {r["measured"] for r in rows if r.get("measured")}
    return max(stamps) if len(stamps) > 1 else None


def _training_text(t: dict[str, Any]) -> str:
    return (
        f"{t['iterations']} L-BFGS iterations, risk {t['risk']:.9g}, "
        f"gradient norm {t['grad_norm']:.1e}"
    )


def markdown_tables(report: dict[str, Any]) -> str:
    """The README's tables: one per case, then its targets, all read from the report. Where a
    case's latest rows ran on a retrained model that differs from its earlier rows' (training
    again did not reproduce it), those rows are marked † and a line says so."""
    rows, out = report["results"], []
    order = {key: i for i, key in enumerate(SOLVER_LABELS)}
    for number in sorted({r["case"] for r in rows}):
        c = report["cases"][str(number)]
        retrained = _retrained(c, [r for r in rows if r["case"] == number])
        dates = sorted(
            {r["measured"][:10] for r in rows if r["case"] == number and r.get("measured")}
        )
        out += [
            f"Case {number}, {c['description']} (`{c['name']}`): n = {c['n_train']:,}, "
            f"{c['n_test']} test points, p = {c['n_params']:,}, l2 = {c['l2']:g}, "
            f"damping = {c['damping']:g}, {c['repeats']} repeat(s); measured "
            f"{', '.join(dates) or 'before rows were dated'}; accuracy against "
            f"{report['reference'][str(number)]}:",
            "",
            "| system | solver | median s | ours vs peer | Pearson r | rel. error "
            "| peak MB (+ over baseline) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in sorted(
            (r for r in rows if r["case"] == number),
            key=lambda r: order[(r["system"], r["solver"])],
        ):
            d = r.get("diagnostics") or {}
            batch = (r.get("settings") or {}).get("batch_size")
            label = SOLVER_LABELS[(r["system"], r["solver"])].format(
                iterations=d.get("iterations"),
                rank=c.get("rank"),
                batches="full batch" if batch is None else f"batches of {batch}",
            )
            if r["seconds"] is not None:
                secs = _g(r["seconds"])
            elif r.get("timed_out"):
                secs = (
                    f"killed at {r.get('time_limit_seconds', report['time_limit_seconds']):.0f} s"
                )
            else:
                secs = f"failed: {(r.get('note') or '')[:60]}"
            ratio = versus_peer(r, rows, report["time_limit_seconds"])
            diverged = "diverged" in (r.get("note") or "")
            r_value, err = r["pearson_vs_exact"], r["rel_err_vs_exact"]
            pearson = "diverged" if diverged else "" if r_value is None else f"{r_value:.6f}"
            if diverged or err is None:
                err = ""
            else:
                err = "0 (reference)" if err == 0 else f"{err:.1e}"
            peak = ""
            if r["peak_mb"] is not None:
                peak = f"{r['peak_mb']:,.0f} (+{r.get('peak_increment_mb', 0):,.0f})"
            system = SYSTEM_NAMES[r["system"]]
            if retrained and r.get("measured") == retrained:
                system += " †"
            out.append(f"| {system} | {label} | {secs} | {ratio} | {pearson} | {err} | {peak} |")
        out.append("")
        if retrained:
            out += [
                f"† ran on the model trained on {retrained[:10]} "
                f"({_training_text(c['training'])}); the other rows on the model of the earlier "
                f"runs ({_training_text(c['earlier_training'])}): training again did not reproduce "
                "the earlier model (the package's training code has changed since). Each row is "
                "compared with the reference computed on its own model; compare speeds and r "
                "within one model.",
                "",
            ]
        for t in (t for t in report["targets"] if t["case"] == number):
            verdict = "met" if t["met"] else "MISSED"
            value = "-" if t["measured"] is None else f"{t['measured']:.3g}"
            note = f" ({t['note']})" if t.get("note") else ""
            out.append(f"- {t['name']} (target {t['target']}): **{value}, {verdict}**{note}")
        out.append("")
    return "\n".join(out) + "\n"


# ----- main -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--quick", action="store_true", help="case 1 only, one repeat")
    parser.add_argument("--cases", help="comma-separated subset of 1,2,3,4 (default all)")
    parser.add_argument("--systems", help=f"comma-separated subset of {','.join(SYSTEMS)}")
    parser.add_argument(
        "--solvers", help=f"comma-separated subset of {','.join(SOLVERS)} (default all)"
    )
    parser.add_argument("--repeats", type=int, help="repeats of every case (default 3 / 1)")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=DEFAULT_TIME_LIMIT,
        help="seconds one child may run before it is killed (default 900)",
    )
    parser.add_argument("--threads", type=int, help="torch threads per child (default: cores)")
    parser.add_argument(
        "--device", default="cpu", help="where every child computes: cpu (default), cuda, cuda:N"
    )
    parser.add_argument(
        "--case4-n-train",
        type=int,
        default=5000,
        help="Fashion-MNIST training points of case 4 (default 5000)",
    )
    parser.add_argument(
        "--rank",
        type=int,
        default=DEFAULT_RANK,
        help="rank of every low-rank method in case 4 (default 50)",
    )
    parser.add_argument(
        "--n-test", type=int, help="test points of every case (default 100 / 10; for smoke runs)"
    )
    parser.add_argument(
        "--append",
        action="store_true",
        help="keep the rows already in --json of every (case, system, solver) this run does not "
        "redo (a run split over sessions, or one peer rerun with another --time-limit)",
    )
    parser.add_argument(
        "--include",
        type=Path,
        action="append",
        default=[],
        metavar="JSON",
        help="copy into --json the rows of another run's JSON that --cases, --systems and "
        "--solvers select, with their cases' records (runs done in parallel, one per core); "
        "may be repeated",
    )
    parser.add_argument(
        "--merge-only",
        action="store_true",
        help="run nothing: merge --include into --json (implies --append), or with --markdown "
        "alone write the tables of --json without changing it",
    )
    parser.add_argument(
        "--markdown", type=Path, help="also write the README's tables (one per case) to this file"
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep the child run directory")
    parser.add_argument("--child", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return args
    try:
        args.device = resolve_device(args.device, torch.device("cpu"))
    except ValueError as err:
        parser.error(f"--{err}")
    if args.device.type not in ("cpu", "cuda"):
        parser.error(f"--device: {str(args.device)!r} is not supported here; pass cpu or cuda")
    if args.quick and args.cases:
        parser.error("--quick runs case 1 only; leave out --cases or --quick")
    if args.cases:
        try:
            args.case_list = sorted({int(c) for c in args.cases.split(",") if c.strip()})
        except ValueError:
            parser.error(f"--cases: expected numbers from 1,2,3,4, got {args.cases!r}")
        bad = [c for c in args.case_list if c not in (1, 2, 3, 4)]
        if bad or not args.case_list:
            parser.error(f"--cases: unknown case(s) {bad}; choose from 1,2,3,4")
    else:
        args.case_list = [1] if args.quick else [1, 2, 3, 4]

    def subset(value: str | None, choices: tuple[str, ...], flag: str) -> list[str]:
        if not value:
            return list(choices)
        chosen = [v.strip() for v in value.split(",") if v.strip()]
        bad = sorted(set(chosen) - set(choices))
        if bad or not chosen:
            parser.error(f"{flag}: unknown {bad}; choose from {', '.join(choices)}")
        return chosen

    args.system_list = subset(args.systems, SYSTEMS, "--systems")
    args.solver_list = subset(args.solvers, SOLVERS, "--solvers")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats: must be >= 1, got {args.repeats}")
    if args.time_limit <= 0:
        parser.error(f"--time-limit: must be > 0, got {args.time_limit}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads: must be >= 1, got {args.threads}")
    if args.case4_n_train < 100:
        parser.error(f"--case4-n-train: must be >= 100, got {args.case4_n_train}")
    if args.n_test is not None and args.n_test < 1:
        parser.error(f"--n-test: must be >= 1, got {args.n_test}")
    if not 1 <= args.rank <= 1000:
        parser.error(f"--rank: must be between 1 and 1000, got {args.rank}")
    for path in args.include:
        if not path.is_file():
            parser.error(f"--include: no such file {str(path)!r}")
    if args.merge_only and not (args.json and (args.include or args.markdown)):
        parser.error(
            "--merge-only needs --json and --include (the runs to merge into it) or --markdown "
            "(where to write its tables)"
        )
    args.append = args.append or args.merge_only
    if args.merge_only and not args.include and not args.json.is_file():
        parser.error(f"--markdown: no results to write tables of: {str(args.json)!r} is missing")
    if args.quick and args.repeats is None:
        args.repeats = 1
    return args


def _check_peers_importable(systems: list[str]) -> None:
    for system, module in (
        ("pydvl", "pydvl.influence.torch"),
        ("captum", "captum.influence"),
        ("kronfluence", "kronfluence.analyzer"),
    ):
        if system in systems:
            try:
                __import__(module)
            except ImportError as err:
                raise SystemExit(
                    f"--systems includes {system} but {module} does not import ({err}); "
                    "run `make bench-peers` (it sets up .venv-peers) or pass --systems ours"
                ) from err


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    from tqdm.auto import tqdm

    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so that a running child is killed too

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyDVL's import-time deprecation notices
        if not args.merge_only:
            _check_peers_importable(args.system_list)
    threads = args.threads or usable_cores()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    cases = make_cases(args.case4_n_train, args.rank, quick=args.quick)
    command = shlex.join([sys.executable, *sys.argv])
    commands = [command]
    workroot = Path(tempfile.mkdtemp(prefix="iw-peers-"))
    report: dict[str, Any] = {
        "benchmark": "peers",
        "complete": False,
        "machine": machine_info(
            "cpu",
            "cores",
            "usable_cores",
            "threads",
            "gpu",
            "python",
            "platform",
            "date",
            "load_average_start",
        )
        | {"device": str(args.device)},
        "versions": peer_versions(),
        "commands": commands,
        "command_seconds": {},
        "quick": args.quick,
        "time_limit_seconds": args.time_limit,
        "normalisation": NORMALISATION,
        "reference": {},
        "cases": {},
        "results": [],
        "targets": [],
    }

    if args.append and args.json and args.json.exists():
        earlier = read_report(args.json, "--json")
        report["results"] = earlier["results"]  # run_case replaces the rows it redoes
        for key in ("cases", "reference"):
            report[key] = earlier[key]
        commands[:0] = earlier["commands"]
        report["command_seconds"] = command_seconds(earlier)
        report["earlier_machines"] = earlier.get("earlier_machines", [])
        this_device = None if args.merge_only else str(args.device)
        check_one_device(report["results"], this_device, f"--append {args.json}")
        if args.merge_only:  # nothing is measured here: the file keeps its machine and versions
            report["machine"], report["versions"] = earlier["machine"], earlier["versions"]
        else:
            report["earlier_machines"] = [*report["earlier_machines"], earlier["machine"]]

    for number, path in enumerate(args.include):
        other = read_report(path, "--include")
        if args.merge_only and number == 0 and not args.json.exists():
            # a new file takes the machine and versions of its first included run
            report["machine"], report["versions"] = other["machine"], other["versions"]
        if other["versions"] != report["versions"]:
            raise SystemExit(
                f"--include {path}: measured with {other['versions']}, not "
                f"{report['versions']} as --json; rerun it with the same packages"
            )
        taken = include_rows(report, other, args.case_list, args.system_list, args.solver_list)
        check_one_device(
            report["results"], None if args.merge_only else str(args.device), f"--include {path}"
        )
        if not taken:
            raise SystemExit(
                f"--include {path}: none of its rows is in the selected cases, "
                "systems and solvers; check --cases, --systems and --solvers"
            )
        print(f"--include {path}: {taken} rows", file=sys.stderr)

    tables_only = args.merge_only and not args.include  # --json is read, not written

    def save(complete: bool) -> None:
        report["targets"] = targets(report["results"], args.time_limit)
        if not tables_only:
            report["command_seconds"][command] = time.perf_counter() - start
        report["total_seconds"] = sum(report["command_seconds"].values())
        if tables_only:
            return
        report["complete"] = complete
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            partial = args.json.with_name(args.json.name + ".partial")
            partial.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
            os.replace(partial, args.json)  # a run killed mid-write leaves the last whole file

    try:
        for number in [] if args.merge_only else args.case_list:
            run_case(cases[number], args, threads, workroot, report, save, tqdm)
    finally:
        if not args.keep_tmp:
            shutil.rmtree(workroot, ignore_errors=True)
        else:
            print(f"child files kept in {workroot}", file=sys.stderr)
    if not args.merge_only:
        report["machine"]["load_average_end"] = list(os.getloadavg())
    save(complete=True)
    print_report(report)
    if args.json and not tables_only:
        print(f"wrote {args.json}")
    if args.markdown:
        args.markdown.write_text(markdown_tables(report))
        print(f"wrote {args.markdown}")
    return 0


REPORT_KEYS = ("results", "cases", "reference", "commands", "machine", "versions")


def check_one_device(rows: list[dict], device: str | None, what: str) -> None:
    """SystemExit naming ``what`` where ``rows`` (and this run's ``device``, unless None) come
    from more than one device: the targets compare seconds within a file. Rows written before
    ``--device`` existed were measured on the CPU."""
    found = sorted({r.get("device", "cpu") for r in rows} | ({device} if device else set()))
    if len(found) > 1:
        raise SystemExit(
            f"{what}: rows of {' and '.join(found)} would be mixed in one file (its targets "
            "compare their seconds); write each device's runs to their own --json"
        )


def read_report(path: Path, flag: str) -> dict[str, Any]:
    """A JSON written by this script, or SystemExit naming the flag that gave it."""
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SystemExit(f"{flag} {path}: not a readable JSON file ({err})") from err
    missing = [k for k in REPORT_KEYS if not isinstance(report, dict) or k not in report]
    if missing:
        raise SystemExit(
            f"{flag} {path}: not a results file of benchmarks/peers.py (no {', '.join(missing)})"
        )
    return report


def command_seconds(report: dict[str, Any]) -> dict[str, float]:
    """Wall seconds of every command that went into a report (files written before these were
    recorded per command have only the last command's, as ``total_seconds``)."""
    return dict(report.get("command_seconds") or {report["commands"][-1]: report["total_seconds"]})


def include_rows(
    report: dict[str, Any],
    other: dict[str, Any],
    cases: list[int],
    systems: list[str],
    solvers: list[str],
) -> int:
    """Copy into ``report`` the rows of ``other`` (another run's JSON) whose case, system and
    solver are selected, replacing rows of the same key; each case that gives rows brings its
    record and reference along, and ``other``'s commands and machines are recorded. Returns the
    number of rows taken."""
    taken = [
        r
        for r in other["results"]
        if r["case"] in cases and r["system"] in systems and r["solver"] in solvers
    ]
    keys = {(r["case"], r["system"], r["solver"]) for r in taken}
    report["results"] = [
        r for r in report["results"] if (r["case"], r["system"], r["solver"]) not in keys
    ] + taken
    for case in sorted({str(r["case"]) for r in taken}):
        report["cases"][case] = other["cases"][case]
        report["reference"][case] = other["reference"][case]
    commands = report["commands"]
    commands[-1:-1] = [c for c in other["commands"] if c not in commands]  # this one stays last
    for command, seconds in command_seconds(other).items():
        report["command_seconds"].setdefault(command, seconds)
    machines = report.setdefault("earlier_machines", [])
    for machine in [*other.get("earlier_machines", []), other["machine"]]:
        if machine not in machines and machine != report["machine"]:
            machines.append(machine)
    return len(taken)


def run_case(case: Case, args, threads: int, workroot: Path, report: dict, save, tqdm) -> None:
    repeats = args.repeats or case.repeats
    case = dataclasses.replace(case, repeats=repeats, n_test=args.n_test or case.n_test)
    runs = [(s, v) for s, v in case.runs if s in args.system_list and v in args.solver_list]
    if not runs:
        return
    print(f"case {case.number} {case.name}: training ...", file=sys.stderr, flush=True)
    case_dir = workroot / f"case{case.number}"
    try:
        record = prepare_case(case, case_dir)
    except Exception as err:  # data missing, training failed: report it, run the next case
        report["cases"][str(case.number)] = {
            "name": case.name,
            "error": f"{type(err).__name__}: {err}",
        }
        save(complete=False)
        return
    earlier_record = report["cases"].get(str(case.number))
    if earlier_record and "training" in earlier_record:  # rows kept from a run before this one
        record["earlier_training"] = earlier_record["training"]
    report["cases"][str(case.number)] = record
    n, p = record["n_train"], record["n_params"]
    measured = utc_now()
    device = str(args.device)

    def settings(system: str, solver: str) -> dict[str, Any]:
        return settings_for(
            system,
            solver,
            l2=case.l2,
            damping=case.damping,
            n=n,
            p=p,
            batch_size=case.batch_size,
            rank=case.rank,
            our_lissa=OUR_LISSA_STOCHASTIC if case.number == 4 else OUR_LISSA,
            device=device,
        )

    # The reference: our direct solve when it is among the runs (it runs first and is timed as a
    # row too), else a separate untimed child: direct (cases 1-3) or tight CG (case 4).
    reference: np.ndarray | None = None
    ref_solver = "direct" if case.reference == "direct" else "reference_cg"
    in_runs = ("ours", ref_solver) in runs
    if in_runs:
        runs.remove(("ours", ref_solver))
        runs.insert(0, ("ours", ref_solver))
    label = (
        "our float64 direct solve (Cholesky of the assembled H)"
        if ref_solver == "direct"
        else f"our float64 conjugate gradient at rtol {REFERENCE_CG['rtol']:g} "
        f"(maxiter {REFERENCE_CG['maxiter']}): H does not fit for a direct solve"
    )
    report["reference"][str(case.number)] = label + ", normalised as I_ref (no L2 in g_i)"
    if not in_runs:
        print(f"case {case.number}: reference ({ref_solver}) ...", file=sys.stderr, flush=True)
        job = Job(case, "ours", ref_solver, 0, settings("ours", ref_solver), device)
        result = run_child(
            job, case_dir, workroot, threads, max(args.time_limit, REFERENCE_TIME_LIMIT)
        )
        reference = normalised_matrix(result, "ours", record)
        record["reference_run"] = {
            k: result.get(k) for k in ("seconds", "error", "diagnostics", "peak_mb")
        }
        if reference is None:
            record["reference_error"] = result.get("error")

    results: dict[tuple[str, str], list[dict]] = {key: [] for key in runs}
    bar = tqdm(total=repeats * len(runs), desc=f"case {case.number}", file=sys.stderr)
    for repeat in range(repeats):
        for system, solver in runs:
            if any(r.get("timed_out") for r in results[(system, solver)]):
                bar.update()  # it would time out again: its row says killed at the limit
                continue
            bar.set_postfix_str(f"{system} {solver}")
            job = Job(case, system, solver, repeat, settings(system, solver), device)
            result = run_child(job, case_dir, workroot, threads, args.time_limit)
            result["settings"], result["device"] = job.settings, job.device
            matrix = normalised_matrix(result, system, record)
            if in_runs and reference is None and (system, solver) == ("ours", ref_solver):
                reference = matrix
            if matrix is not None and reference is not None:
                result["pearson"], result["rel_err"] = agreement(matrix, reference)
                finite = np.isfinite(matrix)
                result["has_inf"] = bool(np.isinf(matrix).any())
                top = float(np.abs(matrix[finite]).max()) if finite.any() else math.nan
                result["max_abs_entry"] = top
                ref_top = float(np.abs(reference).max())
                if not finite.all() or result["rel_err"] is None or top > 1e6 * ref_top:
                    result["diverged"] = (
                        f"diverged: largest |entry| {top:.3g} against {ref_top:.3g} in the "
                        f"reference{'; non-finite entries' if not finite.all() else ''}"
                    )
            elif matrix is not None:
                result["no_reference"] = "no reference to compare with: the reference run failed"
            for key in ("matrix_path", "s_dot_theta_path"):
                with contextlib.suppress(KeyError, OSError):
                    Path(result.pop(key)).unlink()
            results[(system, solver)].append(result)
            redone = [
                {**build_row(case, record, s, v, rs), "time_limit_seconds": args.time_limit,
                 "measured": measured}
                for (s, v), rs in results.items() if rs
            ]  # fmt: skip
            keys = {(r["system"], r["solver"]) for r in redone}
            report["results"] = [
                r
                for r in report["results"]
                if r["case"] != case.number or (r["system"], r["solver"]) not in keys
            ] + redone
            save(complete=False)
            bar.update()
            secs = result.get("seconds")
            print(
                f"  case {case.number} {system} {solver} #{repeat}: "
                + (
                    f"{secs:.3f} s"
                    if secs is not None and "error" not in result
                    else f"failed: {result.get('error', '')[:120]}"
                ),
                file=sys.stderr,
                flush=True,
            )
    bar.close()


if __name__ == "__main__":
    sys.exit(main())
