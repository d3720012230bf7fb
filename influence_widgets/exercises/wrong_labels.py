"""Exercise 3: find planted wrong labels with a fixed checking budget (the paper's Section 5.4).

:func:`plant_wrong_labels` flips some training labels; the student picks at most ``budget``
training points to check, ranked by ``Influence.self_influence()``; :func:`check_search` counts
the planted flips caught, beside random checking and the training-loss ranking.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from influence_widgets.core.errors import check_positive_int, check_seed
from influence_widgets.core.model_checks import first_line
from influence_widgets.datasets import Dataset
from influence_widgets.exercises.feedback import (
    AnswerError,
    CheckResult,
    answer_tensor,
    check_answer,
    not_yet,
    passed,
)

__all__ = ["WrongLabels", "check_search", "plant_wrong_labels"]

PASS_FRACTION = 0.5  # of min(budget, n_wrong) planted flips caught


@dataclass(frozen=True)
class WrongLabels:
    """A data set with planted wrong training labels. ``flipped`` is the answer: do not look."""

    data: Dataset
    budget: int
    flipped: torch.Tensor = field(repr=False)

    @property
    def n_wrong(self) -> int:
        return len(self.flipped)

    def pass_mark(self) -> int:
        return int(PASS_FRACTION * min(self.budget, self.n_wrong) + 0.5)


def plant_wrong_labels(
    data: Dataset, n_wrong: int = 65, budget: int = 65, seed: int = 0
) -> WrongLabels:
    """``data`` with ``n_wrong`` training labels changed to another class at random (seeded)."""
    if not isinstance(data, Dataset):
        raise TypeError(f"data: expected an iw.datasets Dataset, got {type(data).__name__}")
    n = len(data.y_train)
    n_wrong = check_positive_int(n_wrong, "n_wrong")
    if n_wrong > n:
        raise ValueError(f"n_wrong: {n_wrong} is more than the {n} training points")
    budget = check_positive_int(budget, "budget")
    gen = torch.Generator().manual_seed(check_seed(seed))
    flipped = torch.sort(torch.randperm(n, generator=gen)[:n_wrong]).values
    y = data.y_train.clone()
    shift = torch.randint(1, data.n_classes, (n_wrong,), generator=gen)
    y[flipped] = (y[flipped] + shift) % data.n_classes
    noisy = dataclasses.replace(data, name=f"{data.name} with wrong labels", y_train=y)
    return WrongLabels(noisy, budget, flipped)


def _chosen(chosen, planted: WrongLabels) -> torch.Tensor:
    t = answer_tensor(chosen, "chosen", "training indices (a tensor or list of ints)")
    if t.dtype == torch.bool:
        raise AnswerError(
            "`chosen` is a True/False mask: pass the indices of the points to check "
            "(torch.nonzero(mask).squeeze(1)), at most `budget` of them."
        )
    if t.is_floating_point():
        raise AnswerError(
            "`chosen` holds scores (floats), not indices: turn your ranking into the indices of "
            "the points you would check, at most `budget` of them."
        )
    t = t.reshape(-1).long()
    n = len(planted.data.y_train)
    if len(t) and (int(t.min()) < 0 or int(t.max()) >= n):
        raise AnswerError(f"`chosen` holds indices outside 0..{n - 1}.")
    if len(torch.unique(t)) < len(t):
        raise AnswerError("`chosen` names some points twice: each check is one distinct point.")
    if len(t) > planted.budget:
        raise AnswerError(
            f"`chosen` has {len(t)} points but the budget is {planted.budget}: keep only the "
            f"{planted.budget} most suspicious."
        )
    return t


def _training_losses(model, planted) -> torch.Tensor:
    """L(z_i) of ``model`` for every training point of ``planted``, (n,), on the CPU; a wrong
    argument becomes the feedback."""
    if not isinstance(planted, WrongLabels):
        raise AnswerError(
            f"`planted` should be what wrong_labels.plant_wrong_labels returns, got "
            f"{type(planted).__name__}."
        )
    if not isinstance(model, torch.nn.Module):
        raise AnswerError(
            f"`model` should be the torch.nn.Module trained on planted.data, got "
            f"{type(model).__name__}."
        )
    data = planted.data
    p = next(model.parameters(), data.X_train)  # the model's device and dtype (if it has any)
    try:
        with torch.no_grad():
            out = model(data.X_train.to(p.device, p.dtype))
            return F.cross_entropy(out, data.y_train.to(p.device), reduction="none").cpu()
    except (RuntimeError, ValueError, IndexError, TypeError) as err:
        raise AnswerError(
            f"`model` cannot score planted.data's training points ({first_line(err)}): "
            "pass the classifier trained on planted.data."
        ) from None


def _caught(idx: torch.Tensor, planted: WrongLabels) -> int:
    return int(torch.isin(idx, planted.flipped).sum())


def check_search(chosen, planted: WrongLabels, model: torch.nn.Module) -> CheckResult:
    """Count the planted flips among ``chosen`` (at most ``planted.budget`` training indices),
    beside random checking and the ``budget`` highest training losses of ``model``."""

    def check() -> CheckResult:
        losses = _training_losses(model, planted)
        idx = _chosen(chosen, planted)
        n, budget = len(planted.data.y_train), planted.budget
        by_loss = _caught(torch.argsort(losses, descending=True)[:budget], planted)
        caught = _caught(idx, planted)
        random = budget * planted.n_wrong / n
        report = (
            f"You checked {len(idx)} of {n} points and caught {caught} of the {planted.n_wrong} "
            f"planted wrong labels. Checking {budget} at random catches {random:.1f} on average; "
            f"the {budget} highest training losses catch {by_loss}."
        )
        if caught >= planted.pass_mark():
            return passed(report)
        least = _caught(torch.argsort(losses)[:budget], planted)
        hint = (
            "Revisit the introduction: self-influence is never positive, and the points the "
            "model bends most to fit are those whose own loss depends most on keeping them: "
            "the largest self-influence in size. You need to catch "
            f"{planted.pass_mark()} or more."
        )
        if len(idx) < budget:
            hint += f" You may check {budget - len(idx)} more points."
        if caught <= max(least, 1) and len(idx) == budget:
            hint = "Your ranking may run the wrong way round. " + hint
        return not_yet(f"{report}\n{hint}")

    return check_answer(check)
