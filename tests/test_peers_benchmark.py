"""benchmarks/peers.py and its benchmarks/peer_systems/: its sign/scale normalisation against a float64 brute-force formula, its
argument errors, and its quick run (our systems only, so it runs in .venv without pyDVL/Captum).

Where pyDVL, Captum or Kronfluence import (``.venv-peers``), their normalised outputs are checked
too. EK-FAC rows (ours, Kronfluence) are checked against a brute-force EK-FAC of the tiny model's
one Linear layer (:func:`ekfac_reference`), not against I_ref, which EK-FAC only approximates.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import grad, hessian, vmap

import influence_widgets as iw
from tests.scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {
    "case",
    "system",
    "solver",
    "seconds",
    "pearson_vs_exact",
    "rel_err_vs_exact",
    "peak_mb",
    "settings",
    "normalisation",
}


peers = load_benchmark("peers")  # the command line; it puts benchmarks/ on the path, as it runs

from peer_systems import runner  # noqa: E402
from peer_systems.base import adapter, normalise, regularisation, settings_for  # noqa: E402
from peer_systems.cases import (  # noqa: E402
    DEFAULT_RANK,
    QUICK_N_TEST,
    equal_batch,
    make_cases,
    mlp,
)
from peer_systems.report import check_one_device, command_seconds, include_rows  # noqa: E402
from peer_systems.runner import agreement, child_spec, run_case  # noqa: E402
from peer_systems.table import markdown_tables  # noqa: E402

L2, DAMPING = 0.05, 0.02


@pytest.fixture(scope="module")
def tiny():
    """A trained float64 3-class LR on 4-d blobs (15 parameters) and I_ref by brute force:
    I_ref = -g_test^T (Hess R + damping I)^-1 grad L(z_i), with NO L2 term in grad L(z_i)."""
    gen = torch.Generator().manual_seed(3)
    centers = 2.0 * torch.randn(3, 4, generator=gen, dtype=torch.float64)
    y = torch.arange(30) % 3
    X = centers[y] + torch.randn(30, 4, generator=gen, dtype=torch.float64)
    yt = torch.tensor([0, 1, 2, 1])
    Xt = centers[yt] + torch.randn(4, 4, generator=gen, dtype=torch.float64)
    model = iw.models.logistic_regression((4, 3))
    iw.train(model, (X, y), l2=L2, progress=False)
    theta = torch.cat([model.weight.detach().reshape(-1), model.bias.detach()])

    def loss(th, x, t):  # cross-entropy of one point, the model written out by hand
        logits = x @ th[:12].reshape(3, 4).T + th[12:]
        return torch.nn.functional.cross_entropy(logits[None], t[None])

    def risk(th):
        return vmap(loss, in_dims=(None, 0, 0))(th, X, y).mean() + 0.5 * L2 * th.dot(th)

    H = hessian(risk)(theta) + DAMPING * torch.eye(15, dtype=torch.float64)
    G = vmap(grad(loss), in_dims=(None, 0, 0))(theta, X, y)  # no L2 term
    G_test = vmap(grad(loss), in_dims=(None, 0, 0))(theta, Xt, yt)
    S = torch.linalg.solve(H, G_test.T)  # (p, T)
    I_ref = -(G @ S).T
    with_l2 = -((G + L2 * theta) @ S).T  # our I_up,loss: training gradients include l2 theta
    return {
        "model": model,
        "X": X,
        "y": y,
        "Xt": Xt,
        "yt": yt,
        "I_ref": I_ref.numpy(),
        "with_l2": with_l2.numpy(),
        "theta": theta,
        "n": len(X),
        "p": 15,
    }


def _settings(system: str, solver: str, t) -> dict:
    return settings_for(
        system, solver, l2=L2, damping=DAMPING, n=t["n"], p=t["p"], batch_size=10, rank=5
    )


def ekfac_reference(t, curvature: str, shift: float) -> np.ndarray:
    """-<P(D_test), D_i> for the tiny LR (one Linear layer with bias) by brute force, with
    D = r a~^T the per-sample gradient of the cross-entropy of one point (r = softmax - onehot,
    a~ = [x, 1]: no L2 term) and P the EK-FAC inverse (George et al. 2018) of a curvature
    (1/n) sum_i sum_c (f_ic f_ic^T) kron (a~_i a~_i^T) plus ``shift`` I:
    A = mean a~ a~^T = Q_A . Q_A^T, G = mean sum_c f f^T = Q_G . Q_G^T,
    s = mean sum_c (Q_G^T f_ic a~_i^T Q_A)^2 elementwise, P(D) = Q_G [(Q_G^T D Q_A) / (s + shift)]
    Q_A^T. ``curvature`` "gauss_newton": f_ic the columns of a square root of
    diag(p_i) - p_i p_i^T (the exact expectation over labels); "empirical": f_i1 = r_i."""
    W, b = t["theta"][:12].reshape(3, 4), t["theta"][12:]

    def parts(X, y):
        a = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], dim=1)
        p = torch.softmax(X @ W.T + b, dim=1)
        return a, p, p - torch.nn.functional.one_hot(y, 3).to(X.dtype)

    a, p, r = parts(t["X"], t["y"])
    if curvature == "gauss_newton":
        lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        vals, vecs = torch.linalg.eigh(lam)
        F = vecs * vals.clamp(min=0).sqrt()[:, None, :]  # (n, out, c): F F^T = lam
    else:
        F = r[:, :, None]
    n = len(a)
    _, Q_A = torch.linalg.eigh(a.T @ a / n)
    _, Q_G = torch.linalg.eigh(torch.einsum("noc,npc->op", F, F) / n)
    proj = torch.einsum("ok,noc->nkc", Q_G, F)[:, :, None, :] * (a @ Q_A)[:, None, :, None]
    s = (proj**2).sum(dim=(0, 3)) / n  # (out, in + 1)
    at, _, rt = parts(t["Xt"], t["yt"])
    D_test = rt[:, :, None] * at[:, None, :]
    P = Q_G @ ((Q_G.T @ D_test @ Q_A) / (s + shift)) @ Q_A.T
    D_train = r[:, :, None] * a[:, None, :]
    return -torch.einsum("toi,noi->tn", P, D_train).numpy()


def test_normalise_factors_are_the_documented_ones():
    raw = np.arange(6.0).reshape(2, 3) - 2.5
    np.testing.assert_array_equal(normalise("pydvl", raw, n_train=7, l2=0.1), -raw)
    np.testing.assert_array_equal(normalise("kronfluence", raw, n_train=7, l2=0.1), -raw)
    np.testing.assert_array_equal(normalise("captum", raw, n_train=7, l2=0.1), -7 * raw)
    shift = np.array([1.0, -2.0])
    np.testing.assert_allclose(
        normalise("ours", raw, n_train=7, l2=0.1, s_dot_theta=shift),
        raw + 0.1 * shift[:, None],
    )
    with pytest.raises(ValueError, match="s_dot_theta"):
        normalise("ours", raw, n_train=7, l2=0.1)
    with pytest.raises(ValueError, match="unknown system"):
        normalise("other", raw, n_train=7, l2=0.1)
    assert regularisation(0.01, 0.02, 100) == pytest.approx(
        {"pydvl": 0.03, "captum": 3.0, "kronfluence": 0.03}
    )


def test_agreement_is_pearson_and_relative_frobenius_error():
    ref = np.array([[1.0, 2.0], [3.0, -4.0]])
    r, rel = agreement(ref * 2, ref)
    assert r == pytest.approx(1.0) and rel == pytest.approx(1.0)
    r, rel = agreement(ref + np.array([[0.0, 0.0], [0.0, 0.1]]), ref)
    assert rel == pytest.approx(0.1 / np.linalg.norm(ref))
    assert agreement(np.array([[np.nan, 1.0], [2.0, 3.0]]), ref) == (None, None)


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_ours_normalised_equals_brute_force_reference(tiny, solver):
    t = tiny
    settings = _settings("ours", solver, t)
    if solver == "cg":
        settings["rtol"] = 1e-12  # this test is about the normalisation, not CG's accuracy
    matrix, state = adapter("ours").run(
        t["model"], t["X"], t["y"], t["Xt"], t["yt"], solver, settings
    )
    # before normalising: our I_up,loss, whose training gradients include l2 * theta
    np.testing.assert_allclose(matrix.numpy(), t["with_l2"], rtol=1e-7, atol=1e-9)
    extra = adapter("ours").after(state)
    out = normalise("ours", matrix.numpy(), n_train=t["n"], l2=L2, s_dot_theta=extra["s_dot_theta"])
    np.testing.assert_allclose(out, t["I_ref"], rtol=1e-7, atol=1e-9)
    # the L2 term matters here: without the correction the answer is measurably different
    assert np.abs(t["with_l2"] - t["I_ref"]).max() > 1e-3


def test_ours_ekfac_normalised_equals_brute_force_ekfac(tiny):
    t = tiny
    settings = _settings("ours", "ekfac", t)
    matrix, state = adapter("ours").run(
        t["model"], t["X"], t["y"], t["Xt"], t["yt"], "ekfac", settings
    )
    extra = adapter("ours").after(state)
    out = normalise("ours", matrix.numpy(), n_train=t["n"], l2=L2, s_dot_theta=extra["s_dot_theta"])
    expected = ekfac_reference(t, "gauss_newton", L2 + DAMPING)
    np.testing.assert_allclose(out, expected, rtol=1e-8, atol=1e-10)
    # EK-FAC is not H on this model: the check above can tell the two apart
    assert np.abs(expected - t["I_ref"]).max() > 1e-3


def test_settings_carry_the_same_regularisation_to_every_system():
    s = settings_for("pydvl", "cg", l2=0.01, damping=0.02, n=50, p=9, batch_size=10, rank=None)
    assert s["regularization"] == pytest.approx(0.03)
    s = settings_for(
        "captum", "naive_no_projection", l2=0.01, damping=0.02, n=50, p=9, batch_size=10, rank=None
    )
    assert s["hessian_reg"] == pytest.approx(1.5) and s["projection_dim"] == 9
    s = settings_for(
        "kronfluence", "ekfac", l2=0.01, damping=0.02, n=50, p=9, batch_size=10, rank=None
    )
    assert s["damping_factor"] == pytest.approx(0.03) and s["use_empirical_fisher"] is False
    s = settings_for("captum", "arnoldi", l2=0.01, damping=0, n=50, p=9, batch_size=10, rank=4)
    assert s["projection_dim"] == 4
    with pytest.raises(ValueError, match="no solver"):
        settings_for("pydvl", "naive", l2=0, damping=0, n=5, p=5, batch_size=5, rank=None)


def test_equal_batches_divide_the_training_set():
    assert equal_batch(5000, 1000) == 1000
    assert equal_batch(55_000, 1100) == 1100
    assert equal_batch(1300, 1024) == 650
    assert equal_batch(97, 50) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--cases", "5"], "--cases: unknown"),
        (["--cases", "one"], "--cases: expected numbers"),
        (["--systems", "ours,shap"], "--systems: unknown"),
        (["--solvers", "cg,newton"], "--solvers: unknown"),
        (["--quick", "--cases", "2"], "--quick runs case 1 only"),
        (["--repeats", "0"], "--repeats: must be >= 1"),
        (["--time-limit", "-1"], "--time-limit: must be > 0"),
        (["--include", "/nonexistent/peers.json"], "--include: no such file"),
        (["--merge-only", "--json", "out.json"], "--merge-only needs --json and --include"),
        (["--merge-only", "--json", "/no/p.json", "--markdown", "t.md"], "no results to write"),
        (["--device", "gpu0"], "--device: not a torch device: 'gpu0'"),
        (["--device", "meta"], "--device: device='meta' holds no data"),
    ],
)
def test_argument_errors_name_the_argument(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        peers.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def _run(case: int, system: str, solver: str, seconds: float) -> dict:
    return {"case": case, "system": system, "solver": solver, "seconds": seconds}


def _report(rows: list[dict], command: str, date: str) -> dict:
    cases = {str(r["case"]) for r in rows}
    return {
        "results": rows,
        "cases": {c: {"trained": command} for c in cases},
        "reference": {c: f"reference of {command}" for c in cases},
        "commands": ["first", command],
        "command_seconds": {"first": 10.0, command: 20.0},
        "machine": {"date": date},
        "earlier_machines": [{"date": "0"}],
    }


def test_include_takes_the_selected_rows_of_a_parallel_run():
    # Two runs appended in parallel to copies of one file: each holds the old rows plus its own.
    old = [_run(1, "ours", "cg", 9.0), _run(1, "pydvl", "cg", 90.0), _run(3, "ours", "cg", 60.0)]
    base = _report([*old[:2], _run(3, "ours", "cg", 30.0)], "run A", "1")
    base["commands"].append("merge")  # the merging command comes last
    other = _report([*old, _run(2, "ours", "cg", 5.0), _run(2, "pydvl", "cg", 50.0)], "B", "2")
    taken = include_rows(base, other, [2], ["ours", "pydvl"], ["cg"])
    assert taken == 2
    by_key = {(r["case"], r["system"], r["solver"]): r["seconds"] for r in base["results"]}
    # run B's case-2 rows come in; run A's newer case-3 row is not overwritten by B's old copy
    assert by_key == {
        (1, "ours", "cg"): 9.0,
        (1, "pydvl", "cg"): 90.0,
        (3, "ours", "cg"): 30.0,
        (2, "ours", "cg"): 5.0,
        (2, "pydvl", "cg"): 50.0,
    }
    assert base["cases"]["2"] == {"trained": "B"} and base["cases"]["3"] == {"trained": "run A"}
    assert base["reference"]["2"] == "reference of B"
    assert base["commands"] == ["first", "run A", "B", "merge"]
    assert base["command_seconds"] == {"first": 10.0, "run A": 20.0, "B": 20.0}
    assert base["earlier_machines"] == [{"date": "0"}, {"date": "2"}]
    # the selection narrows by system and solver too; a row of the same key is replaced
    other["results"].append(_run(1, "ours", "lissa", 12.0))
    assert include_rows(base, other, [1], ["ours"], ["lissa"]) == 1
    assert len(base["results"]) == 6
    assert include_rows(base, other, [4], ["ours"], ["cg"]) == 0


def test_merge_only_recomputes_the_targets_from_the_merged_rows(tmp_path: Path, capsys):
    committed = json.loads((ROOT / "benchmarks/results/peers.json").read_text())
    base, other = tmp_path / "base.json", tmp_path / "other.json"
    base.write_text(json.dumps(committed))
    faster = json.loads(json.dumps(committed))
    (row,) = [
        r for r in faster["results"] if (r["case"], r["system"], r["solver"]) == (1, "ours", "cg")
    ]
    row["seconds"] = 0.5
    other.write_text(json.dumps(faster))
    argv = ["--merge-only", "--append", "--json", str(base), "--include", str(other)]
    tables = tmp_path / "tables.md"
    selection = ["--cases", "1", "--systems", "ours", "--solvers", "cg"]
    assert peers.main([*argv, *selection, "--markdown", str(tables)]) == 0
    merged = json.loads(base.read_text())
    # the README's tables: a row per result, the merged one included, and every target's verdict
    text = tables.read_text()
    table_rows = [
        line
        for line in text.splitlines()
        if line.startswith(("| ours", "| pyDVL", "| Captum", "| Kronfluence"))
    ]
    assert len(table_rows) == len(merged["results"])
    assert "| ours | cg (" in text and " | 0.5 | " in text and "None" not in text
    assert text.count("**") == 2 * len(merged["targets"])
    assert len(merged["results"]) == len(committed["results"])
    (cg,) = [t for t in merged["targets"] if t["case"] == 1 and t["name"].startswith("CG")]
    (pydvl,) = [
        r for r in merged["results"] if (r["case"], r["system"], r["solver"]) == (1, "pydvl", "cg")
    ]
    assert cg["measured"] == pytest.approx(pydvl["seconds"] / 0.5)
    assert len(merged["commands"]) == len(committed["commands"]) + 1 and merged["complete"]
    seconds = merged["command_seconds"]  # the runs' own seconds stay, the merge's are added
    earlier = command_seconds(committed)
    assert len(seconds) == len(earlier) + 1 and earlier.items() <= seconds.items()
    assert merged["total_seconds"] == pytest.approx(sum(seconds.values()))
    # nothing was measured by the merge: the machine and versions stay those of the runs
    assert (merged["machine"], merged["versions"]) == (committed["machine"], committed["versions"])
    assert merged["earlier_machines"] == committed["earlier_machines"]
    with pytest.raises(SystemExit, match="none of its rows"):
        peers.main([*argv, "--cases", "1,2", "--solvers", "arnoldi"])  # case 4 has the Arnoldis
    faster["versions"]["pydvl"] = "0.0"
    other.write_text(json.dumps(faster))
    with pytest.raises(SystemExit, match="rerun it with the same packages"):
        peers.main([*argv, "--cases", "1"])


def test_markdown_alone_writes_the_tables_and_leaves_the_json_as_it_was(tmp_path: Path):
    results = tmp_path / "peers.json"
    report = json.loads((ROOT / "benchmarks/results/peers.json").read_text())
    report["results"][-1]["pearson_vs_exact"] = -0.5  # a sign flip must show as one
    report["results"][-1].pop("note", None)
    results.write_text(json.dumps(report))
    before = results.read_bytes()
    tables = tmp_path / "tables.md"
    assert peers.main(["--merge-only", "--json", str(results), "--markdown", str(tables)]) == 0
    assert results.read_bytes() == before
    committed = json.loads(before)
    assert tables.read_text().count("\n| ") == len(committed["results"]) + 2 * len(
        committed["cases"]
    )  # every row, and each case's header and rule
    assert "| -0.500000 |" in tables.read_text()


def test_markdown_marks_the_rows_of_a_retrained_model(tmp_path: Path):
    # case 2's EK-FAC rows were appended after a retrain that did not reproduce the earlier model
    report = json.loads((ROOT / "benchmarks/results/peers.json").read_text())
    for record in report["cases"].values():  # as if no other case had been retrained
        record.pop("earlier_training", None)
    case = report["cases"]["2"]
    case["earlier_training"] = {**case["training"], "risk": case["training"]["risk"] + 1e-3}
    rows = [r for r in report["results"] if r["case"] == 2]
    for r in rows:
        r["measured"] = "2026-01-02T00:00:00+00:00" if r["solver"] == "ekfac" else "2026-01-01"
    text = markdown_tables(report)
    marked = [line for line in text.splitlines() if line.startswith("|") and " † |" in line]
    assert len(marked) == sum(r["solver"] == "ekfac" for r in rows) > 0
    assert all("| ekfac |" in line or "EK-FAC" in line for line in marked)
    assert text.count("† ran on the model trained on 2026-01-02") == 1
    # the same model again (or no earlier record): nothing is marked
    case["earlier_training"] = dict(case["training"])
    assert "†" not in markdown_tables(report)
    del case["earlier_training"]
    assert "†" not in markdown_tables(report)


def test_merge_into_a_new_file_takes_the_first_runs_machine(tmp_path: Path):
    source = ROOT / "benchmarks/results/peers.json"
    committed = json.loads(source.read_text())
    new = tmp_path / "new.json"
    argv = ["--merge-only", "--json", str(new), "--include", str(source), "--cases", "2"]
    assert peers.main(argv) == 0
    merged = json.loads(new.read_text())
    assert {r["case"] for r in merged["results"]} == {2}
    assert (merged["machine"], merged["versions"]) == (committed["machine"], committed["versions"])
    assert list(merged["cases"]) == ["2"] and merged["commands"][:-1] == committed["commands"]


def test_a_file_that_is_not_a_results_file_is_named_in_the_error(tmp_path: Path):
    broken, foreign = tmp_path / "broken.json", tmp_path / "foreign.json"
    broken.write_text("{ not json")
    foreign.write_text(json.dumps({"results": []}))
    results = tmp_path / "peers.json"
    results.write_bytes((ROOT / "benchmarks/results/peers.json").read_bytes())
    with pytest.raises(SystemExit, match=r"--include .*broken.json: not a readable JSON"):
        peers.main(["--merge-only", "--json", str(results), "--include", str(broken)])
    with pytest.raises(SystemExit, match=r"not a results file .*no cases, reference"):
        peers.main(["--merge-only", "--json", str(results), "--include", str(foreign)])
    with pytest.raises(SystemExit, match=r"--json .*broken.json: not a readable JSON"):
        peers.main(["--merge-only", "--json", str(broken), "--markdown", str(tmp_path / "t.md")])
    assert results.read_bytes() == (ROOT / "benchmarks/results/peers.json").read_bytes()


def test_a_run_that_timed_out_is_not_repeated(tmp_path: Path, monkeypatch):
    from tqdm.auto import tqdm

    calls: list[tuple[str, str, int]] = []

    def fake_child(job, case_dir, workdir, threads, limit):
        calls.append((job.system, job.solver, job.repeat))
        if job.system == "pydvl":
            return {"error": f"timed out: killed after {limit:.0f} s", "timed_out": True}
        return {"seconds": 1.0, "peak_mb": 10.0, "peak_scope": "influence work"}

    record = {"n_train": 1300, "n_test": 100, "n_params": 650, "l2": 0.01, "training": {}}
    monkeypatch.setattr(runner, "prepare_case", lambda case, workdir: dict(record))
    monkeypatch.setattr(runner, "run_child", fake_child)
    args = peers.parse_args(["--cases", "1", "--systems", "ours,pydvl", "--solvers", "direct"])
    report = {"cases": {}, "reference": {}, "results": []}
    case = make_cases()[1]
    run_case(case, args, 1, tmp_path, report, lambda complete: None, tqdm)
    assert calls.count(("pydvl", "direct", 0)) == 1 and ("pydvl", "direct", 1) not in calls
    assert [c for c in calls if c[0] == "ours"] == [("ours", "direct", r) for r in range(3)]
    (row,) = [r for r in report["results"] if r["system"] == "pydvl"]
    assert row["timed_out"] and row["seconds"] is None and row["repeats"] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible here")
def test_device_cuda_without_a_gpu_is_a_parser_error(capsys):
    with pytest.raises(SystemExit) as exc:
        peers.parse_args(["--quick", "--device", "cuda"])
    assert exc.value.code == 2
    assert "--device: 'cuda', but" in capsys.readouterr().err


def test_device_reaches_every_child_and_row(tmp_path: Path, monkeypatch):
    """--device cpu is the default; a GPU device (set on the parsed arguments: no GPU is needed
    to check the plumbing) goes into every child's spec, Kronfluence's cpu flag and every row."""
    from tqdm.auto import tqdm

    assert peers.parse_args(["--quick"]).device == torch.device("cpu")
    assert peers.parse_args(["--quick", "--device", "cpu"]).device == torch.device("cpu")
    specs: list[dict] = []

    def fake_child(job, case_dir, workdir, threads, limit):
        specs.append(child_spec(job, case_dir, workdir, threads))
        return {"seconds": 1.0, "peak_mb": 10.0, "peak_scope": "influence work", "peak_gpu_mb": 5}

    record = {"n_train": 1954, "n_test": 10, "n_params": 1954, "l2": 1e-3, "training": {}}
    monkeypatch.setattr(runner, "prepare_case", lambda case, workdir: dict(record))
    monkeypatch.setattr(runner, "run_child", fake_child)
    args = peers.parse_args(["--cases", "2", "--systems", "ours,kronfluence", "--repeats", "1"])
    args.device = torch.device("cuda:1")
    report = {"cases": {}, "reference": {}, "results": []}
    run_case(make_cases()[2], args, 1, tmp_path, report, lambda complete: None, tqdm)
    assert specs and {s["device"] for s in specs} == {"cuda:1"}
    kron = [s for s in specs if s["system"] == "kronfluence"]
    assert kron and kron[0]["settings"]["class"].startswith("Analyzer(cpu=False,")
    assert {r["device"] for r in report["results"]} == {"cuda:1"}
    assert all(r["peak_gpu_mb"] == 5 for r in report["results"])
    on_cpu = settings_for(
        "kronfluence", "ekfac", l2=0.01, damping=0.02, n=50, p=9, batch_size=10, rank=None
    )
    assert on_cpu["class"].startswith("Analyzer(cpu=True,")
    # a GPU run appended to a file of CPU rows (older rows name no device: the CPU) is refused
    with pytest.raises(SystemExit, match="rows of cpu and cuda:1 would be mixed"):
        check_one_device([{"case": 1}], "cuda:1", "--append peers.json")
    check_one_device([{"case": 1}, {"device": "cpu"}], "cpu", "--append peers.json")


def test_quick_and_case_defaults():
    args = peers.parse_args(["--quick"])
    assert args.case_list == [1] and args.repeats == 1
    cases = make_cases(quick=True)
    assert cases[1].n_test == QUICK_N_TEST and cases[2].repeats == 3
    assert make_cases(case4_n_train=600)[4].batch_size == 600
    assert cases[4].rank == DEFAULT_RANK


def test_mlp_has_about_100k_parameters():
    assert sum(p.numel() for p in mlp(784, 10).parameters()) == 101_770


# ----- the peers themselves, where installed (.venv-peers) --------------------------------------
def test_pydvl_normalised_equals_brute_force_reference(tiny):
    pytest.importorskip("pydvl.influence.torch")
    t = tiny
    matrix, _ = adapter("pydvl").run(
        t["model"], t["X"], t["y"], t["Xt"], t["yt"], "direct", _settings("pydvl", "direct", t)
    )
    out = normalise("pydvl", matrix.numpy(), n_train=t["n"], l2=L2)
    np.testing.assert_allclose(out, t["I_ref"], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("solver", ["naive_no_projection", "arnoldi"])
def test_captum_normalised_equals_brute_force_reference(tiny, tmp_path, solver):
    pytest.importorskip("captum.influence")
    t = tiny
    checkpoint = tmp_path / "model.pt"
    torch.save(t["model"].state_dict(), checkpoint)
    settings = _settings("captum", solver, t)
    if solver == "arnoldi":
        settings["projection_dim"] = t["p"]
    matrix, _ = adapter("captum").run(
        t["model"], t["X"], t["y"], t["Xt"], t["yt"], solver, settings, checkpoint=str(checkpoint)
    )
    out = normalise("captum", matrix.numpy(), n_train=t["n"], l2=L2)
    if solver == "naive_no_projection":
        # exact but for Captum adding hessian_reg through a float32 identity (1e-7 relative)
        np.testing.assert_allclose(out, t["I_ref"], rtol=1e-6, atol=1e-9)
    else:
        # Captum's Arnoldi is not exact even at projection_dim = p (its Krylov basis stops at
        # arnoldi_tol and drops its last vector), but the sign and scale must be right: the
        # least-squares factor onto I_ref is 1 up to the approximation (0.99 here).
        factor = float((out * t["I_ref"]).sum() / (t["I_ref"] ** 2).sum())
        assert 0.9 < factor < 1.1
        assert agreement(out, t["I_ref"])[0] > 0.9


@pytest.mark.parametrize("empirical", [True, False])
def test_kronfluence_normalised_equals_brute_force_ekfac(tiny, tmp_path, empirical):
    pytest.importorskip("kronfluence.analyzer")
    t = tiny
    settings = {**_settings("kronfluence", "ekfac", t), "use_empirical_fisher": empirical}
    matrix, _ = adapter("kronfluence").run(
        t["model"], t["X"], t["y"], t["Xt"], t["yt"], "ekfac", settings, workdir=tmp_path
    )
    out = normalise("kronfluence", matrix.numpy(), n_train=t["n"], l2=L2)
    assert t["model"].weight.requires_grad  # it ran on a copy
    if empirical:
        # deterministic: its EK-FAC of the empirical Fisher, scaled and signed as documented
        expected = ekfac_reference(t, "empirical", L2 + DAMPING)
        np.testing.assert_allclose(out, expected, rtol=1e-8, atol=1e-10)
    else:
        # the benchmark's setting samples labels (30 here, one per point and pass), so it only
        # approximates the exact-expectation EK-FAC: sign and scale must still be right
        expected = ekfac_reference(t, "gauss_newton", L2 + DAMPING)
        factor = float((out * expected).sum() / (expected**2).sum())
        assert 0.5 < factor < 2
        assert agreement(out, expected)[0] > 0.8


# ----- the quick run ----------------------------------------------------------------------------
def _quick_ours(out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "benchmarks" / "peers.py"), "--quick"]
    return subprocess.run(
        [*command, "--systems", "ours", "--json", str(out), *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=280,
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_run_of_our_systems_writes_its_table_and_appends_by_row(tmp_path: Path):
    out = tmp_path / "peers.json"
    proc = _quick_ours(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pearson" in proc.stdout
    report = json.loads(out.read_text())
    assert report["complete"] and report["commands"] and report["machine"]["usable_cores"] >= 1
    assert set(report["normalisation"]) == {"ours", "pydvl", "captum", "kronfluence"}
    assert "direct" in report["reference"]["1"]
    case = report["cases"]["1"]
    assert (case["n_train"], case["n_test"], case["n_params"]) == (1300, QUICK_N_TEST, 650)
    rows = {(r["case"], r["system"], r["solver"]): r for r in report["results"]}
    assert set(rows) == {(1, "ours", "direct"), (1, "ours", "cg"), (1, "ours", "lissa")}
    for r in rows.values():
        assert FIELDS <= set(r), r
        assert r["seconds"] > 0 and r["peak_mb"] > 0 and not r["has_nan"], r
        assert r["pearson_vs_exact"] > 0.999, r
        assert r["time_limit_seconds"] == peers.DEFAULT_TIME_LIMIT, r
        assert r["device"] == "cpu" and "peak_gpu_mb" not in r, r
    assert rows[(1, "ours", "direct")]["rel_err_vs_exact"] == 0.0  # it is the reference
    assert rows[(1, "ours", "cg")]["rel_err_vs_exact"] <= 1e-4
    assert rows[(1, "ours", "lissa")]["rel_err_vs_exact"] <= 1e-2
    assert report["targets"] == []  # no pyDVL rows to compare with

    # --append redoes only this run's (case, system, solver) rows and keeps the others: here a
    # pyDVL row that timed out at its own limit of 50 s, and a row of another case.
    kept = [
        {**rows[(1, "ours", "direct")], "system": "pydvl", "seconds": None, "timed_out": True,
         "time_limit_seconds": 50.0, "rel_err_vs_exact": None},
        {**rows[(1, "ours", "cg")], "case": 3},
    ]  # fmt: skip
    report["results"] += kept
    out.write_text(json.dumps(report))
    again = _quick_ours(out, "--append", "--time-limit", "200")
    assert again.returncode == 0, again.stderr[-3000:]
    merged = json.loads(out.read_text())
    assert len(merged["commands"]) == 2
    by_key = {(r["case"], r["system"], r["solver"]): r for r in merged["results"]}
    assert len(merged["results"]) == 5
    for r in kept:
        assert by_key[(r["case"], r["system"], r["solver"])] == r
    for key in rows:
        assert by_key[key]["time_limit_seconds"] == 200  # redone by the second run
    (exact,) = [t for t in merged["targets"] if t["name"].startswith("exact")]
    ours_direct = by_key[(1, "ours", "direct")]["seconds"]
    assert exact["measured"] == pytest.approx(50.0 / ours_direct)  # the row's own limit
