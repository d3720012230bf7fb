"""The explorer scores the visible page ahead when a click is slow (widgets/lookahead.py).

"Slow" is set by monkeypatching LOOKAHEAD_SECONDS: 0 makes every test point slow, 1e9 none. Calls
of ``Influence.top`` are counted to tell a lookup from a computation.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import influence_widgets as iw
from influence_widgets.widgets import lookahead


def _counting(monkeypatch, inf: iw.Influence) -> list[int]:
    """Record ``len(x_test)`` of every call of ``inf.top``."""
    calls: list[int] = []
    top = inf.top

    def counted(x_test, y_test=None, k=10):
        calls.append(len(x_test))
        return top(x_test, y_test, k)

    monkeypatch.setattr(inf, "top", counted)
    return calls


def _wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "the lookahead did not finish in time"
        time.sleep(0.02)


def _page(ex: iw.InfluenceExplorer) -> list[int]:
    return [item["index"] for item in ex.gallery]


def test_slow_clicks_have_the_page_scored_ahead_and_clicks_become_lookups(
    monkeypatch, digits_influence
):
    data, inf = digits_influence
    monkeypatch.setattr(lookahead, "LOOKAHEAD_SECONDS", 0.0)
    calls = _counting(monkeypatch, inf)
    ex = iw.InfluenceExplorer(inf, data, k=4, page_size=6).wait_ready()
    _wait_until(lambda: not ex.lookahead.remaining())
    assert len(calls) == 6  # each test point of the page once, one at a time
    _wait_until(lambda: not ex.lookahead.running)  # the thread ends with its work
    assert "all 6 test points of this page scored ahead" in ex.message
    index = _page(ex)[4]
    ex.selected = index
    assert len(calls) == 6  # a lookup
    expected = inf.top(data.X_test[index : index + 1], data.y_test[index : index + 1], k=4)
    assert [it["index"] for it in ex.panel["helpful"]] == expected.helpful[0].tolist()
    assert [it["score"] for it in ex.panel["harmful"]] == expected.harmful_scores[0].tolist()
    # the next page is scored ahead too
    ex.page = 1
    _wait_until(lambda: not ex.lookahead.remaining())
    assert len(calls) == 1 + 12  # the check above, and 6 more
    # another k: every list is scored again, with the new k
    ex.k = 2
    _wait_until(lambda: not ex.lookahead.remaining())
    ex.selected = _page(ex)[0]
    assert len(ex.panel["helpful"]) == 2 and len(ex.panel["harmful"]) == 2


def test_fast_clicks_stop_after_the_first_point(monkeypatch, digits_influence):
    data, inf = digits_influence
    monkeypatch.setattr(lookahead, "LOOKAHEAD_SECONDS", 1e9)
    calls = _counting(monkeypatch, inf)
    ex = iw.InfluenceExplorer(inf, data, k=3, page_size=6).wait_ready()
    _wait_until(lambda: len(ex.lookahead.remaining()) <= 5)
    time.sleep(0.3)
    assert len(calls) == 1 and ex.lookahead.remaining() == _page(ex)[1:]
    assert not ex.lookahead.running  # nothing to do: no thread waits
    assert "scored ahead" not in ex.message
    ex.selected = _page(ex)[3]  # computed on demand
    assert len(calls) == 2 and len(ex.panel["helpful"]) == 3


def test_lookahead_false_scores_only_what_is_clicked(monkeypatch, digits_influence):
    data, inf = digits_influence
    monkeypatch.setattr(lookahead, "LOOKAHEAD_SECONDS", 0.0)
    calls = _counting(monkeypatch, inf)
    ex = iw.InfluenceExplorer(inf, data, k=3, page_size=6, lookahead=False).wait_ready()
    time.sleep(0.3)
    assert calls == [] and ex.lookahead is None
    ex.selected = _page(ex)[2]
    ex.selected = _page(ex)[2] + 0  # the same point: still computed (nothing kept)
    assert len(calls) == 1 and ex.panel["test_index"] == _page(ex)[2]


def test_a_point_that_fails_ahead_shows_its_error_when_clicked(monkeypatch, digits_influence):
    data, inf = digits_influence
    monkeypatch.setattr(lookahead, "LOOKAHEAD_SECONDS", 0.0)
    top = inf.top

    def broken_for_the_third(x_test, y_test=None, k=10):
        if len(x_test) == 1 and bool((x_test == data.X_test[ex_page[2]]).all()):
            raise RuntimeError("out of memory in this test point")
        return top(x_test, y_test, k)

    ex_page = list(range(6))
    monkeypatch.setattr(inf, "top", broken_for_the_third)
    ex = iw.InfluenceExplorer(inf, data, k=3, page_size=6)
    ex_page[:] = _page(ex)
    ex.wait_ready()
    _wait_until(lambda: ex.lookahead.remaining() in ([], [ex_page[2]]))
    time.sleep(0.2)
    assert ex.status == "ready" and ex.error == ""  # the background failure shows nowhere
    ex.selected = ex_page[2]
    assert "Could not compute influence for test point" in ex.error
    assert "out of memory in this test point" in ex.error
    ex.selected = ex_page[1]
    assert ex.error == "" and ex.panel["test_index"] == ex_page[1]


@pytest.mark.parametrize("bad", ["yes", 1])
def test_lookahead_must_be_a_bool(digits_influence, bad):
    data, inf = digits_influence
    with pytest.raises(TypeError, match="lookahead: expected True or False"):
        iw.InfluenceExplorer(inf, data, lookahead=bad, fit_in_background=False)


def test_a_script_that_ends_while_the_page_is_scored_ahead_exits_cleanly():
    """Interpreter exit while the lookahead thread is inside torch: without the atexit stop the
    process aborts ("terminate called without an active exception", return code -6)."""
    code = (
        "import influence_widgets as iw\n"
        "import influence_widgets.widgets.lookahead as lookahead\n"
        "lookahead.LOOKAHEAD_SECONDS = 0.0\n"
        "data = iw.datasets.digits()\n"
        "model = iw.models.logistic_regression(data)\n"
        "iw.train(model, data, l2=0.01, progress=False)\n"
        "inf = iw.Influence(model, data, l2=0.01, progress=False)\n"
        "ex = iw.InfluenceExplorer(inf, data, page_size=200, fit_in_background=False)\n"
        "print('REMAINING', len(ex.lookahead.remaining()) > 0)\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    for _ in range(3):
        run = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=240
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert "REMAINING True" in run.stdout  # it did end in the middle of the page
