"""The mislabel benchmark: its summary of a recovery into the JSON's objects, and its quick run
(digits, uniform flips, one seed) as make test runs it: it completes, writes its JSON and table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
CELL = {"dataset", "noise", "method", "checked_fraction", "flips_found_fraction", "test_accuracy"}


def test_summary_means_over_seeds_and_keeps_each_seed():
    import influence_widgets as iw

    bench = load_benchmark("mislabel")

    def record(method, seed, found, acc):
        return {"method": method, "checked_fraction": 0.1, "flips_found_fraction": found,
                "test_accuracy": acc, "seed": seed}  # fmt: skip

    result = iw.MislabelRecovery(
        dataset="digits",
        noise="systematic 1->8",
        flip_fraction=0.3,
        checked_fractions=(0.1,),
        methods=("loss", "random"),
        seeds=(0, 1),
        clean_accuracy=0.95,
        noisy_accuracy={0: 0.9, 1: 0.8},
        n_flipped={0: 40, 1: 40},
        auc={("loss", 0): 0.9, ("loss", 1): 0.8, ("random", 0): 0.5, ("random", 1): 0.6},
        records=[
            record("loss", 0, 0.5, 0.92),
            record("loss", 1, 0.7, 0.94),
            record("random", 0, 0.1, 0.9),
            record("random", 1, 0.1, 0.8),
        ],
    )
    part = bench.summarise(result, "systematic", seconds=10.0)
    loss, rand = part["results"]
    assert CELL <= set(loss) and loss["noise"] == "systematic"
    assert loss["flips_found_fraction"] == pytest.approx(0.6)
    assert loss["test_accuracy"] == pytest.approx(0.93)
    assert loss["per_seed"]["1"] == {"flips_found_fraction": 0.7, "test_accuracy": 0.94}
    assert [a["auc"] for a in part["auc"]] == [pytest.approx(0.85), pytest.approx(0.55)]
    (setup,) = part["setups"]
    assert setup["best_method_by_auc"] == "loss" and setup["seconds_per_seed"] == 5.0
    assert setup["noisy_accuracy"] == pytest.approx(0.85)
    table = bench.markdown_table(part)
    assert "| digits | systematic 1->8 | loss | 0.8500 | 60.0% / 93.00% |" in table


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_mislabel_quick_run_writes_its_json_and_table(tmp_path: Path):
    out = tmp_path / "mislabel.json"
    script = str(ROOT / "benchmarks" / "mislabel.py")
    proc = subprocess.run(
        [sys.executable, script, "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=580,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["command"] == f"benchmarks/mislabel.py --quick --json {out}"
    assert {"cpu", "threads", "torch"} <= set(report["machine"])
    cells = report["results"]
    assert len(cells) == 3 * 4 and all(CELL <= set(c) for c in cells)
    assert {(c["dataset"], c["noise"]) for c in cells} == {("digits", "uniform")}
    found = {(c["method"], c["checked_fraction"]): c["flips_found_fraction"] for c in cells}
    # both informed rankings find nearly all 130 flips after checking 30%; random about 30%
    assert found[("self_influence", 0.3)] >= 0.95 and found[("loss", 0.3)] >= 0.95
    assert found[("random", 0.3)] < 0.5
    auc = {a["method"]: a["auc"] for a in report["auc"]}
    assert auc["self_influence"] > 0.95 and auc["loss"] > 0.95 and 0.3 < auc["random"] < 0.7
    (setup,) = report["setups"]
    assert setup["n_flipped"] == {"0": 130} and setup["seconds"] < 60
    table = subprocess.run(
        [sys.executable, script, "--table", str(out)], capture_output=True, text=True, cwd=ROOT
    )
    assert table.returncode == 0 and "| digits | uniform | self_influence |" in table.stdout


def test_include_joins_parts_run_in_separate_processes(tmp_path: Path):
    bench = load_benchmark("mislabel")

    def part(name: str, dataset: str) -> Path:
        path = tmp_path / f"{name}.json"
        report = {
            "command": name,
            "commands": [name],
            "machine": {"cpu": name},
            "included_machines": [],
            "results": [{"dataset": dataset}],
            "auc": [{"dataset": dataset, "auc": 0.9}],
            "setups": [{"dataset": dataset}],
        }
        path.write_text(json.dumps(report))
        return path

    out = tmp_path / "out" / "all.json"
    a, b = part("a", "digits"), part("b", "fashion_mnist")
    # no --datasets: a join runs nothing of its own
    bench.markdown_table = lambda report: ""
    assert bench.main(["--include", str(a), str(b), "--json", str(out)]) == 0
    joined = json.loads(out.read_text())
    assert joined["commands"][:2] == ["a", "b"] and len(joined["commands"]) == 3
    assert [m["cpu"] for m in joined["included_machines"]] == ["a", "b"]
    assert [r["dataset"] for r in joined["results"]] == ["digits", "fashion_mnist"]
    assert [r["dataset"] for r in joined["setups"]] == ["digits", "fashion_mnist"]


def test_variants_run_scores_the_same_flips_as_the_benchmark(tmp_path: Path):
    """benchmarks/mislabel_variants.py with one seed: its loss and self-influence rows are the
    mislabel benchmark's (same flips, same model), and each variant ranks flips far above chance."""
    out = tmp_path / "variants.json"
    script = str(ROOT / "benchmarks/mislabel_variants.py")
    proc = subprocess.run(
        [sys.executable, script, "--seeds", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {(r["noise"], r["method"]): r for r in json.loads(out.read_text())["rows"]}
    assert len(rows) == 8
    committed = json.loads((ROOT / "benchmarks/results/mislabel.json").read_text())
    for r in committed["auc"]:
        if r["dataset"] == "digits" and r["method"] in ("loss", "self_influence"):
            noise = "uniform" if r["noise"] == "uniform" else "systematic 1->8"
            assert rows[(noise, r["method"])]["per_seed"]["auc"][0] == pytest.approx(
                r["per_seed"]["0"], abs=1e-6
            )
    for row in rows.values():
        assert row["auc"] > 0.85
        assert 0.0 <= row["found_0.1"] <= row["found_0.3"] <= 1.0
