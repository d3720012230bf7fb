"""How TRAK's ensemble average changes its LDS: ``iw.TRAK(..., ensemble=E)`` for E in
"removal-effect" (our default: each model's removal effect averaged whole) and "paper" (the kernel
terms and the weights 1 - p averaged apart, Park et al.'s Algorithm 1 and dattri), on the same
half-data models and the same projections (seeds 0, 1, ...), scored against the same stored
retrains as ``benchmarks/lds.py``'s rows (a 512-dimensional Gaussian projection, no damping, as
its TRAK rows).

    .venv/bin/python benchmarks/trak_ensembles.py --case fmnist_mlp --regime practitioner \\
        --retrains benchmarks/results/lds_retrains --json benchmarks/results/trak_ensembles.json

It needs the (case, regime)'s retrains in ``--retrains`` (else it retrains them first, as
lds.py does, and stores them there) and trains the ``--trak-models`` half-data models itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import lds as lds_bench
import torch
from machine import machine_info

import influence_widgets as iw
from influence_widgets.methods.trak import ENSEMBLES


def shared_of(case_name: str, regime: str, retrains: str, trak_models: int) -> lds_bench.Shared:
    """lds.py's model, retrains and settings of a (case, regime), its TRAK rows' settings."""
    argv = [
        "--cases", case_name, "--regimes", regime, "--solvers", "", "--attributions", "trak",
        "--dattri", "", "--workers", "1", "--retrains", retrains,
        "--trak-models", str(trak_models),
    ]  # fmt: skip
    settings = lds_bench.settings_of(lds_bench.parse(argv), argv)
    return lds_bench.shared(lds_bench.CASES[case_name](settings["n_test"]), regime, settings)


def ensemble_rows(shared: lds_bench.Shared, seeds: int) -> list[dict]:
    """One row per (ensemble, projection seed) on ``shared``'s TRAK models: LDS, its standard
    error and the seconds."""
    case = shared.case
    states, _, made = shared.checkpoints("trak")
    out = []
    for ensemble in ENSEMBLES:
        for seed in range(seeds):
            start = time.perf_counter()
            trak = iw.TRAK(
                lds_bench.models_at(case, states), (case.X, case.y), progress=False,
                ensemble=ensemble, **lds_bench.trak_settings(case, seed),
            )  # fmt: skip
            scores = trak.scores(case.x_test, case.y_test).detach().double().numpy()
            result = shared.base.rescore(scores)
            out.append(
                {
                    "model": case.name,
                    "regime": shared.regime,
                    "ensemble": ensemble,
                    "seed": seed,
                    "lds": result.mean,
                    "lds_se": result.se,
                    "seconds": time.perf_counter() - start,
                    "models": len(states),
                    **made,
                }
            )
            print(f"  {ensemble} seed {seed}: LDS {result.mean:.3f} ± {result.se:.3f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--case", default="fmnist_mlp", help=f"of {', '.join(lds_bench.CASES)}")
    p.add_argument("--regime", default="practitioner")
    p.add_argument("--seeds", type=int, default=2, help="projection seeds 0 .. N-1")
    p.add_argument("--trak-models", type=int, default=10)
    p.add_argument("--retrains", default="benchmarks/results/lds_retrains")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", required=True)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    machine = machine_info("cpu", "cores", "threads", "torch", "date", "load_average_start")
    shared = shared_of(args.case, args.regime, args.retrains, args.trak_models)
    found = ensemble_rows(shared, args.seeds)
    command = "python benchmarks/trak_ensembles.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    report = {"command": command, "machine": machine, "rows": found}
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
