"""The Influence pane and the gallery as a student reads them, in JupyterLab 4 and Notebook 7.

A tabular training card shows its values whole (numbers, never cut off) beside the test point's,
under a labelled header; the bar chart has ticks and says which side is helpful and which harmful,
and stays inside the pane in a narrow split view; the gallery shows whole rows only and the same
number of columns on every page. Fixtures and helpers: conftest.py.
"""

from __future__ import annotations

import os

import pytest

from .conftest import (
    FRONTENDS,
    narrow_notebook,
    open_and_run,
    save_screenshot,
    theme,
    write_notebook,
)
from .test_explorer_browser import page_errors, shown_errors, wait_for_train_items

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DEMO = ["%load_ext influence_widgets", "%influence --demo {name}", "ex = _"]

# Every value cell of the visible tables: its text, whether it is cut off, its row's feature.
VALUE_CELLS = """root => [...root.querySelectorAll('.iw-train-item .iw-compare > table td.iw-num')]
  .map(td => ({ text: td.textContent, cut: td.scrollWidth > td.clientWidth,
                name: td.parentElement.querySelector('th').title }))"""

# Feature tables that stick out of their card, and cards that stick out of the pane.
OVERFLOWING = """panel => {
  const out = (inner, outer) => inner.getBoundingClientRect().right > outer.getBoundingClientRect().right + 0.5;
  const cards = [...panel.querySelectorAll('.iw-train-item')];
  return cards.filter(c => out(c, panel)).map(c => 'card ' + c.dataset.trainIndex).concat(
    cards.filter(c => [...c.querySelectorAll('table')].some(t => out(t, c)))
      .map(c => 'table of ' + c.dataset.trainIndex));
}"""

# The gallery's cards as boxes, and the scroll box's box.
GALLERY = """g => ({ box: g.getBoundingClientRect().toJSON(),
  cards: [...g.querySelectorAll('.iw-test-item')].map(c => c.getBoundingClientRect().toJSON()) })"""


def _open_demo(page, jupyter, name: str, frontend: str):
    path = write_notebook(
        jupyter, f"{name}_pane_{frontend}.ipynb", [c.format(name=name) for c in DEMO]
    )
    open_and_run(page, jupyter, path, frontend, timeout=150)
    explorer = page.locator(".iw-explorer")
    explorer.locator('[data-test-index="3"]').click(timeout=60_000)
    wait_for_train_items(page, at_least=16)
    return explorer


def _shoot(page, explorer, name: str) -> None:
    """A screenshot of the whole explorer (``save_screenshot``): the page is made tall enough
    first, at the same width, so that nothing of JupyterLab's frame lies over the widget."""
    if not os.environ.get("IW_SCREENSHOTS"):
        return
    width = page.viewport_size["width"]
    page.set_viewport_size({"width": width, "height": int(explorer.bounding_box()["height"]) + 400})
    explorer.scroll_into_view_if_needed()
    save_screenshot(explorer, name)


def _columns_and_cut_rows(gallery) -> tuple[int, list]:
    """How many columns the gallery shows, and the cards cut off by its scroll box's bottom."""
    shown = gallery.evaluate(GALLERY)
    box, cards = shown["box"], shown["cards"]
    cut = [c for c in cards if c["top"] < box["bottom"] - 1 and c["bottom"] > box["bottom"] + 0.5]
    return len({round(c["left"]) for c in cards}), cut


@pytest.mark.timeout(240)
@pytest.mark.parametrize("frontend", FRONTENDS)
def test_tabular_cards_show_whole_values_and_the_gallery_whole_rows_in(
    frontend, jupyter, page, console_messages
):
    """Breast cancer (30 features): each training card is a table headed feature | train | test
    | difference, its values whole numbers of the data and its 5 rows named by features it shows
    (the full name in the tooltip), all 30 behind "all 30 features"; the chart has its ticks and
    sides; the gallery cuts no row and keeps its column count on the next page."""
    from playwright.sync_api import expect

    explorer = _open_demo(page, jupyter, "breast_cancer", frontend)
    cards = explorer.locator(".iw-train-item")
    assert cards.count() == 16
    first = cards.first
    expect(first.locator(".iw-caption")).to_contain_text("train #")
    expect(first.locator(".iw-caption")).to_contain_text("label ")
    head = first.locator(".iw-compare > table thead th").all_inner_texts()
    assert head == ["feature", "train", "test", "\u0394 SD"], head
    cells = explorer.evaluate(VALUE_CELLS)
    assert len(cells) == 16 * 5 * 3, len(cells)
    for cell in cells:
        assert not cell["cut"], f"value {cell['text']!r} of {cell['name']!r} is cut off"
        float(cell["text"])  # a number as written, e.g. "0.8868", "-1.2", "2.35e-4"
    assert not explorer.locator(".iw-panel").evaluate(OVERFLOWING)
    names = {cell["name"] for cell in cells}
    assert names and all(name and not name.startswith("x") for name in names), names
    more = first.locator("details.iw-more")
    expect(more.locator("summary")).to_contain_text("all 30 features")
    more.locator("summary").click()
    assert more.locator("tbody tr").count() == 30

    chart = explorer.locator(".iw-panel svg.iw-bars")
    assert chart.locator(".iw-tick").count() >= 3
    expect(chart.locator(".iw-helpful-label")).to_have_text("helpful \u2192")
    expect(chart.locator(".iw-harmful-label")).to_have_text("\u2190 harmful")
    expect(chart.locator(".iw-axis-title")).to_contain_text("change of test loss if removed")
    assert chart.locator("rect[data-bar-index]").count() == 16
    more.locator("summary").click()  # closed again for the picture

    gallery = explorer.locator(".iw-gallery")
    columns, cut = _columns_and_cut_rows(gallery)
    assert columns >= 2 and not cut, (columns, cut)
    _shoot(page, explorer, f"tabular_{frontend}.png")
    explorer.locator(".iw-next").click()
    expect(explorer.locator(".iw-page-info")).to_contain_text("page 2 /")
    expect(gallery.locator('[data-test-index="3"]')).to_have_count(0)
    assert _columns_and_cut_rows(gallery) == (columns, [])
    assert not shown_errors(page)
    assert not page_errors(console_messages)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("frontend", FRONTENDS)
def test_a_narrow_split_view_stacks_the_panes_and_fits_the_chart_in(
    frontend, jupyter, page, console_messages
):
    """Digits in the dark theme at a ~465 px wide notebook (a split JupyterLab view): the gallery
    sits above the panes with several columns, and the bar chart with its tick labels and side
    labels lies inside the pane."""
    with theme(jupyter, "JupyterLab Dark"):
        explorer = _open_demo(page, jupyter, "digits", frontend)
    width = narrow_notebook(page)
    assert 440 <= width <= 490, f"the notebook is {width:.0f} px wide, not ~465"
    gallery, side = explorer.locator(".iw-gallery"), explorer.locator(".iw-side")
    g, s = gallery.bounding_box(), side.bounding_box()
    assert g["y"] + g["height"] <= s["y"], "the gallery is not above the panes"
    columns, cut = _columns_and_cut_rows(gallery)
    assert columns >= 4 and not cut, (columns, cut)

    pane = explorer.locator(".iw-panel").bounding_box()
    chart = explorer.locator(".iw-panel svg.iw-bars")
    inner = [chart.bounding_box()] + [
        label.bounding_box()
        for label in chart.locator(".iw-tick, .iw-helpful-label, .iw-harmful-label").all()
    ]
    assert len(inner) >= 6
    for box in inner:
        assert (
            pane["x"] - 0.5 <= box["x"]
            and box["x"] + box["width"] <= pane["x"] + pane["width"] + 0.5
        ), (
            box,
            pane,
        )
    assert chart.locator(".iw-tick").count() >= 3
    _shoot(page, explorer, f"narrow_dark_{frontend}.png")
    assert not shown_errors(page)
    assert not page_errors(console_messages)
