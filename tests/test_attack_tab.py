"""The explorer's Attack tab (no browser): what it says before and after a run, the sliders' values,
the smallest-eps search, and the attack demo. Browser: tests/browser/test_attack_browser.py."""

from __future__ import annotations

import time

import numpy as np
import pytest

import influence_widgets as iw
from influence_widgets.magic import DEMO_ATTACK, demo_explorer
from influence_widgets.widgets import protocol


@pytest.fixture
def explorer(digits_influence):
    data, inf = digits_influence
    return iw.InfluenceExplorer(inf, data, k=3).wait_ready()


def _correct(explorer) -> list[int]:
    return np.nonzero(explorer.test_points.predicted == explorer.test_points.true)[0].tolist()


def _wrong(explorer) -> list[int]:
    return np.nonzero(explorer.test_points.predicted != explorer.test_points.true)[0].tolist()


def test_a_misclassified_point_is_blocked_at_once_with_what_to_do(explorer):
    wrong = _wrong(explorer)[0]
    explorer.selected = wrong
    blocked = explorer.attack_blocked
    assert f"Test point #{wrong} is already misclassified" in blocked
    assert "Pick a correctly classified test point" in blocked
    assert explorer.attack == protocol.IDLE  # nothing ran: the tab says it before Run
    with pytest.raises(RuntimeError, match="already misclassified"):
        explorer.run_attack(wait=True)
    with pytest.raises(RuntimeError, match="already misclassified"):
        explorer.find_smallest_eps(wait=True)
    explorer.selected = _correct(explorer)[0]
    assert explorer.attack_blocked == ""


def test_run_attack_sets_the_sliders_to_the_values_it_uses(explorer, digits_influence, untouched):
    data, inf = digits_influence
    explorer.selected = _correct(explorer)[0]
    with untouched(data, inf.train.X, inf.train.y, inf.objective.module):
        result = explorer.run_attack(n_poison=3, eps=6.0, step=0.5, max_iter=4, wait=True)
    assert (explorer.attack_n_poison, explorer.attack_eps) == (3, 6.0)
    assert (explorer.attack_step, explorer.attack_max_iter) == (0.5, 4)
    assert result.eps == pytest.approx(6 / 255) and result.step_size == pytest.approx(0.5 / 255)
    a = explorer.attack
    assert (a["n_poison"], a["eps"], a["step"]) == (3, pytest.approx(6.0), pytest.approx(0.5))
    keys = protocol.AttackState.__required_keys__ | protocol.AttackState.__optional_keys__
    assert set(a) <= keys


def test_auto_step_is_craft_attacks_default_so_the_tab_repeats_craft_attack(explorer):
    """Notebook 03's "same settings" cell: the tab's default step is craft_attack's eps / 12.5."""
    index = _correct(explorer)[1]
    explorer.selected = index
    assert explorer.attack_step == 0.0  # auto
    tab = explorer.run_attack(n_poison=5, eps=64.0, max_iter=8, wait=True)
    direct = iw.craft_attack(
        explorer.influence, explorer.x_test[index : index + 1],
        explorer.y_test[index : index + 1], n_poison=5, eps=iw.eight_bit_levels(64),
        max_iter=8, progress=False,
    )  # fmt: skip
    assert tab.step_size == pytest.approx(tab.eps / 12.5) == pytest.approx(direct.step_size)
    assert tab.poisoned.tolist() == direct.poisoned.tolist()
    assert tab.true_class_probability == pytest.approx(direct.true_class_probability)
    assert explorer.attack["step"] == pytest.approx(64 / 12.5)


def test_the_tab_says_why_the_attack_stopped(explorer):
    explorer.selected = _correct(explorer)[0]
    result = explorer.run_attack(n_poison=1, eps=2.0, max_iter=2, wait=True)
    a = explorer.attack
    assert result.stopped == "max_iter" and a["stopped"] == "max_iter"
    assert a["stop_reason"] == result.stop_reason
    assert a["stop_reason"].startswith("Stopped after 2 steps (the most allowed, max_iter)")
    assert "raise the iterations or eps" in a["stop_reason"]
    assert a["message"].startswith("Finished in ")


def test_image_sliders_are_8_bit_levels_with_generous_maxima(explorer):
    limits = explorer.attack_limits
    assert limits["unit"] == "8-bit levels" and limits["kind"] == "image"
    assert limits["eps"][1] == 255 and limits["n_poison"][1] >= 100 and limits["max_iter"][1] >= 100
    assert limits["step"][0] > 0  # the slider is a fixed step; auto is the checkbox (trait 0)
    assert explorer.attack_step == 0.0 and explorer.attack_stop_margin == 0.0  # craft_attack's
    assert limits["stop_margin"][0] == 0 and 0.5 <= limits["stop_margin"][1] < 1


def _breast_cancer_explorer(**features):
    data = iw.datasets.breast_cancer()
    model = iw.models.logistic_regression(data)
    iw.train(model, data, l2=0.01, progress=False)
    inf = iw.Influence(model, (data.X_train, data.y_train), l2=0.01, progress=False)
    explorer = iw.InfluenceExplorer(inf, data, k=2, fit_in_background=False, **features)
    return data, explorer


def test_tabular_sliders_are_in_units_of_the_features_spread():
    data, explorer = _breast_cancer_explorer()
    spread = float(data.X_train.double().std(0).median())
    assert explorer.attack_limits["unit"] == "SD"  # the model reads standardised features
    assert explorer.attack_limits["kind"] == "table"
    assert explorer.attack_eps == pytest.approx(spread, rel=1e-4)
    assert explorer.attack_limits["eps"][1] == pytest.approx(8 * spread, rel=1e-4)
    X = data.X_train * 3 + 1
    model = iw.models.logistic_regression(data)
    iw.train(model, (X, data.y_train), l2=0.01, progress=False)
    raw = iw.InfluenceExplorer(
        iw.Influence(model, (X, data.y_train), l2=0.01, progress=False),
        x_test=data.X_test * 3 + 1, y_test=data.y_test, kind="tabular", fit_in_background=False,
    )  # fmt: skip
    assert raw.attack_limits["unit"] == "model input units"  # not standardised


def test_a_tables_changes_are_shown_in_its_own_units_inside_its_training_range():
    """breast_cancer's model reads standardised features and its gallery shows mm and mm^2: the
    tab shows each change as the gallery shows the row ("mean area: 1326 -> 1290"), and no
    poisoned feature leaves the range of the training set (no negative area)."""
    data, explorer = _breast_cancer_explorer()
    explorer.selected = _correct(explorer)[0]
    result = explorer.run_attack(n_poison=20, eps=3.0, max_iter=20, wait=True)
    X = data.X_train
    low, high = X.amin(0), X.amax(0)
    perturbed = result.perturbed_inputs
    assert bool((perturbed >= low - 1e-6).all()) and bool((perturbed <= high + 1e-6).all())
    assert bool((perturbed != result.original_inputs).any())
    raw_train = np.asarray(data.units[0])  # the rows in mm, mm^2, ... as the gallery shows them
    names = data.feature_names
    a = explorer.attack
    assert a["changes_in_data_units"] is True
    sd_raw, sd_in = raw_train.std(0), X.double().std(0, correction=0).numpy()
    for item, row in zip(a["items"], range(len(result.poisoned)), strict=True):
        j = item["index"]
        moved = (perturbed[row] - result.original_inputs[row]).double().numpy()
        assert item["changes"], item
        for name, before, after in item["changes"]:
            k = names.index(name)
            assert before == pytest.approx(raw_train[j, k], rel=1e-6)  # the gallery's value
            assert after - before == pytest.approx(moved[k] * sd_raw[k] / sd_in[k], rel=1e-3)
            assert raw_train[:, k].min() - 1e-6 <= after <= raw_train[:, k].max() + 1e-6
            if raw_train[:, k].min() >= 0:
                assert after >= 0, (name, before, after)


def test_a_tabular_display_that_is_not_a_map_of_the_inputs_shows_the_inputs():
    """When the rows shown are not an affine map of what the model reads (here: shuffled), the
    changes stay in the model's input values and the tab says so."""
    data, _ = _breast_cancer_explorer()
    shuffled = np.random.default_rng(0).permutation(np.asarray(data.units[0]))
    _, explorer = _breast_cancer_explorer(train_display=shuffled)
    explorer.selected = _correct(explorer)[0]
    result = explorer.run_attack(n_poison=2, eps=1.0, max_iter=2, wait=True)
    a = explorer.attack
    assert a["changes_in_data_units"] is False
    name, before, after = a["items"][0]["changes"][0]
    k = data.feature_names.index(name)
    assert before == pytest.approx(float(result.original_inputs[0, k]), rel=1e-6)


def test_the_stop_margin_goes_on_past_the_flip_and_the_tab_shows_the_lead(explorer):
    explorer.selected = _correct(explorer)[0]
    result = explorer.run_attack(n_poison=100, eps=128.0, max_iter=40, stop_margin=0.2, wait=True)
    assert explorer.attack_stop_margin == 0.2
    assert result.stop_margin == 0.2 and result.flipped and result.margin >= 0.2
    a = explorer.attack
    assert a["stop_margin"] == 0.2 and a["margin"] == pytest.approx(result.margin)
    assert "the new class leads by" in a["stop_reason"]
    with pytest.raises(ValueError, match="stop_margin"):
        explorer.run_attack(stop_margin=1.5, wait=True)


def test_find_smallest_eps_sets_the_eps_slider_and_shows_the_attack_there(explorer):
    explorer.selected = _correct(explorer)[0]
    explorer.attack_n_poison, explorer.attack_max_iter = 40, 30
    explorer.attack_tab.SEARCH_START_DIVISOR, explorer.attack_tab.SEARCH_BISECTIONS = (
        4,
        1,
    )  # a short search
    explorer.handle_event({"event": protocol.ATTACK_SEARCH})
    assert explorer.attack["state"] == "running"
    explorer.attack_tab.job.join(300)
    search, a = explorer.eps_search, explorer.attack
    assert a["state"] == "done", a.get("message")
    assert search.eps is not None and a["flipped"]
    assert explorer.attack_eps == pytest.approx(search.eps * 255) == pytest.approx(a["eps"])
    assert a["message"].startswith(f"Smallest eps that flips: {search.eps * 255:.3g} 8-bit levels")
    assert a["search"]["tried"][0] == [pytest.approx(255 / 4), search.tried[0][1]]
    assert explorer.attack_result is search.result


@pytest.mark.fashion_mnist
def test_the_attack_demo_opens_quickly_and_its_defaults_flip_a_correct_point():
    start = time.perf_counter()
    explorer = demo_explorer("fashion_attack").wait_ready()
    opened = time.perf_counter() - start
    assert opened < 60  # about 10 s alone on this 2-core machine; shared in CI
    assert explorer.class_names == ["Sandal", "Sneaker"]
    assert explorer.attack_eps == DEMO_ATTACK["fashion_attack"]["attack_eps"]
    explorer.selected = _correct(explorer)[0]
    result = explorer.run_attack(wait=True)
    assert result.flipped, result
    assert explorer.attack["stop_reason"].startswith("Flipped after")


def test_the_tab_reports_progress_while_it_chooses_the_points_to_perturb(explorer):
    """Before the first step the attack scores every training point (the paper's choice by the
    input gradient's L1 norm): the status says so instead of an empty progress bar."""
    explorer.selected = _correct(explorer)[0]
    messages = []
    explorer.observe(lambda change: messages.append(change["new"].get("message")), "attack")
    explorer.run_attack(n_poison=2, eps=8.0, max_iter=2, wait=True)
    assert any(m and m.startswith("Choosing the training points to perturb") for m in messages)
    assert any(m and m.startswith("Step ") for m in messages)
