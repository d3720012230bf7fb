"""benchmarks/demo_attacks.py, as the demo flip rates in benchmarks/README.md and docs/api.md come
from it: one digits target."""

from __future__ import annotations

import json
from pathlib import Path

from influence_widgets.magic import DEMO_ATTACK
from tests.scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def test_one_digits_target_is_attacked_with_the_demo_defaults_and_recorded(tmp_path: Path):
    bench = load_benchmark("demo_attacks")
    out = tmp_path / "demo_attacks.json"
    bench.main(["--demos", "digits", "--targets", "1", "--json", str(out)])
    report = json.loads(out.read_text())
    (summary,) = report["summaries"]
    (row,) = report["rows"]
    assert summary["demo"] == "digits" and summary["n_targets"] == 1
    assert summary["flipped"] == int(row["flipped"]) and summary["flip_rate"] == row["flipped"]
    assert row["p_true_before"] > 0.1  # correctly classified: the largest of 10 classes
    assert row["flipped"], row  # the digits defaults flip (measured: 10 of 10 targets)
    # the defaults go on to a 20-point lead: a clear flip, not a near tie
    assert row["margin"] >= DEMO_ATTACK["digits"]["attack_stop_margin"] - 1e-9, row
    assert summary["flipped_clearly"] == 1 and summary["smallest_flip_margin"] == row["margin"]
    machine = report["machine"]
    assert len(machine["load_average_start"]) == len(machine["load_average_end"]) == 3
    assert report["command"].startswith("benchmarks/demo_attacks.py --demos digits")
