"""The Influence tab's Compare view: two methods' lists for one test point, side by side.

For the selected test point z, each of the two methods gives its k most helpful training points
(largest tau(z)_i: removing z_i would raise the test loss most) and its k most harmful (smallest
tau(z)_i). The view marks the training points both methods put in the same list, and the points one
method calls helpful and the other harmful, and counts the overlap of the top k: "4 of 8 helpful
and 2 of 8 harmful in common". Beside each method's name: its LDS where one is known, measured in
this explorer for this test point (Verify's LDS; every ready method is scored against the same
retrains) or given for the method over its own test points (``InfluenceExplorer.set_lds``).
"""

from __future__ import annotations

from dataclasses import dataclass

from influence_widgets.core.influence import TopInfluence
from influence_widgets.plots import correlation_text
from influence_widgets.widgets.method_switch import MethodSet

__all__ = ["Overlap", "overlap_of", "point_lds_text"]


@dataclass(frozen=True)
class Overlap:
    """The top-k lists of two methods a and b for one test point, compared.

    ``helpful``: training indices in both helpful lists (in a's order); ``harmful``: in both
    harmful lists; ``opposite``: helpful for one method and harmful for the other; ``k``: the
    lists' length."""

    helpful: list[int]
    harmful: list[int]
    opposite: list[int]
    k: int

    def text(self) -> str:
        """ "4 of 8 helpful and 2 of 8 harmful in common", and the points the two disagree on."""
        both = (
            f"{len(self.helpful)} of {self.k} helpful and {len(self.harmful)} of {self.k} "
            "harmful in common"
        )
        if not self.opposite:
            return both
        n = len(self.opposite)
        return (
            f"{both}; {n} point{'s' if n > 1 else ''} helpful for one method and harmful for "
            "the other"
        )

    def mark(self, index: int) -> str | None:
        """How training point ``index`` of either list is marked: "both" (the same list of both
        methods), "opposite" (helpful for one, harmful for the other) or None."""
        if index in self.helpful or index in self.harmful:
            return "both"
        if index in self.opposite:
            return "opposite"
        return None


def overlap_of(a: TopInfluence, b: TopInfluence, row: int = 0) -> Overlap:
    """The overlap of two methods' top-k lists (``TopInfluence``) for test point ``row``."""
    a_help, a_harm = a.helpful[row].tolist(), a.harmful[row].tolist()
    b_help, b_harm = set(b.helpful[row].tolist()), set(b.harmful[row].tolist())
    return Overlap(
        helpful=[i for i in a_help if i in b_help],
        harmful=[i for i in a_harm if i in b_harm],
        opposite=[i for i in a_help if i in b_harm] + [i for i in a_harm if i in b_help],
        k=len(a_help),
    )


def point_lds_text(methods: MethodSet, name: str, index: int) -> str | None:
    """The LDS of method ``name`` on test point ``index`` measured in this explorer, in words, or
    None when none was."""
    result = methods.point_lds.get((name, index))
    if result is None:
        return None
    floor = correlation_text(result.noise_floor)
    return (
        f"LDS {correlation_text(float(result.per_test[0]))} on this test point (noise floor "
        f"{floor}, {result.n_subsets} subsets)"
    )
