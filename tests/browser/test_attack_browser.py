"""The Attack tab in JupyterLab: the defaults flip a demo's prediction, the tab says why it stopped,
and a misclassified point is refused before Run. Screenshots with ``IW_SCREENSHOTS=DIR``:
docs/screenshots/attack_{digits,cancer}_{light,dark,narrow}.png come from the tests below, and
docs/attack.png is attack_digits_light.png."""

from __future__ import annotations

import re

import pytest

from influence_widgets.magic import DEMO_ATTACK

from .conftest import (
    narrow_notebook,
    open_and_run,
    run_cell,
    save_screenshot,
    theme,
    write_notebook,
)
from .test_explorer_browser import page_errors
from .test_influence_pane_browser import SMALL_TEXT


def _open_demo(jupyter, page, demo: str, name: str):
    """Open ``%influence --demo demo``; returns the explorer, its first correctly classified and
    its first misclassified test index."""
    path = write_notebook(
        jupyter,
        name,
        [
            "%load_ext influence_widgets",
            f"%influence --demo {demo}",
            "import numpy as np\nex = _\nex.wait_ready()\n"
            "right = int(np.nonzero(ex.test_points.predicted == ex.test_points.true)[0][0])\n"
            "wrong = int(np.nonzero(ex.test_points.predicted != ex.test_points.true)[0][0])\n"
            'print(f"RIGHT {right} WRONG {wrong}")',
            "r = ex.attack_result\n"
            "print(f\"ATTACK {ex.attack['state']} {r and r.reached_margin} {ex.attack_eps}\")",
        ],
    )
    open_and_run(page, jupyter, path, "lab", timeout=170)
    words = run_cell(page, 2, timeout=120).split()
    right, wrong = int(words[words.index("RIGHT") + 1]), int(words[words.index("WRONG") + 1])
    return page.locator(".iw-explorer"), right, wrong


def _select(explorer, index: int) -> None:
    """Click test point ``index`` (paging through the gallery until it shows)."""
    item = explorer.locator(f'[data-test-index="{index}"]')
    for _ in range(20):
        if item.count():
            break
        explorer.locator(".iw-next").click()
    item.click(timeout=60_000)


def _attack_with_defaults(explorer, right: int) -> None:
    from playwright.sync_api import expect

    _select(explorer, right)
    explorer.locator(".iw-tab-attack").click()
    expect(explorer.locator(".iw-attack-status")).to_contain_text("ready to attack")
    expect(explorer.locator(".iw-attack-step-auto")).to_be_checked()
    explorer.locator(".iw-attack-run").click()
    expect(explorer.locator(".iw-attack-verdict")).to_contain_text("Flipped", timeout=90_000)


def _assert_inside(explorer, selector: str) -> None:
    """Nothing of the pane ``selector`` sticks out of the explorer at the right (a narrow view)."""
    outer = explorer.bounding_box()
    pane = explorer.locator(selector).first.bounding_box()
    widest = explorer.locator(selector).first.evaluate(
        "el => Math.max(...[...el.querySelectorAll('*')].map(n => n.getBoundingClientRect().right))"
    )
    right = outer["x"] + outer["width"]
    assert pane["width"] > 200, f"the pane is {pane['width']:.0f} px wide"
    assert widest <= right + 1, (
        f"the pane's content ends at {widest:.0f}, the explorer at {right:.0f}"
    )


# What a failed image load logs: an object URL revoked before its image had read it.
BROKEN_LOAD = "ERR_FILE_NOT_FOUND"
# How many poisoned points the outcome shows before a fold with the others (js/explorer.js).
ATTACK_ITEMS_SHOWN = 10
# The window width of the narrow screenshots.
NARROW_WINDOW = 700


def _broken_loads(explorer, console_messages: list[str]) -> list[str]:
    """Console errors of images that failed to load, and images of the pane that did not load."""
    unloaded = explorer.locator(".iw-attack-result img").evaluate_all(
        "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)"
    )
    return [m for m in console_messages if BROKEN_LOAD in m] + [f"img {a}" for a in unloaded]


def _help_sentences(explorer) -> tuple[str, str, str]:
    """The tab's two help sentences and its folded details (closed until clicked)."""
    from playwright.sync_api import expect

    details = explorer.locator(".iw-attack-details")
    expect(details).not_to_have_attribute("open", "")
    does = explorer.locator(".iw-attack-does").text_content()
    look = explorer.locator(".iw-attack-look").text_content()
    return does, look, details.locator(".iw-attack-details-body").text_content()


def _auto_step_is_a_checkbox(explorer) -> None:
    """The step is auto by a ticked checkbox, its slider disabled; unticked, the slider sets a
    fixed step; ticked again, auto."""
    from playwright.sync_api import expect

    box = explorer.locator(".iw-attack-step-auto")
    step = explorer.locator(".iw-attack-step input[type=range]")
    expect(box).to_be_checked()
    expect(step).to_be_disabled()
    expect(explorer.locator(".iw-attack-step .iw-attack-value")).to_contain_text("eps / 12.5 =")
    box.uncheck()
    expect(step).to_be_enabled()
    box.check()
    expect(step).to_be_disabled()


def _take(explorer, page, name: str, narrow: bool) -> None:
    """A screenshot of the window scrolled to the Attack tab (an element screenshot taller than
    the window comes out blank in JupyterLab's windowed notebook); when ``narrow``, of a
    NARROW_WINDOW px window (the file browser open beside the notebook), checking that nothing of
    the Attack pane sticks out."""
    width = NARROW_WINDOW if narrow else page.viewport_size["width"]
    page.set_viewport_size({"width": width, "height": 1000 if narrow else 1300})
    page.wait_for_timeout(300)
    if narrow:
        _assert_inside(explorer, ".iw-attack")
        small = explorer.locator(".iw-attack").evaluate(SMALL_TEXT)
        assert not small, f"Attack tab at {width} px: text under 11 px: {small[:8]}"
    explorer.locator(".iw-tab-attack").evaluate("el => el.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
    save_screenshot(page, name)


LOOKS = [("light", False), ("dark", False), ("light", True)]


@pytest.mark.timeout(420)
@pytest.mark.parametrize("frontend", ["lab"])
@pytest.mark.parametrize(("look", "narrow"), LOOKS, ids=["light", "dark", "narrow"])
def test_attack_on_digits_flips_clearly_and_the_smallest_eps_loads_every_image(
    look, narrow, frontend, jupyter, page, console_messages
):
    """The defaults flip a digit by a clear lead with small pixel changes; the help speaks of
    images; "Find smallest eps" redraws the outcome once, with no image load failing (it logged
    120 net::ERR_FILE_NOT_FOUND when URLs were revoked before their images loaded); a
    misclassified point is refused before Run."""
    from playwright.sync_api import expect

    with theme(jupyter, "JupyterLab Dark" if look == "dark" else "JupyterLab Light"):
        shot = f"attack_digits_{'narrow' if narrow else look}"
        explorer, right, wrong = _open_demo(jupyter, page, "digits", f"{shot}.ipynb")
        _select(explorer, right)
        explorer.locator(".iw-tab-attack").click()
        does, look_for, details = _help_sentences(explorer)
        assert does.startswith("Changes some training images a little") and "Look for" in look_for
        assert "I_pert,loss" in details and "iw.craft_attack" in details and "Inception" in details
        for research in ("I_pert", "Inception", "craft_attack", "Koh"):
            assert research not in does + look_for, research
        _auto_step_is_a_checkbox(explorer)
        expect(explorer.locator(".iw-attack-margin .iw-attack-value")).to_have_text("20 points")
        explorer.locator(".iw-attack-run").click()
        expect(explorer.locator(".iw-attack-verdict")).to_contain_text("Flipped", timeout=90_000)
        expect(explorer.locator(".iw-attack-reason")).to_contain_text("the new class leads by")
        used = explorer.locator(".iw-attack-used")
        expect(used).to_contain_text("eps 64 8-bit levels")
        expect(used).to_contain_text("stop at a lead of 20 points")
        expect(explorer.locator(".iw-attack-legend").first).to_contain_text("red = value raised")
        assert not _broken_loads(explorer, console_messages)
        out = run_cell(page, 3)
        assert "ATTACK done True 64.0" in out, out
        _take(explorer, page, f"{shot}.png", narrow)

        if look == "light" and not narrow:
            explorer.locator(".iw-attack-search-run").click()
            expect(explorer.locator(".iw-attack-search")).to_contain_text(
                "eps tried", timeout=200_000
            )
            expect(explorer.locator(".iw-attack-status")).to_contain_text("Smallest eps that")
            explorer.locator(".iw-attack-more summary").click()  # the other poisoned digits
            expect(explorer.locator(".iw-attack-item")).to_have_count(
                DEMO_ATTACK["digits"]["attack_n_poison"]
            )
            page.wait_for_timeout(1000)  # every image of the outcome has had time to load
            assert not _broken_loads(explorer, console_messages)

        _select(explorer, wrong)
        status = explorer.locator(".iw-attack-status")
        expect(status).to_contain_text(f"Test point #{wrong} is already misclassified")
        expect(status).to_contain_text("Pick a correctly classified test point")
        expect(explorer.locator(".iw-attack-run")).to_be_disabled()
        expect(explorer.locator(".iw-attack-search-run")).to_be_disabled()
    assert not page_errors(console_messages)


# A change line of a table: "mean area: 1326 → 1290".
CHANGE = re.compile(r"^(?P<name>.+): (?P<before>-?[\d.e+-]+) → (?P<after>-?[\d.e+-]+)$")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("frontend", ["lab"])
@pytest.mark.parametrize(("look", "narrow"), LOOKS, ids=["light", "dark", "narrow"])
def test_attack_on_breast_cancer_speaks_of_tables_in_the_data_sets_units(
    look, narrow, frontend, jupyter, page, console_messages
):
    """The help says nothing of images or 8-bit levels; the changes are in the gallery's units
    (mm, mm^2, ...), so no area turns negative; eps is in standard deviations."""
    from playwright.sync_api import expect

    with theme(jupyter, "JupyterLab Dark" if look == "dark" else "JupyterLab Light"):
        shot = f"attack_cancer_{'narrow' if narrow else look}"
        explorer, right, _ = _open_demo(jupyter, page, "breast_cancer", f"{shot}.ipynb")
        _select(explorer, right)
        explorer.locator(".iw-tab-attack").click()
        does, look_for, details = _help_sentences(explorer)
        text = explorer.locator(".iw-attack").text_content()
        for image_words in ("8-bit", "image", "pixel", "Inception", "levels"):
            assert image_words not in text, image_words
        assert does.startswith("Changes some training rows a little")
        assert "own units" in look_for and "range the training set spans" in details
        expect(explorer.locator(".iw-attack-eps")).to_contain_text("eps (SD)")
        _auto_step_is_a_checkbox(explorer)
        explorer.locator(".iw-attack-run").click()
        expect(explorer.locator(".iw-attack-verdict")).to_contain_text("Flipped", timeout=90_000)
        expect(explorer.locator(".iw-attack-used")).to_contain_text("eps 0.5 SD")
        lines = explorer.locator(".iw-attack-changes li").all_text_contents()
        assert lines and not any("model reads" in line for line in lines), lines[:3]
        for line in lines:
            change = CHANGE.match(line)
            assert change, line
            assert float(change["before"]) >= 0 and float(change["after"]) >= 0, line
        assert any(
            " area: " in line and float(CHANGE.match(line)["before"]) > 100 for line in lines
        )
        _take(explorer, page, f"{shot}.png", narrow)
    assert not page_errors(console_messages)


@pytest.mark.timeout(420)
@pytest.mark.fashion_mnist
@pytest.mark.parametrize("frontend", ["lab"])
@pytest.mark.parametrize("look", ["light", "dark"])
def test_attack_demo_defaults_flip_a_sandal_or_sneaker(
    look, frontend, jupyter, page, console_messages
):
    """The paper's setting flips a Sandal or Sneaker with the defaults; no image load fails."""
    from playwright.sync_api import expect

    name = "JupyterLab Dark" if look == "dark" else "JupyterLab Light"
    with theme(jupyter, name):
        explorer, right, _ = _open_demo(jupyter, page, "fashion_attack", f"attack_{look}.ipynb")
        _attack_with_defaults(explorer, right)
        expect(explorer.locator(".iw-attack-reason")).to_contain_text("Flipped after")
        n_poison = DEMO_ATTACK["fashion_attack"]["attack_n_poison"]
        items = explorer.locator(".iw-attack-item")
        expect(items).to_have_count(min(n_poison, ATTACK_ITEMS_SHOWN))
        if n_poison > ATTACK_ITEMS_SHOWN:  # the others, drawn when their fold opens
            explorer.locator(".iw-attack-more summary").click()
            expect(items).to_have_count(n_poison)
        cut = explorer.locator(".iw-test-item .iw-caption span").evaluate_all(
            "spans => spans.filter(s => s.scrollWidth > s.clientWidth + 1).map(s => s.textContent)"
        )
        assert not cut, f"gallery captions cut off: {cut[:4]}"
        save_screenshot(explorer, f"attack_fashion_{look}.png")
        if look == "light":
            narrow_notebook(page)
            _assert_inside(explorer, ".iw-attack")
            save_screenshot(explorer, "attack_fashion_narrow.png")
        assert not _broken_loads(explorer, console_messages)
    assert not page_errors(console_messages)
