"""Influence against the proximal Bregman response (PBRF) and against leave-one-out, side by side.

Bae et al. (NeurIPS 2022) show that on networks influence functions track the PBRF rather than
leave-one-out (LOO). For each (model, regime) of ``benchmarks/lds_models.py`` asked for (default:
the digits 64-64-10 ReLU MLP and the small tanh CNN, both "practitioner"-trained: Adam lr 1e-3,
weight decay 1e-4, ``--epochs`` 20 epochs of batches of 64, seed 0), every (solver, Hessian) of
``lds.methods`` at damping "auto" and at the fixed ``--damping`` (default 0.1: the smallest rung of
the ladder at which the exact Hessian of both practitioner models is positive definite, lambda_min
-0.049 for the MLP and -0.02 for the CNN) scores the same removed training points on the same test
points, and two Pearson R are reported per row:

- ``pbrf_r`` = R(predicted, PBRF actual) over the removed points. predicted[t, m] =
  ``predicted_removal_effect`` = -(1/n) I_up,loss(z_m, z_t) of that row's Influence (l2 = the
  regime's, 1e-4 for the practitioner). PBRF actual[t, m] = L(z_t, theta_m) - L(z_t, theta_s),
  theta_m the PBRF minimiser (``influence_widgets.analysis.pbrf``) at epsilon = -1/n and
  lam = l2 + the row's damping ("matched damping"). Same sign and scale as predicted, equal to it
  to first order in 1/n for hessian="gauss-newton" with an exact solve (direct, or cg converged):
  the rows that say whether "our numbers are right". Target: pbrf_r >= 0.95 for direct and cg with
  the Gauss-Newton Hessian at the fixed damping.
- ``loo_r`` = R(predicted, LOO actual). LOO actual[t, m] = L(z_t, theta_-m) - L(z_t, theta_base)
  with theta_-m retrained FROM SCRATCH without z_m by the regime's own recipe and seed (the
  practitioner's notion of leave-one-out: a new run, new batches) and theta_base the same recipe on
  all n points (= theta_s: the recipe is deterministic, ``baseline_drift`` checks it).
  ``--loo warm`` instead retrains warm-started from theta_s by L-BFGS on the n - 1 points' risk
  (``iw.actual_removal_effects``, as ``validate_loo``), meaningful for the "minimum" regime only.
  A low loo_r beside a high pbrf_r says "the model is not convex", not "the numbers are wrong".

Removed points: the ``--n-top`` training points of largest max_t |predicted[t, m]| by the reference
(direct, gauss-newton, fixed damping) and ``--n-random`` drawn uniformly (seed ``--seed``) from the
rest, the same for every row of a (model, regime). R is the mean over the ``--n-test`` test points
(the first ones of the test split) of each test point's R. PBRF solves that diverged (no minimiser
near theta_s: common at lam = l2 = 1e-4, the Gauss-Newton "auto" damping being 0) or stopped at
``--pbrf-max-iter`` are left out of pbrf_r; each row says how many were used and the largest
||grad F_m|| among them (a "stalled" solve, on a kink of the ReLU MLP's piecewise-smooth F_m,
keeps a gradient that cannot reach ``--tol``). Every solver is built as in ``lds.py``
(``our_solver``): its defaults, but LiSSA ``--lissa-depth`` steps on batches of ``--lissa-batch``
(dattri's 1,000 and 100) and CG at most ``--cg-maxiter`` iterations, by default CG's own 1,000
(to a relative residual of 1e-10: the target is about exact solves, where lds.py takes dattri's
budget of 100); the solvers' convergence and residuals are in the rows.

    .venv/bin/python benchmarks/pbrf.py --json benchmarks/results/lds.json
    .venv/bin/python benchmarks/pbrf.py --runs digits_mlp:minimum --json benchmarks/results/lds.json

writes its report under the top-level key "pbrf" of that file, keeping every other key as it is;
a run replaces the runs and rows of its own (model, regime) pairs and keeps the others, so the
second command adds the MLP trained to a minimum (L-BFGS, l2 = 1e-2, ``--max-iter`` 300) beside
the default run. The CNN's "minimum" regime is left out: its 40 from-scratch L-BFGS retrains take
hours.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from lds import methods, our_solver
from lds_models import CASES, regime, train_model
from machine import machine_info
from scipy.stats import spearmanr

import influence_widgets as iw
from influence_widgets.analysis.pbrf import PBRF

TARGET = 0.95
EXACT_SOLVERS = ("direct", "cg")
REFERENCE = ("direct", "gauss-newton")
USED = ("converged", "stalled")  # the PBRF solves that R is computed over
SHARED_NOTE = (
    "2 CPU cores shared with other jobs while this ran: seconds are upper bounds, not timings; "
    "the R values do not depend on the load"
)


# ----- the three sides: predictions, PBRF, leave-one-out -----------------------------------------
def predict(model, case, l2: float, solver: str, hessian: str, damping, settings: dict) -> dict:
    """One method's predictions (T, n) and what it computed; ``error`` instead when its
    H + damping I is not positive definite."""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", iw.InfluenceWarning)  # not a minimum: expected
            inf = iw.Influence(
                model, (case.X, case.y), l2=l2, damping=damping, hessian=hessian,
                solver=our_solver(solver, settings), progress=False,
            )  # fmt: skip
            scores = inf.predicted_removal_effect(case.x_test, case.y_test)
    except iw.NotPositiveDefiniteError as err:
        return {"solver": solver, "hessian": hessian, "error": str(err)}
    d = inf.diagnostics
    return {
        "solver": solver,
        "hessian": hessian,
        "damping_mode": "auto" if damping == "auto" else "fixed",
        "damping": float(inf.damping),
        "predicted": scores.detach().double().numpy(),
        "seconds": time.perf_counter() - start,
        "solver_converged": d.converged,
        "solver_residual": d.residual,
    }


def removed_points(reference: np.ndarray, n_top: int, n_random: int, seed: int) -> np.ndarray:
    """The n_top indices of largest max_t |reference[t, m]|, then n_random others drawn
    uniformly with ``seed``."""
    top = np.argsort(-np.abs(reference).max(axis=0), kind="stable")[:n_top]
    rest = np.setdiff1d(np.arange(reference.shape[1]), top)
    rng = np.random.default_rng(seed)
    return np.concatenate([top, rng.choice(rest, size=min(n_random, len(rest)), replace=False)])


def losses_on_test(model: torch.nn.Module, case) -> np.ndarray:
    """L(z_t, theta) of ``model`` on the case's test points, (T,)."""
    with torch.no_grad():
        out = model(case.x_test)
        return torch.nn.functional.cross_entropy(out, case.y_test, reduction="none").numpy()


def loo_actual(model, case, train_fn, l2: float, removed, settings: dict) -> dict:
    """LOO actual (m, T) for the removed points, and how it was retrained."""
    start = time.perf_counter()
    if settings["loo"] == "warm":
        effects, drift = iw.actual_removal_effects(
            model, (case.X, case.y), case.x_test, case.y_test, removed.tolist(), l2=l2,
            max_iter=settings["max_iter"], progress=False,
        )  # fmt: skip
        actual, drift = effects.numpy(), drift.numpy()
    else:
        base = losses_on_test(train_fn(case.make, case.X, case.y, 0), case)
        drift = base - losses_on_test(model, case)
        keep = np.ones(len(case.X), dtype=bool)
        rows = []
        for m in removed:
            keep[m] = False
            rows.append(losses_on_test(train_fn(case.make, case.X[keep], case.y[keep], 0), case))
            keep[m] = True
        actual = np.stack(rows) - base
    return {
        "actual": actual,
        "retrain": "warm start (L-BFGS)" if settings["loo"] == "warm" else "from scratch, seed 0",
        "baseline_drift": float(np.abs(drift).max()),
        "seconds": time.perf_counter() - start,
    }


def pbrf_actual(pbrf: PBRF, case, removed, damping: float) -> dict:
    """PBRF actual (m, T) at lam = l2 + damping, NaN where the solve did not end at a minimiser
    it could certify (status "converged", or "stalled": F_m no longer falls, at a kink of a ReLU
    network), and how the solves ended."""
    start = time.perf_counter()
    responses = [pbrf.response(int(m), case.x_test, case.y_test, damping) for m in removed]
    statuses = [r.status for r in responses]
    used = [r.status in USED for r in responses]
    actual = np.stack([r.test_change if ok else r.test_change * np.nan
                       for r, ok in zip(responses, used, strict=True)])  # fmt: skip
    norms = [r.grad_norm for r, ok in zip(responses, used, strict=True) if ok]
    return {
        "damping": damping,
        "lambda": pbrf.influence.objective.l2 + damping,
        "actual": actual,
        "grad_norm_max": max(norms) if norms else None,
        "status_counts": {s: statuses.count(s) for s in sorted(set(statuses))},
        "iterations_max": max(r.iterations for r in responses),
        "seconds": time.perf_counter() - start,
    }


# ----- correlations and rows ---------------------------------------------------------------------
def correlate(predicted: np.ndarray, actual: np.ndarray) -> dict:
    """Pearson and Spearman R of predicted (m, T) against actual (m, T) per test point over the
    removed points where both are finite, and the slope of actual on predicted through the origin,
    sum(p a) / sum(p p) (1 when the scale is right); their means over the test points."""
    pearson, spearman, slope, used = [], [], [], []
    for t in range(predicted.shape[1]):
        ok = np.isfinite(actual[:, t]) & np.isfinite(predicted[:, t])
        p, a = predicted[ok, t], actual[ok, t]
        good = ok.sum() >= 3 and np.ptp(p) > 0 and np.ptp(a) > 0
        pearson.append(float(np.corrcoef(p, a)[0, 1]) if good else float("nan"))
        spearman.append(float(spearmanr(p, a)[0]) if good else float("nan"))
        slope.append(float(p @ a / (p @ p)) if good else float("nan"))
        used.append(int(ok.sum()))
    return {
        "r": float(np.mean(pearson)),
        "spearman": float(np.mean(spearman)),
        "slope": float(np.mean(slope)),
        "r_per_test": pearson,
        "used": min(used),
    }


def row(pred: dict, pbrf: dict, loo: dict, removed, context: dict) -> dict:
    """One JSON row: a method's predictions on the removed points against its PBRF and LOO."""
    predicted = pred["predicted"][:, removed].T  # (m, T)
    by_pbrf, by_loo = correlate(predicted, pbrf["actual"]), correlate(predicted, loo["actual"])
    target = pred["solver"] in EXACT_SOLVERS and pred["hessian"] == "gauss-newton"
    target = target and pred["damping_mode"] == "fixed"
    return {
        **context,
        "solver": pred["solver"],
        "hessian": pred["hessian"],
        "damping_mode": pred["damping_mode"],
        "damping": pred["damping"],
        "lambda": pbrf["lambda"],
        "pbrf_r": by_pbrf["r"],
        "loo_r": by_loo["r"],
        "pbrf_spearman": by_pbrf["spearman"],
        "loo_spearman": by_loo["spearman"],
        "pbrf_slope": by_pbrf["slope"],
        "loo_slope": by_loo["slope"],
        "pbrf_r_per_test": by_pbrf["r_per_test"],
        "loo_r_per_test": by_loo["r_per_test"],
        "n_removed": len(removed),
        "pbrf_n_used": by_pbrf["used"],
        "n_test": predicted.shape[1],
        "seconds": pred["seconds"],
        "pbrf_grad_norm_max": pbrf["grad_norm_max"],
        "pbrf_status_counts": pbrf["status_counts"],
        "solver_converged": pred["solver_converged"],
        "solver_residual": pred["solver_residual"],
        "target": f">= {TARGET}" if target else None,
        "met": bool(by_pbrf["r"] >= TARGET) if target else None,
    }


# ----- one (model, regime) -----------------------------------------------------------------------
def predict_all(model, case, l2: float, label: str, settings: dict) -> list[dict]:
    """Every (solver, Hessian) at damping "auto" and at the fixed damping; then the reference
    (direct, gauss-newton, fixed damping) that picks the removed points, last."""
    preds = []
    for damping in ("auto", settings["damping"]):
        for solver, hessian in methods(settings["solvers"], settings["hessians"]):
            preds.append(predict(model, case, l2, solver, hessian, damping, settings))
            seconds = preds[-1].get("seconds", float("nan"))
            print(f"  {label} {solver} ({hessian}) damping {damping}: {seconds:.1f} s", flush=True)
    reference = [p for p in preds if (p["solver"], p["hessian"]) == REFERENCE
                 and p.get("damping_mode") == "fixed"]  # fmt: skip
    if not reference:
        reference = [predict(model, case, l2, *REFERENCE, settings["damping"], settings)]
    return preds + reference[:1]


def run_case(case, regime_name: str, settings: dict) -> tuple[dict, list[dict]]:
    """The summary and the rows of one (model, regime)."""
    label = f"{case.name} {regime_name}"
    train_fn, l2, recipe = regime(regime_name, settings["epochs"], settings["max_iter"])
    start = time.perf_counter()
    model = train_model(case, train_fn)
    train_seconds = time.perf_counter() - start
    *preds, reference = predict_all(model, case, l2, label, settings)
    removed = removed_points(
        reference["predicted"], settings["n_top"], settings["n_random"], settings["seed"]
    )
    loo = loo_actual(model, case, train_fn, l2, removed, settings)
    print(f"  {label}: LOO in {loo['seconds']:.0f} s", flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", iw.InfluenceWarning)
        pbrf = PBRF(iw.Influence(model, (case.X, case.y), l2=l2, progress=False),
                    tol=settings["tol"], max_iter=settings["pbrf_max_iter"])  # fmt: skip
    responses = {}
    for d in sorted({p["damping"] for p in preds if "error" not in p}):
        responses[d] = pbrf_actual(pbrf, case, removed, d)
        print(f"  {label}: PBRF at damping {d:g} in {responses[d]['seconds']:.0f} s", flush=True)
    context = {"model": case.name, "regime": regime_name}
    summary = {
        **context,
        "recipe": recipe,
        "l2": l2,
        "n_train": len(case.X),
        "n_params": pbrf.theta_s.numel(),
        "train_seconds": train_seconds,
        "removed": removed.tolist(),
        "loo": {k: v for k, v in loo.items() if k != "actual"},
        "pbrf": [
            {
                **{k: v for k, v in r.items() if k != "actual"},
                "pbrf_vs_loo_r": correlate(r["actual"], loo["actual"])["r"],
            }
            for r in responses.values()
        ],  # fmt: skip
        "errors": [{**context, **p} for p in preds if "error" in p],
    }
    ok = [p for p in preds if "error" not in p]
    return summary, [row(p, responses[p["damping"]], loo, removed, context) for p in ok]


# ----- report, JSON, command line ----------------------------------------------------------------
def markdown(section: dict) -> str:
    """The Markdown table of a "pbrf" section: one line per row."""
    lines = [
        f"`{section['command']}`",
        "",
        "| model | regime | method | damping | lambda | pbrf_r | PBRF slope | loo_r | PBRF used "
        "| seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in section["rows"]:
        met = "" if r["met"] is None else (" (met)" if r["met"] else " (MISSED)")
        lines.append(
            f"| {r['model']} | {r['regime']} | {r['solver']} ({r['hessian']}) | "
            f"{r['damping_mode']} {r['damping']:g} | {r['lambda']:.4g} | {r['pbrf_r']:.3f}{met} | "
            f"{r['pbrf_slope']:.3f} | "
            f"{r['loo_r']:.3f} | {r['pbrf_n_used']}/{r['n_removed']} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def run(settings: dict) -> dict:
    """The "pbrf" section: every (model, regime) asked for, each run with its command, settings,
    machine (read at its end, with the load average), note, and wall and CPU seconds."""
    torch.set_num_threads(settings["threads"])
    facts = ("cpu", "cores", "usable_cores", "threads", "torch", "python", "platform", "date")
    machine = machine_info(*facts, "load_average_start")
    common = {k: v for k, v in settings.items() if k not in ("command", "runs")}
    summaries, rows = [], []
    for pair in settings["runs"]:
        name, regime_name = pair.split(":")
        wall, cpu = time.perf_counter(), time.process_time()
        summary, case_rows = run_case(CASES[name](settings["n_test"]), regime_name, settings)
        summaries.append({
            **summary, "command": settings["command"], "settings": common,
            "machine": {**machine_info(*facts), "load_average_end": list(os.getloadavg())},
            "note": SHARED_NOTE if settings["shared"] else None,
            "total_seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu,
        })  # fmt: skip
        rows += case_rows
    return {
        "command": settings["command"],
        "machine": {**machine, "load_average_end": list(os.getloadavg())},
        "note": SHARED_NOTE if settings["shared"] else None,
        "runs": summaries,
        "rows": rows,
    }


def write_section(path: Path, section: dict) -> None:
    """Put ``section`` under the key "pbrf" of the JSON at ``path``, every other key kept. The
    runs and rows of (model, regime) pairs that ``section`` does not hold are kept from the
    "pbrf" section already there; ``commands`` lists the commands of every run kept."""
    report = json.loads(path.read_text()) if path.exists() else {}
    old = report.get("pbrf") or {}
    fresh = {(r["model"], r["regime"]) for r in section["runs"]}

    def kept(items: list[dict]) -> list[dict]:
        return [r for r in items if (r["model"], r["regime"]) not in fresh]

    runs = kept(old.get("runs", [])) + section["runs"]
    report["pbrf"] = {
        **section,
        "commands": list(dict.fromkeys(r["command"] for r in runs)),
        "runs": runs,
        "rows": kept(old.get("rows", [])) + section["rows"],
    }
    path.write_text(json.dumps(report, indent=1) + "\n")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="digits_mlp:practitioner,digits_cnn:practitioner",
                   help="model:regime pairs (regimes: minimum, practitioner)")  # fmt: skip
    p.add_argument("--solvers", default="direct,cg,lissa,arnoldi,ekfac")
    p.add_argument("--hessians", default="exact,gauss-newton")
    p.add_argument("--damping", type=float, default=0.1, help="the fixed (matched) damping")
    p.add_argument("--n-top", type=int, default=20)
    p.add_argument("--n-random", type=int, default=20)
    p.add_argument("--n-test", type=int, default=1)
    p.add_argument("--loo", choices=("scratch", "warm"), default="scratch")
    p.add_argument("--epochs", type=int, default=20, help="practitioner regime's epochs")
    p.add_argument("--max-iter", type=int, default=300, help="minimum regime's L-BFGS limit")
    p.add_argument("--tol", type=float, default=1e-10, help="PBRF: ||grad F_m|| to stop at")
    p.add_argument("--pbrf-max-iter", type=int, default=100, help="PBRF: L-BFGS iterations")
    p.add_argument("--lissa-depth", type=int, default=1000, help="as lds.py: LiSSA's steps")
    p.add_argument("--lissa-batch", type=int, default=100, help="as lds.py: LiSSA's batch size")
    p.add_argument("--cg-maxiter", type=int, default=1000, help="CG's limit (its own default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--shared", action="store_true", help="note in the JSON: a shared machine")
    p.add_argument("--json", type=Path, default=None, help="the lds.json to add 'pbrf' to")
    return p.parse_args(argv)


def settings_of(args: argparse.Namespace, argv: list[str]) -> dict:
    """The run's settings from the command line (lists split at commas)."""
    split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    return {
        "runs": split(args.runs),
        "solvers": split(args.solvers),
        "hessians": split(args.hessians),
        **{k: getattr(args, k) for k in ("damping", "n_top", "n_random", "n_test", "loo")},
        **{k: getattr(args, k) for k in ("epochs", "max_iter", "tol", "pbrf_max_iter")},
        **{
            k: getattr(args, k)
            for k in ("lissa_depth", "lissa_batch", "cg_maxiter", "seed", "threads")
        },
        "shared": args.shared,
        "command": shlex.join(["python", "benchmarks/pbrf.py", *argv]),
    }


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    section = run(settings_of(parse(argv), argv))
    print(markdown(section))
    args = parse(argv)
    if args.json:
        write_section(args.json, section)
        print(f"wrote the 'pbrf' section of {args.json}")
    return section


if __name__ == "__main__":
    main()
