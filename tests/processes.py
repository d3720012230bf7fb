"""Processes the tests start: stopping a server in a process group of its own (a Jupyter server
under `make lab` or the browser tests: tests/test_make_lab.py, tests/browser/conftest.py), and
running a benchmark script to its end (tests/test_scale_benchmark.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["run_benchmark", "stop_process_group"]


def stop_process_group(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM to ``proc``'s process group, then SIGKILL if it is still there after ``timeout``
    seconds; waits for ``proc``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def run_benchmark(script: str, *args: str, timeout: float = 580) -> subprocess.CompletedProcess:
    """``python benchmarks/<script> *args`` from the repository root, as ``make test`` runs it;
    asserts it exited 0 (showing the end of its stderr) and returns the finished process."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, str(root / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc
