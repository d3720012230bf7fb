"""benchmarks/lds.py on a tiny setting: its rows, shared subsets and Markdown table (no timings)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import lds as bench  # noqa: E402

pytestmark = pytest.mark.slow  # about 10 s: two trainings and 16 retrains


def settings(**kw) -> dict:
    return {
        "cases": ["digits_lr"], "regimes": ["minimum", "practitioner"],
        "solvers": ["direct", "cg"], "hessians": ["exact", "gauss-newton"], "dattri": [],
        "subsets": 4, "n_test": 2, "fraction": 0.5, "noise_floor": True, "epochs": 1,
        "max_iter": 50, "seed": 0, "threads": 1, "command": "python benchmarks/lds.py --tiny",
        **kw,
    }  # fmt: skip


@pytest.fixture(scope="module")
def tiny_rows() -> list[dict]:
    case = bench.digits_lr(n_test=2, n_train=120)
    rows = []
    for regime in ("minimum", "practitioner"):
        rows += bench.run_case(case, regime, settings())
    return rows


def test_rows_have_every_key_and_lds_in_range(tiny_rows):
    assert len(tiny_rows) == 2 * 4
    for r in tiny_rows:
        assert set(bench.ROW_KEYS) <= set(r), set(bench.ROW_KEYS) - set(r)
        assert r["subsets"] == 4 and r["n_test"] == 2 and r["n_train"] == 120
        assert -1.0 <= r["lds"] <= 1.0, r
        assert all(-1.0 <= v <= 1.0 for v in r["lds_per_test"] if np.isfinite(v))
        assert r["damping"] >= 0 and r["seconds"] > 0


def test_methods_of_one_model_and_regime_share_subsets(tiny_rows):
    for regime in ("minimum", "practitioner"):
        rows = [r for r in tiny_rows if r["regime"] == regime]
        assert len({r["subset_hash"] for r in rows}) == 1
        assert len({(r["noise_floor"], r["retrain_seconds"]) for r in rows}) == 1
    # the two regimes draw the same subsets (same seed), but retrain them differently
    assert len({r["subset_hash"] for r in tiny_rows}) == 1
    assert "Adam" in tiny_rows[-1]["recipe"] and "L-BFGS" in tiny_rows[0]["recipe"]


def test_markdown_table_has_a_line_per_row_and_says_reduced(tiny_rows):
    report = {"complete": False, "command": "python benchmarks/lds.py --tiny", "rows": tiny_rows}
    table = bench.markdown(report)
    lines = table.splitlines()
    assert lines[0].startswith("Reduced run") and "--tiny" in lines[0]
    assert sum(line.startswith("| digits_lr |") for line in lines) == len(tiny_rows)


def test_methods_pair_every_solver_with_every_hessian_but_ekfac():
    assert bench.methods(["direct", "ekfac"], ["exact", "gauss-newton"]) == [
        ("direct", "exact"),
        ("direct", "gauss-newton"),
        ("ekfac", "gauss-newton"),
    ]


def test_dattri_explicit_agrees_with_ours_in_our_sign(tiny_rows):
    pytest.importorskip("dattri")
    import torch

    case = bench.digits_lr(n_test=2, n_train=120)
    train_fn, l2, _ = bench.regime("minimum", 1, 200)
    model = bench.train_model(case, train_fn)
    scores, _ = bench.ours(model, case, l2, "direct", "exact")
    theirs = bench.dattri_scores(model, case, l2, "explicit")
    for a, b in zip(scores, theirs, strict=True):
        assert np.corrcoef(a, b)[0, 1] > 0.99
    assert torch.get_num_threads() >= 1
