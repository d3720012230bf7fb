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

``--input 112x112x3`` runs the same attack on the same images upsampled (bilinearly, 3 channels:
37,632 input values for Inception's 268,203 and our 784) with an extractor of the same family
trained at run time (``upsampled_extractor.py``): the effect of one sign step is about eps times
the L1 norm of I_pert,loss, which grows with the number of input values. Its targets are the
28x28 run's (the same target ids, the same test images; one the upsampled model misclassifies is
skipped and listed). The images to perturb are chosen once per target, as
``select="grad_norm"`` would (the largest L1 norms of I_pert,loss), and every target records
those norms and ||grad_x L(z_test)||_1 (``input_gradients``); ``same_targets`` gives both inputs'
rows on the targets both have done in every cell, and the ratios of the norms. A 28x28 run over
targets already attacked computes only their missing norms.

    .venv/bin/python benchmarks/attack.py --threads 1 --json benchmarks/results/attack.json --resume
    .venv/bin/python benchmarks/attack.py --shard 0/2 --threads 1 --json /tmp/a0.json --resume &
    .venv/bin/python benchmarks/attack.py --shard 1/2 --threads 1 --json /tmp/a1.json --resume
    .venv/bin/python benchmarks/attack.py --include /tmp/a0.json /tmp/a1.json --json OUT --merge-only
    .venv/bin/python benchmarks/attack.py --quick      # 2 targets, 10 images at 32 levels
    .venv/bin/python benchmarks/attack.py --input 112x112x3 --targets 30 --json OUT --resume
    .venv/bin/python benchmarks/attack.py --input 112x112x3 --quick   # a small extractor
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
import upsampled_extractor as up
from machine import machine_info, utc_now

import influence_widgets as iw
from influence_widgets.models import EXTRACTOR_HELD_OUT

HEAD = ["1.weight", "1.bias"]
L2 = 0.01
SMALL = "28x28x1"  # the shipped extractor's input
INPUTS = (SMALL, up.INPUT)
TOP = 10  # the most images perturbed: the selection's L1 norms kept per target
QUICK_EXTRACTOR = (200, 1)  # --quick at 112x112x3: images per class and epochs of its extractor


def per_class(X: torch.Tensor, y: torch.Tensor, k: int, seed: int):
    """k images of each class, a fixed random choice."""
    gen = torch.Generator().manual_seed(seed)
    idx = []
    for c in (0, 1):
        members = torch.nonzero(y == c).squeeze(1)
        idx.append(members[torch.randperm(len(members), generator=gen)[:k]])
    idx = torch.cat(idx)
    return X[idx], y[idx]


def batched(f, X: torch.Tensor, size: int = 256) -> torch.Tensor:
    """f over the rows of X in batches, without gradients (bounded memory at 37,632 inputs)."""
    with torch.no_grad():
        return torch.cat([f(X[i : i + size]) for i in range(0, len(X), size)])


def fit_head(model: torch.nn.Module, X, y, Xt) -> tuple[torch.Tensor, Any, float]:
    """Train the head ``model[1]`` on the frozen features of X (l2 = L2); the test predictions."""
    start = time.perf_counter()
    features = batched(lambda x: model[0](x.double()), X)
    report = iw.train(model[1], (features, y), l2=L2, progress=False)
    pred = batched(lambda x: model(x.double()).argmax(1), Xt)
    return pred, report, time.perf_counter() - start


def setup(input_name: str = SMALL, quick: bool = False):
    """The Influence of the head trained at ``input_name``, the test images (Xt, yt) in the
    order of the targets' ids, which of them this model classifies correctly, and the setup.

    Target ids are positions in the list of test images that the 28x28 model classifies
    correctly (the ids of every record), so both inputs attack the same images."""
    data = iw.datasets.fashion_mnist(classes=list(EXTRACTOR_HELD_OUT), progress=False)
    X, y = per_class(data.X_train, data.y_train, 900, seed=0)
    Xt, yt = per_class(data.X_test, data.y_test, 300, seed=1)
    small = iw.models.fmnist_attack_model()
    pred, report, seconds = fit_head(small, X, y, Xt)
    ids = torch.nonzero(pred == yt).squeeze(1)  # target id -> test image
    info: dict[str, Any] = {}
    model = small
    if input_name != SMALL:
        state, info["extractor"] = up.load_extractor(*(QUICK_EXTRACTOR if quick else ()))
        info["extractor_images"] = info["extractor"]["train_images"]
        X, Xt = up.upsample(X), up.upsample(Xt)
        model = up.attack_model(state)
        pred, report, seconds = fit_head(model, X, y, Xt)
    inf = iw.Influence(model, (X, y), l2=L2, params=HEAD, progress=False).fit()
    info.update(
        {
            "input": input_name,
            "classes": [data.class_names[0], data.class_names[1]],
            "n_train": len(X),
            "n_test": len(Xt),
            "n_inputs": X[0].numel(),
            "n_params": inf.p,
            "test_accuracy": float((pred == yt).double().mean()),
            "train_seconds": seconds,
            "train_grad_norm": report.grad_norm,
        }
    )
    return inf, Xt[ids], yt[ids], (pred == yt)[ids], info


def target_order(n_correct: int, n_targets: int) -> list[int]:
    """The fixed random subset of correctly classified test images (seed 0): the first
    ``n_targets`` of one permutation, so a smaller run's targets are a larger run's first ones."""
    gen = torch.Generator().manual_seed(0)
    return torch.randperm(n_correct, generator=gen)[:n_targets].tolist()


def key(r: dict[str, Any]) -> tuple:
    """A record's (input, n_poison, eps, target)."""
    return (r["input"], r["n_poison"], r["eps_levels"], r["target"])


def summarise(
    records: list[dict[str, Any]], cells: list[tuple[int, float]], norms: dict | None = None
) -> list[dict]:
    """One row per (input, n_poison, eps) over its per-target records, inputs in the order of
    INPUTS and cells in the order of ``cells``. With ``norms`` ({(input, target): gradient
    record}) and a norm for each of the row's targets, the row also has the mean L1 norms of
    I_pert,loss of the images it perturbs and of grad_x L(z_test)."""
    rows = []
    for name in INPUTS:
        for n_poison, levels in cells:
            mine = [r for r in records if key(r)[:3] == (name, n_poison, levels)]
            if not mine:
                continue
            stops = [r["stopped"] for r in mine]
            row = {
                "input": name,
                "n_poison": n_poison,
                "eps_levels": levels,
                "n_targets": len(mine),
                "flip_rate": float(np.mean([r["flipped"] for r in mine])),
                "mean_iterations": float(np.mean([r["iterations"] for r in mine])),
                "mean_p_true_before": float(np.mean([r["p_true_before"] for r in mine])),
                "mean_p_true_after": float(np.mean([r["p_true_after"] for r in mine])),
                "stopped": {s: stops.count(s) for s in sorted(set(stops))},
                "seconds": float(sum(r["seconds"] for r in mine)),
            }
            grads = [(norms or {}).get((name, r["target"])) for r in mine]
            if norms is not None and all(grads):
                row["mean_pert_l1"] = float(
                    np.mean([np.mean(g["pert_l1_top"][:n_poison]) for g in grads])
                )
                row["mean_test_grad_l1"] = float(np.mean([g["test_grad_l1"] for g in grads]))
            rows.append(row)
    return rows


def input_gradients(inf: iw.Influence, x, y) -> tuple[list[int], dict[str, Any]]:
    """The paper's choice of images to perturb (the largest L1 norms of I_pert,loss, as
    ``craft_attack(select="grad_norm")`` makes it: computed once per target here, for every
    cell) and the mechanism's numbers: those L1 norms and ||grad_x L(z_test)||_1."""
    n = inf.n
    scores = torch.empty(n, dtype=torch.float64)
    for start in range(0, n, 256):
        idx = torch.arange(start, min(start + 256, n))
        pert = inf.perturbation_influence(x, y, idx)[0]
        scores[idx] = pert.reshape(len(idx), -1).abs().sum(1).double().cpu()
    top = torch.argsort(scores, descending=True)[:TOP]
    model = inf.objective.module
    xg = x.double().clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(xg), y)
    (g,) = torch.autograd.grad(loss, xg)
    return top.tolist(), {
        "pert_l1_top": scores[top].tolist(),
        "pert_l1_mean": float(scores.mean()),
        "test_grad_l1": float(g.abs().sum()),
    }


def run(
    inf: iw.Influence,
    Xt,
    yt,
    targets: list[int],
    cells,
    max_iter: int,
    records,
    on_target,
    input_name: str = SMALL,
    norms: dict | None = None,
) -> None:
    """Attack each target under every (n_poison, eps) cell, target by target, so that a partial
    run covers every cell alike; (cell, target) pairs already in ``records`` are skipped, and
    so are the attacks of a target whose norms are still missing in ``norms`` (they are
    computed). Appends to ``records`` and calls ``on_target()`` after each target, so a long
    run keeps its work."""
    norms = {} if norms is None else norms
    done = {key(r) for r in records}
    for k, t in enumerate(targets):
        x, y = Xt[t : t + 1], yt[t : t + 1]
        todo = [(n, e) for n, e in cells if (input_name, n, e, t) not in done]
        if not todo and (input_name, t) in norms:
            continue
        top, grads = input_gradients(inf, x, y)
        norms[(input_name, t)] = {"input": input_name, "target": t, **grads}
        for n_poison, levels in todo:
            result = iw.craft_attack(
                inf, x, y, n_poison=n_poison, eps=iw.eight_bit_levels(levels),
                max_iter=max_iter, select=top[:n_poison], progress=False,
            )  # fmt: skip
            records.append(
                {
                    "input": input_name,
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
        on_target()
        flips = sum(r["flipped"] for r in records if key(r)[0] == input_name and r["target"] == t)
        print(
            f"  target {k + 1}/{len(targets)} (id {t}): flipped in {flips} of {len(cells)} "
            f"cells; ||I_pert,loss||_1 of the top image {grads['pert_l1_top'][0]:.3g}",
            flush=True,
        )


def complete_targets(records: list[dict[str, Any]], n_cells: int, name: str) -> set[int]:
    """The targets that input ``name`` has attacked in all ``n_cells`` cells."""
    counts = Counter(r["target"] for r in records if r["input"] == name)
    return {t for t, c in counts.items() if c == n_cells}


def same_targets(records, norms: dict) -> dict[str, Any] | None:
    """Both inputs on exactly the targets that both have done in every cell (and have norms
    for): their rows side by side, and the ratios (112x112x3 / 28x28x1) of the mean L1 norms of
    I_pert,loss (of the top image, and of all training images) and of grad_x L(z_test)."""
    n_cells = len({key(r)[1:3] for r in records})
    both = complete_targets(records, n_cells, INPUTS[0]) & complete_targets(
        records, n_cells, INPUTS[1]
    )
    common = sorted(t for t in both if all((name, t) in norms for name in INPUTS))
    if not common:
        return None
    rows = summarise([r for r in records if r["target"] in set(common)], cells_of(records), norms)

    def values(name: str, field: str) -> np.ndarray:
        got = [norms[(name, t)][field] for t in common]
        return np.array([v[0] if isinstance(v, list) else v for v in got])

    fields = ("pert_l1_top", "pert_l1_mean", "test_grad_l1")
    big, small = INPUTS[1], INPUTS[0]
    return {
        "targets": common,
        "rows": rows,
        "mean_norms": {name: {f: float(values(name, f).mean()) for f in fields} for name in INPUTS},
        # the ratio of the means, and the median of the per-target ratios (a few targets with
        # large norms dominate the means)
        "norm_ratio": {f: float(values(big, f).mean() / values(small, f).mean()) for f in fields},
        "norm_ratio_median": {
            f: float(np.median(values(big, f) / values(small, f))) for f in fields
        },
    }


def cells_of(records: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """Every (n_poison, eps) of the records, in order."""
    return sorted({key(r)[1:3] for r in records})


def print_table(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        print(
            f"  {row['input']:>9}  n_poison {row['n_poison']:>2}  eps {row['eps_levels']:>4} "
            f"levels: flipped {row['flip_rate']:.0%} of {row['n_targets']} in "
            f"{row['seconds']:.0f} s (mean {row['mean_iterations']:.1f} steps)",
            flush=True,
        )


def read_reports(paths: list[Path], max_iter: int, name: str, info: dict[str, Any], error):
    """The runs, per-input facts, norms and records of earlier JSON files (--resume, --include),
    checked against this run's setup of input ``name`` and ``max_iter``."""
    runs, inputs, norms, known = {}, {}, {}, {}
    for path in paths:
        report = json.loads(path.read_text())
        mine = report["inputs"].get(name, {}).get("setup", info)
        if report["max_iter"] != max_iter or any(
            mine.get(f) != info.get(f) for f in ("n_params", "n_inputs", "extractor_images")
        ):
            error(f"{path} was run with another setup or --max-iter")
        runs.update({(r["command"], r["started"]): r for r in report["runs"]})
        for other, facts in report["inputs"].items():
            if len(facts["targets"]) >= len(inputs.get(other, {}).get("targets", [])):
                inputs[other] = facts
        norms.update({(g["input"], g["target"]): g for g in report["input_gradients"]})
        known.update({key(r): r for r in report["per_target"]})
    return runs, inputs, norms, list(known.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 targets, 1 eps: a smoke run")
    parser.add_argument(
        "--input",
        choices=INPUTS,
        default=SMALL,
        help="28x28x1: the shipped extractor; 112x112x3: the same images upsampled, on an "
        "extractor trained at run time (benchmarks/upsampled_extractor.py)",
    )
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
    inf, Xt, yt, correct, info = setup(args.input, args.quick)
    print(
        f"{args.input}, {info['classes'][0]} vs {info['classes'][1]}: {info['n_train']} training "
        f"images, test accuracy {info['test_accuracy']:.3f}, {int(correct.sum())} of the 28x28 "
        "model's correct test images also correct here",
        flush=True,
    )
    if args.quick:
        n_targets, max_iter, cells = 2, min(args.max_iter, 30), [(10, 32.0)]
    else:
        n_targets, max_iter = args.targets, args.max_iter
        cells = [(int(n), float(e)) for n in args.n_poison.split(",") for e in args.eps.split(",")]
    order = target_order(len(Xt), n_targets)
    targets = [t for t in order if correct[t]]  # the 28x28 model's targets, when correct here
    skipped = [t for t in order if not correct[t]]
    command = "benchmarks/attack.py " + " ".join(sys.argv[1:] if argv is None else argv)
    earlier = [args.json] if args.resume and args.json.exists() else []
    runs, inputs, norms, records = read_reports(
        [*earlier, *args.include], max_iter, args.input, info, lambda m: parser.error(m)
    )
    if len(inputs.get(args.input, {}).get("targets", [])) < len(targets):
        inputs[args.input] = {"targets": targets, "skipped_targets": skipped}
    inputs[args.input]["setup"] = info

    def save() -> None:
        if not args.json:
            return
        for name, facts in inputs.items():
            mine = [r for r in records if r["input"] == name]
            done = complete_targets(mine, len(cells_of(mine)), name)
            facts["complete"] = set(facts["targets"]) <= done
            facts["attack_seconds"] = sum(r["seconds"] for r in mine)
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
            "max_iter": max_iter,
            "inputs": {name: inputs[name] for name in INPUTS if name in inputs},
            "results": summarise(records, cells_of(records), norms),
            "same_targets": same_targets(records, norms),
            "input_gradients": sorted(norms.values(), key=lambda g: (g["input"], g["target"])),
            "per_target": records,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        partial = args.json.with_name(args.json.name + ".partial")
        partial.write_text(json.dumps(out, indent=1) + "\n")
        os.replace(partial, args.json)  # a run killed mid-write leaves the last whole file

    if not args.merge_only:
        mine = targets[shard::n_shards]
        run(inf, Xt, yt, mine, cells, max_iter, records, save, args.input, norms)
    save()
    print_table(summarise(records, cells_of(records), norms))
    comparison = same_targets(records, norms)
    if comparison:
        print(f"  on the same {len(comparison['targets'])} targets:")
        print_table(comparison["rows"])
        print(f"  L1 norm ratios (112x112x3 / 28x28x1): {comparison['norm_ratio']}")
    print(
        f"total {time.perf_counter() - start:.0f} s" + (f", wrote {args.json}" if args.json else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
