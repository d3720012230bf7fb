"""Training-set attacks (Koh & Liang 2017, Sec 5.2) on a two-class task with a frozen extractor.

The paper's setup, rebuilt from data we have: the frozen feature extractor shipped with the
package (``iw.models.fmnist_attack_model``: a small tanh CNN trained on the 8 other Fashion-MNIST
classes by ``scripts/train_fmnist_extractor.py``) and a logistic-regression top layer on its 784
convolutional features for the two held-out classes, Sandal against Sneaker (900 training and 300
test images per class, drawn with fixed seeds from Fashion-MNIST's own splits; l2 = 0.01): as in
the paper (2,048 Inception features, 1,800 training images), about as many features as training
points. Influence is over the top layer only (``params``); I_pert,loss differentiates through the
extractor to the pixels.

For each correctly classified test image in a fixed random subset (``--targets``, seed 0), and for
each number of perturbed training images (1, 2, 10) and eps (0.5, 2, 8 and, to show where flips
begin, 32 8-bit levels), one call of ``iw.craft_attack`` (step eps / 12.5, at most 100 steps,
retraining the top layer after every step, stopping once the prediction flips or at a fixed point).
The table gives the fraction of targets flipped, the mean number of steps and the wall time. The
paper flipped 57% / 77% / all but one of 591 targets with 1 / 2 / 10 images at eps = 0.5 levels on
Inception features.

    .venv/bin/python benchmarks/attack.py --targets 10 --json benchmarks/results/attack.json
    .venv/bin/python benchmarks/attack.py --quick      # 2 targets, 10 images at 32 levels
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import influence_widgets as iw
from influence_widgets.models import EXTRACTOR_HELD_OUT

HEAD = ["1.weight", "1.bias"]
L2 = 0.01


def per_class(X: torch.Tensor, y: torch.Tensor, k: int, seed: int):
    """k images of each class, a fixed random choice."""
    gen = torch.Generator().manual_seed(seed)
    idx = []
    for c in (0, 1):
        members = torch.nonzero(y == c).squeeze(1)
        idx.append(members[torch.randperm(len(members), generator=gen)[:k]])
    idx = torch.cat(idx)
    return X[idx], y[idx]


def setup() -> tuple[iw.Influence, torch.Tensor, torch.Tensor, dict[str, Any]]:
    data = iw.datasets.fashion_mnist(classes=list(EXTRACTOR_HELD_OUT))
    X, y = per_class(data.X_train, data.y_train, 900, seed=0)
    Xt, yt = per_class(data.X_test, data.y_test, 300, seed=1)
    model = iw.models.fmnist_attack_model()
    start = time.perf_counter()
    with torch.no_grad():  # the extractor is frozen: fit the head on its features
        features = model[0](X.double())
    report = iw.train(model[1], (features, y), l2=L2, progress=False)
    with torch.no_grad():
        pred = model(Xt.double()).argmax(1)
    inf = iw.Influence(model, (X, y), l2=L2, params=HEAD, progress=False).fit()
    info = {
        "classes": [data.class_names[0], data.class_names[1]],
        "n_train": len(X),
        "n_test": len(Xt),
        "n_params": inf.p,
        "test_accuracy": float((pred == yt).double().mean()),
        "train_seconds": time.perf_counter() - start,
        "train_grad_norm": report.grad_norm,
    }
    correct = torch.nonzero(pred == yt).squeeze(1)
    return inf, Xt[correct], yt[correct], info


def run(
    inf: iw.Influence, Xt, yt, n_targets: int, n_poisons, eps_levels, max_iter: int, on_row
) -> list[dict[str, Any]]:
    """One row per (n_poison, eps); ``on_row(rows)`` after each, so a long run keeps its rows."""
    gen = torch.Generator().manual_seed(0)
    targets = torch.randperm(len(Xt), generator=gen)[:n_targets].tolist()
    rows = []
    for n_poison in n_poisons:
        for levels in eps_levels:
            start = time.perf_counter()
            flips, steps, stops = [], [], []
            for t in targets:
                result = iw.craft_attack(
                    inf, Xt[t : t + 1], yt[t : t + 1], n_poison=n_poison,
                    eps=iw.eight_bit_levels(levels), max_iter=max_iter, progress=False,
                )  # fmt: skip
                flips.append(result.flipped)
                steps.append(result.iterations)
                stops.append(result.stopped)
            row = {
                "n_poison": n_poison,
                "eps_levels": levels,
                "n_targets": len(targets),
                "flip_rate": float(np.mean(flips)),
                "mean_iterations": float(np.mean(steps)),
                "stopped": {r: stops.count(r) for r in sorted(set(stops))},
                "seconds": time.perf_counter() - start,
            }
            rows.append(row)
            on_row(rows)
            print(
                f"  n_poison {n_poison:>2}  eps {levels:>4} levels: flipped "
                f"{row['flip_rate']:.0%} of {len(targets)} in {row['seconds']:.0f} s "
                f"(mean {row['mean_iterations']:.1f} steps)",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 targets, 1 eps: a smoke run")
    parser.add_argument("--targets", type=int, default=10, help="targets per configuration")
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--n-poison", default="1,2,10", help="numbers of images to perturb")
    parser.add_argument("--eps", default="0.5,2,8,32", help="eps values in 8-bit levels")
    parser.add_argument(
        "--append", action="store_true", help="keep the rows already in --json and add these"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    inf, Xt, yt, info = setup()
    print(
        f"{info['classes'][0]} vs {info['classes'][1]}: {info['n_train']} training images, test "
        f"accuracy {info['test_accuracy']:.3f}, {len(Xt)} correct test images",
        flush=True,
    )
    command = "benchmarks/attack.py " + " ".join(sys.argv[1:] if argv is None else argv)
    earlier: dict[str, Any] = {"results": [], "commands": []}
    if args.append and args.json and args.json.exists():
        earlier = json.loads(args.json.read_text())
        earlier.setdefault("commands", [earlier.get("command")])

    def save(rows: list[dict[str, Any]], complete: bool = False) -> None:
        if not args.json:
            return
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {
            "command": command,
            "commands": [*earlier["commands"], command],
            "machine": {
                "cores": os.cpu_count(),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "python": platform.python_version(),
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            },
            "setup": info,
            "max_iter": max_iter,
            "complete": complete,
            "total_seconds": time.perf_counter() - start,
            "results": [*earlier["results"], *rows],
        }
        args.json.write_text(json.dumps(out, indent=2) + "\n")

    if args.quick:
        max_iter = min(args.max_iter, 30)
        rows = run(inf, Xt, yt, 2, (10,), (32,), max_iter, save)
    else:
        max_iter = args.max_iter
        eps = [float(v) for v in args.eps.split(",")]
        n_poisons = [int(v) for v in args.n_poison.split(",")]
        rows = run(inf, Xt, yt, args.targets, n_poisons, eps, max_iter, save)
    save(rows, complete=True)
    print(
        f"total {time.perf_counter() - start:.0f} s" + (f", wrote {args.json}" if args.json else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
