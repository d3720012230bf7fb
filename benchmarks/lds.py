"""The linear datamodeling score (LDS) of every attribution method, with its noise floor.

One row per (model, training regime, system, method): ``iw.lds`` on M random subsets of half the
training points (``--subsets``, ``--fraction``), the same subsets, seeds and test points for every
method of a (model, regime): the subsets are retrained ONCE per (model, regime) and every method's
(T, n) attribution is scored against those outputs with ``LDSResult.rescore``. The output is the
margin log p(y|x) - log(1 - p(y|x)) of the true test label (TRAK, dattri); the noise floor is the
Spearman between two seeds' retrains of the same subsets. Models, regimes and the checkpoints of
TracIn and TRAK: benchmarks/lds_models.py.

Methods: ours, ``iw.Influence(..., solver=S, hessian=H, damping="auto")`` for S in direct, cg,
lissa, arnoldi (H exact and gauss-newton) and ekfac (always Gauss-Newton), each with its default
settings except LiSSA: ``iw.LiSSA(depth=--lissa-depth, batch_size=--lissa-batch)``, by default
dattri's LiSSA setting here (1,000 steps on batches of 100), since our default (10,000 full-batch
steps) takes about a day per row at 100 test points on the CNN, and CG:
``iw.ConjugateGradient(maxiter=--cg-maxiter)``, by default dattri's 100 iterations (our default
runs to a relative residual of 1e-10, 424 s per row on the practitioner CNN); ``predicted_removal_effect`` are
the scores. Beyond influence functions (``--attributions``), ours: ``iw.GradDot`` (exact dot
products), ``iw.TracIn`` on the checkpoints dattri's TracIn gets, ``iw.TRAK`` on the models
dattri's TRAK gets (512-dimensional Gaussian projection, seed 0, no damping, as dattri; our
default ensemble average, see benchmarks/trak_ensembles.py for the paper's), and
``iw.InfluenceEnsemble`` over ``--ensemble-models`` models trained on all points with seeds 0, 1,
... ("IF ensemble": our direct solver with the exact Hessian, damping "auto"; "EK-FAC ensemble":
EK-FAC of the Gauss-Newton matrix, damping "auto", the same models). ``--workers N`` retrains the subsets on N Dask worker processes (``iw.lds(...,
n_workers=N)``; the outputs equal the in-process ones). dattri 0.3.0 (``--dattri all`` or a list,
imported from ``--dattri-path`` or the environment): its IF explicit, CG, LiSSA, Arnoldi and
EK-FAC, Grad-Dot, TracIn and TRAK, as benchmarks/peer_systems/dattri_lds.py runs them (settings
and signs there; every row records its settings). A method whose Hessian would not fit
``--max-hessian-gb`` (direct and dattri's explicit on fmnist_mlp: p = 101,770, 83 GB in float64)
gets a row with ``"lds": null`` and a ``"skipped"`` reason, as does one that would grow the
process by more than ``--max-method-gb`` (dattri's explicit IF on the CNN forms
``torch.func.hessian`` of the whole batch at once: a single 10.4 GB block, and the run was
OOM-killed on this 24 GB machine); one that raises, ``"error"``.

    python benchmarks/lds.py --dattri all --json benchmarks/results/lds.json
    python benchmarks/lds.py --cases digits_cnn --regimes minimum --dattri all \\
        --json benchmarks/results/lds.json --merge   # one piece, merged into the file
    python benchmarks/lds.py --markdown -     # the full table of an existing JSON
    python benchmarks/lds.py --readme         # README.md's table from the JSON

``--retrains DIR`` stores each (model, regime)'s retrains there (benchmarks/lds_retrains.py) and
reuses them in later pieces with the same data, recipe and subsets: rows scored against stored
retrains say ``"retrains_stored": true`` and carry the seconds the retrains took when they ran.
The store is written after every ``--retrain-chunk`` subsets (default 10), so a piece killed
mid-retrains keeps its finished chunks and the next piece resumes there; a piece that only
retrains passes ``--solvers '' --attributions ''``. The committed store is
``benchmarks/results/lds_retrains``.

Writing keeps the file's top-level keys this script does not own (``"pbrf"``, from
benchmarks/pbrf.py); ``--merge`` also keeps the rows of every (model, regime) not rerun.
``"complete"`` is true only when every required row (:data:`REQUIRED_CASES` x both regimes x every
method) is there with 100 subsets and 100 test points, without an error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import lds_retrains
import lds_table
import numpy as np
import torch
from lds_models import (
    CASES,
    REGIMES,
    Case,
    half_models,
    regime,
    seed_models,
    tracin_checkpoints,
    train_model,
)
from machine import machine_info
from peer_systems import dattri_lds
from proc_memory import (
    MemoryCapExceeded,
    address_space_cap,
    lifetime_peak_mb,
    reset_peak_rss,
    status_kb,
)

import influence_widgets as iw
from influence_widgets.analysis.lds import MIN_SUBSETS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results/lds.json"
FULL_SUBSETS, FULL_TEST = 100, 100
SOLVERS = ("direct", "cg", "lissa", "arnoldi", "ekfac")
HESSIANS = ("exact", "gauss-newton")
REQUIRED_CASES = ("digits_lr", "fmnist_mlp", "digits_cnn")
# the JSON's keys this script writes (and those its earlier, one-run format wrote)
OWN_KEYS = ("complete", "missing", "runs", "rows", "command", "machine", "load_average_end")
OWN_KEYS += ("versions", "settings")
ROW_KEYS = (
    "model",
    "regime",
    "system",
    "method",
    "solver",
    "hessian",
    "damping",
    "settings",
    "lds",
    "lds_se",
    "noise_floor",
    "noise_floor_se",
    "seconds",
    "peak_mb",
    "subsets",
    "fraction",
    "n_train",
    "n_test",
    "recipe",
    "command",
)


# ----- methods -----------------------------------------------------------------------------------
def methods(solvers, hessians) -> list[tuple[str, str]]:
    """(solver, hessian) pairs: every solver with every Hessian, ekfac with gauss-newton only."""
    pairs = []
    for s in solvers:
        for h in ("gauss-newton",) if s == "ekfac" else hessians:
            pairs.append((s, h))
    return list(dict.fromkeys(pairs))


def measured(compute: Callable[..., Any], *args) -> tuple[Any, float, float]:
    """(compute(*args), seconds, peak resident MB during it)."""
    reset = reset_peak_rss()
    start = time.perf_counter()
    value = compute(*args)
    seconds = time.perf_counter() - start
    peak = status_kb("VmHWM") / 1024 if reset else lifetime_peak_mb()
    return value, seconds, peak


def our_solver(name: str, settings: dict) -> str | iw.LiSSA | iw.ConjugateGradient:
    """The solver of our row ``name``: its default, but LiSSA at the run's depth and batch and
    CG stopped after the run's ``--cg-maxiter`` block iterations (dattri's CG budget) and
    preconditioned as ``--cg-preconditioner`` says (none: plain CG)."""
    if name == "lissa":
        return iw.LiSSA(depth=settings["lissa_depth"], batch_size=settings["lissa_batch"])
    if name == "cg":
        return iw.ConjugateGradient(
            maxiter=settings["cg_maxiter"], preconditioner=settings.get("cg_preconditioner")
        )
    return name


def ours(
    model, case: Case, l2: float, solver: str, hessian: str, settings: dict
) -> tuple[np.ndarray, dict]:
    """Our scores (T, n) with damping "auto", and what the solver chose and reported."""
    inf = iw.Influence(
        model,
        (case.X, case.y),
        l2=l2,
        damping="auto",
        solver=our_solver(solver, settings),
        hessian=hessian,
        progress=False,
    )
    with warnings.catch_warnings():  # the practitioner model is not at a minimum, by design
        warnings.simplefilter("ignore", iw.InfluenceWarning)
        scores = inf.predicted_removal_effect(case.x_test, case.y_test)
    d = inf.diagnostics.solver
    info = {
        "damping": float(inf.damping),
        "solver_settings": inf.solver.settings(),
        "converged": d.converged,
        "residual": d.residual,
        "iterations": d.iterations,
        "max_eigenvalue": d.max_eigenvalue,
        **{k: v for k, v in d.extra.items() if isinstance(v, int | float | str)},
    }
    return scores.detach().double().numpy(), info


def hessian_too_big(case: Case, limit_gb: float) -> str | None:
    """Why an explicit p x p float64 Hessian is not formed for ``case``, or None when it fits."""
    p = case.n_params
    gb = p * p * 8 / 1e9
    if gb <= limit_gb:
        return None
    return f"the {p:,} x {p:,} Hessian takes {gb:.0f} GB in float64 (limit {limit_gb:g} GB)"


# ----- one (model, regime) -----------------------------------------------------------------------
def retrain_once(
    model, case: Case, train_fn, l2: float, settings: dict, resume: iw.LDSResult | None = None
) -> iw.LDSResult:
    """The LDS retrains of a (case, regime): outputs of the first ``settings["subsets"]`` subsets
    (and their reruns) on the test points, keeping those of ``resume``. Scored here with zero
    scores; every method is scored by ``rescore``. The one call of ``iw.lds`` in this script;
    ``--workers`` spreads its retrains over Dask workers."""
    zeros = np.zeros((len(case.x_test), len(case.X)))
    return iw.lds(
        zeros,
        (case.X, case.y),
        x_test=case.x_test,
        y_test=case.y_test,
        train_fn=train_fn,
        model=model,
        l2=l2,
        subsets=settings["subsets"],
        fraction=settings["fraction"],
        noise_floor=settings["noise_floor"],
        seed=settings["seed"],
        progress=False,
        n_workers=settings["workers"] or None,
        resume=resume,
    )


def retrains(model, case: Case, train_fn, l2: float, settings: dict) -> tuple[iw.LDSResult, bool]:
    """(the retrains of all ``settings["subsets"]`` subsets, whether the store had them all).

    Without ``--retrains`` one call of :func:`retrain_once`. With it, the stored retrains of the
    (case, regime), complete or not, are resumed, and the rest run ``--retrain-chunk`` subsets
    at a time, the store updated after each chunk: a piece killed after hours keeps every chunk
    it finished, and the next piece goes on from there."""
    folder, total = settings.get("retrains"), settings["subsets"]
    if not folder:
        return retrain_once(model, case, train_fn, l2, settings), False
    fields = lds_retrains.key_fields(case, settings["regime"], settings["recipe"], settings)
    base = lds_retrains.load(folder, fields)
    complete = base is not None and base.n_subsets == total
    chunk = settings.get("retrain_chunk") or total
    while base is None or base.n_subsets < total:
        done = 0 if base is None else base.n_subsets
        upto = min(total, max(MIN_SUBSETS, done + chunk))  # iw.lds needs MIN_SUBSETS
        base = retrain_once(model, case, train_fn, l2, {**settings, "subsets": upto}, base)
        lds_retrains.save(folder, fields, base)
        print(f"{case.name} {settings['regime']}: {base.n_subsets}/{total} subsets retrained "
              f"and stored ({base.seconds:.0f} s in all)", flush=True)  # fmt: skip
    return base, complete


def subset_hash(masks: np.ndarray) -> str:
    """A short digest of the subsets, to show which rows share them."""
    return hashlib.sha256(np.packbits(masks).tobytes()).hexdigest()[:12]


@dataclass
class Shared:
    """What every method's row of one (case, regime) shares: the model, the retrains, and the
    fields common to the rows."""

    case: Case
    regime: str
    train_fn: Callable
    l2: float
    model: torch.nn.Module
    base: iw.LDSResult
    common: dict
    settings: dict
    _made: dict = field(default_factory=dict)

    def checkpoints(self, kind: str) -> tuple[list[dict], list[float], dict]:
        """TracIn's checkpoints (``kind="tracin"``: the model's own training) or TRAK's and the
        IF ensemble's models (``"trak"``: ``--trak-models`` trained on random halves;
        ``"seeds"``: ``--ensemble-models`` trained on all points, seeds 0, 1, ...), as state
        dicts with their weights and the fields saying how they were made and how long that
        took. Made once per (case, regime): ours and dattri's rows of a method share them."""
        if kind not in self._made:
            c = self.case
            if kind == "tracin":
                made, seconds, _ = measured(tracin_checkpoints, c, self.train_fn, self.model)
                states, weights, words = made
            elif kind == "trak":
                k, seed = self.settings["trak_models"], self.settings["seed"]
                (states, words), seconds, _ = measured(half_models, c, self.train_fn, k, seed)
                weights = [1.0] * len(states)
            else:
                k = self.settings["ensemble_models"]
                (states, words), seconds, _ = measured(seed_models, c, self.train_fn, k)
                weights = [1.0] * len(states)
            fields = {"checkpoints": words, "checkpoint_seconds": seconds}
            self._made[kind] = (states, weights, fields)
        return self._made[kind]

    def row(self, scores: np.ndarray | None, **fields) -> dict:
        """The JSON row of one method: its scores rescored against the shared retrains (None:
        a row without an LDS, whose ``fields`` say why)."""
        result = None if scores is None else self.base.rescore(scores)
        return {
            "model": self.case.name,
            "regime": self.regime,
            "lds": None if result is None else result.mean,
            "lds_se": None if result is None else result.se,
            "noise_floor": self.base.noise_floor,
            "noise_floor_se": self.base.noise_floor_se,
            "subsets": self.base.n_subsets,
            "fraction": self.base.fraction,
            "n_train": len(self.case.X),
            "n_test": len(self.case.x_test),
            "lds_per_test": None if result is None else [float(v) for v in result.per_test],
            **fields,
            **self.common,
        }


def shared(case: Case, regime_name: str, settings: dict) -> Shared:
    """Train the model of a (case, regime) and retrain its LDS subsets."""
    train_fn, l2, recipe = regime(regime_name, settings["epochs"], settings["max_iter"])
    model, train_s, _ = measured(train_model, case, train_fn)
    given = {**settings, "regime": regime_name, "recipe": recipe}
    base, stored = retrains(model, case, train_fn, l2, given)
    common = {
        "recipe": recipe,
        "l2": l2,
        "train_seconds": train_s,
        "retrain_seconds": base.seconds,
        "command": settings["command"],
        "subset_hash": subset_hash(base.masks),
        "retrains_stored": stored,
    }
    return Shared(case, regime_name, train_fn, l2, model, base, common, settings)


def attempt(s: Shared, compute: Callable, *args, **fields) -> dict:
    """The row of ``compute(*args)`` -> (scores, settings dict), timed, its address space growth
    capped at ``--max-method-gb``: a method that needs more gets a row with ``"lds": null`` and a
    ``"skipped"`` reason (as a Hessian that does not fit), one that raises, ``"error"``."""
    try:
        with address_space_cap(s.settings["max_method_gb"]):
            (scores, info), seconds, peak = measured(compute, *args)
    except MemoryCapExceeded as err:  # e.g. dattri's explicit IF on the CNN: 10+ GB at once
        return s.row(None, skipped=str(err), **fields)
    except Exception as err:  # one failing method must not lose the run's other rows
        return s.row(None, error=f"{type(err).__name__}: {err}".splitlines()[0][:200], **fields)
    return s.row(scores, seconds=seconds, peak_mb=peak, settings=info, **fields)


def our_rows(s: Shared) -> list[dict]:
    """Our rows of one (case, regime)."""
    rows = []
    for solver, hessian in methods(s.settings["solvers"], s.settings["hessians"]):
        fields = {
            "system": "ours",
            "method": f"{solver} ({hessian})",
            "solver": solver,
            "hessian": hessian,
        }
        too_big = solver == "direct" and hessian_too_big(s.case, s.settings["max_hessian_gb"])
        if too_big:
            rows.append(s.row(None, skipped=too_big, **fields))
        else:
            rows.append(
                attempt(s, ours, s.model, s.case, s.l2, solver, hessian, s.settings, **fields)
            )
        r = rows[-1]
        if r.get("settings"):
            r["damping"] = r["settings"]["damping"]
        report(r)
    return rows


ATTRIBUTIONS = ("grad-dot", "tracin", "trak", "if-ensemble", "ekfac-ensemble")
ATTRIBUTION_TITLES = {
    "grad-dot": "Grad-Dot",
    "tracin": "TracIn",
    "trak": "TRAK",
    "if-ensemble": "IF ensemble",
    "ekfac-ensemble": "EK-FAC ensemble",
}


def models_at(case: Case, states: list[dict]) -> list[torch.nn.Module]:
    """A model of ``case`` loaded with each state dict."""
    models = []
    for state in states:
        m = case.make()
        m.load_state_dict(state)
        models.append(m)
    return models


def trak_settings(case: Case, seed: int = 0) -> dict:
    """The keyword arguments of our TRAK rows, dattri's setting: a 512-dimensional Gaussian
    projection (fewer where the model or the training set is smaller), no damping."""
    return {
        "projection_dim": min(512, case.n_params, len(case.X)),
        "projection": "gaussian",
        "damping": 0.0,
        "seed": seed,
    }


def our_attribution(
    method: str, s: Shared, states: list[dict], weights: list[float]
) -> tuple[np.ndarray, dict]:
    """Our (T, n) scores of ``method`` (positive = helpful, as ``predicted_removal_effect``) and
    its settings: Grad-Dot on the model (exact dot products, no projection); TracIn on the
    checkpoints with their weights as learning rates; TRAK on the models with dattri's setting
    (a 512-dimensional Gaussian projection, seed 0, no damping; our default ensemble average,
    each model's removal effect whole: benchmarks/trak_ensembles.py compares the paper's); the
    IF ensemble, the mean of
    ``predicted_removal_effect`` of our direct solver (CG with ``--cg-maxiter`` where the
    Hessian does not fit ``--max-hessian-gb``) with damping "auto" over the models; the EK-FAC
    ensemble, the same mean with EK-FAC (Gauss-Newton, damping "auto") over the same models."""
    c, x, y = s.case, s.case.x_test, s.case.y_test
    if method == "grad-dot":
        m = iw.GradDot(s.model, (c.X, c.y), progress=False)
        info = {"projection": None}
    elif method == "tracin":
        points = [iw.Checkpoint(state=st, lr=w) for st, w in zip(states, weights, strict=True)]
        m = iw.TracIn(s.model, (c.X, c.y), points, progress=False)
        info = {"projection": None, "checkpoints": len(points)}
    elif method == "trak":
        info = trak_settings(c)
        m = iw.TRAK(models_at(c, states), (c.X, c.y), progress=False, **info)
    elif method == "ekfac-ensemble":
        info = {"solver": "ekfac", "hessian": "gauss-newton", "damping": "auto"}
        info["models"] = len(states)
        m = iw.InfluenceEnsemble(
            models_at(c, states), (c.X, c.y), l2=s.l2, solver="ekfac",
            hessian="gauss-newton", damping="auto", progress=False,
        )  # fmt: skip
    else:
        big = hessian_too_big(c, s.settings["max_hessian_gb"])
        solver = our_solver("cg", s.settings) if big else "direct"
        info = {"solver": "cg" if big else "direct", "damping": "auto", "models": len(states)}
        m = iw.InfluenceEnsemble(
            models_at(c, states), (c.X, c.y), l2=s.l2, damping="auto", solver=solver,
            progress=False,
        )  # fmt: skip
    with warnings.catch_warnings():  # the practitioner models are not at a minimum, by design
        warnings.simplefilter("ignore", iw.InfluenceWarning)
        scores = m.scores(x, y)
    return scores.detach().double().cpu().numpy(), info


def attribution_rows(s: Shared) -> list[dict]:
    """Our rows of the methods beyond influence functions, on the checkpoints and models that
    dattri's TracIn and TRAK get."""
    rows = []
    for method in s.settings["attributions"]:
        fields = {
            "system": "ours",
            "method": ATTRIBUTION_TITLES[method],
            "solver": method,
            "hessian": None,
        }
        kind = {
            "tracin": "tracin",
            "trak": "trak",
            "if-ensemble": "seeds",
            "ekfac-ensemble": "seeds",
        }.get(method)
        states, weights, made = s.checkpoints(kind) if kind else ([], [], {})
        rows.append(attempt(s, our_attribution, method, s, states, weights, **fields, **made))
        report(rows[-1])
    return rows


def report(r: dict) -> None:
    """One line on stdout per row, as it is done."""
    what = lds_table.lds_cell(r)
    took = f" in {r['seconds']:.2f} s" if r.get("seconds") is not None else ""
    print(f"  {r['model']} {r['regime']} {r['system']} {r['method']}: {what}{took}", flush=True)


def our_choice(rows: list[dict], solver: str, key: str) -> float | None:
    """``key`` from the settings of our row of ``solver`` (exact Hessian, or EK-FAC's), else of
    our CG's; None when neither ran."""
    for name in (solver, "cg"):
        for r in rows:
            if r["system"] == "ours" and r["solver"] == name and r.get("settings"):
                if r["hessian"] == "exact" or name == "ekfac":
                    return r["settings"].get(key)
    return None


def dattri_target(s: Shared, method: str) -> tuple[dattri_lds.Target, dict]:
    """The Target of a dattri method (with TracIn's checkpoints or TRAK's models) and the fields
    that say how its checkpoints were made and how long that took."""
    c = s.case
    target = dattri_lds.Target(s.model, c.X, c.y, c.x_test, c.y_test)
    if method not in ("tracin", "trak"):
        return target, {}
    target.checkpoints, target.weights, made = s.checkpoints(method)
    return target, made


def dattri_scores(method: str, target: dattri_lds.Target, args: dict) -> tuple[np.ndarray, dict]:
    """dattri's (T, n) scores and the settings it ran with."""
    return dattri_lds.scores(method, target, args), args


def our_rows_to_match(s: Shared, rows: list[dict], earlier: Sequence[dict] = ()) -> list[dict]:
    """The rows of ours that dattri's settings come from: this piece's ``rows``, then the
    ``earlier`` rows (of the JSON a piece merges into) of the same (case, regime) scored against
    the same retrains, so that a piece running one dattri method alone gets the damping and LiSSA
    scale our solver chose in another piece."""
    ref = s.row(None)
    same = [
        r
        for r in earlier
        if r.get("system") == "ours"
        and (r.get("model"), r.get("regime")) == (ref["model"], ref["regime"])
        and same_retrains(r, ref)
    ]
    return list(rows) + same


def dattri_rows(s: Shared, rows: list[dict], earlier: Sequence[dict] = ()) -> list[dict]:
    """dattri's rows of one (case, regime), its damping and LiSSA scale from our rows
    (:func:`our_rows_to_match`)."""
    out = []
    ours_ = our_rows_to_match(s, rows, earlier)
    for method in s.settings["dattri"]:
        damping = our_choice(ours_, method, "damping") or 0.0
        top = our_choice(ours_, "lissa", "max_eigenvalue")
        args = dattri_lds.settings(method, s.l2, damping, top)
        fields = {
            "system": "dattri",
            "method": dattri_lds.TITLES[method],
            "solver": method,
            "hessian": "exact" if method in dattri_lds.IF_METHODS[:4] else None,
            "damping": damping if method in dattri_lds.IF_METHODS else None,
        }
        too_big = method == "explicit" and hessian_too_big(s.case, s.settings["max_hessian_gb"])
        if too_big:
            out.append(s.row(None, skipped=too_big, settings=args, **fields))
        else:
            target, made = dattri_target(s, method)
            out.append(attempt(s, dattri_scores, method, target, args, **fields, **made))
        report(out[-1])
    return out


def warm_up(s: Shared) -> None:
    """Pay once, before any method is timed, what the first method to run would pay alone:
    torch.func's first vmap, grad and jvp on this model (about 2.5 s of lazy imports on the
    digits CNN, which made the first method, ours, look 2.5 s slower), and importing dattri's
    modules. Both systems then start warm, as every child in peers.py does."""
    model = s.model
    x, y = s.case.X[:2], s.case.y[:2]
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(model, p, (xi[None],))
        return torch.nn.functional.cross_entropy(out, yi[None])

    torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(params, x, y)
    tangent = {k: torch.ones_like(v) for k, v in params.items()}
    torch.func.jvp(lambda p: torch.func.grad(loss)(p, x[0], y[0]), (params,), (tangent,))
    if s.settings["dattri"]:
        dattri_lds.import_modules()


def run_case(
    case: Case,
    regime_name: str,
    settings: dict,
    done: Callable[[list[dict]], None] = lambda rows: None,
    earlier: Sequence[dict] = (),
) -> list[dict]:
    """Every method's row for one (case, regime), all scored against the same retrains;
    ``done(rows so far)`` after our influence functions, our other methods and dattri's;
    ``earlier``: the rows of the JSON merged into (:func:`our_rows_to_match`)."""
    s = shared(case, regime_name, settings)
    warm_up(s)
    rows = our_rows(s)
    done(rows)
    rows += attribution_rows(s)
    done(rows)
    rows += dattri_rows(s, rows, earlier)
    done(rows)
    return rows


# ----- the report: rows, merging, completeness ---------------------------------------------------
def required() -> list[tuple[str, str, str, str]]:
    """Every (model, regime, system, method) a complete report has."""
    ours_ = [("ours", f"{s} ({h})") for s, h in methods(SOLVERS, HESSIANS)]
    ours_ += [("ours", ATTRIBUTION_TITLES[m]) for m in ATTRIBUTIONS]
    theirs = [("dattri", dattri_lds.TITLES[m]) for m in dattri_lds.METHODS]
    return [(c, g, *m) for c in REQUIRED_CASES for g in REGIMES for m in ours_ + theirs]


def completeness(rows: list[dict]) -> tuple[bool, list[str]]:
    """(complete, the required rows missing or short of 100 subsets / test points or failed)."""
    have = {(r["model"], r["regime"], r["system"], r["method"]): r for r in rows}
    missing = []
    for key in required():
        r = have.get(key)
        full = r is not None and r["subsets"] >= FULL_SUBSETS and r["n_test"] >= FULL_TEST
        if not full or r.get("error"):
            missing.append(" ".join(key))
    return not missing, missing


def same_retrains(a: dict, b: dict) -> bool:
    """Whether rows ``a`` and ``b`` were scored against the same retrains: the same subsets
    (``subset_hash``), the same noise floor and the same test points."""
    keys = ("subset_hash", "noise_floor", "subsets", "n_test", "n_train")
    return all(a.get(k) == b.get(k) for k in keys) and a.get("subset_hash") is not None


def same_run(a: dict, b: dict) -> bool:
    """Whether headers ``a`` and ``b`` are of one run (an earlier save of it, and a later)."""
    return a.get("command") == b.get("command") and a.get("machine") == b.get("machine")


def merged(old: dict, new_rows: list[dict], header: dict, merge: bool) -> dict:
    """The report to write: ``old``'s keys this script does not own kept; with ``merge`` also its
    rows of every (model, regime) not in ``new_rows``, and, of a (model, regime) rerun, its rows
    of methods not rerun when they were scored against the same retrains (``same_retrains``:
    the same seed draws the same subsets, and the retrains are deterministic), so that a method
    added later runs alone (``--solvers``, ``--dattri``, ``--attributions``) without losing the
    others."""
    new_of = {}
    for r in new_rows:
        new_of.setdefault((r["model"], r["regime"]), r)
    rerun = {(r["model"], r["regime"], r["system"], r["method"]) for r in new_rows}
    kept_rows = []
    for r in old.get("rows", []):
        pair = (r["model"], r["regime"])
        if pair not in new_of:
            kept_rows.append(r)
        elif (*pair, r["system"], r["method"]) not in rerun and same_retrains(r, new_of[pair]):
            kept_rows.append(r)
    with_rows = {(r["model"], r["regime"]) for r in kept_rows}  # the runs that made them stay
    kept_runs = [
        run
        for run in old.get("runs", [])
        if any(tuple(p) in with_rows for p in run["pairs"]) and not same_run(run, header)
    ]
    rows = kept_rows + new_rows if merge else new_rows
    complete, missing = completeness(rows)
    foreign = {k: v for k, v in old.items() if k not in OWN_KEYS}
    runs = (kept_runs if merge else []) + [header]
    return {"complete": complete, "missing": missing, "runs": runs, **foreign, "rows": rows}


def versions() -> dict:
    """The versions of what produced the numbers."""
    out = {"numpy": np.__version__, "influence_widgets": getattr(iw, "__version__", None)}
    try:
        out["dattri"] = metadata.version("dattri")
    except metadata.PackageNotFoundError:
        out["dattri"] = getattr(sys.modules.get("dattri"), "__version__", None)
    return out


def run(
    settings: dict,
    save: Callable[[list[dict], dict], None] = lambda rows, header: None,
    earlier: Sequence[dict] = (),
) -> tuple[list[dict], dict]:
    """All rows of the (case, regime) pairs asked for, and the run's header. ``save(rows so
    far, header)`` after each phase of each (case, regime), with ``"finished": false`` in the
    header, so that a piece stopped after hours keeps the rows it made. ``earlier``: the rows
    of the JSON merged into, whose settings of ours dattri's rows may match."""
    torch.set_num_threads(settings["threads"])
    machine = machine_info(
        "cpu", "cores", "usable_cores", "threads", "gpu", "torch", "python", "platform", "date",
        "load_average_start",
    )  # fmt: skip

    def header(rows: list[dict], finished: bool) -> dict:
        return {
            "command": settings["command"],
            "pairs": sorted({(r["model"], r["regime"]) for r in rows}),
            "machine": machine,
            "load_average_end": list(os.getloadavg()),
            "finished": finished,
            "versions": versions(),
            "settings": {k: v for k, v in settings.items() if k != "command"},
        }

    rows = []
    for name in settings["cases"]:
        case = CASES[name](settings["n_test"])
        for regime_name in settings["regimes"]:
            before = list(rows)
            rows += run_case(
                case,
                regime_name,
                settings,
                lambda new, before=before: save(before + new, header(before + new, False)),
                earlier,
            )
    return rows, header(rows, True)


# ----- command line ------------------------------------------------------------------------------
def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default=",".join(REQUIRED_CASES), help=f"of {', '.join(CASES)}")
    p.add_argument("--regimes", default=",".join(REGIMES))
    p.add_argument("--solvers", default=",".join(SOLVERS))
    p.add_argument("--hessians", default=",".join(HESSIANS))
    p.add_argument(
        "--attributions",
        default=",".join(ATTRIBUTIONS),
        help="our methods beyond influence functions (empty: none)",
    )
    p.add_argument(
        "--ensemble-models", type=int, default=5, help="the IF and EK-FAC ensembles' seeds"
    )
    p.add_argument("--dattri", default="", help="dattri methods, or 'all' (empty: none)")
    p.add_argument("--dattri-path", default=None, help="a folder to import dattri from")
    p.add_argument("--subsets", type=int, default=FULL_SUBSETS)
    p.add_argument("--n-test", type=int, default=FULL_TEST)
    p.add_argument("--fraction", type=float, default=0.5)
    p.add_argument("--no-noise-floor", action="store_true")
    p.add_argument("--epochs", type=int, default=10, help="practitioner regime's epochs")
    p.add_argument("--max-iter", type=int, default=1000, help="minimum regime's L-BFGS limit")
    p.add_argument("--trak-models", type=int, default=10, help="TRAK's ensemble of half models")
    p.add_argument("--max-hessian-gb", type=float, default=8.0, help="explicit Hessians up to")
    p.add_argument(
        "--max-method-gb", type=float, default=12.0, help="memory one method may add (else skipped)"
    )
    p.add_argument("--lissa-depth", type=int, default=1000, help="our LiSSA's steps")
    p.add_argument("--lissa-batch", type=int, default=100, help="our LiSSA's batch size")
    p.add_argument("--cg-maxiter", type=int, default=100, help="our CG's iteration limit")
    p.add_argument(
        "--cg-preconditioner",
        default=None,
        choices=["ekfac"],
        help="our CG's preconditioner (default none; ekfac: M = EK-FAC + (l2 + damping) I)",
    )
    p.add_argument("--workers", type=int, default=0, help="Dask workers for the retrains")
    p.add_argument(
        "--retrains",
        default=None,
        help="a folder storing each (model, regime)'s retrains for later pieces (none: not stored)",
    )
    p.add_argument(
        "--retrain-chunk",
        type=int,
        default=10,
        help="with --retrains: subsets retrained between two saves of the store",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="run, and write the rows here")
    p.add_argument("--merge", action="store_true", help="keep --json's other (model, regime)s")
    p.add_argument("--input", default=str(RESULTS), help="the JSON the tables are made of")
    p.add_argument("--markdown", default=None, help="write the full table here ('-': print)")
    p.add_argument("--readme", action="store_true", help="rewrite README.md's LDS table")
    return p.parse_args(argv)


def settings_of(args: argparse.Namespace, argv: list[str]) -> dict:
    """The run's settings from the command line (lists split at commas)."""
    split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    dattri = list(dattri_lds.METHODS) if args.dattri == "all" else split(args.dattri)
    for name, given, known in (
        ("cases", split(args.cases), CASES),
        ("regimes", split(args.regimes), REGIMES),
        ("dattri", dattri, dattri_lds.METHODS),
        ("attributions", split(args.attributions), ATTRIBUTIONS),
    ):
        unknown = [g for g in given if g not in known]
        if unknown:
            raise SystemExit(f"--{name}: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    return {
        "cases": split(args.cases),
        "regimes": split(args.regimes),
        "solvers": split(args.solvers),
        "hessians": split(args.hessians),
        "dattri": dattri,
        "attributions": split(args.attributions),
        "ensemble_models": args.ensemble_models,
        "subsets": args.subsets,
        "n_test": args.n_test,
        "fraction": args.fraction,
        "noise_floor": not args.no_noise_floor,
        "epochs": args.epochs,
        "max_iter": args.max_iter,
        "trak_models": args.trak_models,
        "max_hessian_gb": args.max_hessian_gb,
        "max_method_gb": args.max_method_gb,
        "lissa_depth": args.lissa_depth,
        "lissa_batch": args.lissa_batch,
        "cg_maxiter": args.cg_maxiter,
        "cg_preconditioner": args.cg_preconditioner,
        "workers": args.workers,
        "retrains": args.retrains,
        "retrain_chunk": args.retrain_chunk,
        "seed": args.seed,
        "threads": args.threads,
        "command": shlex.join(["python", "benchmarks/lds.py", *argv]),
    }


def readme_table(report: dict) -> str:
    """README.md's compact LDS table of a report."""
    order = list(dict.fromkeys((system, method) for _, _, system, method in required()))
    return lds_table.readme_table(report, list(CASES), REGIMES, order)


def tables(report: dict) -> str:
    """The full table, and the PBRF table when the report has one."""
    pbrf = lds_table.pbrf_table(report)
    return lds_table.markdown(report) + ("" if pbrf is None else f"\n\nPBRF:\n\n{pbrf}")


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.dattri_path:
        sys.path.insert(0, args.dattri_path)
    if args.json:
        path = Path(args.json)

        def save(rows: list[dict], header: dict) -> dict:
            # read when writing, not when starting: a piece runs for hours, and another piece
            # may have been merged into the file meanwhile
            old = json.loads(path.read_text()) if path.exists() else {}
            report = merged(old, rows, header, args.merge)
            path.write_text(json.dumps(report, indent=1) + "\n")
            return report

        earlier = (
            json.loads(path.read_text()).get("rows", []) if args.merge and path.exists() else []
        )
        report = save(*run(settings_of(args, argv), save, earlier))
    else:
        report = json.loads(Path(args.input).read_text())
    if args.readme:
        readme = ROOT / "README.md"
        readme.write_text(lds_table.splice(readme.read_text(), readme_table(report)))
    table = tables(report)
    if args.markdown == "-" or not (args.markdown or args.readme):
        print(table)
    elif args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return report


if __name__ == "__main__":
    main()
