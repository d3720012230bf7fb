"""Every bad input the public API and the explorer can meet (issue 14): each case is a call that
must raise the exception type given, with a message that matches a regex naming the argument (at
the start of the message where the regex starts with ``^``). The cases are below, by area, each
area with its builders; a test checks that this list names every case and nothing else.

Core: ``Influence`` and its calls
- hessian_budget_negative: ``hessian_budget_mb=-1``
- hessian_budget_nan: ``hessian_budget_mb=nan``
- hessian_budget_string: ``hessian_budget_mb="big"``
- gradient_cache_negative: ``gradient_cache_mb=-5``
- gradient_cache_inf: ``gradient_cache_mb=inf``
- gradient_cache_none: ``gradient_cache_mb=None``
- top_k_bool: ``top(k=True)``
- top_k_zero: ``top(k=0)``
- top_k_float: ``top(k=2.5)``
- rebuild_unknown_option: ``rebuild(dampnig=0.1)``, an option Influence does not have
- rebuild_negative_damping: ``rebuild(damping=-1.0)``
- damping_automatic: ``damping="automatic"`` (neither "auto" nor a number)
- damping_negative: ``damping=-0.1``
- damping_none: ``damping=None``
- hessian_unknown: ``hessian="foo"``
- hessian_none: ``hessian=None``
- rebuild_hessian_case: ``rebuild(hessian="Gauss-Newton")`` (the names are lower case)

Inputs: models, losses, devices and training sets of ``Influence`` and, where the id ends in
``_train``, of ``iw.train``
- loss_mean_reduced: a ``loss`` that returns one number (a mean)
- loss_mean_reduced_train: the same for ``iw.train``
- loss_per_output: a ``loss`` that returns (B, C) instead of (B,)
- loss_per_output_train: the same for ``iw.train``
- x_1d: training inputs X of shape (n,) for a ``Linear(1, C)``, once blamed on the labels
- x_1d_train: the same for ``iw.train``
- dataset_dict_items: a torch ``Dataset`` whose items are dicts
- dataset_dict_items_train: the same for ``iw.train``
- model_returns_tuple: a ``forward`` that returns a tuple
- model_returns_tuple_train: the same for ``iw.train``
- loss_mean_reduced_one_point: a mean ``loss`` on one training point (shape () for (1,))
- loss_not_a_tensor: a ``loss`` that returns a float
- device_cuda_without_cuda: ``device="cuda"`` on a build without CUDA (skipped with CUDA)
- device_cuda_index: ``device="cuda:999"``
- device_meta: ``device="meta"``
- model_on_meta: a model whose parameters are on the meta device
- device_mps_unavailable: ``device="mps"`` where this build cannot use it (skipped with MPS)
- x_1d_test: ``x_test`` of shape (n,) for a ``Linear(1, C)``
- dataset_tensor_items: a ``Dataset`` whose items are bare tensors
- dataset_1_tuple_items: a ``Dataset`` whose items are 1-tuples
- model_returns_dict: a ``forward`` that returns a dict

Analyses: attack, LOO, retraining
- attack-input_range-one-value: ``craft_attack(input_range=(0,))``
- attack-input_range-string: ``input_range="ab"``
- attack-input_range-not-a-number: ``input_range=(0, "x")``
- attack-input_range-bool: ``input_range=(True, 1)``
- attack-input_range-reversed: ``input_range=(1, 0)``
- attack-y_test-10-of-10-classes: ``y_test=10`` for 10 classes
- attack-y_test-negative: ``y_test=-1``
- attack-y_test-10-custom-loss: ``y_test=10`` with a custom loss
- attack-y_test-fractional-custom-loss: ``y_test=0.5`` with a custom loss
- attack-y_test-two-values: ``y_test`` of two labels
- attack-x_test-wrong-width: ``x_test`` with 5 features for a 4-feature model
- attack-cancel-bool: ``craft_attack(cancel=True)``
- attack-influence-not-influence: ``craft_attack("model", ...)``
- loo-influence-not-influence: ``validate_loo("model", ...)``
- loo-cancel-bool: ``validate_loo(cancel=True)``
- loo-two-test-points: ``validate_loo`` with two test points
- removal-effects-cancel-bool: ``actual_removal_effects(cancel=True)``
- chord-influence-not-influence: ``ChordNewtonRetrain("model")``
- chord-max_steps-zero: ``ChordNewtonRetrain(max_steps=0)``
- chord-max_steps-string: ``ChordNewtonRetrain(max_steps="3")``
- chord-batch_size-zero: ``ChordNewtonRetrain(batch_size=0)``

Explorer: ``InfluenceExplorer`` arguments, without the magic (a TraitError for a synced trait)
- class_names-too-few: 2 names for a 3-class model
- class_names-too-many: 5 names for 3 classes
- class_names-bare-string: ``class_names="abc"``, which would be split into letters
- class_names-one-output-is-two-classes: 3 names for a one-output (two-class) model
- class_names-number: ``class_names=3``
- class_names-duplicate: ``class_names=["a", "b", "a"]``, two classes of one name
- feature_names-too-few: 3 names for 4 columns
- feature_names-too-many: 5 names for 4 columns
- feature_names-bare-string: ``feature_names="abcd"``, four letters for four columns
- feature_names-duplicate: ``feature_names=["a", "b", "c", "b"]``
- feature_names-text-kind: a wrong count of input values for non-tabular data
- selected-bool: ``ex.selected = True``, a bool is not an index
- selected-float: ``ex.selected = 2.0``
- selected-str: ``ex.selected = "3"``
- k-zero: ``k=0``
- k-bool: ``k=True``
- k-float: ``k=2.5``
- page_size-zero: ``page_size=0``
- x_test-nan-row: a NaN in test point 2 (no labels), once shown as a prediction of confidence NaN
- x_test-inf-row: an infinite value in test point 4, with labels
- x_test-wrong-width: 3 features per test point for a 4-feature model
- x_test-wrong-row-shape: test points of shape (2, 2) for rows of 4 features
- y_test-nan: a NaN test label
- influence-not-an-Influence: ``InfluenceExplorer("inf", ...)``
- data-not-a-Dataset: ``data=(1, 2)``, not an ``iw.datasets`` Dataset
- eps-negative: ``run_attack(eps=-1)``
- eps-bool: ``run_attack(eps=True)``
- step-nan: ``run_attack(step=nan)``
- n_remove-zero: ``run_verify(n_remove=0)``
- n_remove-numpy-zero: ``run_verify(n_remove=np.int64(0))``
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
import torch
import traitlets
from torch import nn

import influence_widgets as iw
from tests.tiny_inputs import (
    C,
    D,
    Items,
    blobs,
    influence,
    linear,
    mean_loss,
    per_output_loss,
    train,
)

# ----- Core: Influence's memory budgets, top's k, rebuild ----------------------------------------


def tiny_influence(**kw):
    return influence(linear(), blobs(), **kw)


def top(k):
    X, y = blobs()
    return tiny_influence().top(X[:2], y[:2], k=k)


def rebuild(**overrides):
    inf = tiny_influence()
    return inf.rebuild(inf.objective.module, blobs(), **overrides)


CORE_CASES = [
    pytest.param(lambda: tiny_influence(hessian_budget_mb=-1), ValueError, r"^hessian_budget_mb", id="hessian_budget_negative"),
    pytest.param(lambda: tiny_influence(hessian_budget_mb=float("nan")), ValueError, r"^hessian_budget_mb", id="hessian_budget_nan"),
    pytest.param(lambda: tiny_influence(hessian_budget_mb="big"), TypeError, r"^hessian_budget_mb", id="hessian_budget_string"),
    pytest.param(lambda: tiny_influence(gradient_cache_mb=-5), ValueError, r"^gradient_cache_mb", id="gradient_cache_negative"),
    pytest.param(lambda: tiny_influence(gradient_cache_mb=float("inf")), ValueError, r"^gradient_cache_mb", id="gradient_cache_inf"),
    pytest.param(lambda: tiny_influence(gradient_cache_mb=None), TypeError, r"^gradient_cache_mb", id="gradient_cache_none"),
    pytest.param(lambda: top(True), TypeError, r"^k", id="top_k_bool"),
    pytest.param(lambda: top(0), ValueError, r"^k", id="top_k_zero"),
    pytest.param(lambda: top(2.5), TypeError, r"^k", id="top_k_float"),
    pytest.param(lambda: rebuild(dampnig=0.1), TypeError, r"^dampnig", id="rebuild_unknown_option"),
    pytest.param(lambda: rebuild(damping=-1.0), ValueError, r"^damping", id="rebuild_negative_damping"),
    pytest.param(lambda: tiny_influence(damping="automatic"), ValueError, r"^damping: expected 'auto' or a number", id="damping_automatic"),
    pytest.param(lambda: tiny_influence(damping=-0.1), ValueError, r"^damping: expected 'auto' or a number >= 0", id="damping_negative"),
    pytest.param(lambda: tiny_influence(damping=None), TypeError, r"^damping: expected 'auto'", id="damping_none"),
    pytest.param(lambda: tiny_influence(hessian="foo"), ValueError, r"^hessian: expected 'exact' .* or 'gauss-newton'", id="hessian_unknown"),
    pytest.param(lambda: tiny_influence(hessian=None), TypeError, r"^hessian", id="hessian_none"),
    pytest.param(lambda: rebuild(hessian="Gauss-Newton"), ValueError, r"^hessian", id="rebuild_hessian_case"),
]  # fmt: skip

# ----- Inputs: models, losses, devices and training sets of Influence and iw.train ---------------


class Returns(nn.Module):
    """A linear model whose forward wraps its logits with ``wrap`` (a tuple, a dict)."""

    def __init__(self, wrap) -> None:
        super().__init__()
        self.linear = linear()
        self.wrap = wrap

    def forward(self, x: torch.Tensor):
        return self.wrap(self.linear(x))


def one_feature() -> tuple[torch.Tensor, torch.Tensor]:
    """The first column of X, shape (n,), with the labels."""
    X, y = blobs()
    return X[:, 0], y


def first_point() -> tuple[torch.Tensor, torch.Tensor]:
    """The first point of the tiny problem, a training set of one."""
    X, y = blobs()
    return X[:1], y[:1]


def gradients_of_a_1d_x_test() -> torch.Tensor:
    """``test_gradients`` with x_test of shape (n,) for a ``Linear(1, C)`` model."""
    X, y = blobs()
    return influence(linear(1), (X[:, :1], y)).test_gradients(X[:, 0], y)


def items(make) -> Items:
    """The tiny problem as a Dataset whose item i is ``make(x, y, i)``."""
    return Items(*blobs(), make)


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


def for_both(case_id: str, call, error: type[Exception], match: str) -> list:
    """The case for ``Influence`` and for ``iw.train``: ``call(build)`` with ``build`` each of
    them; ``{name}`` in ``match`` is the training set's name there (train, data)."""
    return [
        pytest.param(lambda: call(influence), error, match.format(name="train"), id=case_id),
        pytest.param(lambda: call(train), error, match.format(name="data"), id=f"{case_id}_train"),
    ]


INPUTS_CASES = [
    *for_both("loss_mean_reduced", lambda build: build(linear(), blobs(), loss=mean_loss), ValueError, MEAN),
    *for_both("loss_per_output", lambda build: build(linear(), blobs(), loss=per_output_loss), ValueError, PER_OUTPUT),
    *for_both("x_1d", lambda build: build(linear(1), one_feature()), ValueError, r"^{name}\[0\] \(X\): " + ONE_FEATURE),
    *for_both("dataset_dict_items", lambda build: build(linear(), items(lambda x, t, i: {"x": x, "y": t})), TypeError, r"^{name}: " + ITEMS + DICT),
    *for_both("model_returns_tuple", lambda build: build(Returns(lambda out: (out, out.sum())), blobs()), TypeError, WRAP.format(kind="tuple") + r"\[0\]"),
    pytest.param(lambda: influence(linear(), first_point(), loss=mean_loss), ValueError, r"^loss: .*shape \(B,\) = \(1,\).*got shape \(\)", id="loss_mean_reduced_one_point"),
    pytest.param(lambda: influence(linear(), blobs(), loss=lambda out, t: 1.0), TypeError, r"^loss: must return a tensor of per-sample losses", id="loss_not_a_tensor"),
    pytest.param(lambda: influence(linear(), blobs(), device="cuda"), ValueError, r"^device: 'cuda', but .*no CUDA.*device='cpu'", id="device_cuda_without_cuda", marks=no_cuda),
    pytest.param(lambda: influence(linear(), blobs(), device="cuda:999"), ValueError, r"^device: 'cuda:999', but .*(no CUDA|only \d+ CUDA GPU)", id="device_cuda_index"),
    pytest.param(lambda: influence(linear(), blobs(), device="meta"), ValueError, r"^device: device='meta' holds no data; use 'cpu' or 'cuda'", id="device_meta"),
    pytest.param(lambda: influence(nn.Linear(D, C, device="meta"), blobs()), ValueError, r"^model: its parameters are on the 'meta' device.*load_state_dict", id="model_on_meta"),
    pytest.param(lambda: influence(linear(), blobs(), device="mps"), ValueError, r"^device: this torch build cannot use 'mps'.*device='cpu'", id="device_mps_unavailable", marks=no_mps),
    pytest.param(gradients_of_a_1d_x_test, ValueError, r"^x_test: " + ONE_FEATURE, id="x_1d_test"),
    pytest.param(lambda: influence(linear(), items(lambda x, t, i: x)), TypeError, r"^train: " + ITEMS + r", got a Tensor", id="dataset_tensor_items"),
    pytest.param(lambda: influence(linear(), items(lambda x, t, i: (x,))), TypeError, r"^train: " + ITEMS + r", got a tuple of length 1", id="dataset_1_tuple_items"),
    pytest.param(lambda: influence(Returns(lambda out: {"logits": out}), blobs()), TypeError, WRAP.format(kind="dict") + r"\['logits'\]", id="model_returns_dict"),
]  # fmt: skip

# ----- Analyses: craft_attack, validate_loo, actual_removal_effects, ChordNewtonRetrain ----------


@functools.cache
def ten_classes() -> tuple:
    """A float64 10-class logistic regression on 50 points in [0, 1]^4, trained, with a
    correctly classified test point."""
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(50, 4, generator=gen, dtype=torch.float64)
    y = torch.arange(50) % 10
    model = iw.models.logistic_regression((4, 10))
    iw.train(model, (X, y), l2=0.05, progress=False)
    with torch.no_grad():
        t = int(torch.nonzero(model(X).argmax(1) == y)[0])
    return model, X, y, X[t : t + 1], y[t : t + 1]


def ten_class_influence(**kw) -> iw.Influence:
    model, X, y, _, _ = ten_classes()
    return iw.Influence(model, (X, y), l2=0.05, progress=False, **kw)


def attack(x_test=None, y_test=None, loss="cross_entropy", **kw):
    _, _, _, xt, yt = ten_classes()
    x_test = xt if x_test is None else x_test
    y_test = yt if y_test is None else y_test
    args = {"max_iter": 1, "progress": False, **kw}
    return iw.craft_attack(ten_class_influence(loss=loss), x_test, y_test, **args)


def loo(**kw):
    _, _, _, xt, yt = ten_classes()
    return iw.validate_loo(
        kw.pop("influence", ten_class_influence()), xt, yt, n_remove=2, progress=False, **kw
    )


def per_sample_cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(output, target.long(), reduction="none")


ANALYSIS_CASES = [
    pytest.param(lambda: attack(input_range=(0,)), TypeError, r"^input_range", id="attack-input_range-one-value"),
    pytest.param(lambda: attack(input_range="ab"), TypeError, r"^input_range", id="attack-input_range-string"),
    pytest.param(lambda: attack(input_range=(0, "x")), TypeError, r"^input_range", id="attack-input_range-not-a-number"),
    pytest.param(lambda: attack(input_range=(True, 1)), TypeError, r"^input_range", id="attack-input_range-bool"),
    pytest.param(lambda: attack(input_range=(1, 0)), ValueError, r"^input_range", id="attack-input_range-reversed"),
    pytest.param(lambda: attack(y_test=torch.tensor([10])), ValueError, r"^y_test", id="attack-y_test-10-of-10-classes"),
    pytest.param(lambda: attack(y_test=torch.tensor([-1])), ValueError, r"^y_test", id="attack-y_test-negative"),
    pytest.param(lambda: attack(y_test=torch.tensor([10]), loss=per_sample_cross_entropy), ValueError, r"^y_test", id="attack-y_test-10-custom-loss"),
    pytest.param(lambda: attack(y_test=torch.tensor([0.5], dtype=torch.float64), loss=per_sample_cross_entropy), ValueError, r"^y_test", id="attack-y_test-fractional-custom-loss"),
    pytest.param(lambda: attack(y_test=torch.tensor([[1, 2]])), ValueError, r"^y_test", id="attack-y_test-two-values"),
    pytest.param(lambda: attack(x_test=torch.zeros(1, 5, dtype=torch.float64)), ValueError, r"^x_test", id="attack-x_test-wrong-width"),
    pytest.param(lambda: attack(cancel=True), TypeError, r"^cancel", id="attack-cancel-bool"),
    pytest.param(lambda: iw.craft_attack("model", None, None), TypeError, r"^influence", id="attack-influence-not-influence"),
    pytest.param(lambda: loo(influence="model"), TypeError, r"^influence", id="loo-influence-not-influence"),
    pytest.param(lambda: loo(cancel=True), TypeError, r"^cancel", id="loo-cancel-bool"),
    pytest.param(lambda: iw.validate_loo(ten_class_influence(), ten_classes()[1][:2], ten_classes()[2][:2]), ValueError, r"^x_test, y_test", id="loo-two-test-points"),
    pytest.param(lambda: iw.analysis.actual_removal_effects(*ten_classes()[:2], *ten_classes()[3:], [0], cancel=True), TypeError, r"^cancel", id="removal-effects-cancel-bool"),
    pytest.param(lambda: iw.ChordNewtonRetrain("model"), TypeError, r"^influence", id="chord-influence-not-influence"),
    pytest.param(lambda: iw.ChordNewtonRetrain(ten_class_influence(solver="direct"), max_steps=0), ValueError, r"^max_steps", id="chord-max_steps-zero"),
    pytest.param(lambda: iw.ChordNewtonRetrain(ten_class_influence(solver="direct"), max_steps="3"), TypeError, r"^max_steps", id="chord-max_steps-string"),
    pytest.param(lambda: iw.ChordNewtonRetrain(ten_class_influence(solver="direct"), batch_size=0), ValueError, r"^batch_size", id="chord-batch_size-zero"),
]  # fmt: skip

# ----- Explorer: InfluenceExplorer arguments, without the magic ----------------------------------


@functools.cache
def explorer_problem(outputs: int = 3):
    """30 points with 4 features, a linear model with ``outputs`` outputs and its Influence."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    y = torch.arange(30) % max(outputs, 2)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, outputs, dtype=torch.float64)
    loss = "smooth_hinge" if outputs == 1 else "cross_entropy"
    iw.train(model, (X, y), loss=loss, l2=0.1, progress=False)
    return X, y, iw.Influence(model, (X, y), loss=loss, l2=0.1, progress=False)


def explorer(outputs: int = 3, **kwargs):
    X, y, inf = explorer_problem(outputs)
    options = {"x_test": X[:6], "y_test": y[:6], "kind": "tabular", "fit_in_background": False}
    return iw.InfluenceExplorer(inf, **{**options, **kwargs})


@functools.cache
def ready_explorer():
    ex = explorer()
    ex.selected = 0
    return ex


def select(value):
    ready_explorer().selected = value


def with_value(row: int, value: float) -> torch.Tensor:
    """The explorer's 6 test inputs, a copy with ``value`` in test point ``row``."""
    x = explorer_problem()[0][:6].clone()
    x[row, 1] = value
    return x


def text_explorer(**kwargs):
    return explorer(kind="text", test_display=["t"] * 6, train_display=["t"] * 30, **kwargs)


WIDGETS_CASES = [
    pytest.param(lambda: explorer(class_names=["a", "b"]), ValueError, "class_names", id="class_names-too-few"),
    pytest.param(lambda: explorer(class_names=list("abcde")), ValueError, "class_names", id="class_names-too-many"),
    pytest.param(lambda: explorer(class_names="abc"), TypeError, "class_names", id="class_names-bare-string"),
    pytest.param(lambda: explorer(1, class_names=["a", "b", "c"]), ValueError, r"class_names: got 3 names for 2 classes", id="class_names-one-output-is-two-classes"),
    pytest.param(lambda: explorer(class_names=3), TypeError, "class_names", id="class_names-number"),
    pytest.param(lambda: explorer(class_names=["a", "b", "a"]), ValueError, r"^class_names: 'a' names classes 0 and 2", id="class_names-duplicate"),
    pytest.param(lambda: explorer(feature_names=list("abc")), ValueError, "feature_names", id="feature_names-too-few"),
    pytest.param(lambda: explorer(feature_names=list("abcde")), ValueError, "feature_names", id="feature_names-too-many"),
    pytest.param(lambda: explorer(feature_names="abcd"), TypeError, "feature_names", id="feature_names-bare-string"),
    pytest.param(lambda: explorer(feature_names=list("abcb")), ValueError, r"^feature_names: 'b' names features 1 and 3", id="feature_names-duplicate"),
    pytest.param(lambda: text_explorer(feature_names=["a"]), ValueError, "feature_names", id="feature_names-text-kind"),
    pytest.param(lambda: select(True), traitlets.TraitError, "selected", id="selected-bool"),
    pytest.param(lambda: select(2.0), traitlets.TraitError, "selected", id="selected-float"),
    pytest.param(lambda: select("3"), traitlets.TraitError, "selected", id="selected-str"),
    pytest.param(lambda: explorer(k=0), ValueError, "k", id="k-zero"),
    pytest.param(lambda: explorer(k=True), TypeError, "k", id="k-bool"),
    pytest.param(lambda: explorer(k=2.5), TypeError, "k", id="k-float"),
    pytest.param(lambda: explorer(page_size=0), ValueError, "page_size", id="page_size-zero"),
    pytest.param(lambda: explorer(x_test=with_value(2, float("nan")), y_test=None), ValueError, r"^x_test: test point 2 has a NaN", id="x_test-nan-row"),
    pytest.param(lambda: explorer(x_test=with_value(4, float("inf"))), ValueError, r"^x_test: test point 4 has a NaN or infinite", id="x_test-inf-row"),
    pytest.param(lambda: explorer(x_test=explorer_problem()[0][:6, :3]), ValueError, r"^x_test: each test point has shape \(3,\) but each training input \(4,\)", id="x_test-wrong-width"),
    pytest.param(lambda: explorer(x_test=explorer_problem()[0][:6].reshape(6, 2, 2)), ValueError, r"^x_test: each test point has shape \(2, 2\)", id="x_test-wrong-row-shape"),
    pytest.param(lambda: explorer(y_test=torch.tensor([0.0, 1.0, float("nan"), 0.0, 1.0, 2.0])), ValueError, r"^y_test: test point 2 has a NaN", id="y_test-nan"),
    pytest.param(lambda: iw.InfluenceExplorer("inf", x_test=[[0.0]], y_test=[0], kind="tabular"), TypeError, "influence", id="influence-not-an-Influence"),
    pytest.param(lambda: iw.InfluenceExplorer(explorer_problem()[2], data=(1, 2)), TypeError, "data", id="data-not-a-Dataset"),
    pytest.param(lambda: ready_explorer().run_attack(eps=-1), ValueError, "eps", id="eps-negative"),
    pytest.param(lambda: ready_explorer().run_attack(eps=True), TypeError, "eps", id="eps-bool"),
    pytest.param(lambda: ready_explorer().run_attack(step=float("nan")), ValueError, "step", id="step-nan"),
    pytest.param(lambda: ready_explorer().run_verify(n_remove=0), ValueError, "n_remove", id="n_remove-zero"),
    pytest.param(lambda: ready_explorer().run_verify(n_remove=np.int64(0)), ValueError, "n_remove", id="n_remove-numpy-zero"),
]  # fmt: skip


CASES = [*CORE_CASES, *INPUTS_CASES, *ANALYSIS_CASES, *WIDGETS_CASES]


@pytest.mark.parametrize(("call", "error", "pattern"), CASES)
def test_bad_input_names_the_argument(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_the_docstring_lists_every_case_once():
    listed = re.findall(r"^- (\S+): \S", __doc__, flags=re.MULTILINE)
    ids = [case.id for case in CASES]
    assert len(set(ids)) == len(ids), "two cases share an id"
    assert len(set(listed)) == len(listed), "the docstring lists a case twice"
    assert set(ids) - set(listed) == set(), "cases missing from the docstring"
    assert set(listed) - set(ids) == set(), "the docstring lists cases that do not exist"
