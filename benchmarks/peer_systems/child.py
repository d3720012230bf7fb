"""What runs inside a child process (``peers.py --child SPEC``): one (system, solver) on a case.

The child loads the case's model and data (inputs cast to float64) onto its device, runs the same
system once on a tiny problem (untimed warm-up: lazy initialisation, first-call costs), then times
only the influence work: construction, fit or factorisation, and the all-train influence matrix
(T test points x n training points). It writes the matrix, the seconds and its peak resident
memory during that work (VmHWM after resetting the mark through /proc/self/clear_refs; the
process's lifetime ru_maxrss where that is not allowed, and ``peak_scope`` says so), with the
resident memory just before it (``rss_before_mb``; the table's ``+MB`` is the increment). On a
GPU the timed work ends with ``torch.cuda.synchronize()`` (and waits for queued work before it
starts), and the result adds the GPU's peak allocated memory during it (``peak_gpu_mb``).
"""

from __future__ import annotations

import importlib
import json
import logging
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from proc_memory import lifetime_peak_mb, release_freed_memory, reset_peak_rss, status_kb
from torch import nn

import influence_widgets as iw

from .base import adapter, settings_for
from .cases import build_model
from .report import json_default


def tiny_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A tiny trained float64 LR (40 features, 4 classes, 164 parameters) for the warm-up."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(80, 40, generator=gen, dtype=torch.float64)
    y = torch.arange(80) % 4
    model = iw.models.logistic_regression((40, 4))
    iw.train(model, (X, y), l2=0.1, progress=False)
    return model, X, y, X[:2], y[:2]


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work (``--device cuda``), so that a timer reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(spec: dict[str, Any], workdir: Path, device: torch.device) -> str | None:
    """Run the same system once on a tiny problem on ``device``, untimed; its error (if any) as
    a string."""
    model, *data = tiny_problem()
    model = model.to(device)
    X, y, Xt, yt = (t.to(device) for t in data)
    n, p = len(X), sum(q.numel() for q in model.parameters())
    system = adapter(spec["system"])
    settings = settings_for(
        spec["system"],
        spec["solver"].replace("reference_cg", "cg"),
        l2=0.1,
        damping=0.0,
        n=n,
        p=p,
        batch_size=40,
        rank=min(spec["case"]["rank"] or 10, 20),
        device=str(device),
    )
    settings = system.warm_up_settings(spec["solver"], settings, spec["settings"])
    checkpoint = workdir / "warmup.pt"
    torch.save(model.state_dict(), checkpoint)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.CRITICAL)
            system.run(
                model, X, y, Xt, yt, spec["solver"], settings,
                checkpoint=str(checkpoint), workdir=workdir / "warm-up",
            )  # fmt: skip
            synchronize(device)
    except Exception as err:  # the real run will report it
        return f"{type(err).__name__}: {err}"
    finally:
        logging.disable(logging.NOTSET)
    return None


class LogCapture(logging.Handler):
    """The warnings a peer logs during the timed work, for the row's ``warnings``."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage()[:300])


def load_case(spec: dict[str, Any], device: torch.device):
    """The case's trained model and its data on ``device``: (model, X, y, Xt, yt)."""
    case_dir = Path(spec["case_dir"])
    meta = json.loads((case_dir / "meta.json").read_text())
    data = torch.load(case_dir / "data.pt", weights_only=True)
    model = build_model(spec["case"]["model"], meta)
    model.load_state_dict(torch.load(case_dir / "model.pt", weights_only=True))
    model.eval().to(device)
    X, Xt = (data[k].to(device, torch.float64) for k in ("X_train", "X_test"))
    y, yt = data["y_train"].to(device), data["y_test"].to(device)
    return model, X, y, Xt, yt


def timed_run(spec: dict[str, Any], model, data, device: torch.device, result: dict) -> tuple:
    """The timed influence work, with its peak memory; records the measurements in ``result``
    and returns (matrix, state)."""
    out, case_dir = Path(spec["out_dir"]), Path(spec["case_dir"])
    logs = LogCapture()
    logging.getLogger().addHandler(logs)
    release_freed_memory()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    per_phase = reset_peak_rss()
    before = status_kb("VmRSS")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        matrix, state = adapter(spec["system"]).run(
            model, *data, spec["solver"], spec["settings"],
            checkpoint=str(case_dir / "model.pt"), workdir=out / "run",
        )  # fmt: skip
        synchronize(device)
        seconds = time.perf_counter() - start
    peak_kb = status_kb("VmHWM") if per_phase else None
    if device.type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    result.update(
        seconds=seconds,
        rss_before_mb=None if before is None else before / 1024,
        peak_mb=peak_kb / 1024 if peak_kb is not None else lifetime_peak_mb(),
        peak_scope="influence work" if peak_kb is not None else "process lifetime",
        warnings=sorted({str(w.message)[:300] for w in caught} | set(logs.messages)),
    )
    return matrix, state


def save_matrix(spec: dict[str, Any], matrix: torch.Tensor, state: Any, result: dict) -> None:
    """Untimed: the matrix (and ours' s_test . theta) saved for the parent; what the adapter
    records after its run goes into ``result``."""
    out = Path(spec["out_dir"])
    matrix = matrix.detach().to(torch.float64).cpu().numpy()
    result["has_nan"] = bool(np.isnan(matrix).any())
    result["shape"] = list(matrix.shape)
    np.save(out / "matrix.npy", matrix)
    extra = adapter(spec["system"]).after(state)
    if "s_dot_theta" in extra:
        np.save(out / "s_dot_theta.npy", extra.pop("s_dot_theta"))
    result.update(extra)


def child_main(spec_path: str) -> int:
    """Run the child of ``spec_path`` (:func:`.runner.child_spec`); its result.json holds the
    measurements, or the error that stopped it."""
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out_dir"])
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    result: dict[str, Any] = {"system": spec["system"], "solver": spec["solver"]}
    phases: dict[str, float] = {}  # untimed overheads, for the record
    result["child_phases_seconds"] = phases
    t0 = time.perf_counter()
    try:
        module = adapter(spec["system"]).module
        if module:
            importlib.import_module(module)  # imports are not timed
        if device.type == "cuda" and device.index is not None:
            torch.cuda.set_device(device)  # Kronfluence's "cuda" is the current device
        model, *data = load_case(spec, device)
        phases["peer_import_and_load"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        result["warmup_error"] = warm_up(spec, out, device)
        phases["warm_up"] = time.perf_counter() - t0
        matrix, state = timed_run(spec, model, data, device, result)
        t0 = time.perf_counter()
        save_matrix(spec, matrix, state, result)
        phases["after"] = time.perf_counter() - t0
    except Exception as err:  # recorded as the row's note; the traceback goes to the log
        traceback.print_exc()
        result["error"] = f"{type(err).__name__}: {err}"[:1000]
    (out / "result.json").write_text(json.dumps(result, default=json_default))
    return 0
