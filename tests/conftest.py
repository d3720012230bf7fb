"""Tiny float64 problems and an independent brute-force reference for every quantity.

The reference writes each model as a pure function of a flat parameter vector (no package code),
builds the explicit Hessian of R with ``torch.func.hessian`` and solves with ``torch.linalg.solve``.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import hessian, jacrev, vmap

import influence_widgets as iw


@dataclass
class Problem:
    name: str
    model: nn.Module
    X: torch.Tensor
    y: torch.Tensor
    Xt: torch.Tensor
    yt: torch.Tensor
    l2: float
    forward: object  # (theta, x) -> logits, for the selected parameters theta
    theta: torch.Tensor  # selected parameters at theta_hat, flat
    params: list[str] | None = None


def _blobs(n: int, d: int, c: int, seed: int, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    centers = 2.0 * torch.randn(c, d, generator=gen, dtype=torch.float64)
    y = torch.arange(n) % c
    X = centers[y] + torch.randn(n, d, generator=gen, dtype=torch.float64)
    return X.to(dtype), y


def make_lr(dtype=torch.float64, bias: bool = True) -> Problem:
    X, y = _blobs(36, 4, 3, seed=1, dtype=dtype)
    Xt, yt = _blobs(6, 4, 3, seed=2, dtype=dtype)
    model = nn.Linear(4, 3, bias=bias, dtype=dtype)
    iw.train(model, (X, y), l2=0.05, progress=False)

    def forward(theta, x):
        W = theta[:12].reshape(3, 4)
        out = x @ W.T
        return out + theta[12:15] if bias else out

    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return Problem("lr", model, X, y, Xt, yt, 0.05, forward, theta)


def make_mlp(top_only: bool = False) -> Problem:
    X, y = _blobs(40, 4, 3, seed=3)
    Xt, yt = _blobs(6, 4, 3, seed=4)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 5, dtype=torch.float64), nn.Tanh(), nn.Linear(5, 3, dtype=torch.float64)
    )
    iw.train(model, (X, y), l2=0.05, progress=False)
    W1, b1 = model[0].weight.detach(), model[0].bias.detach()

    if top_only:

        def forward(theta, x):
            W2, b2 = theta[:15].reshape(3, 5), theta[15:18]
            return torch.tanh(x @ W1.T + b1) @ W2.T + b2

        theta = torch.cat([model[2].weight.detach().reshape(-1), model[2].bias.detach()])
        params = ["2.weight", "2.bias"]
    else:

        def forward(theta, x):
            W1_, b1_ = theta[:20].reshape(5, 4), theta[20:25]
            W2, b2 = theta[25:40].reshape(3, 5), theta[40:43]
            return torch.tanh(x @ W1_.T + b1_) @ W2.T + b2

        theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        params = None
    name = "mlp_top" if top_only else "mlp"
    return Problem(name, model, X, y, Xt, yt, 0.05, forward, theta, params)


@dataclass
class Reference:
    H: torch.Tensor  # Hessian of R plus damping
    G: torch.Tensor  # training gradients with the L2 term, (n, p)
    Gt: torch.Tensor  # test gradients without it, (T, p)

    def inv(self, B: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve(self.H, B)

    @property
    def influence_on_params(self) -> torch.Tensor:
        return -self.inv(self.G.T).T

    @property
    def influence_on_loss(self) -> torch.Tensor:
        return -self.Gt @ self.inv(self.G.T)

    @property
    def self_influence(self) -> torch.Tensor:
        return -(self.G * self.inv(self.G.T).T).sum(1)


def reference(pb: Problem, damping: float = 0.0, loss=None) -> Reference:
    loss = loss or (lambda out, y: torch.nn.functional.cross_entropy(out, y, reduction="none"))

    def risk(theta):
        return loss(pb.forward(theta, pb.X), pb.y).mean() + 0.5 * pb.l2 * theta.dot(theta)

    def train_term(theta, x, y):
        return loss(pb.forward(theta, x[None]), y[None])[0] + 0.5 * pb.l2 * theta.dot(theta)

    def test_loss(theta, x, y):
        return loss(pb.forward(theta, x[None]), y[None])[0]

    H = hessian(risk)(pb.theta) + damping * torch.eye(len(pb.theta), dtype=pb.theta.dtype)
    G = vmap(jacrev(train_term), in_dims=(None, 0, 0))(pb.theta, pb.X, pb.y)
    Gt = vmap(jacrev(test_loss), in_dims=(None, 0, 0))(pb.theta, pb.Xt, pb.yt)
    return Reference(H, G, Gt)


@pytest.fixture(scope="session")
def lr_problem() -> Problem:
    return make_lr()


@pytest.fixture(scope="session")
def mlp_problem() -> Problem:
    return make_mlp()


@pytest.fixture(scope="session")
def mlp_top_problem() -> Problem:
    return make_mlp(top_only=True)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ----- the user's state, before and after a public call --------------------------------------
def _digest_tensor(t: torch.Tensor) -> tuple:
    data = t.detach().cpu().contiguous()
    raw = data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b""
    return (
        "tensor",
        str(t.dtype),
        tuple(t.shape),
        t.requires_grad,
        hashlib.sha256(raw).hexdigest(),
    )


def state_digest(obj) -> object:
    """A comparable digest of everything a user owns in ``obj``: tensor and array contents, dtypes,
    shapes and ``requires_grad``; a module's state_dict, every submodule's train/eval flag and every
    parameter's ``requires_grad``; the fields of an ``iw.datasets`` Dataset; containers recursively."""
    if isinstance(obj, torch.Tensor):
        return _digest_tensor(obj)
    if isinstance(obj, np.ndarray):
        return ("array", str(obj.dtype), obj.shape, hashlib.sha256(obj.tobytes()).hexdigest())
    if isinstance(obj, nn.Module):
        return (
            "module",
            tuple((k, _digest_tensor(v)) for k, v in obj.state_dict(keep_vars=True).items()),
            tuple((name, m.training) for name, m in obj.named_modules()),
            tuple((name, p.requires_grad, p.grad is None) for name, p in obj.named_parameters()),
        )
    if isinstance(obj, iw.datasets.Dataset):
        return ("dataset", state_digest(vars(obj)))
    if isinstance(obj, dict):
        return ("dict", tuple((k, state_digest(v)) for k, v in obj.items()))
    if isinstance(obj, list | tuple):
        return (type(obj).__name__, tuple(state_digest(v) for v in obj))
    return ("value", repr(obj))


@pytest.fixture
def untouched():
    """``with untouched(model, X, y, ...):`` fails the test if the block changes any of them
    (contents, dtype, shape, requires_grad, train/eval flags: see :func:`state_digest`)."""

    @contextlib.contextmanager
    def guard(*objects):
        before = [state_digest(o) for o in objects]
        yield
        for i, (obj, digest) in enumerate(zip(objects, before, strict=True)):
            assert state_digest(obj) == digest, (
                f"argument {i} ({type(obj).__name__}) was modified by the call"
            )

    return guard


# ----- Fashion-MNIST: skipped without the data, failed when CI requires it --------------------
REQUIRE_FASHION_MNIST = "IW_REQUIRE_FASHION_MNIST"


def fashion_mnist_unavailable() -> str | None:
    """None when ``iw.datasets.fashion_mnist()`` can load its files (found on disk, or downloaded
    into the user cache now); else the loader's message: where it looked and how to get them."""
    from influence_widgets.fashion_mnist_files import locate

    try:
        locate(progress=False)
    except (FileNotFoundError, RuntimeError) as err:
        return str(err)
    return None


def require_fashion_mnist(unavailable: str | None) -> None:
    """Skip the test when ``unavailable`` says why the data cannot be had; fail it instead when
    ``IW_REQUIRE_FASHION_MNIST=1`` (CI, which installs the data)."""
    import os

    if unavailable is None:
        return
    if os.environ.get(REQUIRE_FASHION_MNIST) == "1":
        pytest.fail(
            f"needs Fashion-MNIST ({REQUIRE_FASHION_MNIST}=1 is set, so this is a failure): "
            f"{unavailable}",
            pytrace=False,
        )
    pytest.skip(
        f"needs Fashion-MNIST (set {REQUIRE_FASHION_MNIST}=1 to fail instead of skipping): "
        f"{unavailable}"
    )


_FASHION_MNIST_UNAVAILABLE = pytest.StashKey[str | None]()  # asked once per session


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "fashion_mnist: needs the Fashion-MNIST files (skipped without them, with how to get them; "
        f"failed instead when {REQUIRE_FASHION_MNIST}=1)",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``fashion_mnist`` skip (or fail) before their fixtures without the data."""
    if item.get_closest_marker("fashion_mnist") is None:
        return
    stash = item.config.stash
    if _FASHION_MNIST_UNAVAILABLE not in stash:
        stash[_FASHION_MNIST_UNAVAILABLE] = fashion_mnist_unavailable()
    require_fashion_mnist(stash[_FASHION_MNIST_UNAVAILABLE])


@pytest.fixture(scope="module")
def digits_influence():
    """(data, Influence) of a logistic regression trained on the digits demo set (l2 = 0.01), as
    the explorer tests use it; one per test module."""
    data = iw.datasets.digits()
    model = iw.models.logistic_regression(data)
    iw.train(model, data, l2=0.01, progress=False)
    return data, iw.Influence(model, (data.X_train, data.y_train), l2=0.01, progress=False)


def make_regression_influence() -> tuple[iw.Influence, torch.Tensor]:
    """(Influence, X) of a float64 least-squares model at a minimum (20 points, 3 features): a
    loss with no classes, so y_test=None has no predicted class to explain."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    y = X.sum(1, keepdim=True)
    model = torch.nn.Linear(3, 1, dtype=torch.float64)
    iw.train(model, (X, y), loss="mse", l2=0.1, progress=False)
    return iw.Influence(model, (X, y), loss="mse", l2=0.1, progress=False), X
