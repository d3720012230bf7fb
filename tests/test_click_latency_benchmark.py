"""benchmarks/click_latency.py --cases X keeps the other cases' earlier rows in its JSON, each row
with the command and date that measured it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def test_a_partial_run_replaces_only_its_cases(tmp_path: Path):
    bench = load_benchmark("click_latency")
    path = tmp_path / "click.json"
    path.write_text(
        json.dumps(
            {
                "date": "2026-11-28",
                "command": "old command",
                "results": [{"case": "digits", "median_ms": 85.7}, {"case": "b", "median_ms": 1.0}],
            }
        )
    )
    new = [{"case": "b", "median_ms": 2.0, "date": "2026-12-02", "command": "new command"}]
    out = bench.merged(path, new)
    assert out["results"] == [
        {"case": "digits", "median_ms": 85.7, "date": "2026-11-28", "command": "old command"},
        new[0],
    ]
    assert set(bench.CASES) >= {"digits", "fashion_mnist_55k", "fashion_mlp_10k_ekfac"}
    assert bench.merged(tmp_path / "missing.json", new)["results"] == new
