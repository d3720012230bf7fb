"""The browser layer: headless Chromium driving JupyterLab 4 and Notebook 7 with real widgets.

One JupyterLab server and one Notebook server per session (started on first use, each on
127.0.0.1 with a free port, a random token and its own config, data and runtime folders), one
Chromium per session and a fresh browser context per test. Each test writes its notebook with
nbformat into the server's root folder, opens it through the UI and runs it from the Run menu.

Needs ``chromium`` on PATH and the ``playwright`` Python package (``playwright install`` is not
used: the system Chromium is launched directly). Without them the layer is skipped, or fails when
``IW_REQUIRE_BROWSER=1`` (CI). On a failure ``test-artifacts/`` gets the page's screenshot, console
log and HTML; the servers' logs are always written there. ``IW_SCREENSHOTS=DIR`` saves PNGs of the
explorer in the states the tests reach (see ``save_screenshot``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from tests.processes import stop_process_group

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
FRONTENDS = ("lab", "notebook")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--no-proxy-server",  # the servers are on 127.0.0.1; never route them through a proxy
]
# Lab extensions the widgets need; both front ends load them from the venv's share/jupyter.
NEEDED_LABEXTENSIONS = ("@jupyter-widgets/jupyterlab-manager", "anywidget")

# The notebook area of the open document (JupyterLab can hold several; each test opens one).
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
CELLS = f"{PANEL} .jp-Notebook .jp-Cell"
IDLE = f'{PANEL} .jp-Notebook-ExecutionIndicator[data-status="idle"]'
_PROMPT_DONE = re.compile(r"^\s*\[\d+\]:?\s*$")

_REPORTS = pytest.StashKey[dict]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "browser: drives JupyterLab 4 and Notebook 7 in headless Chromium "
        "(needs chromium and playwright; IW_REQUIRE_BROWSER=1 fails instead of skipping)",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


# ----- prerequisites -------------------------------------------------------------------------
def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _missing() -> list[str]:
    missing = []
    if chromium_path() is None:
        missing.append("a `chromium` executable on PATH (Debian: apt-get install chromium)")
    for module in ("playwright", "jupyterlab", "notebook", "ipykernel", "anywidget"):
        if importlib.util.find_spec(module) is None:
            missing.append(f"the Python package {module!r}")
    return missing


@pytest.fixture(scope="session", autouse=True)
def browser_prerequisites() -> None:
    """Skip the layer when Chromium or Playwright is missing; fail instead under CI's flag."""
    missing = _missing()
    if not missing:
        return
    reason = "browser tests need " + "; ".join(missing)
    if os.environ.get("IW_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (IW_REQUIRE_BROWSER=1 is set, so this is a failure)", pytrace=False)
    pytest.skip(f"{reason} (set IW_REQUIRE_BROWSER=1 to fail instead of skipping)")


# ----- Jupyter servers -----------------------------------------------------------------------
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class JupyterServer:
    frontend: str  # "lab" or "notebook"
    url: str  # http://127.0.0.1:PORT
    token: str
    root_dir: Path
    proc: subprocess.Popen
    log_path: Path

    def api(self, method: str, path: str, timeout: float = 10.0):
        """Call the REST API with the token (no XSRF check for token-authenticated calls)."""
        request = urllib.request.Request(
            self.url + path, method=method, headers={"Authorization": f"token {self.token}"}
        )
        with _NO_PROXY.open(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def set_theme(self, theme: str) -> None:
        """JupyterLab's theme for pages opened from now on ("JupyterLab Light" or "JupyterLab
        Dark"); Notebook 7 reads the same setting."""
        body = json.dumps({"raw": json.dumps({"theme": theme})}).encode()
        request = urllib.request.Request(
            self.url + "/lab/api/settings/@jupyterlab/apputils-extension:themes",
            data=body,
            method="PUT",
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with _NO_PROXY.open(request, timeout=10.0):
            pass

    def document_url(self, path: str, workspace: str) -> str:
        quoted = urllib.parse.quote(path)
        if self.frontend == "lab":
            # A workspace of its own, so that tabs from earlier tests are not restored.
            return f"{self.url}/lab/workspaces/{workspace}/tree/{quoted}?token={self.token}"
        return f"{self.url}/notebooks/{quoted}?token={self.token}"

    def sessions(self) -> list[dict]:
        return self.api("GET", "/api/sessions")

    def shutdown_sessions(self, wait: bool = True) -> threading.Thread | None:
        """Shut down the kernels of all current sessions, so they do not pile up. With
        ``wait=False`` the (slow) shutdowns go on in a thread, which is returned."""
        ids = [session["id"] for session in self.sessions()]

        def delete() -> None:
            for sid in ids:
                with contextlib.suppress(urllib.error.URLError, OSError):
                    self.api("DELETE", f"/api/sessions/{sid}", timeout=30.0)

        if wait:
            delete()
            return None
        thread = threading.Thread(target=delete, daemon=True)
        thread.start()
        return thread

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _jupyter_env(base: Path) -> dict[str, str]:
    """Isolated user config, data and runtime folders; the venv's share/jupyter stays on the
    data path (it is a system path), so the lab extensions installed there are found."""
    env = dict(os.environ)
    for var, sub in (
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("IPYTHONDIR", "ipython"),
    ):
        (base / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(base / sub)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    # Answer "Would you like to get notified about official Jupyter news?" in advance: the toast
    # would cover the lower right of the page.
    notification = base / "config/lab/user-settings/@jupyterlab/apputils-extension"
    notification.mkdir(parents=True, exist_ok=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(var, None)
    return env


def _check_labextensions(env: dict[str, str]) -> None:
    """What ``jupyter labextension list`` reports, read the way the servers will read it (the
    command itself takes ~10 s): the widget extensions are installed and not disabled."""
    from unittest import mock

    from jupyter_core.paths import jupyter_path
    from jupyterlab_server.config import get_federated_extensions, get_page_config

    with mock.patch.dict(os.environ, env, clear=True):
        path = jupyter_path("labextensions")
        installed = get_federated_extensions(path)
        disabled = get_page_config(path).get("disabledExtensions", [])
    for name in NEEDED_LABEXTENSIONS:
        if name not in installed or name in disabled:
            pytest.fail(
                f"lab extension {name} is {'disabled' if name in installed else 'not installed'} "
                f"for the test servers (labextensions path {path}; installed {sorted(installed)}, "
                f"disabled {sorted(disabled)}); see `jupyter labextension list`",
                pytrace=False,
            )


@pytest.fixture(scope="session")
def labextensions_checked(tmp_path_factory: pytest.TempPathFactory) -> None:
    _check_labextensions(_jupyter_env(tmp_path_factory.mktemp("labext-check")))


def _descendants(pid: int) -> list[tuple[int, bytes]]:
    """(pid, cmdline) of every process below ``pid`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            with contextlib.suppress(OSError):
                found.append((child, (Path("/proc") / str(child) / "cmdline").read_bytes()))
            todo.append(child)
    return found


def start_server(frontend: str, base: Path) -> JupyterServer:
    """A Jupyter server of ``frontend`` ("lab" or "notebook") on a free local port, rooted in
    ``base/root``, once it answers; fails the test (with its log) if it exits or stays silent."""
    env = _jupyter_env(base)
    root = base / "root"
    root.mkdir()
    token = secrets.token_hex(24)
    port = _free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / f"jupyter-{frontend}-server.log"
    module = {"lab": "jupyterlab", "notebook": "notebook"}[frontend]
    cmd = [
        sys.executable,
        "-m",
        module,
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.allow_root=True",  # CI runs as root
    ]
    if frontend == "lab":  # no news feed or update check: offline, and their toasts cover the page
        cmd += [
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
    with log_path.open("w") as log:
        log.write("$ " + " ".join(cmd).replace(token, "<token>") + "\n")
        log.flush()
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = JupyterServer(frontend, f"http://127.0.0.1:{port}", token, root, proc, log_path)
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            pytest.fail(
                f"jupyter {module} exited with {proc.returncode} before answering; "
                f"log {log_path}:\n{server.log_tail()}",
                pytrace=False,
            )
        try:
            server.api("GET", f"/api/status?token={token}", timeout=2.0)
            return server
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            pytest.fail(
                f"jupyter {module} did not answer /api/status within 90 s; "
                f"log {log_path}:\n{server.log_tail()}",
                pytrace=False,
            )
        time.sleep(0.25)


def stop_server(server: JupyterServer) -> None:
    """Shut the server's sessions down, stop it, and kill any kernel it left behind."""
    proc = server.proc
    with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
        server.shutdown_sessions()
    below = _descendants(proc.pid)  # kernels run in sessions of their own
    stop_process_group(proc, timeout=20)  # the server shuts its kernels down on SIGTERM
    for pid, cmdline in below:  # whatever it left behind, if it is still the same process
        with contextlib.suppress(OSError):
            if (Path("/proc") / str(pid) / "cmdline").read_bytes() == cmdline:
                os.kill(pid, signal.SIGKILL)


def _server_fixture(frontend: str, tmp_path_factory: pytest.TempPathFactory):
    server = start_server(frontend, tmp_path_factory.mktemp(f"jupyter-{frontend}"))
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def lab_server(browser_prerequisites, labextensions_checked, tmp_path_factory):
    """A JupyterLab 4 server (``python -m jupyterlab``) for the whole session."""
    yield from _server_fixture("lab", tmp_path_factory)


@pytest.fixture(scope="session")
def notebook_server(browser_prerequisites, labextensions_checked, tmp_path_factory):
    """A Notebook 7 server (``python -m notebook``) for the whole session."""
    yield from _server_fixture("notebook", tmp_path_factory)


@pytest.fixture
def jupyter(request: pytest.FixtureRequest, frontend: str) -> JupyterServer:
    """The server for the test's ``frontend`` parameter; its kernels are shut down afterwards."""
    assert frontend in FRONTENDS, frontend
    server = request.getfixturevalue(f"{frontend}_server")
    yield server
    with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
        server.shutdown_sessions(wait=False)  # this test's sessions only: listed now


# ----- the browser ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def browser(browser_prerequisites):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture
def console_messages() -> list[str]:
    """The page's console messages and uncaught errors, as ``[type] text`` lines."""
    return []


def _artifact_name(nodeid_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid_name.replace("[", "-").replace("]", ""))


@pytest.fixture
def page(browser, request: pytest.FixtureRequest, console_messages: list[str]):
    """A fresh context and page; on failure its screenshot, console log and HTML are saved."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.on("console", lambda msg: console_messages.append(f"[{msg.type}] {msg.text}"))
    pg.on("pageerror", lambda err: console_messages.append(f"[pageerror] {err}"))
    yield pg
    reports = request.node.stash.get(_REPORTS, {})
    if any(r.failed for r in reports.values()):
        ARTIFACTS.mkdir(exist_ok=True)
        stem = ARTIFACTS / _artifact_name(request.node.name)
        with contextlib.suppress(Exception):
            pg.screenshot(path=str(stem.with_suffix(".png")), full_page=True)
        stem.with_suffix(".console.txt").write_text("\n".join(console_messages) + "\n")
        with contextlib.suppress(Exception):
            stem.with_suffix(".html").write_text(pg.content())
    context.close()


def save_screenshot(locator, name: str) -> None:
    """With ``IW_SCREENSHOTS=DIR`` set, a PNG of ``locator`` as DIR/name (to look at the widget)."""
    folder = os.environ.get("IW_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        locator.screenshot(path=str(Path(folder) / name))


# ----- notebooks -----------------------------------------------------------------------------
def write_notebook(
    server: JupyterServer, name: str, cells: list[str], kernelspec: bool = True
) -> str:
    """Write a notebook of code cells into the server's root; returns its path for the URL.

    ``kernelspec=False`` leaves the kernel out of the metadata, so the front end asks for one.
    """
    nb = nbformat.v4.new_notebook()
    if kernelspec:
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
        }
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(nb, server.root_dir / name)
    return name


def _accept_kernel_dialog(page) -> bool:
    """Answer a "Select Kernel" dialog with Python 3; True when there was one."""
    dialog = page.locator(".jp-Dialog")
    if dialog.count() == 0 or "Select Kernel" not in dialog.first.inner_text():
        return False
    select = dialog.first.locator("select")
    if select.count():
        labels = select.first.locator("option").all_inner_texts()
        python = next((label for label in labels if "Python 3" in label), None)
        if python is not None:
            select.first.select_option(label=python)
    dialog.first.locator(".jp-Dialog-button.jp-mod-accept").click()
    return True


def _kernel_ready(server: JupyterServer, path: str) -> bool:
    for session in server.sessions():
        if session.get("path") == path and session.get("kernel"):
            kernel = session["kernel"]
            return kernel.get("execution_state") == "idle" and kernel.get("connections", 0) >= 1
    return False


def wait_for_kernel_idle(page, server: JupyterServer, path: str, timeout: float = 60.0) -> None:
    """Until the page shows an idle kernel that the server says is connected and idle."""
    deadline = time.monotonic() + timeout
    while True:
        _accept_kernel_dialog(page)
        if page.locator(IDLE).count() and _kernel_ready(server, path):
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the kernel of {path} was not idle and connected after {timeout:.0f} s; "
                f"sessions: {server.sessions()}"
            )
        page.wait_for_timeout(250)


def open_notebook(page, server: JupyterServer, path: str, timeout: float = 60.0) -> None:
    workspace = re.sub(r"[^A-Za-z0-9]+", "-", Path(path).stem) + "-" + secrets.token_hex(4)
    page.goto(server.document_url(path, workspace), wait_until="domcontentloaded")
    page.locator(PANEL).first.wait_for(state="visible", timeout=timeout * 1000)
    wait_for_kernel_idle(page, server, path, timeout)


def _menu(page, menu: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(rf"^\s*{menu}\s*$")).click()
    page.locator(".lm-Menu .lm-Menu-itemLabel", has_text=re.compile(rf"^\s*{item}\s*$")).click()


def prompts(page) -> list[str]:
    """The input prompts of the code cells, e.g. ``["[1]:", "[*]:", "[ ]:"]``."""
    return page.eval_on_selector_all(
        f"{CELLS}.jp-CodeCell .jp-InputArea-prompt", "els => els.map(e => e.textContent)"
    )


def outputs(page) -> list[str]:
    """The output text of every cell, in order."""
    return page.eval_on_selector_all(
        CELLS,
        "cells => cells.map(c => { const o = c.querySelector('.jp-OutputArea');"
        " return o ? o.innerText : ''; })",
    )


def cell_output(page, index: int) -> str:
    return outputs(page)[index]


def _stopped_report(page) -> str:
    texts = [f"cell {i}: {t.strip()[-1500:]}" for i, t in enumerate(outputs(page)) if t.strip()]
    return f"prompts {prompts(page)}; outputs:\n" + "\n".join(texts)


def wait_all_executed(page, timeout: float = 120.0, stall: float = 4.0) -> None:
    """Until every code cell has an execution count; fails early once the kernel has sat idle for
    ``stall`` seconds with cells left (run-all stops at an exception)."""
    deadline = time.monotonic() + timeout
    idle_since = None
    while True:
        current = prompts(page)
        if current and all(_PROMPT_DONE.match(p) for p in current):
            page.locator(IDLE).first.wait_for(timeout=timeout * 1000)
            return
        if page.locator(IDLE).count() and not any("*" in p for p in current):
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > stall:
                raise AssertionError(f"run-all stopped before the end; {_stopped_report(page)}")
        else:
            idle_since = None
        if time.monotonic() > deadline:
            raise AssertionError(
                f"cells still running after {timeout:.0f} s; {_stopped_report(page)}"
            )
        page.wait_for_timeout(250)


def run_all_cells(page, timeout: float = 120.0) -> None:
    """Run > Run All Cells (the same menu in JupyterLab and Notebook 7), then wait for the end."""
    _menu(page, "Run", "Run All Cells")
    wait_all_executed(page, timeout)


def open_and_run(
    page, server: JupyterServer, notebook_path: str, frontend: str, timeout: float = 120.0
) -> None:
    """Open the notebook in ``frontend`` ("lab" or "notebook"), wait for an idle kernel (choosing
    Python 3 if asked), run all cells and wait until each has run."""
    assert frontend == server.frontend, (frontend, server.frontend)
    open_notebook(page, server, notebook_path)
    run_all_cells(page, timeout)


def run_cell(page, index: int, timeout: float = 60.0) -> str:
    """Run code cell ``index`` (click into it, Shift+Enter); returns its output text."""
    cell = page.locator(CELLS).nth(index)
    before = cell.locator(".jp-InputArea-prompt").text_content()
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    deadline = time.monotonic() + timeout
    while True:
        now = cell.locator(".jp-InputArea-prompt").text_content()
        if now != before and _PROMPT_DONE.match(now or "") and page.locator(IDLE).count():
            return cell_output(page, index)
        if time.monotonic() > deadline:
            raise AssertionError(
                f"cell {index} did not finish within {timeout:.0f} s; {_stopped_report(page)}"
            )
        page.wait_for_timeout(100)


def append_and_run_cell(page, source: str, timeout: float = 60.0) -> str:
    """Add a code cell with ``source`` below the last one, run it, return its output text."""
    cells = page.locator(CELLS)
    n = cells.count()
    cells.nth(n - 1).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Escape")  # command mode
    page.keyboard.press("b")  # insert a cell below
    cells.nth(n).wait_for()
    cells.nth(n).locator(".jp-InputArea-editor").click()
    page.keyboard.insert_text(source)  # no key events, so no auto-closed brackets
    return run_cell(page, n, timeout)


@contextlib.contextmanager
def theme(server: JupyterServer, name: str):
    """Pages opened inside use JupyterLab's theme ``name`` ("JupyterLab Dark", ...); the light
    theme is back afterwards (the servers are shared by the whole session)."""
    server.set_theme(name)
    try:
        yield
    finally:
        server.set_theme("JupyterLab Light")


def narrow_notebook(page, notebook_width: int = 465) -> float:
    """Makes the page as wide as a ~``notebook_width`` px notebook (a split JupyterLab view);
    returns the notebook's width. The viewport is set twice: what the front end's frame (side
    bars, margins) takes is measured first."""
    panel = page.locator(PANEL).first
    for _ in range(2):
        frame = page.viewport_size["width"] - panel.bounding_box()["width"]
        page.set_viewport_size({"width": int(notebook_width + frame), "height": 1000})
        page.wait_for_timeout(300)  # the layout and the container query settle
    return panel.bounding_box()["width"]
