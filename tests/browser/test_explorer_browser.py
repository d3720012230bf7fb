"""Layer 4: the explorer in JupyterLab 4 and Notebook 7, clicked in headless Chromium.

Each test writes a notebook, opens it in the front end, runs it from the Run menu, clicks in the
widget and checks the kernel's side by running a later cell. Fixtures and helpers: conftest.py.
"""

from __future__ import annotations

import time

import pytest

from .conftest import (
    FRONTENDS,
    append_and_run_cell,
    cell_output,
    open_and_run,
    run_cell,
    write_notebook,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# A minimal anywidget: a button that sets a synced trait when clicked and shows the trait's value.
SMOKE_WIDGET = '''\
import anywidget
import traitlets


class Clicker(anywidget.AnyWidget):
    _esm = """
    function render({ model, el }) {
      const button = document.createElement("button");
      button.setAttribute("data-test-index", "3");
      const show = () => { button.textContent = "clicked " + model.get("clicked"); };
      button.addEventListener("click", () => { model.set("clicked", 3); model.save_changes(); });
      model.on("change:clicked", show);
      show();
      el.appendChild(button);
    }
    export default { render };
    """
    clicked = traitlets.Int(-1).tag(sync=True)


w = Clicker()
w'''


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll ``predicate()`` until it returns something truthy; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("frontend", FRONTENDS)
def test_anywidget_renders_and_syncs_in(frontend, jupyter, page, console_messages):
    """The comm round trip through anywidget, independent of our widget: a click in the page
    reaches the kernel, and a change in the kernel reaches the page. The notebook has no
    kernelspec, so the front end's kernel dialog is answered too."""
    from playwright.sync_api import expect

    path = write_notebook(
        jupyter,
        f"smoke_{frontend}.ipynb",
        [SMOKE_WIDGET, 'print("CLICKED", w.clicked)'],
        kernelspec=False,
    )
    open_and_run(page, jupyter, path, frontend, timeout=60)
    assert "CLICKED -1" in cell_output(page, 1)

    button = page.locator('[data-test-index="3"]')
    expect(button).to_have_text("clicked -1")
    button.click()
    expect(button).to_have_text("clicked 3")
    assert "CLICKED 3" in run_cell(page, 1)

    out = append_and_run_cell(page, 'w.clicked = 7\nprint("SET", w.clicked)')
    assert "SET 7" in out
    expect(button).to_have_text("clicked 7")
    assert not [m for m in console_messages if m.startswith("[pageerror]")]
