"""How often the Attack tab's defaults flip a prediction in each ``%influence --demo``.

For each demo: open it as the magic does (``influence_widgets.magic.demo_explorer``, with the
per-demo attack defaults), take a fixed random choice of its correctly classified test points (seed
0) and run the tab's attack on each with the defaults (``explorer.run_attack(wait=True)``). One row
per (demo, target): flipped, steps, why it stopped, p(true class) before and after, ``margin``
(the new class's probability minus the true class's after the attack: > 0 when it flipped, < 0
when it held), seconds; one summary per demo: flips, clear flips (margin >= CLEAR_MARGIN), the
smallest margin of a flip, median and largest time, and the time to open the demo. The machine's
load average is recorded at the start and at the end: on a shared machine the times are upper
bounds.

    .venv/bin/python benchmarks/demo_attacks.py --json benchmarks/results/demo_attacks.json
    .venv/bin/python benchmarks/demo_attacks.py --demos digits --targets 3      # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from machine import machine_info, utc_now

from influence_widgets.magic import DEMO_ATTACK, DEMOS, demo_explorer

# A flip counts as clear when the new class ends at least this much probability above the true one.
CLEAR_MARGIN = 0.1


def attack_targets(explorer, n: int, seed: int) -> list[int]:
    """``n`` correctly classified test points of ``explorer``, a fixed random choice."""
    correct = np.nonzero(explorer.test_points.predicted == explorer.test_points.true)[0]
    return [int(t) for t in np.random.default_rng(seed).permutation(correct)[:n]]


def measure_demo(name: str, n_targets: int, seed: int) -> tuple[dict, list[dict]]:
    start = time.perf_counter()
    explorer = demo_explorer(name).wait_ready()
    opened = time.perf_counter() - start
    rows = []
    for target in attack_targets(explorer, n_targets, seed):
        explorer.selected = target
        result = explorer.run_attack(wait=True)
        p_true = result.true_class_probability
        rows.append(
            {
                "demo": name,
                "target": target,
                "flipped": bool(result.flipped),
                "iterations": result.iterations,
                "stopped": result.stopped,
                "p_true_before": float(p_true[0]),
                "p_true_after": float(p_true[-1]),
                "margin": result.margin,
                "seconds": result.seconds,
            }
        )
        print(
            f"  {name} #{target}: flipped={result.flipped} after {result.iterations} steps "
            f"({result.stopped}), p(true) {float(p_true[0]):.2f} -> {float(p_true[-1]):.2f}, "
            f"margin {result.margin:+.2f}, {result.seconds:.1f} s",
            flush=True,
        )
    seconds = [r["seconds"] for r in rows]
    flip_margins = [r["margin"] for r in rows if r["flipped"]]
    summary = {
        "demo": name,
        "defaults": DEMO_ATTACK[name],
        "n_targets": len(rows),
        "flipped": sum(r["flipped"] for r in rows),
        "flip_rate": float(np.mean([r["flipped"] for r in rows])) if rows else float("nan"),
        "clear_margin": CLEAR_MARGIN,
        "flipped_clearly": sum(r["flipped"] and r["margin"] >= CLEAR_MARGIN for r in rows),
        "smallest_flip_margin": min(flip_margins) if flip_margins else None,
        "median_seconds": float(np.median(seconds)) if rows else float("nan"),
        "max_seconds": float(max(seconds)) if rows else float("nan"),
        "open_seconds": opened,
    }
    print(
        f"{name}: flipped {summary['flipped']} of {len(rows)} ({summary['flipped_clearly']} by "
        f"{CLEAR_MARGIN:.0%} or more) with the defaults {DEMO_ATTACK[name]}; median "
        f"{summary['median_seconds']:.1f} s, opened in {opened:.1f} s",
        flush=True,
    )
    return summary, rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demos", nargs="+", choices=DEMOS, default=list(DEMOS))
    parser.add_argument("--targets", type=int, default=12, help="test points per demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: torch's own, as in a notebook kernel)"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {
        "command": " ".join(["benchmarks/demo_attacks.py", *(argv or sys.argv[1:])]),
        "started": utc_now(),
        "machine": machine_info(
            "cpu", "cores", "threads", "torch", "python", "date", "load_average_start"
        ),
        "seed": args.seed,
        "summaries": [],
        "rows": [],
    }
    for name in args.demos:
        summary, rows = measure_demo(name, args.targets, args.seed)
        report["summaries"].append(summary)
        report["rows"].extend(rows)
        report["machine"]["load_average_end"] = list(os.getloadavg())
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
