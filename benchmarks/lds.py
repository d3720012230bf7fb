"""The linear datamodeling score (LDS) of every attribution method, with its noise floor.

One row per (model, training regime, system, method): ``iw.lds`` on M random subsets of half the
training points (``--subsets``, ``--fraction``), the same subsets, seeds and test points for every
method of a (model, regime): the subsets are retrained ONCE per (model, regime) and every method's
(T, n) attribution is scored against those outputs with ``LDSResult.rescore``. The output is the
margin log p(y|x) - log(1 - p(y|x)) of the true test label (TRAK, dattri); the noise floor is the
Spearman between two seeds' retrains of the same subsets.

Models (seeded, float64, inputs in [0, 1]): ``digits_lr`` (10-class logistic regression, 650
parameters, 1,300 training points), ``digits_mlp`` (64-64-10 ReLU, 4,810 parameters),
``fmnist_mlp`` (784-128-10 ReLU on 5,000 / 500 Fashion-MNIST images) and ``digits_cnn``
(``iw.models.small_cnn``, 1,954 parameters). Regimes, each also the retraining recipe of the LDS
subsets (from scratch: the modules' ``reset_parameters()`` under the subset's seed):

- ``minimum``: ``iw.train`` (full-batch L-BFGS) to ||grad R|| <= 1e-8 or ``--max-iter`` iterations
  with l2 = 1e-2; Influence with l2 = 1e-2.
- ``practitioner``: Adam, lr 1e-3, weight decay 1e-4 (torch's coupled decay: the gradient of
  (1e-4 / 2)||theta||^2), ``--epochs`` epochs of shuffled batches of 64 (the shuffle seeded by the
  retrain's seed); Influence with l2 = 1e-4 at a point that is not a minimum.

Methods: ours, ``iw.Influence(..., solver=S, hessian=H, damping="auto")`` for S in direct, cg,
lissa, arnoldi (H exact and gauss-newton) and ekfac (always Gauss-Newton); ``predicted_removal_effect``
are the scores. dattri 0.3.0 (``--dattri explicit,cg``, imported from ``--dattri-path``): IF explicit
and CG with ``regularization`` = our l2 + our chosen damping (its Hessian is that of the mean loss
without L2). LDS is invariant to a positive scale, so only the sign matters: the brief
expected dattri's sign to be opposite to ours, but dattri 0.3.0's IF scores g_test^T (H + rI)^-1
g_train come out with the sign of ``predicted_removal_effect`` (Pearson +1.0 with our direct
solver on digits LR, checked by tests/test_lds_benchmark.py), so they are used as they are.

    .venv/bin/python benchmarks/lds.py --json benchmarks/results/lds.json
    .venv/bin/python benchmarks/lds.py --markdown -    # the table of an existing JSON

TRAK's and dattri's setting is 100 subsets and 100 test points; a run with fewer is written with
``"complete": false``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import machine_info
from proc_memory import lifetime_peak_mb, reset_peak_rss, status_kb

import influence_widgets as iw
from influence_widgets.analysis.lds import TrainFromScratch, reinitialise

ROOT = Path(__file__).resolve().parents[1]
DTYPE = torch.float64
MIN_L2 = 1e-2
ADAM = {"lr": 1e-3, "weight_decay": 1e-4, "batch_size": 64}
FULL_SUBSETS, FULL_TEST = 100, 100
SOLVERS = ("direct", "cg", "lissa", "arnoldi", "ekfac")
HESSIANS = ("exact", "gauss-newton")
DATTRI_METHODS = ("explicit", "cg")
ROW_KEYS = (
    "model",
    "regime",
    "system",
    "method",
    "solver",
    "hessian",
    "damping",
    "lds",
    "lds_se",
    "noise_floor",
    "noise_floor_se",
    "seconds",
    "peak_mb",
    "subsets",
    "fraction",
    "n_train",
    "n_test",
    "recipe",
    "command",
)


# ----- models ------------------------------------------------------------------------------------
@dataclass
class Case:
    """A model (fresh from ``make()``, seeded) and its data: training (X, y), test (x, y)."""

    name: str
    make: Callable[[], torch.nn.Module]
    X: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def _seeded(build: Callable[[], torch.nn.Module], seed: int = 0) -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


def _case(name: str, data, build, n_train: int | None, n_test: int) -> Case:
    X, y = data.X_train.to(DTYPE), data.y_train
    if n_train is not None:
        X, y = X[:n_train], y[:n_train]
    return Case(
        name, lambda: _seeded(build), X, y, data.X_test[:n_test].to(DTYPE), data.y_test[:n_test]
    )


def digits_lr(n_test: int, n_train: int | None = None) -> Case:
    """10-class logistic regression on the digits (64 -> 10 with bias, 650 parameters)."""
    return _case(
        "digits_lr",
        iw.datasets.digits(),
        lambda: torch.nn.Linear(64, 10, dtype=DTYPE),
        n_train,
        n_test,
    )


def digits_mlp(n_test: int, n_train: int | None = None) -> Case:
    """A 64-64-10 ReLU MLP on the digits (4,810 parameters)."""

    def build():
        return torch.nn.Sequential(
            torch.nn.Linear(64, 64, dtype=DTYPE),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 10, dtype=DTYPE),
        )

    return _case("digits_mlp", iw.datasets.digits(), build, n_train, n_test)


def fmnist_mlp(n_test: int, n_train: int | None = 5000) -> Case:
    """A 784-128-10 ReLU MLP on 5,000 Fashion-MNIST training images (101,770 parameters)."""

    def build():
        return torch.nn.Sequential(
            torch.nn.Linear(784, 128, dtype=DTYPE),
            torch.nn.ReLU(),
            torch.nn.Linear(128, 10, dtype=DTYPE),
        )

    return _case("fmnist_mlp", iw.datasets.fashion_mnist(), build, n_train, min(n_test, 500))


def digits_cnn(n_test: int, n_train: int | None = None) -> Case:
    """``iw.models.small_cnn`` on the digits (tanh, 1,954 parameters)."""
    data = iw.datasets.digits()
    return _case("digits_cnn", data, lambda: iw.models.small_cnn(data), n_train, n_test)


CASES = {f.__name__: f for f in (digits_lr, digits_mlp, fmnist_mlp, digits_cnn)}


# ----- training regimes (each also the LDS retraining recipe) ------------------------------------
@dataclass(frozen=True)
class AdamRecipe:
    """``train_fn(model_factory, X, y, seed)``: re-initialise under ``seed``, then ``epochs``
    epochs of Adam (lr, coupled weight decay) on batches shuffled by a generator seeded ``seed``."""

    epochs: int
    lr: float = ADAM["lr"]
    weight_decay: float = ADAM["weight_decay"]
    batch_size: int = ADAM["batch_size"]

    def __call__(self, model_factory, X, y, seed: int) -> torch.nn.Module:
        model = reinitialise(model_factory(), seed)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(int(seed))
        loss_fn = torch.nn.CrossEntropyLoss()
        model.train()
        for _ in range(self.epochs):
            for idx in torch.randperm(len(X), generator=gen).split(self.batch_size):
                opt.zero_grad()
                loss_fn(model(X[idx]), y[idx]).backward()
                opt.step()
        model.eval()
        return model


def regime(name: str, epochs: int, max_iter: int) -> tuple[Callable, float, str]:
    """(train_fn, the l2 Influence uses, the recipe in words) of a training regime."""
    if name == "minimum":
        recipe = f"iw.train (L-BFGS) to ||grad R|| <= 1e-8 or {max_iter} iterations, l2 = 1e-2"
        return TrainFromScratch(MIN_L2, "cross_entropy", max_iter=max_iter), MIN_L2, recipe
    if name == "practitioner":
        recipe = (
            f"Adam lr {ADAM['lr']:g}, weight decay {ADAM['weight_decay']:g}, {epochs} "
            f"epochs, batches of {ADAM['batch_size']}"
        )
        return AdamRecipe(epochs), ADAM["weight_decay"], recipe
    raise ValueError(f"regime: expected minimum or practitioner, got {name!r}")


# ----- methods -----------------------------------------------------------------------------------
def methods(solvers, hessians) -> list[tuple[str, str]]:
    """(solver, hessian) pairs: every solver with every Hessian, ekfac with gauss-newton only."""
    pairs = []
    for s in solvers:
        for h in ("gauss-newton",) if s == "ekfac" else hessians:
            pairs.append((s, h))
    return list(dict.fromkeys(pairs))


def measured(compute: Callable[..., Any], *args) -> tuple[Any, float, float]:
    """(compute(*args), seconds, peak resident MB during it)."""
    reset = reset_peak_rss()
    start = time.perf_counter()
    value = compute(*args)
    seconds = time.perf_counter() - start
    peak = status_kb("VmHWM") / 1024 if reset else lifetime_peak_mb()
    return value, seconds, peak


def ours(model, case: Case, l2: float, solver: str, hessian: str) -> tuple[np.ndarray, dict]:
    """Our scores (T, n) with damping "auto", and the settings chosen."""
    inf = iw.Influence(
        model,
        (case.X, case.y),
        l2=l2,
        damping="auto",
        solver=solver,
        hessian=hessian,
        progress=False,
    )
    scores = inf.predicted_removal_effect(case.x_test, case.y_test)
    return scores.detach().double().numpy(), {"damping": float(inf.damping)}


def dattri_scores(model, case: Case, regularization: float, method: str) -> np.ndarray:
    """dattri's IF (``explicit`` or ``cg``) on the same model, (T, n), scaled by 1/n."""
    from dattri.algorithm.influence_function import IFAttributorCG, IFAttributorExplicit
    from dattri.task import AttributionTask

    def loss(params, batch):
        x, y = batch
        return torch.nn.functional.cross_entropy(torch.func.functional_call(model, params, x), y)

    task = AttributionTask(loss_func=loss, model=model, checkpoints=model.state_dict())
    cls = {"explicit": IFAttributorExplicit, "cg": IFAttributorCG}[method]
    extra = {"max_iter": 100, "tol": 1e-10} if method == "cg" else {}
    attributor = cls(task=task, device="cpu", regularization=regularization, **extra)
    train = torch.utils.data.TensorDataset(case.X, case.y)
    test = torch.utils.data.TensorDataset(case.x_test, case.y_test)
    full = torch.utils.data.DataLoader(train, batch_size=len(train))
    attributor.cache(full)
    with torch.no_grad():
        score = attributor.attribute(
            torch.utils.data.DataLoader(train, batch_size=len(train)),
            torch.utils.data.DataLoader(test, batch_size=len(test)),
        )
    return score.T.detach().double().numpy() / len(case.X)


# ----- one (model, regime) -----------------------------------------------------------------------
def train_model(case: Case, train_fn: Callable) -> torch.nn.Module:
    """The model of a (case, regime): the regime's recipe on all n training points, seed 0."""
    return train_fn(case.make, case.X, case.y, 0)


def retrain_once(model, case: Case, train_fn, l2: float, settings: dict) -> iw.LDSResult:
    """The LDS retrains of a (case, regime), once: outputs of every subset (and its rerun) on the
    test points. Scored here with zero scores; every method is scored by ``rescore``."""
    zeros = np.zeros((len(case.x_test), len(case.X)))
    return iw.lds(
        zeros,
        (case.X, case.y),
        x_test=case.x_test,
        y_test=case.y_test,
        train_fn=train_fn,
        model=model,
        l2=l2,
        subsets=settings["subsets"],
        fraction=settings["fraction"],
        noise_floor=settings["noise_floor"],
        seed=settings["seed"],
        progress=False,
    )


def row(case: Case, regime_name: str, base: iw.LDSResult, result: iw.LDSResult, **extra) -> dict:
    """One JSON row: the LDS of one method against the (case, regime)'s retrains."""
    return {
        "model": case.name,
        "regime": regime_name,
        "lds": result.mean,
        "lds_se": result.se,
        "noise_floor": base.noise_floor,
        "noise_floor_se": base.noise_floor_se,
        "subsets": base.n_subsets,
        "fraction": base.fraction,
        "n_train": len(case.X),
        "n_test": len(case.x_test),
        "lds_per_test": [float(v) for v in result.per_test],
        **extra,
    }


def run_case(case: Case, regime_name: str, settings: dict) -> list[dict]:
    """Every method's row for one (case, regime), all scored against the same retrains."""
    train_fn, l2, recipe = regime(regime_name, settings["epochs"], settings["max_iter"])
    model, train_s, _ = measured(train_model, case, train_fn)
    base, retrain_s, _ = measured(retrain_once, model, case, train_fn, l2, settings)
    common = {
        "recipe": recipe,
        "l2": l2,
        "train_seconds": train_s,
        "retrain_seconds": retrain_s,
        "command": settings["command"],
        "subset_hash": subset_hash(base.masks),
    }
    rows, chosen = [], {}

    def add(scores, seconds: float, peak_mb: float, **method) -> None:
        """The row of one method's (T, n) scores, rescored against the shared retrains."""
        rows.append(
            row(
                case,
                regime_name,
                base,
                base.rescore(scores),
                seconds=seconds,
                peak_mb=peak_mb,
                **method,
                **common,
            )
        )

    for solver, hessian in methods(settings["solvers"], settings["hessians"]):
        (scores, info), s, mb = measured(ours, model, case, l2, solver, hessian)
        chosen.setdefault(solver, info["damping"])
        add(
            scores,
            s,
            mb,
            system="ours",
            method=f"{solver} ({hessian})",
            solver=solver,
            hessian=hessian,
            damping=info["damping"],
        )
        print(
            f"  {case.name} {regime_name} ours {solver} ({hessian}): "
            f"LDS {rows[-1]['lds']:.3f} in {s:.2f} s",
            flush=True,
        )
    for method in settings["dattri"]:
        reg = l2 + chosen.get("direct", chosen.get("cg", 0.0))
        scores, s, mb = measured(dattri_scores, model, case, reg, method)
        add(
            scores,
            s,
            mb,
            system="dattri",
            method=f"IF {method}",
            solver=method,
            hessian="exact",
            damping=reg - l2,
        )
    return rows


def subset_hash(masks: np.ndarray) -> str:
    """A short digest of the subsets, to show which rows share them."""
    return hashlib.sha256(np.packbits(masks).tobytes()).hexdigest()[:12]


# ----- table, JSON, command line -----------------------------------------------------------------
def _fmt(value, se=None) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.3f}" if se is None or not np.isfinite(se) else f"{value:.3f} ± {se:.3f}"


def markdown(report: dict) -> str:
    """The Markdown table of a report: one line per row, with its status and command."""
    lines = [
        f"{'Complete run' if report['complete'] else 'Reduced run (fewer than 100 subsets)'}: "
        f"`{report['command']}`",
        "",
        "| model | regime | system | method | damping | LDS ± se | noise floor ± se | "
        "seconds | peak MB | subsets | n_test |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['model']} | {r['regime']} | {r['system']} | {r['method']} | "
            f"{r['damping']:.3g} | {_fmt(r['lds'], r['lds_se'])} | "
            f"{_fmt(r['noise_floor'], r['noise_floor_se'])} | {r['seconds']:.2f} | "
            f"{r['peak_mb']:.0f} | {r['subsets']} | {r['n_test']} |"
        )
    return "\n".join(lines)


def run(settings: dict) -> dict:
    """All rows of the (case, regime) pairs asked for, and the report's header."""
    torch.set_num_threads(settings["threads"])
    machine = machine_info(
        "cpu",
        "cores",
        "usable_cores",
        "threads",
        "gpu",
        "torch",
        "python",
        "platform",
        "date",
        "load_average_start",
    )
    rows = []
    for name in settings["cases"]:
        case = CASES[name](settings["n_test"])
        for regime_name in settings["regimes"]:
            rows += run_case(case, regime_name, settings)
    complete = settings["subsets"] >= FULL_SUBSETS and settings["n_test"] >= FULL_TEST
    return {
        "complete": complete,
        "command": settings["command"],
        "machine": machine,
        "load_average_end": list(os.getloadavg()),
        "versions": versions(),
        "settings": {k: v for k, v in settings.items() if k != "command"},
        "rows": rows,
    }


def versions() -> dict:
    """The versions of what produced the numbers."""
    out = {"numpy": np.__version__, "influence_widgets": getattr(iw, "__version__", None)}
    try:
        out["dattri"] = metadata.version("dattri")
    except metadata.PackageNotFoundError:
        out["dattri"] = None
    return out


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default="digits_lr,digits_mlp")
    p.add_argument("--regimes", default="minimum,practitioner")
    p.add_argument("--solvers", default=",".join(SOLVERS))
    p.add_argument("--hessians", default=",".join(HESSIANS))
    p.add_argument("--dattri", default="", help="dattri IF methods: explicit,cg (empty: none)")
    p.add_argument("--dattri-path", default=None, help="a folder to import dattri from")
    p.add_argument("--subsets", type=int, default=FULL_SUBSETS)
    p.add_argument("--n-test", type=int, default=FULL_TEST)
    p.add_argument("--fraction", type=float, default=0.5)
    p.add_argument("--no-noise-floor", action="store_true")
    p.add_argument("--epochs", type=int, default=10, help="practitioner regime's epochs")
    p.add_argument("--max-iter", type=int, default=1000, help="minimum regime's L-BFGS limit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None, help="write the table here ('-': print)")
    return p.parse_args(argv)


def settings_of(args: argparse.Namespace, argv: list[str]) -> dict:
    """The run's settings from the command line (lists split at commas)."""
    split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    return {
        "cases": split(args.cases),
        "regimes": split(args.regimes),
        "solvers": split(args.solvers),
        "hessians": split(args.hessians),
        "dattri": split(args.dattri),
        "subsets": args.subsets,
        "n_test": args.n_test,
        "fraction": args.fraction,
        "noise_floor": not args.no_noise_floor,
        "epochs": args.epochs,
        "max_iter": args.max_iter,
        "seed": args.seed,
        "threads": args.threads,
        "command": shlex.join(["python", "benchmarks/lds.py", *argv]),
    }


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.dattri_path:
        sys.path.insert(0, args.dattri_path)
    only_table = args.markdown and not args.json and args.cases == parse([]).cases
    if only_table:  # --markdown alone: the table of the committed JSON
        report = json.loads((ROOT / "benchmarks/results/lds.json").read_text())
    else:
        report = run(settings_of(args, argv))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    print(table)
    if args.markdown and args.markdown != "-":
        Path(args.markdown).write_text(table + "\n")
    return report


if __name__ == "__main__":
    main()
