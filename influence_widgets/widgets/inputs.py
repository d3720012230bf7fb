"""The explorer's inputs, checked: the test points, how points are shown, class and feature names.

The one place where user inputs are interpreted, for ``InfluenceExplorer`` and ``%influence`` alike:
pandas DataFrames and categoricals (:func:`read_points`), one-hot labels (:func:`classes_of`), test
inputs against the training inputs (:func:`check_test_inputs`) and names (:func:`check_names`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from influence_widgets.core import Influence
from influence_widgets.core.losses import class_probabilities
from influence_widgets.core.objective import probe_output
from influence_widgets.datasets import Dataset
from influence_widgets.widgets.display import KINDS, DisplayData

__all__ = [
    "ExplorerInputs",
    "NamedPoints",
    "as_numpy",
    "categories_of",
    "check_finite_rows",
    "check_names",
    "check_same_names",
    "check_test_inputs",
    "class_probabilities_of",
    "classes_of",
    "columns_of",
    "plain",
    "read_points",
    "targets_like",
]


def as_numpy(t) -> np.ndarray:
    """``t`` as a numpy array that torch may share: a read-only array (what pandas gives) is
    copied, so torch does not warn "The given NumPy array is not writable"."""
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    array = np.asarray(t)
    return array if array.flags.writeable else array.copy()


def plain(value):
    """A pandas DataFrame or Series as a writable numpy array (torch warns about the read-only
    arrays pandas hands out); anything else as it is."""
    if isinstance(value, torch.Tensor | np.ndarray) or not hasattr(value, "to_numpy"):
        return value
    return np.array(value.to_numpy(), copy=True)


def columns_of(X) -> list[str] | None:
    """The column names of a pandas DataFrame as strings; None for anything else."""
    columns = getattr(X, "columns", None)
    return None if columns is None else [str(c) for c in columns]


def categories_of(y) -> tuple[np.ndarray, list[str]] | None:
    """(codes, categories) of a pandas Categorical or categorical Series with named (not
    integer) categories: the codes are the labels 0..C-1 and the categories their names. None
    for anything else, integer categories included: their values are the labels, as
    ``iw.train`` reads them."""
    cat = y if hasattr(y, "codes") and hasattr(y, "categories") else getattr(y, "cat", None)
    if cat is None or np.asarray(cat.categories).dtype.kind in "iu":
        return None
    return np.array(cat.codes, dtype=np.int64), [str(c) for c in cat.categories]


@dataclass(frozen=True)
class NamedPoints:
    """Inputs ``X`` and labels ``y`` as arrays (see :func:`read_points`), the names they carried
    (None where they carried none), and how errors name them."""

    X: object
    y: object
    feature_names: list[str] | None
    class_names: list[str] | None
    x_name: str
    y_name: str


def read_points(X, y, x_name: str = "x_test", y_name: str = "y_test") -> NamedPoints:
    """``X`` and ``y`` as the model reads them, with their names: a pandas DataFrame's columns
    name the features; a pandas categorical with named (not integer) categories names the
    classes, and its codes are the labels (a missing label is a ValueError naming ``y_name``).
    pandas objects become writable numpy arrays, anything else stays as it is (``y=None`` too).
    """
    categories = categories_of(y)
    if categories is not None and (categories[0] < 0).any():
        raise ValueError(f"{y_name}: the labels have missing values; drop or fill them")
    return NamedPoints(
        X=plain(X),
        y=plain(y) if categories is None else categories[0],
        feature_names=columns_of(X),
        class_names=None if categories is None else categories[1],
        x_name=x_name,
        y_name=y_name,
    )


def check_same_names(train: NamedPoints, test: NamedPoints) -> None:
    """A ValueError naming ``test``'s inputs or labels when they would mean other things than the
    training points': DataFrames with other columns (the model would read other features), or
    labels that are not both categoricals with the same categories, or both not (codes of other
    classes). Test labels None: no labels to compare."""
    if train.feature_names is not None and test.feature_names not in (None, train.feature_names):
        raise ValueError(
            f"{test.x_name}: its columns differ from those of the training inputs; select the "
            "training inputs' columns, in their order"
        )
    if test.y is not None and test.class_names != train.class_names:
        raise ValueError(
            f"{test.y_name}: the training and test labels must both be pandas categoricals with "
            "the same categories (their codes are the labels), or neither; convert the test "
            "labels with .astype(y.dtype), y the training labels"
        )


def check_names(value, name: str, count: int, one: str, many: str) -> list[str]:
    """``value`` as a list of ``count`` strings, one per ``one`` (``many`` in messages); a bare
    string (which would be split into characters) is a TypeError, a wrong length a ValueError."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise TypeError(
            f"{name}: expected a list of {count} names, one per {one}, got a "
            f"{type(value).__name__} ({value!r:.40})"
        )
    names = [str(v) for v in value]
    if len(names) != count:
        raise ValueError(
            f"{name}: got {len(names)} names for {count} {many}; pass one name per {one}"
        )
    first: dict[str, int] = {}
    for j, text in enumerate(names):
        if text in first:
            raise ValueError(
                f"{name}: {text!r} names {many} {first[text]} and {j}; pass distinct names, "
                f"one per {one}"
            )
        first[text] = j
    return names


def classes_of(y) -> np.ndarray:
    """The class index of each point of labels ``y``, int64 of shape (n,): rows of several values
    (one-hot or scores, as mse takes them) by their argmax, single values as they are."""
    labels = np.atleast_1d(as_numpy(y))
    rows = labels.reshape(len(labels), -1)
    return (rows.argmax(axis=1) if rows.shape[1] > 1 else rows[:, 0]).astype(np.int64)


def targets_like(classes: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Class indices ``classes`` (k,) as labels of the form of ``like`` (the training labels):
    one-hot rows in ``like``'s dtype when each of its points has several values (mse), else the
    indices in ``like``'s dtype; on ``like``'s device."""
    per_point = like.shape[1:]
    classes = classes.long().reshape(-1).to(like.device)
    if int(np.prod(per_point)) > 1:
        rows = F.one_hot(classes, int(np.prod(per_point)))
        return rows.to(like.dtype).reshape(len(classes), *per_point)
    return classes.to(like.dtype).reshape(len(classes), *per_point)


def check_finite_rows(t: torch.Tensor, name: str) -> None:
    """A ValueError naming ``name`` and its first test point with a NaN or infinite value."""
    if not t.is_floating_point():
        return
    bad = torch.nonzero(~torch.isfinite(t.reshape(len(t), -1)).all(dim=1)).reshape(-1)
    if len(bad):
        raise ValueError(
            f"{name}: test point {int(bad[0])} has a NaN or infinite value ({len(bad)} test "
            "point(s) have one); clean, impute or drop them"
        )


def _kind(t: torch.Tensor) -> str:
    if t.is_complex():
        return "complex"
    return "floating-point" if t.is_floating_point() else "integer"


def check_test_inputs(x: torch.Tensor, influence: Influence) -> torch.Tensor:
    """Test inputs ``x`` as the model reads them: finite and taken by the model; where the
    training inputs are a tensor X (a torch Dataset is not read here), integer values for
    floating-point X (pixel levels, counts) cast to X's dtype, and each test point of the shape
    of a row of X. Else a ValueError or TypeError naming ``x_test`` with what to pass."""
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"x_test: expected one row per test point, got shape {tuple(x.shape)}")
    X = influence.train.X
    if X is not None:
        if X.is_floating_point() and _kind(x) == "integer":
            x = x.to(X.dtype)
        if _kind(x) != _kind(X):
            raise TypeError(
                f"x_test: holds {_kind(x)} values ({x.dtype}) but the training inputs are "
                f"{_kind(X)} ({X.dtype}); pass test inputs of the training inputs' kind"
            )
        if x.shape[1:] != X.shape[1:]:
            raise ValueError(
                f"x_test: each test point has shape {tuple(x.shape[1:])} but each training "
                f"input {tuple(X.shape[1:])}; pass test inputs with the training inputs' features"
            )
    check_finite_rows(x, "x_test")
    obj = influence.objective
    probe_output(partial(obj.forward, obj.theta), obj.cast_inputs(x), "x_test")
    return x


def class_probabilities_of(
    influence: Influence, x: torch.Tensor, batch: int = 2048
) -> torch.Tensor:
    """p(class | x) at theta_hat for every row of ``x``, shape (T, C): sigmoid of a single output
    (C = 2), else softmax of the outputs (see ``core.losses.class_probabilities``)."""
    obj = influence.objective
    with torch.no_grad():
        parts = [
            class_probabilities(obj.forward(obj.theta, obj.cast_inputs(x[start : start + batch])))
            for start in range(0, len(x), batch)
        ]
    return torch.cat(parts).cpu()


def _same(X: torch.Tensor | None, of: torch.Tensor) -> bool:
    """Whether the training inputs ``X`` are the rows of ``of`` (perhaps in another dtype)."""
    return X is not None and X.shape == of.shape and torch.equal(X.detach().cpu().to(of.dtype), of)


@dataclass(frozen=True)
class ExplorerInputs:
    """What the user passed to :class:`~influence_widgets.InfluenceExplorer` about the data."""

    x_test: object = None
    y_test: object = None
    kind: str | None = None
    train_display: Sequence | None = None
    test_display: Sequence | None = None
    class_names: Sequence[str] | None = None
    feature_names: Sequence[str] | None = None
    # the Dataset's training inputs, when train_display came from it: shown only if the
    # Influence was built on those same inputs (else its own inputs are shown)
    display_is_of: torch.Tensor | None = None

    def with_defaults_from(self, data: Dataset | None) -> ExplorerInputs:
        """The unset fields filled from an ``iw.datasets`` Dataset: its test split, kind, names
        and (for images) its 2-D images as the display."""
        if data is None:
            return self
        if not isinstance(data, Dataset):
            raise TypeError(
                f"data: expected an iw.datasets Dataset (or pass x_test=, y_test=, kind=), "
                f"got {type(data).__name__}"
            )
        kind = self.kind or data.kind
        train_display, test_display, of = self._display_from(data, kind)
        return replace(
            self,
            x_test=data.X_test if self.x_test is None else self.x_test,
            y_test=data.y_test if self.y_test is None else self.y_test,
            kind=kind,
            class_names=data.class_names if self.class_names is None else self.class_names,
            feature_names=data.feature_names if self.feature_names is None else self.feature_names,
            train_display=train_display,
            test_display=test_display,
            display_is_of=of,
        )

    def with_names_from_pandas(self) -> ExplorerInputs:
        """x_test and y_test as arrays (see :func:`read_points`): a DataFrame's columns and a
        categorical's categories name the features and classes where no names were given."""
        test = read_points(self.x_test, self.y_test)
        return replace(
            self,
            x_test=test.X,
            y_test=test.y,
            class_names=test.class_names if self.class_names is None else self.class_names,
            feature_names=test.feature_names if self.feature_names is None else self.feature_names,
        )

    def _display_from(self, data: Dataset, kind: str) -> tuple:
        """(train_display, test_display, the training inputs they show) from ``data`` where not
        given: its 2-D images, or its rows in their own units when both splits come from it (a
        card sets training and test values side by side: never in two different units)."""
        train, test = self.train_display, self.test_display
        if kind == "image" and data.kind == "image":
            if test is None and self.x_test is not None:
                test = as_numpy(self.x_test).reshape(-1, *data.image_shape)
            own = train is None
            train = data.images("train") if own else train
            test = data.images("test") if test is None else test
            return train, test, data.X_train if own else None
        own_rows = train is None and test is None and self.x_test is None
        if kind == "tabular" and data.kind == "tabular" and data.units is not None and own_rows:
            return data.rows("train"), data.rows("test"), data.X_train
        return train, test, None

    def test_points(self, influence: Influence) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x_test, y_test) as tensors of the same length, x_test as the model reads it (see
        :func:`check_test_inputs`), y_test finite; y_test None when not given (the points are
        then explained for their predicted classes)."""
        if self.x_test is None:
            raise ValueError("x_test: pass a Dataset as data, or x_test (and y_test if known)")
        x = check_test_inputs(torch.as_tensor(as_numpy(self.x_test)), influence)
        if self.y_test is None:
            return x, None
        y = torch.as_tensor(as_numpy(self.y_test))
        if y.ndim == 0 or len(x) != len(y):
            raise ValueError(
                f"y_test: has shape {tuple(y.shape)} for the {len(x)} test points of x_test; "
                "pass one label (or one row of targets) per test point"
            )
        check_finite_rows(y, "y_test")
        return x, y

    def display(self, influence: Influence, n_classes: int) -> DisplayData:
        """How the training and test points are shown, with ``n_classes`` class names."""
        if self.kind is None:
            raise ValueError(f"kind: pass one of {KINDS} for plain arrays")
        n_test = len(self.x_test)
        train_display, test_display = self.train_display, self.test_display
        if self.display_is_of is not None and not _same(influence.train.X, self.display_is_of):
            # The Influence was built on other training points than the Dataset's: show its own
            # (images in the Dataset's image shape; rows, and so the test rows too, as the model
            # reads them, so that a card never sets two units side by side).
            train_display = as_numpy(influence.train.X)
            if self.kind == "image":
                train_display = train_display.reshape(-1, *np.shape(test_display)[1:])
            else:
                test_display = None
        if train_display is None:
            if influence.train.X is None:
                raise ValueError("train_display: needed when the training set is a Dataset")
            train_display = as_numpy(influence.train.X)
        if test_display is None:
            test_display = as_numpy(self.x_test)
        for name, shown, n in (
            ("train_display", train_display, influence.n),
            ("test_display", test_display, n_test),
        ):
            if len(shown) != n:
                raise ValueError(f"{name}: has {len(shown)} items for {n} points; pass one each")
        class_names = (
            [str(c) for c in range(n_classes)]
            if self.class_names is None
            else check_names(self.class_names, "class_names", n_classes, "class", "classes")
        )
        return DisplayData(
            kind=self.kind,
            train=train_display,
            test=test_display,
            class_names=class_names,
            feature_names=self._feature_names(train_display),
        )

    def _feature_names(self, train_display: Sequence) -> list[str] | None:
        """One name per column of a tabular row (else per input value of the model)."""
        if self.feature_names is None:
            return None
        row = train_display[0] if self.kind == "tabular" else as_numpy(self.x_test[0])
        count = int(np.asarray(row).size)
        return check_names(self.feature_names, "feature_names", count, "feature", "features")
