"""The explorer's background work (widgets/jobs.py): one runner per explorer, and a clean exit.

At interpreter exit a daemon thread killed inside a torch kernel aborts the process ("terminate
called without an active exception", exit code 134): a script that opened ``%influence --demo
digits`` and ended while the explorer precomputed did so in 10 of 11 runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from influence_widgets.core.progress import progress_bar
from influence_widgets.widgets.jobs import ExplorerClosing, Job, JobRunner

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_script_that_ends_while_the_demo_precomputes_exits_with_0():
    code = (
        "from IPython.testing.globalipapp import start_ipython\n"
        "ip = start_ipython()\n"
        "ip.run_line_magic('load_ext', 'influence_widgets')\n"
        "ex = ip.run_line_magic('influence', '--demo digits')\n"
        "print('FITTING', ex.status)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(5):
        run = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert "FITTING fitting" in run.stdout or "FITTING starting" in run.stdout


class _View:
    """A stand-in for the explorer's traits: a job state dict per name."""

    def __init__(self) -> None:
        self.job = {"state": "idle"}


def test_progress_is_shown_until_cancel_and_raises_once_exiting(monkeypatch):
    runner = JobRunner(_View())
    shown, cancel = [], threading.Event()
    with runner.progress(lambda step, f: shown.append((step, f)), "work", cancel, throttle=False):
        bar = progress_bar(total=4, desc="work", disable=True)
        bar.update()
        other = progress_bar(total=2, desc="other", disable=True)
        other.update()  # another step: not shown
        cancel.set()
        bar.update()  # cancelled: the bar stays where it was
    assert shown == [("work", 0.25)]
    from influence_widgets.widgets import jobs

    monkeypatch.setattr(jobs, "exiting", lambda: True)  # as at interpreter exit
    with runner.progress(lambda *_: None), pytest.raises(ExplorerClosing):
        progress_bar(total=2, desc="fit", disable=True).update()


def test_launch_shows_a_problem_or_runs_and_waits():
    view, runner = _View(), JobRunner(_View())
    runner.view = view
    job, ran = Job(), []

    def work(value, cancel):
        ran.append((value, cancel.is_set()))
        runner.finish("job", {"state": "done"})

    assert not runner.launch("job", "Select a test point first.", {}, (job, work, 1), False)
    assert view.job["message"] == "Select a test point first." and ran == []
    with pytest.raises(RuntimeError, match="Select a test point first"):
        runner.launch("job", "Select a test point first.", {}, (job, work, 1), True)
    assert runner.launch("job", None, {"state": "running"}, (job, work, 2), True)
    assert ran == [(2, False)] and view.job == {"state": "done"}
