"""What every checker returns, and the checks of a student's answer that every exercise shares.

Feedback is Markdown: code in backticks and formulas in LaTeX (``$\\theta$``), so that JupyterLab
renders it; printed, it reads as the same text."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch

__all__ = [
    "CheckResult",
    "Mistake",
    "answer_tensor",
    "arguments",
    "as_letters",
    "as_number",
    "as_tensor",
    "first_match",
]

PASSED = "[passed]"
NOT_YET = "[not yet]"


@dataclass(frozen=True)
class CheckResult:
    """One checker's verdict: ``passed`` and the ``feedback`` a student reads (what is wrong and
    the idea to revisit, never the answer), in Markdown. Printed, it starts with ``[passed]`` or
    ``[not yet]``; in a notebook it shows as Markdown, its formulas typeset."""

    passed: bool
    feedback: str

    def _verdict(self) -> str:
        return PASSED if self.passed else NOT_YET

    def __repr__(self) -> str:
        return f"{self._verdict()} {self.feedback}"

    def _repr_markdown_(self) -> str:
        return f"**{self._verdict()}** {self.feedback}"

    def __bool__(self) -> bool:
        return self.passed


def passed(feedback: str) -> CheckResult:
    return CheckResult(True, feedback)


def not_yet(feedback: str) -> CheckResult:
    return CheckResult(False, feedback)


class AnswerError(Exception):
    """An answer that cannot be checked (not filled in, wrong type or shape): its message is the
    feedback. Checkers turn it into a failed :class:`CheckResult`; it never reaches the student."""


def answer_tensor(answer, name: str, expected: str) -> torch.Tensor:
    """``answer`` (any tensor, array, number or nested list) as a dense real tensor on the CPU,
    in its own dtype; a sparse tensor is made dense. Else an :class:`AnswerError` saying why
    (``expected``: what the answer should be, e.g. "a tensor of shape (3,)")."""
    if answer is ...:
        raise AnswerError(
            f"`{name}` is not filled in yet: replace the `...` with your computation."
        )
    try:
        t = torch.as_tensor(answer).detach()
    except (TypeError, ValueError, RuntimeError):
        raise AnswerError(
            f"`{name}` should be {expected}, got a {type(answer).__name__}."
        ) from None
    if t.is_nested:
        raise AnswerError(
            f"`{name}` is a nested tensor (rows of different lengths); it should be {expected}."
        )
    if t.is_meta:
        raise AnswerError(
            f"`{name}` is on the 'meta' device, which holds shapes but no values: compute it on "
            "the CPU (or the GPU)."
        )
    t = (t.to_dense() if t.layout != torch.strided else t).cpu()
    if t.is_complex():
        raise AnswerError(
            f"`{name}` holds complex numbers, but it should be real. If the imaginary parts "
            "are round-off (torch.linalg.eig, say), keep .real; else check where they come from."
        )
    return t


def as_tensor(
    answer, name: str, shape: tuple[int, ...], shapes: Mapping[tuple[int, ...], str] | None = None
) -> torch.Tensor:
    """``answer`` as a float64 tensor of ``shape`` (any tensor or array with that many values).

    ``shapes`` maps the shapes of typical mistakes (one value per training point, say) to what
    went wrong; an answer of such a shape gets that diagnosis."""
    expected = "a number" if shape == () else f"a tensor of shape {shape}"
    t = answer_tensor(answer, name, expected)
    if t.dtype == torch.bool:
        raise AnswerError(f"`{name}` is a bool (True/False), but it should be {expected}.")
    if t.numel() != torch.Size(shape).numel():
        got = tuple(t.shape)
        why = (shapes or {}).get(got, "check which parameters or points you differentiate over.")
        should = "be one number" if shape == () else f"have shape {shape}"
        raise AnswerError(f"`{name}` has shape {got} but should {should}: {why}")
    t = t.to(torch.float64).reshape(shape)
    if not torch.isfinite(t).all():
        raise AnswerError(f"`{name}` contains NaN or infinite values.")
    return t


def as_number(answer, name: str) -> float:
    """``answer`` as one finite float (a Python number or a one-element tensor/array)."""
    return float(as_tensor(answer, name, ()))


def as_letters(answer, name: str, allowed: list[str]) -> set[str]:
    """``answer`` (a string of letters, or a collection of one-letter strings) as a set of
    upper-case letters from ``allowed``."""
    if answer is ...:
        raise AnswerError(
            f"`{name}` is not filled in yet: replace the `...` with letters, e.g. {{'A', 'C'}} "
            "(or an empty set)."
        )
    items = list(answer) if isinstance(answer, str | list | tuple | set | frozenset) else None
    if items is None or not all(isinstance(c, str) for c in items):
        raise AnswerError(f"`{name}` should be a set of letters like {{'A', 'C'}}.")
    letters = {c.strip().upper() for c in items if c.strip() and c.strip() != ","}
    unknown = sorted(letters - set(allowed))
    if unknown:
        raise AnswerError(
            f"`{name}` names {', '.join(unknown)}, which is not a candidate; choose from "
            f"{', '.join(allowed)}."
        )
    return letters


@dataclass(frozen=True)
class Mistake:
    """A typical wrong answer: what it would be, and what to tell the student who gave it."""

    value: torch.Tensor | float
    feedback: str


def close(a: torch.Tensor | float, b: torch.Tensor | float, rtol: float = 1e-5) -> bool:
    """``a`` equals ``b`` up to ``rtol`` of b's largest entry (round-off of float64 solves)."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    scale = float(b.abs().max()) if b.numel() else 0.0
    return bool((a - b).abs().max() <= rtol * scale + 1e-12)


def first_match(value, mistakes: list[Mistake]) -> Mistake | None:
    """The first typical mistake that ``value`` reproduces, or None."""
    return next((m for m in mistakes if close(value, m.value)), None)


@contextmanager
def arguments() -> Iterator[None]:
    """The checks of a checker's own arguments (the Influence, the test point, an index): the
    package's errors there name the argument and the fix, and inside this block they become the
    feedback instead of a traceback, as a wrong answer does."""
    try:
        yield
    except (TypeError, ValueError) as err:
        raise AnswerError(str(err)) from None


def check_answer(check: Callable[[], CheckResult]) -> CheckResult:
    """Run ``check``; an unusable answer or argument becomes a failed result with the reason as
    feedback."""
    try:
        return check()
    except AnswerError as err:
        return not_yet(str(err))
