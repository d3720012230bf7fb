"""Code the explorer shows for the user to run in a cell, written here (not in the front end) so
that tests run it exactly as shown.

Each snippet first finds its explorer by the number it has in this kernel
(:meth:`InfluenceExplorer.opened <influence_widgets.InfluenceExplorer.opened>`), so it runs after
``%load_ext influence_widgets`` and ``%influence ...`` alone: it needs no ``ex = _`` and no
variable of the user's.
"""

from __future__ import annotations

__all__ = ["explorer_code", "fixes_code", "retrained_code"]


def explorer_code(number: int) -> str:
    """Two statements, one a line, that bind ``ex`` to explorer number ``number`` of this
    kernel."""
    return f"import influence_widgets as iw\nex = iw.InfluenceExplorer.opened({number})"


def retrained_code(number: int) -> str:
    """A cell that opens an explorer on the model Review's "Retrain with fixes" trained: the
    retrained copy, the training data with the fixes it used, this explorer's test points."""
    return f"{explorer_code(number)}\nex.explore_retrained()"


def fixes_code(number: int) -> str:
    """One line that shows the proposed fixes and the training data with them."""
    return "; ".join([*explorer_code(number).splitlines(), "ex.review_fixes, ex.fixed_dataset()"])
