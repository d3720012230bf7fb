"""Speed and memory of the influence core, per solver: fit, 100 test points, one click.

What is measured (float64 models, on the CPU unless ``--device cuda``, wall-clock time with
``time.perf_counter``; on a GPU every timed call ends with ``torch.cuda.synchronize()``):

* ``digits_lr``: 10-class logistic regression with bias on the built-in digits (1,300 training
  points, 650 parameters, l2 = 0.01), trained once with ``iw.train``. For each solver (direct, cg,
  ``iw.LiSSA()`` with its defaults, ``iw.Arnoldi(rank=50)``, which is low rank and so approximate)
  a fresh ``Influence`` is built and fitted (``fit_seconds``); then one warm-up click (test
  point 0), ``influence_on_loss`` for 100 test points against all training points
  (``all_test_seconds``), and 10 clicks of one test point each on 10 other test points, as the
  explorer does (``click_seconds``: the median). Each solver's 100 x 1,300 matrix is compared
  with direct's (Pearson r and relative Frobenius error).
* ``naive``: the same 100 x 1,300 matrix the textbook way with torch.func on the same model:
  per-sample training gradients (vmap(grad) of L(z_i) + (l2/2)||theta||^2), the Hessian of the
  full-data risk (torch.func.hessian), torch.linalg.solve for the 100 test gradients and a product
  with the training gradients. Timed end to end against the package's exact path (new
  ``Influence(solver="direct")``, ``fit()``, ``influence_on_loss`` for the 100 test points), median
  of 3 alternating runs; the two matrices must agree to a relative error below 1e-8.
* ``cnn``: ``iw.models.small_cnn`` on digits (1,954 parameters, l2 = 1e-3), trained once, the four
  solvers as above with damping = 0.01 (the paper's CNN damping: at the L-BFGS stopping point H has
  a slightly negative eigenvalue, so undamped direct and CG refuse it).
* ``paper``: the scale of the paper's Fig 2: Fashion-MNIST logistic regression, 55,000 training
  points, 784 features, 10 classes, no bias (7,840 parameters), l2 = 0.01; solvers direct and cg.

Iterative solvers (cg, lissa) are timed on 10 test points first; when 10 times that passes the
query budget (120 s, 20 s with --quick) it is reported, scaled, as the 100-point time and the row
says ``extrapolated_from`` (if even 10 points run past twice the budget, the warm-up click is
scaled). Linear scaling overestimates: a solve for many test points shares passes over the data.
A warm-up click that runs past the budget is stopped and reported as a lower bound; slow clicks are
timed fewer than 10 times (``clicks``). Peak memory per (case, solver) covers building, fitting and
all queries: the kernel's peak-RSS mark is reset before the phase (5 written to
/proc/self/clear_refs) and VmHWM read from /proc/self/status after it; where that is not allowed
the process's lifetime peak (ru_maxrss) is reported and ``peak_rss_scope`` says so. Torch uses as
many threads as this process has cores (``--threads`` overrides); timings on a shared machine are
only indicative.

On a GPU (``--device cuda``) every model is moved there before training, so training, fitting and
queries all run on it; the data stays on the CPU and is moved batch by batch, as a user's would be.
Each row and the machine facts name the device (and the GPU), and each row adds the GPU's peak
allocated memory (``peak_gpu_mb``, ``torch.cuda.max_memory_allocated``) beside the process's RSS.
The JSON is rewritten after every row with ``"complete": false`` (``true`` once the run ends), so a
run stopped from outside (a timeout on a lent GPU machine) keeps the rows it measured.

Run from the repository root:

    .venv/bin/python benchmarks/core_speed.py --json benchmarks/results/core_speed.json
    .venv/bin/python benchmarks/core_speed.py --quick --json /tmp/core_speed_quick.json
    .venv/bin/python benchmarks/core_speed.py --cases cnn --json /tmp/core_speed_cnn.json
    python benchmarks/core_speed.py --device cuda --skip-paper-scale --json core_speed_cuda.json

Flags: ``--quick`` (digits_lr and naive only, 20 s query budget: about a minute),
``--skip-paper-scale``, ``--cases digits_lr,naive,cnn,paper``, ``--solvers direct,cg,lissa,arnoldi``
(a subset of each case's solvers), ``--threads N``, ``--device cpu|cuda|cuda:N`` (default cpu),
``--json PATH``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import signal
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from machine import machine_info, usable_cores
from proc_memory import lifetime_peak_mb, release_freed_memory, reset_peak_rss, status_kb
from torch.func import functional_call, grad, hessian, vmap

import influence_widgets as iw
from influence_widgets.core.model_checks import resolve_device
from influence_widgets.core.solvers import Solver
from influence_widgets.datasets import Dataset

CASES = ("digits_lr", "naive", "cnn", "paper")
ALL_SOLVERS = ("direct", "cg", "lissa", "arnoldi")
ITERATIVE = ("cg", "lissa")
N_TEST = 100  # test points of the all-test query
N_CLICKS = 10  # timed clicks after the warm-up click
PROBE = 10  # test points an iterative solver is timed on before committing to N_TEST
BUDGET_S = 120.0  # longest query an iterative solver may run before we extrapolate
QUICK_BUDGET_S = 20.0
NAIVE_REPEATS = 3
DEVICE = torch.device("cpu")  # where models train and influence is computed (--device)


@dataclass
class Problem:
    """A trained model, its data and the Influence settings of one benchmark case."""

    case: str
    model: torch.nn.Module
    data: Dataset
    l2: float
    damping: float
    solvers: tuple[str, ...]
    training: dict[str, Any]


class Overtime(Exception):
    """A call ran past its time limit."""


# ----- machine and measurement helpers ----------------------------------------------------------
def machine_facts() -> dict[str, Any]:
    """The report's ``machine``: its facts and whether peak RSS is measured per phase here."""
    return {
        **machine_info(
            "cpu", "cores", "usable_cores", "threads", "gpu", "torch", "python", "platform", "date",
            "load_average_start",
        ),
        "device": str(DEVICE),
        "peak_rss_scope": "phase" if reset_peak_rss() else "process lifetime (ru_maxrss)",
    }  # fmt: skip


def synchronize() -> None:
    """Wait for the GPU's queued work (``--device cuda``), so that a timer reads finished work."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


class PeakRSS:
    """Peak resident set size (MB) of this process inside a ``with`` block, and on a GPU its peak
    allocated memory there."""

    def __enter__(self) -> PeakRSS:
        release_freed_memory()
        self.gpu_peak_mb: float | None = None
        if DEVICE.type == "cuda":
            synchronize()
            torch.cuda.reset_peak_memory_stats(DEVICE)
        self.per_phase = reset_peak_rss()
        rss = status_kb("VmRSS")
        self.before_mb = None if rss is None else rss / 1024
        self.peak_mb: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        if DEVICE.type == "cuda":
            synchronize()
            self.gpu_peak_mb = torch.cuda.max_memory_allocated(DEVICE) / 2**20
        if self.per_phase:
            self.peak_mb = status_kb("VmHWM") / 1024
        else:
            self.peak_mb = lifetime_peak_mb()

    def report(self) -> dict[str, Any]:
        return {
            "peak_rss_mb": self.peak_mb,
            "rss_before_mb": self.before_mb,
            "peak_rss_scope": "phase" if self.per_phase else "process lifetime",
            **({"peak_gpu_mb": self.gpu_peak_mb} if DEVICE.type == "cuda" else {}),
        }


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`Overtime` in the main thread after ``seconds`` (Unix; no limit elsewhere)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise Overtime(f"ran past {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    synchronize()
    start = time.perf_counter()
    out = fn()
    synchronize()
    return out, time.perf_counter() - start


def warm_up() -> None:
    """One small fit and query, and one torch.func Hessian, so no timing pays first-call costs."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(40, 5, generator=gen)
    y = torch.arange(40) % 3
    model = iw.models.logistic_regression((5, 3)).to(DEVICE)
    iw.train(model, (X, y), l2=0.1, progress=False)
    for solver in ALL_SOLVERS:
        inf = iw.Influence(model, (X, y), l2=0.1, solver=new_solver(solver), progress=False)
        inf.fit().influence_on_loss(X[:2], y[:2])
    naive_influence(model, X, y, X[:2], y[:2], 0.1)


# ----- the problems ---------------------------------------------------------------------------
def train_model(model: torch.nn.Module, data: Dataset, l2: float) -> dict[str, Any]:
    """Move ``model`` to the device, train it there once with iw.train (full-batch L-BFGS) and
    report how it went."""
    model.to(DEVICE)
    with PeakRSS() as mem:
        report, seconds = timed(lambda: iw.train(model, data, l2=l2, progress=False, max_iter=1000))
    return {
        "seconds": seconds,
        "iterations": report.iterations,
        "grad_norm": report.grad_norm,
        "converged": report.converged,
        "risk": report.risk,
        **mem.report(),
    }


def digits_lr_problem() -> Problem:
    data = iw.datasets.digits()
    model = iw.models.logistic_regression(data, bias=True)
    training = train_model(model, data, 0.01)
    return Problem("digits_lr", model, data, 0.01, 0.0, ALL_SOLVERS, training)


def cnn_problem() -> Problem:
    data = iw.datasets.digits()
    model = iw.models.small_cnn(data)
    training = train_model(model, data, 1e-3)
    return Problem("cnn", model, data, 1e-3, 0.01, ALL_SOLVERS, training)


def paper_problem() -> Problem:
    data, load_seconds = timed(
        lambda: iw.datasets.fashion_mnist(
            n_train=55000, n_test=1000, download=False, progress=False
        )
    )
    model = iw.models.logistic_regression(data, bias=False)
    training = {"load_seconds": load_seconds, **train_model(model, data, 0.01)}
    return Problem("paper", model, data, 0.01, 0.0, ("direct", "cg"), training)


# ----- one solver -----------------------------------------------------------------------------
def new_solver(name: str) -> str | Solver:
    if name == "lissa":
        return iw.LiSSA()
    if name == "arnoldi":
        return iw.Arnoldi(rank=50)
    return name


def new_influence(problem: Problem, solver: str) -> iw.Influence:
    d = problem.data
    return iw.Influence(
        problem.model,
        (d.X_train, d.y_train),
        l2=problem.l2,
        damping=problem.damping,
        solver=new_solver(solver),
        progress=False,
    )


def query(inf: iw.Influence, data: Dataset, start: int, n: int) -> tuple[torch.Tensor, float]:
    """influence_on_loss of test points start..start+n-1 against all training points, timed."""
    X, y = data.X_test[start : start + n], data.y_test[start : start + n]
    return timed(lambda: inf.influence_on_loss(X, y))


def solver_diagnostics(inf: iw.Influence) -> dict[str, Any]:
    """The solver's diagnostics of its latest solve, copied (later solves overwrite them)."""
    s = inf.solver.diagnostics
    return {
        "residual": s.residual,
        "converged": s.converged,
        "iterations": s.iterations,
        "min_eigenvalue": s.min_eigenvalue,
        "max_eigenvalue": s.max_eigenvalue,
        **s.extra,  # LiSSA's scale, Arnoldi's rank and Krylov dimension
    }


def all_test(
    inf: iw.Influence, data: Dataset, iterative: bool, budget: float, warm: float
) -> tuple[torch.Tensor | None, float, int]:
    """The N_TEST-point query: (matrix, seconds, test points actually timed).

    Iterative solvers are first timed on PROBE points (under a deadline of twice the budget; when
    it passes, the warm-up click is scaled instead), then on N_TEST points only when the time scaled
    from PROBE fits the budget. Scaling is linear, an overestimate: columns share data passes.
    """
    if iterative:
        try:
            with deadline(2 * budget):
                matrix, seconds = query(inf, data, 0, PROBE)
        except Overtime:
            return None, warm * N_TEST, 1
        if seconds * N_TEST / PROBE > budget:
            return matrix, seconds * N_TEST / PROBE, PROBE
    matrix, seconds = query(inf, data, 0, N_TEST)
    return matrix, seconds, N_TEST


def measure_queries(
    inf: iw.Influence, data: Dataset, iterative: bool, budget: float, row: dict[str, Any]
) -> torch.Tensor | None:
    """Warm-up click, the all-test query, then the timed clicks; fills ``row``, returns a matrix."""
    hvps = inf.op.hvp_count
    try:
        with deadline(budget):
            first, warm = query(inf, data, 0, 1)
    except Overtime:
        row.update(click_seconds=None, click_lower_bound_seconds=budget, all_test_seconds=None)
        row["hvps_before_stop"] = inf.op.hvp_count - hvps  # progress made within the budget
        row["note"] = f"one click ran past {budget:.0f} s and was stopped; nothing else timed"
        return None
    try:
        matrix, seconds, size = all_test(inf, data, iterative, budget, warm)
    except RuntimeError as err:  # out of memory, say: still time the clicks
        row["all_test_error"] = f"{type(err).__name__}: {err}"
        matrix, seconds, size = None, None, N_TEST
    row["all_test_seconds"] = seconds
    row["extrapolated_from"] = size if size < N_TEST else None
    row.update(solver_diagnostics(inf))
    n_clicks = N_CLICKS if warm * N_CLICKS <= 2 * budget else max(3, int(2 * budget / warm))
    times, iterations = [], []
    for i in range(N_TEST, N_TEST + n_clicks):
        times.append(query(inf, data, i, 1)[1])
        iterations.append(inf.solver.diagnostics.iterations)
    row["click_seconds"] = statistics.median(times)
    row["clicks"] = n_clicks
    if iterative:
        row["click_iterations"] = statistics.median(iterations)
    return first if matrix is None else matrix


def agreement(matrix: torch.Tensor, reference: torch.Tensor) -> dict[str, Any]:
    """Pearson r and relative Frobenius error of ``matrix`` against the reference on the test
    points both have (each holds the first test points, 0, 1, ...)."""
    k = min(len(matrix), len(reference))
    a, b = matrix[:k].reshape(-1), reference[:k].reshape(-1)
    return {
        "pearson_r_vs_direct": float(torch.corrcoef(torch.stack([a, b]))[0, 1]),
        "relative_error_vs_direct": float((a - b).norm() / b.norm()),
        "compared_test_points": k,
    }


def measure_solver(
    problem: Problem, solver: str, budget: float, reference: torch.Tensor | None
) -> tuple[dict[str, Any], torch.Tensor | None]:
    """Fit a fresh Influence with ``solver`` and time its queries; the row and the matrix."""
    d = problem.data
    row: dict[str, Any] = {
        "case": problem.case,
        "solver": solver,
        "device": str(DEVICE),
        "n_train": len(d.y_train),
    }
    matrix = None
    with warnings.catch_warnings(record=True) as caught, PeakRSS() as mem:
        warnings.simplefilter("always")
        inf = new_influence(problem, solver)
        row["n_params"] = inf.p
        row["damping"] = problem.damping
        try:
            _, row["fit_seconds"] = timed(inf.fit)
            row["grad_norm"] = inf.diagnostics.grad_norm
            matrix = measure_queries(inf, d, solver in ITERATIVE, budget, row)
        except Exception as err:  # not positive definite, diverged, out of memory: record it
            row["error"] = f"{type(err).__name__}: {err}"
        del inf
    row.update(mem.report())
    row["warnings"] = sorted({str(w.message) for w in caught})
    if matrix is not None and reference is not None:
        row.update(agreement(matrix, reference))
    return row, matrix


def measure_solvers(
    problem: Problem, budget: float, on_row: Callable[[list[dict[str, Any]]], None]
) -> list[dict[str, Any]]:
    """One row per solver; ``on_row`` gets the rows so far after each."""
    rows, reference = [], None
    for solver in problem.solvers:
        row, matrix = measure_solver(problem, solver, budget, reference)
        if solver == "direct":
            reference = matrix
        rows.append(row)
        on_row(rows)
        print(f"  {problem.case} {solver}: done", file=sys.stderr, flush=True)
    return rows


# ----- the naive exact baseline ---------------------------------------------------------------
def naive_influence(
    model: torch.nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    X_test: torch.Tensor,
    y_test: torch.Tensor,
    l2: float,
) -> torch.Tensor:
    """I_up,loss = -g_test^T H^-1 g_i, (T, n), the textbook way with torch.func (cross-entropy).

    g_i = grad [L(z_i) + (l2/2)||theta||^2] by vmap(grad), H = torch.func.hessian of the full-data
    risk, one torch.linalg.solve for all test gradients; on the model's device.
    """
    named = dict(model.named_parameters())
    first = next(iter(named.values()))
    X, X_test = X.to(first.device, first.dtype), X_test.to(first.device, first.dtype)
    y, y_test = y.to(first.device), y_test.to(first.device)
    shapes = [p.shape for p in named.values()]
    theta = torch.cat([p.detach().reshape(-1) for p in named.values()])

    def unflatten(th: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(th, [s.numel() for s in shapes])
        return {n: t.reshape(s) for n, t, s in zip(named, parts, shapes, strict=True)}

    def loss(th: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, unflatten(th), (x,)), t)

    def test_loss(th: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return loss(th, x[None], t[None])

    def train_term(th: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return test_loss(th, x, t) + 0.5 * l2 * th.dot(th)

    def risk(th: torch.Tensor) -> torch.Tensor:
        return loss(th, X, y) + 0.5 * l2 * th.dot(th)

    G = vmap(grad(train_term), in_dims=(None, 0, 0))(theta, X, y)
    G_test = vmap(grad(test_loss), in_dims=(None, 0, 0))(theta, X_test, y_test)
    H = hessian(risk)(theta)
    return -(G @ torch.linalg.solve(H, G_test.T)).T


def measure_naive(problem: Problem) -> list[dict[str, Any]]:
    """The package's exact path against the naive torch.func one, same model and test points."""
    d = problem.data
    X_test, y_test = d.X_test[:N_TEST], d.y_test[:N_TEST]
    runs: dict[str, Callable[[], torch.Tensor]] = {
        "naive_torch_func": lambda: naive_influence(
            problem.model, d.X_train, d.y_train, X_test, y_test, problem.l2
        ),
        "package_direct": lambda: (
            new_influence(problem, "direct").fit().influence_on_loss(X_test, y_test)
        ),
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    memory: dict[str, dict[str, Any]] = {}
    out: dict[str, torch.Tensor] = {}
    for _ in range(NAIVE_REPEATS):
        for name, fn in runs.items():
            with PeakRSS() as mem:
                out[name], s = timed(fn)
            seconds[name].append(s)
            memory[name] = mem.report()
    ref = out["package_direct"]
    naive_s = statistics.median(seconds["naive_torch_func"])
    package_s = statistics.median(seconds["package_direct"])
    rows = []
    for name in runs:
        rows.append(
            {
                "case": problem.case,
                "solver": name,
                "device": str(DEVICE),
                "n_train": len(d.y_train),
                "n_params": sum(p.numel() for p in problem.model.parameters()),
                "test_points": N_TEST,
                "end_to_end_seconds": statistics.median(seconds[name]),
                "runs_seconds": seconds[name],
                **memory[name],
            }
        )
    rows[0]["relative_error_vs_package"] = float(
        (out["naive_torch_func"] - ref).norm() / ref.norm()
    )
    rows[1]["speedup_over_naive"] = naive_s / package_s
    return rows


# ----- targets and output ---------------------------------------------------------------------
TARGETS = (
    # name, case, solver, key, comparison, threshold
    ("digits_lr direct click (s)", "digits_lr", "direct", "click_seconds", "<", 0.020),
    (
        "exact path speedup over naive torch.func",
        "digits_lr",
        "package_direct",
        "speedup_over_naive",
        ">=",
        2.0,
    ),  # fmt: skip
    (
        "exact path equals naive (relative error)",
        "digits_lr",
        "naive_torch_func",
        "relative_error_vs_package",
        "<",
        1e-8,
    ),  # fmt: skip
    ("cnn direct fit, Hessian assembly (s)", "cnn", "direct", "fit_seconds", "<", 20.0),
    ("paper direct fit (s)", "paper", "direct", "fit_seconds", "<", 120.0),
    ("paper cg fit (s)", "paper", "cg", "fit_seconds", "<", 120.0),
    ("paper direct click (s)", "paper", "direct", "click_seconds", "<", 0.5),
    ("paper cg click (s)", "paper", "cg", "click_seconds", "<", 0.5),
    ("paper direct peak RSS (MB)", "paper", "direct", "peak_rss_mb", "<", 20_000.0),
    ("paper cg peak RSS (MB)", "paper", "cg", "peak_rss_mb", "<", 20_000.0),
)


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target whose case ran, with the measured value and whether it is met."""
    out = []
    for name, case, solver, key, op, threshold in TARGETS:
        row = next((r for r in results if r["case"] == case and r["solver"] == solver), None)
        if row is None:
            continue
        measured = row.get(key)
        met = measured is not None and (
            measured < threshold if op == "<" else measured >= threshold
        )
        out.append(
            {"name": name, "target": f"{op} {threshold:g}", "measured": measured, "met": met}
        )
    return out


def fmt(value: Any, spec: str, scale: float = 1.0) -> str:
    if value is None:
        width = "".join(ch for ch in spec.split(".")[0] if ch.isdigit())
        return "-".rjust(int(width or 0))
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value * scale if scale != 1.0 else value, spec)


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(
        f"\n{m['cpu']}, {m['usable_cores']} cores, {m['threads']} torch threads, torch {m['torch']}"
    )
    print(f"device {m['device']}" + (f" ({m['gpu']})" if m["device"] != "cpu" else ""))
    print(f"load average at start {m['load_average_start']}, at end {m['load_average_end']}")
    print("\ntraining (iw.train, L-BFGS)")
    for case, t in report["training"].items():
        print(
            f"  {case:<10} {t['seconds']:8.2f} s  {t['iterations']:5d} iterations  "
            f"grad norm {t['grad_norm']:.2e}  converged {fmt(t['converged'], '')}"
        )
    head = (
        f"{'case':<10} {'solver':<8} {'n':>6} {'p':>6} {'fit s':>8} {'100 test s':>11} "
        f"{'click ms':>9} {'peak MB':>8} {'resid':>8} {'iters':>6} {'conv':>4} {'r':>8} "
        f"{'rel err':>8}"
    )
    print(f"\n{head}\n{'-' * len(head)}")
    for r in report["results"]:
        if r["solver"] is None:
            print(f"{r['case']:<10} failed: {r['error']}")
        if r["solver"] is None or "end_to_end_seconds" in r:
            continue
        base = r.get("extrapolated_from")
        extra = f"  (scaled from {base} test points)" if base else ""
        print(
            f"{r['case']:<10} {r['solver']:<8} {r['n_train']:>6} {r['n_params']:>6} "
            f"{fmt(r.get('fit_seconds'), '8.3f')} {fmt(r.get('all_test_seconds'), '11.3f')} "
            f"{fmt(r.get('click_seconds'), '9.1f', 1e3)} {fmt(r['peak_rss_mb'], '8.0f')} "
            f"{fmt(r.get('residual'), '8.1e')} {fmt(r.get('iterations'), '6d')} "
            f"{fmt(r.get('converged'), '>4')} {fmt(r.get('pearson_r_vs_direct'), '8.5f')} "
            f"{fmt(r.get('relative_error_vs_direct'), '8.1e')}"
            + extra
            + (f"  {r['error'][:60]}" if "error" in r else "")
            + (f"  100 test: {r['all_test_error'][:60]}" if "all_test_error" in r else "")
            + (f"  {r['note']}" if "note" in r else "")
        )
    naive = [r for r in report["results"] if "end_to_end_seconds" in r]
    if naive:
        print(f"\nexact influence on {N_TEST} test points, end to end (median of {NAIVE_REPEATS})")
        for r in naive:
            print(
                f"  {r['solver']:<17} {r['end_to_end_seconds']:8.3f} s  "
                f"peak {r['peak_rss_mb']:.0f} MB"
            )
    print("\ntargets")
    for t in report["targets"]:
        print(f"  [{'met' if t['met'] else 'MISSED':>6}] {t['name']}: {fmt(t['measured'], '.4g')} "
              f"(target {t['target']})")  # fmt: skip
    print(f"\ntotal {report['total_seconds']:.1f} s")


# ----- main -----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="digits_lr and naive only, ~1 min")
    parser.add_argument("--skip-paper-scale", action="store_true", help="leave out 'paper'")
    parser.add_argument("--cases", help=f"comma-separated subset of {','.join(CASES)}")
    parser.add_argument("--threads", type=int, help="torch threads (default: usable cores)")
    parser.add_argument("--solvers", help=f"comma-separated subset of {','.join(ALL_SOLVERS)}")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument(
        "--device", default="cpu", help="where to train and compute: cpu (default), cuda, cuda:N"
    )
    args = parser.parse_args(argv)
    try:
        args.device = resolve_device(args.device, torch.device("cpu"))
    except ValueError as err:
        parser.error(f"--{err}")
    if args.cases:
        args.case_list = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = sorted(set(args.case_list) - set(CASES))
        if unknown:
            parser.error(f"--cases: unknown {unknown}; choose from {', '.join(CASES)}")
    else:
        args.case_list = ["digits_lr", "naive"] if args.quick else list(CASES)
    if args.skip_paper_scale:
        args.case_list = [c for c in args.case_list if c != "paper"]
    args.solver_list = ALL_SOLVERS
    if args.solvers:
        args.solver_list = tuple(c.strip() for c in args.solvers.split(",") if c.strip())
        unknown = sorted(set(args.solver_list) - set(ALL_SOLVERS))
        if unknown:
            parser.error(f"--solvers: unknown {unknown}; choose from {', '.join(ALL_SOLVERS)}")
    return args


Checkpoint = Callable[[list[dict[str, Any]], dict[str, Any]], None]


def run_cases(
    cases: list[str],
    budget: float,
    solvers: tuple[str, ...] = ALL_SOLVERS,
    checkpoint: Checkpoint = lambda results, training: None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(results, training) of the cases; ``checkpoint(results, training)`` after every row, so
    that a run stopped from outside (a timeout on a lent GPU) keeps what it measured."""
    results: list[dict[str, Any]] = []
    training: dict[str, Any] = {}
    digits_lr = None
    for case in cases:
        print(f"{case} ...", file=sys.stderr, flush=True)
        try:
            if case in ("digits_lr", "naive"):
                digits_lr = digits_lr or digits_lr_problem()
                problem = digits_lr
            else:
                problem = cnn_problem() if case == "cnn" else paper_problem()
            training[problem.case] = problem.training
            if case == "naive":
                results += measure_naive(problem)
            else:
                problem = dataclasses.replace(
                    problem, solvers=tuple(x for x in problem.solvers if x in solvers)
                )
                results += measure_solvers(
                    problem, budget, lambda rows, done=results: checkpoint(done + rows, training)
                )
            del problem
        except Exception as err:  # data missing, training failed: report it, run the next case
            results.append({"case": case, "solver": None, "error": f"{type(err).__name__}: {err}"})
        checkpoint(results, training)
    return results, training


def main(argv: list[str] | None = None) -> int:
    global DEVICE
    args = parse_args(argv)
    DEVICE = args.device
    threads = args.threads or usable_cores()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    machine = machine_facts()
    warm_up()
    budget = QUICK_BUDGET_S if args.quick else BUDGET_S

    def report_of(
        results: list[dict[str, Any]], training: dict[str, Any], complete: bool
    ) -> dict[str, Any]:
        report = {
            "machine": machine,
            "command": shlex.join([sys.executable, *sys.argv]),
            "cases": args.case_list,
            "complete": complete,  # False: written after a row, the run may have stopped there
            "query_budget_seconds": budget,
            "total_seconds": time.perf_counter() - start,
            "training": training,
            "results": results,
            "targets": targets(results),
        }
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return report

    results, training = run_cases(
        args.case_list, budget, args.solver_list, lambda r, t: report_of(r, t, complete=False)
    )
    machine["load_average_end"] = list(os.getloadavg())
    report = report_of(results, training, complete=True)
    print_report(report)
    if args.json:
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
