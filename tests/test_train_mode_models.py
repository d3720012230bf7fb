"""Models with BatchNorm or Dropout left in train mode: ``Influence`` and ``iw.train`` evaluate
them in eval mode with one ``InfluenceWarning`` and leave each module's mode as it was; a model
in eval mode, or without such modules, gets no warning. ``iw.train`` also keeps the user's
gradients."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import influence_widgets as iw
from tests.tiny_inputs import L2, C, D, blobs, influence, linear, train


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

    with untouched(model, X, y), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inf = iw.Influence(model, (X, y), l2=L2, progress=False).fit()
        got = inf.influence_on_loss(X[:2], y[:2])
        inf.self_influence()
    [warning] = mode_warnings(caught)
    message = str(warning.message)
    assert message.startswith("model: is in train mode")
    assert "1 (BatchNorm1d), 3 (Dropout)" in message
    assert "Influence is computed in eval mode" in message
    assert warning.filename == __file__  # points at the Influence(...) call, not the package
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
        iw.train(model, (X, y), l2=L2, progress=False, max_iter=5)
    [warning] = mode_warnings(caught)
    message = str(warning.message)
    assert "eval mode: 3 (Dropout). iw.train" in message  # not the BatchNorm in eval mode
    assert "iw.train fits it in eval mode" in message
    assert warning.filename == __file__  # points at the iw.train(...) call
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
