"""The explorer's Review tab (issue 16, section 3): training points ranked for a label check, fixes
proposed per point, a retrain with them, and the user's data never written."""

from __future__ import annotations

import re
import threading
import time

import pytest
import torch

import influence_widgets as iw
import influence_widgets.training
from influence_widgets.widgets import protocol
from influence_widgets.widgets.explorer import static_dir

FLIPS = (5, 40, 300)  # training points given a wrong label


@pytest.fixture(scope="module")
def flipped_digits():
    """(data, noisy y, Influence, model) of an LR trained on digits with FLIPS' labels shifted."""
    torch.set_num_threads(1)
    data = iw.datasets.digits()
    y = data.y_train.clone()
    y[list(FLIPS)] = (y[list(FLIPS)] + 3) % 10
    model = iw.models.logistic_regression(data)
    iw.train(model, (data.X_train, y), l2=0.01, progress=False)
    inf = iw.Influence(model, (data.X_train, y), l2=0.01, progress=False)
    return data, y, inf, model


@pytest.fixture
def explorer(flipped_digits):
    data, _y, inf, _model = flipped_digits
    ex = iw.InfluenceExplorer(inf, data, k=5).wait_ready()
    ex.tab = "review"
    ex.review_tab.rank_job.join(60)
    return ex


def _ranked(ex) -> list[int]:
    return [item["index"] for item in ex.review["items"]]


def test_the_planted_flips_are_among_the_first_ranks(explorer, flipped_digits):
    inf = flipped_digits[2]
    review = explorer.review
    assert review["state"] == "done" and review["method"] == "self_influence"
    assert review["score_name"] == "|self-influence|" and review["page"] == 0
    order = iw.review_order(inf, "self_influence")
    assert _ranked(explorer) == order[: explorer.review_tab.PAGE_SIZE].tolist()
    first = review["items"][0]
    assert first["rank"] == 1 and first["png"] and first["score"] > 0
    keys = protocol.ReviewItem.__optional_keys__
    assert all(set(item) <= keys for item in review["items"])
    assert set(review) <= protocol.ReviewState.__optional_keys__ | {"state"}
    shown = _ranked(explorer)
    explorer.review_page = 1
    shown += _ranked(explorer)
    assert set(FLIPS) <= set(shown)  # the first two pages: 24 of 1300 points


def test_self_influence_progress_shows_while_ranking(flipped_digits):
    data, y, _inf, model = flipped_digits
    inf = iw.Influence(model, (data.X_train, y), l2=0.01, batch_size=100, progress=False)
    ex = iw.InfluenceExplorer(inf, data, k=5).wait_ready()
    seen = []
    ex.observe(lambda change: seen.append(dict(change["new"])), names="review")
    ex.tab = "review"
    ex.review_tab.rank_job.join(60)
    running = [s for s in seen if s["state"] == "running"]
    assert running[0]["progress"] == 0.0 and running[0]["message"].startswith("Ranking")
    assert any(
        s["progress"] == 1.0 and s["message"].startswith("Computing the self-influence")
        for s in running
    )
    assert seen[-1]["state"] == "done"


def test_method_and_page_change_the_ranking_shown(explorer, flipped_digits):
    inf = flipped_digits[2]
    explorer.review_method = "loss"
    explorer.review_tab.rank_job.join(60)
    assert explorer.review["score_name"] == "training loss"
    assert _ranked(explorer) == iw.review_order(inf, "loss")[:12].tolist()
    explorer.review_page = 2
    assert explorer.review["page"] == 2 and explorer.review["items"][0]["rank"] == 25
    assert _ranked(explorer) == iw.review_order(inf, "loss")[24:36].tolist()
    explorer.review_method = "random"
    explorer.review_tab.rank_job.join(60)
    assert explorer.review["page"] == 0 and explorer.review["score_name"] is None
    assert _ranked(explorer) == iw.review_order(inf, "random")[:12].tolist()


def test_a_method_chosen_while_ranking_is_ranked_next(flipped_digits):
    data, _y, inf, _model = flipped_digits
    ex = iw.InfluenceExplorer(inf, data, k=5).wait_ready()
    ranking, started = ex.review_tab.ranking, threading.Event()

    def slow(method):
        started.set()
        time.sleep(0.5)
        return ranking(method)

    ex.review_tab.ranking = slow
    ex.tab = "review"
    assert started.wait(10) and ex.review["state"] == "running"
    ex.review_method = "loss"
    ex.review_tab.rank_job.join(60)
    assert ex.review["state"] == "done" and ex.review["method"] == "loss"
    assert _ranked(ex) == iw.review_order(inf, "loss")[:12].tolist()
    ex.review_page = 3
    ex.tab = "influence"
    ex.tab = "review"
    assert ex.review["page"] == 3  # switching tabs keeps the page


def test_relabel_remove_and_fixed_dataset(explorer, flipped_digits, untouched):
    data, y, inf, model = flipped_digits
    with untouched(model, data.X_train, data.y_train, y):
        explorer.relabel(5, int(data.y_train[5]))
        explorer.relabel(torch.tensor(40), data.y_train[40])  # tensors as y[i] gives them
        explorer.mark_for_removal(300)
        explorer.mark_for_removal(41)
        explorer.clear_fix(41)
        assert explorer.review_fixes == {
            5: int(data.y_train[5]),
            40: int(data.y_train[40]),
            300: None,
        }
        assert explorer.review["n_relabelled"] == 2 and explorer.review["n_removed"] == 1
        X2, y2 = explorer.fixed_dataset()
    keep = [i for i in range(len(y)) if i != 300]
    expected = y.clone()
    expected[[5, 40]] = data.y_train[[5, 40]]
    assert torch.equal(X2, data.X_train[keep]) and torch.equal(y2, expected[keep])
    assert X2.data_ptr() != data.X_train.data_ptr() and y2.data_ptr() != y.data_ptr()
    shown = {item["index"]: item for item in explorer.review["items"]}
    assert shown[5]["proposed"] == int(data.y_train[5]) and not shown[5]["remove"]
    assert not shown[51]["remove"] and shown[51]["proposed"] == -1  # 51 ranks third
    explorer.mark_for_removal(51)
    shown = {item["index"]: item for item in explorer.review["items"]}
    assert shown[51]["remove"] and shown[51]["proposed"] == -1
    explorer.clear_fixes()
    assert explorer.review_fixes == {} and explorer.review["n_removed"] == 0


def test_retrain_with_fixes_records_accuracy_and_leaves_the_data_alone(
    explorer, flipped_digits, untouched
):
    data, y, inf, model = flipped_digits
    explorer.selected = 3
    explorer.review_tab.retrain.TEST_BATCH = 100  # the 497 test points in 5 batches
    for i in FLIPS:
        explorer.relabel(i, int(data.y_train[i]))
    with untouched(model, data.X_train, data.y_train, y, inf.objective.module):
        result = explorer.retrain_with_fixes(wait=True)
    assert isinstance(result, iw.ReviewResult) and explorer.review_result is result
    assert result.n_relabelled == 3 and result.n_removed == 0 and result.selected == 3
    pred = iw.analysis.mislabel.accuracy
    assert result.accuracy_before == pytest.approx(pred(model, data.X_test, data.y_test))
    assert result.accuracy_after == pytest.approx(pred(result.model, data.X_test, data.y_test))
    with torch.no_grad():
        output = model(data.X_test.to(model.weight.dtype))
        loss = torch.nn.functional.cross_entropy(output, data.y_test)
    assert result.loss_before == pytest.approx(float(loss), rel=1e-5)
    assert result.loss_after < result.loss_before
    assert result.prediction_before is not None and 0 < result.probability_after <= 1
    # the minimum of R on the fixed data: iw.train from scratch reaches the same theta
    fresh = iw.models.logistic_regression(data)
    fixed = y.clone()
    fixed[list(FLIPS)] = data.y_train[list(FLIPS)]
    iw.train(fresh, (data.X_train, fixed), l2=0.01, progress=False)
    assert pred(fresh, data.X_test, data.y_test) == pytest.approx(result.accuracy_after)
    state = explorer.review_retrain
    assert state["state"] == "done" and state["accuracy_after"] == result.accuracy_after
    keys = protocol.ReviewRetrainState.__optional_keys__ | {"state"}
    assert set(state) <= keys and state["message"].startswith("Retrained with 3 relabelled")
    assert result.model is not model and result.model is not inf.objective.module


def test_retrain_without_test_labels_has_no_accuracy(flipped_digits):
    data, _y, inf, _model = flipped_digits
    ex = iw.InfluenceExplorer(inf, x_test=data.X_test, kind="tabular").wait_ready()
    ex.mark_for_removal(5)
    result = ex.retrain_with_fixes(wait=True)
    assert result.accuracy_before is None and result.loss_after is None
    assert result.n_removed == 1 and result.selected is None and result.prediction_after is None


def test_a_dataset_training_set_is_not_written(untouched):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(60, 3, generator=gen, dtype=torch.float64)
    y = (X[:, 0] > 0).long()
    model = torch.nn.Linear(3, 2, dtype=torch.float64)
    iw.train(model, (X, y), l2=0.1, progress=False)
    data = torch.utils.data.TensorDataset(X, y)
    inf = iw.Influence(model, data, l2=0.1, progress=False)
    ex = iw.InfluenceExplorer(
        inf, x_test=X[:10], y_test=y[:10], kind="tabular", train_display=X.numpy()
    ).wait_ready()
    with untouched(model, X, y, *data.tensors):
        ex.relabel(0, 1 - int(y[0]))
        ex.mark_for_removal(1)
        X2, y2 = ex.fixed_dataset()
        ex.retrain_with_fixes(wait=True)
    assert len(X2) == 59 and int(y2[0]) == 1 - int(y[0])


def _slow_train(started: threading.Event):
    def train(model, data, **_options):
        started.set()
        x = data[0][:2].to(next(model.parameters()).dtype)
        for _ in range(2000):
            model(x)
            time.sleep(0.01)

    return train


def test_cancel_stops_the_retrain_within_2_s(explorer, monkeypatch):
    started = threading.Event()
    monkeypatch.setattr(influence_widgets.training, "train", _slow_train(started))
    explorer.mark_for_removal(5)
    explorer.handle_event({"event": protocol.REVIEW_RETRAIN})
    assert started.wait(30)
    begin = time.perf_counter()
    explorer.handle_event({"event": protocol.REVIEW_CANCEL})
    assert explorer.review_retrain["state"] == "cancelling"
    explorer.review_tab.retrain.job.join(10)
    assert time.perf_counter() - begin < 2.0
    assert explorer.review_retrain["state"] == "cancelled" and explorer.review_result is None


def test_a_cancelled_retrain_with_wait_returns_none_not_the_previous_result(explorer, monkeypatch):
    """Before, a run cancelled from another thread returned the previous run's ReviewResult."""
    explorer.mark_for_removal(5)
    previous = explorer.retrain_with_fixes(wait=True)
    assert isinstance(previous, iw.ReviewResult)
    started = threading.Event()
    monkeypatch.setattr(influence_widgets.training, "train", _slow_train(started))
    explorer.mark_for_removal(40)
    returned = []
    waiting = threading.Thread(
        target=lambda: returned.append(explorer.retrain_with_fixes(wait=True))
    )
    waiting.start()
    assert started.wait(30)
    explorer.cancel_retrain()
    waiting.join(10)
    assert not waiting.is_alive() and returned == [None]
    assert explorer.review_retrain["state"] == "cancelled"
    assert explorer.review_result is previous  # the latest retrain that finished


def test_a_failed_retrain_says_what_to_do(explorer, monkeypatch):
    def broken(*_args, **_options):
        raise RuntimeError("no luck")

    monkeypatch.setattr(influence_widgets.training, "train", broken)
    explorer.mark_for_removal(3)
    with pytest.raises(RuntimeError, match="Retrain with fixes failed: RuntimeError: no luck"):
        explorer.retrain_with_fixes(wait=True)
    state = explorer.review_retrain
    assert state["state"] == "error" and "What to do: check the fixes" in state["message"]


def test_removing_every_point_is_refused(flipped_digits):
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1])
    model = torch.nn.Linear(2, 2, dtype=torch.float64)
    iw.train(model, (X, y), l2=0.5, progress=False)
    inf = iw.Influence(model, (X, y), l2=0.5, progress=False)
    ex = iw.InfluenceExplorer(inf, x_test=X, y_test=y, kind="tabular").wait_ready()
    for i in range(4):
        ex.mark_for_removal(i)
    with pytest.raises(ValueError, match=r"^review_fixes: every training point is marked"):
        ex.retrain_with_fixes()
    assert ex.review_retrain["message"].startswith("review_fixes: every training point")


def test_front_end_fix_messages_and_their_errors(explorer):
    send = explorer.handle_event
    new = (int(explorer.influence.train.y[7]) + 1) % 10
    send({"event": protocol.REVIEW_RELABEL, "index": 7, "label": new})
    send({"event": protocol.REVIEW_REMOVE, "index": 8})
    assert explorer.review_fixes == {7: new, 8: None}
    send({"event": protocol.REVIEW_CLEAR, "index": 8})
    assert 8 not in explorer.review_fixes
    send({"event": protocol.REVIEW_RELABEL, "index": 7, "label": 99})
    assert re.match(r"label: 99 is not a class index", explorer.review_retrain["message"])
    send({"event": protocol.REVIEW_CLEAR_ALL})
    send({"event": protocol.REVIEW_RETRAIN})
    assert explorer.review_retrain["message"].startswith("review_fixes: none proposed")
    assert explorer.error == ""


def test_the_front_end_sends_the_fix_events():
    source = (static_dir() / "explorer.js").read_text()
    for event in protocol.FIX_EVENTS:
        assert f'"{event}"' in source


def _explorer_call(method: str, *args):
    def call(ex):
        return getattr(ex, method)(*args)

    return call


BAD_INPUT = [
    ("relabel-negative-index", _explorer_call("relabel", -1, 3), ValueError, r"^i: -1 is not"),
    ("relabel-index-too-large", _explorer_call("relabel", 10**6, 3), ValueError, r"^i: "),
    ("relabel-float-index", _explorer_call("relabel", 1.0, 3), TypeError, r"^i: expected an int"),
    (
        "relabel-float-tensor-label",
        _explorer_call("relabel", 0, torch.tensor(3.0)),
        TypeError,
        r"^label: expected an int",
    ),
    ("relabel-bool-index", _explorer_call("relabel", True, 3), TypeError, r"^i: expected an int"),
    ("relabel-label-range", _explorer_call("relabel", 0, 10), ValueError, r"^label: 10 is not"),
    ("relabel-label-negative", _explorer_call("relabel", 0, -1), ValueError, r"^label: -1 "),
    ("relabel-label-str", _explorer_call("relabel", 0, "3"), TypeError, r"^label: expected"),
    (
        "relabel-same-label",
        lambda ex: ex.relabel(0, int(ex.influence.train.y[0])),
        ValueError,
        r"^label: training point 0 is already labelled",
    ),
    ("remove-bad-index", _explorer_call("mark_for_removal", -2), ValueError, r"^i: -2 "),
    ("clear-str-index", _explorer_call("clear_fix", "0"), TypeError, r"^i: expected an int"),
    (
        "retrain-no-fixes",
        lambda ex: ex.retrain_with_fixes(wait=True),
        ValueError,
        r"^review_fixes: none proposed",
    ),
    (
        "method-unknown",
        lambda ex: setattr(ex, "review_method", "gradient"),
        Exception,
        r"review_method",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "pattern"), [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_names_the_argument(explorer, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(explorer)
    assert explorer.review_fixes == {}


def test_a_top_layer_influence_retrains_only_its_parameters():
    """With params= a top layer, "Retrain with fixes" retrains theta only (the minimum of R over
    theta, as the Influence defines it): the layers below stay as they were."""
    torch.manual_seed(0)
    X = torch.randn(60, 4, dtype=torch.float64)
    y = (X[:, 0] + X[:, 1] > 0).long()
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2)
    ).double()
    iw.train(model, (X, y), l2=0.01, progress=False)
    inf = iw.Influence(model, (X, y), l2=0.01, params=["2.weight", "2.bias"], progress=False)
    ex = iw.InfluenceExplorer(
        inf, x_test=X[:5], y_test=y[:5], kind="tabular", fit_in_background=False
    )
    ex.relabel(0, 1 - int(y[0]))
    result = ex.retrain_with_fixes(wait=True)
    assert torch.equal(result.model[0].weight, model[0].weight)
    assert torch.equal(result.model[0].bias, model[0].bias)
    assert not torch.equal(result.model[2].weight, model[2].weight)
