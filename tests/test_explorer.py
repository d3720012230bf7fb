"""The explorer's Python side and the %influence magic (no browser): traits, callbacks, errors."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import pytest
import torch
from IPython.core.error import UsageError
from IPython.testing.globalipapp import start_ipython
from ipywidgets.widgets.widget import _remove_buffers

import influence_widgets as iw
from influence_widgets.widgets.explorer import static_dir


@pytest.fixture(scope="module")
def digits_influence():
    data = iw.datasets.digits()
    model = iw.models.logistic_regression(data)
    iw.train(model, data, l2=0.01, progress=False)
    return data, iw.Influence(model, (data.X_train, data.y_train), l2=0.01, progress=False)


@pytest.fixture
def explorer(digits_influence):
    data, inf = digits_influence
    return iw.InfluenceExplorer(inf, data, k=5).wait_ready()


def test_selecting_fills_the_panel_and_fires_callbacks(explorer, digits_influence):
    data, inf = digits_influence
    seen = []
    explorer.on_select(seen.append)
    explorer.selected = 3
    panel = explorer.panel
    assert panel["test_index"] == 3 and seen == [3]
    assert len(panel["helpful"]) == 5 and len(panel["harmful"]) == 5
    expected = inf.top(data.X_test[3:4], data.y_test[3:4], k=5)
    assert [it["index"] for it in panel["helpful"]] == expected.helpful[0].tolist()
    assert [it["index"] for it in panel["harmful"]] == expected.harmful[0].tolist()
    assert all(it["score"] > 0 for it in panel["helpful"])
    rows = explorer.results()
    assert len(rows) == 10 and rows[0]["kind"] == "helpful" and rows[0]["test_index"] == 3
    frame = explorer.results(as_frame=True)
    assert list(frame["train_index"]) == [r["train_index"] for r in rows]


def test_gallery_pages_filters_and_sends_thumbnails_as_binary(explorer, digits_influence):
    data, _ = digits_influence
    assert len(explorer.gallery) == 40 and explorer.n_pages == -(-len(data.y_test) // 40)
    _, _, buffers = _remove_buffers(explorer.get_state())
    assert len(buffers) >= 40  # every thumbnail on the page is a binary buffer
    assert bytes(explorer.gallery[0]["png"][:4]) == b"\x89PNG"
    explorer.class_filter = 4
    assert explorer.n_shown == int((data.y_test == 4).sum())
    assert all(item["label"] == "4" for item in explorer.gallery)
    explorer.class_filter = -1
    explorer.misclassified_only = True
    assert all(item["wrong"] for item in explorer.gallery)
    explorer.misclassified_only = False
    explorer.page = explorer.n_pages + 5  # clamped to the last page
    assert explorer.page == explorer.n_pages - 1


def test_clicks_during_precomputation_are_queued_and_the_latest_wins(digits_influence):
    data, _ = digits_influence
    model = iw.models.logistic_regression(data)
    iw.train(model, data, l2=0.01, progress=False)
    fresh = iw.Influence(model, (data.X_train, data.y_train), l2=0.01, progress=False)
    ex = iw.InfluenceExplorer(fresh, data)
    ex.selected = 1
    ex.selected = 9
    ex.wait_ready()
    deadline = time.time() + 10
    while ex.panel.get("test_index") != 9 and time.time() < deadline:
        time.sleep(0.05)
    assert ex.panel["test_index"] == 9


def test_errors_show_in_the_widget_and_bad_arguments_are_named(explorer, digits_influence):
    data, inf = digits_influence
    explorer.selected = 10_000
    assert "selected" in explorer.error
    with pytest.raises(TypeError, match="influence"):
        iw.InfluenceExplorer("not an influence", data)
    with pytest.raises(ValueError, match="k"):
        iw.InfluenceExplorer(inf, data, k=0)
    with pytest.raises(ValueError, match="kind"):
        iw.InfluenceExplorer(inf, x_test=data.X_test, y_test=data.y_test)
    with pytest.raises(ValueError, match="test_display"):
        iw.InfluenceExplorer(
            inf, x_test=data.X_test, y_test=data.y_test, kind="tabular", test_display=[[0.0]]
        )
    with pytest.raises(TypeError, match="callback"):
        explorer.on_select(42)


def test_text_and_tabular_data_are_sent_as_text_and_rows():
    texts = [f"review {i} " + ("good" if i % 2 else "bad") for i in range(24)]
    X = torch.tensor([[t.count("g"), t.count("b"), len(t)] for t in texts], dtype=torch.float64)
    y = torch.tensor([i % 2 for i in range(24)])
    model = torch.nn.Linear(3, 2, dtype=torch.float64)
    iw.train(model, (X, y), l2=0.1, progress=False)
    inf = iw.Influence(model, (X, y), l2=0.1, progress=False)
    payload = '<img src=x onerror="window.__pwned=1">'
    ex = iw.InfluenceExplorer(
        inf,
        x_test=X[:6],
        y_test=y[:6],
        kind="text",
        train_display=[payload] + texts[1:],
        test_display=texts[:6],
        class_names=[payload, "good"],
        k=3,
    ).wait_ready()
    ex.selected = 0
    item = ex.panel["helpful"][0]
    assert "text" in item and "png" not in item
    tab = iw.InfluenceExplorer(
        inf, x_test=X[:6], y_test=y[:6], kind="tabular", feature_names=["g", "b", "len"], k=2
    ).wait_ready()
    tab.selected = 2
    first = tab.panel["harmful"][0]
    assert first["row"][0][0] == "g" and len(first["differences"]) == 3


def test_static_front_end_files_exist_and_are_the_esm_and_css():
    assert (static_dir() / "explorer.js").read_text().count("export default") == 1
    assert (static_dir() / "explorer.css").exists()


def test_built_wheel_ships_the_front_end(tmp_path: Path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(root),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("influence_widgets-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "influence_widgets/static/explorer.js" in names
    assert "influence_widgets/static/explorer.css" in names
    assert "influence_widgets/assets/fmnist_extractor.pt" in names  # the attacks' extractor


# ----- the magic ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shell():
    ip = start_ipython()
    ip.run_line_magic("load_ext", "influence_widgets")
    return ip


def test_magic_demo_returns_an_explorer(shell):
    ex = shell.run_line_magic("influence", "--demo digits -k 4")
    assert isinstance(ex, iw.InfluenceExplorer) and ex.k == 4
    ex.wait_ready()
    ex.selected = 3
    assert ex.panel["test_index"] == 3


def test_magic_with_user_variables_and_its_errors(shell, digits_influence):
    data, inf = digits_influence
    model = iw.models.logistic_regression(data)
    iw.train(model, data, l2=0.01, progress=False)
    shell.user_ns.update(m=model, X=data.X_train, y=data.y_train, Xt=data.X_test, yt=data.y_test)
    ex = shell.run_line_magic("influence", "m --train X y --test Xt yt --l2 0.01")
    assert isinstance(ex, iw.InfluenceExplorer) and ex.kind == "tabular"
    with pytest.raises(UsageError, match="train_display: image data must be"):
        shell.run_line_magic("influence", "m --train X y --test Xt yt --kind image")
    with pytest.raises(UsageError, match="no variable named 'nope'"):
        shell.run_line_magic("influence", "nope --train X y --test Xt yt")
    shell.user_ns["s"] = "a string"
    with pytest.raises(UsageError, match="not a torch.nn.Module"):
        shell.run_line_magic("influence", "s --train X y --test Xt yt")
    with pytest.raises(UsageError, match="--demo NAME"):
        shell.run_line_magic("influence", "")
    with pytest.raises(UsageError):
        shell.run_line_magic("influence", "--demo nope")
    with pytest.raises(UsageError, match="solver"):
        shell.run_line_magic("influence", "m --train X y --test Xt yt --solver nope")
    with pytest.raises(UsageError, match="not a variable name"):
        shell.run_line_magic("influence", "m --train X[0] y --test Xt yt")


def test_magic_help_is_available(shell):
    doc = shell.find_line_magic("influence").__doc__
    assert "--demo" in doc and "--train" in doc


def test_precomputation_reports_real_progress_in_the_widget(digits_influence):
    data, _ = digits_influence
    model = iw.models.logistic_regression(data)
    iw.train(model, data, l2=0.01, progress=False)
    fresh = iw.Influence(model, (data.X_train, data.y_train), l2=0.01, progress=False)
    messages = []
    ex = iw.InfluenceExplorer(fresh, data, fit_in_background=False)
    ex.observe(lambda change: messages.append(change["new"]), names="message")
    assert ex.status == "ready" and ex.progress == 1.0
    slow = iw.InfluenceExplorer(
        iw.Influence(model, (data.X_train, data.y_train), l2=0.01, progress=False), data
    )
    slow.observe(lambda change: messages.append(change["new"]), names="message")
    slow.wait_ready()
    assert any(m.startswith("Precomputing: Hessian") for m in messages)


def test_precomputation_retries_cpythons_spurious_ast_systemerror(digits_influence, monkeypatch):
    data, inf = digits_influence
    calls = []
    real_fit = inf.fit

    def flaky_fit():
        calls.append(1)
        if len(calls) == 1:
            raise SystemError("AST constructor recursion depth mismatch (before=135, after=72)")
        return real_fit()

    monkeypatch.setattr(inf, "fit", flaky_fit)
    ex = iw.InfluenceExplorer(inf, data, fit_in_background=False)
    assert ex.status == "ready" and len(calls) == 2


def test_verify_tab_runs_leave_one_out_for_the_selected_point(explorer, digits_influence):
    data, inf = digits_influence
    with pytest.raises(RuntimeError, match="Select a test point"):
        explorer.run_verify(wait=True)
    explorer.selected = 2
    explorer.tab = "verify"
    explorer.verify_n_remove = 6
    # the front end's button sends this message; the widget answers through its traits
    explorer._on_front_end_message(explorer, {"event": "verify_run"}, [])
    assert explorer.verify["state"] == "running" and explorer.verify["test_index"] == 2
    explorer._verify_job.join(120)
    v = explorer.verify
    assert v["state"] == "done" and v["n_removed"] == explorer.verify_n_remove
    assert v["pearson"] >= 0.99
    assert bytes(explorer.verify_plot[:4]) == b"\x89PNG"
    result = explorer.loo_result
    assert result.test_index == 2 and result.pearson == pytest.approx(v["pearson"])
    scores = inf.predicted_removal_effect(data.X_test[2:3], data.y_test[2:3])[0]
    assert result.removed.tolist() == torch.argsort(scores.abs(), descending=True)[:6].tolist()
    explorer.selected = 4  # a new selection clears the old check
    assert explorer.verify == {"state": "idle"} and explorer.verify_plot == b""


def test_verify_can_be_cancelled_and_reports_what_finished(explorer):
    explorer.selected = 5
    explorer.verify_n_remove = 200
    explorer.run_verify()
    deadline = time.time() + 60
    while explorer.verify.get("progress", 0) < 2 / 201 and time.time() < deadline:
        time.sleep(0.05)
    explorer._on_front_end_message(explorer, {"event": "verify_cancel"}, [])
    explorer._verify_job.join(120)
    v = explorer.verify
    assert v["state"] == "cancelled" and 0 < v["n_removed"] < 200
    assert explorer.loo_result.cancelled and "Cancelled" in v["message"]
    with pytest.raises(ValueError, match="n_remove"):
        explorer.run_verify(n_remove=0)


def test_attack_tab_perturbs_training_images_and_reports_the_verdict(explorer, digits_influence):
    data, inf = digits_influence
    X_before = data.X_train.clone()
    with pytest.raises(RuntimeError, match="Select a test point"):
        explorer.run_attack(wait=True)
    correct = [i for i in range(40) if explorer._pred[i] == explorer._true[i]]
    explorer.selected = correct[0]
    explorer.tab = "attack"
    explorer.attack_n_poison, explorer.attack_eps, explorer.attack_max_iter = 2, 8.0, 2
    explorer._on_front_end_message(explorer, {"event": "attack_run"}, [])
    assert explorer.attack["state"] == "running"
    explorer._attack_job.join(120)
    a = explorer.attack
    assert a["state"] == "done", a.get("message")
    assert a["iterations"] <= 2 and isinstance(a["flipped"], bool)
    assert a["max_change"] <= 8 / 255 + 1e-12
    assert len(a["items"]) == 2
    for item in a["items"]:
        for key in ("original", "perturbed", "difference"):
            assert bytes(item[key][:4]) == b"\x89PNG"
    assert {row[0] for row in a["probabilities"]} >= {
        explorer._label(int(explorer._true[correct[0]]))
    }
    result = explorer.attack_result
    assert result.test_index == correct[0] and result.eps == pytest.approx(8 / 255)
    assert torch.equal(data.X_train, X_before)  # the user's data set is untouched
    wrong = [i for i in range(len(explorer._true)) if explorer._pred[i] != explorer._true[i]]
    explorer.selected = wrong[0]
    assert explorer.attack == {"state": "idle"}
    with pytest.raises(RuntimeError, match="misclassified"):
        explorer.run_attack(wait=True)
    with pytest.raises(ValueError, match="eps"):
        explorer.run_attack(eps=-1)
