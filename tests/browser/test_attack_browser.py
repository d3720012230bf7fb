"""The Attack tab in JupyterLab: the defaults flip a demo's prediction, the tab says why it stopped,
and a misclassified point is refused before Run. Screenshots with ``IW_SCREENSHOTS=DIR``."""

from __future__ import annotations

import pytest

from .conftest import (
    narrow_notebook,
    open_and_run,
    run_cell,
    save_screenshot,
    theme,
    write_notebook,
)
from .test_explorer_browser import page_errors


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
            "print(f\"ATTACK {ex.attack['state']} {r and r.flipped} {ex.attack_eps}\")",
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
    expect(explorer.locator(".iw-attack-step .iw-attack-value")).to_contain_text("auto")
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


@pytest.mark.timeout(300)
@pytest.mark.parametrize("frontend", ["lab"])
def test_attack_defaults_flip_a_digit_and_a_misclassified_point_is_refused(
    frontend, jupyter, page, console_messages
):
    from playwright.sync_api import expect

    explorer, right, wrong = _open_demo(jupyter, page, "digits", "attack_digits.ipynb")
    _attack_with_defaults(explorer, right)
    expect(explorer.locator(".iw-attack-reason")).to_contain_text("Flipped after")
    expect(explorer.locator(".iw-attack-used")).to_contain_text("eps 255 8-bit levels")
    expect(explorer.locator(".iw-attack-probs tr")).not_to_have_count(1)
    expect(explorer.locator(".iw-attack-legend").first).to_contain_text("red = value raised")
    save_screenshot(explorer, "attack_digits_flipped.png")
    out = run_cell(page, 3)
    assert "ATTACK done True 255.0" in out, out

    _select(explorer, wrong)
    status = explorer.locator(".iw-attack-status")
    expect(status).to_contain_text(f"Test point #{wrong} is already misclassified")
    expect(status).to_contain_text("Pick a correctly classified test point")
    expect(explorer.locator(".iw-attack-run")).to_be_disabled()
    expect(explorer.locator(".iw-attack-search-run")).to_be_disabled()
    save_screenshot(explorer, "attack_digits_misclassified.png")
    narrow_notebook(page)
    _assert_inside(explorer, ".iw-attack")
    save_screenshot(explorer, "attack_digits_misclassified_narrow.png")
    assert not page_errors(console_messages)


@pytest.mark.timeout(420)
@pytest.mark.fashion_mnist
@pytest.mark.parametrize("frontend", ["lab"])
@pytest.mark.parametrize("look", ["light", "dark"])
def test_attack_demo_defaults_flip_a_sandal_or_sneaker(
    look, frontend, jupyter, page, console_messages
):
    """docs/attack.png is the light screenshot of this test."""
    from playwright.sync_api import expect

    name = "JupyterLab Dark" if look == "dark" else "JupyterLab Light"
    with theme(jupyter, name):
        explorer, right, _ = _open_demo(jupyter, page, "fashion_attack", f"attack_{look}.ipynb")
        _attack_with_defaults(explorer, right)
        expect(explorer.locator(".iw-attack-reason")).to_contain_text("Flipped after")
        expect(explorer.locator(".iw-attack-item")).to_have_count(10)
        cut = explorer.locator(".iw-test-item .iw-caption span").evaluate_all(
            "spans => spans.filter(s => s.scrollWidth > s.clientWidth + 1).map(s => s.textContent)"
        )
        assert not cut, f"gallery captions cut off: {cut[:4]}"
        save_screenshot(explorer, f"attack_fashion_{look}.png")
        if look == "light":
            narrow_notebook(page)
            _assert_inside(explorer, ".iw-attack")
            save_screenshot(explorer, "attack_fashion_narrow.png")
    assert not page_errors(console_messages)
