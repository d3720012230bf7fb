"""Finding wrong labels with each attribution method's self-scores, on a network trained as
practitioners train it.

The model: benchmarks/lds_models.py's ``digits_mlp`` (64-64-10 ReLU, 4,810 parameters, float64)
trained by its ``practitioner`` recipe (Adam, lr 1e-3, weight decay 1e-4, ``--epochs`` epochs of
batches of 64) on the 1,300 digits training images with 10% of the labels flipped uniformly to
another class (``iw.analysis.mislabel.flip_labels``, its own random stream per seed). Each
method's ``self_scores()`` (the contract of ``iw.AttributionMethod``: a training point's score
for itself, >= 0, large = check its label first) ranks the training points; the row is the ROC
AUC of that ranking for telling flipped from clean points (1 = every flip ranked above every clean
point, 0.5 = chance), with its mean over ``--seeds`` seeds. dattri reports about 0.87 for IF-CG and
about 1.0 for TRAK with 50 models on its MNIST-10 MLP.

Methods, each on the same noisy model and labels:

- ``influence``: ``iw.Influence(..., l2=1e-4, damping="auto")``'s ``self_scores()`` =
  -(1/n) I_up,loss(z_i, z_i) (direct solver: H is 4,810 x 4,810), the paper's Sec 5.4 order;
- ``influence (gauss-newton)``: the same with ``hessian="gauss-newton"``;
- ``grad-dot``: ``iw.GradDot``: ||grad L(z_i)||^2;
- ``tracin``: ``iw.TracIn`` on the ``--epochs`` epoch ends of the model's own Adam run, weight lr;
- ``trak``: ``iw.TRAK`` on ``--trak-models`` models trained by the same recipe on random halves
  of the noisy training set (512-dimensional projection, seed 0, no damping);
- ``loss``: the training loss L(z_i, theta) (the baseline the paper compares with);
- ``random``: a seeded permutation.

    .venv/bin/python benchmarks/mislabel_methods.py --json benchmarks/results/mislabel.json

writes its rows under the key ``"methods"`` of that JSON, keeping the rest of the file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lds_models import CASES, AdamRecipe, half_models
from machine import machine_info
from sklearn.metrics import roc_auc_score

import influence_widgets as iw
from influence_widgets.analysis.mislabel import flip_labels

FLIP_FRACTION = 0.1
L2 = 1e-4  # the practitioner recipe's weight decay, as benchmarks/lds.py gives Influence
METHODS = ("influence", "influence (gauss-newton)", "grad-dot", "tracin", "trak", "loss", "random")


def self_scores(
    method: str, model: torch.nn.Module, X, y, checkpoints: list, halves: list, seed: int
) -> torch.Tensor:
    """(n,) scores of ``method`` for each training point: larger = check its label first."""
    with warnings.catch_warnings():  # the practitioner model is not at a minimum, by design
        warnings.simplefilter("ignore", iw.InfluenceWarning)
        if method.startswith("influence"):
            hessian = "gauss-newton" if "gauss" in method else "exact"
            inf = iw.Influence(
                model, (X, y), l2=L2, damping="auto", hessian=hessian, solver="direct",
                progress=False,
            )  # fmt: skip
            return inf.self_scores()
        if method == "grad-dot":
            return iw.GradDot(model, (X, y), progress=False).self_scores()
        if method == "tracin":
            return iw.TracIn(model, (X, y), checkpoints, progress=False).self_scores()
        if method == "trak":
            trak = iw.TRAK(halves, (X, y), projection_dim=512, damping=0.0, seed=0, progress=False)
            return trak.self_scores()
    if method == "loss":
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(model(X), y, reduction="none")
    return torch.from_numpy(np.random.default_rng([seed, 7]).permutation(len(X)).astype(float))


def one_seed(seed: int, epochs: int, trak_models: int, methods: list[str]) -> dict[str, Any]:
    """Every method's AUC and seconds on one noisy training set."""
    case = CASES["digits_mlp"](n_test=1)
    noisy, flipped = flip_labels(case.y, 10, FLIP_FRACTION, None, seed)
    is_flipped = np.zeros(len(noisy), dtype=bool)
    is_flipped[flipped.numpy()] = True
    recipe = AdamRecipe(epochs)
    model, states = recipe.trajectory(case.make, case.X, noisy, seed)
    checkpoints = [iw.Checkpoint(state=s, lr=recipe.lr) for s in states]
    halves = []
    if "trak" in methods:
        made, _ = half_models(replace(case, y=noisy), recipe, trak_models, seed)
        for state in made:
            m = case.make()
            m.load_state_dict(state)
            halves.append(m)
    out = {"seed": seed, "n_flipped": int(is_flipped.sum())}
    for method in methods:
        start = time.perf_counter()
        score = self_scores(method, model, case.X, noisy, checkpoints, halves, seed)
        seconds = time.perf_counter() - start
        out[method] = {
            "auc": float(roc_auc_score(is_flipped, score.detach().cpu().numpy())),
            "seconds": seconds,
        }
        print(f"  seed {seed} {method}: AUC {out[method]['auc']:.3f} in {seconds:.1f} s")
    return out


def rows(per_seed: list[dict[str, Any]], methods: list[str], settings: dict) -> list[dict]:
    """One row per method: mean AUC over seeds, each seed's, mean seconds."""
    return [
        {
            "dataset": "digits",
            "model": "digits_mlp (64-64-10 ReLU)",
            "regime": "practitioner",
            "noise": "uniform",
            "flip_fraction": FLIP_FRACTION,
            "method": m,
            "auc": float(np.mean([s[m]["auc"] for s in per_seed])),
            "auc_per_seed": [s[m]["auc"] for s in per_seed],
            "seconds": float(np.mean([s[m]["seconds"] for s in per_seed])),
            **settings,
        }
        for m in methods
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", type=Path, help="add the rows to this JSON under 'methods'")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--trak-models", type=int, default=10)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"--methods: unknown {', '.join(unknown)}; known: {', '.join(METHODS)}")
    torch.set_num_threads(args.threads)
    per_seed = [one_seed(s, args.epochs, args.trak_models, methods) for s in range(args.seeds)]
    command = "python benchmarks/mislabel_methods.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    settings = {"epochs": args.epochs, "trak_models": args.trak_models, "seeds": args.seeds}
    report = {
        "command": command,
        "machine": machine_info("cpu", "cores", "threads", "torch", "python", "date"),
        "rows": rows(per_seed, methods, settings),
    }
    for r in report["rows"]:
        print(f"{r['method']:<26} AUC {r['auc']:.3f}  ({r['seconds']:.1f} s)")
    if args.json:
        old = json.loads(args.json.read_text()) if args.json.exists() else {}
        args.json.write_text(json.dumps({**old, "methods": report}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
