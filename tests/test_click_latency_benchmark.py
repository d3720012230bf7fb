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


def test_the_cnn_cases_build_a_network_of_a_million_parameters():
    """The 10^6-parameter CNN of issue 17's click target, as its notebook cell defines it."""
    bench = load_benchmark("click_latency")
    cell = bench.cnn_cells("lookahead=False")[0]
    assert bench.CASES["fashion_cnn_1m_ekfac"]["target_ms"] == 3000
    assert "lookahead=True" in bench.CASES["fashion_cnn_1m_ekfac_lookahead"]["cells"][0]
    definition = cell[cell.index("model = ") : cell.index("X, y = ")]
    scope: dict = {}
    exec("import torch\nfrom torch import nn\n" + definition, scope)
    model = scope["model"]
    assert sum(p.numel() for p in model.parameters()) == 1_023_818
    assert model(scope["torch"].zeros(2, 784)).shape == (2, 10)
