"""The browser layer of the Review tab (issue 16, sec 3), in JupyterLab and Notebook 7: the ranking
of the digits demo with planted flips, one relabel through the dropdown, Retrain with fixes and
the new accuracy; screenshots light, dark and narrow. Fixtures and helpers: conftest.py."""

from __future__ import annotations

import pytest

from .conftest import (
    PANEL,
    narrow_notebook,
    open_and_run,
    run_cell,
    save_screenshot,
    write_notebook,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FLIPPED = 40  # given a wrong label below; self-influence ranks it first
FLIPPED_CELL = f"""\
import influence_widgets as iw

data = iw.datasets.digits()
y = data.y_train.clone()
flips = [5, {FLIPPED}, 300]
y[flips] = (y[flips] + 3) % 10
model = iw.models.logistic_regression(data)
iw.train(model, (data.X_train, y), l2=0.01, progress=False)
inf = iw.Influence(model, (data.X_train, y), l2=0.01, progress=False)
ex = iw.InfluenceExplorer(inf, data, k=4)
ex"""

# The same model, its explorer given test inputs but no labels.
UNLABELED_CELL = FLIPPED_CELL.replace(
    "ex = iw.InfluenceExplorer(inf, data, k=4)",
    "ex = iw.InfluenceExplorer(\n"
    "    inf, x_test=data.X_test, kind='image', train_display=data.images('train'),\n"
    "    test_display=data.images('test'), class_names=data.class_names, k=4,\n"
    ")",
)

CHECK_CELL = """\
r = ex.review_result
if r is not None:
    X2, y2 = ex.fixed_dataset()
    unchanged = bool((y[flips] == (data.y_train[flips] + 3) % 10).all())
    print(f"FIXES {ex.review_fixes} AFTER {r.accuracy_after or 0:.4f} "
          f"FIXED {int(y2[flips[1]])} UNCHANGED {unchanged}")"""

# iw.train made slow from the second retrain on (about 30 s, calling the model every 10 ms, so
# Cancel can stop it).
SLOW_CELL = """\
import time
import influence_widgets.training as training

real_train, retrains = training.train, []

def maybe_slow_train(model, data, **options):
    retrains.append(len(data[0]))
    if len(retrains) == 1:
        return real_train(model, data, **options)
    x = data[0][:2].to(next(model.parameters()).dtype)
    for _ in range(3000):
        model(x)
        time.sleep(0.01)

training.train = maybe_slow_train"""


def _true_label(index: int) -> int:
    import influence_widgets as iw

    return int(iw.datasets.digits().y_train[index])


def _relabel_and_retrain(page, jupyter, path: str, frontend: str, shot: str) -> str:
    """Open the explorer, select test point 3, open Review, relabel FLIPPED to its true label
    through the dropdown, retrain, and check the outcome on screen and in the kernel; returns
    the outcome table's text."""
    from playwright.sync_api import expect

    open_and_run(page, jupyter, path, frontend, timeout=150)
    explorer = page.locator(".iw-explorer")
    explorer.locator('[data-test-index="3"]').click(timeout=60_000)
    explorer.locator(".iw-tab-review").click()
    review = explorer.locator(".iw-review")
    expect(review).to_have_attribute("data-ranking", "done", timeout=60_000)
    rows = review.locator(".iw-review-item")
    expect(rows).to_have_count(12)
    assert rows.first.get_attribute("data-train-index") == str(FLIPPED)
    first = rows.first.inner_text()
    assert "#1 · train #40" in first and "|self-influence|" in first, first
    expect(review.locator(".iw-review-retrain")).to_be_disabled()
    save_screenshot(review, f"review_ranking_{shot}.png")

    true = _true_label(FLIPPED)
    rows.first.locator("select.iw-review-label").select_option(str(true))
    expect(review.locator(".iw-review-pending")).to_contain_text("1 fix(es) pending: 1 relabelled")
    expect(rows.first).to_have_class("iw-review-item iw-review-relabelled")
    review.locator(".iw-review-retrain").click()
    expect(review).to_have_attribute("data-retrain", "done", timeout=60_000)
    outcome = review.locator(".iw-review-outcome").inner_text()
    assert "test accuracy" in outcome and "test #3 predicted" in outcome, outcome
    labelled = "no test labels" not in outcome
    assert "still those of the original model" in review.inner_text()
    save_screenshot(review, f"review_retrained_{shot}.png")
    out = run_cell(page, 1)
    assert f"FIXES {{{FLIPPED}: {true}}}" in out and f"FIXED {true}" in out, out
    assert "UNCHANGED True" in out, out
    after = out.split("AFTER ")[1].split()[0]
    if labelled:
        assert f"{100 * float(after):.1f}%" in outcome, (after, outcome)
    return outcome


@pytest.mark.timeout(240)
@pytest.mark.parametrize("frontend", ["lab", "notebook"])
def test_review_relabel_and_retrain_in(frontend, jupyter, page, console_messages):
    path = write_notebook(jupyter, f"review_{frontend}.ipynb", [FLIPPED_CELL, CHECK_CELL])
    _relabel_and_retrain(page, jupyter, path, frontend, frontend)
    if frontend == "lab":
        narrow_notebook(page)
        review = page.locator(".iw-explorer .iw-review")
        review.scroll_into_view_if_needed()
        save_screenshot(page.locator(PANEL).first, "review_narrow_lab.png")
        panel = page.locator(PANEL).first.bounding_box()
        for part in (review, page.locator(".iw-explorer .iw-tabs")):
            box = part.bounding_box()
            assert box["x"] + box["width"] <= panel["x"] + panel["width"] + 1, (box, panel)
        tabs = page.locator(".iw-explorer .iw-tabs")
        tabs.scroll_into_view_if_needed()
        save_screenshot(tabs, "review_narrow_tabs_lab.png")
    assert not [m for m in console_messages if m.startswith("[pageerror]") and "schema" not in m]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("frontend", ["lab"])
def test_review_without_test_labels_in_the_dark_theme_in(frontend, jupyter, page, console_messages):
    """An explorer given no test labels: the outcome says the accuracy and loss are not
    available, and still shows the selected point's prediction before and after."""
    from playwright.sync_api import expect

    from .conftest import theme

    cells = [UNLABELED_CELL, CHECK_CELL, SLOW_CELL]
    path = write_notebook(jupyter, "review_dark.ipynb", cells)
    with theme(jupyter, "JupyterLab Dark"):
        outcome = _relabel_and_retrain(page, jupyter, path, frontend, "dark")
    assert outcome.count("not available (no test labels)") == 2, outcome

    review = page.locator(".iw-explorer .iw-review")
    review.locator(".iw-review-retrain").click()
    expect(review).to_have_attribute("data-retrain", "running")
    expect(review.locator(".iw-review-retrain-progress")).to_be_visible()
    expect(review.locator(".iw-review-retrain")).to_be_disabled()
    expect(review.locator(".iw-review-retrain-status")).to_contain_text(
        "Retraining with 1 relabelled, 0 removed"
    )
    save_screenshot(review, "review_running_dark.png")
    review.locator(".iw-review-cancel").click()
    expect(review).to_have_attribute("data-retrain", "cancelled", timeout=3_000)
    expect(review.locator(".iw-review-retrain-status")).to_have_text("Retrain cancelled.")
    expect(review.locator(".iw-review-cancel")).to_be_hidden()
    expect(review.locator(".iw-review-retrain")).to_be_enabled()
    assert not [m for m in console_messages if m.startswith("[pageerror]") and "schema" not in m]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("frontend", ["lab"])
def test_the_review_code_runs_as_shown_after_influence_alone_in(
    frontend, jupyter, page, console_messages
):
    """In a notebook of only ``%load_ext influence_widgets`` and ``%influence --demo digits``:
    remove the first ranked point, retrain, then copy the code the tab shows into a new cell
    exactly as shown and run it: it opens a second explorer (on the retrained model), with no
    error and no name of the user's it assumes."""
    from playwright.sync_api import expect

    from .conftest import append_and_run_cell

    cells = ["%load_ext influence_widgets", "%influence --demo digits"]
    path = write_notebook(jupyter, "review_code_lab.ipynb", cells)
    open_and_run(page, jupyter, path, frontend, timeout=150)
    explorer = page.locator(".iw-explorer").first
    explorer.locator('[data-test-index="3"]').click(timeout=60_000)
    explorer.locator(".iw-tab-review").click()
    review = explorer.locator(".iw-review")
    expect(review).to_have_attribute("data-ranking", "done", timeout=60_000)
    review.locator(".iw-review-item").first.locator(".iw-review-remove input").check()
    expect(review.locator(".iw-review-pending")).to_contain_text("1 fix(es) pending")
    review.locator(".iw-review-retrain").click()
    expect(review).to_have_attribute("data-retrain", "done", timeout=60_000)
    code = review.locator(".iw-review-code").inner_text()
    assert code.startswith("import influence_widgets as iw\nex = iw.InfluenceExplorer.opened("), (
        code
    )
    save_screenshot(review, "review_code_lab.png")
    out = append_and_run_cell(page, code, timeout=120)
    assert "Error" not in out, out
    expect(page.locator(".iw-explorer")).to_have_count(2, timeout=60_000)
    expect(page.locator(".iw-explorer").nth(1)).to_have_attribute(
        "data-status", "ready", timeout=60_000
    )
    assert not [m for m in console_messages if m.startswith("[pageerror]") and "schema" not in m]
