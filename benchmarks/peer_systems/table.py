"""The printed table of a report, and the README's Markdown tables (``--markdown``).

Each system's rows are labelled by its adapter (``labels``, ``title``); a case's rows are listed
in the order the case runs them (:mod:`.cases`).
"""

from __future__ import annotations

from typing import Any

from .base import adapter, adapters
from .cases import make_cases
from .targets import versus_peer


def fmt(value: Any, spec: str) -> str:
    width = int("".join(ch for ch in spec.split(".")[0] if ch.isdigit()) or 0)
    if value is None:
        return "-".rjust(width)
    return format(value, spec)


def print_cases(report: dict[str, Any]) -> None:
    """The machine, the versions, and every case's model and reference."""
    m = report["machine"]
    print(f"\n{m['cpu']}, {m['usable_cores']} cores, {m['threads']} torch threads per child")
    device = m.get("device", "cpu")  # files written before --device: the CPU
    print(f"device {device}" + (f" ({m.get('gpu')})" if device != "cpu" else ""))
    v = report["versions"]
    peers = [a.distribution for a in adapters() if a.module]
    print(", ".join([f"torch {v['torch']}", *(f"{d} {v.get(d)}" for d in peers)]))
    for number, c in report["cases"].items():
        if "error" in c:
            print(f"\ncase {number}: {c['error']}")
            continue
        t = c["training"]
        print(
            f"\ncase {number} {c['name']}: n={c['n_train']}, T={c['n_test']}, p={c['n_params']}, "
            f"l2={c['l2']:g}, damping={c['damping']:g}, batch {c['batch_size']}, "
            f"repeats {c['repeats']}; trained in {t['seconds']:.1f} s "
            f"({t['iterations']} L-BFGS iterations, grad norm {t['grad_norm']:.1e})"
        )
        print(f"  reference: {report['reference'].get(str(number))}")
        if "min_eigenvalue_with_damping" in c:
            print(f"  lambda_min(H + damping I) <= {c['min_eigenvalue_with_damping']:.4g}")


def print_report(report: dict[str, Any]) -> None:
    """The cases, a row per result and every target, on stdout."""
    print_cases(report)
    head = (
        f"{'case':>4} {'system':<11} {'solver':<20} {'seconds':>9} {'vs peer':>8} "
        f"{'pearson':>10} {'rel err':>9} {'peak MB':>8} {'+MB':>7}  note"
    )
    print(f"\n{head}\n{'-' * len(head)}")
    rows = report["results"]
    for r in rows:
        ratio = versus_peer(r, rows, report["time_limit_seconds"]) or "-"
        print(
            f"{r['case']:>4} {r['system']:<11} {r['solver']:<20} {fmt(r['seconds'], '9.3f')} "
            f"{ratio:>8} {fmt(r['pearson_vs_exact'], '10.6f')} "
            f"{fmt(r['rel_err_vs_exact'], '9.1e')} {fmt(r['peak_mb'], '8.0f')} "
            f"{fmt(r.get('peak_increment_mb'), '7.0f')}  {(r.get('note') or '')[:90]}"
        )
    print("\ntargets")
    for t in report["targets"]:
        verdict = "met" if t["met"] else "MISSED"
        measured = fmt(t["measured"], ".4g")
        extra = f" ({t['note']})" if t.get("note") else ""
        ref = f"; issue reference: {t['issue_reference']}" if t.get("issue_reference") else ""
        print(f"  [{verdict:>6}] case {t['case']}: {t['name']}: {measured}{extra}{ref}")
    print(
        f"\ntotal {report['total_seconds']:.0f} s over {len(report['command_seconds'])} command(s)"
    )


def _g(value: float) -> str:
    """Three significant figures, thousands separated."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _retrained(case: dict[str, Any], rows: list[dict]) -> str | None:
    """The ``measured`` stamp of a case's latest rows when the run that made them trained a
    different model from the earlier rows' (its record keeps ``earlier_training``), else None."""
    before, now = case.get("earlier_training"), case.get("training")
    keys = ("iterations", "risk")
    if not before or not now or all(before[k] == now[k] for k in keys):
        return None
    stamps = {r["measured"] for r in rows if r.get("measured")}
    return max(stamps) if len(stamps) > 1 else None


def _training_text(t: dict[str, Any]) -> str:
    return (
        f"{t['iterations']} L-BFGS iterations, risk {t['risk']:.9g}, "
        f"gradient norm {t['grad_norm']:.1e}"
    )


def _case_head(report: dict[str, Any], number: int, rows: list[dict]) -> list[str]:
    """A case's sentence and its table's header."""
    c = report["cases"][str(number)]
    dates = sorted({r["measured"][:10] for r in rows if r.get("measured")})
    return [
        f"Case {number}, {c['description']} (`{c['name']}`): n = {c['n_train']:,}, "
        f"{c['n_test']} test points, p = {c['n_params']:,}, l2 = {c['l2']:g}, "
        f"damping = {c['damping']:g}, {c['repeats']} repeat(s); measured "
        f"{', '.join(dates) or 'before rows were dated'}; accuracy against "
        f"{report['reference'][str(number)]}:",
        "",
        "| system | solver | median s | ours vs peer | Pearson r | rel. error "
        "| peak MB (+ over baseline) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]


def _seconds_cell(r: dict, time_limit: float) -> str:
    if r["seconds"] is not None:
        return _g(r["seconds"])
    if r.get("timed_out"):
        return f"killed at {r.get('time_limit_seconds', time_limit):.0f} s"
    return f"failed: {(r.get('note') or '')[:60]}"


def _row_line(report: dict[str, Any], r: dict, retrained: str | None) -> str:
    """One row of a case's table."""
    c = report["cases"][str(r["case"])]
    d = r.get("diagnostics") or {}
    batch = (r.get("settings") or {}).get("batch_size")
    label = (
        adapter(r["system"])
        .labels[r["solver"]]
        .format(
            iterations=d.get("iterations"),
            rank=c.get("rank"),
            batches="full batch" if batch is None else f"batches of {batch}",
        )
    )
    secs = _seconds_cell(r, report["time_limit_seconds"])
    ratio = versus_peer(r, report["results"], report["time_limit_seconds"])
    diverged = "diverged" in (r.get("note") or "")
    r_value, err = r["pearson_vs_exact"], r["rel_err_vs_exact"]
    pearson = "diverged" if diverged else "" if r_value is None else f"{r_value:.6f}"
    if diverged or err is None:
        err = ""
    else:
        err = "0 (reference)" if err == 0 else f"{err:.1e}"
    peak = ""
    if r["peak_mb"] is not None:
        peak = f"{r['peak_mb']:,.0f} (+{r.get('peak_increment_mb', 0):,.0f})"
    system = adapter(r["system"]).title
    if retrained and r.get("measured") == retrained:
        system += " †"
    return f"| {system} | {label} | {secs} | {ratio} | {pearson} | {err} | {peak} |"


def _retrained_note(c: dict[str, Any], retrained: str) -> list[str]:
    return [
        f"† ran on the model trained on {retrained[:10]} "
        f"({_training_text(c['training'])}); the other rows on the model of the earlier "
        f"runs ({_training_text(c['earlier_training'])}): training again did not reproduce "
        "the earlier model (the package's training code has changed since). Each row is "
        "compared with the reference computed on its own model; compare speeds and r "
        "within one model.",
        "",
    ]


def markdown_tables(report: dict[str, Any]) -> str:
    """The README's tables: one per case, then its targets, all read from the report. Where a
    case's latest rows ran on a retrained model that differs from its earlier rows' (training
    again did not reproduce it), those rows are marked † and a line says so."""
    rows, out = report["results"], []
    cases = make_cases()
    for number in sorted({r["case"] for r in rows}):
        c = report["cases"][str(number)]
        case_rows = [r for r in rows if r["case"] == number]
        retrained = _retrained(c, case_rows)
        order = {key: i for i, key in enumerate(cases[number].runs)}
        case_rows.sort(key=lambda r: order[(r["system"], r["solver"])])
        out += _case_head(report, number, case_rows)
        out += [_row_line(report, r, retrained) for r in case_rows]
        out.append("")
        if retrained:
            out += _retrained_note(c, retrained)
        for t in (t for t in report["targets"] if t["case"] == number):
            verdict = "met" if t["met"] else "MISSED"
            value = "-" if t["measured"] is None else f"{t['measured']:.3g}"
            note = f" ({t['note']})" if t.get("note") else ""
            out.append(f"- {t['name']} (target {t['target']}): **{value}, {verdict}**{note}")
        out.append("")
    return "\n".join(out) + "\n"
