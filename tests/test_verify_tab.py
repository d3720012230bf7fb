"""The explorer's Verify tab (issue 15): a fast Cancel with a "cancelling" state, the same R in the
summary and the plot, the removals box showing the number a run used."""

from __future__ import annotations

import threading
import time

import pytest

import influence_widgets as iw
from influence_widgets.analysis import loo
from influence_widgets.plots import correlation_text
from influence_widgets.widgets import protocol
from influence_widgets.widgets.explorer import static_dir


@pytest.fixture
def explorer(digits_influence):
    data, inf = digits_influence
    ex = iw.InfluenceExplorer(inf, data, k=5).wait_ready()
    ex.selected = 2
    return ex


def _slow_train(started: threading.Event, seconds: float = 20.0, calls: list | None = None):
    """A stand-in for iw.train that calls the model every 10 ms for ``seconds``; ``started`` is
    set at its first call (the baseline), each call is appended to ``calls``."""

    def train(model, data, **_options):
        started.set()
        if calls is not None:
            calls.append(len(data[0]))
        x = data[0][:2].to(next(model.parameters()).dtype)
        for _ in range(int(seconds / 0.01)):
            model(x)
            time.sleep(0.01)

    return train


def test_cancel_shows_cancelling_at_once_and_stops_a_retrain_within_2_s(explorer, monkeypatch):
    started = threading.Event()
    monkeypatch.setattr(loo, "train", _slow_train(started))
    explorer.run_verify(n_remove=5)
    assert started.wait(30)
    begin = time.perf_counter()
    explorer.handle_event({"event": protocol.VERIFY_CANCEL})
    assert explorer.verify["state"] == "cancelling"
    assert explorer.verify["message"].startswith("Cancelling")
    explorer.verify_tab.job.join(10)
    assert time.perf_counter() - begin < 2.0
    v = explorer.verify
    assert v["state"] == "cancelled" and v["n_removed"] == 0 and explorer.verify_plot == b""
    assert v["message"].startswith("Cancelled: 0 of 5 retrains done in ")
    assert explorer.loo_result.cancelled


def test_progress_does_not_overwrite_cancelling(explorer, monkeypatch):
    """A progress update that arrives after Cancel leaves "cancelling" and its message alone."""
    started, calls = threading.Event(), []
    monkeypatch.setattr(loo, "train", _slow_train(started, seconds=0.2, calls=calls))
    explorer.run_verify(n_remove=40)
    deadline = time.time() + 30
    while len(calls) < 4 and time.time() < deadline:  # the baseline and two removals done
        time.sleep(0.02)
    explorer.cancel_verify()
    shown = dict(explorer.verify)
    time.sleep(0.2)
    if explorer.verify_running:  # still stopping: nothing changed meanwhile
        assert explorer.verify == shown
    explorer.verify_tab.job.join(10)
    assert explorer.verify["state"] == "cancelled" and 0 < explorer.verify["n_removed"] < 40


def test_cancel_after_the_end_changes_nothing(explorer):
    explorer.run_verify(n_remove=3, wait=True)
    done = dict(explorer.verify)
    explorer.cancel_verify()
    assert explorer.verify == done and done["state"] == "done"


def test_summary_and_plot_title_write_r_with_the_same_digits(explorer):
    result = explorer.run_verify(n_remove=5, wait=True)
    v = explorer.verify
    title = result.plot().get_title()
    assert f"Pearson R = {v['pearson_text']}," in title
    assert f"Spearman = {v['spearman_text']}" in title
    assert v["pearson_text"] == f"{result.pearson:.4f}"
    script = (static_dir() / "explorer.js").read_text()
    assert "Pearson R = ${v.pearson_text}" in script and "${v.spearman_text}" in script


@pytest.mark.parametrize(
    ("r", "text"),
    [(0.99996, "1.0000"), (0.99994, "0.9999"), (float("nan"), "n/a"), (None, "n/a")],
)
def test_correlation_text(r, text):
    assert correlation_text(r) == text


def test_run_verify_shows_the_removals_it_used(explorer):
    explorer.verify_n_remove = 20
    explorer.run_verify(n_remove=4, wait=True)
    assert explorer.verify_n_remove == 4 == explorer.verify["n_removed"]
