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
