"""Finding mislabeled training points (issue 16, Sec 5.4): ``iw.review_order`` and
``iw.mislabel_recovery`` on tiny float64 problems, with a ranking we control for the bookkeeping."""

from __future__ import annotations

import io
import re

import pytest
import torch

import influence_widgets as iw
from influence_widgets.analysis import mislabel
from influence_widgets.datasets import Dataset

L2 = 0.01


def _blobs(n_per_class: int, n_test_per_class: int = 5, seed: int = 0) -> Dataset:
    """Two well-separated 2-D Gaussian blobs (centres -2 and +2, sd 0.5), float64 inputs."""
    gen = torch.Generator().manual_seed(seed)

    def split(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(2).repeat_interleave(k)
        X = 0.5 * torch.randn(2 * k, 2, generator=gen, dtype=torch.float64) + 4.0 * y[:, None] - 2
        return X, y

    X, y = split(n_per_class)
    Xt, yt = split(n_test_per_class)
    return Dataset("blobs", X, y, Xt, yt, class_names=["a", "b"])


def _three_blobs() -> Dataset:
    """Three classes on a line, 6 training points each."""
    gen = torch.Generator().manual_seed(1)
    y = torch.arange(3).repeat_interleave(6)
    X = 0.3 * torch.randn(18, 2, generator=gen, dtype=torch.float64) + 3.0 * y[:, None]
    return Dataset("three", X, y, X[::3].clone(), y[::3].clone(), class_names=["a", "b", "c"])


def _lr(data: Dataset) -> torch.nn.Module:
    return iw.models.logistic_regression((2, data.n_classes))


def _fitted_influence(X: torch.Tensor, y: torch.Tensor) -> iw.Influence:
    model = iw.models.logistic_regression((2, 2))
    iw.train(model, (X, y), l2=L2, progress=False)
    return iw.Influence(model, (X, y), l2=L2, progress=False)


def test_a_planted_flip_ranks_first_by_self_influence(untouched):
    data = _blobs(10)
    y = data.y_train.clone()
    y[3] = 1  # a point deep in class 0's blob, labelled 1
    inf = _fitted_influence(data.X_train, y)
    with untouched(inf.objective.module, data.X_train, y):
        order = iw.review_order(inf, "self_influence")
        by_loss = iw.review_order(inf, "loss")
    assert order[0] == 3 and by_loss[0] == 3
    assert sorted(order.tolist()) == list(range(20))
    # the ranking is by |I_up,loss(z_i, z_i)|, largest first
    magnitude = inf.self_influence().abs()
    assert torch.all(magnitude[order][:-1] >= magnitude[order][1:])


def test_random_order_is_a_seeded_permutation():
    inf = _fitted_influence(_blobs(10).X_train, _blobs(10).y_train)
    a, b = iw.review_order(inf, "random", seed=3), iw.review_order(inf, "random", seed=3)
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(20))
    assert not torch.equal(a, iw.review_order(inf, "random", seed=4))


def test_recovery_bookkeeping_on_a_ranking_we_control(monkeypatch):
    """10 points, 2 flips; the ranking puts one flip first and the other sixth."""
    data = _blobs(5)
    noisy, flipped = mislabel.flip_labels(data.y_train, 2, 0.2, None, seed=0)
    assert len(flipped) == 2
    first, second = flipped.tolist()
    clean = [i for i in range(10) if i not in (first, second)]
    order = torch.tensor([first, *clean[:4], second, *clean[4:]])
    calls = []

    def fake_order(influence, method="self_influence", seed=0):
        calls.append(method)
        return order

    monkeypatch.setattr(mislabel, "review_order", fake_order)
    result = iw.mislabel_recovery(
        _lr, data, flip_fraction=0.2, checked_fractions=(0.1, 0.2, 0.5, 0.6), methods=("loss",)
    )
    assert calls == ["loss"] and result.n_flipped == {0: 2}
    found = [r["flips_found_fraction"] for r in result.rows()]
    assert found == [0.5, 0.5, 0.5, 1.0]  # checked 1, 2, 5 points: one flip; 6 points: both
    # AUC by hand: the first flip is above all 8 clean points, the second above 4 of them
    assert result.auc[("loss", 0)] == pytest.approx((8 + 4) / 16)

    def accuracy_fixing(idx: list[int]) -> float:
        y = noisy.clone()
        y[idx] = data.y_train[idx]
        model = _lr(data)
        iw.train(model, (data.X_train, y), l2=L2, progress=False)
        return mislabel.accuracy(model, data.X_test, data.y_test)

    accuracies = [r["test_accuracy"] for r in result.rows()]
    assert accuracies[:3] == [pytest.approx(accuracy_fixing([first]))] * 3
    assert accuracies[3] == pytest.approx(accuracy_fixing([first, second]))
    assert result.rows()[0] == {
        "dataset": "blobs",
        "noise": "uniform",
        "method": "loss",
        "checked_fraction": 0.1,
        "flips_found_fraction": 0.5,
        "test_accuracy": accuracies[0],
        "seed": 0,
    }


def test_uniform_flips_change_every_flipped_label_and_nothing_else():
    y = torch.arange(3).repeat(10)
    noisy, flipped = mislabel.flip_labels(y, 3, 0.2, None, seed=5)
    assert len(flipped) == 6
    changed = torch.nonzero(noisy != y).squeeze(1)
    assert torch.equal(changed, flipped)
    # the flips are not the start of review_order's "random" permutation with the same seed
    assert not torch.equal(
        torch.sort(torch.randperm(30, generator=torch.Generator().manual_seed(5))[:6]).values,
        flipped,
    )


def test_systematic_noise_flips_only_the_source_class(untouched):
    data = _three_blobs()
    noisy, flipped = mislabel.flip_labels(data.y_train, 3, 0.5, (1, 2), seed=0)
    assert len(flipped) == 3  # half of class 1's six points
    assert torch.all(data.y_train[flipped] == 1) and torch.all(noisy[flipped] == 2)
    others = torch.ones(18, dtype=torch.bool)
    others[flipped] = False
    assert torch.equal(noisy[others], data.y_train[others])
    with untouched(data):
        result = iw.mislabel_recovery(
            lambda d: iw.models.logistic_regression((2, 3)),
            data,
            flip_fraction=0.5,
            noise=("systematic", 1, 2),
            checked_fractions=(0.5,),
            seeds=(0, 1),
        )
    assert result.noise == "systematic b->c" and result.n_flipped == {0: 3, 1: 3}
    assert {r["seed"] for r in result.rows()} == {0, 1} and len(result.rows()) == 2 * 3


def test_recovery_leaves_the_data_untouched_and_plots_two_panels(untouched):
    data = _blobs(10)
    with untouched(data):
        result = iw.mislabel_recovery(_lr, data, checked_fractions=(0.1, 0.3), seeds=(0,))
    assert result.clean_accuracy == 1.0
    assert len(result.rows()) == 3 * 2
    assert set(result.auc) == {("self_influence", 0), ("loss", 0), ("random", 0)}
    fig = result.plot()
    found_ax, acc_ax = fig.axes
    assert [line.get_label() for line in found_ax.get_lines()] == [
        "self-influence",
        "loss",
        "random",
    ]
    assert list(found_ax.get_lines()[0].get_xdata()) == [0.0, 0.1, 0.3]
    dashed = [line for line in acc_ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_ydata()) == [1.0, 1.0]
    fig.savefig(io.BytesIO(), format="png")


# ----- bad inputs: (id, callable, exception, regex naming the argument) ------------------------
def _recovery(**options):
    def call():
        iw.mislabel_recovery(_lr, _blobs(5), **options)

    return call


def _order(**options):
    def call():
        data = _blobs(5)
        iw.review_order(_fitted_influence(data.X_train, data.y_train), **options)

    return call


BAD_INPUTS = [
    ("order-method", _order(method="margin"), ValueError, r"^method: expected one of"),
    ("order-influence", lambda: iw.review_order("inf"), TypeError, r"^influence: expected"),
    ("model_fn", lambda: iw.mislabel_recovery(3, _blobs(5)), TypeError, r"^model_fn: expected"),
    ("data", lambda: iw.mislabel_recovery(_lr, (1, 2)), TypeError, r"^data: expected"),
    ("flip_fraction", _recovery(flip_fraction=1.5), ValueError, r"^flip_fraction: expected"),
    ("flip-none", _recovery(flip_fraction=0.01), ValueError, r"^flip_fraction: .* flips none"),
    ("noise-name", _recovery(noise="gaussian"), ValueError, r"^noise: expected 'uniform'"),
    ("noise-class", _recovery(noise=("systematic", 0, 5)), ValueError, r"^noise: expected"),
    ("checked", _recovery(checked_fractions=(0.1, 0)), ValueError, r"^checked_fractions: "),
    ("methods", _recovery(methods=("loss", "margin")), ValueError, r"^methods: expected one"),
    ("methods-empty", _recovery(methods=()), ValueError, r"^methods: give at least one"),
    ("seeds-empty", _recovery(seeds=()), ValueError, r"^seeds: give at least one"),
    ("seeds-float", _recovery(seeds=(0.5,)), TypeError, r"^seeds: expected an integer"),
    ("seeds-negative", _recovery(seeds=(-1,)), ValueError, r"^seeds: expected an integer"),
    ("order-seed-float", _order(method="random", seed=1.5), TypeError, r"^seed: expected"),
    ("order-seed-huge", _order(method="random", seed=2**70), ValueError, r"^seed: expected"),
    ("order-seed-str", _order(method="random", seed="abc"), TypeError, r"^seed: expected"),
    ("order-seed-bool", _order(method="random", seed=True), TypeError, r"^seed: expected"),
]


@pytest.mark.parametrize(
    ("call", "exc", "pattern"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_names_the_argument(call, exc, pattern):
    with pytest.raises(exc) as info:
        call()
    assert re.search(pattern, str(info.value)), str(info.value)


def test_review_order_takes_numpy_and_the_largest_seeds():
    import numpy as np

    inf = _fitted_influence(_blobs(10).X_train, _blobs(10).y_train)
    same = iw.review_order(inf, "random", seed=np.int64(3))
    assert torch.equal(same, iw.review_order(inf, "random", seed=3))
    assert sorted(iw.review_order(inf, "random", seed=2**64 - 1).tolist()) == list(range(20))


def test_recovery_takes_one_checked_fraction_one_method_and_one_seed():
    data = _blobs(5)
    one = iw.mislabel_recovery(_lr, data, checked_fractions=0.5, methods="loss", seeds=0)
    assert one.checked_fractions == (0.5,) and one.methods == ("loss",) and one.seeds == (0,)
    assert len(one.rows()) == 1
