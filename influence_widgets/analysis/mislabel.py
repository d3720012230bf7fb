"""Finding mislabeled training points (Koh & Liang 2017, Sec 5.4, Fig 6).

A training point z_i = (x_i, y_i) whose label is wrong tends to have a large self-influence
|I_up,loss(z_i, z_i)| = grad ell_i^T H^-1 grad ell_i: removing it would change its own loss the
most. :func:`review_order` ranks the training points for a person to check, by self-influence,
by training loss, or at random; :func:`mislabel_recovery` measures how many planted flips each
ranking finds after checking a fraction of the training set, and the test accuracy after fixing
them and retraining.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from influence_widgets.core.errors import check_seed
from influence_widgets.core.influence import Influence, check_influence
from influence_widgets.core.losses import class_probabilities
from influence_widgets.datasets import Dataset

__all__ = ["METHODS", "MislabelRecovery", "mislabel_recovery", "review_order"]

METHODS = ("self_influence", "loss", "random")
FLIP_STREAM = 0xF11B  # numpy's second seed word for the label flips


def _check_method(method: object, name: str = "method") -> str:
    if method not in METHODS:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, METHODS))}, got {method!r}")
    return method


def training_losses(influence: Influence) -> torch.Tensor:
    """L(z_i, theta_hat) for every training point, (n,), without the L2 term."""
    obj = influence.objective
    out = torch.empty(influence.n, dtype=obj.dtype, device=obj.device)
    with torch.no_grad():
        for x, y, sl in influence.train.batches(influence.batch_size):
            out[sl] = obj.loss(obj.theta, obj.cast_inputs(x), obj.cast_targets(y))
    return out


def review_order(
    influence: Influence, method: str = "self_influence", seed: int = 0
) -> torch.Tensor:
    """Training indices (n,) on the CPU in the order to check their labels, most suspect first.

    Args:
        influence: an :class:`~influence_widgets.Influence` of the model trained on the labels to
            check.
        method: ``"self_influence"``: largest |I_up,loss(z_i, z_i)| first. The self-influence
            -grad ell_i^T H^-1 grad ell_i is <= 0 for a positive-definite H (upweighting z_i always
            lowers its own loss), so its magnitude grad ell_i^T H^-1 grad ell_i is what ranks: the
            points whose own loss depends most on keeping them, i.e. the ones the model fits only
            because they are in the training set. ``"loss"``: largest training loss L(z_i,
            theta_hat) first. ``"random"``: a permutation drawn with ``seed``.
        seed: the seed of ``"random"``, an integer in [0, 2**64) (ignored by the other
            methods).
    """
    influence = check_influence(influence)
    method = _check_method(method)
    seed = check_seed(seed)
    if method == "random":
        gen = torch.Generator().manual_seed(seed)
        return torch.randperm(influence.n, generator=gen)
    if method == "self_influence":
        score = influence.self_influence().abs()
    else:
        score = training_losses(influence)
    return torch.argsort(score.detach().cpu(), descending=True, stable=True)


# ----- the recovery experiment --------------------------------------------------------------------
@dataclass(frozen=True)
class MislabelRecovery:
    """What :func:`mislabel_recovery` measured.

    Attributes:
        dataset, noise: names of the data set and of the noise (``"uniform"`` or
            ``"systematic 1->7"``).
        flip_fraction: the fraction of the training set (uniform) or of the source class
            (systematic) whose labels were flipped.
        checked_fractions, methods, seeds: the grid.
        clean_accuracy: test accuracy of ``model_fn(data)`` trained on the clean labels.
        noisy_accuracy: {seed: test accuracy trained on that seed's noisy labels}.
        n_flipped: {seed: number of flipped labels}.
        auc: {(method, seed): ROC AUC of the ranking for telling flipped from clean points}.
        records: one dict per (seed, method, checked fraction): ``flips_found_fraction`` (flips
            among the checked points / all flips) and ``test_accuracy`` after fixing them.
    """

    dataset: str
    noise: str
    flip_fraction: float
    checked_fractions: tuple[float, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    clean_accuracy: float
    noisy_accuracy: dict[int, float]
    n_flipped: dict[int, int]
    auc: dict[tuple[str, int], float]
    records: list[dict] = field(repr=False)

    def rows(self) -> list[dict]:
        """One dict per (seed, method, checked fraction) with keys dataset, noise, method,
        checked_fraction, flips_found_fraction, test_accuracy, seed."""
        return [{"dataset": self.dataset, "noise": self.noise, **r} for r in self.records]

    def mean(self, method: str, key: str) -> list[float]:
        """``key`` (``"flips_found_fraction"`` or ``"test_accuracy"``) of ``method`` at each
        checked fraction, the mean over seeds."""
        return [
            float(
                np.mean(
                    [
                        r[key]
                        for r in self.records
                        if (r["method"], r["checked_fraction"]) == (method, c)
                    ]
                )
            )
            for c in self.checked_fractions
        ]

    def plot(self, figsize: tuple[float, float] = (9.0, 3.6)):
        """The paper's Fig 6: fraction of flips found (left) and test accuracy after fixing them
        (right) against the fraction of training data checked, one line per method (means over
        seeds, starting at 0 checked: nothing found, the noisy model's accuracy), the clean-label
        accuracy dashed. Returns a matplotlib ``Figure`` (no pyplot state)."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, layout="constrained")
        found_ax, acc_ax = fig.subplots(1, 2)
        xs = [0.0, *self.checked_fractions]
        noisy = float(np.mean(list(self.noisy_accuracy.values())))
        for method in self.methods:
            label = method.replace("_", "-")
            found_ax.plot(
                xs, [0.0, *self.mean(method, "flips_found_fraction")], marker="o", label=label
            )
            acc_ax.plot(xs, [noisy, *self.mean(method, "test_accuracy")], marker="o", label=label)
        acc_ax.axhline(self.clean_accuracy, color="0.4", ls="--", lw=1, label="clean labels")
        found_ax.set_ylabel("fraction of flips found")
        acc_ax.set_ylabel("test accuracy")
        for ax in (found_ax, acc_ax):
            ax.set_xlabel("fraction of training data checked")
            ax.legend(fontsize="small")
        of = "all labels" if self.noise == "uniform" else "the source class"
        fig.suptitle(f"{self.dataset}: {self.noise} flips ({self.flip_fraction:.0%} of {of})")
        return fig


def _check_fraction(value: object, name: str, closed: bool) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    v = float(value) if ok else math.nan
    if not (0 < v < 1 or (closed and v == 1)):
        upper = "<= 1" if closed else "< 1"
        raise ValueError(f"{name}: expected a fraction > 0 and {upper}, got {value!r}")
    return v


def _several(value: object, name: str) -> tuple:
    """``value`` as a tuple: a single number or string is one item, any other iterable its
    items; else a TypeError naming ``name``."""
    if isinstance(value, str | numbers.Number) or getattr(value, "ndim", None) == 0:
        return (value,)
    try:
        return tuple(value)
    except TypeError:
        raise TypeError(
            f"{name}: expected one value or a sequence of them, got {type(value).__name__}"
        ) from None


def _check_noise(noise: object, n_classes: int) -> tuple[int, int] | None:
    """None for uniform noise, else (from_class, to_class)."""
    if noise == "uniform":
        return None
    if (
        isinstance(noise, tuple)
        and len(noise) == 3
        and noise[0] == "systematic"
        and all(isinstance(c, numbers.Integral) and 0 <= c < n_classes for c in noise[1:])
        and noise[1] != noise[2]
    ):
        return int(noise[1]), int(noise[2])
    raise ValueError(
        f"noise: expected 'uniform' or ('systematic', from_class, to_class) with two different "
        f"classes in 0..{n_classes - 1}, got {noise!r}"
    )


def noise_name(pair: tuple[int, int] | None, class_names: Sequence[str]) -> str:
    """``"uniform"``, or ``"systematic Shirt->T-shirt/top"`` for flips of class a to b."""
    return (
        "uniform" if pair is None else f"systematic {class_names[pair[0]]}->{class_names[pair[1]]}"
    )


def flip_labels(
    y: torch.Tensor, n_classes: int, flip_fraction: float, pair: tuple[int, int] | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A noisy copy of ``y`` and the flipped indices (sorted). Uniform (``pair`` None):
    round(flip_fraction * n) points, each given a random other class. Systematic
    (``pair`` = (a, b)): round(flip_fraction * |class a|) points of class a labelled b."""
    # A stream of its own: the flips must not be the first points of review_order's "random"
    # permutation with the same seed.
    rng = np.random.default_rng((int(seed), FLIP_STREAM))
    pool = (
        np.arange(len(y)) if pair is None else torch.nonzero(y == pair[0]).squeeze(1).cpu().numpy()
    )
    k = round(flip_fraction * len(pool))
    if k == 0:
        raise ValueError(f"flip_fraction: {flip_fraction:g} of {len(pool)} points flips none")
    flipped = torch.from_numpy(np.sort(rng.permutation(pool)[:k]))
    noisy = y.clone()
    if pair is None:
        shift = torch.from_numpy(rng.integers(1, n_classes, size=k)).to(y.device, y.dtype)
        noisy[flipped] = (y[flipped] + shift) % n_classes
    else:
        noisy[flipped] = pair[1]
    return noisy, flipped


def accuracy(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """The fraction of (X, y) that ``model`` classifies correctly (argmax of its probabilities)."""
    param = next(model.parameters())
    with torch.no_grad():
        pred = class_probabilities(model(X.to(param.device, param.dtype))).argmax(1)
    return float((pred.cpu() == y.cpu()).double().mean())


def _fitted(model: torch.nn.Module, X, y, l2: float) -> torch.nn.Module:
    from influence_widgets.training import train

    train(model, (X, y), l2=l2, progress=False)
    return model


def _seed_run(
    model_fn: Callable[[Dataset], torch.nn.Module],
    data: Dataset,
    spec: dict,
    seed: int,
) -> tuple[float, int, dict, list[dict]]:
    """One seed: flip, train, rank by each method, fix the checked flips and retrain."""
    from sklearn.metrics import roc_auc_score

    X, y = data.X_train.clone(), data.y_train.clone()
    noisy, flipped = flip_labels(y, data.n_classes, spec["flip_fraction"], spec["pair"], seed)
    model = _fitted(model_fn(data), X, noisy, spec["l2"])
    noisy_acc = accuracy(model, data.X_test, data.y_test)
    inf = Influence(model, (X, noisy), l2=spec["l2"], damping=spec["damping"], progress=False)
    is_flipped = torch.zeros(len(y), dtype=torch.bool)
    is_flipped[flipped] = True
    accuracy_after: dict[frozenset, float] = {frozenset(): noisy_acc}
    auc, records = {}, []
    for method in spec["methods"]:
        order = review_order(inf, method, seed)
        rank_score = torch.empty(len(y))
        rank_score[order] = torch.arange(len(y), 0, -1, dtype=rank_score.dtype)
        auc[method] = float(roc_auc_score(is_flipped.numpy(), rank_score.numpy()))
        for c in spec["checked_fractions"]:
            found = order[: round(c * len(y))]
            found = found[is_flipped[found]]
            key = frozenset(found.tolist())
            if key not in accuracy_after:
                fixed = noisy.clone()
                fixed[found] = y[found]
                refit = _fitted(copy.deepcopy(model), X, fixed, spec["l2"])  # warm start
                accuracy_after[key] = accuracy(refit, data.X_test, data.y_test)
            records.append(
                {
                    "method": method,
                    "checked_fraction": c,
                    "flips_found_fraction": len(found) / len(flipped),
                    "test_accuracy": accuracy_after[key],
                    "seed": seed,
                }
            )
    return noisy_acc, len(flipped), auc, records


def mislabel_recovery(
    model_fn: Callable[[Dataset], torch.nn.Module],
    data: Dataset,
    *,
    flip_fraction: float = 0.1,
    noise: str | tuple[str, int, int] = "uniform",
    checked_fractions: float | Sequence[float] = (0.05, 0.1, 0.2, 0.3),
    methods: str | Sequence[str] = METHODS,
    seeds: int | Sequence[int] = (0,),
    l2: float = 0.01,
    damping: float = 0.0,
) -> MislabelRecovery:
    """The paper's Sec 5.4 experiment: flip labels, rank the training points, check a fraction.

    Per seed: flip labels of a copy of ``data``'s training split (``noise="uniform"``:
    ``flip_fraction`` of all points, each to a random other class; ``("systematic", a, b)``:
    ``flip_fraction`` of class a labelled b), train ``model_fn(data)`` with ``iw.train`` (L2
    ``l2``) on the noisy labels, rank the training points by each of ``methods``
    (:func:`review_order`), and for each checked fraction c restore the true labels of the flips
    among the first round(c n) points and retrain (warm-started from the noisy model: the same
    minimum for a convex model). Also trains ``model_fn(data)`` once on the clean labels.
    ``data`` and its tensors are never modified.

    Args:
        model_fn: ``data -> an untrained classifier`` (e.g. ``iw.models.logistic_regression``).
        data: an ``iw.datasets`` :class:`~influence_widgets.datasets.Dataset`; its test split
            measures accuracy.
        flip_fraction: in (0, 1).
        checked_fractions: each in (0, 1]; one number or a sequence.
        methods: any of ``"self_influence"``, ``"loss"``, ``"random"``; one name or a sequence.
        seeds: one run per seed (it draws the flips, and the ``"random"`` order), each an
            integer in [0, 2**64); one seed or a sequence.
        l2, damping: for training and for ``Influence``.
    """
    if not callable(model_fn):
        raise TypeError(
            f"model_fn: expected a callable data -> model, got {type(model_fn).__name__}"
        )
    if not isinstance(data, Dataset):
        raise TypeError(f"data: expected an iw.datasets Dataset, got {type(data).__name__}")
    spec = {
        "flip_fraction": _check_fraction(flip_fraction, "flip_fraction", closed=False),
        "pair": _check_noise(noise, data.n_classes),
        "checked_fractions": tuple(
            _check_fraction(c, "checked_fractions", closed=True)
            for c in _several(checked_fractions, "checked_fractions")
        ),
        "methods": tuple(_check_method(m, "methods") for m in _several(methods, "methods")),
        "l2": float(l2),
        "damping": float(damping),
    }
    seeds = tuple(check_seed(s, "seeds") for s in _several(seeds, "seeds"))
    for name in ("checked_fractions", "methods"):
        if not spec[name]:
            raise ValueError(f"{name}: give at least one")
    if not seeds:
        raise ValueError("seeds: give at least one")
    noisy_acc, n_flipped, auc, records = {}, {}, {}, []
    for seed in seeds:
        noisy_acc[seed], n_flipped[seed], per_method, seed_records = _seed_run(
            model_fn, data, spec, seed
        )
        auc.update({(m, seed): v for m, v in per_method.items()})
        records += seed_records
    clean = _fitted(model_fn(data), data.X_train.clone(), data.y_train.clone(), spec["l2"])
    pair = spec["pair"]
    return MislabelRecovery(
        dataset=data.name,
        noise=noise_name(pair, data.class_names),
        flip_fraction=spec["flip_fraction"],
        checked_fractions=spec["checked_fractions"],
        methods=spec["methods"],
        seeds=seeds,
        clean_accuracy=accuracy(clean, data.X_test, data.y_test),
        noisy_accuracy=noisy_acc,
        n_flipped=n_flipped,
        auc=auc,
        records=records,
    )
