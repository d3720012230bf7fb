"""benchmarks/lds.py on a tiny setting: its rows, shared subsets and tables (no timings), the
merging of pieces into one JSON, the README's table, and dattri's signs against ours."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import lds as bench  # noqa: E402
import lds_models  # noqa: E402
import lds_table  # noqa: E402
from peer_systems import dattri_lds  # noqa: E402


def settings(**kw) -> dict:
    return {
        "cases": ["digits_lr"], "regimes": ["minimum", "practitioner"],
        "solvers": ["direct", "cg"], "hessians": ["exact", "gauss-newton"], "dattri": [],
        "subsets": 4, "n_test": 2, "fraction": 0.5, "noise_floor": True, "epochs": 1,
        "max_iter": 50, "trak_models": 1, "max_hessian_gb": 8.0, "max_method_gb": 12.0, "attributions": [],
        "ensemble_models": 2, "seed": 0, "threads": 1,
        "lissa_depth": 50, "lissa_batch": 20, "cg_maxiter": 100, "workers": 0, "retrain_chunk": 0,
        "command": "python benchmarks/lds.py --tiny", **kw,
    }  # fmt: skip


@pytest.fixture(scope="module")
def tiny_rows() -> list[dict]:
    case = lds_models.digits_lr(n_test=2, n_train=120)
    rows = []
    for regime in ("minimum", "practitioner"):
        rows += bench.run_case(case, regime, settings())
    return rows


@pytest.mark.slow  # about 10 s: two trainings and 16 retrains
def test_rows_have_every_key_and_lds_in_range(tiny_rows):
    assert len(tiny_rows) == 2 * 4
    for r in tiny_rows:
        assert set(bench.ROW_KEYS) <= set(r), set(bench.ROW_KEYS) - set(r)
        assert r["subsets"] == 4 and r["n_test"] == 2 and r["n_train"] == 120
        assert -1.0 <= r["lds"] <= 1.0, r
        assert all(-1.0 <= v <= 1.0 for v in r["lds_per_test"] if np.isfinite(v))
        assert r["damping"] >= 0 and r["seconds"] > 0


@pytest.mark.slow
def test_methods_of_one_model_and_regime_share_subsets(tiny_rows):
    for regime in ("minimum", "practitioner"):
        rows = [r for r in tiny_rows if r["regime"] == regime]
        assert len({r["subset_hash"] for r in rows}) == 1
        assert len({(r["noise_floor"], r["retrain_seconds"]) for r in rows}) == 1
    # the two regimes draw the same subsets (same seed), but retrain them differently
    assert len({r["subset_hash"] for r in tiny_rows}) == 1
    assert "Adam" in tiny_rows[-1]["recipe"] and "L-BFGS" in tiny_rows[0]["recipe"]


@pytest.mark.slow
def test_markdown_table_has_a_line_per_row_and_says_reduced(tiny_rows):
    report = {"complete": False, "rows": tiny_rows}
    lines = lds_table.markdown(report).splitlines()
    assert lines[0].startswith("Reduced run: 4 subsets, 2 test points")
    assert sum(line.startswith("| digits_lr |") for line in lines) == len(tiny_rows)
    assert lines[-1].strip() == "python benchmarks/lds.py --tiny"


def test_methods_pair_every_solver_with_every_hessian_but_ekfac():
    assert bench.methods(["direct", "ekfac"], ["exact", "gauss-newton"]) == [
        ("direct", "exact"),
        ("direct", "gauss-newton"),
        ("ekfac", "gauss-newton"),
    ]


def test_an_explicit_hessian_too_big_is_a_skipped_row_with_its_reason():
    case = lds_models.fmnist_mlp(n_test=1, n_train=10)
    reason = bench.hessian_too_big(case, 8.0)
    assert "101,770 x 101,770" in reason and "83 GB" in reason
    assert bench.hessian_too_big(lds_models.digits_lr(n_test=1), 8.0) is None
    row = {"system": "ours", "method": "direct (exact)", "lds": None, "skipped": reason}
    assert lds_table.lds_cell(row) == f"not run: {reason}"


@pytest.mark.slow  # about 10 s: one training, 6 retrains, 2 half models and 2 seeds
def test_our_attribution_rows_share_dattris_checkpoints_and_score_the_same_retrains():
    case = lds_models.digits_lr(n_test=3, n_train=80)
    s = bench.shared(
        case, "minimum", settings(subsets=3, trak_models=2, attributions=list(bench.ATTRIBUTIONS))
    )
    rows = bench.attribution_rows(s)
    assert [r["method"] for r in rows] == [
        "Grad-Dot",
        "TracIn",
        "TRAK",
        "IF ensemble",
        "EK-FAC ensemble",
    ]
    for r in rows:
        assert "error" not in r and "skipped" not in r, r
        assert -1.0 <= r["lds"] <= 1.0 and r["subsets"] == 3 and r["system"] == "ours"
    # dattri's TracIn and TRAK get the very checkpoints ours got, made once
    tracin, _ = bench.dattri_target(s, "tracin")
    assert tracin.checkpoints is s.checkpoints("tracin")[0]
    trak, made = bench.dattri_target(s, "trak")
    assert len(trak.checkpoints) == 2 and made["checkpoints"].startswith("2 models")
    assert rows[3]["checkpoints"].startswith("2 models trained by the regime's recipe on all")
    # the EK-FAC ensemble averages EK-FAC over the IF ensemble's very models
    assert rows[4]["checkpoints"] == rows[3]["checkpoints"]
    assert rows[4]["settings"]["solver"] == "ekfac" and rows[4]["settings"]["models"] == 2
    assert rows[4]["lds"] != rows[3]["lds"]
    assert ("digits_lr", "minimum", "ours", "TRAK") in bench.required()


@pytest.mark.slow  # about 5 s: one training and 6 retrains
def test_a_method_over_the_memory_cap_is_a_skipped_row_and_the_run_goes_on():
    case = lds_models.digits_lr(n_test=2, n_train=60)
    s = bench.shared(case, "minimum", settings(subsets=3, max_method_gb=1.0))

    def hog():
        block = torch.ones(int(3e9) // 4)  # 3 GB at once, as dattri's explicit IF on the CNN
        return np.zeros((2, 60)) + float(block[0]), {}

    def light():
        return np.ones((2, 60)), {}

    big = bench.attempt(s, hog, system="dattri", method="IF explicit")
    assert big["lds"] is None and "error" not in big
    assert "more than 1 GB" in big["skipped"] and "one block of 3.0 GB" in big["skipped"]
    small = bench.attempt(s, light, system="ours", method="direct (exact)")
    assert "skipped" not in small and "error" not in small and small["seconds"] >= 0
    torch.ones(int(3e9) // 4)  # the cap is lifted after the method


@pytest.mark.slow  # about 5 s: two trainings and 12 retrains
def test_dattri_settings_come_from_our_rows_of_an_earlier_piece_of_the_same_retrains():
    case = lds_models.digits_lr(n_test=2, n_train=60)
    s = bench.shared(case, "minimum", settings(subsets=3))
    other = bench.shared(case, "practitioner", settings(subsets=3))

    def lissa_row(shared: bench.Shared, damping: float) -> dict:
        info = {"damping": damping, "max_eigenvalue": 7.0}
        fields = {"system": "ours", "method": "lissa (exact)", "solver": "lissa"}
        return shared.row(np.zeros((2, 60)), hessian="exact", settings=info, **fields)

    mine, theirs = lissa_row(s, 0.25), lissa_row(other, 0.5)
    assert (
        bench.our_choice(bench.our_rows_to_match(s, [], [mine, theirs]), "lissa", "damping") == 0.25
    )
    # this piece's own rows come first; another regime's, or other retrains', never count
    here = lissa_row(s, 0.125)
    assert bench.our_choice(bench.our_rows_to_match(s, [here], [mine]), "lissa", "damping") == 0.125
    stale = {**mine, "subset_hash": "another draw"}
    assert bench.our_rows_to_match(s, [], [theirs, stale]) == []


def fake_row(model: str, regime: str, system: str, method: str, lds=0.5, n=100) -> dict:
    return {
        "model": model, "regime": regime, "system": system, "method": method, "lds": lds,
        "lds_se": 0.01, "noise_floor": 0.9, "noise_floor_se": 0.01, "subsets": n, "n_test": n,
        "command": f"python benchmarks/lds.py --cases {model}",
    }  # fmt: skip


def full_rows(n: int = 100) -> list[dict]:
    return [fake_row(*key, n=n) for key in bench.required()]


def test_complete_only_with_every_required_row_at_100_subsets_and_test_points():
    complete, missing = bench.completeness(full_rows())
    assert complete and missing == []
    rows = full_rows()
    dropped = rows.pop(3)
    complete, missing = bench.completeness(rows)
    assert not complete
    assert missing == [" ".join(dropped[k] for k in ("model", "regime", "system", "method"))]
    assert not bench.completeness(full_rows(n=99))[0]
    rows = full_rows()
    rows[0]["error"] = "RuntimeError: boom"
    assert not bench.completeness(rows)[0]


def test_writing_keeps_foreign_keys_and_merge_replaces_only_the_pieces_rerun():
    old = {
        "complete": False,
        "pbrf": {"rows": [{"model": "digits_cnn"}]},
        "runs": [
            {"command": "old", "pairs": [["digits_lr", "minimum"], ["digits_cnn", "minimum"]]}
        ],
        "rows": [fake_row("digits_lr", "minimum", "ours", "cg (exact)", lds=0.1)]
        + [fake_row("digits_cnn", "minimum", "ours", "cg (exact)", lds=0.2)],
        "command": "from the one-run format",
    }
    new = [fake_row("digits_lr", "minimum", "ours", "cg (exact)", lds=0.9)]
    header = {"command": "new", "pairs": [("digits_lr", "minimum")]}
    report = bench.merged(old, new, header, merge=True)
    assert report["pbrf"] == old["pbrf"] and "command" not in report
    assert [(r["model"], r["lds"]) for r in report["rows"]] == [
        ("digits_cnn", 0.2),
        ("digits_lr", 0.9),
    ]
    assert [run["command"] for run in report["runs"]] == ["old", "new"]
    fresh = bench.merged(old, new, header, merge=False)
    assert fresh["pbrf"] == old["pbrf"] and fresh["rows"] == new and len(fresh["runs"]) == 1


def test_merge_keeps_methods_not_rerun_only_when_they_share_the_retrains():
    def row(method, lds, hash_="abc", floor=0.9):
        return {**fake_row("digits_cnn", "practitioner", "ours", method, lds=lds),
                "subset_hash": hash_, "noise_floor": floor, "n_train": 1300}  # fmt: skip

    old = {"runs": [{"command": "cnn", "pairs": [["digits_cnn", "practitioner"]]}],
           "rows": [row("cg (exact)", 0.3), row("lissa (exact)", 0.2)]}  # fmt: skip
    header = {"command": "trak", "pairs": [("digits_cnn", "practitioner")]}
    added = bench.merged(old, [row("TRAK", 0.4), row("cg (exact)", 0.31)], header, merge=True)
    got = sorted((r["method"], r["lds"]) for r in added["rows"])
    assert got == [("TRAK", 0.4), ("cg (exact)", 0.31), ("lissa (exact)", 0.2)]
    assert [run["command"] for run in added["runs"]] == ["cnn", "trak"]
    other = bench.merged(old, [row("TRAK", 0.4, hash_="xyz")], header, merge=True)
    assert [r["method"] for r in other["rows"]] == ["TRAK"]  # other subsets: old rows dropped
    floor = bench.merged(old, [row("TRAK", 0.4, floor=0.8)], header, merge=True)
    assert [r["method"] for r in floor["rows"]] == ["TRAK"]


def test_readme_table_has_a_line_per_method_and_a_dash_where_none_ran():
    rows = full_rows()
    rows[0].update(lds=None, skipped="too big")
    table = bench.readme_table({"complete": False, "rows": rows})
    lines = table.splitlines()
    assert lines[2].startswith("| LDS | digits_lr minimum | digits_lr practitioner |")
    assert lines[4].startswith("| noise floor | 0.900 |")
    assert lines[5].startswith(f"| ours direct (exact) | {lds_table.NOT_RUN} | 0.500 |")
    assert len(lines) == 5 + len({(r["system"], r["method"]) for r in rows})


def test_the_readme_carries_the_table_of_the_committed_json():
    report = json.loads(bench.RESULTS.read_text())
    readme = (ROOT / "README.md").read_text()
    assert lds_table.splice(readme, bench.readme_table(report)) == readme, (
        "README.md's LDS table is not that of benchmarks/results/lds.json: run "
        "python benchmarks/lds.py --readme"
    )


def test_splice_needs_both_markers_once():
    text = f"a\n{lds_table.START}\nold\n{lds_table.END}\nb"
    assert lds_table.splice(text, "new") == f"a\n{lds_table.START}\nnew\n{lds_table.END}\nb"
    with pytest.raises(ValueError, match="text"):
        lds_table.splice("a\nb", "new")


def test_pbrf_table_reads_a_list_or_rows_and_shows_missing_fields_as_na():
    assert lds_table.pbrf_table({}) is None
    assert lds_table.pbrf_table({"pbrf": {"rows": []}}) is None
    row = {"model": "digits_cnn", "regime": "minimum", "solver": "cg", "pbrf_r": 0.91234}
    for pbrf in ([row], {"rows": [row]}):
        lines = lds_table.pbrf_table({"pbrf": pbrf}).splitlines()
        assert lines[2] == "| digits_cnn | minimum | cg | n/a | n/a | 0.912 | n/a | n/a |"


@pytest.mark.slow  # about 15 s: one training and every dattri method on 120 points
def test_dattri_methods_score_in_our_sign():
    pytest.importorskip("dattri")
    case = lds_models.digits_lr(n_test=3, n_train=120)
    train_fn, l2, _ = lds_models.regime("minimum", 1, 200)
    model = lds_models.train_model(case, train_fn)
    ours, _ = bench.ours(model, case, l2, "direct", "exact", settings())
    target = dattri_lds.Target(model, case.X, case.y, case.x_test, case.y_test)
    target.checkpoints, target.weights = [lds_models.snapshot(model)], [1.0]
    floor = {"explicit": 0.99, "cg": 0.99, "lissa": 0.95, "arnoldi": 0.5}
    for method in dattri_lds.METHODS:
        args = dattri_lds.settings(method, l2, 0.0, top_eigenvalue=5.0)
        if method == "trak":  # 512 projections of 120 gradients: a singular kernel
            args["projector_kwargs"]["proj_dim"] = 64
        theirs = dattri_lds.scores(method, target, args)
        r = np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(ours, theirs, strict=True)])
        assert r > floor.get(method, 0.2), (method, r)


@pytest.mark.slow  # about 5 s: one training and 8 retrains, then the same from the store
def test_stored_retrains_are_reused_and_score_every_method_the_same(tmp_path, monkeypatch):
    case = lds_models.digits_lr(n_test=2, n_train=80)
    given = settings(solvers=["direct"], hessians=["exact"], retrains=str(tmp_path))
    first = bench.run_case(case, "minimum", given)
    assert len(list(tmp_path.glob("digits_lr-minimum-*.npz"))) == 1
    assert not first[0]["retrains_stored"]

    def no_retrains(*args, **kwargs):
        raise AssertionError("retrained although the store has the retrains")

    monkeypatch.setattr(bench, "retrain_once", no_retrains)
    again = bench.run_case(case, "minimum", given)
    assert again[0]["retrains_stored"]
    for key in ("lds", "noise_floor", "subset_hash", "retrain_seconds", "lds_per_test"):
        assert again[0][key] == first[0][key], key
    # another subset seed is another file: it retrains
    with pytest.raises(AssertionError, match="retrained although"):
        bench.run_case(case, "minimum", {**given, "seed": 1})


@pytest.mark.slow  # about 5 s: one training and 8 retrains, stored in chunks, then resumed
def test_retrains_cut_off_mid_piece_resume_from_the_last_chunk_stored(tmp_path, monkeypatch):
    case = lds_models.digits_lr(n_test=2, n_train=80)
    given = settings(solvers=["direct"], hessians=["exact"], retrains=str(tmp_path),
                     retrain_chunk=2)  # fmt: skip
    whole = bench.run_case(case, "minimum", {**given, "retrains": None})
    real, asked = bench.retrain_once, []

    def cut_after_one_chunk(model, case, train_fn, l2, settings, resume=None):
        asked.append((settings["subsets"], 0 if resume is None else resume.n_subsets))
        if resume is not None:
            raise KeyboardInterrupt  # the piece is killed during its second chunk
        return real(model, case, train_fn, l2, settings, resume)

    monkeypatch.setattr(bench, "retrain_once", cut_after_one_chunk)
    with pytest.raises(KeyboardInterrupt):
        bench.run_case(case, "minimum", given)
    assert asked == [(3, 0), (4, 3)]  # the first chunk at least iw.lds's 3 subsets
    monkeypatch.setattr(bench, "retrain_once", real)
    stored = next(tmp_path.glob("digits_lr-minimum-*.npz"))
    calls = []
    monkeypatch.setattr(bench, "retrain_once", lambda *a, **k: calls.append(a[-1]) or real(*a, **k))
    again = bench.run_case(case, "minimum", given)
    assert [r.n_subsets for r in calls] == [3]  # resumed from the 3 stored subsets
    assert not again[0]["retrains_stored"]
    for key in ("lds", "noise_floor", "subset_hash", "lds_per_test", "subsets"):
        assert again[0][key] == whole[0][key], key
    monkeypatch.setattr(bench, "retrain_once", cut_after_one_chunk)  # must not be called
    assert bench.run_case(case, "minimum", given)[0]["retrains_stored"]
    assert list(tmp_path.glob("*.npz")) == [stored]


@pytest.mark.slow  # about 5 s: digits LR, 4 subsets
def test_a_run_saves_after_each_phase_and_its_saves_are_one_run_in_the_file():
    saves = []
    given = settings(cases=["digits_lr"], regimes=["minimum"], solvers=["direct"],
                     hessians=["exact"], attributions=["grad-dot"])  # fmt: skip
    rows, header = bench.run(given, lambda rows, header: saves.append((list(rows), header)))
    assert [len(r) for r, _ in saves] == [1, 2, 2]  # ours, our Grad-Dot, dattri's (none asked)
    assert [h["finished"] for _, h in saves] == [False] * 3 and header["finished"]
    assert [r["method"] for r in rows] == ["direct (exact)", "Grad-Dot"]
    report = {}
    for partial, h in saves + [(rows, header)]:
        report = bench.merged(report, partial, h, merge=True)
    assert len(report["runs"]) == 1 and report["runs"][0]["finished"]
    assert [r["method"] for r in report["rows"]] == ["direct (exact)", "Grad-Dot"]


@pytest.mark.slow  # about 5 s: digits LR, 4 subsets, CG twice
def test_a_preconditioned_cg_row_scores_as_plain_cg_and_says_its_preconditioner():
    case = lds_models.digits_lr(n_test=2, n_train=80)
    given = settings(regimes=["minimum"], solvers=["cg"], hessians=["exact"])
    plain = bench.run_case(case, "minimum", given)[0]
    pre = bench.run_case(case, "minimum", {**given, "cg_preconditioner": "ekfac"})[0]
    assert pre["lds"] == pytest.approx(plain["lds"], abs=1e-9)
    assert "preconditioner" not in plain["settings"]
    assert pre["settings"]["solver_settings"]["preconditioner"] == "ekfac"
    assert pre["settings"]["preconditioner"].startswith("EK-FAC of the Gauss-Newton matrix")
    table = lds_table.markdown({"rows": [pre], "runs": [], "complete": False, "missing": []})
    assert "preconditioner EK-FAC of the Gauss-Newton matrix" in table


@pytest.mark.slow  # about 5 s: one training, 6 retrains, 2 half models
def test_trak_ensembles_scores_both_averages_and_the_default_is_lds_pys_row():
    import trak_ensembles

    case = lds_models.digits_lr(n_test=3, n_train=80)
    s = bench.shared(case, "practitioner", settings(subsets=3, trak_models=2))
    rows = trak_ensembles.ensemble_rows(s, seeds=1)
    assert [(r["ensemble"], r["seed"]) for r in rows] == [("removal-effect", 0), ("paper", 0)]
    assert all(-1 <= r["lds"] <= 1 and r["models"] == 2 for r in rows)
    states, weights, _ = s.checkpoints("trak")
    scores, info = bench.our_attribution("trak", s, states, weights)
    assert "ensemble" not in info  # lds.py's TRAK rows: the default average
    assert s.base.rescore(scores).mean == pytest.approx(rows[0]["lds"], abs=1e-12)
    assert rows[1]["lds"] != rows[0]["lds"]
