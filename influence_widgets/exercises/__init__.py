"""Checkers for the classroom exercises in ``notebooks/exercises/``.

One module per exercise, one function per step. Every checker returns a
:class:`~influence_widgets.exercises.feedback.CheckResult` (``passed`` and ``feedback``: the
mistake and the idea to revisit, never the answer's formula or code; Markdown with LaTeX, which a
notebook renders) and raises nothing on a wrong or unfinished answer.

- :mod:`~influence_widgets.exercises.by_hand`: I_up,loss by hand from H and two gradients.
- :mod:`~influence_widgets.exercises.depends`: predict a test digit's helpful and harmful
  points, where the label alone does not tell.
- :mod:`~influence_widgets.exercises.wrong_labels`: find planted wrong labels on a budget.
- :mod:`~influence_widgets.exercises.when_fails`: leave-one-out where influence fails.
- :mod:`~influence_widgets.exercises.which_method`: which attribution method agrees with
  retraining (the LDS) on a linear model and on a network trained with Adam.
"""

from influence_widgets.exercises import by_hand, depends, when_fails, which_method, wrong_labels
from influence_widgets.exercises.feedback import CheckResult

__all__ = ["CheckResult", "by_hand", "depends", "when_fails", "which_method", "wrong_labels"]
