"""A store for the LDS retrains of benchmarks/lds.py, so that a (model, regime)'s M subsets are
retrained once and every later piece (another method, a rerun after a killed piece) scores
against the same outputs.

The retrains of the minimum regime cost 27-88 s a model on this machine, 1.5-5 hours a piece of
200; nothing else in a piece comes close. One file per (case, regime, settings) under the folder
given with ``lds.py --retrains``: ``<case>-<regime>-<key>.npz``, where the key is a digest of
everything the outputs depend on (the data, the recipe, the subsets' number, fraction and seed,
whether the noise floor ran). Arrays only (``allow_pickle=False``); the scalars as one JSON
string. A file whose recorded fields differ from the run's is not used. A piece stores its
retrains after every chunk of subsets, so a file may hold the first chunks only; the next piece
resumes it (``iw.lds(..., resume=...)``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

import influence_widgets as iw

ARRAYS = (
    "per_test", "noise_floor_per_test", "masks", "seeds", "actual", "predicted", "rerun", "labels",
)  # fmt: skip


def key_fields(case, regime: str, recipe: str, settings: dict) -> dict:
    """What the retrains' outputs depend on, JSON-able."""
    data = hashlib.sha256()
    for t in (case.X, case.y, case.x_test, case.y_test):
        data.update(np.ascontiguousarray(t.detach().cpu().numpy()).tobytes())
    return {
        "case": case.name,
        "regime": regime,
        "recipe": recipe,
        "data": data.hexdigest()[:16],
        **{k: settings[k] for k in ("subsets", "fraction", "noise_floor", "seed")},
    }


def path_of(folder: Path, fields: dict) -> Path:
    """The file of the retrains with these key fields."""
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
    return Path(folder) / f"{fields['case']}-{fields['regime']}-{digest}.npz"


def save(folder: Path, fields: dict, base: iw.LDSResult) -> Path:
    """Write ``base`` (the retrains so far, scored with zero scores; ``base.seconds`` the time
    they took), replacing the file of ``fields`` only once the new one is whole."""
    path = path_of(folder, fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = dataclasses.asdict(base)
    arrays = {k: values.pop(k) for k in ARRAYS if values[k] is not None}
    meta = {"fields": fields, "result": values}
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, meta=np.array(json.dumps(meta, default=lambda v: v.item())), **arrays)
    tmp.replace(path)  # a killed write leaves no half file under the real name
    return path


def load(folder: Path, fields: dict) -> iw.LDSResult | None:
    """The stored retrains of ``fields`` (all subsets, or the first chunks of a piece that was
    cut off: ``n_subsets`` says), or None where none match."""
    path = path_of(folder, fields)
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        arrays = {k: f[k] for k in ARRAYS if k in f.files}
    if meta["fields"] != fields:
        return None
    values = {**meta["result"], **{k: arrays.get(k) for k in ARRAYS}}
    if "retrain_seconds" in meta:  # files of before 2026-12-07 kept the seconds beside
        values["seconds"] = meta["retrain_seconds"]
    return iw.LDSResult(**values)
