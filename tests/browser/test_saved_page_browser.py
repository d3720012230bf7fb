"""The explorer saved by ``save_html``, opened from ``file://`` in Chromium with the network blocked
(every request but the file's own aborted, and the context offline): no Python, no Jupyter. Two
clicks show the saved helpful and harmful points of each test point, as the explorer shows them;
the filters redraw the gallery; Verify, Attack and Review are off and a line says why; nothing
is requested but the file and nothing is logged as an error. Screenshots (``IW_SCREENSHOTS``):
light and dark system themes, and a 700 px window.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import influence_widgets as iw
from influence_widgets.widgets.saved_page import NOTEBOOK_ONLY, NOTEBOOK_TABS

from .conftest import save_screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

K = 4

# Every image in the panel has loaded (a saved image that failed would have naturalWidth 0).
IMAGES_LOADED = """panel => [...panel.querySelectorAll('img')].every(
  img => img.complete && img.naturalWidth > 0)"""


@pytest.fixture(scope="module")
def saved(digits_influence, tmp_path_factory):
    """(explorer, the saved page, the saved test points in the gallery's order, a correctly
    classified one of them, a misclassified one): the page holds only these three."""
    data, inf = digits_influence
    explorer = iw.InfluenceExplorer(inf, data, k=K).wait_ready()
    tests = explorer.test_points
    wrong = np.nonzero(tests.predicted != tests.true)[0]
    right = np.nonzero(tests.predicted == tests.true)[0]
    chosen = [int(right[0]), int(wrong[0]), int(right[5])]
    path = tmp_path_factory.mktemp("saved") / "lesson.html"
    explorer.save_html(path, test_points=chosen, progress=False)
    return explorer, path, sorted(chosen), chosen[0], chosen[1]


@pytest.fixture
def offline(browser):
    """A factory of offline pages: ``open(path, **context options)`` returns (page, the URLs the
    page asked for, its console messages and uncaught errors)."""
    contexts = []

    def open_page(path: Path, **options):
        context = browser.new_context(offline=True, **options)
        contexts.append(context)
        requests: list[str] = []
        messages: list[str] = []

        def only_the_file(route):
            requests.append(route.request.url)
            if route.request.url.startswith("file:"):
                route.continue_()
            else:
                route.abort()

        context.route("**/*", only_the_file)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("console", lambda msg: messages.append(f"[{msg.type}] {msg.text}"))
        page.on("pageerror", lambda err: messages.append(f"[pageerror] {err}"))
        page.goto(path.as_uri())
        return page, requests, messages

    yield open_page
    for context in contexts:
        context.close()


def cards(page) -> list[int]:
    """The test indices of the gallery's cards."""
    return [
        int(i)
        for i in page.locator(".iw-test-item").evaluate_all(
            "cards => cards.map(c => c.dataset.testIndex)"
        )
    ]


def shown_panel(page, index: int) -> dict[str, list[int]]:
    """Clicks test point ``index`` and returns the panel's helpful and harmful training indices."""
    page.locator(f'.iw-test-item[data-test-index="{index}"]').click()
    panel = page.locator(".iw-panel")
    panel.locator(".iw-title", has_text=f"Test #{index}").wait_for()
    return {
        kind: [
            int(i)
            for i in panel.locator(f".iw-{kind} .iw-train-item").evaluate_all(
                "items => items.map(it => it.dataset.trainIndex)"
            )
        ]
        for kind in ("helpful", "harmful")
    }


def the_explorers_panel(explorer, index: int) -> dict[str, list[int]]:
    explorer.selected = index
    return {kind: [it["index"] for it in explorer.panel[kind]] for kind in ("helpful", "harmful")}


@pytest.mark.timeout(120)
def test_saved_page_answers_clicks_offline(saved, offline):
    explorer, path, chosen, right, wrong = saved
    page, requests, messages = offline(path, viewport={"width": 1400, "height": 1000})
    page.locator(".iw-explorer").wait_for()
    assert cards(page) == chosen
    for index in (right, wrong):
        shown = shown_panel(page, index)
        assert shown == the_explorers_panel(explorer, index)
        assert len(shown["helpful"]) == len(shown["harmful"]) == K
        panel = page.locator(".iw-panel")
        assert panel.evaluate(IMAGES_LOADED)
        assert panel.locator(".iw-explanation").inner_text() == explorer.panel["explanation"]
        assert page.locator(".iw-selected").get_attribute("data-test-index") == str(index)
    save_screenshot(page.locator(".iw-explorer"), "saved_page_light.png")

    # the class filter and "misclassified only" redraw the gallery from the saved points
    label = explorer.test_points.true[wrong]
    page.locator(".iw-class-filter").select_option(str(label))
    same_class = [i for i in chosen if explorer.test_points.true[i] == label]
    assert cards(page) == same_class
    page.locator(".iw-class-filter").select_option("-1")
    page.locator(".iw-wrong-filter input").check()
    assert cards(page) == [wrong]
    assert "(1 shown)" in page.locator(".iw-page-info").inner_text()

    # Verify, Attack and Review need Python: off, and one line says so
    for name in NOTEBOOK_TABS:
        assert page.locator(f".iw-tab-{name}").is_disabled()
    assert page.locator(".iw-saved-note").inner_text() == NOTEBOOK_ONLY
    assert page.locator(".iw-tab-influence").is_enabled()

    assert requests == [path.as_uri()]
    errors = [m for m in messages if m.startswith(("[error]", "[pageerror]", "[warning]"))]
    assert errors == [], messages


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("scheme", "width"), [("dark", 1400), ("light", 700)], ids=["dark", "700px"]
)
def test_saved_page_in_the_dark_and_narrow(saved, offline, scheme, width):
    explorer, path, _, _, wrong = saved
    page, requests, messages = offline(
        path, color_scheme=scheme, viewport={"width": width, "height": 1000}
    )
    assert shown_panel(page, wrong) == the_explorers_panel(explorer, wrong)
    root = page.locator(".iw-explorer")
    # the page follows the system's theme: a dark background in dark mode, white otherwise
    background = root.evaluate("el => getComputedStyle(el).backgroundColor")
    assert (background != "rgb(255, 255, 255)") == (scheme == "dark")
    # nothing wider than the window
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    save_screenshot(root, f"saved_page_{scheme}_{width}px.png")
    assert requests == [path.as_uri()]
    assert [m for m in messages if m.startswith(("[error]", "[pageerror]"))] == []


# Each training card's full feature table (the one under "all N features"): names and Δ SD cells.
CARD_TABLES = """panel => [...panel.querySelectorAll('.iw-train-item')].map(card => {
  const table = card.querySelector('details table') || card.querySelector('table');
  return [...table.querySelectorAll('tbody tr')].map(tr =>
    [tr.querySelector('th').textContent, tr.querySelector('td:last-child').textContent]);
})"""


@pytest.mark.timeout(120)
def test_saved_tabular_page_rebuilds_every_card(offline, tmp_path):
    """breast_cancer, one test point a page: the pages turn, and each card shows its features in
    the explorer's order, with its differences in SDs (rebuilt in the page from the rows each
    point keeps once)."""
    data = iw.datasets.breast_cancer()
    model = iw.models.logistic_regression(data)
    iw.train(model, data, l2=0.01, progress=False)
    inf = iw.Influence(model, (data.X_train, data.y_train), l2=0.01, progress=False)
    explorer = iw.InfluenceExplorer(inf, data, k=3, page_size=1).wait_ready()
    path = explorer.save_html(tmp_path / "tabular.html", test_points=[0, 7], progress=False)
    page, requests, messages = offline(path, viewport={"width": 1400, "height": 1000})
    assert cards(page) == [0]
    for index, turn in ((7, ".iw-next"), (0, ".iw-prev")):  # one test point a page
        page.locator(turn).click()
        assert cards(page) == [index]
        assert page.locator(".iw-page-info").inner_text().startswith(f"page {1 + (index == 7)} / 2")
        assert shown_panel(page, index) == the_explorers_panel(explorer, index)
        expected = [
            [[name, ("+" if d > 0 else "") + f"{d:.1f}"] for name, _, _, d in item["differences"]]
            for kind in ("helpful", "harmful")
            for item in explorer.panel[kind]
        ]
        assert page.locator(".iw-panel").evaluate(CARD_TABLES) == expected
    assert requests == [path.as_uri()]
    assert [m for m in messages if m.startswith(("[error]", "[pageerror]"))] == []
