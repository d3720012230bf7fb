"""The models and training regimes of benchmarks/lds.py, and the checkpoints TracIn and TRAK use.

Models (seeded, float64, inputs in [0, 1]): ``digits_lr`` (10-class logistic regression, 650
parameters, 1,300 training points), ``digits_mlp`` (64-64-10 ReLU, 4,810 parameters),
``fmnist_mlp`` (784-128-10 ReLU on 5,000 / 500 Fashion-MNIST images, 101,770 parameters: the size
of dattri's MNIST-10 setting) and ``digits_cnn`` (``iw.models.small_cnn``, 1,954 parameters).
Regimes, each also the retraining recipe of the LDS subsets (from scratch: the modules'
``reset_parameters()`` under the subset's seed):

- ``minimum``: ``iw.train`` (full-batch L-BFGS) to ||grad R|| <= 1e-8 or ``max_iter`` iterations
  with l2 = 1e-2; Influence with l2 = 1e-2.
- ``practitioner``: Adam, lr 1e-3, weight decay 1e-4 (torch's coupled decay: the gradient of
  (1e-4 / 2)||theta||^2), ``epochs`` epochs of shuffled batches of 64 (the shuffle seeded by the
  retrain's seed); Influence with l2 = 1e-4 at a point that is not a minimum.

Checkpoints (:func:`tracin_checkpoints`): in the practitioner regime the parameters at the end of
every epoch of the model's own training (10 epochs: 10 checkpoints, the last the model), each
weighted by Adam's learning rate; in the minimum regime a replay of the model's L-BFGS from the
same initialisation, stopped after 10, 20, 40 and 80 iterations (L-BFGS restarted at each stop),
plus the trained model itself: 5 checkpoints, weight 1 (L-BFGS has no learning rate). TRAK's
models (:func:`half_models`): K models trained with the regime's recipe on random halves of the
training set (dattri's benchmark trains TRAK's models on halves), drawn apart from the LDS subsets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

import influence_widgets as iw
from influence_widgets.analysis.lds import TrainFromScratch, reinitialise

DTYPE = torch.float64
MIN_L2 = 1e-2
ADAM = {"lr": 1e-3, "weight_decay": 1e-4, "batch_size": 64}
LBFGS_STOPS = (10, 20, 40, 80)  # the minimum regime's TracIn checkpoints, in L-BFGS iterations
REGIMES = ("minimum", "practitioner")


@dataclass
class Case:
    """A model (fresh from ``make()``, seeded) and its data: training (X, y), test (x, y)."""

    name: str
    make: Callable[[], torch.nn.Module]
    X: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def n_params(self) -> int:
        """The number of trained parameters."""
        return sum(p.numel() for p in self.make().parameters() if p.requires_grad)


def _seeded(build: Callable[[], torch.nn.Module], seed: int = 0) -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


def _case(name: str, data, build, n_train: int | None, n_test: int) -> Case:
    X, y = data.X_train.to(DTYPE), data.y_train
    if n_train is not None:
        X, y = X[:n_train], y[:n_train]
    return Case(
        name, lambda: _seeded(build), X, y, data.X_test[:n_test].to(DTYPE), data.y_test[:n_test]
    )


def digits_lr(n_test: int, n_train: int | None = None) -> Case:
    """10-class logistic regression on the digits (64 -> 10 with bias, 650 parameters)."""
    return _case(
        "digits_lr",
        iw.datasets.digits(),
        lambda: torch.nn.Linear(64, 10, dtype=DTYPE),
        n_train,
        n_test,
    )


def digits_mlp(n_test: int, n_train: int | None = None) -> Case:
    """A 64-64-10 ReLU MLP on the digits (4,810 parameters)."""

    def build():
        return torch.nn.Sequential(
            torch.nn.Linear(64, 64, dtype=DTYPE),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 10, dtype=DTYPE),
        )

    return _case("digits_mlp", iw.datasets.digits(), build, n_train, n_test)


def fmnist_mlp(n_test: int, n_train: int | None = 5000) -> Case:
    """A 784-128-10 ReLU MLP on 5,000 Fashion-MNIST training images (101,770 parameters); at
    most the 500 test images of dattri's setting."""

    def build():
        return torch.nn.Sequential(
            torch.nn.Linear(784, 128, dtype=DTYPE),
            torch.nn.ReLU(),
            torch.nn.Linear(128, 10, dtype=DTYPE),
        )

    return _case("fmnist_mlp", iw.datasets.fashion_mnist(), build, n_train, min(n_test, 500))


def digits_cnn(n_test: int, n_train: int | None = None) -> Case:
    """``iw.models.small_cnn`` on the digits (tanh, 1,954 parameters)."""
    data = iw.datasets.digits()
    return _case("digits_cnn", data, lambda: iw.models.small_cnn(data), n_train, n_test)


CASES = {f.__name__: f for f in (digits_lr, digits_mlp, fmnist_mlp, digits_cnn)}


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's state dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass(frozen=True)
class AdamRecipe:
    """``train_fn(model_factory, X, y, seed)``: re-initialise under ``seed``, then ``epochs``
    epochs of Adam (lr, coupled weight decay) on batches shuffled by a generator seeded ``seed``."""

    epochs: int
    lr: float = ADAM["lr"]
    weight_decay: float = ADAM["weight_decay"]
    batch_size: int = ADAM["batch_size"]

    def __call__(self, model_factory, X, y, seed: int) -> torch.nn.Module:
        return self.trajectory(model_factory, X, y, seed)[0]

    def trajectory(
        self, model_factory, X, y, seed: int
    ) -> tuple[torch.nn.Module, list[dict[str, torch.Tensor]]]:
        """The trained model and its parameters at the end of every epoch."""
        model = reinitialise(model_factory(), seed)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(int(seed))
        loss_fn = torch.nn.CrossEntropyLoss()
        checkpoints = []
        model.train()
        for _ in range(self.epochs):
            for idx in torch.randperm(len(X), generator=gen).split(self.batch_size):
                opt.zero_grad()
                loss_fn(model(X[idx]), y[idx]).backward()
                opt.step()
            checkpoints.append(snapshot(model))
        model.eval()
        return model, checkpoints


def regime(name: str, epochs: int, max_iter: int) -> tuple[Callable, float, str]:
    """(train_fn, the l2 Influence uses, the recipe in words) of a training regime."""
    if name == "minimum":
        recipe = f"iw.train (L-BFGS) to ||grad R|| <= 1e-8 or {max_iter} iterations, l2 = 1e-2"
        return TrainFromScratch(MIN_L2, "cross_entropy", max_iter=max_iter), MIN_L2, recipe
    if name == "practitioner":
        recipe = (
            f"Adam lr {ADAM['lr']:g}, weight decay {ADAM['weight_decay']:g}, {epochs} "
            f"epochs, batches of {ADAM['batch_size']}"
        )
        return AdamRecipe(epochs), ADAM["weight_decay"], recipe
    raise ValueError(f"regime: expected one of {REGIMES}, got {name!r}")


def train_model(case: Case, train_fn: Callable) -> torch.nn.Module:
    """The model of a (case, regime): the regime's recipe on all n training points, seed 0."""
    return train_fn(case.make, case.X, case.y, 0)


def tracin_checkpoints(
    case: Case, train_fn: Callable, model: torch.nn.Module
) -> tuple[list[dict[str, torch.Tensor]], list[float], str]:
    """(checkpoints, their weights, in words) of the model's training, as the module says."""
    if isinstance(train_fn, AdamRecipe):
        _, checkpoints = train_fn.trajectory(case.make, case.X, case.y, 0)
        words = f"{len(checkpoints)} epoch ends of the model's Adam run, weight lr {train_fn.lr:g}"
        return checkpoints, [train_fn.lr] * len(checkpoints), words
    replay = reinitialise(case.make(), 0)
    checkpoints, done = [], 0
    for stop in LBFGS_STOPS:
        iw.train(replay, (case.X, case.y), l2=train_fn.l2, max_iter=stop - done, progress=False)
        checkpoints.append(snapshot(replay))
        done = stop
    checkpoints.append(snapshot(model))
    words = (
        f"L-BFGS replay stopped after {', '.join(map(str, LBFGS_STOPS))} iterations and the "
        "trained model, weight 1"
    )
    return checkpoints, [1.0] * len(checkpoints), words


def half_models(
    case: Case, train_fn: Callable, k: int, seed: int
) -> tuple[list[dict[str, torch.Tensor]], str]:
    """(state dicts of ``k`` models trained by ``train_fn`` on random halves, in words); half j
    from ``numpy.random.default_rng([seed, 1, j])``, a stream apart from the LDS subsets'."""
    n = len(case.X)
    states = []
    for j in range(k):
        rng = np.random.default_rng([seed, 1, j])
        idx = torch.as_tensor(np.sort(rng.choice(n, size=n // 2, replace=False)))
        train_seed = int(rng.integers(2**31))
        states.append(snapshot(train_fn(case.make, case.X[idx], case.y[idx], train_seed)))
    return states, f"{k} models trained by the regime's recipe on random halves"


def seed_models(
    case: Case, train_fn: Callable, k: int
) -> tuple[list[dict[str, torch.Tensor]], str]:
    """(state dicts of ``k`` models trained by ``train_fn`` on all training points with seeds
    0 .. k-1, in words): seed 0 is the model of the (case, regime) itself."""
    states = [snapshot(train_fn(case.make, case.X, case.y, seed)) for seed in range(k)]
    return states, f"{k} models trained by the regime's recipe on all points, seeds 0-{k - 1}"
