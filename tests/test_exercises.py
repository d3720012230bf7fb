"""The classroom exercises (notebooks/exercises/) and their checkers (influence_widgets.exercises).

Every checker accepts the right answer and rejects the typical wrong ones with feedback that names
the mistake and never shows the answer; every teacher's solution passes every check; every blank
student notebook runs to the end with each check "not yet" and feedback; each notebook runs
headless within 3 minutes.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
import time
import warnings
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from IPython.core.formatters import DisplayFormatter
from nbclient import NotebookClient
from torch.func import grad, hessian

import influence_widgets as iw
from influence_widgets.analysis.lds import SubsetRetrain, TrainFromScratch, mean_and_se
from influence_widgets.analysis.loo import LOOResult
from influence_widgets.exercises import (
    CheckResult,
    by_hand,
    depends,
    when_fails,
    which_method,
    wrong_labels,
)
from tests.scripts import load_script

EXERCISE_DIR = Path(__file__).parent.parent / "notebooks" / "exercises"
STUDENT = sorted(EXERCISE_DIR.glob("*.ipynb"))
SOLUTIONS = sorted((EXERCISE_DIR / "solutions").glob("*.ipynb"))
TIME_LIMIT_S = 180


# ----- exercise 1: by hand -------------------------------------------------------------------
OTHER = 5  # another training point, for "the wrong training point"


@pytest.fixture(scope="module")
def tiny():
    """The notebook's problem: 3 against 8 on 4x4 digits, p = 32, the right answers and the
    pieces of typical wrong ones."""
    data = iw.datasets.digits()

    def pick(X, y):
        keep = (y == 3) | (y == 8)
        return X[keep].reshape(-1, 4, 2, 4, 2).mean((2, 4)).reshape(-1, 16).double(), (
            y[keep] == 8
        ).long()

    X, y = pick(data.X_train, data.y_train)
    Xt, yt = pick(data.X_test, data.y_test)
    l2 = 0.01
    model = iw.models.logistic_regression((16, 2), bias=False)
    iw.train(model, (X, y), l2=l2, progress=False)
    inf = iw.Influence(model, (X, y), l2=l2, progress=False)
    theta = model.weight.detach().reshape(-1)

    def losses(th, A, b):
        return F.cross_entropy(A @ th.reshape(2, 16).T, b, reduction="none")

    def term(j):  # the gradient of ell_j
        return grad(lambda th: losses(th, X[j : j + 1], y[j : j + 1]).sum() + 0.5 * l2 * th @ th)

    x_test, y_test, i = Xt[:1], yt[:1], 0
    g_test = grad(lambda th: losses(th, x_test, y_test).sum())(theta)
    g_i = term(i)(theta)
    H = hessian(lambda th: losses(th, X, y).mean() + 0.5 * l2 * th @ th)(theta)
    I_up = float(-g_test @ torch.linalg.solve(H, g_i))
    return dict(
        inf=inf, x=x_test, y=y_test, i=i, n=len(y), l2=l2, theta=theta,
        g_test=g_test, g_i=g_i, H=H, I_up=I_up, removal=-I_up / len(y),
        # the gradient of the whole risk R, ~0 at its minimum; of the mean data loss, -l2 theta
        g_R=grad(lambda th: losses(th, X, y).mean() + 0.5 * l2 * th @ th)(theta),
        g_mean=grad(lambda th: losses(th, X, y).mean())(theta),
        g_other=term(OTHER)(theta),
        g_all=torch.stack([term(j)(theta) for j in range(len(y))]),
        H_one=hessian(lambda th: losses(th, X[:1], y[:1]).sum() + 0.5 * l2 * th @ th)(theta),
        effects=inf.predicted_removal_effect(x_test, y_test)[0],
        eye=torch.eye(32, dtype=torch.float64),
    )  # fmt: skip


def _no_answer_shown(result, value: float) -> None:
    assert not result.passed
    assert result.feedback.strip()
    assert f"{value:.4g}" not in result.feedback, "the feedback shows the answer"


def test_by_hand_accepts_the_right_answers(tiny):
    t = tiny
    args = (t["inf"], t["x"], t["y"], t["i"])
    assert by_hand.check_gradients(t["g_test"], t["g_i"], *args).passed
    assert by_hand.check_hessian(t["H"], t["inf"]).passed
    assert by_hand.check_hessian(t["H"], t["inf"], t["i"]).passed
    assert by_hand.check_influence_value(t["I_up"], *args).passed
    assert by_hand.check_removal_effect(t["removal"], *args).passed
    assert by_hand.check_removal_effect(torch.tensor([t["removal"]]), *args).passed


def _solve(t, H, g):
    return float(-t["g_test"] @ torch.linalg.solve(H, g))


INFLUENCE_MISTAKES = [
    ("sign", lambda t: -t["I_up"], "wrong sign"),
    ("divided by n", lambda t: -t["I_up"] / t["n"], "removal effect"),
    ("times n", lambda t: t["I_up"] * t["n"], "multiplied by"),
    ("H not inverted", lambda t: float(-t["g_test"] @ t["H"] @ t["g_i"]), "its inverse"),
    ("no Hessian", lambda t: float(-t["g_test"] @ t["g_i"]), "leaves out the Hessian"),
    ("H without L2", lambda t: _solve(t, t["H"] - t["l2"] * t["eye"], t["g_i"]),
     "Hessian without the L2 term"),
    ("g_i without L2", lambda t: _solve(t, t["H"], t["g_i"] - t["l2"] * t["theta"]),
     "without its L2"),
    ("whole-risk g_i", lambda t: _solve(t, t["H"], t["g_R"]), "whole training risk"),
    ("wrong training point", lambda t: _solve(t, t["H"], t["g_other"]), "training point #"),
    ("a vector", lambda t: -t["g_test"] * torch.linalg.solve(t["H"], t["g_i"]), "one number"),
    ("unrelated", lambda t: 3.7 * t["I_up"], "3.7 times"),
]  # fmt: skip


@pytest.mark.parametrize("name, wrong, says", INFLUENCE_MISTAKES)
def test_by_hand_influence_names_the_mistake(tiny, name, wrong, says):
    t = tiny
    result = by_hand.check_influence_value(wrong(t), t["inf"], t["x"], t["y"], t["i"])
    assert says in result.feedback, result.feedback
    _no_answer_shown(result, t["I_up"])


REMOVAL_MISTAKES = [
    ("sign", lambda t: -t["removal"], "wrong sign"),
    ("missing 1/n", lambda t: -t["I_up"], "times too large"),
    ("I_up,loss itself", lambda t: t["I_up"], "itself"),
    ("1/n twice", lambda t: t["removal"] / t["n"], "times too small"),
    ("wrong training point", lambda t: t["effects"][OTHER], "training point #"),
    ("every training point", lambda t: t["effects"], "one value per training point"),
    ("unrelated", lambda t: 2.5 * t["removal"], "2.5 times"),
]


@pytest.mark.parametrize("name, wrong, says", REMOVAL_MISTAKES)
def test_by_hand_removal_effect_names_the_mistake(tiny, name, wrong, says):
    t = tiny
    result = by_hand.check_removal_effect(wrong(t), t["inf"], t["x"], t["y"], t["i"])
    assert says in result.feedback, result.feedback
    _no_answer_shown(result, t["removal"])


GRADIENT_MISTAKES = [
    ("g_test with L2", lambda t: (t["g_test"] + t["l2"] * t["theta"], t["g_i"]), "L2 term"),
    ("g_i without L2", lambda t: (t["g_test"], t["g_i"] - t["l2"] * t["theta"]),
     "`g_i` misses the L2 term"),
    ("swapped", lambda t: (t["g_i"], t["g_test"]), "training point"),
    ("negated", lambda t: (-t["g_test"], t["g_i"]), "wrong sign"),
    ("g_i / n", lambda t: (t["g_test"], t["g_i"] / t["n"]), "times too small"),
    ("whole risk as g_i", lambda t: (t["g_test"], t["g_R"]), "whole training risk"),
    ("whole risk as g_test", lambda t: (t["g_R"], t["g_i"]), "whole training risk"),
    ("mean data loss as g_i", lambda t: (t["g_test"], t["g_mean"]), "average loss over all"),
    ("summed data loss as g_i", lambda t: (t["g_test"], t["n"] * t["g_mean"]),
     "summed loss over all"),
    ("wrong training point", lambda t: (t["g_test"], t["g_other"]), "training point #"),
    ("wrong point, no L2", lambda t: (t["g_test"], t["g_other"] - t["l2"] * t["theta"]),
     "without the L2 term"),
    ("one row per point", lambda t: (t["g_test"], t["g_all"]), "one gradient per training point"),
    ("a Hessian", lambda t: (t["g_test"], t["H"]), "matrix of second derivatives"),
    ("wrong shape", lambda t: (t["g_test"][:5], t["g_i"]), "shape"),
    ("blank", lambda t: (..., ...), "not filled in"),
]  # fmt: skip


@pytest.mark.parametrize("name, answers, says", GRADIENT_MISTAKES)
def test_by_hand_gradients_name_the_mistake(tiny, name, answers, says):
    t = tiny
    result = by_hand.check_gradients(*answers(t), t["inf"], t["x"], t["y"], t["i"])
    assert not result.passed
    assert says in result.feedback, result.feedback


def test_the_whole_risk_gradient_is_diagnosed_as_such(tiny):
    """g_i = grad R(theta_hat), a vector of near zeros: the feedback says that the per-point
    gradient was asked for and that the gradient of the whole risk is ~0 at its minimum."""
    t = tiny
    assert float(t["g_R"].norm()) < 1e-6 * float(t["g_i"].norm())
    for answers in [(t["g_test"], t["g_R"]), (t["g_R"], t["g_i"]), (t["g_test"], 0 * t["g_i"])]:
        feedback = by_hand.check_gradients(*answers, t["inf"], t["x"], t["y"], t["i"]).feedback
        for says in ["almost zero", "whole training risk", "minimum", "per-point gradient"]:
            assert says in feedback, feedback


HESSIAN_MISTAKES = [
    ("no L2", lambda t: t["H"] - t["l2"] * t["eye"], "misses the L2 term"),
    ("sum", lambda t: t["n"] * (t["H"] - t["l2"] * t["eye"]) + t["l2"] * t["eye"],
     "sums the training losses"),
    ("negated", lambda t: -t["H"], "wrong sign"),
    ("n times", lambda t: t["n"] * t["H"], "times too large"),
    ("Hessian of one term", lambda t: t["H_one"], "one training term"),
    ("a vector", lambda t: t["g_i"], "that is a vector"),
    ("string", lambda t: "H", "shape"),
    ("blank", lambda t: ..., "not filled in"),
]  # fmt: skip


@pytest.mark.parametrize("name, wrong, says", HESSIAN_MISTAKES)
def test_by_hand_hessian_names_the_mistake(tiny, name, wrong, says):
    result = by_hand.check_hessian(wrong(tiny), tiny["inf"], tiny["i"])
    assert not result.passed
    assert says in result.feedback, result.feedback


def _feedback(result, *says: str) -> None:
    """A failed check whose feedback contains each of ``says``."""
    assert isinstance(result, CheckResult), result
    assert not result.passed, result.feedback
    for s in says:
        assert s in result.feedback, result.feedback


def test_by_hand_complex_answers_are_not_passed(tiny):
    t = tiny
    args = (t["inf"], t["x"], t["y"], t["i"])
    _feedback(by_hand.check_influence_value(complex(t["I_up"], 5.0), *args), "I_up_loss", "complex")
    _feedback(by_hand.check_removal_effect(complex(t["removal"], 1.0), *args), "complex")
    _feedback(by_hand.check_gradients(t["g_test"] + 0j, t["g_i"], *args), "g_test", "complex")
    _feedback(by_hand.check_hessian(t["H"].to(torch.complex128), t["inf"]), "`H`", "complex")
    _feedback(by_hand.check_influence_value(True, *args), "I_up_loss", "bool")


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype")
def test_by_hand_hessian_in_any_layout_is_checked_or_answered_in_words(tiny):
    H = tiny["H"]
    assert by_hand.check_hessian(H.to_sparse(), tiny["inf"]).passed
    assert by_hand.check_hessian(H.to_sparse_csr(), tiny["inf"]).passed
    for layout in (torch.strided, torch.jagged):
        nested = torch.nested.nested_tensor([H[0], H[1, :3]], layout=layout)
        _feedback(by_hand.check_hessian(nested, tiny["inf"]), "`H`", "nested")
    _feedback(by_hand.check_hessian(H.to("meta"), tiny["inf"]), "`H`", "meta")
    _feedback(by_hand.check_gradients(tiny["g_test"].to("meta"), tiny["g_i"], tiny["inf"],
                                      tiny["x"], tiny["y"], 0), "g_test", "meta")  # fmt: skip


@pytest.mark.parametrize(
    "i, says",
    [(10_000, "out of range"), (-10_000, "out of range"), (True, "bool"), (1.5, "float"),
     ("0", "str"), ([0, 1], "list")],
)  # fmt: skip
def test_by_hand_bad_index_is_answered_in_words(tiny, i, says):
    t = tiny
    args = (t["inf"], t["x"], t["y"], i)
    for result in [
        by_hand.check_gradients(t["g_test"], t["g_i"], *args),
        by_hand.check_influence_value(t["I_up"], *args),
        by_hand.check_removal_effect(t["removal"], *args),
    ]:
        _feedback(result, "i:", says)


def test_by_hand_bad_arguments_are_answered_in_words(tiny):
    t = tiny
    _feedback(by_hand.check_hessian(t["H"], "inf"), "inf:")
    _feedback(by_hand.check_influence_value(t["I_up"], t["inf"], t["x"][0], t["y"], 0), "x_test")
    _feedback(by_hand.check_removal_effect(t["removal"], t["inf"], "x", t["y"], 0), "x_test")


# ----- exercise 2: predict helpful and harmful points ----------------------------------------
@pytest.fixture(scope="module")
def digits_inf():
    """The notebook's model: a logistic regression on all 1,300 training digits."""
    data = iw.datasets.digits()
    model = iw.models.logistic_regression(data)
    iw.train(model, data, l2=0.01, progress=False)
    return iw.Influence(model, data, l2=0.01, progress=False), data


@pytest.fixture(scope="module")
def candidates(digits_inf):
    """The notebook's candidates, for its test point."""
    inf, data = digits_inf
    return depends.pick_candidates(inf, data, _generator().DEPENDS_TEST_POINT, k=10)


def _letters(truth: dict[str, str], group: str) -> set[str]:
    return {c for c, g in truth.items() if g == group}


def _score(candidates, helpful: set[str], harmful: set[str]) -> int:
    truth = candidates.truth()
    return sum(
        truth[c] == ("helpful" if c in helpful else "harmful" if c in harmful else "neither")
        for c in truth
    )


def test_candidates_are_drawn_so_that_the_label_does_not_tell(candidates):
    truth, same = candidates.truth(), candidates.same_label()
    assert sorted(truth) == list("ABCDEFGH")
    assert len(set(candidates.indices.values())) == 8
    drawn = sorted((truth[c], same[c]) for c in truth)
    expected = sorted((g, s) for g, s, count in depends.COMPOSITION for _ in range(count))
    assert drawn == expected
    assert depends.LABEL_ONLY_BEST < depends.PASS_MARK


def test_the_notebooks_test_point_is_not_one_the_tutorials_show_first():
    quickstart = (EXERCISE_DIR.parent / "01_quickstart.ipynb").read_text()
    shown = {int(m) for m in re.findall(r"(?:ex\.selected|\bt) = (\d+)", quickstart)}
    assert shown, "the quickstart selects no test point any more: update this test"
    assert _generator().DEPENDS_TEST_POINT not in shown | {0}


def test_depends_true_answers_pass(candidates):
    truth = candidates.truth()
    result = depends.check_prediction(
        _letters(truth, "helpful"), _letters(truth, "harmful"), candidates
    )
    assert result.passed and "8 of 8" in result.feedback, result.feedback


def _label_rule(candidates) -> tuple[set[str], set[str]]:
    """The rule of thumb: same label helps, other label hurts."""
    same = candidates.same_label()
    return {c for c in same if same[c]}, {c for c in same if not same[c]}


def test_the_label_rule_of_thumb_fails(candidates):
    result = depends.check_prediction(*_label_rule(candidates), candidates)
    assert not result.passed
    assert "label alone" in result.feedback, result.feedback
    assert _score(candidates, *_label_rule(candidates)) <= depends.LABEL_ONLY_BEST


def test_no_rule_by_label_alone_passes_any_test_point(digits_inf):
    """Every rule that sees only "same label or not" (nine of them: a group for each), on twenty
    test points and two draws each."""
    inf, data = digits_inf
    played = 0
    for t in range(100, 400, 15):
        for seed in (0, 1):
            try:
                picked = depends.pick_candidates(inf, data, t, k=10, seed=seed)
            except ValueError:  # a test point without two same-label harmful points
                continue
            same = picked.same_label()
            for g_same, g_other in itertools.product(["helpful", "harmful", "neither"], repeat=2):
                guess = {c: g_same if same[c] else g_other for c in same}
                result = depends.check_prediction(
                    _letters(guess, "helpful"), _letters(guess, "harmful"), picked
                )
                assert not result.passed, (t, seed, guess, result.feedback)
                played += 1
    assert played >= 9 * 20


def test_random_guessing_fails(candidates):
    """Uniform guesses over 2,000 seeds: the expected score is below the pass mark, and the pass
    rate is under 3% (exactly, P(Binomial(8, 1/3) >= 6) = 129/6561 < 2%)."""
    assert depends.random_pass_probability() == pytest.approx(129 / 6561)
    assert depends.random_pass_probability() < 0.02
    letters = list(candidates.indices)
    scores, passes = [], 0
    for seed in range(2000):
        groups = np.random.default_rng(seed).integers(0, 3, len(letters))
        helpful = {c for c, g in zip(letters, groups, strict=True) if g == 0}
        harmful = {c for c, g in zip(letters, groups, strict=True) if g == 1}
        passes += depends.check_prediction(helpful, harmful, candidates).passed
        scores.append(_score(candidates, helpful, harmful))
    assert np.mean(scores) < depends.PASS_MARK - 3
    assert passes / 2000 < 0.03


def test_depends_prediction_reports_counts_only(candidates):
    truth = candidates.truth()
    helpful, harmful = _letters(truth, "helpful"), _letters(truth, "harmful")
    one_off = {*helpful, next(iter(_letters(truth, "neither")))}
    assert depends.check_prediction(one_off, harmful, candidates).passed  # 7 of 8
    swapped = depends.check_prediction(harmful, helpful, candidates)
    assert not swapped.passed
    assert "2 of 8" in swapped.feedback and "swapped" in swapped.feedback
    assert not any(f"#{j}" in swapped.feedback for j in candidates.indices.values())
    everything = depends.check_prediction(set(), set(), candidates)
    assert "all 8 in one group, neither" in everything.feedback, everything.feedback


@pytest.mark.parametrize(
    "helpful, harmful, says",
    [
        (..., ..., "not filled in"),
        ({"A"}, {"A"}, "in both"),
        ({"Z"}, set(), "not a candidate"),
        (3, set(), "set of letters"),
    ],
)
def test_depends_rejects_unusable_predictions(candidates, helpful, harmful, says):
    result = depends.check_prediction(helpful, harmful, candidates)
    assert not result.passed
    assert says in result.feedback, result.feedback


def test_depends_lookup_names_the_misplaced_letters(candidates):
    truth = candidates.truth()
    helpful, harmful = _letters(truth, "helpful"), _letters(truth, "harmful")
    right = depends.check_lookup(helpful, harmful, candidates)
    assert right.passed and "removing it would raise" in right.feedback
    assert "sure" in right.feedback
    moved = sorted(helpful)[0]
    wrong = depends.check_lookup(helpful - {moved}, harmful | {moved}, candidates)
    assert not wrong.passed
    assert wrong.feedback.startswith(f"{moved} is not where `inf.top` puts it")


def test_candidate_plot_names_the_classes_as_the_data_set_spells_them(candidates):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = candidates.plot()
    titles = [ax.get_title() for ax in fig.axes]
    label = candidates.data.class_names[int(candidates.data.y_test[candidates.test_index])]
    assert f"label {label!r}" in titles[0]
    assert all("label '" in title and "sure" in title for title in titles[1:]), titles
    plt.close(fig)


def test_candidates_from_a_small_training_set(loo_run):
    inf, _, _, _, data = loo_run  # digits(n_train=200)
    drawn = 0
    for t in range(20):
        try:
            picked = depends.pick_candidates(inf, data, t, k=10)
        except ValueError as err:
            assert str(err).startswith("test_index: "), err
            continue
        truth = picked.truth()
        assert [len(_letters(truth, g)) for g in ("helpful", "harmful", "neither")] == [2, 4, 2]
        drawn += 1
    assert drawn


@pytest.mark.parametrize(
    "kwargs, error, says",
    [
        ({"test_index": 10_000}, ValueError, r"^test_index: .*out of range"),
        ({"test_index": -1}, ValueError, r"^test_index: .*out of range"),
        ({"test_index": 1.0}, TypeError, r"^test_index: "),
        ({"test_index": True}, TypeError, r"^test_index: "),
        ({"k": 0}, ValueError, r"^k: "),
        ({"k": 1}, ValueError, r"^k: "),
        ({"k": 150}, ValueError, r"^k: "),
        ({"seed": -1}, ValueError, r"^seed: "),
        ({"seed": 0.5}, TypeError, r"^seed: "),
        ({"inf": "inf"}, TypeError, r"^inf: "),
        ({"data": (1, 2)}, TypeError, r"^data: "),
    ],
)
def test_pick_candidates_names_a_bad_argument(loo_run, kwargs, error, says):
    inf, _, _, _, data = loo_run
    args = {"inf": inf, "data": data, "test_index": 0, "k": 10, **kwargs}
    with pytest.raises(error, match=says):
        depends.pick_candidates(**args)


def test_pick_candidates_says_which_test_point_lacks_a_kind(digits_inf):
    inf, data = digits_inf
    scores = inf.predicted_removal_effect(data.X_test, data.y_test)
    harmful = torch.argsort(scores, dim=1)[:, :10]
    same = (data.y_train[harmful] == data.y_test[:, None]).sum(1)
    t = int(torch.nonzero(same < 2)[0])
    with pytest.raises(ValueError, match=rf"^test_index: test point {t} has .* most harmful"):
        depends.pick_candidates(inf, data, t, k=10)


def test_depends_checkers_answer_a_wrong_candidates_argument_in_words():
    _feedback(depends.check_prediction({"A"}, {"B"}, "candidates"), "candidates")
    _feedback(depends.check_lookup({"A"}, {"B"}, None), "candidates")


# ----- exercise 3: wrong labels on a budget --------------------------------------------------
@pytest.fixture(scope="module")
def planted():
    planted = wrong_labels.plant_wrong_labels(
        iw.datasets.digits(n_train=400), n_wrong=20, budget=20
    )
    model = iw.models.logistic_regression(planted.data)
    iw.train(model, planted.data, l2=0.01, progress=False)
    inf = iw.Influence(model, planted.data, l2=0.01, progress=False)
    return planted, model, inf.self_influence()


def test_planting_changes_exactly_the_flipped_labels():
    clean = iw.datasets.digits(n_train=400)
    planted = wrong_labels.plant_wrong_labels(clean, n_wrong=20, budget=20)
    changed = torch.where(planted.data.y_train != clean.y_train)[0]
    assert torch.equal(changed, planted.flipped)
    assert "flipped" not in repr(planted)


def test_wrong_labels_self_influence_ranking_passes(planted):
    p, model, self_inf = planted
    result = wrong_labels.check_search(torch.argsort(self_inf)[: p.budget], p, model)
    assert result.passed, result.feedback
    assert "at random catches" in result.feedback and "highest training losses" in result.feedback


WRONG_LABELS_MISTAKES = [
    ("wrong way round", lambda s, b: torch.argsort(s, descending=True)[:b], "wrong way"),
    ("over budget", lambda s, b: torch.argsort(s)[: b + 1], "budget is"),
    ("scores", lambda s, b: s, "not indices"),
    ("duplicates", lambda s, b: [0, 0], "twice"),
    ("out of range", lambda s, b: [10_000], "outside"),
    ("blank", lambda s, b: ..., "not filled in"),
    ("too few", lambda s, b: torch.argsort(s)[:2], "more points"),
    ("random", lambda s, b: torch.randperm(len(s), generator=torch.Generator().manual_seed(7))[:b],
     "You need"),
]  # fmt: skip


@pytest.mark.parametrize("name, chosen, says", WRONG_LABELS_MISTAKES)
def test_wrong_labels_rejects_typical_mistakes(planted, name, chosen, says):
    p, model, self_inf = planted
    result = wrong_labels.check_search(chosen(self_inf, p.budget), p, model)
    assert not result.passed
    assert says in result.feedback, result.feedback


def test_planting_more_wrong_labels_than_points_names_the_argument():
    data = iw.datasets.digits(n_train=200)
    for kwargs, error, says in [
        ({"n_wrong": 1000}, ValueError, r"^n_wrong: 1000 is more than the 200"),
        ({"n_wrong": 0}, ValueError, r"^n_wrong: "),
        ({"n_wrong": 2.5}, TypeError, r"^n_wrong: "),
        ({"budget": 0}, ValueError, r"^budget: "),
        ({"seed": 2**70}, ValueError, r"^seed: "),
        ({"seed": "abc"}, TypeError, r"^seed: "),
    ]:
        with pytest.raises(error, match=says):
            wrong_labels.plant_wrong_labels(data, **kwargs)
    with pytest.raises(TypeError, match=r"^data: "):
        wrong_labels.plant_wrong_labels((1, 2))


@pytest.mark.parametrize(
    "name, chosen, says",
    [
        ("complex", lambda s, b: torch.argsort(s)[:b] + 0.5j, "complex"),
        ("complex list", lambda s, b: [1 + 2j, 3 + 0j], "complex"),
        ("mask", lambda s, b: s < 0, "True/False"),
        ("meta", lambda s, b: torch.argsort(s)[:b].to("meta"), "meta"),
        ("nested", lambda s, b: torch.nested.nested_tensor([torch.arange(2), torch.arange(3)]),
         "nested"),
        ("negative", lambda s, b: [-1], "outside"),
    ],
)  # fmt: skip
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype")
def test_wrong_labels_answers_unusual_tensors_in_words(planted, name, chosen, says):
    p, model, self_inf = planted
    _feedback(wrong_labels.check_search(chosen(self_inf, p.budget), p, model), says)


def test_wrong_labels_accepts_a_sparse_answer(planted):
    p, model, self_inf = planted
    chosen = torch.argsort(self_inf)[: p.budget].to_sparse()
    assert wrong_labels.check_search(chosen, p, model).passed


def test_wrong_labels_answers_bad_arguments_in_words(planted):
    p, model, self_inf = planted
    chosen = torch.argsort(self_inf)[: p.budget]
    _feedback(wrong_labels.check_search(chosen, p.data, model), "planted")
    _feedback(wrong_labels.check_search(chosen, p, "model"), "model")
    _feedback(wrong_labels.check_search(chosen, p, torch.nn.Linear(3, 10)), "model")


# ----- exercise 4: when influence fails ------------------------------------------------------
@pytest.fixture(scope="module")
def loo_run():
    data = iw.datasets.digits(n_train=200)
    model = iw.models.logistic_regression(data)
    iw.train(model, data, l2=0.01, progress=False)
    inf = iw.Influence(model, data, l2=0.01, progress=False)
    x, y = data.X_test[:1], data.y_test[:1]
    loo = iw.validate_loo(inf, x, y, n_remove=5, progress=False)
    return inf, x, y, loo, data


def test_when_fails_prediction_takes_a_bool():
    assert when_fails.check_prediction(False).passed
    assert when_fails.check_prediction(np.bool_(True)).passed
    for bad, says in [(..., "not filled in"), ("yes", "True or False")]:
        result = when_fails.check_prediction(bad)
        assert not result.passed and says in result.feedback


def test_when_fails_loo_checks_the_reported_number(loo_run):
    inf, x, y, loo, data = loo_run
    assert when_fails.check_loo(loo, loo.pearson, inf, x, y).passed
    assert when_fails.check_loo(loo, round(loo.pearson, 2), inf, x, y).passed
    cases = [
        (loo, loo.spearman, x, y, "Spearman"),
        (loo, loo.pearson**2 - 0.1, x, y, "not this run's Pearson R"),
        (loo, loo.pearson, data.X_test[1:2], data.y_test[1:2], "was not run on"),
        (..., 0.5, x, y, "not filled in"),
        ("loo", 0.5, x, y, "what iw.validate_loo returns"),
    ]
    if abs(loo.spearman - loo.pearson) <= 5e-3:
        cases = cases[1:]
    for run, reported, xt, yt, says in cases:
        result = when_fails.check_loo(run, reported, inf, xt, yt)
        assert not result.passed
        assert says in result.feedback, result.feedback
    many = dataclasses.replace(loo, removed=np.arange(30))
    assert "quick" in when_fails.check_loo(many, loo.pearson, inf, x, y).feedback


def test_when_fails_loo_answers_bad_arguments_in_words(loo_run):
    inf, x, y, loo, data = loo_run
    _feedback(when_fails.check_loo(loo, complex(loo.pearson, 1), inf, x, y), "complex")
    _feedback(when_fails.check_loo(loo, loo.pearson, "inf", x, y), "inf:")
    _feedback(when_fails.check_loo(loo, loo.pearson, inf, x[0], y), "x_test")
    elsewhere = dataclasses.replace(loo, removed=np.arange(10_000, 10_005))
    _feedback(when_fails.check_loo(elsewhere, loo.pearson, inf, x, y), "was not run on")


def _loo_with(pearson: float) -> LOOResult:
    return LOOResult(
        test_index=None, removed=np.arange(10), predicted=np.zeros(10), actual=np.zeros(10),
        pearson=pearson, spearman=pearson, drift=0.0, strategy="maxinf", solver="direct",
        seconds=1.0,
    )  # fmt: skip


# (matched, reason, the run's Pearson R, what the feedback says)
CONCLUSION_MISTAKES = [
    (True, "B", 0.1, "does not agree"),
    (False, "B", 0.99, "does not agree"),
    (False, "A", 0.1, "warm-starts"),
    (False, "C", 0.1, "Figure 2"),
    (False, "D", 0.1, "fewer parameters"),
    (False, "Q", 0.1, "one of"),
    (False, ..., 0.1, "not filled in"),
    (..., "B", 0.1, "not filled in"),
]


def test_when_fails_conclusion_is_consistent_with_the_measurement():
    failed, matched = _loo_with(0.1), _loo_with(0.99)
    right = when_fails.check_conclusion(False, "B", failed, True)
    assert right.passed and "prediction was wrong" in right.feedback
    assert when_fails.check_conclusion(False, "b", failed, False).passed
    assert when_fails.check_conclusion(True, ..., matched, True).passed
    for matched_, reason, pearson, says in CONCLUSION_MISTAKES:
        result = when_fails.check_conclusion(matched_, reason, _loo_with(pearson), False)
        assert not result.passed
        assert says in result.feedback, result.feedback


# ----- exercise 5: which method agrees with retraining -------------------------------------
@pytest.fixture(scope="module")
def agree():
    """A smaller version of the notebook's problem (120 training digits, 6 subsets), measured as
    the solution measures it: the setup, and each model's scores and LDS results."""
    setup = which_method.setup(n_train=120, subsets=6)
    measured = {}
    for name in which_method.MODELS:
        case = setup.compared(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", iw.InfluenceWarning)
            methods = {
                "influence": iw.Influence(case.model, setup.train, l2=case.l2, progress=False),
                "grad-dot": iw.GradDot(case.model, setup.train, progress=False),
                "tracin": iw.TracIn(case.model, setup.train, case.checkpoints, progress=False),
            }
            scores = {m: s.scores(setup.x_test, setup.y_test) for m, s in methods.items()}
        retrains = iw.lds(
            methods["influence"], setup.train, x_test=setup.x_test, y_test=setup.y_test,
            train_fn=case.train_fn, subsets=setup.subsets, fraction=setup.fraction,
            seed=setup.seed, progress=False,
        )  # fmt: skip
        results = {m: retrains.rescore(s) for m, s in scores.items()}
        measured[name] = (scores, results, methods)
    return setup, measured


def _replaced(results: dict, **changes) -> dict:
    return {m: dataclasses.replace(r, **changes) for m, r in results.items()}


def _with_per_test(base, per_test, noise_floor: float | None = None):
    """``base`` (an LDSResult) with another LDS per test point (and noise floor), its mean and
    standard error recomputed: a measurement with another outcome on the same retrains."""
    mean, se = mean_and_se(np.asarray(per_test))
    floor = base.noise_floor if noise_floor is None else noise_floor
    return dataclasses.replace(
        base, per_test=np.asarray(per_test, dtype=float), mean=mean, se=se, noise_floor=floor
    )


def _outcome(agree, lin: dict[str, float], net: dict[str, float], floors=(1.0, 0.47)):
    """Synthetic measurements on the real retrains: each method's LDS is its given level plus
    the same small spread over test points (so paired differences are exact), and the noise
    floors of the linear model and the network are ``floors``."""
    setup, measured = agree
    T = len(setup.y_test)
    spread = np.linspace(-0.02, 0.02, T)
    made = []
    for name, levels, floor in zip(which_method.MODELS, (lin, net), floors, strict=True):
        results = measured[name][1]
        made.append({m: _with_per_test(results[m], levels[m] + spread, floor) for m in results})
    return made


def test_which_method_accepts_the_solution(agree):
    setup, measured = agree
    assert which_method.check_prediction("influence", "TracIn").passed
    assert which_method.check_prediction("Influence functions", "grad_dot").passed
    for name in which_method.MODELS:
        scores, results, _ = measured[name]
        result = which_method.check_measurement(scores, results, setup, name)
        assert result.passed, result.feedback
        assert "noise floor" in result.feedback and "| TracIn |" in result.feedback
    lin, net = measured["linear"][1], measured["network"][1]
    best_lin = sorted(which_method.best_methods(lin))[0]
    best_net = sorted(which_method.best_methods(net))[0]
    result = which_method.check_best(best_lin, best_net, best_lin, "grad-dot", lin, net, setup)
    assert result.passed, result.feedback
    holding = {k for k, v in which_method.judge_reasons(lin, net, setup).items() if v.holds}
    assert which_method.check_reasons(holding, lin, net, setup).passed


def test_which_method_accepts_scores_that_rank_alike(agree):
    """A positive multiple of a method's scores (TracIn with the learning rate left out, say)
    gives the same LDS: not a mistake."""
    setup, measured = agree
    scores, results, _ = measured["network"]
    scaled = {**scores, "tracin": 100.0 * scores["tracin"]}
    rescored = {**results, "tracin": results["tracin"].rescore(scaled["tracin"])}
    assert which_method.check_measurement(scaled, rescored, setup, "network").passed


def _score_cases(agree):
    """(name, model, scores answer, what the feedback says) for typical mistakes."""
    setup, measured = agree
    lin, net = measured["linear"][0], measured["network"][0]
    n = len(setup.y)
    inf_net = measured["network"][2]["influence"]
    return [
        ("sign", "linear", {**lin, "grad-dot": -lin["grad-dot"]}, "wrong sign"),
        ("I_up,loss", "linear", {**lin, "influence": -n * lin["influence"]}, "upweighting"),
        ("swapped", "network", {**net, "grad-dot": net["tracin"]}, "holds the scores of TracIn"),
        ("other model", "network", {**net, "tracin": lin["tracin"]}, "of the linear model"),
        ("transposed", "linear", {**lin, "tracin": lin["tracin"].T}, "transposed"),
        ("one test point", "linear", {**lin, "tracin": lin["tracin"][0]}, "one test point"),
        ("summed", "linear", {**lin, "tracin": lin["tracin"].sum(1)}, "one number per test"),
        ("wrong shape", "linear", {**lin, "tracin": lin["tracin"][:, :5]}, "should have shape"),
        ("predicted labels", "network",
         {**net, "influence": inf_net.scores(setup.x_test)}, "classes the model predicts"),
        ("other l2", "linear", {**lin, "influence": 1.5 * lin["influence"] - lin["grad-dot"]},
         "does not match influence functions"),
        ("NaN", "linear", {**lin, "tracin": lin["tracin"] * float("nan")}, "NaN"),
        ("missing", "linear", {k: v for k, v in lin.items() if k != "tracin"}, "no entry for"),
        ("unknown key", "linear", {**lin, "trak": lin["tracin"]}, "not a method's name"),
        ("a list", "linear", list(lin.values()), "should be a dict"),
        ("blank", "linear", ..., "not filled in"),
    ]  # fmt: skip


def test_which_method_scores_name_the_mistake(agree):
    setup, measured = agree
    net = measured["network"][2]["influence"]
    misclassified = net.predicted_labels(setup.x_test) != setup.y_test
    assert bool(misclassified.any()), "every test point right: predicted labels tell nothing"
    for name, model, answer, says in _score_cases(agree):
        results = measured[model][1]
        result = which_method.check_measurement(answer, results, setup, model)
        assert not result.passed, name
        assert says in result.feedback, (name, result.feedback)


def _retrain_output(setup, model, train_fn, result) -> np.ndarray:
    retrain = SubsetRetrain(
        train_fn, lambda: copy.deepcopy(model), setup.X, setup.y, setup.x_test,
        torch.as_tensor(result.labels), "margin", F.cross_entropy,
    )  # fmt: skip
    return retrain(result.indices(0), int(result.seeds[0, 0]))


def _first_retrain_replaced(results: dict, values: np.ndarray) -> dict:
    actual = results["influence"].actual.copy()
    actual[0] = values
    return _replaced(results, actual=actual)


def _result_cases(agree):
    """(name, model, LDS answer, what the feedback says) for typical mistakes."""
    setup, measured = agree
    lin_scores, lin = measured["linear"][0], measured["linear"][1]
    net = measured["network"][1]
    first = net["influence"]
    other_seed = {
        **lin,
        "tracin": dataclasses.replace(lin["tracin"], actual=lin["tracin"].actual + 1.0),
    }
    k = 3
    fewer = _replaced(
        lin,
        masks=lin["influence"].masks[:k],
        seeds=lin["influence"].seeds[:k],
        actual=lin["influence"].actual[:k],
        rerun=lin["influence"].rerun[:k],
        predicted=lin["influence"].predicted[:k],
    )
    shuffled = _replaced(lin, masks=lin["influence"].masks[::-1].copy())
    default = TrainFromScratch(setup.network.l2, "cross_entropy")
    net_default = _first_retrain_replaced(
        net, _retrain_output(setup, setup.network.model, default, first)
    )
    net_as_linear = _first_retrain_replaced(
        net, _retrain_output(setup, setup.linear.model, setup.linear.train_fn, first)
    )
    return [
        ("loss", "linear", _replaced(lin, output="loss"), "output='loss'"),
        ("no noise floor", "linear", _replaced(lin, rerun=None, noise_floor_per_test=None),
         "no noise floor"),
        ("separate retrains", "linear", other_seed, "other retrains"),
        ("fewer subsets", "linear", fewer, "retrained 3 subsets"),
        ("other subsets", "linear", shuffled, "other subsets"),
        ("cancelled", "linear", _replaced(lin, cancelled=True), "cancelled"),
        ("other labels", "linear", _replaced(lin, labels=np.roll(lin["influence"].labels, 1)),
         "other test points"),
        ("default recipe", "network", net_default, "default recipe"),
        ("other model", "network", net_as_linear, "the linear model, as it was trained"),
        ("retrains of nothing known", "network",
         _first_retrain_replaced(net, first.actual[0] + 1.0), "are not those of"),
        ("rescored with another's scores", "linear",
         {**lin, "grad-dot": lin["influence"].rescore(lin_scores["tracin"])},
         "from your scores of TracIn"),
        ("not from the scores", "linear",
         {**lin, "grad-dot": lin["influence"].rescore(lin_scores["grad-dot"] ** 3)},
         "was not computed from your"),
        ("not a result", "linear", {**lin, "tracin": 0.5}, "should be an LDSResult"),
    ]  # fmt: skip


def test_which_method_results_name_the_mistake(agree):
    setup, measured = agree
    for name, model, answer, says in _result_cases(agree):
        scores = measured[model][0]
        result = which_method.check_measurement(scores, answer, setup, model)
        assert not result.passed, name
        assert says in result.feedback, (name, result.feedback)


def test_which_method_bad_arguments_are_answered_in_words(agree):
    setup, measured = agree
    scores, results, _ = measured["linear"]
    _feedback(which_method.check_measurement(scores, results, "setup", "linear"), "setup:")
    lin, net = measured["linear"][1], measured["network"][1]
    _feedback(which_method.check_best("influence", "tracin", "influence", "tracin", lin, net, 3),
              "setup:")  # fmt: skip
    _feedback(which_method.check_reasons({"A"}, lin, net, None), "setup:")
    _feedback(which_method.check_measurement(scores, results, setup, "cnn"), "model:")
    _feedback(which_method.check_prediction(..., "tracin"), "predict_linear", "not filled in")
    _feedback(which_method.check_prediction("influence", 3), "predict_network", "string")
    _feedback(which_method.check_prediction("influence", "trak"), "not one of the methods")
    with pytest.raises(ValueError, match="^subsets: "):
        which_method.setup(subsets=2)


# The notebook's outcome and three others, each with the statements that hold in it.
LINEAR_AS_MEASURED = {"influence": 0.96, "grad-dot": 0.55, "tracin": 0.54}
OUTCOMES = [
    ("as measured", LINEAR_AS_MEASURED, {"influence": 0.48, "grad-dot": 0.46, "tracin": 0.58},
     (1.0, 0.47), {"A", "B", "C"}),
    ("influence ahead on the network", LINEAR_AS_MEASURED,
     {"influence": 0.6, "grad-dot": 0.4, "tracin": 0.5}, (1.0, 0.47), {"A", "C", "E"}),
    ("a quiet network", LINEAR_AS_MEASURED, {"influence": 0.48, "grad-dot": 0.46, "tracin": 0.58},
     (1.0, 0.95), {"A", "B"}),
    ("influence far below the linear floor", {"influence": 0.8, "grad-dot": 0.55, "tracin": 0.5},
     {"influence": 0.48, "grad-dot": 0.46, "tracin": 0.58}, (1.0, 0.47), {"B", "C"}),
]  # fmt: skip


@pytest.mark.parametrize("name, lin, net, floors, holding", OUTCOMES, ids=[o[0] for o in OUTCOMES])
def test_which_method_judges_reasons_by_the_measurement(agree, name, lin, net, floors, holding):
    setup, _ = agree
    assert setup.network.model is not None
    lds_lin, lds_net = _outcome(agree, lin, net, floors)
    verdicts = which_method.judge_reasons(lds_lin, lds_net, setup)
    assert {k for k, v in verdicts.items() if v.holds} == holding
    assert all(v.why for v in verdicts.values())
    assert which_method.check_reasons(holding, lds_lin, lds_net, setup).passed
    for letter in sorted(set(which_method.REASONS) - holding):
        result = which_method.check_reasons(holding | {letter}, lds_lin, lds_net, setup)
        _feedback(result, f"{letter} does not hold: {verdicts[letter].why}")
    dropped = sorted(holding)[0]
    result = which_method.check_reasons(holding - {dropped}, lds_lin, lds_net, setup)
    _feedback(result, "one more statement holds", which_method.TOPICS[dropped])
    assert not re.search(rf"\b{dropped}\b", result.feedback), "names the missing letter"


def test_which_method_best_follows_the_measurement(agree):
    setup, _ = agree
    lin, net = _outcome(agree, LINEAR_AS_MEASURED,
                        {"influence": 0.48, "grad-dot": 0.46, "tracin": 0.58})  # fmt: skip
    right = which_method.check_best("influence", "tracin", "influence", "influence", lin, net,
                                    setup)  # fmt: skip
    assert right.passed and "measuring said otherwise" in right.feedback, right.feedback
    _feedback(
        which_method.check_best(
            "influence", "influence", "influence", "influence", lin, net, setup
        ),
        "`best_network`",
        "twice the standard error",
    )
    _feedback(which_method.check_best("grad-dot", "tracin", "tracin", "tracin", lin, net, setup),
              "`best_linear`")  # fmt: skip
    lowest = which_method.check_best("influence", "grad-dot", "influence", "tracin", lin, net,
                                     setup)  # fmt: skip
    _feedback(lowest, "lowest LDS")
    # Two methods within noise of each other: either counts.
    tied = _outcome(agree, LINEAR_AS_MEASURED, {"influence": 0.5, "grad-dot": 0.3,
                                                "tracin": 0.5})[1]  # fmt: skip
    for pick in ("influence", "tracin"):
        result = which_method.check_best("influence", pick, "influence", "tracin", lin, tied, setup)
        assert result.passed and "either counts" in result.feedback, result.feedback
    _feedback(which_method.check_best(..., "tracin", "influence", "tracin", lin, net, setup),
              "not filled in")  # fmt: skip
    no_floor = _replaced(net, rerun=None, noise_floor_per_test=None)
    _feedback(which_method.check_best("influence", "tracin", "influence", "tracin", lin,
                                      no_floor, setup), "no noise floor")  # fmt: skip


def test_which_method_reasons_take_letters(agree):
    setup, _ = agree
    lin, net = _outcome(agree, LINEAR_AS_MEASURED,
                        {"influence": 0.48, "grad-dot": 0.46, "tracin": 0.58})  # fmt: skip
    assert which_method.check_reasons("abc", lin, net, setup).passed
    assert which_method.check_reasons(["A", "B", "C"], lin, net, setup).passed
    for bad, says in [(..., "not filled in"), ({"Z"}, "not a candidate"), (3, "set of letters")]:
        _feedback(which_method.check_reasons(bad, lin, net, setup), says)


def test_the_fit_report_says_which_hessian_was_positive_definite(agree):
    report = which_method.fit_report(agree[0])
    linear, network = report.split("\n\n")
    assert linear.startswith("linear: 650 parameters") and "no damping" in linear
    assert network.startswith("network: 2,410 parameters") and "not positive definite" in network


# ----- no feedback gives the answer away -----------------------------------------------------
# The answers' formulas as a student would copy them, in code, ASCII and LaTeX.
ANSWER_FRAGMENTS = [
    "torch.linalg.solve(H, g", "linalg.solve", "(-1/n)", "-1/n", "-1/n * I_up", "- 1/n",
    "H^-1 g", "H^-1 v", "H^{-1} g", r"H^{-1} \nabla", r"H^{-1}\nabla", r"\frac{1}{n}",
    "g_test^T", r"g_{test}^\top", r"\nabla_\theta L(z_{test})^\top", "l2 * theta",
    r"\lambda \theta", r"\lambda\theta", "l2 * I", r"\lambda I", "0.5 * l2", "(l2/2)",
    r"\frac{\lambda}{2}", "argsort", "self_influence()", "loo.pearson", "validate_loo(inf_mlp",
    "n_remove=10", "rescore(s)", "rescore(scores", ".scores(x_test, y_test)",
    "train_fn=case.train_fn", "train_fn=setup.", "seed=setup.seed", "subsets=setup.subsets",
    "fraction=setup.fraction", "case.checkpoints",
]  # fmt: skip


def _solution_fragments() -> list[str]:
    """Every line of every answer cell of the teachers' notebooks that holds a letter or a digit
    (not a closing bracket alone), and the right-hand side of each assignment there (8
    characters or more), without comments."""
    fragments = []
    for path in SOLUTIONS:
        for cell in nbformat.read(path, as_version=4).cells:
            if "answer" not in cell.metadata.get("tags", []):
                continue
            for line in cell.source.splitlines():
                code = line.split("#")[0].strip()
                if not any(c.isalnum() for c in code):
                    continue
                fragments.append(code)
                _, equals, rhs = code.partition(" = ")
                if equals and len(rhs.strip()) >= 8:
                    fragments.append(rhs.strip())
    return fragments


def _every_feedback(tiny, candidates, planted, loo_run, agree) -> list[str]:
    """The feedback of every checker for every typical mistake the tests drive through it, and for
    the right answers."""
    t = tiny
    args = (t["inf"], t["x"], t["y"], t["i"])
    results = [
        by_hand.check_gradients(t["g_test"], t["g_i"], *args),
        by_hand.check_hessian(t["H"], t["inf"], t["i"]),
        by_hand.check_influence_value(t["I_up"], *args),
        by_hand.check_removal_effect(t["removal"], *args),
        by_hand.check_gradients(t["g_test"], 0 * t["g_i"], *args),
        by_hand.check_gradients(t["g_test"], t["g_i"] + 1.0, *args),
        by_hand.check_hessian(t["H"] + 1.0, t["inf"], t["i"]),
        by_hand.check_hessian(t["H"] + torch.triu(t["H"], 1), t["inf"], t["i"]),
    ]
    results += [by_hand.check_influence_value(w(t), *args) for _, w, _ in INFLUENCE_MISTAKES]
    results += [by_hand.check_removal_effect(w(t), *args) for _, w, _ in REMOVAL_MISTAKES]
    results += [by_hand.check_gradients(*a(t), *args) for _, a, _ in GRADIENT_MISTAKES]
    results += [by_hand.check_hessian(w(t), t["inf"], t["i"]) for _, w, _ in HESSIAN_MISTAKES]

    truth = candidates.truth()
    helpful, harmful = _letters(truth, "helpful"), _letters(truth, "harmful")
    for guess in [(helpful, harmful), _label_rule(candidates), (harmful, helpful), (set(), set()),
                  (set("ABCD"), set("EF")), (..., ...)]:  # fmt: skip
        results.append(depends.check_prediction(*guess, candidates))
    results.append(depends.check_lookup(helpful, harmful, candidates))
    results.append(depends.check_lookup(harmful, helpful, candidates))

    p, model, self_inf = planted
    results.append(wrong_labels.check_search(torch.argsort(self_inf)[: p.budget], p, model))
    results += [wrong_labels.check_search(c(self_inf, p.budget), p, model)
                for _, c, _ in WRONG_LABELS_MISTAKES]  # fmt: skip

    inf, x, y, loo, _ = loo_run
    results += [when_fails.check_prediction(v) for v in (True, False, ..., "yes")]
    for reported in (loo.pearson, loo.spearman, loo.pearson**2, 0.5):
        results.append(when_fails.check_loo(loo, reported, inf, x, y))
    results.append(when_fails.check_loo(..., 0.5, inf, x, y))
    results.append(when_fails.check_conclusion(False, "B", _loo_with(0.1), True))
    results += [when_fails.check_conclusion(m, r, _loo_with(pearson), False)
                for m, r, pearson, _ in CONCLUSION_MISTAKES]  # fmt: skip

    setup, measured = agree
    for name in which_method.MODELS:
        scores, lds, _ = measured[name]
        results.append(which_method.check_measurement(scores, lds, setup, name))
    for _, model, answer, _ in _score_cases(agree):
        results.append(which_method.check_measurement(answer, measured[model][1], setup, model))
    for _, model, answer, _ in _result_cases(agree):
        results.append(which_method.check_measurement(measured[model][0], answer, setup, model))
    results += [which_method.check_prediction(*p) for p in [("influence", "tracin"), (..., 1)]]
    for _, lin, net, floors, holding in OUTCOMES:
        lds_lin, lds_net = _outcome(agree, lin, net, floors)
        results += [which_method.check_reasons(r, lds_lin, lds_net, setup)
                    for r in (holding, set(which_method.REASONS), set())]  # fmt: skip
        results += [which_method.check_best(b, c, "influence", "tracin", lds_lin, lds_net, setup)
                    for b, c in itertools.product(which_method.METHODS, repeat=2)]  # fmt: skip
    assert all(isinstance(r, CheckResult) for r in results)
    return [r.feedback for r in results]


def test_no_feedback_contains_the_answer(tiny, candidates, planted, loo_run, agree):
    """Every feedback string the checkers give for the typical mistakes (and for the right
    answers) names the mistake and the idea to revisit, never the formula or the code of the
    answer: no answer line of the teachers' notebooks, and no formula fragment of an answer."""
    feedback = _every_feedback(tiny, candidates, planted, loo_run, agree)
    assert len(feedback) > 150
    fragments = ANSWER_FRAGMENTS + _solution_fragments()
    assert "-g_test @ torch.linalg.solve(H, g_i)" in fragments  # the answers were read
    assert '{"A", "B", "C"}' in fragments and '"tracin"' in fragments  # exercise 5's too

    def squeeze(text: str) -> str:
        return "".join(text.split())

    for text in feedback:
        for fragment in fragments:
            assert squeeze(fragment) not in squeeze(text), (fragment, text)


def test_feedback_shows_as_markdown_with_its_formulas(tiny):
    t = tiny
    result = by_hand.check_removal_effect(-t["removal"], t["inf"], t["x"], t["y"], t["i"])
    shown, _ = DisplayFormatter().format(result)  # what a notebook receives
    markdown = shown["text/markdown"]
    assert markdown.startswith("**[not yet]** `removal_effect`"), markdown
    assert r"$\varepsilon$" in markdown
    assert shown["text/plain"].startswith("[not yet] `removal_effect`")


# ----- the notebooks -------------------------------------------------------------------------
def _generator():
    return load_script(EXERCISE_DIR / "make_exercises.py")


def _content(path: Path) -> list:
    nb = nbformat.read(path, as_version=4)
    return [dict(nb.metadata)] + [(c.cell_type, dict(c.metadata), c.source) for c in nb.cells]


def test_there_are_five_exercises_with_solutions():
    assert len(STUDENT) >= 5
    assert [p.name for p in SOLUTIONS] == [p.name for p in STUDENT]


def test_exercises_are_what_the_generator_writes(tmp_path: Path):
    written = _generator().write_all(tmp_path)
    for path in written:
        stored = EXERCISE_DIR / path.relative_to(tmp_path)
        assert stored.exists(), f"{stored} is missing: run notebooks/exercises/make_exercises.py"
        assert _content(stored) == _content(path), (
            f"{stored.relative_to(EXERCISE_DIR.parent)} is not what make_exercises.py writes: "
            "edit the cells there and run `python notebooks/exercises/make_exercises.py`"
        )
    assert len(written) == len(STUDENT) + len(SOLUTIONS)


def test_student_notebooks_hold_blanks_and_no_outputs():
    for path in [*STUDENT, *SOLUTIONS]:
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path.name
        tags = [c.metadata.get("tags", []) for c in nb.cells]
        assert any("check" in t for t in tags) and any("answer" in t for t in tags), path.name
    for path in STUDENT:
        nb = nbformat.read(path, as_version=4)
        answers = [c.source for c in nb.cells if "answer" in c.metadata.get("tags", [])]
        assert all("= ...  # TODO" in source for source in answers), path.name


def _run(path: Path, tmp_path: Path, monkeypatch) -> tuple[list[str], float]:
    """Execute the notebook headless; the text each check cell printed, and the seconds taken."""
    # The 2 cores of the test machine are shared: one thread per kernel avoids oversubscription.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=TIME_LIMIT_S, kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )  # fmt: skip
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    checks = []
    for cell in nb.cells:
        if "check" in cell.metadata.get("tags", []):
            text = "".join(
                o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in cell.outputs
            )
            checks.append(text)
    print(f"{path.relative_to(EXERCISE_DIR)}: {seconds:.1f} s")
    return checks, seconds


@pytest.mark.slow
@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: f"solutions/{p.name}")
def test_solution_passes_every_check(path: Path, tmp_path: Path, monkeypatch):
    checks, seconds = _run(path, tmp_path, monkeypatch)
    assert checks
    for text in checks:
        assert text.startswith("[passed]"), f"{path.name}: {text}"
    assert seconds < TIME_LIMIT_S


@pytest.mark.slow
@pytest.mark.parametrize("path", STUDENT, ids=lambda p: p.name)
def test_blank_exercise_is_rejected_with_feedback(path: Path, tmp_path: Path, monkeypatch):
    checks, seconds = _run(path, tmp_path, monkeypatch)
    assert checks
    for text in checks:
        assert text.startswith("[not yet]"), f"{path.name}: {text}"
        assert len(text.removeprefix("[not yet]").strip()) > 20, f"{path.name}: no feedback"
    assert seconds < TIME_LIMIT_S
