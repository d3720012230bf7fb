"""The attack benchmark: its quick runs at 28x28x1 and 112x112x3, as make test runs them (they
flip and write their JSON), the bookkeeping that lets the 200-target grid be resumed and split
over processes, and the comparison of the two inputs on the same targets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {"n_poison", "eps_levels", "n_targets", "flip_rate", "seconds"}


def _record(
    n_poison: int,
    eps: float,
    target: int,
    flipped: bool,
    seconds: float = 1.0,
    input_name: str = "28x28x1",
) -> dict:
    return {
        "input": input_name,
        "n_poison": n_poison,
        "eps_levels": eps,
        "target": target,
        "flipped": flipped,
        "iterations": 3 if flipped else 100,
        "stopped": "flipped" if flipped else "max_iter",
        "p_true_before": 0.95,
        "p_true_after": 0.4 if flipped else 0.9,
        "seconds": seconds,
    }


def test_summary_rows_count_each_cell_over_its_own_targets():
    bench = load_benchmark("attack")
    records = [
        _record(1, 0.5, 7, False),
        _record(1, 0.5, 9, True, 2.0),
        _record(10, 8.0, 7, True),
    ]
    rows = bench.summarise(records, [(1, 0.5), (2, 0.5), (10, 8.0)])
    assert [(r["input"], r["n_poison"], r["eps_levels"]) for r in rows] == [
        ("28x28x1", 1, 0.5),
        ("28x28x1", 10, 8.0),
    ]
    first, second = rows
    assert first["n_targets"] == 2 and first["flip_rate"] == 0.5 and first["seconds"] == 3.0
    assert first["mean_iterations"] == 51.5
    assert first["mean_p_true_after"] == pytest.approx(0.65)
    assert first["stopped"] == {"flipped": 1, "max_iter": 1}
    assert second["n_targets"] == 1 and second["flip_rate"] == 1.0


def test_run_skips_the_pairs_already_recorded(monkeypatch):
    bench = load_benchmark("attack")
    calls = []

    class Result:
        flipped, iterations, stopped, seconds = False, 100, "max_iter", 0.5
        true_class_probability = [0.9, 0.8]

    def fake_attack(inf, x, y, n_poison, eps, max_iter, select, progress):
        assert select == list(range(n_poison))  # the top images, chosen once per target
        calls.append((n_poison, round(eps * 255, 6), int(x[0, 0])))
        return Result()

    def fake_gradients(inf, x, y):
        chosen.append(int(x[0, 0]))
        return list(range(10)), {"pert_l1_top": [1.0] * 10, "test_grad_l1": 0.1}

    chosen = []
    monkeypatch.setattr(bench.iw, "craft_attack", fake_attack)
    monkeypatch.setattr(bench, "input_gradients", fake_gradients)
    import torch

    Xt = torch.arange(5.0)[:, None]
    yt = torch.zeros(5, dtype=torch.long)
    cells = [(1, 0.5), (2, 8.0)]
    records = [_record(1, 0.5, 3, True)]
    saved = []
    norms = {}
    bench.run(
        None, Xt, yt, [3, 1], cells, 100, records, lambda: saved.append(len(records)), norms=norms
    )
    assert calls == [(2, 8.0, 3), (1, 0.5, 1), (2, 8.0, 1)]  # (1, 0.5, 3) was done
    assert saved == [2, 4]  # the file is rewritten after each target
    assert chosen == [3, 1] and set(norms) == {("28x28x1", 3), ("28x28x1", 1)}
    # a target done in every cell, with its norms, is not touched again; one without norms
    # gets them, and no attack
    del norms[("28x28x1", 1)]
    bench.run(
        None, Xt, yt, [3, 1], cells, 100, records, lambda: saved.append(len(records)), norms=norms
    )
    assert len(calls) == 3 and chosen == [3, 1, 1] and ("28x28x1", 1) in norms
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
    (facts,) = report["inputs"].values()
    assert facts["complete"] and facts["setup"]["n_params"] == 1570
    assert facts["setup"]["test_accuracy"] >= 0.9
    (row,) = report["results"]
    assert FIELDS <= set(row), row
    assert (row["n_poison"], row["eps_levels"], row["n_targets"]) == (10, 32, 2)
    # ten training images perturbed within 32 levels flip at least one of the two targets
    assert row["flip_rate"] > 0, row
    assert len(report["per_target"]) == 2
    assert {r["target"] for r in report["per_target"]} == set(facts["targets"])

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
    assert resumed["results"] == report["results"]
    assert resumed["inputs"]["28x28x1"]["complete"]


def _norm(input_name: str, target: int, top: float) -> dict:
    return {"input": input_name, "target": target, "pert_l1_top": [top, top / 2],
            "pert_l1_mean": top / 10, "test_grad_l1": top / 100}  # fmt: skip


def test_the_two_inputs_are_compared_on_the_targets_both_finished():
    bench = load_benchmark("attack")
    cells = [(1, 0.5), (2, 0.5)]
    records = [
        _record(n, e, t, flipped=(name != "28x28x1" and t == 5), input_name=name)
        for name in ("28x28x1", "112x112x3")
        for t in (5, 6, 7)
        for n, e in cells
    ]
    records = [
        r for r in records if (r["input"], r["target"], r["n_poison"]) != ("112x112x3", 7, 2)
    ]
    records += [_record(n, e, 9, False) for n, e in cells]  # only at 28x28
    norms = {(g["input"], g["target"]): g for g in [
        _norm("28x28x1", 5, 10.0), _norm("28x28x1", 6, 30.0), _norm("28x28x1", 7, 1.0),
        _norm("112x112x3", 5, 40.0), _norm("112x112x3", 6, 120.0), _norm("112x112x3", 7, 9.0),
        _norm("28x28x1", 9, 1.0),
    ]}  # fmt: skip
    out = bench.same_targets(records, norms)
    assert out["targets"] == [5, 6]  # 7: one 112x112x3 cell missing; 9: not at 112x112x3
    assert [(r["input"], r["n_poison"], r["n_targets"], r["flip_rate"]) for r in out["rows"]] == [
        ("28x28x1", 1, 2, 0.0),
        ("28x28x1", 2, 2, 0.0),
        ("112x112x3", 1, 2, 0.5),
        ("112x112x3", 2, 2, 0.5),
    ]
    assert out["norm_ratio"]["pert_l1_top"] == pytest.approx(4.0)
    assert out["norm_ratio_median"]["test_grad_l1"] == pytest.approx(4.0)
    # each row: the mean L1 norm of I_pert,loss over the n_poison images it perturbs
    assert out["rows"][0]["mean_pert_l1"] == pytest.approx(20.0)
    assert out["rows"][1]["mean_pert_l1"] == pytest.approx(15.0)
    assert out["rows"][2]["mean_test_grad_l1"] == pytest.approx(0.8)
    del norms[("112x112x3", 6)]
    assert bench.same_targets(records, norms)["targets"] == [5]


@pytest.mark.slow
@pytest.mark.fashion_mnist
@pytest.mark.timeout(600)
def test_attack_quick_run_on_upsampled_inputs(tmp_path: Path):
    """--quick --input 112x112x3: a small extractor trained at run time (cached), 2 targets of
    the 28x28 order attacked with 10 images at 32 levels; records and norms keyed by input."""
    out = tmp_path / "attack.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "attack.py"), "--quick", "--input",
         "112x112x3", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=580,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    facts = report["inputs"]["112x112x3"]
    assert facts["complete"] and facts["setup"]["n_params"] == 1570
    assert facts["setup"]["n_inputs"] == 3 * 112 * 112
    assert facts["setup"]["extractor"]["train_images"] == 1600
    (row,) = report["results"]
    assert (row["input"], row["n_poison"], row["eps_levels"]) == ("112x112x3", 10, 32)
    assert row["n_targets"] + len(facts["skipped_targets"]) == 2
    assert row["mean_pert_l1"] > 0 and row["mean_test_grad_l1"] > 0
    assert {g["input"] for g in report["input_gradients"]} == {"112x112x3"}
