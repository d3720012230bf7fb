"""Training points scored per second against the number of Dask workers (issue 17, section 2).

Model: the shipped frozen Fashion-MNIST CNN extractor (``iw.models.fmnist_attack_model(10,
features="dense")``: two strided tanh convolutions and a 32-unit tanh layer) with a 10-class
linear head trained here on the extractor's features (l2 = 1e-3); influence over the head only
(``params=["1.weight", "1.bias"]``, p = 330), float32, direct solver.

Training set: the 60,000 Fashion-MNIST training images REPEATED (no augmentation) up to ``--n``
points (default 17 x 60,000 = 1,020,000, so that every image counts 17 times and the head trained on
the 60,000 is at the minimum of the repeated set's risk too), as a ``torch.utils.data.Dataset`` whose item i is image i mod 60,000 (the uint8 images
travel to each worker once, inside the pickled Dataset). Test points: the first ``--tests`` test
images, explained for their labels.

Method (rerun it on a cluster by passing ``--scheduler tcp://host:8786``): the Influence is fitted
once (one pass over the n points for H; its time is ``fit_seconds``), then

- ``workers = 0``: the single-process path, ``Influence.influence_on_loss`` in this process;
- ``workers = w``: ``iw.score_distributed`` on a fresh ``LocalCluster(n_workers=w,
  threads_per_worker=1, processes=True)`` (or the scheduler's workers), chunks of ``--chunk``
  points; the clock starts after the workers have imported torch and the package and stops when
  every score is back in this process (s_test is solved in the timed call, locally: negligible
  at p = 330).

Each row: ``points_per_second`` = n / seconds, ``peak_mb``: the peak resident memory of each
worker process over its life (VmHWM; for ``workers = 0`` this process's peak during the pass).
torch uses one thread in every process. The machine's cores are shared with other jobs
(``machine.load_average_start``, ``load_average_end``), which bounds the scaling measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from machine import machine_info
from proc_memory import reset_peak_rss

import influence_widgets as iw
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


def single_process(inf: iw.Influence, xt, yt) -> dict:
    reset_peak_rss()
    start = time.perf_counter()
    inf.influence_on_loss(xt, yt)
    seconds = time.perf_counter() - start
    return {"workers": 0, "seconds": seconds, "peak_mb": [round(peak_mb(), 1)]}


def distributed(inf: iw.Influence, xt, yt, workers: int, chunk: int, scheduler) -> dict:
    from distributed import Client, LocalCluster

    def warm() -> None:
        import influence_widgets  # noqa: F401

    if scheduler:
        cluster, client = None, Client(scheduler)
    else:
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
    try:
        client.upload_file(str(Path(__file__).with_name("proc_memory.py")))  # for peak_mb
        client.run(warm)
        start = time.perf_counter()
        iw.score_distributed(inf, xt, yt, client=client, chunk_size=chunk).compute()
        seconds = time.perf_counter() - start
        peaks = client.run(peak_mb)
        n_workers = len(peaks)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return {
        "workers": n_workers,
        "seconds": seconds,
        "peak_mb": [round(v, 1) for v in peaks.values()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--n", type=int, default=17 * FASHION_TRAIN, help="training points (default 1,020,000)"
    )
    parser.add_argument("--tests", type=int, default=10, help="test points T")
    parser.add_argument("--chunk", type=int, default=50_000, help="training points per task")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--scheduler", help="a Dask scheduler address instead of LocalClusters")
    parser.add_argument("--quick", action="store_true", help="n = 4,000, chunks of 1,000")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.chunk, args.tests = 4_000, 1_000, 3
    torch.set_num_threads(1)
    machine = machine_info(
        "cpu", "cores", "usable_cores", "threads", "torch", "python", "date", "load_average_start"
    )
    images, labels, X_test, y_test = load_images()
    model = trained_model(images[: args.n], labels[: args.n])
    train = RepeatedImages(images, labels, args.n)
    inf = iw.Influence(
        model,
        train,
        l2=L2,
        params=["1.weight", "1.bias"],
        batch_size=4096,
        solver="direct",
        gradient_cache_mb=0,  # stream: 10^6 gradients are not kept
        progress=False,
    )
    start = time.perf_counter()
    inf.fit()
    fit_seconds = time.perf_counter() - start
    xt, yt = X_test[: args.tests], y_test[: args.tests]
    runs = [single_process(inf, xt, yt)]
    runs += [distributed(inf, xt, yt, w, args.chunk, args.scheduler) for w in args.workers]
    for run in runs:
        run["points_per_second"] = round(args.n / run["seconds"], 1)
        run["seconds"] = round(run["seconds"], 2)
        print(json.dumps(run), flush=True)
    report = {
        "command": "benchmarks/scale.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine,
        "note": (
            "The 2 cores are shared with other jobs (load_average_start, load_average_end: "
            "above 2 means other processes wanted the cores too): the scaling from 1 to 2 "
            "workers measured here is bounded by that. Rerun with --scheduler on a cluster."
        ),
        "model": "fmnist_attack_model(10, features='dense'): frozen CNN extractor, "
        "influence over the 10-class head (p = 330), float32",
        "training_set": f"the 60,000 Fashion-MNIST training images repeated to n = {args.n}",
        "n_train": args.n,
        "n_test": args.tests,
        "chunk_size": args.chunk,
        "fit_seconds": round(fit_seconds, 2),
        "load_average_end": list(os.getloadavg()),
        "rows": runs,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
