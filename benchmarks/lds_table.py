"""The Markdown tables of benchmarks/lds.py's JSON: the full table (benchmarks/README.md), the
compact one in the repository's README.md (between :data:`START` and :data:`END`, rewritten by
``benchmarks/lds.py --readme``) and the PBRF table of the JSON's ``"pbrf"`` key (benchmarks/pbrf.py
writes it; read tolerantly: a missing field shows as n/a)."""

from __future__ import annotations

import math
from collections.abc import Sequence

START = "<!-- lds-table:start -->"
END = "<!-- lds-table:end -->"
NOT_RUN = "–"


def number(value, se=None) -> str:
    """``value`` to 3 decimals, ``± se`` when finite; n/a for None or NaN."""
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "n/a"
    if not isinstance(se, int | float) or not math.isfinite(se):
        return f"{value:.3f}"
    return f"{value:.3f} ± {se:.3f}"


def status_line(report: dict) -> str:
    """What the rows are: a complete run, or a reduced one and why."""
    if report.get("complete"):
        return "Complete run: 100 subsets and 100 test points on every required row."
    rows = report["rows"]
    subsets = "/".join(str(v) for v in sorted({r["subsets"] for r in rows}))
    tests = "/".join(str(v) for v in sorted({r["n_test"] for r in rows}))
    missing = report.get("missing", [])
    short = f"; {len(missing)} required rows missing or short" if missing else ""
    kind = "Incomplete run" if (subsets, tests) == ("100", "100") else "Reduced run"
    return (
        f"{kind}: {subsets} subsets, {tests} test points (TRAK's and dattri's setting is "
        f"100 and 100){short}."
    )


def commands(rows: Sequence[dict]) -> list[str]:
    """The distinct commands that produced the rows, in order."""
    return list(dict.fromkeys(r["command"] for r in rows))


def lds_cell(r: dict) -> str:
    """A row's LDS ± se, or why it has none."""
    if r.get("skipped"):
        return f"not run: {r['skipped']}"
    if r.get("error"):
        return f"failed: {r['error']}"
    return number(r["lds"], r["lds_se"])


SHOWN = ("damping", "regularization", "iterations", "rank", "scale", "max_iter", "proj_dim")
SHOWN += ("batch_size", "recursion_depth", "scaling", "preconditioner")


def settings_text(r: dict) -> str:
    """The settings of a row worth a table cell: damping, iterations, ranks, projection, the
    checkpoints. Ours: the damping our solver chose; dattri: its own arguments."""
    s = dict(r.get("settings") or {})
    s.update(s.pop("projector_kwargs", None) or {})
    if r["system"] == "ours" and r.get("damping") is not None:
        s["damping"] = r["damping"]
    parts = [f"{k} {_cell(s[k])}" for k in SHOWN if s.get(k) is not None]
    if r.get("checkpoints"):
        parts.append(r["checkpoints"])
    return "; ".join(parts)


def markdown(report: dict) -> str:
    """The full table: one line per row, with its settings, time and memory, then the commands."""
    lines = [
        status_line(report),
        "",
        "| model | regime | system | method | settings | LDS ± se | noise floor ± se | "
        "seconds | peak MB | subsets | n_test |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["rows"]:
        seconds = "" if r.get("seconds") is None else f"{r['seconds']:.2f}"
        peak = "" if r.get("peak_mb") is None else f"{r['peak_mb']:.0f}"
        lines.append(
            f"| {r['model']} | {r['regime']} | {r['system']} | {r['method']} | "
            f"{settings_text(r)} | {lds_cell(r)} | "
            f"{number(r['noise_floor'], r['noise_floor_se'])} | {seconds} | {peak} | "
            f"{r['subsets']} | {r['n_test']} |"
        )
    lines += ["", "Commands:", ""] + [f"    {c}" for c in commands(report["rows"])]
    return "\n".join(lines)


def readme_table(
    report: dict,
    models: Sequence[str],
    regimes: Sequence[str],
    order: Sequence[tuple[str, str]] = (),
) -> str:
    """The compact table: a line per (system, method), in ``order`` first (the others after, as
    they come), a column per (model, regime) present in ``models`` x ``regimes`` order; the
    noise floor first; NOT_RUN where a method did not run."""
    rows = report["rows"]
    pairs = [(m, g) for m in models for g in regimes if any(_at(r, m, g) for r in rows)]
    present = {(r["system"], r["method"]) for r in rows}
    found = [(r["system"], r["method"]) for r in rows]
    methods = list(dict.fromkeys([key for key in order if key in present] + found))
    head = "| LDS | " + " | ".join(f"{m} {g}" for m, g in pairs) + " |"
    lines = [status_line(report), "", head, "|" + " --- |" * (len(pairs) + 1)]
    floors = [next((r for r in rows if _at(r, m, g)), None) for m, g in pairs]
    lines.append("| noise floor | " + " | ".join(number(f["noise_floor"]) for f in floors) + " |")
    for system, method in methods:
        cells = []
        for m, g in pairs:
            key = (system, method)
            r = next((r for r in rows if _at(r, m, g) and (r["system"], r["method"]) == key), None)
            cells.append(NOT_RUN if r is None or r.get("lds") is None else number(r["lds"]))
        lines.append(f"| {system} {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _at(r: dict, model: str, regime: str) -> bool:
    return r["model"] == model and r["regime"] == regime


def pbrf_table(report: dict) -> str | None:
    """The table of the ``"pbrf"`` rows (a list, or a dict with ``"rows"``); None without any."""
    pbrf = report.get("pbrf")
    rows = pbrf.get("rows") if isinstance(pbrf, dict) else pbrf
    if not isinstance(rows, list) or not rows:
        return None
    keys = ("model", "regime", "solver", "hessian", "damping", "pbrf_r", "loo_r", "n_removed")
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    for r in rows:
        cells = [_cell(r.get(k) if isinstance(r, dict) else None) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "n/a" if value is None else str(value)


def splice(text: str, table: str) -> str:
    """``text`` with everything between the START and END markers replaced by ``table``."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"text: needs one {START} line followed by one {END} line")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{table}\n{END}{tail}"
