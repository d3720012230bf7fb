"""The explorer with several attribution methods: the switch, Compare, LDS per method, the checks
that every method explains the same model, background preparation and the saved page."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
import torch
import traitlets

import influence_widgets as iw
from influence_widgets.core.influence import TopInfluence
from influence_widgets.widgets import lookahead as lookahead_module
from influence_widgets.widgets import protocol
from influence_widgets.widgets.compare import overlap_of


@pytest.fixture(scope="module")
def trained():
    """(data, model, checkpoints) of the digits logistic regression, trained with a recorder."""
    data = iw.datasets.digits()
    model = iw.models.logistic_regression(data)
    rec = iw.CheckpointRecorder(model)
    iw.train(model, data, l2=0.01, recorder=rec, progress=False)
    return data, model, rec


def _methods(trained) -> dict:
    data, model, rec = trained
    train = (data.X_train, data.y_train)
    return {
        "influence": iw.Influence(model, train, l2=0.01, progress=False),
        "TracIn": iw.TracIn(model, train, rec, progress=False),
        "Grad-Dot": iw.GradDot(model, train, progress=False),
    }


def _wait_methods(ex, timeout: float = 60.0):
    deadline = time.time() + timeout
    while any(m["state"] not in ("ready", "error") for m in ex.methods):
        assert time.time() < deadline, ex.methods
        time.sleep(0.05)
    return ex


@pytest.fixture
def explorer(trained):
    data = trained[0]
    return _wait_methods(
        iw.InfluenceExplorer(methods=_methods(trained), data=data, k=5).wait_ready()
    )


def test_the_switch_shows_each_methods_top_lists(explorer, trained):
    data = trained[0]
    methods = explorer.context.methods
    assert [m["name"] for m in explorer.methods] == ["influence", "TracIn", "Grad-Dot"]
    assert all(m["state"] == "ready" for m in explorer.methods)
    explorer.selected = 3
    x, y = data.X_test[3:4], data.y_test[3:4]
    shown = {}
    for name in ("influence", "TracIn", "Grad-Dot"):
        explorer.method = name
        panel = explorer.panel
        expected = methods.entries[name].method.top(x, y, k=5)
        assert panel["method"] == name and panel["test_index"] == 3
        assert [it["index"] for it in panel["helpful"]] == expected.helpful[0].tolist()
        assert [it["index"] for it in panel["harmful"]] == expected.harmful[0].tolist()
        assert [it["score"] for it in panel["helpful"]] == pytest.approx(
            expected.helpful_scores[0].tolist()
        )
        assert f"the panel shows {name}" in explorer.message
        shown[name] = [it["index"] for it in panel["helpful"]]
    assert shown["influence"] != shown["TracIn"]  # the switch changed what is shown
    explorer.method = "TracIn"
    assert (
        explorer.panel["score_axis"] == "TracIn score" and "TracIn" in explorer.panel["score_help"]
    )
    explorer.method = "influence"
    assert explorer.panel["score_help"] == "" and explorer.panel["score_axis"] == ""
    assert set(explorer.panel) == protocol.Panel.__required_keys__


def test_the_plain_form_is_one_method_named_influence(trained):
    data, model, _ = trained
    inf = iw.Influence(model, (data.X_train, data.y_train), l2=0.01, progress=False)
    ex = iw.InfluenceExplorer(inf, data, k=3).wait_ready()
    assert ex.method == "influence" and [m["name"] for m in ex.methods] == ["influence"]
    assert ex.compare_pair == [] and ex.message.startswith("Ready (precomputed in")
    ex.selected = 1
    assert ex.panel["method"] == "influence" and ex.panel["score_help"] == ""


def test_overlap_of_two_top_lists_is_counted_and_marked():
    def top(helpful, harmful):
        up, down = torch.tensor([helpful]), torch.tensor([harmful])
        return TopInfluence(
            helpful=up, helpful_scores=up * 1.0, harmful=down, harmful_scores=-down * 1.0
        )

    a = top([1, 2, 3, 4], [9, 8, 7, 6])
    b = top([4, 9, 1, 5], [6, 2, 11, 12])
    found = overlap_of(a, b)
    assert found.helpful == [1, 4] and found.harmful == [6] and found.k == 4
    assert sorted(found.opposite) == [2, 9]  # a: 2 helpful, b: harmful; a: 9 harmful, b: helpful
    assert found.text() == (
        "2 of 4 helpful and 1 of 4 harmful in common; 2 points helpful for one method and "
        "harmful for the other"
    )
    assert found.mark(1) == "both" and found.mark(2) == "opposite" and found.mark(3) is None
    assert overlap_of(a, a).text() == "4 of 4 helpful and 4 of 4 harmful in common"


def test_compare_puts_two_methods_side_by_side_with_the_overlap(explorer, trained):
    data = trained[0]
    methods = explorer.context.methods
    explorer.influence_view = "compare"
    assert explorer.compare == {}  # nothing selected yet
    explorer.selected = 7
    explorer.compare_pair = ["influence", "TracIn"]
    c = explorer.compare
    x, y = data.X_test[7:8], data.y_test[7:8]
    a = methods.entries["influence"].method.top(x, y, k=5)
    b = methods.entries["TracIn"].method.top(x, y, k=5)
    common_helpful = set(a.helpful[0].tolist()) & set(b.helpful[0].tolist())
    common_harmful = set(a.harmful[0].tolist()) & set(b.harmful[0].tolist())
    assert c["test_index"] == 7 and c["methods"] == ["influence", "TracIn"]
    assert set(c["overlap"]["helpful"]) == common_helpful
    assert set(c["overlap"]["harmful"]) == common_harmful
    assert c["overlap"]["text"].startswith(
        f"{len(common_helpful)} of 5 helpful and {len(common_harmful)} of 5 harmful in common"
    )
    left, right = c["columns"]
    assert [it["index"] for it in left["helpful"]] == a.helpful[0].tolist()
    assert [it["index"] for it in right["harmful"]] == b.harmful[0].tolist()
    marked = {it["index"] for it in right["helpful"] if it.get("shared") == "both"}
    assert marked == common_helpful
    assert set(c) <= protocol.CompareState.__optional_keys__
    assert set(left) == protocol.CompareColumn.__required_keys__
    explorer.k = 3  # a new k: the view follows
    assert explorer.compare["overlap"]["k"] == 3
    with pytest.raises(traitlets.TraitError, match="compare_pair: expected two"):
        explorer.compare_pair = ["influence", "nope"]


def test_lds_in_verify_checks_the_shown_method_and_scores_the_others_on_the_same_retrains(
    explorer,
):
    explorer.selected = 2
    explorer.method = "TracIn"
    result = explorer.run_lds(4, wait=True)
    v = explorer.verify
    assert v["method"] == "TracIn" and v["state"] == "done"
    assert explorer.lds_result is result
    point = explorer.context.methods.point_lds
    other = point[("influence", 2)]
    np.testing.assert_array_equal(other.masks, result.masks)  # the same retrains
    np.testing.assert_array_equal(other.actual, result.actual)
    explorer.method = "influence"  # the switch shows that method's LDS of this point
    assert explorer.verify["method"] == "influence"
    assert explorer.verify["lds"] == pytest.approx(float(other.per_test[0]), nan_ok=True)
    explorer.influence_view = "compare"
    explorer.compare_pair = ["influence", "TracIn"]
    lines = [col["lds"] for col in explorer.compare["columns"]]
    assert lines[0][0].startswith("LDS ") and "on this test point" in lines[0][0]
    assert "4 subsets" in lines[1][0]
    # leave-one-out checks the reference Influence, whichever method is shown, and says so
    explorer.method = "Grad-Dot"
    explorer.run_verify(n_remove=3, wait=True)
    assert explorer.verify["method"] == "influence" and explorer.verify["kind"] == "loo"


def test_set_lds_shows_a_given_lds_beside_the_methods_name(explorer):
    explorer.selected = 4
    explorer.influence_view = "compare"
    explorer.compare_pair = ["Grad-Dot", "influence"]
    given = explorer.run_lds(3, wait=True)  # any LDSResult will do: here influence's
    explorer.set_lds("Grad-Dot", given)
    text = explorer.compare["columns"][0]["lds"][-1]
    assert text.startswith("LDS ") and "mean over 1 test point, 3 subsets" in text
    assert explorer.methods[2]["lds"]["n_subsets"] == 3
    with pytest.raises(TypeError, match="result: expected an iw.LDSResult"):
        explorer.set_lds("Grad-Dot", 0.5)
    with pytest.raises(ValueError, match="name: 'nope' is not one of the explorer's methods"):
        explorer.set_lds("nope", given)


def test_each_method_keeps_its_own_page_scored_ahead(trained, monkeypatch):
    monkeypatch.setattr(lookahead_module, "LOOKAHEAD_SECONDS", 0.0)  # every click "slow"
    data = trained[0]
    ex = _wait_methods(
        iw.InfluenceExplorer(methods=_methods(trained), data=data, k=4, page_size=6).wait_ready()
    )
    ex.selected = 0  # times the first click: the page is then scored ahead
    for name in ("influence", "TracIn"):
        ex.method = name
        ahead = ex.lookahead
        ex.selected = 0 if name == "influence" else 1
        deadline = time.time() + 30
        while ahead.remaining() and time.time() < deadline:
            time.sleep(0.05)
        assert not ahead.remaining(), name
    caches = ex.influence_tab.lookaheads
    assert caches["influence"] is not caches["TracIn"]
    x, y = data.X_test[5:6], data.y_test[5:6]
    for name in ("influence", "TracIn"):
        ex.method = name
        ex.selected = 5  # a click on the page: read from this method's cache
        expected = ex.context.methods.entries[name].method.top(x, y, k=4)
        assert [it["index"] for it in ex.panel["helpful"]] == expected.helpful[0].tolist()
        assert caches[name].cached(5).helpful[0].tolist() == expected.helpful[0].tolist()


def test_a_method_built_in_the_background_is_offered_once_ready(trained):
    data, model, _ = trained
    built = []

    def build():
        built.append(True)
        return iw.GradDot(model, (data.X_train, data.y_train), progress=False)

    inf = iw.Influence(model, (data.X_train, data.y_train), l2=0.01, progress=False)
    ex = iw.InfluenceExplorer(methods={"influence": inf, "later": build}, data=data)
    assert [m["state"] for m in ex.methods][1] in ("waiting", "preparing", "ready")
    _wait_methods(ex.wait_ready())
    assert built == [True] and ex.methods[1]["state"] == "ready"
    assert ex.methods[1]["description"].startswith("Grad-Dot")
    ex.method = "later"
    ex.selected = 0
    assert ex.panel["method"] == "later"


def test_a_method_that_fails_to_build_or_explains_another_model_is_marked_with_why(trained):
    data, model, _ = trained
    inf = iw.Influence(model, (data.X_train, data.y_train), l2=0.01, progress=False)
    other = iw.models.logistic_regression(data)  # untrained: other predictions

    def broken():
        raise RuntimeError("no models to train")

    ex = iw.InfluenceExplorer(
        methods={
            "influence": inf,
            "broken": broken,
            "other model": lambda: iw.GradDot(other, (data.X_train, data.y_train)),
            "not a method": lambda: "text",
        },
        data=data,
    )
    _wait_methods(ex.wait_ready())
    states = {m["name"]: (m["state"], m["message"]) for m in ex.methods}
    assert states["broken"] == ("error", "RuntimeError: no models to train")
    assert states["other model"][0] == "error"
    assert "methods: 'other model' explains another model" in states["other model"][1]
    assert (
        "methods['not a method'] (what it returned): expected an attribution method"
        in (states["not a method"][1])
    )
    with pytest.raises(traitlets.TraitError, match="method: 'broken' is not ready yet"):
        ex.method = "broken"
    with pytest.raises(traitlets.TraitError, match="method: 'nope' is not one of"):
        ex.method = "nope"
    assert ex.method == "influence"


def test_bad_methods_are_refused_naming_methods(trained):
    data, model, rec = trained
    train = (data.X_train, data.y_train)
    inf = iw.Influence(model, train, l2=0.01, progress=False)
    half = (data.X_train[:600], data.y_train[:600])
    flipped = (data.X_train, (data.y_train + 1) % 10)
    other = iw.models.logistic_regression(data)
    cases = [
        ({}, ValueError, "methods: the dict is empty"),
        ([inf], TypeError, "methods: expected a dict"),
        ({"g": iw.GradDot(model, train)}, ValueError, "methods: needs at least one iw.Influence"),
        ({"i": inf, "g": iw.GradDot(model, half)}, ValueError, "methods: 'g' scores 600"),
        ({"i": inf, "g": iw.GradDot(model, flipped)}, ValueError, "other training labels"),
        ({"i": inf, "g": iw.GradDot(other, train)}, ValueError, "'g' explains another model"),
        ({"i": inf, "x": 3}, TypeError, r"methods\['x'\]: expected an attribution method"),
        ({"i": inf, 3: inf}, TypeError, "methods: keys name the methods"),
    ]
    for methods, error, message in cases:
        with pytest.raises(error, match=message):
            iw.InfluenceExplorer(methods=methods, data=data)
    with pytest.raises(TypeError, match="methods: pass the methods alone"):
        iw.InfluenceExplorer(inf, data, methods={"i": inf})
    with pytest.raises(TypeError, match="influence: got a dict; pass several methods as methods="):
        iw.InfluenceExplorer({"i": inf}, data)


def test_several_methods_leave_the_users_objects_untouched(trained, untouched):
    data, model, rec = trained
    methods = _methods(trained)
    with untouched(model, data.X_train, data.y_train, data):
        ex = _wait_methods(iw.InfluenceExplorer(methods=methods, data=data, k=3).wait_ready())
        ex.selected = 1
        ex.method = "TracIn"
        ex.influence_view = "compare"
        ex.run_lds(3, wait=True)
    assert [c.lr for c in rec] == [c.lr for c in rec.checkpoints] and len(rec) >= 1


def test_the_saved_page_holds_the_method_shown_and_says_so(explorer, tmp_path):
    explorer.method = "TracIn"
    explorer.influence_view = "compare"
    path = explorer.save_html(tmp_path / "page.html", [0, 1], progress=False)
    html = path.read_text(encoding="utf-8")
    found = re.search(r'<script type="application/json" id="iw-saved-state">(.*?)</script>', html)
    state = json.loads(found.group(1))
    traits = state["traits"]
    assert "scored by TracIn" in traits["message"]
    assert "also had influence, Grad-Dot, which this page does not hold" in traits["message"]
    assert [m["name"] for m in traits["methods"]] == ["TracIn"] and traits["method"] == "TracIn"
    assert traits["influence_view"] == "panel" and traits["compare"] == {}
    explorer.selected = 1
    saved = state["panels"]["1"]
    assert saved["method"] == "TracIn"
    assert [it["index"] for it in saved["helpful"]] == [
        it["index"] for it in explorer.panel["helpful"]
    ]
