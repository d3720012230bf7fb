"""benchmarks/scale.py --quick as make test runs it: it completes and writes one row per run and
kind (single process, 1 and 2 Dask workers; scoring with points_per_second and peak_mb, LDS
retrains with retrains_per_second and the same outputs as in this process), each with the load
average at its start; a run of one kind keeps the other kind's rows in the JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.processes import run_benchmark

pytest.importorskip("distributed")


@pytest.mark.slow
@pytest.mark.fashion_mnist
@pytest.mark.timeout(600)
def test_scale_quick_run_writes_its_json(tmp_path: Path):
    out = tmp_path / "scale.json"
    run_benchmark("scale.py", "--quick", "--json", str(out))
    report = json.loads(out.read_text())
    assert report["command"] == f"benchmarks/scale.py --quick --json {out}"
    assert {"cpu", "cores", "load_average_start"} <= set(report["machine"])
    assert report["n_train"] == 4_000 and "repeated" in report["training_set"]
    assert len(report["load_average_end"]) == 3
    rows = report["rows"]
    assert [(r["kind"], r["workers"]) for r in rows] == [
        (kind, w) for kind in ("scoring", "lds_retrain") for w in (0, 1, 2)
    ]
    for row in rows:
        assert row["seconds"] > 0 and len(row["load_average"]) == 3
        if row["kind"] == "scoring":
            assert row["points_per_second"] > 0
            assert len(row["peak_mb"]) == max(row["workers"], 1)
            assert all(50 < mb < 4096 for mb in row["peak_mb"])
        else:
            assert row["retrains"] == 6 and row["retrains_per_second"] > 0
            assert row.get("same_as_in_process", True) is True  # absent for workers = 0
    assert report["lds_retrain"]["subsets"] == 3
    run_benchmark(
        "scale.py", "--quick", "--kinds", "lds_retrain", "--workers", "1", "--json", str(out)
    )
    merged = json.loads(out.read_text())
    assert [(r["kind"], r["workers"]) for r in merged["rows"]] == [
        ("scoring", 0),
        ("scoring", 1),
        ("scoring", 2),
        ("lds_retrain", 0),
        ("lds_retrain", 1),
    ]
    assert merged["n_train"] == 4_000 and merged["kept_rows_from"] == report["command"]
