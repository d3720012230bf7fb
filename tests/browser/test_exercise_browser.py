"""The browser layer: a classroom exercise as a student meets it, in JupyterLab 4.

Exercise 1 ("the influence of one training point, by hand") is opened as shipped, with a classic
mistake typed into its first answer cell: g_i without the L2 term. Run All must reach the end (the
checkers never raise), the first checker must name the mistake, with its formulas typeset (the
feedback is Markdown with LaTeX), and the later checkers must say that their answers are not filled
in yet. ``IW_SCREENSHOTS=DIR`` saves the mistake and its feedback as
``exercise.png`` (the README's picture, docs/exercise.png).
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from .conftest import CELLS, REPO, open_and_run, outputs

pytestmark = [pytest.mark.browser, pytest.mark.slow]

EXERCISE = REPO / "notebooks/exercises/01_influence_by_hand.ipynb"
# The student forgot that g_i carries the L2 term of ell_i = L(z_i, theta) + (l2/2)||theta||^2.
MISTAKE = """\
g_test = grad(lambda th: losses(th, x_test, y_t).sum())(theta)
g_i = grad(lambda th: losses(th, x_i, y_i).sum())(theta)"""


def _with_mistake(folder: Path) -> tuple[str, int]:
    """The exercise with MISTAKE as its first answer; returns its name and that cell's index."""
    nb = nbformat.read(EXERCISE, as_version=4)
    answer = next(i for i, c in enumerate(nb.cells) if "g_test = ..." in c.source)
    nb.cells[answer].source = MISTAKE
    nbformat.write(nb, folder / "exercise_01.ipynb")
    return "exercise_01.ipynb", answer


def _save_feedback_screenshot(page, first: int, last: int) -> None:
    """With IW_SCREENSHOTS=DIR: the cells first..last (the step's text, answer and feedback)."""
    folder = os.environ.get("IW_SCREENSHOTS")
    if not folder:
        return
    cells = page.locator(CELLS)
    cells.nth(first).scroll_into_view_if_needed()
    top = cells.nth(first).bounding_box()
    bottom = cells.nth(last).bounding_box()
    Path(folder).mkdir(parents=True, exist_ok=True)
    page.screenshot(
        path=str(Path(folder) / "exercise.png"),
        clip={
            "x": top["x"],
            "y": top["y"],
            "width": top["width"],
            "height": bottom["y"] + bottom["height"] - top["y"],
        },
    )


@pytest.mark.timeout(240)
@pytest.mark.parametrize("frontend", ["lab"])
def test_exercise_feedback_names_the_mistake_in(frontend, jupyter, page, console_messages):
    path, answer = _with_mistake(jupyter.root_dir)
    open_and_run(page, jupyter, path, frontend, timeout=180)
    texts = outputs(page)
    checker = texts[answer + 1]
    assert "[not yet]" in checker, checker
    assert "g_i" in checker and "L2" in checker, checker
    output = page.locator(CELLS).nth(answer + 1).locator(".jp-OutputArea")
    assert output.locator(".jp-RenderedMarkdown").count(), "the feedback is not shown as Markdown"
    assert output.locator("mjx-container").count(), "the feedback's formulas are not typeset"
    assert "$" not in checker, checker
    assert "Traceback" not in "".join(texts), texts
    later = [t for t in texts[answer + 2 :] if "[not yet]" in t]
    assert later and all("not filled in yet" in t for t in later), later
    _save_feedback_screenshot(page, answer - 1, answer + 1)
