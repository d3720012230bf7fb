"""What both ``Objective`` and ``iw.train`` ask of the user's model, written once.

Which parameters theta are (``params=``), where to compute (``device=``), and which modules behave
differently in train mode (influence, like training with ``iw.train``, uses eval mode).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from influence_widgets.core.errors import InfluenceWarning

__all__ = [
    "first_line",
    "mode_dependent_modules",
    "resolve_device",
    "select_parameters",
    "warn_train_mode",
]


def select_parameters(model: nn.Module, params: Sequence[str] | str | None) -> list[str]:
    """The names of the parameters theta: ``params`` (checked against the model) or, by default,
    every parameter with ``requires_grad``; else a TypeError/ValueError naming ``params``."""
    named = dict(model.named_parameters())
    if params is None:
        selected = [n for n, p in named.items() if p.requires_grad]
        if not selected:
            raise ValueError(
                "model: has no trainable parameters (all requires_grad=False); pass params=[...] "
                "to name the parameters to take influence over"
            )
        return selected
    if isinstance(params, str):
        params = [params]
    if not isinstance(params, Sequence) or not all(isinstance(n, str) for n in params):
        raise TypeError(f"params: expected a list of parameter names (str), got {params!r}")
    selected = list(params)
    unknown = [n for n in selected if n not in named]
    if unknown:
        raise ValueError(
            f"params: no parameter named {unknown[0]!r} in the model; available: {list(named)}"
        )
    if not selected or len(set(selected)) != len(selected):
        raise ValueError("params: must name at least one parameter, each at most once")
    return selected


def first_line(err: BaseException) -> str:
    """The first sentence of an error from torch or from user code, to quote in our message."""
    text = str(err).strip()
    return text.splitlines()[0].split(". ")[0] if text else type(err).__name__


def _check_cuda(dev: torch.device, shown: str) -> None:
    """A CUDA device this process can use; ``shown``: the device as the user wrote it."""
    if not torch.cuda.is_available():
        if not torch.backends.cuda.is_built():
            raise ValueError(
                f"device: {shown!r}, but this torch build has no CUDA; pass device='cpu' or "
                "install a CUDA build of torch"
            )
        raise ValueError(
            f"device: {shown!r}, but no CUDA GPU is visible (check CUDA_VISIBLE_DEVICES and "
            "the driver); pass device='cpu'"
        )
    if dev.index is not None and not 0 <= dev.index < torch.cuda.device_count():
        raise ValueError(
            f"device: {shown!r}, but only {torch.cuda.device_count()} CUDA GPU(s) are "
            "visible; pass device='cuda' (GPU 0) or an index below that"
        )


def resolve_device(device: str | torch.device | None, model_device: torch.device) -> torch.device:
    """Where to compute: ``device``, or by default the model's; a device that can hold data, else
    a ValueError naming ``device`` (or ``model``, for a model on the meta device) and the fix."""
    if device is None:
        if model_device.type == "meta":
            raise ValueError(
                "model: its parameters are on the 'meta' device, which holds no data; load the "
                "trained weights first (model.to_empty(device='cpu'), then load_state_dict)"
            )
        return model_device
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: not a torch device: {device!r} (try 'cpu' or 'cuda')") from err
    if dev.type == "meta":
        raise ValueError("device: device='meta' holds no data; use 'cpu' or 'cuda'")
    if dev.type == "cuda":
        _check_cuda(dev, str(device))
    try:
        torch.empty(0, device=dev)
    except Exception as err:  # each backend fails in its own way (Assertion, NotImplemented...)
        raise ValueError(
            f"device: this torch build cannot use {str(dev)!r} ({first_line(err)}); pass "
            "device='cpu' or 'cuda'"
        ) from err
    return dev


def _depends_on_mode(module: nn.Module) -> bool:
    """Whether ``module`` computes something else in train mode than in eval mode."""
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return module.track_running_stats  # batch statistics vs running statistics
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return module.p > 0
    if isinstance(module, nn.RNNBase | nn.MultiheadAttention):
        return module.dropout > 0
    return False


def mode_dependent_modules(model: nn.Module) -> list[str]:
    """'name (Type)' of each module in train mode whose output differs in eval mode (BatchNorm,
    Dropout, ...): the modules that evaluating ``model`` in eval mode changes."""
    return [
        f"{name or '<model>'} ({type(m).__name__})"
        for name, m in model.named_modules()
        if m.training and _depends_on_mode(m)
    ]


def warn_train_mode(model: nn.Module, what: str, stacklevel: int) -> None:
    """One :class:`InfluenceWarning` when ``model`` has modules in train mode that eval mode
    changes, naming the first few and saying that ``what`` uses eval mode."""
    names = mode_dependent_modules(model)
    if not names:
        return
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    warnings.warn(
        f"model: is in train mode with modules that behave differently in eval mode: {shown}. "
        f"{what} in eval mode, as at inference (BatchNorm uses its running statistics, Dropout "
        "is off); your model's modes are left as they are. Call model.eval() first to silence "
        "this warning.",
        InfluenceWarning,
        stacklevel=stacklevel + 1,
    )
