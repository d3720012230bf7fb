"""The explorer's Verify tab (issue 15): a fast Cancel with a "cancelling" state, the same R in the
summary and the plot, the removals box showing the number a run used; its LDS check (run, wait,
cancel, one check at a time, bad subsets named, the reading)."""

from __future__ import annotations

import importlib
import threading
import time

import numpy as np
import pytest

import influence_widgets as iw
from influence_widgets.analysis import loo
from influence_widgets.plots import correlation_text
from influence_widgets.widgets import protocol
from influence_widgets.widgets.explorer import static_dir
from influence_widgets.widgets.verify_lds import lds_reading, progress_message
from influence_widgets.widgets.verify_tab import loo_reading


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
    assert "Pearson R${of} = ${v.pearson_text}" in script and "${v.spearman_text}" in script


@pytest.mark.parametrize(
    ("r", "text"),
    [(0.99996, "1.0000"), (0.99994, "0.9999"), (float("nan"), "n/a"), (None, "n/a")],
)
def test_correlation_text(r, text):
    assert correlation_text(r) == text


@pytest.mark.parametrize(
    ("r", "n", "words"),
    [
        (0.9998, 20, "R = 0.9998, very good: the actual changes lie almost on a line"),
        (0.95, 20, "R = 0.9500, good: close to a line"),
        (0.8, 20, "R = 0.8000, rough: the trend holds"),
        (0.2, 20, "R = 0.2000, poor: the predictions barely track retraining"),
        (-0.6, 20, "R = -0.6000, poor"),
        (float("nan"), 2, "No R: it needs at least 3 removals"),
    ],
)
def test_the_loo_reading_says_what_r_means_and_states_its_scale(r, n, words):
    text = loo_reading(r, n)
    assert text.startswith(words)
    if r == r:  # a number: the scale it is read on, and what y = x adds
        assert "very good \u2265 0.99, good \u2265 0.9, rough \u2265 0.7, poor below" in text
        assert "dashed line y = x" in text and "Only" not in text
    assert loo_reading(r, 5).endswith("Only 5 removals: R itself is rough.") == (r == r)


def test_a_run_shows_the_reading_of_its_r(explorer):
    result = explorer.run_verify(n_remove=5, wait=True)
    assert explorer.verify["reading"] == loo_reading(result.pearson, 5)
    script = (static_dir() / "explorer.js").read_text()
    assert "v.reading" in script  # the tab shows it, for leave-one-out and the LDS alike


def _drawn_axes(result):
    """The Verify tab's scatter of ``result`` as drawn into its PNG: the Axes after a draw."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from influence_widgets.plots import LOO_FIGSIZE

    fig = Figure(figsize=LOO_FIGSIZE, dpi=90)
    FigureCanvasAgg(fig)
    ax = result.plot(ax=fig.add_subplot())
    fig.canvas.draw()
    return ax


@pytest.mark.parametrize(
    ("size", "offset", "power"),
    [
        (3e-4, 0.0, "\u00d710\u207b\u2074"),
        (2e-2, 0.0, None),
        (2e-3, 1.0, None),
        (5e4, 0, "\u00d710\u2074"),
    ],
)
def test_the_scatter_states_its_power_of_ten_in_the_axis_labels_never_as_an_offset(
    size, offset, power
):
    """No offset text ("1e-3" under the last tick, over the x label) and no additive offset: the
    power of ten, where the values need one, is stated in each axis label; the x label lies below
    every tick label."""
    import numpy as np

    predicted = offset + size * np.linspace(-1.0, 1.0, 12)
    result = loo.LOOResult(
        test_index=3, removed=np.arange(12), predicted=predicted, actual=predicted * 1.01,
        pearson=1.0, spearman=1.0, drift=0.0, strategy="warm", solver="direct", seconds=1.0,
    )  # fmt: skip
    ax = _drawn_axes(result)
    renderer = ax.figure.canvas.get_renderer()
    for axis in (ax.xaxis, ax.yaxis):
        assert axis.get_offset_text().get_text() == ""
        label = axis.get_label_text()
        assert (power in label) if power else ("\u00d710" not in label), label
    label_box = ax.xaxis.label.get_window_extent(renderer)
    for tick in ax.get_xticklabels():
        if tick.get_text():
            assert tick.get_window_extent(renderer).y0 >= label_box.y1 - 0.5, tick.get_text()


def test_run_verify_shows_the_removals_it_used(explorer):
    explorer.verify_n_remove = 20
    explorer.run_verify(n_remove=4, wait=True)
    assert explorer.verify_n_remove == 4 == explorer.verify["n_removed"]


# ----- the LDS check: LDS(z) of the selected point with its noise floor (verify_lds.py) ----------
LDS_MODULE = importlib.import_module("influence_widgets.analysis.lds")  # the package's `lds` is
# the function


def _slow_lds_train(started: threading.Event, seconds: float = 0.5):
    """iw.train that first sleeps ``seconds`` (so a run stays running while a test acts on it);
    ``started`` is set at its first call."""
    real = LDS_MODULE.train

    def train(model, data, **options):
        started.set()
        time.sleep(seconds)
        return real(model, data, **options)

    return train


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while not condition() and time.time() < deadline:
        time.sleep(0.02)
    assert condition()


def test_lds_runs_from_the_tab_and_shows_the_score_its_floor_a_reading_and_the_scatter(
    explorer, digits_influence
):
    data, inf = digits_influence
    explorer.verify_mode, explorer.verify_subsets = "lds", 4
    explorer.handle_event({"event": protocol.VERIFY_RUN})  # the Run button, in LDS mode
    assert explorer.verify["state"] == "running" and explorer.verify["kind"] == "lds"
    explorer.verify_tab.job.join(120)
    v, result = explorer.verify, explorer.lds_result
    keys = protocol.LDSState.__required_keys__ | protocol.LDSState.__optional_keys__
    assert set(v) <= keys and v["state"] == "done" and v["test_index"] == 2
    assert v["n_subsets"] == v["subsets"] == 4 == result.n_subsets and v["fraction"] == 0.5
    assert v["lds_text"] == correlation_text(result.per_test[0])
    assert v["noise_floor_text"] == correlation_text(result.noise_floor)
    assert v["reading"] == lds_reading(result.per_test[0], result.noise_floor, 4)
    assert v["message"].startswith("4 subsets, each retrained twice, in ")
    assert bytes(explorer.verify_plot[:4]) == b"\x89PNG"
    # the selected point's LDS, as iw.lds computes it for that point alone
    direct = iw.lds(
        inf, data, x_test=data.X_test[2:3], y_test=data.y_test[2:3], subsets=4, progress=False
    )
    assert result.per_test.tolist() == direct.per_test.tolist()
    assert result.predicted.shape == (4, 1) and result.output == "margin"
    # the summary and the plot's title write the numbers with the same digits
    title = result.plot(test_index=0, name="test point 2").get_title()
    assert title.startswith("test point 2, 4 subsets")
    assert f"LDS = {v['lds_text']}, noise floor {v['noise_floor_text']}" in title
    script = (static_dir() / "explorer.js").read_text()
    assert "LDS${of} = ${v.lds_text}" in script and "(noise floor ${v.noise_floor_text}," in script
    explorer.verify_mode = "loo"  # the other check: the finished result is cleared
    assert explorer.verify == protocol.IDLE and explorer.verify_plot == b""


def test_run_lds_with_wait_returns_the_result_and_sets_the_tab_to_what_it_ran(explorer):
    explorer.verify_subsets = 20
    result = explorer.run_lds(3, wait=True)
    assert isinstance(result, iw.LDSResult) and result is explorer.lds_result
    assert not result.cancelled and result.n_subsets == 3 and result.per_test.shape == (1,)
    assert explorer.verify_mode == "lds" and explorer.verify_subsets == 3
    assert explorer.verify["kind"] == "lds" and explorer.verify["state"] == "done"
    explorer.run_verify(n_remove=3, wait=True)  # leave-one-out switches the tab back
    assert explorer.verify_mode == "loo" and explorer.verify["kind"] == "loo"
    assert explorer.lds_result is result


def test_cancel_stops_an_lds_run_and_returns_the_subsets_done(explorer, monkeypatch):
    started = threading.Event()
    monkeypatch.setattr(LDS_MODULE, "train", _slow_lds_train(started, 0.2))

    seen: list[dict] = []  # the state right after Cancel, checked here (not in the thread)

    def cancel_after_two_subsets() -> None:
        _wait_for(lambda: explorer.verify.get("progress", 0) >= 4 / 40)
        explorer.cancel_verify()
        seen.append(dict(explorer.verify))

    canceller = threading.Thread(target=cancel_after_two_subsets)
    canceller.start()
    result = explorer.run_lds(20, wait=True)  # returns once cancelled
    canceller.join(30)
    assert seen[0]["state"] == "cancelling"
    assert seen[0]["message"].startswith("Cancelling: the retrain in progress finishes first")
    assert result.cancelled and 2 <= result.n_subsets < 20 and result.subsets == 20
    assert (
        result.actual.shape == (result.n_subsets, 1) and result.masks.shape[0] == result.n_subsets
    )
    v = explorer.verify
    assert v["state"] == "cancelled" and v["n_subsets"] == result.n_subsets
    assert v["message"].startswith(f"Cancelled: {result.n_subsets} of 20 subsets done in ")
    assert bytes(explorer.verify_plot[:4]) == b"\x89PNG"


def test_run_after_cancel_goes_on_from_the_subsets_done_and_more_subsets_add_to_them(
    explorer, digits_influence, monkeypatch
):
    data, inf = digits_influence
    started = threading.Event()
    monkeypatch.setattr(LDS_MODULE, "train", _slow_lds_train(started, 0.2))
    canceller = threading.Thread(
        target=lambda: (
            _wait_for(lambda: explorer.verify.get("progress", 0) >= 4 / 12),
            explorer.cancel_verify(),
        )
    )
    canceller.start()
    first = explorer.run_lds(6, wait=True)
    canceller.join(30)
    kept = first.n_subsets
    assert first.cancelled and 2 <= kept < 6
    real, calls = _slow_lds_train(threading.Event(), 0.0), []
    monkeypatch.setattr(LDS_MODULE, "train", lambda *a, **k: calls.append(1) or real(*a, **k))
    explorer.run_lds(6)  # Run again: the tab says it goes on
    assert explorer.verify["message"].startswith(
        f"Going on from the earlier run's {kept} subsets: retraining on {6 - kept} more"
    )
    explorer.verify_tab.job.join(120)
    second = explorer.lds_result
    assert len(calls) == 2 * (6 - kept) and not second.cancelled and second.n_subsets == 6
    direct = iw.lds(
        inf, data, x_test=data.X_test[2:3], y_test=data.y_test[2:3], subsets=6, progress=False
    )
    np.testing.assert_allclose(second.actual, direct.actual, atol=1e-9)
    np.testing.assert_allclose(second.rerun, direct.rerun, atol=1e-9)
    assert second.per_test.tolist() == pytest.approx(direct.per_test.tolist(), abs=1e-9)
    assert explorer.verify["state"] == "done" and explorer.verify["n_subsets"] == 6
    calls.clear()
    third = explorer.run_lds(8, wait=True)  # more subsets: only the 2 new ones are retrained
    assert len(calls) == 4 and third.n_subsets == 8
    np.testing.assert_array_equal(third.actual[:6], second.actual)
    calls.clear()
    assert explorer.run_lds(5, wait=True).n_subsets == 5 and len(calls) == 10  # fewer: afresh


def test_the_progress_of_a_run_that_goes_on_counts_the_subsets_kept():
    assert progress_message(0.0, 6, kept=2) == (
        "Retrained 4 of 12 models (6 subsets, each twice; 2 from the earlier run)"
    )
    assert progress_message(0.5, 6, kept=2) == (
        "Retrained 8 of 12 models (6 subsets, each twice; 2 from the earlier run)"
    )
    assert progress_message(0.25, 4) == "Retrained 2 of 8 models (4 subsets, each twice)"


def test_a_second_check_while_one_runs_is_refused_with_a_message(explorer, monkeypatch):
    started = threading.Event()
    monkeypatch.setattr(LDS_MODULE, "train", _slow_lds_train(started, 1.0))
    explorer.run_lds(10)
    assert started.wait(30)
    with pytest.raises(RuntimeError, match="A run is already going; cancel it first"):
        explorer.run_verify(n_remove=3, wait=True)
    explorer.run_lds()  # without wait: the message shows in the running check's status line
    assert explorer.verify["message"] == "A run is already going; cancel it first."
    assert explorer.verify["state"] == "running" and explorer.verify["kind"] == "lds"
    assert explorer.verify_mode == "lds"  # the tab still shows the check that runs
    explorer.cancel_verify()
    explorer.verify_tab.job.join(30)
    assert explorer.verify["state"] == "cancelled"


@pytest.mark.parametrize(
    ("value", "error", "words"),
    [(2, ValueError, "at least 3"), (0, ValueError, "positive"), (2.5, TypeError, "integer")],
)
def test_a_bad_subsets_value_shows_an_error_naming_it(explorer, value, error, words):
    with pytest.raises(error, match=f"subsets: .*{words}"):
        explorer.run_lds(value)
    with pytest.raises(ValueError, match="subsets: at most 1000"):
        explorer.run_lds(5000)
    if isinstance(value, int):  # typed in the tab's box, then Run
        explorer.verify_mode, explorer.verify_subsets = "lds", value
        explorer.handle_event({"event": protocol.VERIFY_RUN})
        v = explorer.verify
        assert (
            v["state"] == "error" and v["message"].startswith("subsets: ") and words in v["message"]
        )
        assert not explorer.verify_running and explorer.error == ""


@pytest.mark.parametrize(
    ("lds", "floor", "m", "words"),
    [
        (0.97, 1.0, 20, "almost exactly as retraining"),
        (0.60, 0.62, 20, "as well as a second retraining"),
        (0.58, 0.48, 20, "could reach about its square root, 0.69"),  # above a low floor
        (0.50, 1.0, 20, "gap of 0.50 is the scores' error"),
        (0.05, 1.0, 20, "About chance (0)"),
        (-0.40, 1.0, 20, "Below chance"),
        (float("nan"), float("nan"), 2, "Only 2 subsets retrained"),
        (float("nan"), 1.0, 20, "No rank correlation"),
    ],
)
def test_the_lds_reading_says_what_the_numbers_mean(lds, floor, m, words):
    assert words in lds_reading(lds, floor, m)
