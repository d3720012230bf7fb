"""``make lab``, the first command, in a fresh clone: JupyterLab starts and answers, run as root
(a container, CI: JupyterLab refuses root without ``--allow-root``) or as any other user.

What it covers: the committed Makefile's ``lab`` recipe, run by ``make`` in a ``git clone`` of this
repository's HEAD (uncommitted changes are not in the clone), until the server answers with the
clone's ``notebooks/01_quickstart.ipynb``; then the process group is stopped. Run as root, the
second test also checks that uid 65534 gets no ``--allow-root`` (make's plan only: the tests'
interpreter may lie where that user cannot run it). What it does not cover: the install step. The
clone's ``.venv/bin`` is a link to the environment running the tests and ``.venv/.stamp-install``
is touched, so ``make`` finds the install up to date and runs only ``jupyter lab`` (its plan is
checked to be that one line); ``make test`` in a fresh clone, as ``.ci/run`` does, runs the install.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.processes import stop_process_group

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = "notebooks/01_quickstart.ipynb"
NOBODY = 65534  # the ordinary user a root run drops to for the second test
START_SECONDS = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, token: str) -> int:
    """The status code of GET ``url`` with the token, bypassing any proxy."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with opener.open(request, timeout=2.0) as response:
        return response.status


def _fresh_clone(base: Path) -> Path:
    if not (REPO / ".git").exists():
        pytest.skip(f"{REPO} is not a git checkout (an sdist?): nothing to clone")
    clone = base / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    venv = clone / ".venv"
    venv.mkdir()
    (venv / "bin").symlink_to(Path(sys.prefix) / "bin")  # jupyter from the tests' environment
    (venv / ".stamp-install").touch()  # newer than the clone's pyproject.toml: no reinstall
    return clone


def _make_env(base: Path, token: str) -> dict[str, str]:
    """A clean make (no MAKEFLAGS from an enclosing ``make test``), no proxy, and Jupyter's user
    folders under ``base``, so that neither the user's config nor their runtime files are used."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "JUPYTER_TOKEN")
        and not k.lower().endswith("_proxy")
    }
    for var, sub in (
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
    ):
        (base / sub).mkdir(exist_ok=True)
        env[var] = str(base / sub)
    env["JUPYTER_TOKEN"] = token
    return env


def _run_make_lab(base: Path, as_nobody: bool, start: bool = True) -> None:
    """``make lab`` in a fresh clone under ``base``: its plan (``make -n``), then, with ``start``,
    the run itself until JupyterLab answers; as uid 65534 with ``as_nobody`` (the caller is root)."""
    clone = _fresh_clone(base)
    token, port = secrets.token_hex(16), _free_port()
    env = _make_env(base, token)
    user: dict = {}
    if as_nobody:
        for folder, dirs, files in os.walk(base):  # never into the .venv/bin link
            for name in (".", *dirs, *files):
                os.lchown(os.path.join(folder, name), NOBODY, NOBODY)
        user = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    lab_args = (
        f"LAB_ARGS=--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} "
        "--ServerApp.port_retries=0"
    )
    make = ["make", "--no-print-directory", "lab", lab_args]

    # make's plan ends with the recipe line, with --allow-root for uid 0 only; where the server is
    # to start, .venv is found installed and that line is the whole plan (no venv, no pip)
    plan = subprocess.run(
        [*make, "-n"], cwd=clone, env=env, capture_output=True, text=True, timeout=60, **user
    )
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    line = lines[-1]
    assert len(lines) == 1 or not start, plan.stdout
    assert line.startswith(".venv/bin/jupyter lab ") and line.endswith(f" {NOTEBOOK}"), line
    root = not as_nobody and os.geteuid() == 0
    assert ("--allow-root" in line.split()) == root, line
    if not start:
        return

    log_path = base / "make-lab.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            make,
            cwd=clone,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **user,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"make lab exited with {proc.returncode} before JupyterLab answered:\n"
                    + log_path.read_text(errors="replace")[-3000:],
                    pytrace=False,
                )
            with contextlib.suppress(urllib.error.URLError, OSError):
                if _get(f"{url}/api/status", token) == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"JupyterLab did not answer /api/status within {START_SECONDS} s:\n"
                    + log_path.read_text(errors="replace")[-3000:],
                    pytrace=False,
                )
            time.sleep(0.5)
        # given a notebook, jupyter serves its folder: the clone's notebooks/, the quickstart in it
        log = log_path.read_text(errors="replace")
        assert f"Serving notebooks from local directory: {clone / 'notebooks'}" in log, log
        name = Path(NOTEBOOK).name
        assert _get(f"{url}/api/contents/{name}?content=0", token) == 200
        assert _get(f"{url}/lab/tree/{name}", token) == 200
    finally:
        stop_process_group(proc)


@pytest.mark.slow
def test_make_lab_starts_jupyterlab_in_a_fresh_clone(tmp_path: Path):
    """As the user running the tests: root on CI and in containers (the --allow-root path)."""
    _run_make_lab(tmp_path, as_nobody=False)


@pytest.fixture
def nobody_base():
    """A folder for a clone that uid 65534 can use (pytest's tmp_path is root's only); root only."""
    if os.geteuid() != 0:
        pytest.skip("not root: the run as the current user is the ordinary user's path")
    base = Path(tempfile.mkdtemp(prefix="make-lab-"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_make_lab_plans_no_allow_root_for_an_ordinary_user(nobody_base: Path):
    """As uid 65534, dropped to from root: make's plan has no --allow-root. (It may also plan a
    venv: the tests' interpreter may be out of that user's reach; only the plan is checked.)"""
    _run_make_lab(nobody_base, as_nobody=True, start=False)
