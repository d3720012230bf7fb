"""benchmarks/scale.py --quick as make test runs it: it completes and writes one row per run
(single process, 1 and 2 Dask workers) with workers, points_per_second and peak_mb."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("distributed")


@pytest.mark.slow
@pytest.mark.fashion_mnist
@pytest.mark.timeout(600)
def test_scale_quick_run_writes_its_json(tmp_path: Path):
    out = tmp_path / "scale.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=580,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["command"] == f"benchmarks/scale.py --quick --json {out}"
    assert {"cpu", "cores", "load_average_start"} <= set(report["machine"])
    assert report["n_train"] == 4_000 and "repeated" in report["training_set"]
    assert len(report["load_average_end"]) == 3
    rows = report["rows"]
    assert [r["workers"] for r in rows] == [0, 1, 2]
    for row in rows:
        assert row["points_per_second"] > 0 and row["seconds"] > 0
        assert len(row["peak_mb"]) == max(row["workers"], 1)
        assert all(50 < mb < 4096 for mb in row["peak_mb"])
