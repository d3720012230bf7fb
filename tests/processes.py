"""Stopping a server the tests started in a process group of its own (a Jupyter server under
`make lab` or the browser tests): shared by tests/test_make_lab.py and tests/browser/conftest.py."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

__all__ = ["stop_process_group"]


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
