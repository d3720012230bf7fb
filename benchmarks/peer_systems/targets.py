"""The issue's targets, met or missed for every case that has both rows, and the tables' "ours vs
peer" speed-up.

Targets (from the issue, 2 CPU cores): exact at least 2x faster than pyDVL Direct at equal error;
CG at least 20x faster than pyDVL Cg with relative error <= 1e-4; LiSSA never NaN, Pearson r >= 0.999
and faster than pyDVL Lissa; Arnoldi agreeing better with the reference than Captum's at the same
rank; EK-FAC at equal or better Pearson r than Kronfluence's and faster. A peer that timed out
counts as the time limit. The tables' "ours vs peer" is the peer's seconds over ours: pyDVL's same
solver, or Kronfluence for EK-FAC (:data:`SPEED_PEER`).
"""

from __future__ import annotations

from .base import adapter

# What each target compares, with the issue's reference numbers (case 1, pyDVL, 2 cores).
ISSUE_REFERENCE = {"direct": "0.57 s", "cg": "49 s", "lissa": "27 s, r = 0.997, unconverged"}
# The peer whose same solver an "ours" row's speed-up is taken against: pyDVL, except EK-FAC.
SPEED_PEER = {"ekfac": "kronfluence"}


def find_row(rows: list[dict], case: int, system: str, solver: str) -> dict | None:
    """The row of (case, system, solver), or None."""
    return next(
        (r for r in rows if r["case"] == case and r["system"] == system and r["solver"] == solver),
        None,
    )


def speed(ours: dict, peer: dict, limit: float) -> tuple[float | None, str | None]:
    """(peer seconds / our seconds, note). A peer that timed out counts as the time limit, so the
    ratio is a lower bound; a peer that failed otherwise gives no ratio."""
    name = adapter(peer["system"]).title
    if ours["seconds"] is None:
        return None, f"ours did not finish: {ours.get('note')}"
    if peer["seconds"] is not None:
        return peer["seconds"] / ours["seconds"], peer.get("note") and f"{name}: {peer['note']}"
    if peer.get("timed_out"):
        limit = peer.get("time_limit_seconds", limit)
        return limit / ours["seconds"], f"{name} timed out at {limit:.0f} s: a lower bound"
    return None, f"{name} produced no result: {peer.get('note')}"


def versus_peer(row: dict, rows: list[dict], limit: float) -> str:
    """An "ours" row's speed-up over the same solver of its peer (:data:`SPEED_PEER`, else
    pyDVL), as text ("" where there is none); ">= " where the peer timed out, so that the ratio
    is a lower bound."""
    peer_system = SPEED_PEER.get(row["solver"], "pydvl")
    peer = find_row(rows, row["case"], peer_system, row["solver"])
    if row["system"] != "ours" or peer is None:
        return ""
    value, note = speed(row, peer, limit)
    if value is None:
        return ""
    return f"{'>= ' if note and 'lower bound' in note else ''}{value:.1f}x"


def target(case: int, name: str, target: str, measured, met: bool, note, **extra) -> dict:
    """One target's entry of the JSON's ``targets``."""
    return {"case": case, "name": name, "target": target, "measured": measured, "met": bool(met),
            "note": note, **extra}  # fmt: skip


def exact(case: int, ours: dict, peer: dict, limit: float) -> dict:
    ratio, note = speed(ours, peer, limit)
    err = peer["rel_err_vs_exact"]
    equal = err is None or err <= 1e-6  # None: pyDVL has no result to be equal to
    return target(
        case, "exact: speed-up over pyDVL Direct at equal error",
        ">= 2x, pyDVL relative error <= 1e-6", ratio,
        ratio is not None and ratio >= 2 and equal, note, pydvl_rel_err=err,
        issue_reference=f"pyDVL Direct {ISSUE_REFERENCE['direct']} on case 1",
    )  # fmt: skip


def cg(case: int, ours: dict, peer: dict, limit: float) -> dict:
    ratio, note = speed(ours, peer, limit)
    err = ours["rel_err_vs_exact"]
    return target(
        case, "CG: speed-up over pyDVL Cg at relative error <= 1e-4",
        ">= 20x, our relative error <= 1e-4", ratio,
        ratio is not None and ratio >= 20 and err is not None and err <= 1e-4, note,
        ours_rel_err=err, issue_reference=f"pyDVL Cg {ISSUE_REFERENCE['cg']} on case 1",
    )  # fmt: skip


def lissa(case: int, ours: dict, peer: dict, limit: float) -> dict:
    ratio, note = speed(ours, peer, limit)
    r = ours["pearson_vs_exact"]
    good = not ours["has_nan"] and not ours["has_inf"] and r is not None and r >= 0.999
    faster = ratio > 1 if ratio is not None else ours["seconds"] is not None
    return target(
        case, "LiSSA: no NaN, Pearson r >= 0.999, faster than pyDVL Lissa",
        "r >= 0.999, speed-up > 1", ratio, good and faster, note, ours_pearson=r,
        pydvl_pearson=peer["pearson_vs_exact"],
        issue_reference=f"pyDVL Lissa {ISSUE_REFERENCE['lissa']} on case 1",
    )  # fmt: skip


def arnoldi(case: int, ours: dict, peer: dict, limit: float) -> dict:
    a, b = ours["pearson_vs_exact"], peer["pearson_vs_exact"]
    return target(
        case, "Arnoldi: Pearson r above Captum's at the same rank", "ours r > Captum r",
        a, a is not None and (b is None or a > b),
        None if b is not None else f"Captum: {peer.get('note')}", captum_pearson=b,
        ours_rel_err=ours["rel_err_vs_exact"], captum_rel_err=peer["rel_err_vs_exact"],
    )  # fmt: skip


def ekfac(case: int, ours: dict, peer: dict, limit: float) -> dict:
    ratio, note = speed(ours, peer, limit)
    a, b = ours["pearson_vs_exact"], peer["pearson_vs_exact"]
    as_good = a is not None and (b is None or a >= b)
    faster = ratio > 1 if ratio is not None else False
    return target(
        case, "EK-FAC: at equal or better Pearson r than Kronfluence, faster",
        "ours r >= Kronfluence r, speed-up > 1", ratio, as_good and faster, note,
        ours_pearson=a, kronfluence_pearson=b, ours_rel_err=ours["rel_err_vs_exact"],
        kronfluence_rel_err=peer["rel_err_vs_exact"],
    )  # fmt: skip


# (our solver, the peer's system, the target), in the order the JSON lists them per case
TARGETS = (
    ("direct", "pydvl", exact),
    ("cg", "pydvl", cg),
    ("lissa", "pydvl", lissa),
    ("arnoldi", "captum", arnoldi),
    ("ekfac", "kronfluence", ekfac),
)


def targets(rows: list[dict], time_limit: float) -> list[dict]:
    """The issue's five targets for every case that has both rows."""
    out = []
    for case in sorted({r["case"] for r in rows}):
        for solver, peer_system, check in TARGETS:
            ours = find_row(rows, case, "ours", solver)
            peer = find_row(rows, case, peer_system, solver)
            if ours and peer:
                out.append(check(case, ours, peer, time_limit))
    return out
