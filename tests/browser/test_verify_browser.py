"""The browser layer for the Verify tab, reloads and unlabeled test points (issue 15, sec 3):
cancelling, the scatter in the dark theme and a narrow view, no "model not found" after a reload.
Fixtures and helpers: conftest.py; the explorer's other browser tests: test_explorer_browser.py."""

from __future__ import annotations

import pytest

from .conftest import (
    IDLE,
    PANEL,
    cell_output,
    open_and_run,
    save_screenshot,
    wait_for_kernel_idle,
    write_notebook,
)
from .test_explorer_browser import FAILED_FIT_CELL

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WIDGET_ERRORS = ("model not found", "Error displaying widget")

# The quickstart: the demo explorer, then a model trained and scored with the progress bars on.
QUICKSTART = [
    "%load_ext influence_widgets",
    "%influence --demo digits",
    "import influence_widgets as iw\n"
    "data = iw.datasets.digits()\n"
    "model = iw.models.logistic_regression(data)\n"
    "report = iw.train(model, data, l2=0.01)\n"
    "inf = iw.Influence(model, (data.X_train, data.y_train), l2=0.01, solver='cg')\n"
    "top = inf.top(data.X_test[:4], data.y_test[:4], k=3)\n"
    'print(f"TRAINED {report.converged}")',
]


def _page_text(page) -> str:
    return page.locator(PANEL).first.inner_text()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("frontend", ["lab"])
def test_reload_shows_no_widget_errors_and_the_explorer_again_in(
    frontend, jupyter, page, console_messages
):
    """Run the quickstart with progress bars, save, reload the page with the kernel alive: no
    "Error displaying widget: model not found" (a closed bar's view left in the saved output),
    and the explorer renders again."""
    path = write_notebook(jupyter, "reload_lab.ipynb", QUICKSTART)
    open_and_run(page, jupyter, path, frontend, timeout=180)
    assert "TRAINED True" in cell_output(page, 2)
    page.locator(".iw-explorer").wait_for(timeout=60_000)
    page.locator(f"{PANEL} .jp-Notebook").click()
    page.keyboard.press("Control+s")
    page.wait_for_timeout(1500)
    page.reload(wait_until="domcontentloaded")
    page.locator(PANEL).first.wait_for(state="visible", timeout=60_000)
    wait_for_kernel_idle(page, jupyter, path)
    page.locator(IDLE).first.wait_for(timeout=60_000)
    page.locator(".iw-explorer").first.wait_for(timeout=60_000)
    page.wait_for_timeout(3000)  # widget views of the outputs render by now
    save_screenshot(page.locator(PANEL).first, "reload_lab.png")
    text = _page_text(page)
    assert not [e for e in WIDGET_ERRORS if e in text], text[-2000:]
    assert page.locator(".iw-explorer").count() == 1


# Each retrain first sleeps 1.5 s without calling the model (where Cancel cannot stop it), so
# that the "cancelling" state stays on screen long enough to be seen.
SLOW_RETRAINS = """\
import time
from influence_widgets.analysis import loo

def slow_train(model, data, _train=loo.train, **options):
    time.sleep(1.5)
    return _train(model, data, **options)

loo.train = slow_train"""


def _open_verify_tab(page, jupyter, path: str, test_index: int = 3):
    """Run the digits demo in ``path``, select ``test_index`` and open the Verify tab."""
    open_and_run(page, jupyter, path, "lab", timeout=150)
    explorer = page.locator(".iw-explorer")
    explorer.locator(f'[data-test-index="{test_index}"]').click(timeout=60_000)
    page.wait_for_function(
        "() => document.querySelectorAll('.iw-explorer [data-train-index]').length >= 16",
        timeout=90_000,
    )
    explorer.locator(".iw-tab-verify").click()
    return explorer


def _set_removals(explorer, n: int) -> None:
    box = explorer.locator(".iw-verify-n")
    box.fill(str(n))
    box.dispatch_event("change")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("frontend", ["lab"])
@pytest.mark.parametrize("theme_name", ["JupyterLab Light", "JupyterLab Dark"])
def test_verify_cancels_at_once_and_shows_r_as_the_plot_does_in(
    frontend, theme_name, jupyter, page, console_messages
):
    """Cancel shows "Cancelling" at once with both buttons disabled, and the run ends within
    seconds; a full run's summary writes R with 4 decimals (as the plot's title). Screenshots:
    cancelling, the scatter, and the scatter in a ~465 px split view."""
    import re

    from playwright.sync_api import expect

    from .conftest import theme

    slug = "dark" if "Dark" in theme_name else "light"
    path = write_notebook(
        jupyter,
        f"verify_{slug}.ipynb",
        ["%load_ext influence_widgets", "%influence --demo digits", "ex = _", SLOW_RETRAINS],
    )
    with theme(jupyter, theme_name):
        explorer = _open_verify_tab(page, jupyter, path)
    _set_removals(explorer, 300)
    explorer.locator(".iw-verify-run").click()
    status = explorer.locator(".iw-verify-status")
    expect(status).to_contain_text("Retrained", timeout=60_000)
    explorer.locator(".iw-verify-cancel").click()
    expect(explorer.locator(".iw-verify")).to_have_attribute("data-state", "cancelling")
    expect(status).to_contain_text("Cancelling")
    expect(explorer.locator(".iw-verify-run")).to_be_disabled()
    expect(explorer.locator(".iw-verify-cancel")).to_be_disabled()
    expect(explorer.locator(".iw-verify-progress")).to_be_visible()
    save_screenshot(explorer.locator(".iw-verify"), f"verify_cancelling_{slug}.png")
    expect(explorer.locator(".iw-verify")).to_have_attribute(
        "data-state", "cancelled", timeout=4_000
    )
    expect(status).to_contain_text("Cancelled")

    _set_removals(explorer, 6)
    explorer.locator(".iw-verify-run").click()
    expect(explorer.locator(".iw-verify")).to_have_attribute("data-state", "done", timeout=120_000)
    summary = explorer.locator(".iw-verify-summary").inner_text()
    found = re.search(r"Pearson R = (-?\d\.\d{4}) · Spearman = -?\d\.\d{4} · 6 removals", summary)
    assert found, summary
    # beside the plot, one line reading R: its word and the scale it is read on
    reading = explorer.locator(".iw-verify-reading")
    expect(reading).to_be_visible()
    expect(reading).to_contain_text(f"R = {found.group(1)}, ")
    expect(reading).to_contain_text("very good \u2265 0.99, good \u2265 0.9, rough \u2265 0.7")
    expect(explorer.locator("img.iw-verify-plot")).to_be_visible()
    save_screenshot(explorer.locator(".iw-verify"), f"verify_done_{slug}.png")
    page.set_viewport_size({"width": 700, "height": 1000})  # beside the file browser: ~410 px
    page.wait_for_timeout(500)
    plot = explorer.locator(".iw-verify-plot")
    plot.scroll_into_view_if_needed()
    save_screenshot(page.locator(PANEL).first, f"verify_narrow_{slug}.png")
    box, panel = plot.bounding_box(), page.locator(PANEL).first.bounding_box()
    assert box["x"] + box["width"] <= panel["x"] + panel["width"], (box, panel)
    small = explorer.locator(".iw-verify").evaluate(
        "pane => [...pane.querySelectorAll('*')].filter(el => el.getClientRects().length"
        " && [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())"
        " && parseFloat(getComputedStyle(el).fontSize) < 11).map(el => el.className)"
    )
    assert not small, f"text under 11 px in the Verify tab: {small}"
    assert not [m for m in console_messages if m.startswith("[pageerror]") and "schema" not in m]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("frontend", ["lab"])
def test_verify_after_a_failed_precomputation_says_so_in(frontend, jupyter, page):
    """After a failed fit the Verify tab never says "ready to check": Run is disabled and the
    status says that precomputation failed."""
    from playwright.sync_api import expect

    path = write_notebook(jupyter, "verify_failed_lab.ipynb", [FAILED_FIT_CELL])
    open_and_run(page, jupyter, path, frontend, timeout=120)
    explorer = page.locator(".iw-explorer")
    page.locator('.iw-explorer[data-status="error"]').wait_for(timeout=60_000)
    explorer.locator('[data-test-index="3"]').click()
    explorer.locator(".iw-tab-verify").click()
    status = explorer.locator(".iw-verify-status")
    expect(status).to_contain_text("Precomputation failed")
    assert "ready" not in status.inner_text()
    expect(explorer.locator(".iw-verify-run")).to_be_disabled()
    save_screenshot(explorer, "verify_failed_lab.png")


# The digits model, its explorer given test inputs but no labels.
UNLABELED_CELL = """\
import influence_widgets as iw

data = iw.datasets.digits()
model = iw.models.logistic_regression(data)
iw.train(model, data, l2=0.01, progress=False)
inf = iw.Influence(model, (data.X_train, data.y_train), l2=0.01, progress=False)
ex = iw.InfluenceExplorer(
    inf, x_test=data.X_test[:40], kind="image", train_display=data.images("train"),
    test_display=data.images("test")[:40], class_names=data.class_names, k=4,
)
ex"""

UNLABELED_CHECK = """\
top = inf.top(data.X_test[3:4], k=4)
same = [it["index"] for it in ex.panel["helpful"]] == top.helpful[0].tolist()
print(f"SAME {same} LABELLED {ex.labelled} LOO {ex.verify['state']}")"""


@pytest.mark.timeout(210)
@pytest.mark.parametrize("frontend", ["lab"])
def test_test_points_without_labels_are_explained_and_verified_in(
    frontend, jupyter, page, console_messages
):
    """An explorer given x_test only: a click shows the points that support the predicted class
    (the kernel's panel equals Influence.top without labels), no point is marked misclassified,
    and Verify runs leave-one-out for the predicted class."""
    from playwright.sync_api import expect

    from .conftest import run_cell

    path = write_notebook(jupyter, "unlabeled_lab.ipynb", [UNLABELED_CELL, UNLABELED_CHECK])
    open_and_run(page, jupyter, path, frontend, timeout=150)
    explorer = page.locator(".iw-explorer")
    explorer.locator('[data-test-index="3"]').click(timeout=60_000)
    page.wait_for_function(
        "() => document.querySelectorAll('.iw-explorer [data-train-index]').length >= 8",
        timeout=90_000,
    )
    assert explorer.locator(".iw-wrong").count() == 0
    assert "No label given: explained for the predicted class" in (
        explorer.locator(".iw-explanation").inner_text()
    )
    assert "true" not in explorer.locator(".iw-panel-info").inner_text()
    assert "no label" in explorer.locator('[data-test-index="3"]').inner_text()
    assert not explorer.locator(".iw-wrong-filter").is_visible()
    save_screenshot(explorer, "unlabeled_panel_lab.png")
    explorer.locator(".iw-tab-verify").click()
    _set_removals(explorer, 4)
    explorer.locator(".iw-verify-run").click()
    expect(explorer.locator(".iw-verify")).to_have_attribute("data-state", "done", timeout=120_000)
    expect(explorer.locator("img.iw-verify-plot")).to_be_visible()
    out = run_cell(page, 1)
    assert "SAME True LABELLED False LOO done" in out, out
    assert not [m for m in console_messages if m.startswith("[pageerror]") and "schema" not in m]


# The LDS check: each retrain first sleeps DELAY[0] s, so that a run of many subsets stays on
# screen long enough to watch and cancel; a later cell sets it to 0 for a run at full speed.
SLOW_LDS_RETRAINS = """\
import sys
import time

lds_module = sys.modules["influence_widgets.analysis.lds"]
DELAY = [0.5]

def slow_train(model, data, _train=lds_module.train, **options):
    time.sleep(DELAY[0])
    return _train(model, data, **options)

lds_module.train = slow_train"""


def _set_subsets(explorer, n: int) -> None:
    box = explorer.locator(".iw-verify-subsets")
    box.fill(str(n))
    box.dispatch_event("change")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("frontend", ["lab"])
@pytest.mark.parametrize("theme_name", ["JupyterLab Light", "JupyterLab Dark"])
def test_lds_shows_progress_cancels_and_shows_the_score_and_its_noise_floor_in(
    frontend, theme_name, jupyter, page, console_messages
):
    """Verify's LDS check: choose LDS, run 200 subsets and watch the progress, cancel (the
    subsets done are shown), then run the default 20 subsets to the end: "LDS = ... (noise floor
    ..., 20 subsets) on test #3", the reading and the scatter. Screenshots: running, cancelled,
    done."""
    import re

    from playwright.sync_api import expect

    from .conftest import append_and_run_cell, theme

    slug = "dark" if "Dark" in theme_name else "light"
    path = write_notebook(
        jupyter,
        f"lds_{slug}.ipynb",
        ["%load_ext influence_widgets", "%influence --demo digits", "ex = _", SLOW_LDS_RETRAINS],
    )
    with theme(jupyter, theme_name):
        explorer = _open_verify_tab(page, jupyter, path)
    pane, status = explorer.locator(".iw-verify"), explorer.locator(".iw-verify-status")
    expect(pane).to_have_attribute("data-mode", "loo")  # leave-one-out stays the default
    explorer.locator(".iw-verify-mode").select_option("lds")
    expect(pane).to_have_attribute("data-mode", "lds")
    expect(explorer.locator(".iw-verify-run")).to_have_text("Run LDS")
    expect(explorer.locator(".iw-verify-n")).to_be_hidden()
    expect(explorer.locator(".iw-verify-subsets")).to_have_value("20")
    assert "LDS(z) for the point on screen" in pane.locator(".iw-help").inner_text()

    _set_subsets(explorer, 200)
    explorer.locator(".iw-verify-run").click()
    expect(status).to_contain_text(
        re.compile(r"Retrained ([4-9]|\d\d+) of 400 models"), timeout=90_000
    )
    expect(explorer.locator(".iw-verify-progress")).to_be_visible()
    expect(explorer.locator(".iw-verify-mode")).to_be_disabled()
    width = explorer.locator(".iw-verify-progress .iw-progress-bar").evaluate("e => e.style.width")
    assert width != "0%", width
    save_screenshot(pane, f"lds_running_{slug}.png")
    explorer.locator(".iw-verify-cancel").click()
    expect(status).to_contain_text("Cancelling: the retrain in progress finishes first")
    expect(pane).to_have_attribute("data-state", "cancelled", timeout=30_000)
    expect(status).to_contain_text(re.compile(r"Cancelled: \d+ of 200 subsets done in"))
    expect(status).to_contain_text("Run LDS again to go on from them")
    expect(explorer.locator(".iw-verify-summary")).to_contain_text("subsets) on test #3")
    expect(explorer.locator(".iw-verify-reading")).to_be_visible()
    save_screenshot(pane, f"lds_cancelled_{slug}.png")

    assert "FAST" in append_and_run_cell(page, "DELAY[0] = 0\nprint('FAST')")
    _set_subsets(explorer, 20)
    explorer.locator(".iw-verify-run").click()
    expect(pane).to_have_attribute("data-state", "done", timeout=300_000)
    summary = explorer.locator(".iw-verify-summary").inner_text()
    assert re.fullmatch(
        r"LDS = -?\d\.\d{4} \(noise floor -?\d\.\d{4}, 20 subsets\) on test #3", summary
    ), summary
    expect(status).to_contain_text(re.compile(r"^20 subsets, each retrained twice, in [\d.]+ s$"))
    expect(explorer.locator(".iw-verify-reading")).to_be_visible()
    expect(explorer.locator("img.iw-verify-plot")).to_be_visible()
    pane.scroll_into_view_if_needed()
    save_screenshot(pane, f"lds_done_{slug}.png")
    out = append_and_run_cell(
        page,
        "v = ex.verify\n"
        "print('LDS', v['lds_text'], v['noise_floor_text'], ex.lds_result.n_subsets, "
        "f'{ex.lds_result.seconds:.1f}s', 'READING', v['reading'])",
    )
    assert f"LDS {summary.split()[2]} " in out and "READING" in out, out
    reading = explorer.locator(".iw-verify-reading").inner_text()
    assert reading in out.replace("\n", " "), (reading, out)
    print(f"[{slug}] {out.strip()} | {status.inner_text()}")
    assert not [m for m in console_messages if m.startswith("[pageerror]") and "schema" not in m]
