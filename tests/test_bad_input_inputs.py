"""Bad and unusual inputs to ``Influence`` and ``iw.train``: models, losses, devices, training sets.

Each bad-input case raises a TypeError/ValueError whose message starts with the argument's name
(``loss``, ``device``, ``model``, ``train``/``data``, ``x_test``) and says the fix:

- loss_mean_reduced: a ``loss`` that returns one number (a mean), for ``Influence`` and for
  ``iw.train`` (the ``_train`` twin), and loss_mean_reduced_one_point, for a training set of one
  point (a mean of one row has shape () where one loss per sample has (1,));
- loss_per_output (and _train): a ``loss`` that returns (B, C) instead of (B,);
- loss_not_a_tensor: a ``loss`` that returns a float;
- device_cuda_without_cuda: ``device="cuda"`` on a torch build without CUDA (skipped with CUDA);
- device_cuda_index: ``device="cuda:999"`` (no CUDA, or not that many GPUs);
- device_meta: ``device="meta"``; model_on_meta: a model whose parameters are on the meta device;
- device_mps_unavailable: a device type this build cannot use (skipped where MPS works);
- x_1d (and _train), x_1d_test: X of shape (n,) for a ``Linear(1, C)`` model, once blamed on the
  labels, as training inputs and as ``x_test``;
- dataset_dict_items (and _train), dataset_tensor_items, dataset_1_tuple_items: a torch
  ``Dataset`` whose items are not ``(x, y)`` or ``(x, y, ...)``;
- model_returns_tuple (and _train), model_returns_dict: a ``forward`` that returns a tuple or a
  dict, with the wrapper to write; raised when the object is built, not inside vmap.

Accepted, and tested to give the same numbers (with the user's objects untouched): a ``Dataset``
of ``(x, y, index)`` items, a ``Dataset`` of vector targets for ``mse``, an ``iw.datasets``
Dataset as ``Influence(model, data)``, and a BatchNorm/Dropout model left in train mode (evaluated
in eval mode with one ``InfluenceWarning``, its modes left as they were, by ``iw.train`` too).
``Influence`` and ``iw.train`` give the same message for the same bad ``params`` or ``loss``.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import influence_widgets as iw

N, D, C, L2 = 12, 3, 3, 0.1


def blobs(n: int = N, d: int = D) -> tuple[torch.Tensor, torch.Tensor]:
    """X (n, d) float64 and labels y (n,) covering all C classes."""
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, d, dtype=torch.float64, generator=gen), torch.arange(n) % C


def linear(d: int = D) -> nn.Linear:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Linear(d, C, dtype=torch.float64)


def influence(model: nn.Module, train, **kwargs) -> iw.Influence:
    return iw.Influence(model, train, **{"l2": L2, "progress": False, **kwargs})


def train(model: nn.Module, data, **kwargs) -> iw.TrainingReport:
    return iw.train(model, data, **{"l2": L2, "progress": False, "max_iter": 5, **kwargs})


class Items(torch.utils.data.Dataset):
    """A map-style Dataset whose item i is ``make(X[i], y[i], i)``."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, make) -> None:
        self.X, self.y, self.make = X, y, make

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, i: int):
        return self.make(self.X[i], self.y[i], i)


class Returns(nn.Module):
    """A linear model whose forward wraps its logits with ``wrap`` (a tuple, a dict)."""

    def __init__(self, wrap) -> None:
        super().__init__()
        self.linear = linear()
        self.wrap = wrap

    def forward(self, x: torch.Tensor):
        return self.wrap(self.linear(x))


def mean_loss(output, target):
    return F.cross_entropy(output, target)


def per_output_loss(output, target):
    return (output - F.one_hot(target, C).to(output.dtype)).pow(2)


no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this torch build has CUDA")
no_mps = pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS is available here")
MEAN = r"^loss: must return one loss per sample, shape \(B,\).*got shape \(\).*reduction='none'"
PER_OUTPUT = r"^loss: must return one loss per sample, shape \(B,\).*got shape \(2, 3\)"
ONE_FEATURE = r"has shape \(12,\), one number per sample.*shape \(n, d\): reshape with X\[:, None\]"
ITEMS = r"each item of the Dataset must be \(x, y\) or \(x, y, \.\.\.\)"
DICT = r", got a dict.*wrap it.*\(item\['x'\], item\['y'\]\)"
WRAP = (
    r"(?s)^model: forward must return a tensor.*got a {kind}.*class Logits.*return self.model\(x\)"
)


def case(case_id: str, call, error: type[Exception], match: str, marks=()):
    """One bad-input case: ``call(X, y)`` on fresh data raises ``error`` with a message matching
    ``match``, which names the argument."""
    return pytest.param(call, error, match, id=case_id, marks=marks)


def for_both(case_id: str, call, error: type[Exception], match: str) -> list:
    """The case for ``Influence`` and for ``iw.train``: ``call(build, X, y)`` with ``build`` each
    of them; ``{name}`` in ``match`` is the training set's name there (train, data)."""
    return [
        case(case_id, lambda X, y: call(influence, X, y), error, match.format(name="train")),
        case(f"{case_id}_train", lambda X, y: call(train, X, y), error, match.format(name="data")),
    ]


def dict_items(X: torch.Tensor, y: torch.Tensor) -> Items:
    return Items(X, y, lambda x, t, i: {"x": x, "y": t})


CASES = [
    *for_both(
        "loss_mean_reduced", lambda b, X, y: b(linear(), (X, y), loss=mean_loss), ValueError, MEAN
    ),
    *for_both(
        "loss_per_output",
        lambda b, X, y: b(linear(), (X, y), loss=per_output_loss),
        ValueError,
        PER_OUTPUT,
    ),
    *for_both(
        "x_1d",
        lambda b, X, y: b(linear(1), (X[:, 0], y)),
        ValueError,
        r"^{name}\[0\] \(X\): " + ONE_FEATURE,
    ),
    *for_both(
        "dataset_dict_items",
        lambda b, X, y: b(linear(), dict_items(X, y)),
        TypeError,
        r"^{name}: " + ITEMS + DICT,
    ),
    *for_both(
        "model_returns_tuple",
        lambda b, X, y: b(Returns(lambda out: (out, out.sum())), (X, y)),
        TypeError,
        WRAP.format(kind="tuple") + r"\[0\]",
    ),
    case(
        "loss_mean_reduced_one_point",
        lambda X, y: influence(linear(), (X[:1], y[:1]), loss=mean_loss),
        ValueError,
        r"^loss: .*shape \(B,\) = \(1,\).*got shape \(\)",
    ),
    case(
        "loss_not_a_tensor",
        lambda X, y: influence(linear(), (X, y), loss=lambda out, t: 1.0),
        TypeError,
        r"^loss: must return a tensor of per-sample losses",
    ),
    case(
        "device_cuda_without_cuda",
        lambda X, y: influence(linear(), (X, y), device="cuda"),
        ValueError,
        r"^device: 'cuda', but .*no CUDA.*device='cpu'",
        marks=no_cuda,
    ),
    case(
        "device_cuda_index",
        lambda X, y: influence(linear(), (X, y), device="cuda:999"),
        ValueError,
        r"^device: 'cuda:999', but .*(no CUDA|only \d+ CUDA GPU)",
    ),
    case(
        "device_meta",
        lambda X, y: influence(linear(), (X, y), device="meta"),
        ValueError,
        r"^device: device='meta' holds no data; use 'cpu' or 'cuda'",
    ),
    case(
        "model_on_meta",
        lambda X, y: influence(nn.Linear(D, C, device="meta"), (X, y)),
        ValueError,
        r"^model: its parameters are on the 'meta' device.*load_state_dict",
    ),
    case(
        "device_mps_unavailable",
        lambda X, y: influence(linear(), (X, y), device="mps"),
        ValueError,
        r"^device: this torch build cannot use 'mps'.*device='cpu'",
        marks=no_mps,
    ),
    case(
        "x_1d_test",
        lambda X, y: influence(linear(1), (X[:, :1], y)).test_gradients(X[:, 0], y),
        ValueError,
        r"^x_test: " + ONE_FEATURE,
    ),
    case(
        "dataset_tensor_items",
        lambda X, y: influence(linear(), Items(X, y, lambda x, t, i: x)),
        TypeError,
        r"^train: " + ITEMS + r", got a Tensor",
    ),
    case(
        "dataset_1_tuple_items",
        lambda X, y: influence(linear(), Items(X, y, lambda x, t, i: (x,))),
        TypeError,
        r"^train: " + ITEMS + r", got a tuple of length 1",
    ),
    case(
        "model_returns_dict",
        lambda X, y: influence(Returns(lambda out: {"logits": out}), (X, y)),
        TypeError,
        WRAP.format(kind="dict") + r"\['logits'\]",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), CASES)
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call(*blobs())


# --- the same message from Influence and iw.train


@pytest.mark.parametrize(
    "kwargs",
    [
        {"params": ["nope"]},
        {"params": [5]},
        {"params": []},
        {"loss": mean_loss},
        {"loss": per_output_loss},
        {"loss": "hinge"},
    ],
    ids=["unknown_param", "param_not_a_name", "no_params", "mean_loss", "per_output", "loss_name"],
)
def test_influence_and_train_say_the_same(kwargs):
    X, y = blobs()
    with pytest.raises((TypeError, ValueError)) as by_influence:
        influence(linear(), (X, y), **kwargs)
    with pytest.raises((TypeError, ValueError)) as by_train:
        train(linear(), (X, y), **kwargs)
    assert type(by_influence.value) is type(by_train.value)
    assert str(by_influence.value) == str(by_train.value)


def test_a_model_without_trainable_parameters_is_named_alike():
    X, y = blobs()
    model = linear().requires_grad_(False)
    messages = []
    for build in (influence, train):
        with pytest.raises(ValueError, match=r"^model: has no trainable parameters") as info:
            build(model, (X, y))
        messages.append(str(info.value))
    assert messages[0] == messages[1]


# --- accepted inputs: same numbers, nothing of the user's changed


def trained_linear(X: torch.Tensor, y: torch.Tensor) -> nn.Linear:
    model = linear(X.shape[1])
    iw.train(model, (X, y), l2=L2, progress=False)
    return model


def test_a_dataset_of_triples_gives_the_numbers_of_the_pair(untouched):
    X, y = blobs()
    model = trained_linear(X, y)
    triples = Items(X, y, lambda x, t, i: (x, t, i))
    expected = influence(model, (X, y)).influence_on_loss(X[:2], y[:2])
    with untouched(model, X, y):
        inf = influence(model, triples).fit()
        got = inf.influence_on_loss(X[:2], y[:2])
    torch.testing.assert_close(got, expected)


def test_a_dataset_of_vector_targets_works_with_mse(untouched):
    X, _ = blobs()
    Y = X @ torch.ones(D, C, dtype=torch.float64) + 0.1 * X.flip(1)[:, :C]
    model = linear()
    iw.train(model, (X, Y), l2=L2, loss="mse", progress=False)
    expected = influence(model, (X, Y), loss="mse").self_influence()
    with untouched(model, X, Y):
        got = influence(model, Items(X, Y, lambda x, t, i: (x, t)), loss="mse").self_influence()
    torch.testing.assert_close(got, expected)


def iw_dataset(X: torch.Tensor, y: torch.Tensor) -> iw.datasets.Dataset:
    return iw.datasets.Dataset(
        name="blobs",
        X_train=X,
        y_train=y,
        X_test=X[:3],
        y_test=y[:3],
        class_names=[f"c{k}" for k in range(C)],
    )


def test_an_iw_dataset_is_its_training_split(untouched):
    X, y = blobs()
    model = trained_linear(X, y)
    data = iw_dataset(X, y)
    expected = influence(model, (data.X_train, data.y_train)).influence_on_loss(X[:2], y[:2])
    with untouched(model, data):
        got = iw.Influence(model, data, l2=L2, progress=False).influence_on_loss(X[:2], y[:2])
    torch.testing.assert_close(got, expected)


def test_an_iw_dataset_names_its_fields_in_errors():
    X, y = blobs()
    bad = X.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"^train\.X_train: contains 1 NaN"):
        influence(linear(), iw_dataset(bad, y))


# --- models with BatchNorm or Dropout left in train mode


def batchnorm_mlp() -> nn.Sequential:
    """Linear, BatchNorm1d, Tanh, Dropout, Linear in float64, in train mode, with running
    statistics that differ from any batch's (a few forward passes on shifted data)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = nn.Sequential(
            nn.Linear(D, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Dropout(0.3), nn.Linear(4, C)
        ).double()
        with torch.no_grad():
            for _ in range(3):
                model(torch.randn(8, D, dtype=torch.float64) + 1.0)
    return model.train()


def module_state(model: nn.Module) -> tuple:
    """The model's state_dict values, every module's train flag and requires_grad, comparable."""
    return (
        tuple((k, tuple(v.reshape(-1).tolist())) for k, v in model.state_dict().items()),
        tuple((name, m.training) for name, m in model.named_modules()),
        tuple((name, p.requires_grad) for name, p in model.named_parameters()),
    )


def mode_warnings(caught) -> list[warnings.WarningMessage]:
    """The warnings about modules left in train mode among ``caught``."""
    return [
        w
        for w in caught
        if issubclass(w.category, iw.InfluenceWarning) and "train mode" in str(w.message)
    ]


def test_train_mode_model_is_evaluated_in_eval_mode_with_one_warning(untouched):
    X, y = blobs()
    model = batchnorm_mlp()
    with pytest.warns(iw.InfluenceWarning, match="train mode"):
        iw.train(model, (X, y), l2=L2, progress=False)
    assert model.training and model[1].training and model[3].training
    reference = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", iw.InfluenceWarning)  # eval mode and at a minimum: silent
        expected = influence(reference, (X, y)).influence_on_loss(X[:2], y[:2])

    # untouched() cannot digest BatchNorm's 0-dim num_batches_tracked yet: the model is checked
    # by its own digest, the data by untouched()
    model_before = module_state(model)
    with untouched(X, y), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inf = influence(model, (X, y)).fit()
        got = inf.influence_on_loss(X[:2], y[:2])
        inf.self_influence()
    [warning] = mode_warnings(caught)
    message = str(warning.message)
    assert message.startswith("model: is in train mode")
    assert "1 (BatchNorm1d), 3 (Dropout)" in message
    assert "Influence is computed in eval mode" in message
    assert warning.filename == __file__  # points at the Influence(...) call, not the package
    assert module_state(model) == model_before
    torch.testing.assert_close(got, expected)


def test_a_model_in_eval_mode_or_without_such_modules_does_not_warn():
    X, y = blobs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        influence(batchnorm_mlp().eval(), (X, y))
        influence(linear().train(), (X, y))
        model = batchnorm_mlp()
        model[1].track_running_stats = False  # batch statistics in both modes
        model[3].p = 0.0
        influence(model, (X, y))
        train(batchnorm_mlp().eval(), (X, y))
    assert mode_warnings(caught) == []


def test_train_warns_and_restores_each_modules_mode():
    X, y = blobs()
    model = batchnorm_mlp()
    model[1].eval()  # the user froze BatchNorm's statistics, the rest in train mode
    before = [(name, m.training) for name, m in model.named_modules()]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(model, (X, y))
    [warning] = mode_warnings(caught)
    message = str(warning.message)
    assert "eval mode: 3 (Dropout). iw.train" in message  # not the BatchNorm in eval mode
    assert "iw.train fits it in eval mode" in message
    assert warning.filename == __file__
    assert [(name, m.training) for name, m in model.named_modules()] == before
    for k, v in model.named_buffers():  # fitted in eval mode: running statistics unchanged
        torch.testing.assert_close(v, buffers[k])


def test_train_keeps_the_users_gradients():
    X, y = blobs()
    model = linear()
    model(X).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    train(model, (X, y))
    for p, g in zip(model.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, g)
