"""craft_attack: I_pert,loss-driven training-set attacks on tiny problems."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch

import influence_widgets as iw
from influence_widgets.analysis import attack


@pytest.fixture(scope="module")
def binary():
    """A 2-class float64 logistic regression on 60 points in [0, 1]^4, at a tight minimum."""
    gen = torch.Generator().manual_seed(5)
    X = torch.rand(60, 4, generator=gen, dtype=torch.float64)
    y = X[:, 0] + 0.5 * X[:, 1] + 0.3 * torch.randn(60, generator=gen, dtype=torch.float64) > 0.75
    y = y.long()
    model = iw.models.logistic_regression((4, 2))
    iw.train(model, (X, y), l2=0.05, tol=1e-12, progress=False)
    with torch.no_grad():
        margin = model(X)[:, 1] - model(X)[:, 0]
    correct = torch.nonzero((margin > 0).long() == y).squeeze(1)
    t = int(correct[torch.argmin(margin[correct].abs())])  # the correct point nearest the boundary
    return model, X, y, X[t : t + 1].clone(), y[t : t + 1].clone()


def _influence(binary):
    model, X, y, _, _ = binary
    return iw.Influence(model, (X, y), l2=0.05, progress=False)


def test_a_small_step_along_i_pert_raises_the_test_loss_by_the_predicted_amount(binary):
    model, X, y, x_test, y_test = binary
    inf = _influence(binary)
    j = 7
    direction = inf.perturbation_influence(x_test, y_test, [j])[0, 0]  # (4,)
    h = 1e-4
    delta = h * direction / direction.norm()
    predicted = float(direction @ delta) / len(X)  # (1/n) I_pert,loss . delta
    assert predicted > 0  # moving along I_pert raises the test loss
    Xp = X.clone()
    Xp[j] += delta
    m = copy.deepcopy(model)
    iw.train(m, (Xp, y), l2=0.05, tol=1e-13, progress=False)
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy
        actual = float(loss(m(x_test), y_test) - loss(model(x_test), y_test))
    assert actual == pytest.approx(predicted, rel=1e-2)


def test_attack_flips_within_eps_and_the_range_without_touching_user_data(binary, untouched):
    model, X, y, x_test, y_test = binary
    inf = _influence(binary)
    eps = 0.25
    with untouched(model, X, y, x_test, y_test, inf.train.X, inf.train.y):
        result = iw.craft_attack(
            inf, x_test, y_test, n_poison=3, eps=eps, step_size=0.05, max_iter=40, progress=False
        )
    assert result.flipped and result.prediction_after != result.prediction_before
    assert result.true_class_probability[-1] < 0.5 < result.true_class_probability[0]
    assert len(result.true_class_probability) == result.iterations + 1
    assert result.max_change <= eps + 1e-12
    assert float(result.perturbed_inputs.min()) >= 0 and float(result.perturbed_inputs.max()) <= 1
    # the training set the attack returns is a copy, changed only at the poisoned rows
    Xp, yp = result.poisoned_dataset()
    changed = torch.nonzero((Xp != X).any(1)).squeeze(1).tolist()
    assert set(changed) <= set(result.poisoned.tolist()) and changed
    assert torch.equal(yp, y) and Xp.data_ptr() != X.data_ptr()
    # retraining on the poisoned set reproduces the flip the result reports
    m = copy.deepcopy(model)
    iw.train(m, (Xp, y), l2=0.05, progress=False)
    with torch.no_grad():
        assert int(m(x_test).argmax()) == result.prediction_after
    assert "flipped=True" in repr(result)


def test_a_retrain_function_gets_copies_it_may_write(binary, untouched):
    """A user's retrain(model, (X, y)) that overwrites its data in place (here: zeroes it after
    training) must not reach the user's X, y or the Influence's training set."""
    model, X, y, x_test, y_test = binary
    inf = _influence(binary)
    seen = []

    def overwriting(m, data):
        Xd, yd = data
        iw.train(m, (Xd.clone(), yd.clone()), l2=0.05, progress=False)
        seen.append(yd.clone())
        Xd.zero_()
        yd.zero_()

    with untouched(model, X, y, x_test, y_test, inf.train.X, inf.train.y):
        result = iw.craft_attack(
            inf, x_test, y_test, n_poison=1, eps=0.05, max_iter=2, retrain=overwriting,
            progress=False,
        )  # fmt: skip
    assert result.iterations == 2 and all(torch.equal(t, y) for t in seen)


def test_grad_norm_selection_picks_the_largest_l1_input_gradients(binary):
    _, X, _, x_test, y_test = binary
    inf = _influence(binary)
    result = iw.craft_attack(inf, x_test, y_test, n_poison=2, eps=0.0, max_iter=1, progress=False)
    pert = inf.perturbation_influence(x_test, y_test)[0]
    expected = torch.argsort(pert.abs().sum(1), descending=True)[:2]
    np.testing.assert_array_equal(result.poisoned, expected.numpy())
    assert result.max_change == 0 and not result.flipped  # eps = 0 cannot move anything


def test_eight_bit_levels():
    assert iw.eight_bit_levels(0.5) == pytest.approx(0.5 / 255)
    assert iw.eight_bit_levels(2, data_range=2.0) == pytest.approx(4 / 255)
    with pytest.raises(ValueError, match="levels"):
        iw.eight_bit_levels(-1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": -0.1}, "eps"),
        ({"n_poison": 1000}, "n_poison"),
        ({"n_poison": 0}, "n_poison"),
        ({"step_size": -1.0}, "step_size"),
        ({"retrain": False}, "retrain"),
        ({"select": "largest"}, "select"),
        ({"select": [1, 1]}, "select"),
        ({"input_range": (1.0, 0.0)}, "input_range"),
        ({"test_index": "abc"}, "^test_index: "),
        ({"test_index": 1.5}, "^test_index: "),
        ({"test_index": True}, "^test_index: "),
        ({"test_index": -1}, "^test_index: "),
    ],
)
def test_bad_arguments_name_themselves(binary, kwargs, match):
    _, _, _, x_test, y_test = binary
    args = {"n_poison": 2, "max_iter": 1, "progress": False, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        iw.craft_attack(_influence(binary), x_test, y_test, **args)


def test_tabular_data_needs_its_own_range_and_one_correct_test_point(binary):
    model, X, y, x_test, y_test = binary
    standardised = (X - X.mean(0)) / X.std(0)  # tabular: values outside [0, 1]
    m = iw.models.logistic_regression((4, 2))
    iw.train(m, (standardised, y), l2=0.05, progress=False)
    inf = iw.Influence(m, (standardised, y), l2=0.05, progress=False)
    with pytest.raises(ValueError, match="input_range=None"):
        iw.craft_attack(inf, standardised[:1], y[:1], max_iter=1, progress=False)
    with pytest.raises(ValueError, match="one test point"):
        iw.craft_attack(_influence(binary), X[:2], y[:2], progress=False)
    with torch.no_grad():
        wrong = int(torch.nonzero(model(X).argmax(1) != y)[0])
    with pytest.raises(ValueError, match="correctly classified"):
        iw.craft_attack(_influence(binary), X[wrong : wrong + 1], y[wrong : wrong + 1])


def test_frozen_features_with_a_trainable_top_layer(binary, untouched):
    """The paper's setting: H over the top layer only, I_pert through the frozen layers to x."""
    _, X, y, _, _ = binary
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2)
    ).double()
    iw.train(net, (X, y), l2=0.05, progress=False)
    top = ["2.weight", "2.bias"]
    inf = iw.Influence(net, (X, y), l2=0.05, params=top, progress=False)
    with torch.no_grad():
        margin = net(X)[:, 1] - net(X)[:, 0]
    correct = torch.nonzero((margin > 0).long() == y).squeeze(1)
    t = int(correct[torch.argmin(margin[correct].abs())])
    with untouched(net, X, y, inf.train.X, inf.train.y):  # the user's network included
        result = iw.craft_attack(
            inf, X[t : t + 1], y[t : t + 1], n_poison=3, eps=0.3, step_size=0.05, max_iter=30,
            progress=False,
        )  # fmt: skip
    assert result.true_class_probability[-1] < result.true_class_probability[0]
    assert result.max_change <= 0.3 + 1e-12 and result.max_change > 0


def test_shipped_extractor_loads_frozen_with_a_zero_head():
    model = iw.models.fmnist_attack_model()
    extractor, head = model[0], model[1]
    assert not any(p.requires_grad for p in extractor.parameters())
    assert head.weight.requires_grad and float(head.weight.detach().abs().sum()) == 0
    x = torch.rand(3, 784, dtype=torch.float64)
    features = extractor(x)
    assert features.shape == (3, 784) and bool(torch.isfinite(features).all())
    assert float(features.std()) > 0  # trained weights, not an empty file
    dense = iw.models.fmnist_attack_model(features="dense")
    assert dense[0](x).shape == (3, 32) and dense[1].in_features == 32
    # the conv features are the dense model's intermediate ones: the same trained weights
    torch.testing.assert_close(dense[0][:6](x), features)
    with pytest.raises(ValueError, match="features"):
        iw.models.fmnist_attack_model(features="pixels")


def test_head_only_retraining_on_cached_features_equals_full_retraining(binary, untouched):
    """The fast path (features of untouched points cached, L-BFGS on the head alone) reaches the
    same models as iw.train over the whole network, step after step."""
    _, X, y, _, _ = binary
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)
    ).double()
    top = ["2.weight", "2.bias"]
    iw.train(net, (X, y), l2=0.05, params=top, progress=False)
    inf = iw.Influence(net, (X, y), l2=0.05, params=top, progress=False)
    with torch.no_grad():
        margin = net(X)[:, 1] - net(X)[:, 0]
    correct = torch.nonzero((margin > 0).long() == y).squeeze(1)
    t = int(correct[torch.argmin(margin[correct].abs())])
    kw = {"n_poison": 2, "eps": 0.2, "step_size": 0.05, "max_iter": 4, "progress": False}

    def full(m, data):
        iw.train(m, data, l2=0.05, params=top, progress=False)

    with untouched(net, X, y, inf.train.X, inf.train.y):
        fast = iw.craft_attack(inf, X[t : t + 1], y[t : t + 1], **kw)
        slow = iw.craft_attack(inf, X[t : t + 1], y[t : t + 1], retrain=full, **kw)
    assert fast.iterations == slow.iterations
    np.testing.assert_allclose(fast.true_class_probability, slow.true_class_probability, atol=1e-7)
    torch.testing.assert_close(fast.perturbed_inputs, slow.perturbed_inputs)


def test_attack_stops_at_a_fixed_point_when_every_input_sits_on_its_eps_box(binary):
    """eps too small to flip: once the inputs stop moving, further steps would change nothing."""
    _, _, _, x_test, y_test = binary
    inf = _influence(binary)
    result = iw.craft_attack(
        inf, x_test, y_test, n_poison=1, eps=1e-3, step_size=5e-4, max_iter=50, progress=False
    )
    assert not result.flipped and result.stopped == "fixed point"
    assert result.iterations < 50
    assert result.max_change == pytest.approx(1e-3)
    flipped = iw.craft_attack(
        inf, x_test, y_test, n_poison=3, eps=0.25, step_size=0.05, max_iter=40, progress=False
    )
    assert flipped.stopped == "flipped"
    short = iw.craft_attack(
        inf, x_test, y_test, n_poison=1, eps=0.25, step_size=1e-3, max_iter=2, progress=False
    )
    assert short.stopped == "max_iter" and short.iterations == 2


# ----- the head-only state's Newton steps (retraining and s_test by preconditioned CG) --------
TOP = ["2.weight", "2.bias"]


@pytest.fixture(scope="module")
def frozen_net(binary):
    """A frozen tanh layer under a trainable logistic-regression head, the head at a minimum."""
    _, X, y, _, _ = binary
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)
    ).double()
    iw.train(net, (X, y), l2=0.05, params=TOP, tol=1e-12, progress=False)
    return net


def _head_state(frozen_net, binary):
    """The Newton state of an attack on X[0], and a copy of X with rows 3 and 7 moved."""
    _, X, y, _, _ = binary
    inf = iw.Influence(frozen_net, (X, y), l2=0.05, params=TOP, progress=False)
    state = attack.LinearHeadNewton(inf, X, X[:1], y[:1], y)
    state.s_test()  # as craft_attack does before each retrain: factorises H at theta_hat
    rows = torch.tensor([3, 7])
    Xp = X.clone()
    Xp[rows] = (Xp[rows] + 0.1 * torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=X.dtype)).clamp(0, 1)
    return state, Xp, rows


def _risk_gradient_norm(net, X, y) -> float:
    named = dict(net.named_parameters())
    theta = [named[n] for n in TOP]
    risk = torch.nn.functional.cross_entropy(net(X), y) + 0.025 * sum(p.pow(2).sum() for p in theta)
    return float(torch.cat([g.reshape(-1) for g in torch.autograd.grad(risk, theta)]).norm())


def _train_reports(monkeypatch) -> list:
    """Record the TrainingReport of every train() call the attack makes."""
    reports, original = [], attack.train

    def recording(*args, **kwargs):
        reports.append(original(*args, **kwargs))
        return reports[-1]

    monkeypatch.setattr(attack, "train", recording)
    return reports


def _assert_head_retrained(state, frozen_net, Xp, y) -> None:
    """The state's head is at train's tolerance and equals the head that iw.train reaches."""
    assert _risk_gradient_norm(state.model, Xp, y) <= 1e-8
    net = copy.deepcopy(frozen_net)
    iw.train(net, (Xp, y), l2=0.05, params=TOP, tol=1e-12, progress=False)
    torch.testing.assert_close(state.model[2].weight, net[2].weight, rtol=0, atol=1e-7)
    torch.testing.assert_close(state.model[2].bias, net[2].bias, rtol=0, atol=1e-7)


def test_newton_retraining_reaches_train_tolerance_without_l_bfgs(frozen_net, binary, monkeypatch):
    _, _, y, _, _ = binary
    state, Xp, rows = _head_state(frozen_net, binary)
    reports = _train_reports(monkeypatch)
    state.retrain(Xp, rows)
    assert reports == [] and 0 < state.newton_iterations < attack.PCG_MAX_ITER  # Newton only
    assert state.preconditioner is not None  # kept for the next step
    _assert_head_retrained(state, frozen_net, Xp, y)


def test_newton_retraining_falls_back_to_l_bfgs_when_it_cannot_converge(
    frozen_net, binary, monkeypatch
):
    _, _, y, _, _ = binary
    state, Xp, rows = _head_state(frozen_net, binary)
    reports = _train_reports(monkeypatch)
    monkeypatch.setattr(attack, "NEWTON_MAX_STEPS", 1)
    state.retrain(Xp, rows)
    assert reports[0].iterations > 0 and reports[0].converged  # L-BFGS finished the job
    assert state.preconditioner is None  # and the next s_test refactorises
    _assert_head_retrained(state, frozen_net, Xp, y)


def test_failed_newton_step_refactorises_h_at_the_current_theta_instead_of_l_bfgs(
    frozen_net, binary, monkeypatch
):
    """When the first Newton step's PCG fails (as on a broken factor), that step refactorises at
    the current theta and is retried; Newton steps then converge with no L-BFGS, to the same
    head as full retraining."""
    from influence_widgets.core import newton

    _, _, y, _, _ = binary
    state, Xp, rows = _head_state(frozen_net, binary)
    reports = _train_reports(monkeypatch)
    pcg_calls, pcg = [], newton.preconditioned_cg

    def first_fails(*args, **kwargs):
        pcg_calls.append(1)
        return (None, attack.PCG_MAX_ITER) if len(pcg_calls) == 1 else pcg(*args, **kwargs)

    monkeypatch.setattr(newton, "preconditioned_cg", first_fails)
    thetas, original = [], attack.LinearHeadNewton.factorise

    def factorise(self):
        thetas.append(self.head_inf.objective.theta.clone())
        original(self)

    monkeypatch.setattr(attack.LinearHeadNewton, "factorise", factorise)
    start = state.head_inf.objective.theta.clone()
    state.retrain(Xp, rows)
    assert reports == [] and len(thetas) == 1  # one refactorisation, no L-BFGS
    torch.testing.assert_close(thetas[0], start)  # at the current theta (no step was taken)
    assert state.preconditioner is not None and state.newton_iterations > 0
    _assert_head_retrained(state, frozen_net, Xp, y)


def test_refactor_schedule_buys_a_factor_once_the_extra_iterations_cost_as_much():
    schedule = attack.RefactorSchedule(factor_seconds=3.0)
    assert not schedule.step(1.0)  # the first step on the factor sets the baseline
    assert [schedule.step(s) for s in (2.0, 1.5, 0.5, 2.6)] == [False, False, False, True]
    schedule.factored(10.0)  # a new factor: the count starts again
    assert not schedule.step(5.0) and not schedule.step(14.0)
    assert schedule.step(7.0)


def test_aged_factor_is_replaced_on_the_schedule(frozen_net, binary, monkeypatch):
    """With a factor that cost nothing to make, the second step that iterates longer than the
    first refactorises at the theta of that step."""
    _, _, y, _, _ = binary
    state, Xp, rows = _head_state(frozen_net, binary)
    state.schedule.factored(0.0)
    calls = []
    monkeypatch.setattr(state.schedule, "step", lambda seconds: calls.append(seconds) or True)
    factorised = []
    monkeypatch.setattr(
        attack.LinearHeadNewton, "factorise", lambda self: factorised.append(1) or None
    )
    state.s_test()  # no retrain since the last s_test: not a step
    assert calls == [] and factorised == []
    state.retrain(Xp, rows)
    state.s_test()
    assert len(calls) == 1 and calls[0] > 0 and factorised == [1]


@pytest.mark.parametrize("pcg_max_iter", [attack.PCG_MAX_ITER, 1])
def test_newton_state_s_test_equals_a_fresh_direct_fit(
    frozen_net, binary, monkeypatch, pcg_max_iter
):
    """s_test by CG preconditioned with the previous factor, or (CG failing) a fresh factor."""
    _, X, y, _, _ = binary
    state, Xp, rows = _head_state(frozen_net, binary)
    monkeypatch.setattr(attack, "PCG_MAX_ITER", pcg_max_iter)
    results, original = [], attack.preconditioned_cg
    monkeypatch.setattr(
        attack, "preconditioned_cg", lambda *args: results.append(original(*args)) or results[-1]
    )
    for step in range(3):
        Xp[rows] = (Xp[rows] + 0.02 * step).clamp(0, 1)
        state.retrain(Xp, rows)
        s = state.s_test()
        fresh = iw.Influence(
            state.model, (Xp, y), l2=0.05, params=TOP, solver="direct", progress=False
        )
        expected = fresh.s_test(X[:1], y[:1])
        assert float((s - expected).norm() / expected.norm()) <= 1e-10
    assert [x is not None for x, _ in results] == [pcg_max_iter > 1] * 3


# ----- why it stopped, the smallest eps that flips, the first step's factor ---------------------
def test_stop_reason_says_why_the_attack_stopped_and_what_to_try(binary):
    _, _, _, x_test, y_test = binary
    inf = _influence(binary)

    def run(**options):
        return iw.craft_attack(inf, x_test, y_test, progress=False, **options)

    flipped = run(n_poison=3, eps=0.25, step_size=0.05, max_iter=40)
    assert flipped.stopped == "flipped"
    lead = f"{round(100 * flipped.margin)} percentage point"
    assert flipped.stop_reason.startswith(f"Flipped after {flipped.iterations} steps: ")
    assert f"the new class leads by {lead}" in flipped.stop_reason
    short = run(eps=1e-4, step_size=1e-6, max_iter=2)
    assert short.stopped == "max_iter" and not short.flipped
    assert short.stop_reason.startswith("Stopped after 2 steps (the most allowed, max_iter)")
    assert "raise the iterations or eps" in short.stop_reason
    stuck = run(eps=1e-4, step_size=1e-4, max_iter=10)  # on the box's boundary after one step
    assert stuck.stopped == "fixed point" and stuck.iterations == 1
    assert "a fixed point" in stuck.stop_reason and "raise eps or perturb more points" in (
        stuck.stop_reason
    )
    cancel = threading.Event()
    cancel.set()
    cancelled = run(eps=0.25, cancel=cancel)
    assert cancelled.stop_reason == "Cancelled after 0 steps, not flipped."


def test_a_range_per_feature_keeps_every_feature_inside_its_own_range(binary):
    """Tables: input_range as (low, high) tensors of one input's shape, e.g. each feature's
    training range, so that a poisoned row never takes a value the data never had."""
    _, X, _, x_test, y_test = binary
    inf = _influence(binary)
    low = torch.tensor([0.0, 0.2, 0.0, 0.1], dtype=X.dtype).minimum(X.amin(0))
    high = torch.tensor([1.0, 0.9, 0.6, 1.0], dtype=X.dtype).maximum(X.amax(0))
    result = iw.craft_attack(
        inf, x_test, y_test, n_poison=6, eps=1.0, step_size=0.1, max_iter=10,
        input_range=(low, high), progress=False,
    )  # fmt: skip
    moved = result.perturbed_inputs
    assert bool((moved >= low).all()) and bool((moved <= high).all())
    assert bool(((moved == low) | (moved == high)).any())  # the box was reached, and held
    with pytest.raises(TypeError, match=r"input_range: .*one input's shape \(4,\)"):
        iw.craft_attack(inf, x_test, y_test, input_range=(low[:3], high[:3]), progress=False)
    with pytest.raises(ValueError, match="input_range: expected \\(low, high\\) with low < high"):
        iw.craft_attack(inf, x_test, y_test, input_range=(high, low), progress=False)


def test_stop_margin_goes_on_after_the_flip_until_the_new_class_leads_by_it(binary):
    _, _, _, x_test, y_test = binary
    inf = _influence(binary)
    options = {"n_poison": 10, "eps": 1.0, "step_size": 0.05, "max_iter": 60, "progress": False}
    first = iw.craft_attack(inf, x_test, y_test, **options)
    assert first.stopped == "flipped" and first.stop_margin == 0.0
    goal = 0.3
    assert first.margin < goal  # the first flip is close: a near tie
    clear = iw.craft_attack(inf, x_test, y_test, stop_margin=goal, **options)
    assert clear.stopped == "flipped" and clear.reached_margin
    assert clear.margin >= goal and clear.iterations > first.iterations
    after = clear.probabilities_after
    assert clear.margin == pytest.approx(after[clear.prediction_after] - after[y_test.item()])
    assert f"leads by {round(100 * clear.margin)} percentage points" in clear.stop_reason
    # asked for more than the steps allow: flipped, but the reason says the lead fell short
    short = iw.craft_attack(inf, x_test, y_test, stop_margin=0.99, **{**options, "max_iter": 4})
    if short.flipped:
        assert not short.reached_margin and short.stopped == "max_iter"
        assert "flipped, but the new class leads by only" in short.stop_reason
        assert "short of the 99 percentage points asked (stop_margin)" in short.stop_reason
    else:
        assert "not flipped" in short.stop_reason
    assert short.margin < 0.99
    with pytest.raises(ValueError, match="stop_margin: a lead in probability"):
        iw.craft_attack(inf, x_test, y_test, stop_margin=1.0, **options)


def test_smallest_flipping_eps_doubles_then_bisects_to_an_eps_that_flips(binary, untouched):
    model, X, y, x_test, y_test = binary
    inf = _influence(binary)
    with untouched(model, X, y, x_test, y_test):
        search = iw.smallest_flipping_eps(
            inf, x_test, y_test, eps_max=1.0, eps_start=1 / 32, bisections=2, n_poison=3,
            max_iter=15, progress=False,
        )  # fmt: skip
    assert search.stopped == "found" and search.eps is not None
    eps_tried = [e for e, _ in search.tried]
    assert eps_tried[:2] == [1 / 32, 1 / 16]  # doubling first
    assert search.result.flipped and search.result.eps == search.eps
    below = search.largest_failure
    assert below is not None and below < search.eps <= below * (1 + 2**-2) + 1e-12
    # the eps just below does not flip: the search's record agrees with a fresh attack
    again = iw.craft_attack(inf, x_test, y_test, n_poison=3, eps=below, max_iter=15, progress=False)
    assert not again.flipped
    assert "stopped='found'" in repr(search)


def test_smallest_flipping_eps_reports_when_nothing_up_to_eps_max_flips(binary):
    _, _, _, x_test, y_test = binary
    inf = _influence(binary)
    search = iw.smallest_flipping_eps(
        inf, x_test, y_test, eps_max=1e-3, eps_start=5e-4, max_iter=3, progress=False
    )
    assert search.eps is None and search.stopped == "no flip"
    assert [e for e, _ in search.tried] == [5e-4, 1e-3] and search.result.eps == 1e-3


def test_the_first_step_reuses_the_fitted_direct_inverse_instead_of_refactorising(
    frozen_net, binary, monkeypatch
):
    _, X, y, _, _ = binary
    fitted = iw.Influence(frozen_net, (X, y), l2=0.05, params=TOP, progress=False).fit()
    unfitted = iw.Influence(frozen_net, (X, y), l2=0.05, params=TOP, progress=False)
    reference = attack.LinearHeadNewton(unfitted, X, X[:1], y[:1], y).s_test()
    factorised = []
    monkeypatch.setattr(
        attack.LinearHeadNewton, "factorise", lambda self: factorised.append(1) or None
    )
    state = attack.LinearHeadNewton(fitted, X, X[:1], y[:1], y)
    torch.testing.assert_close(state.s_test(), reference, rtol=1e-9, atol=1e-12)
    assert factorised == []
