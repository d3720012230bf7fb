"""Throughput against the number of Dask workers: training points scored per second (issue 17,
section 2) and LDS retrains per second (issue 25), each with 0 workers (this process), then 1, 2, ...

Scoring (``kind: "scoring"``). Model: the shipped frozen Fashion-MNIST CNN extractor
(``iw.models.fmnist_attack_model(10, features="dense")``: two strided tanh convolutions and a
32-unit tanh layer) with a 10-class linear head trained here on the extractor's features (l2 =
1e-3); influence over the head only (``params=["1.weight", "1.bias"]``, p = 330), float32, direct
solver. Training set: the 60,000 Fashion-MNIST training images REPEATED (no augmentation) up to
``--n`` points (default 17 x 60,000 = 1,020,000, so that every image counts 17 times and the head
trained on the 60,000 is at the minimum of the repeated set's risk too), as a
``torch.utils.data.Dataset`` whose item i is image i mod 60,000 (the uint8 images travel to each
worker once, inside the pickled Dataset). Test points: the first ``--tests`` test images, explained
for their labels. The Influence is fitted once (its time is ``fit_seconds``), then

- ``workers = 0``: ``Influence.influence_on_loss`` in this process;
- ``workers = w``: ``iw.score_distributed`` on w workers, ``chunk_size`` = ``--chunk`` (default
  None: the library's balanced chunks, ``balanced_chunk_size``); the clock stops when every score
  is back in this process (s_test, p = 330, is solved inside the timed call).

LDS retrains (``kind: "lds_retrain"``). ``iw.lds`` with the default recipe (re-initialise, then
full-batch L-BFGS, l2 = 1e-2, at most ``--lds-max-iter`` iterations) of a 64-64-10 ReLU MLP
(float64, 4,810 parameters, every one retrained) on ``--lds-subsets`` random halves of the 1,300
digits training points, each trained twice (the noise floor), 10 test points; the scores are the
top layer's ``predicted_removal_effect`` (not timed). ``workers = 0``: one retrain after another in
this process; ``workers = w``: ``iw.lds(..., client=client)``, one task per retrain;
``same_as_in_process``: every output equals the in-process run's.

Workers: a fresh ``influence_widgets.dask_cluster.local_client(w)`` per w (the LocalCluster
``score_distributed(n_workers=w)`` and ``lds(n_workers=w)`` start: one process and one torch thread
per worker), or the workers of ``--scheduler tcp://host:8786``. Before any clock starts, every
worker (and this process) runs a tiny scoring and a tiny training, so that torch's imports on
first use are not timed (this process had made them in ``fit()``); the clock includes sending the
data to the workers. torch uses one thread in every process.

Each row: ``seconds``, ``points_per_second`` = n / seconds or ``retrains_per_second``,
``peak_mb`` (scoring: the peak resident memory of each worker process over its life, VmHWM; for
``workers = 0`` this process's peak during the pass) and ``load_average`` (os.getloadavg() when the
row started: above the number of cores, other processes wanted them too and the row is an upper
bound on the time). ``--kinds`` runs some kinds only; with ``--json`` the rows of the other kinds
already in that file are kept.

Where the time went (profiled with per-thread CPU times, py-spy and cProfile on 2 cores that
other jobs kept at load average 2-5, so CPU seconds, not wall time; n = 100,000, chunks of
25,000), the costs a worker paid that the single process did not, largest first:

1. glibc's memory mapping: Dask starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which turns
   off glibc's adaptive mmap threshold, so every batch's activations were mapped and unmapped:
   50,000 points in a plain process took 570,000 minor page faults and 1.2 s system time with it,
   326,000 and 0.7 s without (CPU +12-25%); in a worker, the task thread's CPU for 100,000 points
   was 7.6-7.9 s with it and 6.1-6.4 s without. Now unset by ``local_client``.
2. torch's imports on first use (``torch._dynamo``, sympy: about 800 modules at the first
   ``vmap``/``jvp``): 1.6-2.2 s CPU in each worker's first task, inside the clock; the single
   process had paid them in ``fit()``. Now made before the clock, as for the single process.
3. Balance: 240,000 points in chunks of 50,000 (this script's old default) are 5 tasks, 3 on one
   of 2 workers (at most 1.6x); 65,536 gives 3 full chunks and one of 43,392 (at most 1.83x).
   Now equal chunks, a multiple of the worker threads (4 x 60,000).
4. Sending the Dataset (47.5 MB of images) to each worker: 0.11 s to serialize, 0.16 s to
   deserialize per worker, 0.4-0.5 s in all; kept, inside the clock.
5. The client process (scheduler, nanny and client on one event loop): 0.4-0.85 s CPU per run,
   the Dataset's serialization included; on 2 cores it competes with 2 workers. Kept.
6. Each worker's event loop: 0.4-0.8 s CPU per 100,000 points with Dask's statistical profiler
   (samples the task thread every 10 ms), 0.2-0.4 s without (2-5% of the task's CPU). Now off
   (it feeds a dashboard this cluster does not start).
7. Rebuilding an ``Influence`` per chunk: 0.10 s (its label check reads 4,096 Dataset items),
   about 4% of a 60,000-point chunk. Kept: it checks each chunk's items.

Steady state, a worker's task thread needs the CPU a plain process needs for the same chunk
(scattered or loaded from a file in the worker: 1.8-2.2 s per 25,000 points, against 2.0-2.2 s
here), torch uses one thread in every worker (``OMP_NUM_THREADS=1`` from Dask's nanny), and
gathering the (T, n) scores is negligible (10 x 240,000 float32 = 9.6 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from machine import machine_info
from proc_memory import reset_peak_rss

import influence_widgets as iw
from influence_widgets.dask_cluster import local_client
from influence_widgets.fashion_mnist_files import fashion_mnist

L2 = 1e-3
FASHION_TRAIN = 60_000


class RepeatedImages(torch.utils.data.Dataset):
    """n items (x, y): Fashion-MNIST training image i mod 60,000 as 784 floats in [0, 1]."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, n: int) -> None:
        self.images = torch.from_numpy(images)  # (60000, 784) uint8
        self.labels = torch.from_numpy(labels)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        j = i % len(self.images)
        return self.images[j].float() / 255.0, self.labels[j]


def load_images() -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
    data = fashion_mnist(progress=False)
    images = np.rint(np.asarray(data.X_train) * 255.0).astype(np.uint8)
    return images, np.asarray(data.y_train), torch.as_tensor(data.X_test), data.y_test


def trained_model(images: np.ndarray, labels: np.ndarray) -> torch.nn.Module:
    """The extractor with its head trained to the minimum of the L2-regularised risk on the
    images' features: the minimum for the repeated set too when n is a multiple of 60,000."""
    model = iw.models.fmnist_attack_model(10, dtype=torch.float32, features="dense")
    with torch.no_grad():
        phi = model[0](torch.from_numpy(images).float() / 255.0).double()
    head = torch.nn.Linear(phi.shape[1], 10, dtype=torch.float64)
    iw.train(head, (phi, torch.from_numpy(labels)), l2=L2, progress=False)
    model[1].load_state_dict({k: v.float() for k, v in head.state_dict().items()})
    return model


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM: since its exec, unlike ru_maxrss, which a
    spawned worker inherits from the process that forked it), in MB."""
    from proc_memory import status_kb

    return (status_kb("VmHWM") or 0) / 1024


KINDS = ("scoring", "lds_retrain")
LDS_L2 = 1e-2
LDS_TESTS = 10


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def warm_up(model: torch.nn.Module) -> None:
    """A tiny scoring with ``model`` and a tiny training: torch's imports on first use (1.6-2.2 s
    in a fresh process) happen here, before any clock."""
    torch.set_num_threads(1)
    x, y = torch.rand(8, 784), torch.arange(8) % 10
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not at a minimum: these numbers are not used
        inf = iw.Influence(model, (x, y), l2=L2, params=["1.weight", "1.bias"], progress=False)
        inf.influence_on_loss(x[:2], y[:2])
        iw.train(net.double(), (torch.randn(8, 4).double(), torch.arange(8) % 2), progress=False)


@contextmanager
def workers(n: int, scheduler: str | None, model: torch.nn.Module) -> Iterator:
    """A Client of n fresh local workers (or of ``scheduler``'s), every worker warmed up."""
    from distributed import Client

    with Client(scheduler) if scheduler else local_client(n, "benchmarks/scale.py") as client:
        client.upload_file(str(Path(__file__).with_name("proc_memory.py")))  # for peak_mb
        client.run(warm_up, model)
        yield client


# ----- scoring -----------------------------------------------------------------------------------
def score_here(inf: iw.Influence, xt, yt) -> dict:
    row = {"kind": "scoring", "workers": 0, "load_average": load_average()}
    reset_peak_rss()
    start = time.perf_counter()
    inf.influence_on_loss(xt, yt)
    seconds = time.perf_counter() - start
    return {**row, "seconds": seconds, "peak_mb": [round(peak_mb(), 1)]}


def score_on(client, inf: iw.Influence, xt, yt, chunk: int | None) -> dict:
    row = {"kind": "scoring", "workers": len(client.nthreads()), "load_average": load_average()}
    start = time.perf_counter()
    iw.score_distributed(inf, xt, yt, client=client, chunk_size=chunk).compute(scheduler=client)
    seconds = time.perf_counter() - start
    peaks = client.run(peak_mb)
    return {**row, "seconds": seconds, "peak_mb": [round(v, 1) for v in peaks.values()]}


def scoring_setup(args) -> tuple[iw.Influence, torch.Tensor, torch.Tensor, dict]:
    """The fitted Influence over the repeated images, the test points, and what the JSON says
    about them."""
    images, labels, X_test, y_test = load_images()
    model = trained_model(images[: args.n], labels[: args.n])
    inf = iw.Influence(
        model,
        RepeatedImages(images, labels, args.n),
        l2=L2,
        params=["1.weight", "1.bias"],
        batch_size=4096,
        solver="direct",
        gradient_cache_mb=0,  # stream: 10^6 gradients are not kept
        progress=False,
    )
    start = time.perf_counter()
    inf.fit()
    about = {
        "model": "fmnist_attack_model(10, features='dense'): frozen CNN extractor, "
        "influence over the 10-class head (p = 330), float32",
        "training_set": f"the 60,000 Fashion-MNIST training images repeated to n = {args.n}",
        "n_train": args.n,
        "n_test": args.tests,
        "chunk_size": args.chunk,
        "fit_seconds": round(time.perf_counter() - start, 2),
    }
    return inf, X_test[: args.tests], y_test[: args.tests], about


# ----- LDS retrains ------------------------------------------------------------------------------
def lds_setup(args) -> tuple[dict, dict]:
    """The keyword arguments of every timed ``iw.lds`` call (a trained digits MLP, its top
    layer's scores), and what the JSON says about them."""
    data = iw.datasets.digits()
    X, y = data.X_train.double(), data.y_train
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 64, dtype=torch.float64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 10, dtype=torch.float64),
    )
    iw.train(model, (X, y), l2=LDS_L2, max_iter=args.lds_max_iter, progress=False)
    xt, yt = data.X_test[:LDS_TESTS].double(), data.y_test[:LDS_TESTS]
    inf = iw.Influence(model, (X, y), l2=LDS_L2, params=["2.weight", "2.bias"], progress=False)
    call = {
        "influence_or_scores": inf.predicted_removal_effect(xt, yt),
        "data": (X, y),
        "x_test": xt,
        "y_test": yt,
        "model": model,
        "l2": LDS_L2,
        "subsets": args.lds_subsets,
        "max_iter": args.lds_max_iter,
        "progress": False,
    }
    about = {
        "model": "64-64-10 ReLU MLP on the digits (float64, 4,810 parameters, all retrained)",
        "recipe": f"TrainFromScratch: L-BFGS, l2 = {LDS_L2}, at most {args.lds_max_iter} "
        "iterations",
        "n_train": len(X),
        "subsets": args.lds_subsets,
        "retrains": 2 * args.lds_subsets,
        "n_test": LDS_TESTS,
    }
    return call, about


def lds_row(call: dict, client, reference: iw.LDSResult | None) -> tuple[dict, iw.LDSResult]:
    """Time one ``iw.lds`` (``client=None``: in this process); the row and the result."""
    n_workers = 0 if client is None else len(client.nthreads())
    row = {"kind": "lds_retrain", "workers": n_workers, "load_average": load_average()}
    start = time.perf_counter()
    result = iw.lds(**call, client=client)
    seconds = time.perf_counter() - start
    retrains = 2 * result.n_subsets
    row.update(seconds=seconds, retrains=retrains, retrains_per_second=round(retrains / seconds, 3))
    if reference is not None:
        row["same_as_in_process"] = bool(
            np.array_equal(result.actual, reference.actual)
            and np.array_equal(result.rerun, reference.rerun)
        )
    return row, result


# ----- the runs and the JSON ---------------------------------------------------------------------
def run_all(args) -> tuple[list[dict], dict]:
    """Every row asked for: this process first, then each number of workers (one fresh cluster
    per number, shared by the kinds)."""
    rows, about = [], {}
    model = iw.models.fmnist_attack_model(10, dtype=torch.float32, features="dense")
    warm_up(model)
    if "scoring" in args.kinds:
        inf, xt, yt, about["scoring"] = scoring_setup(args)
        rows.append(score_here(inf, xt, yt))
    if "lds_retrain" in args.kinds:
        call, about["lds_retrain"] = lds_setup(args)
        lds_here, reference = lds_row(call, None, None)
        rows.append(lds_here)
    for w in args.workers:
        with workers(w, args.scheduler, model) as client:
            if "scoring" in args.kinds:
                rows.append(score_on(client, inf, xt, yt, args.chunk))
            if "lds_retrain" in args.kinds:
                rows.append(lds_row(call, client, reference)[0])
    for row in rows:
        if row["kind"] == "scoring":
            n = about["scoring"]["n_train"]
            row["points_per_second"] = round(n / row["seconds"], 1)
        row["seconds"] = round(row["seconds"], 2)
        print(json.dumps(row), flush=True)
    return sorted(rows, key=lambda r: KINDS.index(r["kind"])), about


def report(args, command: str, machine: dict, rows: list[dict], about: dict) -> dict:
    """The JSON: this run's rows and settings, and, from an existing ``--json`` file, the rows
    (and settings) of the kinds not run now."""
    old = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
    kept = [r for r in old.get("rows", []) if r.get("kind", "scoring") not in args.kinds]
    scoring = about.get("scoring") or {k: old[k] for k in SCORING_KEYS if k in old}
    lds = about.get("lds_retrain") or old.get("lds_retrain")
    out = {
        "command": command,
        "machine": machine,
        "note": (
            "The cores may be shared with other jobs: each row's load_average (at its start) "
            "above the number of cores means other processes wanted them too, and the row's "
            "time is an upper bound. Rerun with --scheduler on a cluster."
        ),
        **scoring,
        "load_average_end": list(os.getloadavg()),
        "rows": sorted(kept + rows, key=lambda r: KINDS.index(r.get("kind", "scoring"))),
    }
    if lds is not None:
        out["lds_retrain"] = lds
    if kept:
        out["kept_rows_from"] = old.get("kept_rows_from", old.get("command"))
    return out


SCORING_KEYS = ("model", "training_set", "n_train", "n_test", "chunk_size", "fit_seconds")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument(
        "--n", type=int, default=17 * FASHION_TRAIN, help="training points (default 1,020,000)"
    )
    parser.add_argument("--tests", type=int, default=10, help="test points T")
    parser.add_argument(
        "--chunk", type=int, default=None, help="training points per task (default: balanced)"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--scheduler", help="a Dask scheduler address instead of LocalClusters")
    parser.add_argument("--lds-subsets", type=int, default=20, help="LDS subsets (2 retrains each)")
    parser.add_argument("--lds-max-iter", type=int, default=300, help="L-BFGS iterations at most")
    parser.add_argument("--quick", action="store_true", help="n = 4,000; 3 LDS subsets")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.tests, args.lds_subsets, args.lds_max_iter = 4_000, 3, 3, 30
    torch.set_num_threads(1)
    machine = machine_info(
        "cpu", "cores", "usable_cores", "threads", "torch", "python", "date", "load_average_start"
    )
    rows, about = run_all(args)
    command = "benchmarks/scale.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.json:
        out = report(args, command, machine, rows, about)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
