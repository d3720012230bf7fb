"""The attack benchmark: its quick run, as make test runs it (it flips and writes its JSON), and
the bookkeeping that lets the 200-target grid be resumed and split over processes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {"n_poison", "eps_levels", "n_targets", "flip_rate", "seconds"}


def _load_attack_benchmark():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # its sibling module machine, as when run
    spec = importlib.util.spec_from_file_location("attack_benchmark", ROOT / "benchmarks/attack.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(n_poison: int, eps: float, target: int, flipped: bool, seconds: float = 1.0) -> dict:
    return {
        "n_poison": n_poison,
        "eps_levels": eps,
        "target": target,
        "flipped": flipped,
        "iterations": 3 if flipped else 100,
        "stopped": "flipped" if flipped else "max_iter",
        "seconds": seconds,
    }


def test_summary_rows_count_each_cell_over_its_own_targets():
    bench = _load_attack_benchmark()
    records = [
        _record(1, 0.5, 7, False),
        _record(1, 0.5, 9, True, 2.0),
        _record(10, 8.0, 7, True),
    ]
    rows = bench.summarise(records, [(1, 0.5), (2, 0.5), (10, 8.0)])
    assert [(r["n_poison"], r["eps_levels"]) for r in rows] == [(1, 0.5), (10, 8.0)]
    first, second = rows
    assert first["n_targets"] == 2 and first["flip_rate"] == 0.5 and first["seconds"] == 3.0
    assert first["mean_iterations"] == 51.5
    assert first["stopped"] == {"flipped": 1, "max_iter": 1}
    assert second["n_targets"] == 1 and second["flip_rate"] == 1.0


def test_run_skips_the_pairs_already_recorded(monkeypatch):
    bench = _load_attack_benchmark()
    calls = []

    class Result:
        flipped, iterations, stopped, seconds = False, 100, "max_iter", 0.5
        true_class_probability = [0.9, 0.8]

    def fake_attack(inf, x, y, n_poison, eps, max_iter, progress):
        calls.append((n_poison, round(eps * 255, 6), int(x[0, 0])))
        return Result()

    monkeypatch.setattr(bench.iw, "craft_attack", fake_attack)
    import torch

    Xt = torch.arange(5.0)[:, None]
    yt = torch.zeros(5, dtype=torch.long)
    cells = [(1, 0.5), (2, 8.0)]
    records = [_record(1, 0.5, 3, True)]
    saved = []
    bench.run(None, Xt, yt, [3, 1], cells, 100, records, lambda: saved.append(len(records)))
    assert calls == [(2, 8.0, 3), (1, 0.5, 1), (2, 8.0, 1)]  # (1, 0.5, 3) was done
    assert saved == [2, 4]  # the file is rewritten after each target
    assert bench.target_order(50, 3) == bench.target_order(50, 10)[:3]


@pytest.mark.slow
@pytest.mark.fashion_mnist
@pytest.mark.timeout(600)
def test_attack_quick_run_flips_writes_its_table_and_resumes(tmp_path: Path):
    out = tmp_path / "attack.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "attack.py"), "--quick", "--json"]
    proc = subprocess.run(
        [*command, str(out)], capture_output=True, text=True, cwd=ROOT, timeout=580
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
    assert len(report["per_target"]) == 2
    assert {r["target"] for r in report["per_target"]} == set(report["targets"])

    # --merge-only attacks nothing: it writes the records of --include and their table
    merged = tmp_path / "merged.json"
    again = subprocess.run(
        [*command, str(merged), "--merge-only", "--include", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=580,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "target 1/2" not in again.stdout  # no attack ran
    resumed = json.loads(merged.read_text())
    assert resumed["per_target"] == report["per_target"]
    assert resumed["results"] == report["results"] and resumed["complete"]
