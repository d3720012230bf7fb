"""The results file (``--json``): its shape, reading it back, merging other runs into it
(``--append``, ``--include``) and writing it after every row.

Rows of another device are not mixed into one file (``--append``, ``--include`` refuse them): the
targets compare the seconds within a file.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import machine_info

from .base import adapters, normalisations
from .targets import targets

REPORT_KEYS = ("results", "cases", "reference", "commands", "machine", "versions")


def json_default(value: Any) -> Any:
    """What ``json.dumps`` writes for numpy scalars, paths and anything else it cannot."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def peer_versions() -> dict[str, str | None]:
    """torch's version, and every system's distribution's (None where not installed)."""
    out: dict[str, str | None] = {"torch": torch.__version__}
    for dist in (*(a.distribution for a in adapters()), "numpy", "scipy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def new_report(device: str, quick: bool, time_limit: float, command: str) -> dict[str, Any]:
    """An empty report of this machine (read now: set the torch threads first)."""
    facts = ("cpu", "cores", "usable_cores", "threads", "gpu", "python", "platform", "date")
    return {
        "benchmark": "peers",
        "complete": False,
        "machine": machine_info(*facts, "load_average_start") | {"device": device},
        "versions": peer_versions(),
        "commands": [command],
        "command_seconds": {},
        "quick": quick,
        "time_limit_seconds": time_limit,
        "normalisation": normalisations(),
        "reference": {},
        "cases": {},
        "results": [],
        "targets": [],
    }


def check_one_device(rows: list[dict], device: str | None, what: str) -> None:
    """SystemExit naming ``what`` where ``rows`` (and this run's ``device``, unless None) come
    from more than one device: the targets compare seconds within a file. Rows written before
    ``--device`` existed were measured on the CPU."""
    found = sorted({r.get("device", "cpu") for r in rows} | ({device} if device else set()))
    if len(found) > 1:
        raise SystemExit(
            f"{what}: rows of {' and '.join(found)} would be mixed in one file (its targets "
            "compare their seconds); write each device's runs to their own --json"
        )


def read_report(path: Path, flag: str) -> dict[str, Any]:
    """A JSON written by this script, or SystemExit naming the flag that gave it."""
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SystemExit(f"{flag} {path}: not a readable JSON file ({err})") from err
    missing = [k for k in REPORT_KEYS if not isinstance(report, dict) or k not in report]
    if missing:
        raise SystemExit(
            f"{flag} {path}: not a results file of benchmarks/peers.py (no {', '.join(missing)})"
        )
    return report


def command_seconds(report: dict[str, Any]) -> dict[str, float]:
    """Wall seconds of every command that went into a report (files written before these were
    recorded per command have only the last command's, as ``total_seconds``)."""
    return dict(report.get("command_seconds") or {report["commands"][-1]: report["total_seconds"]})


def append_to(report: dict[str, Any], path: Path, device: str | None, merge_only: bool) -> None:
    """``--append``: ``report`` keeps the rows, cases, references, commands and machines of the
    file at ``path`` (the runs replace the rows they redo). ``device`` is this run's (None for
    ``--merge-only``, which measures nothing and keeps the file's machine and versions)."""
    earlier = read_report(path, "--json")
    report["results"] = earlier["results"]
    for key in ("cases", "reference"):
        report[key] = earlier[key]
    report["commands"][:0] = earlier["commands"]
    report["command_seconds"] = command_seconds(earlier)
    report["earlier_machines"] = earlier.get("earlier_machines", [])
    check_one_device(report["results"], device, f"--append {path}")
    if merge_only:
        report["machine"], report["versions"] = earlier["machine"], earlier["versions"]
    else:
        report["earlier_machines"] = [*report["earlier_machines"], earlier["machine"]]


def include_file(report: dict[str, Any], path: Path, args: Any, first: bool) -> None:
    """``--include path``: its rows selected by ``args`` (``--cases``, ``--systems``,
    ``--solvers``) go into ``report``; SystemExit where it was measured with other packages or
    gives no row. ``first``: a new --merge-only file takes its machine and versions."""
    other = read_report(path, "--include")
    if args.merge_only and first and not args.json.exists():
        report["machine"], report["versions"] = other["machine"], other["versions"]
    if other["versions"] != report["versions"]:
        raise SystemExit(
            f"--include {path}: measured with {other['versions']}, not "
            f"{report['versions']} as --json; rerun it with the same packages"
        )
    taken = include_rows(report, other, args.case_list, args.system_list, args.solver_list)
    device = None if args.merge_only else str(args.device)
    check_one_device(report["results"], device, f"--include {path}")
    if not taken:
        raise SystemExit(
            f"--include {path}: none of its rows is in the selected cases, "
            "systems and solvers; check --cases, --systems and --solvers"
        )
    print(f"--include {path}: {taken} rows", file=sys.stderr)


def include_rows(
    report: dict[str, Any],
    other: dict[str, Any],
    cases: list[int],
    systems: list[str],
    solvers: list[str],
) -> int:
    """Copy into ``report`` the rows of ``other`` (another run's JSON) whose case, system and
    solver are selected, replacing rows of the same key; each case that gives rows brings its
    record and reference along, and ``other``'s commands and machines are recorded. Returns the
    number of rows taken."""
    taken = [
        r
        for r in other["results"]
        if r["case"] in cases and r["system"] in systems and r["solver"] in solvers
    ]
    keys = {(r["case"], r["system"], r["solver"]) for r in taken}
    report["results"] = [
        r for r in report["results"] if (r["case"], r["system"], r["solver"]) not in keys
    ] + taken
    for case in sorted({str(r["case"]) for r in taken}):
        report["cases"][case] = other["cases"][case]
        report["reference"][case] = other["reference"][case]
    commands = report["commands"]
    commands[-1:-1] = [c for c in other["commands"] if c not in commands]  # this one stays last
    for command, seconds in command_seconds(other).items():
        report["command_seconds"].setdefault(command, seconds)
    machines = report.setdefault("earlier_machines", [])
    for machine in [*other.get("earlier_machines", []), other["machine"]]:
        if machine not in machines and machine != report["machine"]:
            machines.append(machine)
    return len(taken)


@dataclass
class Saver:
    """``save(complete)``: recompute the targets and the seconds, and write the report to
    ``path`` (after every row, ``complete: false`` until the end; through a ``.partial`` file,
    so that a run killed mid-write leaves the last whole file). ``tables_only`` (--merge-only
    --markdown alone): the file is read, not written, and the seconds are left as they were."""

    report: dict[str, Any]
    path: Path | None
    command: str
    time_limit: float
    tables_only: bool
    start: float  # time.perf_counter() when this command began

    def __call__(self, complete: bool) -> None:
        report = self.report
        report["targets"] = targets(report["results"], self.time_limit)
        if not self.tables_only:
            report["command_seconds"][self.command] = time.perf_counter() - self.start
        report["total_seconds"] = sum(report["command_seconds"].values())
        if self.tables_only:
            return
        report["complete"] = complete
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(self.path.name + ".partial")
            partial.write_text(json.dumps(report, indent=2, default=json_default) + "\n")
            os.replace(partial, self.path)
