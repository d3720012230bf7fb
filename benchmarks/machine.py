"""What each benchmark records about the machine it ran on, read in one place.

Shared by every benchmark script (``attack.py``, ``click_latency.py``, ``core_speed.py``,
``loo_fidelity.py``, ``peers.py``): each names the facts its JSON reports, in its own order, and
:func:`machine_info` reads them now.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), else every core of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows of it."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    """The first visible CUDA GPU's name (``torch.cuda.get_device_name``), None without one."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def utc_now() -> str:
    """The current UTC time to the second, ISO 8601 (``2025-01-31T12:00:00+00:00``)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


FACTS: dict[str, Callable[[], Any]] = {
    "cpu": cpu_model,
    "processor": platform.processor,
    "cores": os.cpu_count,
    "usable_cores": usable_cores,
    "threads": torch.get_num_threads,
    "gpu": gpu_name,
    "torch": lambda: torch.__version__,
    "python": platform.python_version,
    "platform": platform.platform,
    "date": utc_now,
    "load_average_start": lambda: list(os.getloadavg()),
}


def machine_info(*facts: str) -> dict[str, Any]:
    """The named :data:`FACTS` (``"cpu"``, ``"threads"``, ...) read now, in the order given."""
    return {name: FACTS[name]() for name in facts}
