"""The parent's side: every (system, solver) of a case in its own child process, in turn, and
the rows made of their results.

Each case trains its model once (:func:`.cases.prepare_case`), then for each repeat runs every
(system, solver) in turn, each in its own child process (``peers.py --child``, :mod:`.child`),
alternating systems within a repeat. Seconds are medians over repeats; a run past
``--time-limit`` is killed (and not repeated: its row says so) and, like a crash (out of memory)
or an exception, becomes a row with ``seconds: null`` and a ``note``, never a number. A result
with NaN (``has_nan``), infinities (``has_inf``) or entries 1e6 times the reference's largest is
noted as diverged.

Accuracy is Pearson r over all T x n entries and the relative Frobenius error
||X - X_ref|| / ||X_ref||, against our float64 direct solution (cases 1-3: the ``ours direct`` run
of the first repeat, or a separate child when ours is not run) or our float64 CG at rtol 1e-10
(case 4, where H does not fit; the JSON ``reference`` field says which).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from machine import utc_now

from . import ours
from .base import normalisations, normalise, settings_for
from .cases import Case, prepare_case

BENCHMARKS = Path(__file__).resolve().parents[1]
ROOT = BENCHMARKS.parent
SCRIPT = BENCHMARKS / "peers.py"  # the command line; ``--child SPEC`` runs :mod:`.child`
REFERENCE_TIME_LIMIT = 3600.0


@dataclass
class Job:
    case: Case
    system: str
    solver: str
    repeat: int
    settings: dict[str, Any]
    device: str = "cpu"  # --device: where the child computes


def child_spec(job: Job, case_dir: Path, out: Path, threads: int) -> dict[str, Any]:
    """What a child reads (``--child SPEC``): the case, the run, its settings and device."""
    return {
        "case": asdict(job.case),
        "case_dir": str(case_dir),
        "system": job.system,
        "solver": job.solver,
        "settings": job.settings,
        "device": job.device,
        "threads": threads,
        "out_dir": str(out),
    }


def kill_group(proc: subprocess.Popen) -> None:
    """Kill the child's process group (it runs in its own session) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_child(job: Job, case_dir: Path, workdir: Path, threads: int, limit: float) -> dict:
    """One child process; its result dict (with ``matrix``/``s_dot_theta`` paths) or a failure."""
    tag = f"{job.case.number}-{job.system}-{job.solver}-{job.repeat}"
    out = workdir / tag
    out.mkdir(parents=True, exist_ok=True)
    spec_path = out / "spec.json"
    spec_path.write_text(json.dumps(child_spec(job, case_dir, out, threads)))
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    log_path = out / "child.log"
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--child", str(spec_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            return {"error": f"timed out: killed after {limit:.0f} s", "timed_out": True}
        except BaseException:  # Ctrl-C or SIGTERM of the parent: take the child down with it
            kill_group(proc)
            raise
    wall = time.perf_counter() - start
    return child_result(out, log_path, rc, wall)


def child_result(out: Path, log_path: Path, rc: int, wall: float) -> dict:
    """What a finished child left in ``out``, or a crash with the tail of its log."""
    result_path = out / "result.json"
    if not result_path.exists():
        tail = log_path.read_text()[-600:].strip().replace("\n", " | ")
        return {"error": f"crashed (return code {rc}) after {wall:.0f} s: {tail}"}
    result = json.loads(result_path.read_text())
    result["child_wall_seconds"] = wall
    if (out / "matrix.npy").exists():
        result["matrix_path"] = str(out / "matrix.npy")
    if (out / "s_dot_theta.npy").exists():
        result["s_dot_theta_path"] = str(out / "s_dot_theta.npy")
    return result


# ----- accuracy ----------------------------------------------------------------------------------
def normalised_matrix(result: dict, system: str, case_record: dict) -> np.ndarray | None:
    """A child's matrix mapped onto I_ref, or None where it left none."""
    if "matrix_path" not in result:
        return None
    raw = np.load(result["matrix_path"])
    s_dot = np.load(result["s_dot_theta_path"]) if "s_dot_theta_path" in result else None
    return normalise(
        system, raw, n_train=case_record["n_train"], l2=case_record["l2"], s_dot_theta=s_dot
    )


def agreement(matrix: np.ndarray, reference: np.ndarray) -> tuple[float | None, float | None]:
    """(Pearson r over all entries, relative Frobenius error); None where not finite."""
    from scipy.stats import pearsonr

    a, b = np.ravel(matrix), np.ravel(reference)
    if a.shape != b.shape or not np.isfinite(a).all():
        return None, None
    rel = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    r = float(pearsonr(a, b).statistic) if np.std(a) > 0 else None
    return r, rel


def compare(result: dict, matrix: np.ndarray | None, reference: np.ndarray | None) -> None:
    """Record in ``result`` how ``matrix`` agrees with ``reference``, and whether it diverged."""
    if matrix is None:
        return
    if reference is None:
        result["no_reference"] = "no reference to compare with: the reference run failed"
        return
    result["pearson"], result["rel_err"] = agreement(matrix, reference)
    finite = np.isfinite(matrix)
    result["has_inf"] = bool(np.isinf(matrix).any())
    top = float(np.abs(matrix[finite]).max()) if finite.any() else math.nan
    result["max_abs_entry"] = top
    ref_top = float(np.abs(reference).max())
    if not finite.all() or result["rel_err"] is None or top > 1e6 * ref_top:
        result["diverged"] = (
            f"diverged: largest |entry| {top:.3g} against {ref_top:.3g} in the "
            f"reference{'; non-finite entries' if not finite.all() else ''}"
        )


# ----- rows --------------------------------------------------------------------------------------
def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(vals) if vals else None


def build_row(case: Case, record: dict, system: str, solver: str, runs: list[dict]) -> dict:
    """The JSON row of one (system, solver) of a case, from its runs' results."""
    ok = [r for r in runs if r.get("seconds") is not None and "error" not in r]
    row: dict[str, Any] = {
        "case": case.number,
        "case_name": case.name,
        "system": system,
        "solver": solver,
        "seconds": _median([r["seconds"] for r in ok]),
        "pearson_vs_exact": _median([r.get("pearson") for r in ok]),
        "rel_err_vs_exact": _median([r.get("rel_err") for r in ok]),
        "peak_mb": max((r["peak_mb"] for r in ok), default=None),
        "rss_before_mb": _median([r.get("rss_before_mb") for r in ok]),
        "peak_scope": ok[0]["peak_scope"] if ok else None,
        "device": runs[0].get("device", "cpu") if runs else "cpu",
        "has_nan": any(r.get("has_nan") for r in runs),
        "has_inf": any(r.get("has_inf") for r in runs),
        "runs_seconds": [r.get("seconds") if r in ok else None for r in runs],
        "repeats": len(runs),
        "n_train": record["n_train"],
        "n_test": record["n_test"],
        "n_params": record["n_params"],
        "settings": runs[0]["settings"] if runs else None,
        "normalisation": normalisations()[system],
    }
    add_details(row, runs, ok)
    return row


def add_details(row: dict, runs: list[dict], ok: list[dict]) -> None:
    """The row's optional fields: memory increments, defaults, child overheads, diagnostics,
    warnings, and the notes of its failures."""
    if row["peak_mb"] is not None and row["rss_before_mb"] is not None:
        row["peak_increment_mb"] = row["peak_mb"] - row["rss_before_mb"]
    gpu_peaks = [r["peak_gpu_mb"] for r in ok if r.get("peak_gpu_mb") is not None]
    if gpu_peaks:
        row["peak_gpu_mb"] = max(gpu_peaks)
    if ok and ok[0].get("defaults"):
        row["constructor_defaults"] = ok[0]["defaults"]
    if ok:
        row["child_wall_seconds"] = _median([r.get("child_wall_seconds") for r in ok])
        row["child_phases_seconds"] = ok[0].get("child_phases_seconds")
    if ok and ok[0].get("diagnostics"):
        row["diagnostics"] = ok[0]["diagnostics"]
    warns = sorted({w for r in runs for w in r.get("warnings", [])})
    if warns:
        row["warnings"] = warns[:5]
    if any(r.get("timed_out") for r in runs):
        row["timed_out"] = True
    notes = sorted({r[k] for r in runs for k in ("error", "diverged", "no_reference") if k in r})
    if notes:
        row["note"] = "; ".join(notes)
    if row["has_nan"]:
        row["note"] = "; ".join(filter(None, [row.get("note"), "NaN in the result"]))


# ----- a case ------------------------------------------------------------------------------------
@dataclass
class CaseRun:
    """One case's trained model (its ``record``) and where and how its children run."""

    case: Case
    record: dict[str, Any]
    case_dir: Path
    workroot: Path
    threads: int
    time_limit: float
    device: str
    measured: str  # when its rows were measured

    def settings(self, system: str, solver: str) -> dict[str, Any]:
        case = self.case
        return settings_for(
            system,
            solver,
            l2=case.l2,
            damping=case.damping,
            n=self.record["n_train"],
            p=self.record["n_params"],
            batch_size=case.batch_size,
            rank=case.rank,
            our_lissa=ours.LISSA_STOCHASTIC if case.number == 4 else ours.LISSA,
            device=self.device,
        )

    def job(self, system: str, solver: str, repeat: int) -> Job:
        return Job(self.case, system, solver, repeat, self.settings(system, solver), self.device)

    def reference(self, ref_solver: str) -> np.ndarray | None:
        """A separate, untimed child of ours that computes the reference (None if it fails)."""
        number = self.case.number
        print(f"case {number}: reference ({ref_solver}) ...", file=sys.stderr, flush=True)
        limit = max(self.time_limit, REFERENCE_TIME_LIMIT)
        job = self.job("ours", ref_solver, 0)
        result = run_child(job, self.case_dir, self.workroot, self.threads, limit)
        reference = normalised_matrix(result, "ours", self.record)
        self.record["reference_run"] = {
            k: result.get(k) for k in ("seconds", "error", "diagnostics", "peak_mb")
        }
        if reference is None:
            self.record["reference_error"] = result.get("error")
        return reference

    def measure(self, system: str, solver: str, repeat: int) -> tuple[dict, np.ndarray | None]:
        """One timed child: its result (with its settings and device) and normalised matrix."""
        job = self.job(system, solver, repeat)
        result = run_child(job, self.case_dir, self.workroot, self.threads, self.time_limit)
        result["settings"], result["device"] = job.settings, job.device
        return result, normalised_matrix(result, system, self.record)

    def rows(self, results: dict[tuple[str, str], list[dict]]) -> list[dict]:
        """The rows of every (system, solver) run so far."""
        return [
            {**build_row(self.case, self.record, s, v, rs), "time_limit_seconds": self.time_limit,
             "measured": self.measured}
            for (s, v), rs in results.items() if rs
        ]  # fmt: skip


def start_case(case: Case, case_dir: Path, report: dict) -> dict | None:
    """Train the case and enter its record into ``report``; None (and the error entered
    instead) where that fails."""
    try:
        record = prepare_case(case, case_dir)
    except Exception as err:  # data missing, training failed: report it, run the next case
        report["cases"][str(case.number)] = {
            "name": case.name,
            "error": f"{type(err).__name__}: {err}",
        }
        return None
    earlier_record = report["cases"].get(str(case.number))
    if earlier_record and "training" in earlier_record:  # rows kept from a run before this one
        record["earlier_training"] = earlier_record["training"]
    report["cases"][str(case.number)] = record
    return record


def reference_label(ref_solver: str) -> str:
    if ref_solver == "direct":
        return "our float64 direct solve (Cholesky of the assembled H)"
    return (
        f"our float64 conjugate gradient at rtol {ours.REFERENCE_CG['rtol']:g} "
        f"(maxiter {ours.REFERENCE_CG['maxiter']}): H does not fit for a direct solve"
    )


def run_case(case: Case, args, threads: int, workroot: Path, report: dict, save, tqdm) -> None:
    """Every selected (system, solver) of ``case``, ``--repeats`` times, its rows replacing
    those of the same keys in ``report``, saved after each child."""
    repeats = args.repeats or case.repeats
    case = dataclasses.replace(case, repeats=repeats, n_test=args.n_test or case.n_test)
    runs = [(s, v) for s, v in case.runs if s in args.system_list and v in args.solver_list]
    if not runs:
        return
    print(f"case {case.number} {case.name}: training ...", file=sys.stderr, flush=True)
    case_dir = workroot / f"case{case.number}"
    record = start_case(case, case_dir, report)
    if record is None:
        save(complete=False)
        return
    run = CaseRun(
        case, record, case_dir, workroot, threads, args.time_limit, str(args.device), utc_now()
    )
    # The reference: our direct solve when it is among the runs (it runs first and is timed as a
    # row too), else a separate untimed child: direct (cases 1-3) or tight CG (case 4).
    ref_solver = "direct" if case.reference == "direct" else "reference_cg"
    in_runs = ("ours", ref_solver) in runs
    if in_runs:
        runs.remove(("ours", ref_solver))
        runs.insert(0, ("ours", ref_solver))
    label = reference_label(ref_solver)
    report["reference"][str(case.number)] = label + ", normalised as I_ref (no L2 in g_i)"
    reference = None if in_runs else run.reference(ref_solver)
    run_repeats(run, runs, ref_solver if in_runs else None, reference, report, save, tqdm)


def run_repeats(run: CaseRun, runs, ref_solver, reference, report, save, tqdm) -> None:
    """Every repeat of every run of ``run``'s case; our ``ref_solver`` (None: the reference was
    computed apart) gives the reference as it comes."""
    case = run.case
    results: dict[tuple[str, str], list[dict]] = {key: [] for key in runs}
    bar = tqdm(total=case.repeats * len(runs), desc=f"case {case.number}", file=sys.stderr)
    for repeat in range(case.repeats):
        for system, solver in runs:
            if any(r.get("timed_out") for r in results[(system, solver)]):
                bar.update()  # it would time out again: its row says killed at the limit
                continue
            bar.set_postfix_str(f"{system} {solver}")
            result, matrix = run.measure(system, solver, repeat)
            if reference is None and (system, solver) == ("ours", ref_solver):
                reference = matrix
            compare(result, matrix, reference)
            for key in ("matrix_path", "s_dot_theta_path"):
                with contextlib.suppress(KeyError, OSError):
                    Path(result.pop(key)).unlink()
            results[(system, solver)].append(result)
            replace_rows(report, case.number, run.rows(results))
            save(complete=False)
            bar.update()
            print(progress_line(case, system, solver, repeat, result), file=sys.stderr, flush=True)
    bar.close()


def replace_rows(report: dict, number: int, redone: list[dict]) -> None:
    """``redone`` in place of ``report``'s rows of case ``number`` with the same keys."""
    keys = {(r["system"], r["solver"]) for r in redone}
    report["results"] = [
        r
        for r in report["results"]
        if r["case"] != number or (r["system"], r["solver"]) not in keys
    ] + redone


def progress_line(case: Case, system: str, solver: str, repeat: int, result: dict) -> str:
    secs = result.get("seconds")
    done = secs is not None and "error" not in result
    outcome = f"{secs:.3f} s" if done else f"failed: {result.get('error', '')[:120]}"
    return f"  case {case.number} {system} {solver} #{repeat}: {outcome}"
