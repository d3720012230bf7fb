"""benchmarks/click_latency.py --cases X keeps the other cases' earlier rows in its JSON, each row
with the command and date that measured it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # its sibling module machine, as when run
    spec = importlib.util.spec_from_file_location(
        "click_latency", ROOT / "benchmarks/click_latency.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_partial_run_replaces_only_its_cases(tmp_path: Path):
    bench = _load()
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
