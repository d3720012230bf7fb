"""Check that the Binder files build, and that every notebook runs in what they build.

mybinder.org builds this repository with repo2docker: it reads the Python version from
``binder/runtime.txt`` (one line, ``python-X.Y``; without it, repo2docker's default Python),
pip-installs ``binder/requirements.txt`` into that Python, then runs ``binder/postBuild``. The check
has two parts:

(a) resolve: pip's resolver (``install --dry-run --only-binary=:all: --python-version X.Y`` for
    Linux x86-64, against PyPI only) must find a wheel of every pin and of every dependency for that
    Python. A pin with a local version (``torch==2.13.0+cpu``) exists only on its own index (the
    ``--extra-index-url`` of the file): its wheel for ``cpXY`` is looked up in that index's file
    listing; where that index cannot be reached, the same version without the local part is looked
    up on PyPI instead, and the output says that the local build itself went unchecked.
(b) build and run, only where this Python is X.Y (else it says it skipped): a fresh virtual
    environment from ``binder/requirements.txt`` (an index line that cannot be reached is dropped,
    and said), ``binder/postBuild`` run in it, then every ``notebooks/*.ipynb`` executed headless
    (nbclient) in it, from a scratch directory. Each notebook's peak memory (the resident memory of
    the kernel and its child processes) must stay under ``--limit-gb`` (Binder gives about 2 GB).
    The numbers go to ``--json`` and are printed.

Usage: ``python3 scripts/binder_check.py`` (both parts), ``--resolve-only`` (part a).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
NOTEBOOKS = ROOT / "notebooks"
RESULTS = ROOT / "benchmarks" / "results" / "binder.json"

# repo2docker's Python when runtime.txt names none (its conda buildpack's major_pythons["3"]).
REPO2DOCKER_DEFAULT_PYTHON = "3.10"
PYPI = "https://pypi.org/simple"
# Binder's image is Linux x86-64 with a recent glibc: wheels tagged for any manylinux up to 2.35.
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(35, 16, -1)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
]
LIMIT_GB = 1.5
POLL_SECONDS = 0.05
# pip settings that would add indexes or wheels beyond the one the resolve is meant to see.
PIP_SOURCE_VARIABLES = (
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "PIP_NO_INDEX",
    "PIP_CONSTRAINT",
)


class BinderCheckError(Exception):
    """A Binder file is missing or wrong, or the environment it describes does not build or run."""


@dataclass(frozen=True)
class Pin:
    """One ``name==version`` line of requirements.txt."""

    name: str
    version: str

    @property
    def line(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def public_version(self) -> str:
        """The version without its local part: ``2.13.0`` for ``2.13.0+cpu``."""
        return self.version.split("+", 1)[0]


@dataclass(frozen=True)
class Requirements:
    """binder/requirements.txt: its option lines (``--extra-index-url URL``) and its pins."""

    options: list[str]
    pins: list[Pin]

    @property
    def extra_indexes(self) -> list[str]:
        return [o.split(None, 1)[1] for o in self.options if o.startswith("--extra-index-url")]


# --------------------------------------------------------------------------------- reading files
def read_runtime(binder: Path = BINDER) -> tuple[str, str]:
    """The Python version repo2docker builds with, as ``X.Y``, and where it comes from.

    repo2docker reads the first line of ``runtime.txt`` of the form ``python-X.Y`` (``python-3``
    alone means its default); without the file it uses :data:`REPO2DOCKER_DEFAULT_PYTHON`.
    """
    path = binder / "runtime.txt"
    if not path.exists():
        return REPO2DOCKER_DEFAULT_PYTHON, (
            f"repo2docker's default, since {path.relative_to(binder.parent)} is missing; "
            "add one line such as `python-3.11` to pin it"
        )
    runtime = path.read_text().strip()
    match = re.fullmatch(r"python-(3\.\d+)(\.\d+)?", runtime)
    if not match:
        raise BinderCheckError(
            f"binder/runtime.txt reads {runtime!r}: write one line `python-X.Y`, e.g. `python-3.11`"
            " (repo2docker takes major.minor from it; `python-3` alone means its changing default)"
        )
    return match.group(1), f"binder/runtime.txt: {runtime}"


def read_requirements(path: Path = BINDER / "requirements.txt") -> Requirements:
    """The option lines and ``name==version`` pins of a requirements file (comments dropped)."""
    options, pins = [], []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            options.append(line)
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if not match:
            raise BinderCheckError(
                f"{path.name}: {line!r} is not pinned; pin it as `name==version` so that a Binder "
                "build is reproducible"
            )
        pins.append(Pin(match.group(1), match.group(2)))
    return Requirements(options, pins)


# ------------------------------------------------------------------------------- part (a): resolve
def pypi_only_environment() -> dict[str, str]:
    """This process's environment with pip's own configuration off, so pip sees only ``--index-url``."""
    env = {k: v for k, v in os.environ.items() if k not in PIP_SOURCE_VARIABLES}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def pip_resolve(lines: list[str], python: str, index_url: str) -> subprocess.CompletedProcess:
    """``pip install --dry-run`` of these requirement lines for Python ``python`` on Linux x86-64."""
    with tempfile.TemporaryDirectory() as scratch:
        requirements = Path(scratch) / "requirements.txt"
        requirements.write_text("\n".join(lines) + "\n")
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
        command += ["--only-binary=:all:", "--implementation", "cp", "--python-version", python]
        command += [arg for p in PLATFORMS for arg in ("--platform", p)]
        command += ["--target", str(Path(scratch) / "target"), "--index-url", index_url]
        command += ["--disable-pip-version-check", "-r", str(requirements)]
        return subprocess.run(
            command, capture_output=True, text=True, env=pypi_only_environment(), check=False
        )


def _unresolvable(stderr: str) -> tuple[str, str] | None:
    """From pip's error output: the requirement it found no wheel for, and the versions it did see."""
    missing = re.search(r"No matching distribution found for (\S+)", stderr)
    if not missing:
        return None
    seen = re.search(r"\(from versions: ([^)]*)\)", stderr)
    versions = [v.strip() for v in seen.group(1).split(",")] if seen else []
    versions = [v for v in versions if v and v != "none"]
    return missing.group(1), (f"newest there: {versions[-1]}" if versions else "none at all")


def resolve_pins(pins: list[Pin], python: str, index_url: str = PYPI) -> list[str]:
    """Problems resolving these pins for Python ``python`` (empty when they all resolve).

    pip stops at its first failure; a failing pin is reported, dropped and the rest resolved
    again, so that every pin without a wheel is named at once.
    """
    problems: list[str] = []
    remaining = [p.line for p in pins]
    while remaining:
        result = pip_resolve(remaining, python, index_url)
        if result.returncode == 0:
            return problems
        found = _unresolvable(result.stderr)
        if found is None:
            tail = "\n".join(result.stderr.strip().splitlines()[-6:])
            return [*problems, f"pip could not resolve binder/requirements.txt:\n{tail}"]
        requirement, seen = found
        problems.append(
            f"{requirement} has no wheel for Python {python} on Linux x86-64 on {index_url} "
            f"({seen})"
        )
        if requirement not in remaining:  # a dependency of a pin, not a pin: nothing to drop
            return problems
        remaining.remove(requirement)
    return problems


def index_files(index_url: str, project: str) -> list[str] | None:
    """The file names an index (PEP 503/691 simple API) lists for a project; None if unreachable."""
    url = f"{index_url.rstrip('/')}/{project}/"
    accept = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
    request = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read().decode()
            kind = response.headers.get("Content-Type", "")
    except (urllib.error.URLError, OSError):
        return None
    if "json" in kind:
        return [f["filename"] for f in json.loads(body)["files"]]
    return [urllib.parse.unquote(name) for name in re.findall(r">\s*([^<>\s]+\.whl)\s*<", body)]


def has_linux_wheel(files: list[str], project: str, version: str, python: str) -> bool:
    """Whether the files hold a CPython ``python`` wheel of ``project==version`` for Linux x86-64."""
    tag = "cp" + python.replace(".", "")
    prefix = f"{project.replace('-', '_')}-{version}-{tag}-"
    return any(
        f.replace("%2B", "+").startswith(prefix) and f.endswith("x86_64.whl") and "linux" in f
        for f in files
    )


def check_local_pin(pin: Pin, python: str, extra_indexes: list[str]) -> tuple[list[str], str]:
    """Problems with a pin that has a local version (``+cpu``), and a note on what was checked."""
    for index in extra_indexes:
        files = index_files(index, pin.name)
        if files is None:
            continue
        if has_linux_wheel(files, pin.name, pin.version, python):
            return [], f"{pin.line}: a Python {python} wheel is listed on {index}"
        return [f"{pin.line} has no wheel for Python {python} on Linux x86-64 on {index}"], ""
    files = index_files(PYPI, pin.name)
    if files is None:
        return [f"{pin.line}: neither {', '.join(extra_indexes)} nor {PYPI} can be reached"], ""
    note = (
        f"{pin.line}: {', '.join(extra_indexes) or 'its index'} cannot be reached from here, so the "
        f"+{pin.version.split('+', 1)[1]} build itself is NOT checked; {pin.name}=={pin.public_version}"
        f" has a Python {python} Linux x86-64 wheel on {PYPI}"
    )
    if has_linux_wheel(files, pin.name, pin.public_version, python):
        return [], note
    return [
        f"{pin.name}=={pin.public_version} (for {pin.line}) has no wheel for Python {python} "
        f"on Linux x86-64 on {PYPI}"
    ], ""


def resolve(requirements: Requirements, python: str) -> tuple[list[str], list[str]]:
    """Part (a): the problems with the requirements for Python ``python``, and notes."""
    public = [p for p in requirements.pins if "+" not in p.version]
    problems = resolve_pins(public, python)
    resolved = f"{len(public)} pins and their dependencies resolve for Python {python} on {PYPI}"
    notes = [] if problems else [resolved]
    for pin in (p for p in requirements.pins if "+" in p.version):
        more, note = check_local_pin(pin, python, requirements.extra_indexes)
        problems += more
        notes += [note] if note else []
    return problems, notes


# --------------------------------------------------------------------- part (b): build and run
def reachable(url: str) -> bool:
    """Whether an index URL answers at all."""
    try:
        with urllib.request.urlopen(url, timeout=15):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def run(command: list[str], what: str, **kwargs) -> None:
    """Run a build step; raise naming the step and showing the end of its output if it fails."""
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise BinderCheckError(f"{what} failed (exit {result.returncode}):\n{tail}")


def venv_environment(venv: Path, home: Path) -> dict[str, str]:
    """The environment of the built venv: its bin first, nothing from this checkout on the path,
    and Jupyter's and IPython's per-user directories empty, as in a fresh Binder image."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JUPYTER_PATH")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        env[name] = str(home / name.lower())
    env["MPLCONFIGDIR"] = str(home / "matplotlib")
    return env


def build(venv: Path, requirements: Requirements, env: dict[str, str]) -> None:
    """A fresh venv from binder/requirements.txt (unreachable index lines dropped), then postBuild."""
    run([sys.executable, "-m", "venv", str(venv)], "creating the venv")
    lines = []
    for option in requirements.options:
        url = option.split(None, 1)[1] if " " in option else ""
        if url.startswith("http") and not reachable(url):
            print(
                f"  (b) dropped `{option}`: unreachable here, so the pins come from pip's configured sources"
            )
            continue
        lines.append(option)
    local = venv / "binder-requirements.txt"
    local.write_text("\n".join(lines + [p.line for p in requirements.pins]) + "\n")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-cache-dir"]
    run([*pip, "-r", str(local)], "pip install -r binder/requirements.txt", env=env)
    run(["bash", str(BINDER / "postBuild")], "binder/postBuild", env=env, cwd=ROOT)


def installed_versions(venv: Path, pins: list[Pin], env: dict[str, str]) -> dict[str, str]:
    """The versions the venv holds of the pinned packages, and of influence-widgets."""
    names = [p.name for p in pins] + ["influence-widgets"]
    code = (
        "import json, sys\nfrom importlib.metadata import version\n"
        "print(json.dumps({n: version(n) for n in sys.argv[1:]}))"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code, *names],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout)


def run_notebook_in(venv: Path, notebook: Path, env: dict[str, str], scratch: Path) -> dict:
    """Execute one notebook with the venv's Python driving nbclient (so the kernel is the venv's)."""
    workdir = scratch / notebook.stem
    workdir.mkdir()
    command = [str(venv / "bin" / "python"), str(Path(__file__).resolve())]
    command += ["--execute", str(notebook), "--workdir", str(workdir)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=workdir)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-25:])
        raise BinderCheckError(f"{notebook.name} failed in the Binder environment:\n{tail}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------- inside the venv: one notebook and its memory
def _vm_hwm_bytes(pid: int) -> int:
    """A process's peak resident memory so far (VmHWM), in bytes; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class TreeMemory:
    """Polls this process's descendants (the kernel and whatever it starts): the peak of their
    summed resident memory, and each process's own peak (VmHWM, exact between polls)."""

    def __init__(self) -> None:
        import psutil

        self._me = psutil.Process()
        self.peak_sum = 0
        self.peak_each: dict[int, int] = {}
        self.kernel_cmdline: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def sample(self) -> None:
        import psutil

        total = 0
        for child in self._me.children(recursive=True):
            try:
                total += child.memory_info().rss
                if not self.kernel_cmdline and "ipykernel_launcher" in " ".join(child.cmdline()):
                    self.kernel_cmdline = child.cmdline()
            except psutil.Error:
                continue
            self.peak_each[child.pid] = max(
                self.peak_each.get(child.pid, 0), _vm_hwm_bytes(child.pid)
            )
        self.peak_sum = max(self.peak_sum, total)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(POLL_SECONDS)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_bytes(self) -> int:
        return max([self.peak_sum, *self.peak_each.values()])


def execute(notebook: Path, workdir: Path) -> dict:
    """Run one notebook headless in this Python's kernel; its wall time and peak memory."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    with TreeMemory() as memory:
        client = NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
        )
        # Each process's own peak, read once more after every cell while the kernel is alive.
        client.on_cell_executed = lambda **_: memory.sample()
        start = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - start
    if (
        not memory.kernel_cmdline
        or Path(memory.kernel_cmdline[0]).parent != Path(sys.executable).parent
    ):
        raise BinderCheckError(f"the kernel was not this venv's Python: {memory.kernel_cmdline}")
    return {
        "notebook": notebook.name,
        "peak_mb": round(memory.peak_bytes / 1e6, 1),
        "seconds": round(seconds, 1),
    }


# ------------------------------------------------------------------------------------- main
def check_memory(rows: list[dict], limit_gb: float) -> list[str]:
    """The notebooks whose peak memory is over the limit, as messages."""
    return [
        f"{r['notebook']} peaked at {r['peak_mb'] / 1e3:.2f} GB, over the {limit_gb} GB limit "
        "(Binder gives about 2 GB): make the notebook use less"
        for r in rows
        if r["peak_mb"] > limit_gb * 1e3
    ]


def build_and_run(requirements: Requirements, python: str, limit_gb: float) -> dict:
    """Part (b): build the venv, run postBuild and every notebook; the record for the JSON."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="binder-check-") as scratch:
        scratch_dir = Path(scratch)
        venv = scratch_dir / "venv"
        env = venv_environment(venv, scratch_dir / "home")
        build(venv, requirements, env)
        build_seconds = time.perf_counter() - started
        print(f"  (b) venv built and postBuild run in {build_seconds:.0f} s")
        versions = installed_versions(venv, requirements.pins, env)
        rows = []
        for notebook in sorted(NOTEBOOKS.glob("*.ipynb")):
            row = run_notebook_in(venv, notebook, env, scratch_dir)
            print(f"  (b) {row['notebook']}: peak {row['peak_mb']:.0f} MB, {row['seconds']:.0f} s")
            rows.append(row)
    return {
        "what": (
            "Peak resident memory (kernel and its child processes, MB = 1e6 bytes) of each notebook "
            "run headless in a fresh venv built from binder/ (scripts/binder_check.py)"
        ),
        "python": platform.python_version(),
        "runtime": f"python-{python}",
        "limit_gb": limit_gb,
        "installed": versions,
        "machine": {
            "platform": platform.platform(),
            "cores": os.cpu_count(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "build_seconds": round(build_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "notebooks": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolve-only", action="store_true", help="part (a) only")
    parser.add_argument(
        "--python", help="resolve for this X.Y instead of binder/runtime.txt's (part a only)"
    )
    parser.add_argument("--json", type=Path, default=RESULTS, help="where part (b) writes")
    parser.add_argument("--limit-gb", type=float, default=LIMIT_GB)
    parser.add_argument("--execute", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.execute:  # inside the built venv: one notebook
        print(json.dumps(execute(args.execute, args.workdir)))
        return 0
    try:
        return check(args)
    except BinderCheckError as error:
        print(f"binder check FAILED: {error}", file=sys.stderr)
        return 1


def check(args: argparse.Namespace) -> int:
    python, source = read_runtime()
    if args.python:
        python, source = args.python, "--python"
    requirements = read_requirements()
    print(f"binder check: Python {python} ({source})")
    problems, notes = resolve(requirements, python)
    for note in notes:
        print(f"  (a) {note}")
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise BinderCheckError(
            f"binder/requirements.txt does not install on Python {python} ({source}):\n{listed}\n"
            "Pin a Python that has these builds in binder/runtime.txt, or pin versions built "
            "for this one."
        )
    if args.resolve_only or args.python:
        return 0
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if here != python:
        print(f"  (b) SKIPPED: this Python is {here}, binder/runtime.txt pins {python}")
        return 0
    record = build_and_run(requirements, python, args.limit_gb)
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    print(f"  (b) wrote {args.json}; {record['total_seconds']:.0f} s in all")
    over = check_memory(record["notebooks"], args.limit_gb)
    if over:
        raise BinderCheckError("\n".join(over))
    return 0


if __name__ == "__main__":
    sys.exit(main())
