"""Training-set attacks (Koh & Liang 2017, Sec 5.2) on a two-class task with a frozen extractor.

The paper's setup, rebuilt from data we have: the frozen feature extractor shipped with the
package (``iw.models.fmnist_attack_model``: a small tanh CNN trained on the 8 other Fashion-MNIST
classes by ``scripts/train_fmnist_extractor.py``) and a logistic-regression top layer on its 784
convolutional features for the two held-out classes, Sandal against Sneaker (900 training and 300
test images per class, drawn with fixed seeds from Fashion-MNIST's own splits; l2 = 0.01): as in
the paper (2,048 Inception features, 1,800 training images), about as many features as training
points. Influence is over the top layer only (``params``); I_pert,loss differentiates through the
extractor to the pixels.

For each correctly classified test image in a fixed random subset (``--targets``, default 200, the
first of one permutation with seed 0), and for each number of perturbed training images (1, 2,
10) and eps (0.5, 2, 8 8-bit levels), one call of ``iw.craft_attack`` (step eps / 12.5, at most 100
steps, retraining the top layer after every step, stopping once the prediction flips or at a fixed
point). The run goes target by target through all the cells and rewrites the JSON after each
target, so ``--resume`` continues a run that was killed or split over sessions, and ``--shard
K/N`` with ``--include`` spreads it over processes. The table gives the fraction of targets
flipped, the mean number of steps and the attack time per cell. The paper flipped 57% / 77% / all
but one of 591 targets with 1 / 2 / 10 images at eps = 0.5 levels on Inception features.

    .venv/bin/python benchmarks/attack.py --threads 1 --json benchmarks/results/attack.json --resume
    .venv/bin/python benchmarks/attack.py --shard 0/2 --threads 1 --json /tmp/a0.json --resume &
    .venv/bin/python benchmarks/attack.py --shard 1/2 --threads 1 --json /tmp/a1.json --resume
    .venv/bin/python benchmarks/attack.py --include /tmp/a0.json /tmp/a1.json --json OUT --merge-only
    .venv/bin/python benchmarks/attack.py --quick      # 2 targets, 10 images at 32 levels
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import machine_info, utc_now

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


def target_order(n_correct: int, n_targets: int) -> list[int]:
    """The fixed random subset of correctly classified test images (seed 0): the first
    ``n_targets`` of one permutation, so a smaller run's targets are a larger run's first ones."""
    gen = torch.Generator().manual_seed(0)
    return torch.randperm(n_correct, generator=gen)[:n_targets].tolist()


def summarise(records: list[dict[str, Any]], cells: list[tuple[int, float]]) -> list[dict]:
    """One row per (n_poison, eps) over its per-target records, in the order of ``cells``."""
    rows = []
    for n_poison, levels in cells:
        mine = [r for r in records if r["n_poison"] == n_poison and r["eps_levels"] == levels]
        if not mine:
            continue
        stops = [r["stopped"] for r in mine]
        rows.append(
            {
                "n_poison": n_poison,
                "eps_levels": levels,
                "n_targets": len(mine),
                "flip_rate": float(np.mean([r["flipped"] for r in mine])),
                "mean_iterations": float(np.mean([r["iterations"] for r in mine])),
                "stopped": {s: stops.count(s) for s in sorted(set(stops))},
                "seconds": float(sum(r["seconds"] for r in mine)),
            }
        )
    return rows


def run(
    inf: iw.Influence, Xt, yt, targets: list[int], cells, max_iter: int, records, on_target
) -> None:
    """Attack each target under every (n_poison, eps) cell, target by target, so that a partial
    run covers every cell alike; (cell, target) pairs already in ``records`` are skipped. Appends
    to ``records`` and calls ``on_target()`` after each target, so a long run keeps its work."""
    done = {(r["n_poison"], r["eps_levels"], r["target"]) for r in records}
    for k, t in enumerate(targets):
        todo = [(n, e) for n, e in cells if (n, e, t) not in done]
        for n_poison, levels in todo:
            result = iw.craft_attack(
                inf, Xt[t : t + 1], yt[t : t + 1], n_poison=n_poison,
                eps=iw.eight_bit_levels(levels), max_iter=max_iter, progress=False,
            )  # fmt: skip
            records.append(
                {
                    "n_poison": n_poison,
                    "eps_levels": levels,
                    "target": t,
                    "flipped": bool(result.flipped),
                    "iterations": result.iterations,
                    "stopped": result.stopped,
                    "p_true_before": float(result.true_class_probability[0]),
                    "p_true_after": float(result.true_class_probability[-1]),
                    "seconds": result.seconds,
                }
            )
        if todo:
            on_target()
            flips = sum(r["flipped"] for r in records if r["target"] == t)
            print(
                f"  target {k + 1}/{len(targets)} (test image {t}): flipped in {flips} of "
                f"{len(cells)} cells",
                flush=True,
            )


def print_table(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        print(
            f"  n_poison {row['n_poison']:>2}  eps {row['eps_levels']:>4} levels: flipped "
            f"{row['flip_rate']:.0%} of {row['n_targets']} in {row['seconds']:.0f} s "
            f"(mean {row['mean_iterations']:.1f} steps)",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 targets, 1 eps: a smoke run")
    parser.add_argument("--targets", type=int, default=200, help="targets per configuration")
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--n-poison", default="1,2,10", help="numbers of images to perturb")
    parser.add_argument("--eps", default="0.5,2,8", help="eps values in 8-bit levels")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the per-target records already in --json and run only the missing ones "
        "(a run split over sessions, or killed)",
    )
    parser.add_argument(
        "--shard",
        default="0/1",
        help="K/N: run only the targets at positions K, K+N, K+2N, ... (for N processes)",
    )
    parser.add_argument(
        "--include",
        type=Path,
        nargs="+",
        default=[],
        help="also take the per-target records of these JSON files (e.g. the shards' outputs)",
    )
    parser.add_argument(
        "--merge-only",
        action="store_true",
        help="attack nothing: write the records of --include and --resume, and their table",
    )
    args = parser.parse_args(argv)
    try:
        shard, n_shards = (int(v) for v in args.shard.split("/"))
        assert 0 <= shard < n_shards
    except (ValueError, AssertionError):
        parser.error(f"--shard: expected K/N with 0 <= K < N, got {args.shard!r}")
    if args.resume and not args.json:
        parser.error("--resume needs --json PATH, the file to resume")
    if args.targets < 1 or args.max_iter < 1:
        parser.error("--targets and --max-iter must be >= 1")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    started = utc_now()
    inf, Xt, yt, info = setup()
    print(
        f"{info['classes'][0]} vs {info['classes'][1]}: {info['n_train']} training images, test "
        f"accuracy {info['test_accuracy']:.3f}, {len(Xt)} correct test images",
        flush=True,
    )
    if args.quick:
        n_targets, max_iter, cells = 2, min(args.max_iter, 30), [(10, 32.0)]
    else:
        n_targets, max_iter = args.targets, args.max_iter
        cells = [(int(n), float(e)) for n in args.n_poison.split(",") for e in args.eps.split(",")]
    targets = target_order(len(Xt), n_targets)
    command = "benchmarks/attack.py " + " ".join(sys.argv[1:] if argv is None else argv)
    earlier: dict[str, Any] = {}
    if args.resume and args.json.exists():
        earlier = json.loads(args.json.read_text())
        if (
            earlier.get("setup", {}).get("n_params") != info["n_params"]
            or earlier.get("max_iter") != max_iter
        ):
            parser.error(f"--resume: {args.json} was run with another setup or --max-iter")
    known: dict[tuple, dict[str, Any]] = {}
    runs = {(r["command"], r["started"]): r for r in earlier.get("runs", [])}
    for other in args.include:
        report = json.loads(other.read_text())
        runs.update({(r["command"], r["started"]): r for r in report["runs"]})
        if report["setup"]["n_params"] != info["n_params"] or report["max_iter"] != max_iter:
            parser.error(f"--include: {other} was run with another setup or --max-iter")
        for r in report["per_target"]:
            known[(r["n_poison"], r["eps_levels"], r["target"])] = r
    for r in earlier.get("per_target", []):
        known[(r["n_poison"], r["eps_levels"], r["target"])] = r
    records = [r for r in known.values() if r["target"] in targets]

    def save() -> None:
        if not args.json:
            return
        counts = Counter((r["n_poison"], r["eps_levels"]) for r in records)
        out = {
            # every process that wrote these records, this one last (shards run side by side)
            "runs": [
                *runs.values(),
                {
                    "command": command,
                    "started": started,
                    "wall_seconds": time.perf_counter() - start,
                },
            ],
            "machine": machine_info("cores", "threads", "torch", "python", "date"),
            "setup": info,
            "max_iter": max_iter,
            "targets": targets,
            "complete": all(counts[c] == len(targets) for c in cells),
            "attack_seconds": sum(r["seconds"] for r in records),
            "results": summarise(records, cells),
            "per_target": records,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        partial = args.json.with_name(args.json.name + ".partial")
        partial.write_text(json.dumps(out, indent=1) + "\n")
        os.replace(partial, args.json)  # a run killed mid-write leaves the last whole file

    if not args.merge_only:
        run(inf, Xt, yt, targets[shard::n_shards], cells, max_iter, records, save)
    save()
    print_table(summarise(records, cells))
    print(
        f"total {time.perf_counter() - start:.0f} s" + (f", wrote {args.json}" if args.json else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
