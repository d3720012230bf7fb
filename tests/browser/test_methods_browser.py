"""The method switch and Compare in JupyterLab: ``%influence --demo digits --methods
influence,tracin,trak``; the switch changes the panel to that method's lists (and the kernel's
``method``), Verify's LDS names the method, Compare shows both methods' lists with the points
both name marked, the overlap and each method's LDS; light, dark and a 700 px window.
Fixtures and helpers: conftest.py."""

from __future__ import annotations

import json
import re

import pytest

from .conftest import append_and_run_cell, open_and_run, save_screenshot, theme, write_notebook
from .test_explorer_browser import page_errors, shown_errors, wait_for_train_items

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TRAK = "TRAK \u00d710"
CELLS = [
    "%load_ext influence_widgets",
    "%influence --demo digits --methods influence,tracin,trak",
    "ex = _",
]
# The kernel's view after the switch: the shown method and the lists Python computes for it.
KERNEL_STATE = """\
import json
x, y = ex.test_points.point(3)
top = ex.context.methods.entries[ex.method].method.top(x, y, ex.k)
print("STATE", json.dumps({"method": ex.method, "panel": ex.panel["method"],
      "helpful": top.helpful[0].tolist(), "harmful": top.harmful[0].tolist()}))"""

# Elements of the Compare view that stick out of the side pane, and text under 11 px.
OVERFLOW_AND_SMALL_TEXT = """root => {
  const side = root.querySelector('.iw-side').getBoundingClientRect();
  const out = [...root.querySelectorAll('.iw-versus .iw-train-item, .iw-versus-column')]
    .filter(e => e.getBoundingClientRect().right > side.right + 0.5).map(e => e.className);
  const small = [...root.querySelectorAll('.iw-versus *, .iw-methods *')]
    .filter(e => e.childNodes.length && [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()))
    .filter(e => e.offsetParent !== null && parseFloat(getComputedStyle(e).fontSize) < 11)
    .map(e => e.textContent.trim().slice(0, 30));
  return { out, small };
}"""


def _wait_for_methods(page, timeout_ms: int = 120_000) -> None:
    """Until the switch offers all three methods (TracIn and TRAK prepared in the background)."""
    page.wait_for_function(
        "() => document.querySelectorAll('.iw-explorer select.iw-method option:not([disabled])')"
        ".length === 3",
        timeout=timeout_ms,
    )


def _shoot(page, explorer, name: str) -> None:
    """The whole explorer (the page made tall enough first, at the same width)."""
    width = page.viewport_size["width"]
    page.set_viewport_size({"width": width, "height": int(explorer.bounding_box()["height"]) + 400})
    explorer.scroll_into_view_if_needed()
    save_screenshot(explorer, name)


@pytest.mark.timeout(420)
@pytest.mark.parametrize("frontend", ["lab"])
@pytest.mark.parametrize("theme_name", ["JupyterLab Light", "JupyterLab Dark"])
def test_switch_lds_and_compare_in(frontend, theme_name, jupyter, page, console_messages):
    from playwright.sync_api import expect

    slug = "dark" if "Dark" in theme_name else "light"
    path = write_notebook(jupyter, f"methods_{slug}.ipynb", CELLS)
    with theme(jupyter, theme_name):
        open_and_run(page, jupyter, path, frontend, timeout=180)
    explorer = page.locator(".iw-explorer")
    explorer.locator('.iw-test-item[data-test-index="3"]').click(timeout=60_000)
    wait_for_train_items(page, at_least=16)
    _wait_for_methods(page)
    expect(explorer.locator(".iw-status")).to_contain_text("the panel shows influence")

    # the switch: the panel, the status line and the kernel name TRAK; its lists are TRAK's
    explorer.locator("select.iw-method").select_option(TRAK)
    expect(explorer.locator(".iw-panel-method")).to_have_text(f"scored by {TRAK}")
    expect(explorer.locator(".iw-status")).to_contain_text(f"the panel shows {TRAK}")
    expect(explorer.locator(".iw-panel .iw-axis-title")).to_contain_text("TRAK")
    out = append_and_run_cell(page, KERNEL_STATE)
    state = json.loads(re.search(r"STATE (\{.*\})", out).group(1))
    assert state["method"] == TRAK and state["panel"] == TRAK
    cards = explorer.locator(".iw-panel .iw-train-item").evaluate_all(
        "els => els.map(e => Number(e.dataset.trainIndex))"
    )
    assert cards == state["helpful"] + state["harmful"], (cards, state)
    _shoot(page, explorer, f"methods_switch_{slug}.png")

    # Verify's LDS checks the method shown and says which
    explorer.locator(".iw-tab-verify").click()
    explorer.locator("select.iw-verify-mode").select_option("lds")
    box = explorer.locator(".iw-verify-subsets")
    box.fill("5")
    box.dispatch_event("change")
    explorer.locator(".iw-verify-run").click()
    expect(explorer.locator(".iw-verify-summary")).to_contain_text(
        f"LDS of {TRAK} =", timeout=120_000
    )
    _shoot(page, explorer, f"methods_verify_{slug}.png")
    explorer.locator("select.iw-verify-mode").select_option("loo")
    expect(explorer.locator(".iw-method-note")).to_contain_text(
        "Leave-one-out uses the influence function influence"
    )

    # Compare: influence against TRAK, both LDS beside their names, the shared points marked
    explorer.locator(".iw-tab-influence").click()
    explorer.locator(".iw-view-compare").click()
    explorer.locator("select.iw-versus-left").select_option("influence")
    explorer.locator("select.iw-versus-right").select_option(TRAK)
    expect(explorer.locator(".iw-versus-name").nth(1)).to_have_text(TRAK, timeout=30_000)
    overlap = explorer.locator(".iw-versus-overlap")
    expect(overlap).to_contain_text("helpful and")
    text = overlap.inner_text()
    found = re.search(r"(\d+) of 8 helpful and (\d+) of 8 harmful in common", text)
    assert found, text
    shared = int(found.group(1)) + int(found.group(2))
    expect(explorer.locator(".iw-versus-column")).to_have_count(2)
    names = explorer.locator(".iw-versus-name").all_inner_texts()
    assert names == ["influence", TRAK], names
    lds = explorer.locator(".iw-versus-lds").all_inner_texts()
    assert len(lds) == 2 and all("on this test point" in t and "5 subsets" in t for t in lds), lds
    for column in range(2):
        both = explorer.locator(".iw-versus-column").nth(column).locator(".iw-shared-both")
        expect(both).to_have_count(shared)
    assert explorer.locator(".iw-panel").is_hidden()
    _shoot(page, explorer, f"compare_{slug}.png")

    # a 700 px window: the columns stay inside the pane, no text under 11 px
    page.set_viewport_size({"width": 700, "height": 1000})
    page.wait_for_timeout(500)
    checked = explorer.evaluate(OVERFLOW_AND_SMALL_TEXT)
    assert not checked["out"] and not checked["small"], checked
    _shoot(page, explorer, f"compare_700_{slug}.png")
    assert not shown_errors(page)
    assert not page_errors(console_messages)
