"""benchmarks/pbrf.py on a tiny setting: its removal rule, its rows, its JSON section (no timings)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.scripts import load_benchmark

bench = load_benchmark("pbrf")


def tiny_settings(**kw) -> dict:
    args = bench.parse(["--solvers", "direct,ekfac", "--hessians", "gauss-newton", "--epochs",
                        "1", "--n-top", "3", "--n-random", "3", "--pbrf-max-iter", "30"])  # fmt: skip
    return {**bench.settings_of(args, ["--tiny"]), **kw}


@pytest.fixture(scope="module")
def tiny_run():
    # logistic regression: outputs linear in theta, so the PBRF is well posed at every damping
    case = bench.CASES["digits_lr"](n_test=2, n_train=120)
    return bench.run_case(case, "practitioner", tiny_settings())


def test_removed_points_are_the_top_then_random_others():
    reference = np.array([[0.0, 5.0, -1.0, 0.5, 0.1, -7.0], [0.2, 0.0, 3.0, 0.0, 0.0, 0.0]])
    removed = bench.removed_points(reference, n_top=2, n_random=3, seed=0)
    assert removed[:2].tolist() == [5, 1]  # largest max_t |reference|
    assert len(set(removed.tolist())) == 5 and set(removed[2:].tolist()) <= {0, 2, 3, 4}
    assert removed.tolist() == bench.removed_points(reference, 2, 3, 0).tolist()


def test_correlate_leaves_out_unsolved_responses():
    predicted = np.array([[1.0], [2.0], [3.0], [4.0]])
    actual = np.array([[1.1], [np.nan], [2.9], [4.2]])
    out = bench.correlate(predicted, actual)
    assert out["used"] == 3 and 0.99 < out["r"] <= 1.0
    assert np.isnan(bench.correlate(predicted, np.full((4, 1), np.nan))["r"])


@pytest.mark.slow  # about 9 s on 2 shared cores: a training, 12 PBRF solves, 7 retrains
def test_rows_score_every_method_at_auto_and_fixed_damping(tiny_run):
    summary, rows = tiny_run
    assert len(rows) == 2 * 2 and not summary["errors"]
    assert {(r["solver"], r["damping_mode"]) for r in rows} == {
        ("direct", "auto"), ("direct", "fixed"), ("ekfac", "auto"), ("ekfac", "fixed"),
    }  # fmt: skip
    for r in rows:
        assert r["lambda"] == pytest.approx(summary["l2"] + r["damping"])
        assert r["n_removed"] == 6 and r["n_test"] == 2 and r["pbrf_n_used"] == 6
        assert -1.0 <= r["loo_r"] <= 1.0 and r["pbrf_grad_norm_max"] <= 1e-10
    exact = next(r for r in rows if r["solver"] == "direct" and r["damping_mode"] == "fixed")
    assert exact["target"] == ">= 0.95" and exact["met"] and exact["pbrf_r"] > 0.99
    assert exact["pbrf_slope"] == pytest.approx(1.0, abs=0.1)  # the scale too, not only R
    assert summary["loo"]["baseline_drift"] == 0.0  # the recipe is deterministic
    assert len(summary["removed"]) == 6


@pytest.mark.slow  # shares the run above
def test_section_is_written_beside_the_other_keys(tmp_path, tiny_run):
    summary, rows = tiny_run
    path = tmp_path / "lds.json"
    path.write_text(json.dumps({"rows": [{"model": "kept"}], "complete": False}))
    summary = {**summary, "command": "python benchmarks/pbrf.py --tiny"}
    section = {"command": summary["command"], "runs": [summary], "rows": rows}
    section = json.loads(json.dumps(section, default=float))
    bench.write_section(path, section)
    report = json.loads(path.read_text())
    assert report["rows"] == [{"model": "kept"}] and report["complete"] is False
    assert report["pbrf"]["rows"][0]["model"] == "digits_lr"
    # a later run of another (model, regime) adds to the section; the same pair replaces its own
    other = {"model": "digits_cnn", "regime": "practitioner", "command": "python other"}
    bench.write_section(path, {"command": "python other", "runs": [other], "rows": [other]})
    bench.write_section(path, section)
    merged = json.loads(path.read_text())["pbrf"]
    assert [r["model"] for r in merged["runs"]] == ["digits_cnn", "digits_lr"]
    assert len(merged["rows"]) == len(rows) + 1
    assert merged["commands"] == ["python other", "python benchmarks/pbrf.py --tiny"]
    table = bench.markdown(section).splitlines()
    assert sum(line.startswith("| digits_lr |") for line in table) == len(rows)
