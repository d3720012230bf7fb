"""The explorer's Python side (no browser): traits, callbacks, errors, the protocol with the front
end. The %influence magic: test_magic.py; bad arguments: test_bad_input.py."""

from __future__ import annotations

import re
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from ipywidgets.widgets.widget import _remove_buffers

import influence_widgets as iw
from influence_widgets.widgets import protocol
from influence_widgets.widgets.explorer import static_dir


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
    assert "row" not in first and {r[0] for r in first["differences"]} == {"g", "b", "len"}


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
    assert "influence_widgets/static/saved_page.js" in names  # save_html's page driver
    assert "influence_widgets/assets/fmnist_extractor.pt" in names  # the attacks' extractor


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
    explorer.handle_event({"event": protocol.VERIFY_RUN})
    assert explorer.verify["state"] == "running" and explorer.verify["test_index"] == 2
    explorer.verify_tab.job.join(120)
    v = explorer.verify
    assert v["state"] == "done" and v["n_removed"] == explorer.verify_n_remove
    assert v["pearson"] >= 0.99
    assert bytes(explorer.verify_plot[:4]) == b"\x89PNG"
    result = explorer.loo_result
    assert result.test_index == 2 and result.pearson == pytest.approx(v["pearson"])
    scores = inf.predicted_removal_effect(data.X_test[2:3], data.y_test[2:3])[0]
    assert result.removed.tolist() == torch.argsort(scores.abs(), descending=True)[:6].tolist()
    explorer.selected = 4  # a new selection clears the old check
    assert explorer.verify == protocol.IDLE and explorer.verify_plot == b""


def test_verify_can_be_cancelled_and_reports_what_finished(explorer):
    explorer.selected = 5
    explorer.verify_n_remove = 200
    explorer.run_verify()
    deadline = time.time() + 60
    while explorer.verify.get("progress", 0) < 2 / 201 and time.time() < deadline:
        time.sleep(0.05)
    explorer.handle_event({"event": protocol.VERIFY_CANCEL})
    explorer.verify_tab.job.join(120)
    v = explorer.verify
    assert v["state"] == "cancelled" and 0 < v["n_removed"] < 200
    assert explorer.loo_result.cancelled and "Cancelled" in v["message"]
    with pytest.raises(ValueError, match="n_remove"):
        explorer.run_verify(n_remove=0)


def test_attack_tab_perturbs_training_images_and_reports_the_verdict(
    explorer, digits_influence, untouched
):
    data, inf = digits_influence
    with pytest.raises(RuntimeError, match="Select a test point"):
        explorer.run_attack(wait=True)
    correct = [
        i for i in range(40) if explorer.test_points.predicted[i] == explorer.test_points.true[i]
    ]
    explorer.selected = correct[0]
    explorer.tab = "attack"
    explorer.attack_n_poison, explorer.attack_eps, explorer.attack_max_iter = 2, 8.0, 2
    with untouched(data, inf.train.X, inf.train.y):
        explorer.handle_event({"event": protocol.ATTACK_RUN})
        assert explorer.attack["state"] == "running"
        explorer.attack_tab.job.join(120)
    a = explorer.attack
    assert a["state"] == "done", a.get("message")
    assert a["iterations"] <= 2 and isinstance(a["flipped"], bool)
    assert a["max_change"] <= 8 / 255 + 1e-12
    assert len(a["items"]) == 2
    for item in a["items"]:
        for key in ("original", "perturbed", "difference"):
            assert bytes(item[key][:4]) == b"\x89PNG"
    assert {row[0] for row in a["probabilities"]} >= {
        explorer.label(int(explorer.test_points.true[correct[0]]))
    }
    result = explorer.attack_result
    assert result.test_index == correct[0] and result.eps == pytest.approx(8 / 255)
    wrong = [
        i
        for i in range(len(explorer.test_points.true))
        if explorer.test_points.predicted[i] != explorer.test_points.true[i]
    ]
    explorer.selected = wrong[0]
    assert explorer.attack == protocol.IDLE
    with pytest.raises(RuntimeError, match="misclassified"):
        explorer.run_attack(wait=True)
    with pytest.raises(ValueError, match="eps"):
        explorer.run_attack(eps=-1)


# ----- the user's objects, numpy indices, the protocol ----------------------------------------
def test_building_clicking_and_verifying_leave_the_users_objects_untouched(untouched):
    data = iw.datasets.digits()
    model = iw.models.logistic_regression(data)
    iw.train(model, data, l2=0.01, progress=False)
    inf = iw.Influence(model, (data.X_train, data.y_train), l2=0.01, progress=False)
    with untouched(model, data.X_train, data.y_train, data, inf.train.X, inf.train.y):
        ex = iw.InfluenceExplorer(inf, data, k=3).wait_ready()
        ex.selected = 2
        result = ex.run_verify(n_remove=3, wait=True)
    assert ex.panel["test_index"] == 2 and result.n_removed == 3


def test_numpy_integers_are_indices_and_k(explorer, digits_influence):
    data, inf = digits_influence
    explorer.selected = np.int64(3)
    assert explorer.selected == 3 and type(explorer.selected) is int
    assert explorer.panel["test_index"] == 3
    small = iw.InfluenceExplorer(inf, data, k=np.int64(2), page_size=np.int32(10))
    assert small.k == 2 and small.page_size == 10


def test_panel_and_tab_states_have_the_declared_shapes(explorer):
    explorer.selected = 2
    assert set(explorer.panel) == protocol.Panel.__required_keys__
    item_keys = protocol.TrainItem.__optional_keys__
    assert all(set(item) <= item_keys for item in explorer.panel["helpful"])
    explorer.run_verify(n_remove=3, wait=True)
    verify_keys = protocol.VerifyState.__required_keys__ | protocol.VerifyState.__optional_keys__
    assert set(explorer.verify) <= verify_keys and explorer.verify["state"] == "done"


def test_the_front_end_sends_the_declared_event_names():
    source = (static_dir() / "explorer.js").read_text()
    sent = set(re.findall(r'send\(\{ event: "(\w+)" \}\)', source))
    # the job panes' events, given to jobPane as { run: "...", cancel: "..." }
    named = set(re.findall(r'\b(?:run|cancel): "(\w+)"', source))
    assert sent | named == set(protocol.EVENTS), (sent, named)


# ----- a precomputation that fails -------------------------------------------------------------
def _saddle(n: int = 40):
    """An untrained tanh network: its Hessian at the random start is indefinite, so ``fit()`` with
    solver="direct" and damping=0 raises NotPositiveDefiniteError (smallest eigenvalue < 0)."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    y = (X[:, 0] > 0).long()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 4, dtype=torch.float64),
        torch.nn.Tanh(),
        torch.nn.Linear(4, 2, dtype=torch.float64),
    )
    return model, X, y


def _assert_shows_failure(ex, index: int) -> None:
    assert ex.status == "error"
    assert "queued" not in ex.message and "%" not in ex.message, ex.message
    assert f"test point {index} cannot be shown" in ex.message, ex.message
    assert "NotPositiveDefiniteError" in ex.error and "damping=" in ex.error, ex.error
    assert "open a new explorer" in ex.error, ex.error
    assert ex.panel == {}


@pytest.mark.filterwarnings("ignore::influence_widgets.InfluenceWarning")
def test_a_click_after_a_failed_precomputation_shows_the_error_and_what_to_do(untouched):
    model, X, y = _saddle()
    inf = iw.Influence(model, (X, y), damping=0, solver="direct", progress=False)
    with untouched(model, X, y):
        ex = iw.InfluenceExplorer(
            inf, x_test=X[:6], y_test=y[:6], kind="tabular", fit_in_background=False
        )
    with pytest.raises(RuntimeError, match="NotPositiveDefiniteError"):
        ex.wait_ready()
    ex.selected = 3
    _assert_shows_failure(ex, 3)
    with pytest.raises(RuntimeError, match="Precomputation failed"):
        ex.run_verify(wait=True)
    assert "Precomputation failed" in ex.verify["message"]


class _GatedPairs(torch.utils.data.Dataset):
    """(x, y) pairs that are handed out only while ``gate`` is set: holds a fit at its start."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor) -> None:
        self.X, self.y, self.gate = X, y, threading.Event()
        self.gate.set()

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, i: int):
        assert self.gate.wait(60), "the test never opened the gate"
        return self.X[i], self.y[i]


@pytest.mark.filterwarnings("ignore::influence_widgets.InfluenceWarning")
def test_a_click_queued_before_the_precomputation_fails_gets_the_error():
    model, X, y = _saddle()
    train = _GatedPairs(X, y)
    inf = iw.Influence(model, train, damping=0, solver="direct", progress=False)
    train.gate.clear()  # the background fit waits for the first training point
    ex = iw.InfluenceExplorer(
        inf, x_test=X[:6], y_test=y[:6], kind="tabular", train_display=X.numpy()
    )
    ex.selected = 2
    assert "queued" in ex.message
    train.gate.set()
    with pytest.raises(RuntimeError, match="NotPositiveDefiniteError"):
        ex.wait_ready(60)
    _assert_shows_failure(ex, 2)


# ----- what the panel tells a student (issue 15, section 3) -----------------------------------
def test_the_explanation_is_true_for_correct_and_misclassified_points(explorer, digits_influence):
    """Two short lines. Scores are for the loss of the true label: for a misclassified point the
    helpful points support the true label and work against the prediction, and the text says
    so."""
    data, inf = digits_influence
    right = next(
        i
        for i in range(len(explorer.test_points.true))
        if explorer.test_points.predicted[i] == explorer.test_points.true[i]
    )
    explorer.selected = right
    panel = explorer.panel
    assert panel["correct"] is True
    first, second = panel["explanation"].split("\n")
    assert first == f"Correctly classified as {panel['label']}."
    assert second == "Helpful points support this prediction, harmful points work against it."

    wrong = next(
        i
        for i in range(len(explorer.test_points.true))
        if explorer.test_points.predicted[i] != explorer.test_points.true[i]
    )
    explorer.selected = wrong
    panel = explorer.panel
    label, pred = panel["label"], panel["pred"]
    assert panel["correct"] is False and label != pred
    lines = panel["explanation"].split("\n")
    assert lines == [
        f"Misclassified: the true label is {label}, the model predicts {pred}.",
        f"Scores are for the loss of the true label {label}: helpful points support {label}, "
        "harmful points work against it.",
    ]
    assert all(len(line.split()) <= 20 for line in lines)
    # What the text claims: removing a helpful point raises the loss of the true label, removing
    # a harmful one lowers it (the scores' sign), and on the loss of the predicted class the
    # helpful points mostly count as harmful (they work against the prediction).
    x, y = data.X_test[wrong : wrong + 1], data.y_test[wrong : wrong + 1]
    effect = inf.predicted_removal_effect(x, y)[0]
    assert all(effect[it["index"]] > 0 for it in panel["helpful"])
    assert all(effect[it["index"]] < 0 for it in panel["harmful"])
    helpful = torch.tensor([it["index"] for it in panel["helpful"]])
    as_predicted = torch.tensor([int(explorer.test_points.predicted[wrong])])
    on_prediction = inf.predicted_removal_effect(x, as_predicted)
    assert (on_prediction[0, helpful] < 0).float().mean() > 0.5


def test_the_panel_notes_why_a_same_label_point_harms_or_an_other_label_point_helps(
    explorer, digits_influence
):
    """A harmful point with the label the scores are for, or a helpful one with another label, is
    marked ``surprise`` and its list has one line saying why; no other point is marked. What the
    line states is true of the scores: removing such a harmful point lowers the test loss."""
    data, inf = digits_influence
    explorer.k = 8
    seen = set()
    for i in range(40):
        explorer.selected = i
        panel = explorer.panel
        x, y = data.X_test[i : i + 1], data.y_test[i : i + 1]
        effect = inf.predicted_removal_effect(x, y)[0]
        for kind in ("helpful", "harmful"):
            marked = [it for it in panel[kind] if it.get("surprise")]
            expected = [
                it for it in panel[kind] if (it["label"] == panel["label"]) == (kind == "harmful")
            ]
            assert marked == expected
            assert (kind in panel["notes"]) == bool(marked)
            if marked:
                seen.add(kind)
                note = panel["notes"][kind]
                if kind == "harmful":
                    assert note.startswith(f"Same label {panel['label']}, yet harmful: removing it")
                    assert "would lower this test loss" in note
                    assert all(effect[it["index"]] < 0 for it in marked)
                else:
                    assert note.startswith("Other label, yet helpful: removing it would raise")
                    assert all(effect[it["index"]] > 0 for it in marked)
    assert seen == {"helpful", "harmful"}  # both kinds occur on the first page of digits


def test_a_model_far_from_a_minimum_is_shown_with_a_warning_and_what_to_do(
    explorer, digits_influence
):
    """Scores of a model that is not at a minimum of R are shown with a notice in the widget, not
    only a stderr warning; at a minimum there is none."""
    assert explorer.notice == "" and explorer.message.startswith("Ready")
    data, _ = digits_influence
    torch.manual_seed(0)
    model = iw.models.logistic_regression(data)  # untrained: ||grad R|| is large
    inf = iw.Influence(model, (data.X_train, data.y_train), l2=0.01, progress=False)
    with pytest.warns(iw.InfluenceWarning):  # stderr alone, before
        ex = iw.InfluenceExplorer(inf, data, k=3, fit_in_background=False).wait_ready()
    assert inf.diagnostics.grad_norm > 0.1
    assert ex.status == "ready" and "see the warning below" in ex.message
    assert f"||grad R(theta)|| = {inf.diagnostics.grad_norm:.2g}" in ex.notice
    assert "not at a minimum" in ex.notice
    assert "train to a minimum with iw.train" in ex.notice and "same l2" in ex.notice
    assert "--l2" in ex.notice


def test_a_wrong_l2_is_named_with_the_l2_the_model_was_trained_with(digits_influence):
    data, _ = digits_influence
    model = iw.models.logistic_regression(data)
    iw.train(model, data, l2=0.01, progress=False)
    wrong = iw.Influence(model, (data.X_train, data.y_train), l2=0.001, progress=False)
    with pytest.warns(iw.InfluenceWarning):
        ex = iw.InfluenceExplorer(wrong, data, k=3, fit_in_background=False).wait_ready()
    assert "the model looks trained with l2 = 0.01" in ex.notice
    assert "l2=0.01" in ex.notice and "--l2 0.01" in ex.notice


def test_explorers_precomputing_at_the_same_time_all_succeed():
    """torch.func's forward-mode AD cannot run in two threads at once: three explorers fitting
    together (a notebook's "Run All") failed with "forward AD level" RuntimeErrors, most times."""
    torch.set_num_threads(1)
    explorers = []
    for seed in range(6):
        gen = torch.Generator().manual_seed(seed)
        X = torch.randn(200, 10, generator=gen, dtype=torch.float64)
        y = (X[:, 0] > 0).long()
        torch.manual_seed(seed)
        net = torch.nn.Sequential(
            torch.nn.Linear(10, 16, dtype=torch.float64),
            torch.nn.Tanh(),
            torch.nn.Linear(16, 2, dtype=torch.float64),
        )
        inf = iw.Influence(net, (X, y), damping=10.0, solver="direct", progress=False)
        explorers.append(iw.InfluenceExplorer(inf, x_test=X[:5], y_test=y[:5], kind="tabular"))
    for ex in explorers:
        ex.wait_ready()  # a RuntimeError with the failure otherwise
        assert ex.status == "ready", ex.error
