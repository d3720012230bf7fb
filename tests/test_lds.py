"""iw.lds: the linear datamodeling score and its noise floor, against hand computations."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import influence_widgets as iw
from influence_widgets.analysis.lds import (
    TrainFromScratch,
    draw_subsets,
    margins,
    reinitialise,
    spearman_columns,
)
from influence_widgets.core.progress import report_progress

L2 = 0.05


@pytest.fixture(scope="module")
def tiny():
    """A 3-class float64 logistic regression at a tight minimum: 60 points, 5 features, and 12
    labelled test points."""
    gen = torch.Generator().manual_seed(7)
    W = torch.randn(5, 3, generator=gen, dtype=torch.float64)

    def points(n):
        X = torch.randn(n, 5, generator=gen, dtype=torch.float64)
        return X, (X @ W + 0.8 * torch.randn(n, 3, generator=gen, dtype=torch.float64)).argmax(1)

    X, y = points(60)
    x_test, y_test = points(12)
    model = iw.models.logistic_regression((5, 3))
    iw.train(model, (X, y), l2=L2, progress=False)
    inf = iw.Influence(model, (X, y), l2=L2, progress=False)
    return model, X, y, x_test, y_test, inf


def _lds(tiny, scores=None, **kw):
    model, X, y, x_test, y_test, inf = tiny
    kw = {"x_test": x_test, "y_test": y_test, "progress": False, **kw}
    if scores is None:
        return iw.lds(inf, (X, y), **kw)
    return iw.lds(scores, (X, y), **{"model": model, "l2": L2, **kw})


def _hand_outputs(X, y, x_test, y_test, mask):
    """Train a zero-initialised logistic regression on the subset by L-BFGS to 1e-11, and
    return its margin log p(y|x) - log(1 - p(y|x)) and its cross-entropy loss, float64."""
    m = torch.nn.Linear(X.shape[1], 3, dtype=torch.float64)
    torch.nn.init.zeros_(m.weight)
    torch.nn.init.zeros_(m.bias)
    keep = torch.from_numpy(mask)
    iw.train(m, (X[keep], y[keep]), l2=L2, tol=1e-11, progress=False)
    with torch.no_grad():
        p = torch.softmax(m(x_test), dim=1).gather(1, y_test[:, None])[:, 0]
    return (torch.log(p) - torch.log1p(-p)).numpy(), (-torch.log(p)).numpy()


def test_lds_matches_a_hand_computation(tiny):
    model, X, y, x_test, y_test, inf = tiny
    result = _lds(tiny, subsets=8, noise_floor=False)
    margin = _lds(tiny, subsets=8, noise_floor=False)  # same seed: the same subsets
    loss = _lds(tiny, subsets=8, noise_floor=False, output="loss")
    np.testing.assert_array_equal(loss.masks, result.masks)
    scores = inf.predicted_removal_effect(x_test, y_test).numpy()
    hand = [_hand_outputs(X, y, x_test, y_test, mask) for mask in result.masks]
    f = np.stack([h[0] for h in hand])  # (M, T) margins
    losses = np.stack([h[1] for h in hand])
    g = result.masks.astype(np.float64) @ scores.T  # g_j(z) = sum over S_j of tau(z)_i
    np.testing.assert_allclose(result.actual, f, atol=1e-6)
    np.testing.assert_allclose(loss.actual, losses, atol=1e-6)
    np.testing.assert_allclose(result.predicted, g, rtol=1e-12, atol=0)
    expected = [spearmanr(f[:, t], g[:, t])[0] for t in range(len(y_test))]
    np.testing.assert_allclose(result.per_test, expected, atol=1e-12)
    expected_loss = [spearmanr(-losses[:, t], g[:, t])[0] for t in range(len(y_test))]
    np.testing.assert_allclose(loss.per_test, expected_loss, atol=1e-12)
    # cross-entropy: the margin and -loss both increase with p(y|x), so their ranks agree
    np.testing.assert_allclose(loss.per_test, result.per_test, atol=1e-12)
    assert result.mean == pytest.approx(np.mean(expected), abs=1e-12)
    assert result.se == pytest.approx(np.std(expected, ddof=1) / np.sqrt(12), abs=1e-12)
    np.testing.assert_array_equal(margin.per_test, result.per_test)  # reproducible
    assert result.mean > 0.9 and not result.cancelled and result.n_subsets == 8


def test_random_scores_score_near_zero_and_flipped_scores_negate(tiny):
    model, X, y, x_test, y_test, inf = tiny
    scores = inf.predicted_removal_effect(x_test, y_test)
    good = _lds(tiny, scores, subsets=10, noise_floor=False)
    flipped = _lds(tiny, -scores, subsets=10, noise_floor=False)
    noise = torch.randn(
        scores.shape, generator=torch.Generator().manual_seed(0), dtype=scores.dtype
    )
    random = _lds(tiny, noise, subsets=10, noise_floor=False)
    assert good.mean > 0.9
    np.testing.assert_allclose(flipped.per_test, -good.per_test, atol=1e-12)
    assert flipped.mean < -0.9
    assert abs(random.mean) < 0.3 and random.mean < good.mean - 0.6
    np.testing.assert_array_equal(random.actual, good.actual)  # the same retrains


def test_scores_from_an_influence_or_an_array_agree(tiny):
    model, X, y, x_test, y_test, inf = tiny
    from_influence = _lds(tiny, subsets=5, noise_floor=False)
    scores = inf.predicted_removal_effect(x_test, y_test).numpy()
    from_array = _lds(tiny, scores, subsets=5, noise_floor=False)
    np.testing.assert_allclose(from_array.actual, from_influence.actual, atol=1e-7)
    np.testing.assert_allclose(from_array.per_test, from_influence.per_test, atol=1e-12)


def test_unlabeled_test_points_take_the_predicted_classes(tiny):
    model, X, y, x_test, y_test, inf = tiny
    predicted = inf.predicted_labels(x_test)
    assert (predicted != y_test).any()  # the case is not trivial
    unlabeled = iw.lds(inf, (X, y), x_test=x_test, y_test=None, subsets=4, progress=False)
    labeled = iw.lds(inf, (X, y), x_test=x_test, y_test=predicted, subsets=4, progress=False)
    np.testing.assert_array_equal(unlabeled.labels, predicted.numpy())
    np.testing.assert_array_equal(unlabeled.per_test, labeled.per_test)


@pytest.mark.slow
def test_influence_on_regularised_digits_has_a_high_lds():
    data = iw.datasets.digits(n_train=200)
    model = iw.models.logistic_regression(data)
    iw.train(model, data, l2=L2, progress=False)
    inf = iw.Influence(model, data, l2=L2, progress=False)
    x_test, y_test = data.X_test[:30], data.y_test[:30]
    result = iw.lds(inf, data, x_test=x_test, y_test=y_test, subsets=20, progress=False)
    assert result.mean > 0.8 and result.se < 0.05
    assert result.noise_floor == pytest.approx(1.0, abs=1e-9)  # convex: one minimum
    assert result.mean <= result.noise_floor


# ----- noise floor -------------------------------------------------------------------------------
def test_noise_floor_is_one_for_a_convex_model_from_different_inits(tiny):
    model, X, y, x_test, y_test, inf = tiny
    starts = []

    def recording(model_factory, Xs, ys, seed):
        m = reinitialise(model_factory(), seed)
        starts.append((seed, m.weight.detach().clone()))
        iw.train(m, (Xs, ys), l2=L2, progress=False)
        return m

    result = _lds(tiny, subsets=6, train_fn=recording)
    seeds = [s for s, _ in starts]
    assert seeds == result.seeds.reshape(-1).tolist()  # subset by subset: run 0, then run 1
    assert (result.seeds[:, 0] != result.seeds[:, 1]).all()
    for (_, first), (_, second) in zip(starts[::2], starts[1::2], strict=True):
        assert not torch.equal(first, second)  # the second run starts elsewhere...
    np.testing.assert_allclose(result.rerun, result.actual, atol=1e-6)  # ...and ends the same
    np.testing.assert_allclose(result.noise_floor_per_test, 1.0, atol=1e-12)
    assert result.noise_floor == pytest.approx(1.0) and result.noise_floor_se == 0


def test_noise_floor_drops_when_training_stops_short(tiny):
    """Five gradient steps from a random init: where training ends depends on the seed."""

    def five_steps(model_factory, Xs, ys, seed):
        m = reinitialise(model_factory(), seed)
        opt = torch.optim.SGD(m.parameters(), lr=0.5)
        for _ in range(5):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(Xs), ys).backward()
            opt.step()
        return m

    result = _lds(tiny, subsets=8, train_fn=five_steps)
    assert result.noise_floor < 0.95
    np.testing.assert_allclose(
        result.noise_floor_per_test, spearman_columns(result.actual, result.rerun)
    )


def test_noise_floor_off_keeps_the_first_run(tiny):
    with_floor = _lds(tiny, subsets=4)
    without = _lds(tiny, subsets=4, noise_floor=False)
    np.testing.assert_array_equal(without.actual, with_floor.actual)
    assert without.rerun is None and without.noise_floor_per_test is None
    assert np.isnan(without.noise_floor) and np.isnan(without.noise_floor_se)


# ----- subsets, margins, re-initialisation -------------------------------------------------------
def test_subsets_are_seeded_of_the_right_size_and_extendable():
    masks, seeds = draw_subsets(50, 10, 25, seed=3)
    again, _ = draw_subsets(50, 10, 25, seed=3)
    fewer, fewer_seeds = draw_subsets(50, 4, 25, seed=3)
    other, _ = draw_subsets(50, 10, 25, seed=4)
    assert masks.shape == (10, 50) and masks.dtype == bool
    assert (masks.sum(1) == 25).all() and len({m.tobytes() for m in masks}) == 10
    np.testing.assert_array_equal(masks, again)
    np.testing.assert_array_equal(masks[:4], fewer)
    np.testing.assert_array_equal(seeds[:4], fewer_seeds)
    assert not np.array_equal(masks, other)
    assert (seeds[:, 0] != seeds[:, 1]).all()


def test_margins_against_probabilities():
    gen = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(6, 4, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 1, 0])
    p = torch.softmax(logits, 1)[torch.arange(6), labels]
    torch.testing.assert_close(margins(logits, labels), torch.log(p) - torch.log(1 - p))
    score = torch.tensor([1.5, -0.5, 2.0], dtype=torch.float64)  # a binary score, logit of 1
    p1 = torch.sigmoid(score)
    binary = torch.tensor([1, 0, 0])
    p = torch.where(binary == 1, p1, 1 - p1)
    torch.testing.assert_close(margins(score, binary), torch.log(p) - torch.log(1 - p))
    torch.testing.assert_close(margins(score[:, None], binary), margins(score, binary))


def test_reinitialise_touches_only_trained_parameters_and_no_random_state():
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2)
    )
    with torch.no_grad():
        model[1].running_mean.fill_(0.5)
    model[0].requires_grad_(False)  # a frozen extractor
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    reinitialise(model, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    after = model.state_dict()
    for key in ("0.weight", "0.bias", "1.running_mean", "1.running_var"):
        assert torch.equal(after[key], before[key]), key
    assert not torch.equal(after["2.weight"], before["2.weight"])
    twin = torch.nn.Sequential(
        torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2)
    )
    twin.load_state_dict(before)
    twin[0].requires_grad_(False)
    reinitialise(twin, seed=1)
    assert torch.equal(twin[2].weight, model[2].weight)  # the same seed, the same init


# ----- the user's state, cancel, progress --------------------------------------------------------
def test_user_model_and_tensors_are_unchanged(tiny, untouched):
    model, X, y, x_test, y_test, inf = tiny
    scores = inf.predicted_removal_effect(x_test, y_test)

    def overwriting(model_factory, Xs, ys, seed):
        m = TrainFromScratch(l2=L2, loss="cross_entropy")(model_factory, Xs, ys, seed)
        Xs.zero_()  # a recipe that writes its data writes a copy
        ys.zero_()
        return m

    with untouched(model, X, y, x_test, y_test, scores, inf.train.X, inf.objective.theta):
        _lds(tiny, subsets=3)
        _lds(tiny, scores, subsets=3, train_fn=overwriting)


def test_cancel_returns_the_subsets_done(tiny):
    model, X, y, x_test, y_test, inf = tiny
    cancel = threading.Event()
    calls = []

    def counting(model_factory, Xs, ys, seed):
        calls.append(seed)
        if len(calls) == 3:  # subset 0's two runs, then subset 1's first
            cancel.set()
        return TrainFromScratch(l2=L2, loss="cross_entropy")(model_factory, Xs, ys, seed)

    result = _lds(tiny, subsets=10, train_fn=counting, cancel=cancel)
    assert len(calls) == 3 and result.cancelled and result.n_subsets == 1
    assert result.actual.shape == result.rerun.shape == result.predicted.shape == (1, 12)
    assert result.masks.shape == (1, 60) and np.isnan(result.mean)  # undefined for 1 subset
    cancel.clear()
    calls.clear()
    partial = _lds(tiny, subsets=10, train_fn=counting, cancel=cancel, noise_floor=False)
    assert partial.n_subsets == 3 and partial.cancelled and np.isfinite(partial.mean)
    full = _lds(tiny, subsets=3, noise_floor=False)
    np.testing.assert_allclose(partial.per_test, full.per_test, atol=1e-12)


def test_progress_reaches_a_listener(tiny):
    seen = []
    with report_progress(lambda step, fraction: seen.append((step, fraction))):
        _lds(tiny, subsets=3)
    assert [f for s, f in seen if s == "LDS retraining"] == pytest.approx(
        [1 / 6 * k for k in range(1, 7)]
    )


# ----- errors ------------------------------------------------------------------------------------
def _raising(model_factory, X, y, seed):
    raise ValueError("boom")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"fraction": 0}, ValueError, "^fraction: "),
        ({"fraction": 1.0}, ValueError, "^fraction: "),
        ({"fraction": -0.2}, ValueError, "^fraction: "),
        ({"fraction": 0.999}, ValueError, "^fraction: .* keeps 60"),
        ({"fraction": "half"}, TypeError, "^fraction: "),
        ({"subsets": 2}, ValueError, "^subsets: need at least 3"),
        ({"subsets": 0}, ValueError, "^subsets: "),
        ({"subsets": 5.0}, TypeError, "^subsets: "),
        ({"output": "logit"}, ValueError, "^output: "),
        ({"train_fn": 3}, TypeError, "^train_fn: "),
        ({"train_fn": _raising}, RuntimeError, "^train_fn: raised ValueError: boom"),
        ({"train_fn": lambda f, X, y, s: None}, TypeError, "^train_fn: must return"),
        ({"seed": -1}, ValueError, "^seed: "),
        ({"cancel": True}, TypeError, "^cancel: "),
        ({"model": torch.nn.Linear(5, 3)}, TypeError, "^model: comes from the Influence"),
        ({"l2": 0.1}, TypeError, "^l2: comes from the Influence"),
    ],
)
def test_bad_arguments_name_themselves(tiny, kwargs, error, match):
    with pytest.raises(error, match=match):
        _lds(tiny, **{"subsets": 3, **kwargs})


def test_bad_scores_and_labels_name_themselves(tiny):
    model, X, y, x_test, y_test, inf = tiny
    scores = inf.predicted_removal_effect(x_test, y_test)
    with pytest.raises(ValueError, match=r"^influence_or_scores: scores of shape \(12, 59\)"):
        _lds(tiny, scores[:, 1:], subsets=3)
    with pytest.raises(ValueError, match="^influence_or_scores: .*NaN"):
        _lds(tiny, scores * float("nan"), subsets=3)
    with pytest.raises(TypeError, match="^influence_or_scores: "):
        _lds(tiny, "scores", subsets=3)
    with pytest.raises(ValueError, match="^y_test: needed with a score array"):
        iw.lds(scores, (X, y), x_test=x_test, y_test=None, model=model, progress=False)
    with pytest.raises(TypeError, match="^model: with a score array"):
        iw.lds(scores, (X, y), x_test=x_test, y_test=y_test, progress=False)
    with pytest.raises(ValueError, match="y_test has 11"):
        iw.lds(inf, (X, y), x_test=x_test, y_test=y_test[1:], subsets=3, progress=False)
    with pytest.raises(ValueError, match="^y_test: has 11 labels for 12 test points"):
        _lds(tiny, scores, y_test=y_test[1:], subsets=3)
    with pytest.raises(ValueError, match="^data: has 59 training points"):
        iw.lds(inf, (X[1:], y[1:]), x_test=x_test, y_test=y_test, subsets=3, progress=False)
    with pytest.raises(ValueError, match="^y_test: labels must be class indices"):
        _lds(tiny, scores, y_test=y_test + 3, subsets=3)


def test_margin_needs_class_labels():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    y = X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    model = torch.nn.Linear(3, 1, dtype=torch.float64)
    scores = torch.zeros(4, 30, dtype=torch.float64)
    kw = {"x_test": X[:4], "y_test": y[:4, None], "model": model, "loss": "mse", "subsets": 3}
    with pytest.raises(ValueError, match="^output: 'margin' needs integer class labels"):
        iw.lds(scores, (X, y[:, None]), progress=False, **kw)
    result = iw.lds(scores, (X, y[:, None]), output="loss", progress=False, **kw)
    assert result.actual.shape == (3, 4)


# ----- plot, frame --------------------------------------------------------------------------------
def test_plot_frame_and_repr(tiny, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    result = _lds(tiny, subsets=4)
    ax = result.plot()
    assert "noise floor" in " ".join(t.get_text() for t in ax.get_legend().get_texts())
    ax = result.plot(test_index=2)
    np.testing.assert_allclose(ax.collections[0].get_offsets()[:, 0], result.predicted[:, 2])
    assert "LDS = " in ax.get_title()
    frame = result.to_frame()
    assert list(frame.columns) == ["label", "lds", "noise_floor"] and len(frame) == 12
    np.testing.assert_array_equal(frame["lds"].to_numpy(), result.per_test)
    assert repr(result).startswith("LDSResult(mean=") and "n_subsets=4/4" in repr(result)
    np.testing.assert_array_equal(result.indices(0), np.flatnonzero(result.masks[0]))
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        result.to_frame()


def test_rescore_scores_another_attribution_against_the_same_retrains(tiny):
    """One set of retrains, two attributions: rescore equals a fresh lds with the other scores,
    keeps the subsets, outputs and noise floor, and refuses another shape."""
    model, X, y, x_test, y_test, inf = tiny
    ours = inf.predicted_removal_effect(x_test, y_test)
    base = _lds(tiny, subsets=4, seed=3)
    other = torch.randn(ours.shape, generator=torch.Generator().manual_seed(1), dtype=ours.dtype)
    again = base.rescore(other)
    fresh = _lds(tiny, scores=other, subsets=4, seed=3)
    np.testing.assert_allclose(again.per_test, fresh.per_test)
    assert again.mean == pytest.approx(fresh.mean) and again.se == pytest.approx(fresh.se)
    assert again.masks is base.masks and again.actual is base.actual
    assert again.noise_floor == base.noise_floor
    np.testing.assert_allclose(base.rescore(ours).per_test, base.per_test)
    with pytest.raises(ValueError, match="scores: of shape"):
        base.rescore(ours[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        base.rescore(ours * float("nan"))


# ----- resume ------------------------------------------------------------------------------------
def _counting(calls):
    def train_fn(model_factory, Xs, ys, seed):
        calls.append(seed)
        return TrainFromScratch(l2=L2, loss="cross_entropy")(model_factory, Xs, ys, seed)

    return train_fn


def test_resume_retrains_only_the_subsets_missing_and_equals_one_run(tiny):
    cancel, calls = threading.Event(), []

    def stopping(model_factory, Xs, ys, seed):
        if len(calls) == 4:  # subsets 0 and 1 done, both runs
            cancel.set()
        return _counting(calls)(model_factory, Xs, ys, seed)

    cut = _lds(tiny, subsets=5, train_fn=stopping, cancel=cancel)
    assert cut.cancelled and cut.n_subsets == 2
    calls.clear()
    resumed = _lds(tiny, subsets=5, train_fn=_counting(calls), resume=cut)
    assert len(calls) == 6 and not resumed.cancelled  # subsets 2, 3, 4; two runs each
    assert not set(calls) & set(cut.seeds.ravel().tolist())
    full = _lds(tiny, subsets=5)
    for name in ("masks", "seeds", "actual", "rerun", "per_test", "noise_floor_per_test"):
        np.testing.assert_allclose(getattr(resumed, name), getattr(full, name), atol=1e-10)
    assert resumed.seconds >= cut.seconds


def test_resume_extends_a_run_of_fewer_subsets_and_a_finished_run_retrains_nothing(tiny):
    calls = []
    three = _lds(tiny, subsets=3, noise_floor=False)
    five = _lds(tiny, subsets=5, noise_floor=False, train_fn=_counting(calls), resume=three)
    assert len(calls) == 2 and five.n_subsets == 5
    np.testing.assert_array_equal(five.actual[:3], three.actual)
    calls.clear()
    again = _lds(tiny, subsets=5, noise_floor=False, train_fn=_counting(calls), resume=five)
    assert calls == [] and not again.cancelled
    np.testing.assert_array_equal(again.actual, five.actual)
    assert again.rerun is None


def test_resume_of_another_run_names_itself(tiny):
    three = _lds(tiny, subsets=3, noise_floor=False)
    with pytest.raises(ValueError, match="^resume: the result's subset 0 is not among"):
        _lds(tiny, subsets=3, noise_floor=False, seed=1, resume=three)
    with pytest.raises(ValueError, match="^resume: the result has fraction 0.5 and this call 0.4"):
        _lds(tiny, subsets=3, noise_floor=False, fraction=0.4, resume=three)
    with pytest.raises(ValueError, match="^resume: the result has output 'margin'"):
        _lds(tiny, subsets=3, noise_floor=False, output="loss", resume=three)
    with pytest.raises(ValueError, match="^resume: the result has no noise-floor run"):
        _lds(tiny, subsets=3, resume=three)
    with pytest.raises(ValueError, match="^resume: the result's labels differ"):
        model, X, y, x_test, y_test, inf = tiny
        _lds(tiny, subsets=3, noise_floor=False, y_test=(y_test + 1) % 3, resume=three)
    with pytest.raises(TypeError, match="^resume: expected the LDSResult"):
        _lds(tiny, subsets=3, resume={"masks": three.masks})
