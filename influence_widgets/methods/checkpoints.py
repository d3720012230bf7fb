"""Checkpoints of a training run with their learning rates, for TracIn (and TRAK over checkpoints).

TracIn (Pruthi et al., NeurIPS 2020) sums, over checkpoints theta_1..theta_K saved during
training, eta_k grad L(z_test, theta_k) . grad L(z_i, theta_k), with eta_k the learning rate in
use at checkpoint k. A :class:`CheckpointRecorder` saves them from any training loop:

    rec = iw.CheckpointRecorder(model)
    for epoch in range(epochs):
        ...                                   # the user's own Adam/SGD epoch
        rec.save(lr=optimizer.param_groups[0]["lr"])

Each ``save`` keeps a copy of the model's ``state_dict()`` on the CPU (never a reference: the
training goes on changing the model). ``iw.train(model, data, recorder=rec)`` records its
full-batch L-BFGS rounds (see :func:`~influence_widgets.training.train` for the step lengths it
saves as learning rates).
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "Checkpoint",
    "CheckpointRecorder",
    "check_checkpoints",
    "check_lr",
    "check_state_fits",
    "copy_state",
    "model_at",
]


def copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``model.state_dict()`` (parameters and buffers) on the CPU, detached."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def check_lr(value, name: str = "lr") -> float:
    """A learning rate: a finite number >= 0, as float; else a TypeError/ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected the learning rate as a number, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: expected a finite learning rate >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Checkpoint:
    """The model's state at one point of training and the learning rate eta in use there."""

    state: Mapping[str, torch.Tensor]  # a copy of state_dict(), on the CPU
    lr: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", check_lr(self.lr))

    def __repr__(self) -> str:
        return f"Checkpoint(lr={self.lr:.3g}, tensors={len(self.state)})"


class CheckpointRecorder:
    """Saves copies of ``model``'s state with their learning rates while it trains.

    Args:
        model: the model being trained; read at each :meth:`save`, never modified.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.checkpoints: list[Checkpoint] = []

    def save(self, lr: float, state: Mapping[str, torch.Tensor] | None = None) -> Checkpoint:
        """Save a copy of the model's current state (or of ``state``, a ``state_dict()`` of the
        same model taken earlier) with the learning rate ``lr`` in use there; returns it."""
        if state is None:
            saved = copy_state(self.model)
        else:
            saved = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
        checkpoint = Checkpoint(state=saved, lr=lr)
        self.checkpoints.append(checkpoint)
        return checkpoint

    def __len__(self) -> int:
        return len(self.checkpoints)

    def __iter__(self) -> Iterator[Checkpoint]:
        return iter(self.checkpoints)

    def __getitem__(self, i: int) -> Checkpoint:
        return self.checkpoints[i]

    def __repr__(self) -> str:
        lrs = ", ".join(f"{c.lr:.3g}" for c in self.checkpoints[:6])
        more = ", ..." if len(self.checkpoints) > 6 else ""
        return f"CheckpointRecorder({len(self)} checkpoints, lr=[{lrs}{more}])"


def check_checkpoints(checkpoints, name: str = "checkpoints") -> list[Checkpoint]:
    """The checkpoints of a :class:`CheckpointRecorder` or a sequence of :class:`Checkpoint`, at
    least one; else a TypeError/ValueError naming ``name`` that says how to record them."""
    how = (
        "record them while training: rec = iw.CheckpointRecorder(model), then rec.save(lr=...) "
        "after each epoch (or iw.train(model, data, recorder=rec)), and pass checkpoints=rec"
    )
    if checkpoints is None:
        raise ValueError(f"{name}: TracIn needs saved checkpoints with learning rates; {how}")
    if isinstance(checkpoints, CheckpointRecorder):
        found = list(checkpoints.checkpoints)
    elif isinstance(checkpoints, Sequence) and not isinstance(checkpoints, str | bytes):
        found = list(checkpoints)
        bad = next((c for c in found if not isinstance(c, Checkpoint)), None)
        if isinstance(bad, Mapping):
            raise TypeError(
                f"{name}: expected a CheckpointRecorder or a list of iw.Checkpoint, found a "
                "state_dict in the list; wrap each as iw.Checkpoint(state=state_dict, lr=...) "
                "with the learning rate in use there"
            )
        if bad is not None:
            raise TypeError(
                f"{name}: expected a CheckpointRecorder or a list of iw.Checkpoint, found a "
                f"{type(bad).__name__} in the list; {how}"
            )
    else:
        raise TypeError(
            f"{name}: expected a CheckpointRecorder or a list of iw.Checkpoint, got "
            f"{type(checkpoints).__name__}; {how}"
        )
    if not found:
        raise ValueError(f"{name}: no checkpoint was saved; {how}")
    return found


def check_state_fits(model: torch.nn.Module, state: Mapping[str, torch.Tensor], name: str) -> None:
    """``state`` (a ``state_dict``) has the tensors of ``model``'s architecture, with the same
    names and shapes; else a ValueError naming ``name`` and the first tensor that differs."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        which = f"lacks {missing[0]!r}" if missing else f"has {extra[0]!r}, which the model lacks"
        raise ValueError(
            f"{name}: does not fit the model: it {which}; save checkpoints (or pass models) of "
            "the same architecture as the model"
        )
    for key, value in own.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise ValueError(
                f"{name}: does not fit the model: {key!r} has shape {tuple(state[key].shape)} "
                f"there but {tuple(value.shape)} in the model; save checkpoints (or pass models) "
                "of the same architecture as the model"
            )


def model_at(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], name: str
) -> torch.nn.Module:
    """A deep copy of ``model`` with ``state`` (a ``state_dict``) loaded; ``model`` is untouched.
    A state of another architecture is a ValueError naming ``name`` (:func:`check_state_fits`)."""
    check_state_fits(model, state, name)
    copied = copy.deepcopy(model)
    copied.load_state_dict(state)
    return copied
