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

    chart = explorer.locator(".iw-panel .iw-bars")
    assert chart.locator(".iw-tick").count() >= 3
    expect(chart.locator(".iw-helpful-label")).to_have_text("helpful \u2192")
    expect(chart.locator(".iw-harmful-label")).to_have_text("\u2190 harmful")
    expect(chart.locator(".iw-axis-title")).to_contain_text("change of test loss if removed")
    assert chart.locator("[data-bar-index]").count() == 16
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
    sits above the panes with several columns, every caption whole, and the bar chart with its
    tick labels and side labels lies inside the pane."""
    with theme(jupyter, "JupyterLab Dark"):
        explorer = _open_demo(page, jupyter, "digits", frontend)
    width = narrow_notebook(page)
    assert 440 <= width <= 490, f"the notebook is {width:.0f} px wide, not ~465"
    gallery, side = explorer.locator(".iw-gallery"), explorer.locator(".iw-side")
    g, s = gallery.bounding_box(), side.bounding_box()
    assert g["y"] + g["height"] <= s["y"], "the gallery is not above the panes"
    columns, cut = _columns_and_cut_rows(gallery)
    # cards as wide as "pred 1 (100%)" in 11 px text (the smallest the explorer uses): 3 columns
    assert columns >= 3 and not cut, (columns, cut)
    captions = gallery.locator(".iw-caption span").evaluate_all(
        "spans => spans.filter(s => s.scrollWidth > s.clientWidth + 0.5).map(s => s.textContent)"
    )
    assert not captions, f"captions cut: {captions}"

    pane = explorer.locator(".iw-panel").bounding_box()
    chart = explorer.locator(".iw-panel .iw-bars")
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


# ----- a misclassified point at a 700 px window, the file browser open ---------------------------
# Rendered text smaller than 11 px: every element with text of its own, as drawn.
SMALL_TEXT = """root => [...root.querySelectorAll('*')].filter(el =>
    [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())
    && el.getClientRects().length > 0
    && parseFloat(getComputedStyle(el).fontSize) < 11)
  .map(el => `${el.className || el.tagName}: ${getComputedStyle(el).fontSize} "${el.textContent.trim().slice(0, 30)}"`)"""

# Elements inside the explorer that scroll vertically on their own (a box in the page's scroll).
SCROLL_BOXES = """root => [...root.querySelectorAll('*')].filter(el =>
    ['auto', 'scroll'].includes(getComputedStyle(el).overflowY) && el.scrollHeight > el.clientHeight + 1)
  .map(el => `${el.className}: ${el.scrollHeight} > ${el.clientHeight}`)"""

# WCAG contrast of an element's text colour (or, with border=true, its top border's colour) on
# the background it is drawn on (the nearest ancestor's that is not transparent).
CONTRAST = """([el, border]) => {
  const parse = (c) => {
    const m = c.match(/^rgba?\\(([^)]+)\\)$/) || c.match(/^color\\(srgb ([^)]+)\\)$/);
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    const scale = c.startsWith('rgb') ? 255 : 1;
    return [p[0] / scale, p[1] / scale, p[2] / scale, p.length > 3 ? p[3] : 1];
  };
  let node = el, bg = null;
  while (node && node.nodeType === 1 && !bg) {
    const c = parse(getComputedStyle(node).backgroundColor);
    if (c[3] > 0) bg = c;
    node = node.parentElement;
  }
  const style = getComputedStyle(el);
  const fg = parse(border ? style.borderTopColor : style.color);
  const mixed = [0, 1, 2].map(i => fg[i] * fg[3] + bg[i] * (1 - fg[3]));
  const lum = (rgb) => rgb.map(v => v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4)
    .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
  const [a, b] = [lum(mixed), lum(bg.slice(0, 3))].sort((x, y) => y - x);
  return (a + 0.05) / (b + 0.05);
}"""

WRONG_CELL = (
    "ex = _\nex.wait_ready()\n"
    "wrong = next(i for i in range(40) if ex.test_points.misclassified(i))\n"
    'print(f"WRONG {wrong}")'
)


def _open_file_browser(page) -> None:
    """JupyterLab's file browser shown in the left side bar."""
    if not page.locator("#filebrowser").is_visible():
        page.locator('.jp-SideBar .lm-TabBar-tab[data-id="filebrowser"]').click()
    page.locator("#filebrowser").wait_for(state="visible")


def _assert_readable(explorer, where: str) -> None:
    """No text under 11 px and no scroll box of its own inside the explorer."""
    small = explorer.evaluate(SMALL_TEXT)
    assert not small, f"{where}: text under 11 px: {small[:8]}"
    boxes = explorer.evaluate(SCROLL_BOXES)
    assert not boxes, f"{where}: scroll boxes inside the explorer: {boxes}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("frontend", ["lab"])
@pytest.mark.parametrize("theme_name", ["JupyterLab Light", "JupyterLab Dark"])
def test_a_misclassified_points_panel_at_700_px_with_the_file_browser_open_in(
    frontend, theme_name, jupyter, page, console_messages
):
    """The digits demo in a 700 px window with the file browser open: the panel of a
    misclassified point says so in two lines and with a mark (a cross and a border, of contrast
    at least 4.5 and 3 against its background) on the panel and on the gallery card; the bars
    are in the cards' order (most helpful first, then most harmful first); no text under 11 px and
    no scroll box inside the explorer, in the Influence tab and in Review's ranked list."""
    import re

    from playwright.sync_api import expect

    from .conftest import cell_output

    slug = "dark" if "Dark" in theme_name else "light"
    cells = ["%load_ext influence_widgets", "%influence --demo digits", WRONG_CELL]
    path = write_notebook(jupyter, f"misclassified_700_{slug}.ipynb", cells)
    with theme(jupyter, theme_name):
        open_and_run(page, jupyter, path, frontend, timeout=150)
    wrong = re.search(r"WRONG (\d+)", cell_output(page, 2)).group(1)
    explorer = page.locator(".iw-explorer")
    explorer.locator(f'.iw-test-item[data-test-index="{wrong}"]').click(timeout=60_000)
    wait_for_train_items(page, at_least=16)
    _shoot(page, explorer, f"misclassified_wide_{slug}.png")
    page.set_viewport_size({"width": 700, "height": 1000})  # after the run: the toolbar's
    _open_file_browser(page)  # kernel indicator, which open_and_run waits on, is then hidden
    page.wait_for_timeout(500)  # the layout and the container query settle
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").first.bounding_box()
    assert notebook["width"] < 500, f"the notebook is {notebook['width']:.0f} px wide"

    lines = explorer.locator(".iw-explanation").inner_text().split("\n")
    assert len(lines) == 2 and lines[0].startswith("Misclassified: the true label is"), lines
    mark = explorer.locator(".iw-panel-info .iw-wrong-mark")
    expect(mark).to_have_text("\u2717 misclassified")
    other = explorer.locator(".iw-test-item.iw-wrong:not(.iw-selected)").first
    gallery_mark = other.locator(".iw-wrong-mark")
    expect(gallery_mark).to_be_visible()
    for node, border, least in ((mark, False, 4.5), (gallery_mark, False, 4.5), (other, True, 3)):
        ratio = page.evaluate(CONTRAST, [node.element_handle(), border])
        assert ratio >= least, (
            f"{slug}: contrast {ratio:.2f} < {least} ({'border' if border else 'text'})"
        )

    bars = explorer.locator(".iw-bars [data-bar-index]").evaluate_all(
        "els => els.map(e => e.dataset.barIndex)"
    )
    cards = explorer.locator(".iw-train-item").evaluate_all(
        "els => els.map(e => e.dataset.trainIndex)"
    )
    assert bars == cards and len(bars) == 16, (bars, cards)
    scores = [float(t) for t in explorer.locator(".iw-train-item .iw-score").all_inner_texts()]
    assert scores[:8] == sorted(scores[:8], reverse=True) and all(s > 0 for s in scores[:8])
    assert scores[8:] == sorted(scores[8:]) and all(s < 0 for s in scores[8:]), scores
    _assert_readable(explorer, "Influence tab")
    _shoot(page, explorer, f"misclassified_700_{slug}.png")

    explorer.locator(".iw-tab-review").click()
    expect(explorer.locator(".iw-review")).to_have_attribute("data-ranking", "done", timeout=60_000)
    expect(explorer.locator(".iw-review-item")).to_have_count(12)
    _assert_readable(explorer, "Review tab")
    assert not shown_errors(page)
    assert not page_errors(console_messages)


# Every feature name shown: its text, whether it is cut off, its tooltip, and where it is.
FEATURE_NAMES = """root => [...root.querySelectorAll('.iw-fname')].filter(el => el.getClientRects().length)
  .map(el => ({ text: el.textContent, title: el.title, cut: el.scrollWidth > el.clientWidth + 1,
                inPanel: Boolean(el.closest('.iw-panel')) }))"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("frontend", ["lab"])
def test_tabular_feature_names_are_readable_at_700_px_in(frontend, jupyter, page, console_messages):
    """breast_cancer (30 features named as "worst fractal dimension") in a 700 px window with the
    file browser open: every name in the panel's tables is whole (wrapped, never cut); a name cut
    in a gallery card has its whole name in its tooltip; no text under 11 px, no scroll box."""
    explorer = _open_demo(page, jupyter, "breast_cancer", frontend)
    page.set_viewport_size({"width": 700, "height": 1000})
    _open_file_browser(page)
    page.wait_for_timeout(500)
    explorer.locator(".iw-train-item details.iw-more summary").first.click()  # all 30 features
    names = explorer.evaluate(FEATURE_NAMES)
    in_panel = [n for n in names if n["inPanel"]]
    assert len(in_panel) >= 16 * 5 + 30, len(in_panel)
    assert not [n["text"] for n in in_panel if n["cut"]], "names cut in the panel's tables"
    assert "worst fractal dimension" in {n["text"] for n in in_panel}
    unreadable = [n["text"] for n in names if n["cut"] and n["title"] != n["text"]]
    assert not unreadable, f"cut without their whole name in a tooltip: {unreadable}"
    assert all(n["title"] == n["text"] for n in names)  # the tooltip holds the name everywhere
    _assert_readable(explorer, "tabular Influence tab")
    _shoot(page, explorer, "tabular_700_lab.png")
    assert not shown_errors(page)
    assert not page_errors(console_messages)
