"""Exercise 2: predict which training digits a test digit depends on, then compare with ``top``.

:func:`pick_candidates` shows eight training images for one test point, chosen so that their label
alone does not tell their group: two of the test point's label among its k most helpful, two of
its label among its k most harmful, two of other labels among its k most harmful, and one of each
kind that is neither (Influence.top's ranking of ``predicted_removal_effect``). The student
predicts each one's group (:func:`check_prediction`), then reads the truth off ``inf.top``
(:func:`check_lookup`).

Why a rule of thumb cannot pass: any rule that looks at the label alone ("same label helps, other
label hurts", or "all harmful") puts all same-label candidates in one group and all others in one
group, so it places at most 2 + 2 = 4 of 8 right (:data:`LABEL_ONLY_BEST`), below
:data:`PASS_MARK` = 6. Guessing each group uniformly at random places 8/3 right on average and
reaches 6 with probability 129/6561 < 2% (:func:`random_pass_probability`). What does pass is what
influence says: a point the model already fits with confidence has a small gradient and barely
matters; among the others, the shape relative to the test digit and the label decide the sign.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np
import torch

from influence_widgets.core.errors import check_index, check_positive_int, check_seed
from influence_widgets.core.influence import Influence, check_influence
from influence_widgets.datasets import Dataset
from influence_widgets.exercises.feedback import (
    AnswerError,
    CheckResult,
    as_letters,
    check_answer,
    not_yet,
    passed,
)

__all__ = [
    "COMPOSITION",
    "LABEL_ONLY_BEST",
    "PASS_MARK",
    "Candidates",
    "check_lookup",
    "check_prediction",
    "pick_candidates",
    "random_pass_probability",
]

GROUPS = ("helpful", "harmful", "neither")
# (group, with the test point's label?, how many): each label holds at most 2 of any group.
COMPOSITION = (
    ("helpful", True, 2),
    ("harmful", True, 2),
    ("harmful", False, 2),
    ("neither", True, 1),
    ("neither", False, 1),
)
N_CANDIDATES = sum(count for _, _, count in COMPOSITION)
LETTERS = "ABCDEFGH"[:N_CANDIDATES]
PASS_MARK = 6  # of 8 candidates placed right


def _label_only_best() -> int:
    """The most candidates any rule that sees only "same label or not" can place right."""
    best = 0
    for same in (True, False):
        per_group = {g: sum(c for g_, s, c in COMPOSITION if g_ == g and s == same) for g in GROUPS}
        best += max(per_group.values())
    return best


LABEL_ONLY_BEST = _label_only_best()


def random_pass_probability() -> float:
    """The probability that guessing each candidate's group uniformly at random passes:
    P(Binomial(8, 1/3) >= PASS_MARK)."""
    n, p = N_CANDIDATES, 1 / len(GROUPS)
    return sum(comb(n, r) * p**r * (1 - p) ** (n - r) for r in range(PASS_MARK, n + 1))


@dataclass(frozen=True)
class Candidates:
    """Eight candidate training points for one test point, by letter, and how they are judged."""

    inf: Influence
    data: Dataset
    test_index: int
    k: int
    indices: dict[str, int]  # letter -> training index

    def _test_point(self) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.test_index
        return self.data.X_test[t : t + 1], self.data.y_test[t : t + 1]

    def truth(self) -> dict[str, str]:
        """Each letter's group: "helpful", "harmful" or "neither" (among inf.top's k)."""
        top = self.inf.top(*self._test_point(), k=self.k)
        helpful, harmful = set(top.helpful[0].tolist()), set(top.harmful[0].tolist())
        return {
            c: "helpful" if j in helpful else "harmful" if j in harmful else "neither"
            for c, j in self.indices.items()
        }

    def same_label(self) -> dict[str, bool]:
        """Each letter: does its training label equal the test point's?"""
        y = int(self.data.y_test[self.test_index])
        return {c: int(self.data.y_train[j]) == y for c, j in self.indices.items()}

    def confidence(self) -> dict[str, float]:
        """Each letter: the model's probability of the candidate's own training label."""
        obj = self.inf.objective
        idx = list(self.indices.values())
        x = obj.cast_inputs(self.data.X_train[idx])
        with torch.no_grad():
            probs = torch.softmax(obj.model_copy()(x), dim=1).cpu()
        own = probs[torch.arange(len(idx)), self.data.y_train[idx]]
        return dict(zip(self.indices, own.tolist(), strict=True))

    def _name(self, label) -> str:
        return repr(self.data.class_names[int(label)])

    def plot(self):
        """The test digit and the candidates, with their labels and the model's confidence in
        each candidate's label, as a matplotlib figure."""
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, N_CANDIDATES + 1, figsize=(12, 2.1))
        x, y = self._test_point()
        obj = self.inf.objective
        with torch.no_grad():
            probs = torch.softmax(obj.model_copy()(obj.cast_inputs(x)), dim=1)[0].cpu()
        pred = int(probs.argmax())
        axes[0].imshow(self.data.images("test")[self.test_index], cmap="gray_r")
        axes[0].set_title(
            f"TEST #{self.test_index}\nlabel {self._name(y)}\npredicted {self._name(pred)}",
            fontsize=9,
        )
        train_images, confidence = self.data.images("train"), self.confidence()
        for ax, (c, j) in zip(axes[1:], self.indices.items(), strict=True):
            ax.imshow(train_images[j], cmap="gray_r")
            ax.set_title(
                f"{c}: #{j}\nlabel {self._name(self.data.y_train[j])}\n"
                f"model {confidence[c]:.0%} sure",
                fontsize=9,
            )
        for ax in axes:
            ax.axis("off")
        fig.tight_layout()
        return fig


def _pools(
    order: torch.Tensor, is_same: torch.Tensor, k: int, test_index: int
) -> dict[tuple[str, bool], list[int]]:
    """The training indices each (group, same label?) of :data:`COMPOSITION` may come from.

    Neither points are ranked below the 3k most helpful and above the 3k most harmful; where that
    band holds no point with the test point's label (or none with another), it widens until it
    does, but never into the k most helpful or harmful."""
    n = len(order)
    depth = torch.minimum(torch.arange(n), n - 1 - torch.arange(n))  # rank from the nearer end
    deepest = [int(depth[m].max()) if m.any() else -1 for m in (is_same, ~is_same)]
    margin = min(3 * k, *deepest)  # order[margin : n - margin] holds both kinds
    if margin < k:
        raise ValueError(
            f"k: {k} is too large for {n} training points: no point of the test point's label "
            "and one of another remain outside the k most helpful and harmful; pass a smaller k"
        )
    ends = {
        "helpful": slice(0, k),
        "harmful": slice(n - k, n),
        "neither": slice(margin, n - margin),
    }
    pools = {}
    for group, same, count in COMPOSITION:
        part = ends[group]
        kind = is_same[part] if same else ~is_same[part]
        pools[group, same] = order[part][kind].tolist()
        if len(pools[group, same]) < count:
            label = "its own label" if same else "another label"
            raise ValueError(
                f"test_index: test point {test_index} has {len(pools[group, same])} training "
                f"points of {label} among its {k} most {group}, and the exercise needs {count}; "
                "choose another test point (or a larger k)"
            )
    return pools


def pick_candidates(
    inf: Influence, data: Dataset, test_index: int, k: int = 10, seed: int = 0
) -> Candidates:
    """Eight training points for test point ``test_index``, drawn (seeded) as
    :data:`COMPOSITION` says from its k most helpful, its k most harmful and the points between,
    shuffled and lettered A-H."""
    inf = check_influence(inf, "inf")
    if not isinstance(data, Dataset):
        raise TypeError(f"data: expected an iw.datasets Dataset, got {type(data).__name__}")
    test_index = check_index(test_index, "test_index", len(data.y_test))
    k = check_positive_int(k, "k")
    seed = check_seed(seed)
    if k < 2:
        raise ValueError(f"k: must be at least 2 (two candidates come from each top k), got {k}")
    x, y = data.X_test[test_index : test_index + 1], data.y_test[test_index : test_index + 1]
    order = torch.argsort(inf.predicted_removal_effect(x, y)[0], descending=True).cpu()
    is_same = data.y_train.cpu()[order] == int(y)
    pools = _pools(order, is_same, k, test_index)
    rng = np.random.default_rng([seed, test_index])  # another test point, another draw
    chosen = []
    for group, same, count in COMPOSITION:
        chosen += rng.choice(pools[group, same], count, replace=False).tolist()
    order_shown = [int(j) for j in rng.permutation(chosen)]
    return Candidates(inf, data, test_index, k, dict(zip(LETTERS, order_shown, strict=True)))


def _candidates(candidates) -> Candidates:
    if not isinstance(candidates, Candidates):
        raise AnswerError(
            f"`candidates` should be what depends.pick_candidates returns, got "
            f"{type(candidates).__name__}."
        )
    return candidates


def _groups(helpful, harmful, letters: list[str], names: tuple[str, str]) -> dict[str, str]:
    h = as_letters(helpful, names[0], letters)
    b = as_letters(harmful, names[1], letters)
    both = sorted(h & b)
    if both:
        raise AnswerError(
            f"{', '.join(both)} is in both `{names[0]}` and `{names[1]}`: a point cannot be both."
        )
    return {c: "helpful" if c in h else "harmful" if c in b else "neither" for c in letters}


def _right(guess: dict[str, str], truth: dict[str, str]) -> int:
    return sum(guess[c] == truth[c] for c in truth)


def _label_only(guess: dict[str, str], same: dict[str, bool]) -> bool:
    """Does ``guess`` give every same-label candidate one group and every other one group?"""
    return all(len({guess[c] for c in same if same[c] == s}) == 1 for s in (True, False))


SWAPPED = {"helpful": "harmful", "harmful": "helpful", "neither": "neither"}
IDEAS = (
    "Revisit the two ideas of the introduction: a point the model already fits with confidence "
    "(see how sure the model is, above each image) has a small gradient and barely matters, "
    "whatever its label; a point the model is unsure of matters, and whether it helps or hurts "
    "depends on its label AND on how its shape relates to the test digit's."
)


def check_prediction(helpful, harmful, candidates: Candidates) -> CheckResult:
    """Compare the predicted groups (sets of letters; the rest are "neither") with inf.top.

    Reports how many candidates are placed right per group, not which: the next step finds out.
    Passes with at least :data:`PASS_MARK` of 8 right; names a guess by label alone and a guess
    with helpful and harmful swapped.
    """

    def check() -> CheckResult:
        letters = list(_candidates(candidates).indices)
        guess = _groups(helpful, harmful, letters, ("helpful", "harmful"))
        truth = candidates.truth()
        right = _right(guess, truth)
        counts = []
        for group in GROUPS:
            said = [c for c in letters if guess[c] == group]
            hits = sum(truth[c] == group for c in said)
            counts.append(f"- {group}: {hits} of the {len(said)} you put here belong there.")
        report = f"{right} of {len(letters)} candidates placed right (top-{candidates.k}).\n\n"
        report += "\n".join(counts) + "\n\n"
        if right >= PASS_MARK:
            return passed(report + "Good reasoning. Now check each one with `inf.top`.")
        if len(set(guess.values())) == 1:
            advice = f"You put all {len(letters)} in one group, {guess[letters[0]]}. "
        elif _label_only(guess, candidates.same_label()):
            advice = "You sorted the candidates by their label alone, which cannot pass here. "
        elif _right({c: SWAPPED[g] for c, g in guess.items()}, truth) >= PASS_MARK:
            advice = (
                "Your helpful and harmful look swapped: a helpful point is one whose removal "
                "would RAISE the test loss. "
            )
        else:
            advice = ""
        return not_yet(report + advice + IDEAS)

    return check_answer(check)


def _explain(c: str, group: str, candidates: Candidates, confidence: float) -> str:
    j = candidates.indices[c]
    label = candidates.data.class_names[int(candidates.data.y_train[j])]
    relation = f"label {label!r}" + (", as the test digit" if candidates.same_label()[c] else "")
    why = {
        "helpful": "removing it would raise the test loss",
        "harmful": "removing it would lower the test loss",
        "neither": "its removal would barely change the test loss",
    }[group]
    return f"- {c} (#{j}, {relation}, model {confidence:.0%} sure): {group}, {why}."


def check_lookup(in_helpful, in_harmful, candidates: Candidates) -> CheckResult:
    """Check the letters read off ``inf.top(x_test, y_test, k)``; explains each candidate once
    they are right."""

    def check() -> CheckResult:
        letters = list(_candidates(candidates).indices)
        guess = _groups(in_helpful, in_harmful, letters, ("in_helpful", "in_harmful"))
        truth = candidates.truth()
        wrong = [c for c in letters if guess[c] != truth[c]]
        if wrong:
            return not_yet(
                f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} not where `inf.top` "
                f"puts {'it' if len(wrong) == 1 else 'them'}. Look each letter's training "
                "index up (`candidates.indices`) in the two rankings that `inf.top` returns for "
                f"this test point, with the same k ({candidates.k})."
            )
        confidence = candidates.confidence()
        lines = [f"right: these are `inf.top`'s groups (k={candidates.k}).", ""]
        lines += [_explain(c, truth[c], candidates, confidence[c]) for c in letters]
        return passed("\n".join(lines))

    return check_answer(check)
