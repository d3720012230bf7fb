"""Errors and warnings a user of the engine can meet, each naming what to change."""

from __future__ import annotations

import math
import numbers
import threading

import numpy as np
import torch

__all__ = [
    "Cancelled",
    "InfluenceWarning",
    "NotPositiveDefiniteError",
    "TrainingIndexError",
    "check_cancel_event",
    "check_index",
    "check_nonnegative",
    "check_positive_int",
    "check_seed",
    "suggest_damping",
]


class InfluenceWarning(UserWarning):
    """An influence estimate may be unreliable: theta_hat is not a minimum, or a solver stalled."""


class Cancelled(Exception):
    """A slow computation stopped at its next progress step because its cancel event was set
    (:func:`~influence_widgets.core.progress.cancellable`); nothing it was computing is kept."""


class NotPositiveDefiniteError(ValueError):
    """H + damping I is not positive definite at theta_hat, so H^-1 is not a valid influence."""


class TrainingIndexError(IndexError, ValueError):
    """A training index outside [-n, n): an IndexError that is also a ValueError."""


def suggest_damping(min_eigenvalue: float, damping: float) -> float:
    """A damping value above ``damping`` that makes H + damping I comfortably positive definite,
    rounded up to two significant digits.

    ``min_eigenvalue`` is (an upper bound on) lambda_min of H + damping I. When it is <= 0 the
    suggestion adds 1.5 times what is missing, (damping - min_eigenvalue) * 1.5; when it is > 0
    the failed check came from round-off, not from the curvature, and the suggestion is 10 times
    the damping. Never <= ``damping``, never below 1e-6.
    """
    if min_eigenvalue > 0:
        target = max(10 * damping, 1e-6)
    else:
        need = damping - min_eigenvalue
        target = max(need * 1.5, need + 1e-6, 1e-6)
    exp = math.floor(math.log10(target))
    return math.ceil(target / 10**exp * 10) / 10 * 10**exp


def not_positive_definite(min_eig: float, damping: float, solver: str) -> NotPositiveDefiniteError:
    """The error for a failed positive-definiteness check of H + damping I, given (an upper bound
    on) its smallest eigenvalue ``min_eig``.

    min_eig <= 0 is evidence of negative curvature, and the message suggests a larger damping;
    min_eig > 0 means the check failed from round-off (float32 or lower precision on an
    ill-conditioned H), and the message says so and suggests float64 or a larger damping.
    """
    fix = suggest_damping(min_eig, damping)
    if min_eig > 0:
        return NotPositiveDefiniteError(
            f"damping: the positive-definiteness check of H + damping*I (damping={damping:g}, "
            f"solver={solver!r}) failed from floating-point round-off, not from negative "
            f"curvature: its smallest eigenvalue is estimated at {min_eig:.3g} > 0. Compute in "
            f"float64 (model.double() with float64 inputs), or pass a larger damping, e.g. "
            f"damping={fix:.2g}."
        )
    return NotPositiveDefiniteError(
        f"damping: the Hessian H + damping*I (damping={damping:g}) is not positive definite at "
        f"the trained parameters (smallest eigenvalue at most {min_eig:.3g}, solver={solver!r}). "
        f"Pass damping={fix:.2g} or more, or train the model to a minimum."
    )


def check_nonnegative(value, name: str) -> float:
    """A finite real number >= 0 (numpy scalars welcome), as float; else a ValueError/TypeError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number >= 0, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
    return float(value)


def check_positive_int(value, name: str) -> int:
    """An integer >= 1 (numpy integers welcome); else a ValueError/TypeError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    return int(value)


def _integer(value, name: str, expected: str) -> int:
    """``value`` as an int: a Python or numpy integer, or a one-element integer tensor (such as
    ``idx[0]``); never a bool, a float or a complex number. Else a TypeError naming ``name``."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.layout == torch.strided:
        exact = not (value.is_floating_point() or value.is_complex() or value.is_meta)
        if exact and value.dtype != torch.bool:
            return int(value)
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected {expected}, got {value!r} ({type(value).__name__})")
    return int(value)


def check_index(value, name: str, n: int | None = None) -> int:
    """One integer index (see ``_integer``) in [0, n), or >= 0 when ``n`` is None; else a
    TypeError or ValueError naming ``name``."""
    index = _integer(value, name, "one integer index")
    if index < 0 or (n is not None and index >= n):
        valid = "an index >= 0" if n is None else f"an index in 0..{n - 1}"
        raise ValueError(f"{name}: index {index} is out of range; expected {valid}")
    return index


def check_seed(value, name: str = "seed") -> int:
    """A random seed: an integer in [0, 2**64) (what both torch and numpy take), as an int; else a
    TypeError or ValueError naming ``name``."""
    seed = _integer(value, name, "an integer in [0, 2**64)")
    if not 0 <= seed < 2**64:
        raise ValueError(f"{name}: expected an integer in [0, 2**64), got {seed}")
    return seed


def check_cancel_event(cancel) -> threading.Event | None:
    """None or a ``threading.Event`` (set it to stop a slow run); else a TypeError naming it."""
    if cancel is not None and not isinstance(cancel, threading.Event):
        raise TypeError(f"cancel: expected a threading.Event, got {type(cancel).__name__}")
    return cancel
