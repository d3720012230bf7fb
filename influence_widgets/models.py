"""Small models for the built-in data sets, in float64 by default so influence is exact to print."""

from __future__ import annotations

import math

import torch
from torch import nn

from influence_widgets.dataset import Dataset

__all__ = [
    "fmnist_attack_model",
    "fmnist_extractor_layers",
    "linear_svm",
    "logistic_regression",
    "small_cnn",
]


def _dims(data: Dataset | tuple[int, int]) -> tuple[int, int]:
    if isinstance(data, Dataset):
        return data.n_features, data.n_classes
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(v, int) for v in data):
        return data
    raise TypeError(
        f"data: expected an iw.datasets Dataset or (n_features, n_classes), got {type(data).__name__}"
    )


def logistic_regression(
    data: Dataset | tuple[int, int], *, bias: bool = True, dtype: torch.dtype = torch.float64
) -> nn.Linear:
    """Multinomial logistic regression: logits = W x (+ b), zero-initialised.

    The paper's MNIST model has no bias (p = 10 x 784 = 7,840): pass ``bias=False``.
    """
    n_features, n_classes = _dims(data)
    model = nn.Linear(n_features, n_classes, bias=bias, dtype=dtype)
    nn.init.zeros_(model.weight)
    if bias:
        nn.init.zeros_(model.bias)
    return model


def linear_svm(
    data: Dataset | tuple[int, int], *, dtype: torch.dtype = torch.float64
) -> nn.Sequential:
    """A binary linear model with one output score f(x) = w^T x + b, for the (smooth) hinge loss."""
    n_features, n_classes = _dims(data)
    if n_classes != 2:
        raise ValueError(f"data: linear_svm needs 2 classes, got {n_classes}")
    model = nn.Sequential(nn.Linear(n_features, 1, dtype=dtype), nn.Flatten(0))
    nn.init.zeros_(model[0].weight)
    nn.init.zeros_(model[0].bias)
    return model


def small_cnn(
    data: Dataset, *, channels: int = 8, seed: int = 0, dtype: torch.dtype = torch.float64
) -> nn.Sequential:
    """A small tanh CNN on flat image inputs, as in the paper's Fig 2 (right).

    conv 3x3 (1 -> c), tanh, conv 3x3 stride 2 (c -> c), tanh, linear to the classes. On the 8x8
    digits with c = 8 it has 1,954 parameters.
    """
    if not isinstance(data, Dataset) or data.kind != "image" or data.image_shape is None:
        raise TypeError("data: small_cnn needs an image Dataset from iw.datasets")
    if len(data.image_shape) != 2:
        raise ValueError("data: small_cnn supports grey-scale (H, W) images only")
    h, w = data.image_shape
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = nn.Sequential(
            nn.Unflatten(1, (1, h, w)),
            nn.Conv2d(1, channels, 3, padding=1, dtype=dtype),
            nn.Tanh(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1, dtype=dtype),
            nn.Tanh(),
            nn.Flatten(),
            nn.Linear(channels * math.ceil(h / 2) * math.ceil(w / 2), data.n_classes, dtype=dtype),
        )
    finally:
        torch.random.set_rng_state(gen_state)
    return model


# The frozen feature extractor of the attack experiments (the paper's Inception features, scaled
# down): trained on 8 Fashion-MNIST classes by scripts/train_fmnist_extractor.py, which writes
# EXTRACTOR_FILE; the two held-out classes are the attacks' binary task.
EXTRACTOR_FILE = "assets/fmnist_extractor.pt"
EXTRACTOR_HELD_OUT = (5, 7)  # Sandal, Sneaker: never seen by the extractor
EXTRACTOR_FEATURES = 32


def fmnist_extractor_layers(dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """The extractor's architecture: two strided tanh convolutions and a 32-unit tanh layer."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 8, 5, stride=2, padding=2, dtype=dtype),
        nn.Tanh(),
        nn.Conv2d(8, 16, 5, stride=2, padding=2, dtype=dtype),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, EXTRACTOR_FEATURES, dtype=dtype),
        nn.Tanh(),
    )


def fmnist_attack_model(
    n_classes: int = 2, dtype: torch.dtype = torch.float64, features: str = "conv"
) -> nn.Sequential:
    """The shipped, frozen Fashion-MNIST extractor with a fresh zero logistic-regression head.

    ``model[0]`` is the extractor (its parameters have ``requires_grad=False``) and ``model[1]``
    the head: pass ``params=["1.weight", "1.bias"]`` to take influence over the head only, as the
    paper does with Inception features. ``features="conv"`` (default) gives the head the 784 tanh
    outputs of the second convolution (16 x 7 x 7): as in the paper (2,048 Inception features,
    1,800 training images), about as many features as training points. ``features="dense"`` gives
    it the extractor's last 32-unit layer. Regenerate the weights with
    ``python scripts/train_fmnist_extractor.py``.
    """
    from importlib.resources import files

    if features not in ("conv", "dense"):
        raise ValueError(f"features: expected 'conv' or 'dense', got {features!r}")
    extractor = fmnist_extractor_layers(dtype)
    path = files("influence_widgets").joinpath(EXTRACTOR_FILE)
    with path.open("rb") as f:
        state = torch.load(f, map_location="cpu", weights_only=True)
    extractor.load_state_dict({k: v.to(dtype) for k, v in state.items()})
    for p in extractor.parameters():
        p.requires_grad_(False)
    width = EXTRACTOR_FEATURES
    if features == "conv":  # up to the second convolution's tanh, flattened
        extractor = nn.Sequential(*list(extractor)[:6])
        width = extractor[3].out_channels * 7 * 7
    head = nn.Linear(width, n_classes, dtype=dtype)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return nn.Sequential(extractor, head)
