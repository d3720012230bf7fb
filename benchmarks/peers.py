"""This package against pyDVL, Captum and Kronfluence on the same trained models: speed, accuracy,
memory.

Every case trains its model once in this (parent) process, then for each repeat runs every
(system, solver) in turn, each in its own child process (``peers.py --child``) that warms the
system up on a tiny problem and then times only the influence work (construction, fit, the
all-train T x n influence matrix) and reads its peak resident memory. Every matrix is mapped onto
one quantity, I_ref, and compared with our float64 reference (Pearson r, relative error); seconds
are medians over repeats; a child past ``--time-limit``, a crash or an exception becomes a row with
``seconds: null`` and a ``note``, never a number. The issue's targets are met or missed per case.

On a GPU (``--device cuda`` or ``cuda:N``; default ``cpu``) every child moves the model and all
data (training and test tensors, hence every DataLoader batch) to that device before the warm-up;
ours gets ``device=``, pyDVL computes on its model's device, Captum on the model's and the
batches', Kronfluence with ``Analyzer(cpu=False)`` on the current CUDA device (the child sets it to
the one named). Training stays in the parent on the CPU. The timed work ends with
``torch.cuda.synchronize()`` (and waits for queued work before it starts); each row names its
``device`` and adds the GPU's peak allocated memory during the influence work (``peak_gpu_mb``,
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``) beside VmHWM; the machine
facts name the device and the GPU. On the CPU nothing else changes. Rows of another device are not
mixed into one file (``--append``, ``--include`` refuse them).

This file is the command line; the benchmark lives in benchmarks/peer_systems/, whose module
docstrings say the details:

* ``base.py``: what an adapter of one system implements, and the registry of adapters by system
  name (``--systems`` offers the registered ones); the normalisation onto
  I_ref = -grad L(z_test)^T (H + damping I)^-1 grad L(z_i);
* ``ours.py``, ``pydvl.py``, ``captum.py``, ``kronfluence.py``: one adapter per system, each with
  its settings, regularisation (the peers' losses have no L2 term: the L2 and the damping go into
  their Hessian regularisation), timed call and normalisation;
* ``cases.py``: the four cases (data, model, l2, damping, the peers' DataLoader batches, and which
  (system, solver) runs in which order);
* ``child.py``: what runs inside a child (loading, warm-up, timing, memory: VmHWM, ``+MB``);
* ``runner.py``: the children of a case, the reference and the accuracy (Pearson r and relative
  Frobenius error), divergence, the rows;
* ``report.py``, ``targets.py``, ``table.py``: the JSON file and its merging, the issue's targets,
  the printed and Markdown tables.

A new peer is a module there with an adapter that registers itself, named in
``peer_systems.ADAPTER_MODULES``, and its (system, solver) runs in the cases of ``cases.py``.

Run from the repository root (``make bench-peers`` sets up .venv-peers and runs the first):

    .venv-peers/bin/python benchmarks/peers.py --json benchmarks/results/peers.json
    .venv-peers/bin/python benchmarks/peers.py --quick --json /tmp/peers_quick.json   # < 3 minutes
    .venv/bin/python benchmarks/peers.py --quick --systems ours --json /tmp/peers_ours.json
    python benchmarks/peers.py --device cuda --cases 1,2 --systems ours,pydvl,captum,kronfluence \
        --json peers_cuda.json                                   # on a GPU machine

Flags: ``--cases 1,2,3,4``, ``--systems ours,pydvl,captum,kronfluence``, ``--device cpu|cuda|cuda:N``
(default cpu), ``--repeats N`` (default 3 for cases 1-2, 1 for cases 3-4), ``--quick`` (case 1 on 20 test points, one repeat), ``--time-limit`` seconds
per child (900), ``--threads`` (default: usable cores), ``--case4-n-train``, ``--rank``,
``--n-test`` (fewer test points, for smoke runs), ``--keep-tmp``, ``--json PATH`` (written after
every run, ``complete: false`` until the end), ``--append`` (keep the rows of --json this run does
not redo). Child processes run on the same machine one at a time; timings on a shared machine are
only indicative. Two runs may go in parallel, one per core (``--threads 1``), each appending to its
own copy of the JSON; ``--merge-only --include COPY --cases ... --systems ... --solvers ...`` then
copies the selected rows of a copy into --json (with their cases' records, commands, seconds and
machines; both files must name the same package versions) and recomputes the targets.
``--markdown PATH`` writes the tables of benchmarks/README.md; ``--merge-only --json FILE
--markdown PATH`` writes those of an existing file and leaves it as it is.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from machine import usable_cores
from peer_systems.base import adapters, solvers, systems
from peer_systems.cases import DEFAULT_RANK, make_cases
from peer_systems.child import child_main
from peer_systems.report import Saver, append_to, include_file, new_report
from peer_systems.runner import run_case
from peer_systems.table import markdown_tables, print_report

from influence_widgets.core.model_checks import resolve_device

DEFAULT_TIME_LIMIT = 900.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--quick", action="store_true", help="case 1 only, one repeat")
    parser.add_argument("--cases", help="comma-separated subset of 1,2,3,4 (default all)")
    parser.add_argument("--systems", help=f"comma-separated subset of {','.join(systems())}")
    parser.add_argument(
        "--solvers", help=f"comma-separated subset of {','.join(solvers())} (default all)"
    )
    parser.add_argument("--repeats", type=int, help="repeats of every case (default 3 / 1)")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=DEFAULT_TIME_LIMIT,
        help="seconds one child may run before it is killed (default 900)",
    )
    parser.add_argument("--threads", type=int, help="torch threads per child (default: cores)")
    parser.add_argument(
        "--device", default="cpu", help="where every child computes: cpu (default), cuda, cuda:N"
    )
    parser.add_argument(
        "--case4-n-train",
        type=int,
        default=5000,
        help="Fashion-MNIST training points of case 4 (default 5000)",
    )
    parser.add_argument(
        "--rank",
        type=int,
        default=DEFAULT_RANK,
        help="rank of every low-rank method in case 4 (default 50)",
    )
    parser.add_argument(
        "--n-test", type=int, help="test points of every case (default 100 / 10; for smoke runs)"
    )
    add_merge_arguments(parser)
    parser.add_argument("--keep-tmp", action="store_true", help="keep the child run directory")
    parser.add_argument("--child", metavar="SPEC", help=argparse.SUPPRESS)
    return parser


def add_merge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--append",
        action="store_true",
        help="keep the rows already in --json of every (case, system, solver) this run does not "
        "redo (a run split over sessions, or one peer rerun with another --time-limit)",
    )
    parser.add_argument(
        "--include",
        type=Path,
        action="append",
        default=[],
        metavar="JSON",
        help="copy into --json the rows of another run's JSON that --cases, --systems and "
        "--solvers select, with their cases' records (runs done in parallel, one per core); "
        "may be repeated",
    )
    parser.add_argument(
        "--merge-only",
        action="store_true",
        help="run nothing: merge --include into --json (implies --append), or with --markdown "
        "alone write the tables of --json without changing it",
    )
    parser.add_argument(
        "--markdown", type=Path, help="also write the README's tables (one per case) to this file"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.child:
        return args
    try:
        args.device = resolve_device(args.device, torch.device("cpu"))
    except ValueError as err:
        parser.error(f"--{err}")
    if args.device.type not in ("cpu", "cuda"):
        parser.error(f"--device: {str(args.device)!r} is not supported here; pass cpu or cuda")
    args.case_list = case_list(parser, args)
    args.system_list = subset(parser, args.systems, systems(), "--systems")
    args.solver_list = subset(parser, args.solvers, solvers(), "--solvers")
    check_numbers(parser, args)
    check_files(parser, args)
    args.append = args.append or args.merge_only
    if args.quick and args.repeats is None:
        args.repeats = 1
    return args


def case_list(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[int]:
    """The numbers of ``--cases`` (``--quick``: case 1; default: all four)."""
    if args.quick and args.cases:
        parser.error("--quick runs case 1 only; leave out --cases or --quick")
    if not args.cases:
        return [1] if args.quick else [1, 2, 3, 4]
    try:
        chosen = sorted({int(c) for c in args.cases.split(",") if c.strip()})
    except ValueError:
        parser.error(f"--cases: expected numbers from 1,2,3,4, got {args.cases!r}")
    bad = [c for c in chosen if c not in (1, 2, 3, 4)]
    if bad or not chosen:
        parser.error(f"--cases: unknown case(s) {bad}; choose from 1,2,3,4")
    return chosen


def subset(
    parser: argparse.ArgumentParser, value: str | None, choices: tuple[str, ...], flag: str
) -> list[str]:
    """The comma-separated ``value`` of ``flag``, each one of ``choices`` (default: all)."""
    if not value:
        return list(choices)
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    bad = sorted(set(chosen) - set(choices))
    if bad or not chosen:
        parser.error(f"{flag}: unknown {bad}; choose from {', '.join(choices)}")
    return chosen


def check_numbers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats: must be >= 1, got {args.repeats}")
    if args.time_limit <= 0:
        parser.error(f"--time-limit: must be > 0, got {args.time_limit}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads: must be >= 1, got {args.threads}")
    if args.case4_n_train < 100:
        parser.error(f"--case4-n-train: must be >= 100, got {args.case4_n_train}")
    if args.n_test is not None and args.n_test < 1:
        parser.error(f"--n-test: must be >= 1, got {args.n_test}")
    if not 1 <= args.rank <= 1000:
        parser.error(f"--rank: must be between 1 and 1000, got {args.rank}")


def check_files(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for path in args.include:
        if not path.is_file():
            parser.error(f"--include: no such file {str(path)!r}")
    if args.merge_only and not (args.json and (args.include or args.markdown)):
        parser.error(
            "--merge-only needs --json and --include (the runs to merge into it) or --markdown "
            "(where to write its tables)"
        )
    if args.merge_only and not args.include and not args.json.is_file():
        parser.error(f"--markdown: no results to write tables of: {str(args.json)!r} is missing")


def check_peers_importable(system_list: list[str]) -> None:
    """SystemExit where a selected peer's package does not import."""
    for adapter in adapters():
        if adapter.module and adapter.name in system_list:
            try:
                importlib.import_module(adapter.module)
            except ImportError as err:
                raise SystemExit(
                    f"--systems includes {adapter.name} but {adapter.module} does not import "
                    f"({err}); run `make bench-peers` (it sets up .venv-peers) or pass --systems ours"
                ) from err


def exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    from tqdm.auto import tqdm

    signal.signal(signal.SIGTERM, exit_on_sigterm)  # so that a running child is killed too

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyDVL's import-time deprecation notices
        if not args.merge_only:
            check_peers_importable(args.system_list)
    threads = args.threads or usable_cores()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    cases = make_cases(args.case4_n_train, args.rank, quick=args.quick)
    command = shlex.join([sys.executable, *sys.argv])
    workroot = Path(tempfile.mkdtemp(prefix="iw-peers-"))
    report = new_report(str(args.device), args.quick, args.time_limit, command)
    if args.append and args.json and args.json.exists():
        device = None if args.merge_only else str(args.device)
        append_to(report, args.json, device, args.merge_only)
    for number, path in enumerate(args.include):
        include_file(report, path, args, first=number == 0)
    tables_only = args.merge_only and not args.include  # --json is read, not written
    save = Saver(report, args.json, command, args.time_limit, tables_only, start)
    try:
        for number in [] if args.merge_only else args.case_list:
            run_case(cases[number], args, threads, workroot, report, save, tqdm)
    finally:
        if not args.keep_tmp:
            shutil.rmtree(workroot, ignore_errors=True)
        else:
            print(f"child files kept in {workroot}", file=sys.stderr)
    finish(report, args, save, tables_only)
    return 0


def finish(report: dict, args: argparse.Namespace, save: Saver, tables_only: bool) -> None:
    """The last save (``complete: true``), the table, and the Markdown tables if asked."""
    if not args.merge_only:
        report["machine"]["load_average_end"] = list(os.getloadavg())
    save(complete=True)
    print_report(report)
    if args.json and not tables_only:
        print(f"wrote {args.json}")
    if args.markdown:
        args.markdown.write_text(markdown_tables(report))
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    sys.exit(main())
