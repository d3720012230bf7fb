"""Built-in data sets, returned as a :class:`Dataset` of torch tensors with a fixed split.

Inputs are flat float32 feature vectors (images flattened row by row, values in [0, 1]); labels are
int64 class indices. ``images`` keeps the 2-D view of image data for display.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from influence_widgets.dataset import Dataset
from influence_widgets.fashion_mnist_files import fashion_mnist
from influence_widgets.models import EXTRACTOR_HELD_OUT

__all__ = [
    "Dataset",
    "breast_cancer",
    "breast_cancer_clinic_b",
    "digits",
    "fashion_mnist",
    "sandal_sneaker",
]


def _split(n: int, n_train: int, seed: int, caller: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a fixed random split of ``n`` rows: ``n_train`` training rows, the rest test."""
    if not 0 < n_train < n:
        raise ValueError(f"{caller}(): n_train must be between 1 and {n - 1}, got {n_train}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[:n_train]), np.sort(order[n_train:])


def _from_split(
    name: str, X: np.ndarray, y: np.ndarray, split: tuple[np.ndarray, np.ndarray], **display: Any
) -> Dataset:
    """The :class:`Dataset` of inputs ``X`` and labels ``y`` split by ``split`` = (train, test)."""
    tr, te = split
    return Dataset(
        name=name,
        X_train=torch.from_numpy(X[tr]),
        y_train=torch.from_numpy(y[tr]),
        X_test=torch.from_numpy(X[te]),
        y_test=torch.from_numpy(y[te]),
        **display,
    )


def digits(n_train: int = 1300, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), pixels scaled to [0, 1].

    ``n_train`` images (default 1,300) form the training set, the rest the test set; the split is a
    fixed random permutation given by ``seed``.
    """
    from sklearn.datasets import load_digits

    raw = load_digits()
    split = _split(len(raw.target), n_train, seed, "digits")
    X = (raw.data / 16.0).astype(np.float32)
    y = raw.target.astype(np.int64)
    return _from_split(
        "digits",
        X,
        y,
        split,
        class_names=[str(c) for c in range(10)],
        kind="image",
        image_shape=(8, 8),
    )


def breast_cancer(n_train: int = 400, seed: int = 0) -> Dataset:
    """scikit-learn's Wisconsin breast-cancer table (569 patients, 30 features, 2 classes).

    Features are standardised with the training split's mean and standard deviation; ``units``
    keeps them in their own units (mm, mm^2, ...) for display.
    """
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer()
    split = _split(len(raw.target), n_train, seed, "breast_cancer")
    train_rows = raw.data[split[0]]
    mean = train_rows.mean(axis=0)
    std = train_rows.std(axis=0) + 1e-12
    X = ((raw.data - mean) / std).astype(np.float32)
    y = raw.target.astype(np.int64)
    return _from_split(
        "breast_cancer",
        X,
        y,
        split,
        class_names=[str(c) for c in raw.target_names],
        kind="tabular",
        feature_names=[str(f) for f in raw.feature_names],
        units=(raw.data[split[0]], raw.data[split[1]]),
    )


def sandal_sneaker(
    n_train_per_class: int = 900, n_test_per_class: int = 300, **options: Any
) -> Dataset:
    """Fashion-MNIST's Sandal against Sneaker: the attack experiments' two-class task.

    The two classes the shipped frozen extractor (``iw.models.fmnist_attack_model``) never saw,
    as the paper's attacks use Inception features on a task Inception was not trained for:
    ``n_train_per_class`` training images of each class (a fixed random choice, seed 0, from
    Fashion-MNIST's training split) and ``n_test_per_class`` test images of each (seed 1, from its
    test split); 1,800 and 600 by default, as ``benchmarks/attack.py``. ``options`` go to
    :func:`fashion_mnist` (``path``, ``download``, ...). Labels: 0 Sandal, 1 Sneaker.
    """
    data = fashion_mnist(classes=list(EXTRACTOR_HELD_OUT), **options)
    X, y = _per_class(data.X_train, data.y_train, n_train_per_class, seed=0)
    Xt, yt = _per_class(data.X_test, data.y_test, n_test_per_class, seed=1)
    return Dataset(
        name="sandal_sneaker",
        X_train=X,
        y_train=y,
        X_test=Xt,
        y_test=yt,
        class_names=data.class_names,
        kind="image",
        image_shape=data.image_shape,
    )


def _per_class(X: torch.Tensor, y: torch.Tensor, k: int, seed: int):
    """k rows of each of the classes 0 and 1 (a fixed random choice), class 0's first."""
    gen = torch.Generator().manual_seed(seed)
    idx = []
    for c in (0, 1):
        members = torch.nonzero(y == c).squeeze(1)
        if k > len(members):
            raise ValueError(f"sandal_sneaker(): at most {len(members)} images per class, got {k}")
        idx.append(members[torch.randperm(len(members), generator=gen)[:k]])
    idx = torch.cat(idx)
    return X[idx], y[idx]


CLINIC_B = "clinic B"  # the flag column of breast_cancer_clinic_b


def breast_cancer_clinic_b(
    keep: int | None = 4, fraction: float = 0.2, n_train: int = 400, seed: int = 0
) -> Dataset:
    """:func:`breast_cancer` with a planted subgroup, for the paper's domain mismatch (Sec 5.3).

    A random ``fraction`` of the patients (training and test alike) come from "clinic B", which
    sent none of the 30 measurements: as is common practice, they are imputed with the training
    mean (0 after standardising) and flagged by a 31st column ``"clinic B"`` (1 for these
    patients, 0 for the others; scikit-learn's ``SimpleImputer(add_indicator=True)`` does the
    same). A linear model can then tell clinic-B patients apart only by the flag, so it predicts
    for all of them the outcome that the flag and the bias favour in the training set.

    ``keep``: the training split keeps only ``keep`` of its benign clinic-B patients (a fixed
    random choice) and drops the others, as the paper drops 20 of the 24 children who were not
    readmitted; the clinic-B patients left in training are then mostly malignant. ``None``: keep
    them all (no mismatch). The test split is the same for every ``keep``. ``units`` holds the
    rows in the measurements' own units (the imputed training mean for clinic B) and the flag.
    """
    base = breast_cancer(n_train=n_train, seed=seed)
    if isinstance(fraction, bool) or not (isinstance(fraction, float | int) and 0 < fraction < 1):
        raise ValueError(
            f"fraction: expected a fraction of the patients in (0, 1), got {fraction!r}"
        )
    rng = np.random.default_rng((seed, 0xB))
    flag_train = rng.random(len(base.y_train)) < fraction
    flag_test = rng.random(len(base.y_test)) < fraction
    imputed_units = base.units[0].mean(axis=0)
    X, units = _impute(base.X_train, base.units[0], flag_train, imputed_units)
    Xt, units_t = _impute(base.X_test, base.units[1], flag_test, imputed_units)
    y = base.y_train.numpy()
    rows = np.arange(len(y))
    if keep is not None:
        benign = np.nonzero(flag_train & (y == base.class_names.index("benign")))[0]
        if isinstance(keep, bool) or not (
            isinstance(keep, int | np.integer) and 0 <= keep <= len(benign)
        ):
            raise ValueError(
                f"keep: expected None or an int in 0..{len(benign)} (the benign clinic-B "
                f"training patients), got {keep!r}"
            )
        dropped = rng.permutation(benign)[int(keep) :]
        rows = np.setdiff1d(rows, dropped)
    return Dataset(
        name="breast_cancer_clinic_b",
        X_train=torch.from_numpy(X[rows]),
        y_train=torch.from_numpy(y[rows]),
        X_test=torch.from_numpy(Xt),
        y_test=base.y_test.clone(),
        class_names=base.class_names,
        kind="tabular",
        feature_names=[*base.feature_names, CLINIC_B],
        units=(units[rows], units_t),
    )


def _impute(
    X: torch.Tensor, units: np.ndarray, flag: np.ndarray, imputed_units: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Standardised rows and rows in units, with the flagged rows' measurements replaced by the
    training mean (0 standardised, ``imputed_units`` in units) and the flag appended."""
    X = X.numpy().copy()
    units = units.copy()
    X[flag] = 0.0
    units[flag] = imputed_units
    column = flag.astype(np.float32)[:, None]
    return np.hstack([X, column]), np.hstack([units, column.astype(units.dtype)])
