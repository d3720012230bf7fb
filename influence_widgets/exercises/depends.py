"""Exercise 2: predict which training digits a test digit depends on, then compare with ``top``.

:func:`pick_candidates` shows six training images, some among the k most helpful for the test
point, some among the k most harmful and some neither (Influence.top's ranking of
``predicted_removal_effect``); the student predicts which is which (:func:`check_prediction`),
then reads the truth off ``inf.top`` (:func:`check_lookup`).
"""

from __future__ import annotations

from dataclasses import dataclass

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

__all__ = ["Candidates", "check_lookup", "check_prediction", "pick_candidates"]

LETTERS = "ABCDEF"
PASS_MARK = 4  # of 6 candidates placed right


@dataclass(frozen=True)
class Candidates:
    """Six candidate training points for one test point, by letter, and how they are judged."""

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

    def plot(self):
        """The test digit and the six candidates with their labels, as a matplotlib figure."""
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 7, figsize=(10, 1.9))
        x, y = self._test_point()
        obj = self.inf.objective
        pred = int(obj.model_copy()(obj.cast_inputs(x)).argmax())  # on the Influence's device
        axes[0].imshow(self.data.images("test")[self.test_index], cmap="gray_r")
        axes[0].set_title(f"TEST\nlabel {int(y)}, predicted {pred}", fontsize=8)
        train_images = self.data.images("train")
        for ax, (c, j) in zip(axes[1:], self.indices.items(), strict=True):
            ax.imshow(train_images[j], cmap="gray_r")
            ax.set_title(f"{c}: train #{j}\nlabel {int(self.data.y_train[j])}", fontsize=8)
        for ax in axes:
            ax.axis("off")
        fig.tight_layout()
        return fig


def pick_candidates(
    inf: Influence, data: Dataset, test_index: int, k: int = 10, seed: int = 0
) -> Candidates:
    """Two of the k most helpful, two of the k most harmful and two other training points
    (one with the test point's label), shuffled and lettered A-F.

    The other two are ranked below the 3k most helpful and above the 3k most harmful; where
    that band holds no point with the test point's label (or none with another), it widens
    until it does, but never into the k most helpful or harmful.
    """
    inf = check_influence(inf, "inf")
    if not isinstance(data, Dataset):
        raise TypeError(f"data: expected an iw.datasets Dataset, got {type(data).__name__}")
    test_index = check_index(test_index, "test_index", len(data.y_test))
    k = check_positive_int(k, "k")
    seed = check_seed(seed)
    if k < 2:
        raise ValueError(f"k: must be at least 2 (two candidates come from each top k), got {k}")
    x, y = data.X_test[test_index : test_index + 1], data.y_test[test_index : test_index + 1]
    scores = inf.predicted_removal_effect(x, y)[0]
    order = torch.argsort(scores, descending=True).cpu()
    n = len(order)
    depth = torch.minimum(torch.arange(n), n - 1 - torch.arange(n))  # rank from the nearer end
    is_same = data.y_train.cpu()[order] == int(y)
    deepest = [int(depth[m].max()) if m.any() else -1 for m in (is_same, ~is_same)]
    margin = min(3 * k, *deepest)  # order[margin : n - margin] holds both kinds
    if margin < k:
        raise ValueError(
            f"k: {k} is too large for {n} training points: no point of the test point's label "
            "and one of another remain outside the k most helpful and harmful; pass a smaller k"
        )
    rng = np.random.default_rng(seed)
    helpful = rng.choice(order[:k].tolist(), 2, replace=False).tolist()
    harmful = rng.choice(order[-k:].tolist(), 2, replace=False).tolist()
    band = slice(margin, n - margin)
    same, other = order[band][is_same[band]].tolist(), order[band][~is_same[band]].tolist()
    neither = [int(rng.choice(same)), int(rng.choice(other))]
    chosen = [int(j) for j in rng.permutation(helpful + harmful + neither)]
    return Candidates(inf, data, test_index, k, dict(zip(LETTERS, chosen, strict=True)))


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


def check_prediction(helpful, harmful, candidates: Candidates) -> CheckResult:
    """Compare the predicted groups (sets of letters; the rest are "neither") with inf.top.

    Reports how many candidates are placed right per group, not which: the next step finds out.
    Passes with at least 4 of 6 right.
    """

    def check() -> CheckResult:
        letters = list(_candidates(candidates).indices)
        guess = _groups(helpful, harmful, letters, ("helpful", "harmful"))
        truth = candidates.truth()
        right = sum(guess[c] == truth[c] for c in letters)
        lines = [f"{right} of 6 candidates placed right (top-{candidates.k})."]
        for group in ("helpful", "harmful", "neither"):
            said = [c for c in letters if guess[c] == group]
            hits = sum(truth[c] == group for c in said)
            lines.append(f"  {group}: {hits} of the {len(said)} you put here belong there.")
        hint = (
            "Hint: helpful points support the test point's TRUE label (mostly the same label and "
            "a similar shape); harmful ones look like the test digit but carry another label, or "
            "share its label with an unusual shape; most points barely matter."
        )
        if right >= PASS_MARK:
            return passed("\n".join([*lines, "Good intuition. Now check each one with inf.top."]))
        return not_yet("\n".join([*lines, hint]))

    return check_answer(check)


def _explain(c: str, group: str, candidates: Candidates) -> str:
    j = candidates.indices[c]
    label = int(candidates.data.y_train[j])
    test_label = int(candidates.data.y_test[candidates.test_index])
    relation = "the test digit's label" if label == test_label else f"label {label}"
    why = {
        "helpful": "removing it would raise the test loss",
        "harmful": "removing it would lower the test loss",
        "neither": "its removal would barely change the test loss",
    }[group]
    return f"  {c} (#{j}, {relation}): {group}, {why}."


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
                f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} not where inf.top puts "
                f"{'it' if len(wrong) == 1 else 'them'}. Hint: candidates.indices maps letters to "
                f"training indices; look for them in top.helpful[0] and top.harmful[0] with "
                f"k={candidates.k}."
            )
        lines = [f"right: these are inf.top's groups (k={candidates.k})."]
        lines += [_explain(c, truth[c], candidates) for c in letters]
        return passed("\n".join(lines))

    return check_answer(check)
