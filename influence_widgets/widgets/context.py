"""What every tab of the explorer is given: one narrow, public context.

A tab (Influence, Verify, Attack, Review) reads the Influence and the other attribution methods
the explorer shows, the test points with the model's predictions, the display data, whether
precomputation is done, and a label formatter from :class:`ExplorerContext`; it runs its slow work
through the context's :class:`JobRunner` and shows its state in the explorer's synced traits
(``context.view``). No tab reads another's state.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import traitlets

from influence_widgets.core.influence import Influence
from influence_widgets.widgets.display import DisplayData
from influence_widgets.widgets.jobs import JobRunner
from influence_widgets.widgets.test_points import TestPoints

if TYPE_CHECKING:
    from influence_widgets.widgets.method_switch import MethodSet

__all__ = ["ExplorerContext", "Readiness", "TestPoints"]


class Readiness:
    """Whether the explorer's precomputation is done, failed (and why) or still running."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fitted = False
        self.failure: str | None = None  # what the widget shows when precomputation failed
        self.pending: int | None = None  # a click made meanwhile: the latest wins
        self.done = threading.Event()  # set once any queued click is served too (or on error)

    def problem(self) -> str | None:
        """Why no slow job can start yet, with what to do; None once precomputation is done."""
        if self.failure is not None:
            return "Precomputation failed (see the error above): open a new explorer."
        if not self.fitted:
            return "Wait until precomputation has finished."
        return None


@dataclass(frozen=True)
class ExplorerContext:
    """What a tab may use of its explorer.

    Attributes:
        view: the explorer widget: its synced traits (``selected``, ``k``, the tabs' states).
        influence: the explorer's :class:`~influence_widgets.Influence`.
        tests: its test points and the model's predictions.
        display: what is shown of each point, and the class names.
        readiness: whether precomputation is done.
        jobs: the explorer's background work (progress, cancel, clean exit).
        number: the explorer's number in this kernel, by which the code it shows finds it
            (``InfluenceExplorer.opened``, :mod:`~influence_widgets.widgets.hints`).
        methods: the attribution methods the panel can show (``influence`` is their reference
            Influence), by name, and the LDS measured for them.
    """

    view: traitlets.HasTraits
    influence: Influence
    tests: TestPoints
    display: DisplayData
    readiness: Readiness
    jobs: JobRunner
    number: int
    methods: MethodSet

    @property
    def shown(self) -> str:
        """The name of the method the panel shows (the ``method`` trait)."""
        return self.view.method

    @property
    def selected(self) -> int | None:
        """The selected test index, or None."""
        return self.view.selected

    def label(self, c: int) -> str:
        """Class index ``c`` as the explorer names it."""
        names = self.display.class_names
        return names[c] if 0 <= c < len(names) else str(c)

    def cannot_start(self, running: bool) -> str | None:
        """Why a job on the selected test point cannot start (``running``: one already runs),
        with what to do; None when it can."""
        if self.selected is None:
            return "Select a test point first."
        problem = self.readiness.problem()
        if problem is None and running:
            return "A run is already going; cancel it first."
        return problem
