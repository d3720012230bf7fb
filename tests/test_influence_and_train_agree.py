"""``Influence`` and ``iw.train`` share their validators: the same bad ``params``, ``loss`` or
model without trainable parameters gets the same exception and the same message from both."""

from __future__ import annotations

import pytest

from tests.tiny_inputs import blobs, influence, linear, mean_loss, per_output_loss, train


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
