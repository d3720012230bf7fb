"""The attack benchmark's quick run, as make test runs it: it flips and writes its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {"n_poison", "eps_levels", "n_targets", "flip_rate", "seconds"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_attack_quick_run_flips_and_writes_its_table(tmp_path: Path):
    out = tmp_path / "attack.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "attack.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=580,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "flipped" in proc.stdout
    report = json.loads(out.read_text())
    assert report["complete"] and report["setup"]["n_params"] == 1570
    assert report["setup"]["test_accuracy"] >= 0.9
    (row,) = report["results"]
    assert FIELDS <= set(row), row
    assert (row["n_poison"], row["eps_levels"], row["n_targets"]) == (10, 32, 2)
    # ten training images perturbed within 32 levels flip at least one of the two targets
    assert row["flip_rate"] > 0, row
