"""The explorer's input boundary (``widgets/inputs.py``): one-hot (mse) labels read as classes and
written back as one-hot rows, integer test inputs cast to the model's floating dtype."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

import influence_widgets as iw

C, L2 = 10, 0.1


@functools.cache
def one_hot_problem():
    """60 training and 40 test points of 4 features, 10 classes as one-hot float64 rows, a
    ``Linear(4, 10)`` trained with mse, and its Influence. Training point 3 is of class 8."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(60, 4, dtype=torch.float64, generator=gen)
    y = (torch.arange(60) + 5) % C
    Xt = torch.randn(40, 4, dtype=torch.float64, generator=gen)
    yt = torch.arange(40) % C
    Y, Yt = F.one_hot(y, C).double(), F.one_hot(yt, C).double()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, C, dtype=torch.float64)
    iw.train(model, (X, Y), l2=L2, loss="mse", progress=False)
    inf = iw.Influence(model, (X, Y), l2=L2, loss="mse", progress=False)
    return X, Y, Xt, yt, Yt, model, inf


def one_hot_explorer(**kwargs) -> iw.InfluenceExplorer:
    _X, _Y, Xt, _yt, Yt, _model, inf = one_hot_problem()
    options = {"x_test": Xt, "y_test": Yt, "kind": "tabular", "fit_in_background": False}
    return iw.InfluenceExplorer(inf, **{**options, **kwargs})


def test_one_hot_test_labels_are_one_class_per_row():
    """Before, 40 one-hot test rows showed as 400 test points labelled 0 or 1."""
    _X, Y, _Xt, yt, _Yt, _model, _inf = one_hot_problem()
    ex = one_hot_explorer()
    assert ex.n_shown == 40 and len(ex.gallery) == 40
    assert [item["label"] for item in ex.gallery] == [str(int(c)) for c in yt]
    ex.selected = 7
    assert ex.error == "" and ex.panel["label"] == "7"
    shown = ex.panel["helpful"] + ex.panel["harmful"]
    assert [item["label"] for item in shown] == [str(int(Y[i["index"]].argmax())) for i in shown]


def test_relabel_reads_and_writes_one_hot_rows(untouched):
    """Before, relabel(3, 9) wrote [9., ..., 9.] into row 3, and relabel(3, 0) was refused as
    "already labelled 0" for a point of class 8."""
    X, Y, Xt, yt, _Yt, model, _inf = one_hot_problem()
    ex = one_hot_explorer()
    with untouched(model, X, Y):
        ex.relabel(3, 9)
        _X2, y2 = ex.fixed_dataset()
        assert y2.dtype == Y.dtype and y2.shape == Y.shape
        assert torch.equal(y2[3], F.one_hot(torch.tensor(9), C).to(Y.dtype))
        assert torch.equal(y2[:3], Y[:3]) and torch.equal(y2[4:], Y[4:])
        ex.relabel(3, 0)
        assert ex.review_fixes == {3: 0}
        with pytest.raises(ValueError, match=r"^label: training point 3 is already labelled 8"):
            ex.relabel(3, 8)
        ex.tab = "review"
        ex.review_tab.rank_job.join(60)
        items = ex.review["items"]
        assert ex.review["state"] == "done"
        assert [item["label_index"] for item in items] == [
            int(Y[i["index"]].argmax()) for i in items
        ]
        result = ex.retrain_with_fixes(wait=True)
    with torch.no_grad():
        accuracy = float((model(Xt).argmax(1) == yt).double().mean())
    assert result.accuracy_before == pytest.approx(accuracy) and result.n_relabelled == 1


def test_without_test_labels_one_hot_training_labels_explain_the_prediction():
    _X, _Y, Xt, _yt, _Yt, model, _inf = one_hot_problem()
    ex = one_hot_explorer(y_test=None)
    with torch.no_grad():
        pred = model(Xt).argmax(1)
    assert ex.y_test.shape == (40, C) and torch.equal(ex.y_test.argmax(1), pred)
    ex.selected = 0
    assert ex.error == "" and ex.panel["pred"] == str(int(pred[0]))


def test_integer_test_inputs_are_cast_to_the_models_dtype():
    """Before, int64 test inputs for a float model failed at the first forward pass with
    "mat1 and mat2 must have the same dtype"."""
    _X, _Y, Xt, _yt, Yt, _model, _inf = one_hot_problem()
    whole = Xt.round()
    ex = one_hot_explorer(x_test=whole.long())
    expected = one_hot_explorer(x_test=whole)
    assert ex.x_test.dtype == torch.float64
    assert [i["pred"] for i in ex.gallery] == [i["pred"] for i in expected.gallery]
    ex.selected = expected.selected = 1
    assert ex.error == "" and ex.panel["helpful"] == expected.panel["helpful"]
