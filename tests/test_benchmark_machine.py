"""benchmarks/machine.py: the one place where every benchmark reads the facts of its machine."""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # as when a benchmark runs

import machine  # noqa: E402


def test_machine_info_reads_the_named_facts_in_the_order_given():
    info = machine.machine_info("threads", "cores", "usable_cores", "cpu", "torch", "date")
    assert list(info) == ["threads", "cores", "usable_cores", "cpu", "torch", "date"]
    assert info["threads"] == torch.get_num_threads() and info["cores"] == os.cpu_count()
    assert 1 <= info["usable_cores"] <= (os.cpu_count() or 1)
    assert info["cpu"] and info["torch"] == torch.__version__
    assert datetime.datetime.fromisoformat(info["date"]).utcoffset() == datetime.timedelta(0)


def test_no_benchmark_reads_the_machine_itself():
    for script in sorted((ROOT / "benchmarks").glob("**/*.py")):  # peer_systems/ included
        if script.name == "machine.py":
            continue
        text = script.read_text()
        for own in ("def usable_cores", "def cpu_model", "/proc/cpuinfo", "python_version()"):
            assert own not in text, f"{script.name} has its own {own!r}: use benchmarks/machine.py"
