"""Input validation, error messages and the never-mutate guarantee of the influence engine.

Every problem is tiny (40 points, 5 features, 3 classes, float64): the file runs in seconds.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian

import influence_widgets as iw
from influence_widgets.core.influence import TrainingIndexError

N, D, C, L2 = 40, 5, 3, 0.1
TOP_LAYER = ["2.weight", "2.bias"]
SOLVERS = {
    "direct": lambda: "direct",
    "cg": lambda: "cg",
    "lissa": lambda: iw.LiSSA(depth=200),
    "arnoldi": lambda: iw.Arnoldi(rank=5),
}
NOT_AT_MINIMUM = "ignore::influence_widgets.InfluenceWarning"
DID_NOT_RAISE = pytest.fail.Exception  # what pytest.raises raises when nothing was raised


def tanh_mlp(seed: int, scale: float = 1.0) -> nn.Sequential:
    """nn.Sequential(Linear(5, 4), Tanh, Linear(4, 3)) in float64, weights scaled by ``scale``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(D, 4), nn.Tanh(), nn.Linear(4, C)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model


def make_influence(model, train, **kwargs) -> iw.Influence:
    """Influence with this file's defaults: l2 = L2, no progress bars."""
    return iw.Influence(model, train, **{"l2": L2, "progress": False, **kwargs})


def risk_hessian(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The exact Hessian of the mean cross-entropy (l2 = 0) over all parameters, (p, p)."""
    names, params = zip(*model.named_parameters(), strict=True)
    sizes = [p.numel() for p in params]
    theta = torch.cat([p.detach().reshape(-1) for p in params])

    def risk(flat: torch.Tensor) -> torch.Tensor:
        values = {
            n: c.reshape(p.shape) for n, c, p in zip(names, flat.split(sizes), params, strict=True)
        }
        return F.cross_entropy(functional_call(model, values, (X,)), y)

    return hessian(risk)(theta)


def suggested_damping(err: Exception) -> float:
    """The largest ``damping=<number>`` in an error message: the value it suggests."""
    values = re.findall(r"damping=(\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)", str(err))
    assert values, f"no damping=<number> in {err}"
    return max(float(v) for v in values)


def fingerprint(values) -> str:
    """A hash of tensors/arrays: bytes, shape, dtype and (tensors) requires_grad."""
    digest = hashlib.sha256()
    for value in values:
        if isinstance(value, torch.Tensor):
            digest.update(
                f"tensor {value.dtype} {tuple(value.shape)} {value.requires_grad}".encode()
            )
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        else:
            digest.update(f"array {value.dtype} {value.shape}".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def model_fingerprint(model: nn.Module) -> str:
    """A hash of the state_dict: every entry's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(fingerprint([value]).encode())
    return digest.hexdigest()


def model_flags(model: nn.Module) -> tuple[list, list]:
    """Each module's training flag; each parameter's identity, requires_grad and grad."""
    modules = [(name, m.training) for name, m in model.named_modules()]
    params = [(n, id(p), p.requires_grad, p.grad is None) for n, p in model.named_parameters()]
    return modules, params


def tabular_dataset(n_classes: int) -> iw.datasets.Dataset:
    X = torch.zeros(6, D)
    y = torch.arange(6) % n_classes
    return iw.datasets.Dataset(
        name="tiny",
        X_train=X,
        y_train=y,
        X_test=X,
        y_test=y,
        class_names=[str(c) for c in range(n_classes)],
    )


# --- fixtures


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Tiny problems run far faster on one thread, above all on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """X (40, 5), y (40,) with all 3 classes, x_test (4, 5), y_test (4,)."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(N, D, dtype=torch.float64, generator=gen)
    y = torch.arange(N) % C
    x_test = torch.randn(4, D, dtype=torch.float64, generator=gen)
    y_test = torch.tensor([0, 1, 2, 1])
    return X, y, x_test, y_test


@pytest.fixture(scope="module")
def trained_linear(data) -> nn.Linear:
    X, y, _, _ = data
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Linear(D, C, dtype=torch.float64)
    iw.train(model, (X, y), l2=L2, progress=False)
    return model


@pytest.fixture(scope="module")
def trained_mlp(data) -> nn.Sequential:
    """The tanh MLP with its top layer trained (a convex problem), the first layer as drawn."""
    X, y, _, _ = data
    model = tanh_mlp(seed=0)
    iw.train(model, (X, y), l2=L2, params=TOP_LAYER, progress=False)
    return model


@pytest.fixture
def linear(trained_linear) -> nn.Linear:
    return copy.deepcopy(trained_linear)


@pytest.fixture
def mlp(trained_mlp) -> nn.Sequential:
    return copy.deepcopy(trained_mlp)


@pytest.fixture(scope="module")
def fitted(trained_linear, data) -> iw.Influence:
    X, y, _, _ = data
    return make_influence(trained_linear, (X, y), solver="direct").fit()


@pytest.fixture(scope="module")
def saddle_mlp(data) -> tuple[nn.Sequential, float]:
    """An untrained tanh MLP with large weights whose risk Hessian (l2 = 0) is indefinite.

    Returns the model and the smallest eigenvalue of its exact Hessian (< 0).
    """
    X, y, _, _ = data
    for seed in range(10):
        model = tanh_mlp(seed, scale=3.0)
        lam_min = float(torch.linalg.eigvalsh(risk_hessian(model, X, y))[0])
        if lam_min < -1e-3:
            return model, lam_min
    pytest.fail("no seed in 0..9 gave a Hessian with a negative eigenvalue")


# --- training data


def test_training_set_length_mismatch_names_train(linear, data):
    X, y, _, _ = data
    with pytest.raises(ValueError, match="train"):
        make_influence(linear, (X[:30], y))


@pytest.mark.parametrize(
    ("build", "name"),
    [(make_influence, "train"), (lambda m, d: iw.train(m, d, progress=False), "data")],
    ids=["Influence", "train"],
)
@pytest.mark.parametrize("label", [3, -1])
def test_training_label_out_of_range_names_y(linear, data, label, build, name):
    X, y, _, _ = data
    bad = y.clone()
    bad[5] = label
    with pytest.raises(ValueError, match=rf"^{name}\[1\] \(y\): labels must lie in \[0, 2\]"):
        build(linear, (X, bad))


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_training_input_names_x(linear, data, value):
    X, y, _, _ = data
    bad = X.clone()
    bad[3, 2] = value
    with pytest.raises(ValueError, match=r"train\[0\] \(X\)"):
        make_influence(linear, (bad, y))


def test_fractional_float_training_labels_for_cross_entropy_name_y(linear, data):
    X, y, _, _ = data
    with pytest.raises((TypeError, ValueError), match=r"train\[1\] \(y\)"):
        make_influence(linear, (X, y.double() + 0.5))


@pytest.mark.parametrize("train", ["not data", ("a", "b", "c")], ids=["string", "3-tuple"])
def test_training_data_of_wrong_type_names_train(linear, train):
    with pytest.raises(TypeError, match="train"):
        make_influence(linear, train)


def test_training_inputs_of_wrong_width_name_train(linear, data):
    X, y, _, _ = data
    with pytest.raises((TypeError, ValueError), match="train"):
        make_influence(linear, (X[:, :4], y))


def test_two_dimensional_training_labels_name_y(linear, data):
    X, y, _, _ = data
    with pytest.raises((TypeError, ValueError), match=r"train\[1\] \(y\)"):
        make_influence(linear, (X, y[:, None])).fit()


@pytest.mark.filterwarnings(NOT_AT_MINIMUM)
def test_mse_targets_of_wrong_shape_name_y(data):
    X, _, _, _ = data
    model = nn.Linear(D, 1, dtype=torch.float64)
    targets = torch.zeros(N, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"train\[1\] \(y\)"):
        make_influence(model, (X, targets), loss="mse").fit()


def test_tensor_dataset_gives_the_same_influence_as_the_pair(linear, data):
    X, y, x_test, y_test = data
    dataset = torch.utils.data.TensorDataset(X, y)
    from_pair = make_influence(linear, (X, y), solver="direct").influence_on_loss(x_test, y_test)
    from_dataset = make_influence(linear, dataset, solver="direct").influence_on_loss(
        x_test, y_test
    )
    torch.testing.assert_close(from_dataset, from_pair, rtol=0, atol=1e-10)


# --- test points


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_test_input_names_x_test(fitted, data, value):
    _, _, x_test, y_test = data
    bad = x_test.clone()
    bad[1, 0] = value
    with pytest.raises(ValueError, match="x_test"):
        fitted.influence_on_loss(bad, y_test)


def test_test_points_of_different_lengths_name_both(fitted, data):
    _, _, x_test, y_test = data
    with pytest.raises(ValueError, match=r"x_test.*y_test"):
        fitted.influence_on_loss(x_test, y_test[:3])


@pytest.mark.parametrize("label", [3, -1])
def test_test_label_out_of_range_names_y_test(fitted, data, label):
    _, _, x_test, y_test = data
    bad = y_test.clone()
    bad[2] = label
    with pytest.raises(ValueError, match="y_test"):
        fitted.influence_on_loss(x_test, bad)


def test_fractional_float_test_labels_name_y_test(fitted, data):
    _, _, x_test, _ = data
    with pytest.raises((TypeError, ValueError), match="y_test"):
        fitted.influence_on_loss(x_test, torch.tensor([0.5, 1.0, 2.0, 1.0]))


def test_test_inputs_of_wrong_width_name_x_test(fitted, data):
    _, _, x_test, y_test = data
    with pytest.raises((TypeError, ValueError), match="x_test"):
        fitted.influence_on_loss(x_test[:, :4], y_test)


def test_two_dimensional_test_labels_name_y_test(fitted, data):
    _, _, x_test, y_test = data
    with pytest.raises((TypeError, ValueError), match="y_test"):
        fitted.influence_on_loss(x_test, y_test[:, None])


# --- constructor arguments


def test_model_without_trainable_parameters_is_rejected(linear, data):
    X, y, _, _ = data
    linear.requires_grad_(False)
    with pytest.raises(ValueError, match="trainable"):
        make_influence(linear, (X, y))


@pytest.mark.parametrize(
    "params", [["nope"], [], ["weight", "weight"]], ids=["unknown", "empty", "duplicate"]
)
def test_bad_params_are_named(linear, data, params):
    X, y, _, _ = data
    with pytest.raises(ValueError, match="params"):
        make_influence(linear, (X, y), params=params)


def test_params_that_is_not_a_list_of_names_is_named(linear, data):
    X, y, _, _ = data
    with pytest.raises(TypeError, match="params"):
        make_influence(linear, (X, y), params=42)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        pytest.param({"solver": "nope"}, ValueError, "solver", id="solver-nope"),
        pytest.param({"loss": "nope"}, ValueError, "loss", id="loss-nope"),
        pytest.param({"loss": 42}, TypeError, "loss", id="loss-42"),
        pytest.param({"l2": -1}, ValueError, "l2", id="l2-negative"),
        pytest.param({"l2": math.nan}, ValueError, "l2", id="l2-nan"),
        pytest.param({"damping": -0.1}, ValueError, "damping", id="damping-negative"),
        pytest.param({"batch_size": 0}, ValueError, "batch_size", id="batch_size-0"),
    ],
)
def test_bad_constructor_argument_is_named(linear, data, kwargs, error, name):
    X, y, _, _ = data
    with pytest.raises(error, match=name):
        make_influence(linear, (X, y), **kwargs)


def test_model_that_is_not_a_module_is_named(data):
    X, y, _, _ = data
    with pytest.raises(TypeError, match="model"):
        make_influence("notamodel", (X, y))


def test_numpy_float32_l2_is_accepted(linear, data):
    X, y, _, _ = data
    assert make_influence(linear, (X, y), l2=np.float32(L2)).objective.l2 == pytest.approx(L2)


def test_unknown_device_is_named(linear, data):
    X, y, _, _ = data
    with pytest.raises((TypeError, ValueError), match="device"):
        make_influence(linear, (X, y), device="nope")


@pytest.mark.parametrize(
    ("make_solver", "name"),
    [
        (lambda: iw.Arnoldi(rank=1.5), "rank"),
        (lambda: iw.ConjugateGradient(maxiter="a"), "maxiter"),
        (lambda: iw.ConjugateGradient(block_size=2.0), "block_size"),
    ],
    ids=["arnoldi-rank", "cg-maxiter", "cg-block-size"],
)
def test_solver_settings_of_wrong_type_are_named(make_solver, name):
    with pytest.raises(TypeError, match=name):
        make_solver()


def test_cg_block_size_below_one_is_named():
    with pytest.raises(ValueError, match="block_size: must be a positive integer"):
        iw.ConjugateGradient(block_size=0)


# --- training indices


@pytest.mark.parametrize(
    "call",
    [
        lambda inf, xt, yt: inf.influence_on_params([N]),
        lambda inf, xt, yt: inf.influence_on_params([-N - 1]),
        lambda inf, xt, yt: inf.perturbation_influence(xt, yt, idx=[100]),
    ],
    ids=["params-n", "params-below-minus-n", "perturbation-100"],
)
def test_training_index_out_of_range_is_an_index_and_value_error(fitted, data, call):
    _, _, x_test, y_test = data
    with pytest.raises(TrainingIndexError, match="idx") as info:
        call(fitted, x_test, y_test)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, IndexError)


def test_most_negative_valid_index_is_accepted(fitted):
    torch.testing.assert_close(fitted.influence_on_params([-N]), fitted.influence_on_params([0]))


@pytest.mark.parametrize(
    "call",
    [
        lambda inf, xt, yt: inf.influence_on_params([1.5]),
        lambda inf, xt, yt: inf.perturbation_influence(xt, yt, idx=[0.5]),
    ],
    ids=["params", "perturbation"],
)
def test_float_training_index_names_idx(fitted, data, call):
    _, _, x_test, y_test = data
    with pytest.raises(TypeError, match="idx"):
        call(fitted, x_test, y_test)


def test_string_training_index_names_idx(fitted):
    with pytest.raises(TypeError, match="idx"):
        fitted.influence_on_params("a")


def test_empty_index_list_selects_no_points(fitted):
    assert fitted.influence_on_params([]).shape == (0, fitted.p)


def test_top_with_k_zero_names_k(fitted, data):
    _, _, x_test, y_test = data
    with pytest.raises(ValueError, match="k"):
        fitted.top(x_test, y_test, k=0)


# --- Hessian not positive definite


@pytest.mark.filterwarnings(NOT_AT_MINIMUM)
def test_direct_solver_rejects_indefinite_hessian_and_its_damping_fixes_it(saddle_mlp, data):
    model, lam_min = saddle_mlp
    X, y, _, _ = data
    with pytest.raises(iw.NotPositiveDefiniteError, match="damping=") as info:
        make_influence(model, (X, y), l2=0.0, damping=0.0, solver="direct").fit()
    assert isinstance(info.value, ValueError)
    damping = suggested_damping(info.value)
    assert damping > -lam_min

    inf = make_influence(model, (X, y), l2=0.0, solver="direct", damping=damping).fit()
    assert inf.diagnostics.min_eigenvalue == pytest.approx(lam_min + damping, abs=1e-8)


@pytest.mark.filterwarnings(NOT_AT_MINIMUM)
def test_cg_solver_rejects_indefinite_hessian_when_it_meets_negative_curvature(saddle_mlp, data):
    model, _ = saddle_mlp
    X, y, x_test, y_test = data
    inf = make_influence(model, (X, y), l2=0.0, damping=0.0, solver="cg").fit()  # no fit work
    with pytest.raises(iw.NotPositiveDefiniteError, match="damping="):
        inf.influence_on_loss(x_test, y_test)


@pytest.mark.filterwarnings(NOT_AT_MINIMUM)
def test_cg_suggested_damping_exceeds_the_negative_curvature(saddle_mlp, data):
    model, lam_min = saddle_mlp
    X, y, x_test, y_test = data
    with pytest.raises(iw.NotPositiveDefiniteError) as info:
        make_influence(model, (X, y), l2=0.0, damping=0.0, solver="cg").influence_on_loss(
            x_test, y_test
        )
    assert suggested_damping(info.value) > -lam_min


@pytest.mark.filterwarnings(NOT_AT_MINIMUM)
def test_lissa_rejects_indefinite_hessian_with_a_damping(saddle_mlp, data):
    model, _ = saddle_mlp
    X, y, x_test, y_test = data
    with pytest.raises(iw.NotPositiveDefiniteError, match="damping="):
        make_influence(model, (X, y), l2=0.0, damping=0.0, solver=iw.LiSSA()).influence_on_loss(
            x_test, y_test
        )


def test_low_rank_arnoldi_does_not_report_a_wrong_smallest_eigenvalue(linear, data):
    X, y, _, _ = data
    exact = make_influence(linear, (X, y), solver="direct").diagnostics.min_eigenvalue
    reported = make_influence(linear, (X, y), solver=iw.Arnoldi(rank=5)).diagnostics.min_eigenvalue
    assert reported is None or reported == pytest.approx(exact)


# --- the not-at-a-minimum warning


def test_untrained_model_warns_about_the_gradient(data):
    X, y, _, _ = data
    model = iw.models.logistic_regression((D, C))
    with pytest.warns(iw.InfluenceWarning, match="grad"):
        make_influence(model, (X, y)).fit()


def test_trained_model_does_not_warn(linear, data):
    X, y, _, _ = data
    with warnings.catch_warnings():
        warnings.simplefilter("error", iw.InfluenceWarning)
        make_influence(linear, (X, y)).fit()


# --- iw.train


@pytest.mark.parametrize(
    ("kwargs", "name"), [({"l2": -1}, "l2"), ({"max_iter": 0}, "max_iter")], ids=["l2", "max_iter"]
)
def test_train_rejects_bad_settings(linear, data, kwargs, name):
    X, y, _, _ = data
    with pytest.raises(ValueError, match=name):
        iw.train(linear, (X, y), progress=False, **kwargs)


def test_train_rejects_a_non_module(data):
    X, y, _, _ = data
    with pytest.raises(TypeError, match="model"):
        iw.train("notamodel", (X, y), progress=False)


@pytest.mark.parametrize("train", ["not data", ("a", "b", "c")], ids=["string", "3-tuple"])
def test_train_rejects_data_of_wrong_type(linear, train):
    with pytest.raises(TypeError, match="data"):
        iw.train(linear, train, progress=False)


def test_train_fractional_float_labels_name_y(linear, data):
    X, y, _, _ = data
    with pytest.raises((TypeError, ValueError), match=r"\by\b"):
        iw.train(linear, (X, y.double() + 0.5), progress=False)


def test_train_smooth_hinge_labels_other_than_0_1_name_y(data):
    X, y, _, _ = data
    with pytest.raises(ValueError, match=r"\by\b"):
        iw.train(iw.models.linear_svm((D, 2)), (X, y), loss="smooth_hinge", progress=False)


@pytest.mark.parametrize("params", [["weight", "weight"], []], ids=["duplicate", "empty"])
def test_train_bad_params_are_named(linear, data, params):
    X, y, _, _ = data
    with pytest.raises(ValueError, match="params"):
        iw.train(linear, (X, y), params=params, progress=False)


def test_train_negative_tolerance_is_named(linear, data):
    X, y, _, _ = data
    with pytest.raises(ValueError, match="tol"):
        iw.train(linear, (X, y), tol=-1, max_iter=20, progress=False)


def test_train_leaves_data_and_untrained_parameters_and_flags_alone(data):
    X, y, _, _ = data
    model = tanh_mlp(seed=1)
    model.train(True)
    model[0].weight.requires_grad_(False)
    model[2].bias.requires_grad_(False)  # frozen, yet named in params: trained, then re-frozen
    flags = model_flags(model)
    first_layer = fingerprint([model[0].weight, model[0].bias])
    top_layer = fingerprint([model[2].weight, model[2].bias])
    data_before = fingerprint([X, y])

    iw.train(model, (X, y), l2=L2, params=TOP_LAYER, max_iter=20, progress=False)

    assert fingerprint([X, y]) == data_before
    assert model_flags(model) == flags
    assert fingerprint([model[0].weight, model[0].bias]) == first_layer
    assert fingerprint([model[2].weight, model[2].bias]) != top_layer


# --- models and losses


def test_small_cnn_rejects_a_tabular_dataset():
    with pytest.raises(TypeError, match="data"):
        iw.models.small_cnn(tabular_dataset(n_classes=3))


def test_linear_svm_rejects_three_classes():
    with pytest.raises(ValueError, match="data"):
        iw.models.linear_svm(tabular_dataset(n_classes=3))


def test_smooth_hinge_rejects_negative_temperature():
    with pytest.raises(ValueError, match="temperature"):
        iw.SmoothHinge(temperature=-1)


def test_smooth_hinge_temperature_of_wrong_type_is_named():
    with pytest.raises(TypeError, match="temperature"):
        iw.SmoothHinge(temperature="a")


@pytest.mark.parametrize("label", [2, -1])
def test_smooth_hinge_training_labels_must_be_0_or_1(data, label):
    X, y, _, _ = data
    labels = (y > 0).long()
    labels[4] = label
    with pytest.raises(ValueError, match=r"train\[1\] \(y\)"):
        make_influence(iw.models.linear_svm((D, 2)), (X, labels), loss="smooth_hinge")


def test_smooth_hinge_test_labels_must_be_0_or_1(data):
    X, y, x_test, _ = data
    inf = make_influence(iw.models.linear_svm((D, 2)), (X, (y > 0).long()), loss="smooth_hinge")
    with pytest.raises(ValueError, match="y_test"):
        inf.test_gradients(x_test, torch.tensor([0.0, 1.0, 0.5, 1.0]))


# --- no mutation


def call_every_public_method(inf: iw.Influence, x_test, y_test) -> None:
    inf.fit()
    inf.influence_on_params([0, 5, -1])
    inf.influence_on_loss(x_test, y_test)
    inf.predicted_removal_effect(x_test, y_test)
    inf.perturbation_influence(x_test, y_test, idx=[1, 2])
    inf.self_influence()
    inf.top(x_test, y_test, k=3)
    inf.s_test(x_test, y_test)
    inf.test_gradients(x_test, y_test)
    assert inf.diagnostics.n_train == N


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("arrays", ["tensor", "numpy"])
@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_influence_never_mutates_model_or_data(linear, mlp, data, kind, arrays, solver):
    if kind == "linear":
        model, params = linear, None
    else:
        model, params = mlp, TOP_LAYER
        model[0].bias.requires_grad_(False)
    model.train(True)
    if arrays == "tensor":
        X, y, x_test, y_test = (t.clone() for t in data)
        X.requires_grad_(True)
        x_test.requires_grad_(True)
    else:
        X, y, x_test, y_test = (t.numpy().copy() for t in data)
    state, flags = model_fingerprint(model), model_flags(model)
    arrays_before = fingerprint([X, y, x_test, y_test])

    inf = make_influence(model, (X, y), params=params, solver=SOLVERS[solver]())
    call_every_public_method(inf, x_test, y_test)

    assert model_fingerprint(model) == state
    assert model_flags(model) == flags
    assert fingerprint([X, y, x_test, y_test]) == arrays_before
