"""The leave-one-out benchmark's quick run, as make test runs it: it completes and writes JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {"name", "solver", "n_train", "n_params", "n_removed", "pearson", "spearman", "seconds"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_loo_fidelity_quick_run_writes_its_table(tmp_path: Path):
    out = tmp_path / "loo.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "loo_fidelity.py"),
            "--quick",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=580,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Pearson" in proc.stdout
    rows = json.loads(out.read_text())["results"]
    assert {(r["name"], r["solver"]) for r in rows} == {
        ("digits_lr", "direct"),
        ("digits_lr", "cg"),
        ("digits_lr", "lissa"),
        ("digits_lr", "ekfac"),
        ("cnn", "direct"),
        ("cnn", "ekfac"),
    }
    for r in rows:
        assert FIELDS <= set(r), r
    # the convex case is a correctness check even when quick
    exact = [r for r in rows if r["name"] == "digits_lr" and r["solver"] != "ekfac"]
    assert all(r["pearson"] >= 0.99 for r in exact), rows
    ekfac = next(r for r in rows if r["name"] == "digits_lr" and r["solver"] == "ekfac")
    # an approximation: lower, not far
    assert ekfac["pearson"] >= 0.9, ekfac
    cnn = next(r for r in rows if r["name"] == "cnn" and r["solver"] == "direct")
    assert cnn["n_params"] == 1954 and cnn["n_removed"] == 5
    cnn_ekfac = next(r for r in rows if r["name"] == "cnn" and r["solver"] == "ekfac")
    assert cnn_ekfac["removals_chosen_by"] == "direct" and cnn_ekfac["n_removed"] == 5
    assert -1.0 <= cnn_ekfac["pearson_vs_direct_all_train"] <= 1.0


@pytest.mark.slow  # about 30 s: two CNN trainings, two direct fits and six retrains
@pytest.mark.filterwarnings("ignore::influence_widgets.InfluenceWarning")  # 10 iterations: far
def test_cnn_seeds_row_summarises_every_seed():
    from tests.scripts import load_benchmark

    bench = load_benchmark("loo_fidelity")
    (r,) = bench.cnn_seeds(2, n_remove=3, train_iter=10, retrain_iter=3, shared=True)
    assert FIELDS <= set(r) and r["name"] == "cnn_seeds" and r["seeds"] == [0, 1]
    assert [p["seed"] for p in r["per_seed"]] == [0, 1] and r["shared_machine"] is True
    rs = [p["pearson"] for p in r["per_seed"]]
    assert r["pearson_min"] == min(rs) and r["pearson_max"] == max(rs)
    assert r["pearson_min"] <= r["pearson_median"] == r["pearson"] <= r["pearson_max"]
    for p in r["per_seed"]:
        assert p["train_iterations"] > 0 and p["damping"] >= 0 and p["train_grad_norm"] > 0
    with pytest.raises(SystemExit):
        bench.main(["--experiments", "no_such_experiment"])


@pytest.mark.slow  # about 15 s: one CNN training, one direct fit and three retrains
@pytest.mark.filterwarnings("ignore::influence_widgets.InfluenceWarning")  # 10 iterations: far
def test_cnn_seeds_log_keeps_finished_seeds_and_is_read_back(tmp_path, monkeypatch):
    from tests.scripts import load_benchmark

    bench = load_benchmark("loo_fidelity")
    log = tmp_path / "seeds.jsonl"
    (first,) = bench.cnn_seeds(1, n_remove=3, train_iter=10, retrain_iter=3, shared=False,
                               seed_log=log)  # fmt: skip
    assert len(log.read_text().splitlines()) == 1

    def no_retraining(*args):
        raise AssertionError("a logged seed was trained again")

    monkeypatch.setattr(bench, "cnn_seed", no_retraining)
    (again,) = bench.cnn_seeds(1, n_remove=3, train_iter=10, retrain_iter=3, shared=False,
                               seed_log=log)  # fmt: skip
    assert again["per_seed"] == first["per_seed"] and again["pearson"] == first["pearson"]
    with pytest.raises(AssertionError, match="trained again"):  # other settings: not reused
        bench.cnn_seeds(1, n_remove=4, train_iter=10, retrain_iter=3, shared=False, seed_log=log)
