"""validate_loo: influence against leave-one-out retraining, on tiny problems."""

from __future__ import annotations

import copy
import threading
import time

import numpy as np
import pytest
import torch

import influence_widgets as iw


@pytest.fixture(scope="module")
def tiny():
    """A 3-class float64 logistic regression at a tight minimum, 80 points, 6 features."""
    gen = torch.Generator().manual_seed(3)
    X = torch.randn(80, 6, generator=gen, dtype=torch.float64)
    W = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    y = (X @ W + 0.8 * torch.randn(80, 3, generator=gen, dtype=torch.float64)).argmax(1)
    model = iw.models.logistic_regression((6, 3))
    iw.train(model, (X, y), l2=0.05, progress=False)
    x_test = torch.randn(1, 6, generator=gen, dtype=torch.float64)
    y_test = torch.tensor([1])
    return model, X, y, x_test, y_test


def _influence(tiny, **kw):
    model, X, y, _, _ = tiny
    return iw.Influence(model, (X, y), l2=0.05, progress=False, **kw)


def test_maxinf_tracks_retraining_and_keeps_user_state(tiny, untouched):
    model, X, y, x_test, y_test = tiny
    inf = _influence(tiny)
    with untouched(model, X, y, x_test, y_test, inf.train.X, inf.train.y, inf.objective.theta):
        result = iw.validate_loo(inf, x_test, y_test, n_remove=20, progress=False)
    assert result.n_removed == 20 and not result.cancelled
    assert result.pearson >= 0.99 and result.spearman >= 0.9
    assert abs(result.drift) < 1e-8
    # maxinf: the 20 largest |predicted removal effect|, in that order
    scores = inf.predicted_removal_effect(x_test, y_test)[0]
    expected = torch.argsort(scores.abs(), descending=True)[:20].numpy()
    np.testing.assert_array_equal(result.removed, expected)
    np.testing.assert_allclose(result.predicted, scores[expected].numpy())


def test_actual_effect_is_a_real_retrain(tiny):
    """The first actual value equals an independent retrain without that point."""
    model, X, y, x_test, y_test = tiny
    result = iw.validate_loo(_influence(tiny), x_test, y_test, n_remove=3, progress=False)
    i = int(result.removed[0])
    keep = torch.ones(len(X), dtype=torch.bool)
    keep[i] = False
    m = copy.deepcopy(model)
    iw.train(m, (X[keep], y[keep]), l2=0.05, progress=False)
    with torch.no_grad():
        changed = torch.nn.functional.cross_entropy(m(x_test), y_test)
        original = torch.nn.functional.cross_entropy(model(x_test), y_test)
    assert result.actual[0] == pytest.approx(float(changed - original), abs=1e-7)


def test_random_strategy_is_seeded_and_differs_from_maxinf(tiny):
    model, X, y, x_test, y_test = tiny
    inf = _influence(tiny)
    a = iw.validate_loo(inf, x_test, y_test, n_remove=8, strategy="random", seed=1, progress=False)
    b = iw.validate_loo(inf, x_test, y_test, n_remove=8, strategy="random", seed=1, progress=False)
    c = iw.validate_loo(inf, x_test, y_test, n_remove=8, strategy="random", seed=2, progress=False)
    m = iw.validate_loo(inf, x_test, y_test, n_remove=8, progress=False)
    np.testing.assert_array_equal(a.removed, b.removed)
    assert not np.array_equal(a.removed, c.removed)
    assert not np.array_equal(a.removed, m.removed)
    assert len(set(a.removed.tolist())) == 8
    # random removals have smaller effects than the largest ones
    assert np.abs(a.actual).max() <= np.abs(m.actual).max() + 1e-12


def test_custom_retrain_and_cancel(tiny, untouched):
    model, X, y, x_test, y_test = tiny
    inf = _influence(tiny)
    cancel = threading.Event()
    seen = []

    def retrain(m, data):
        seen.append(len(data[0]))
        assert m is not model
        iw.train(m, data, l2=0.05, progress=False)
        if len(seen) == 3:  # baseline + two removals, then cancel
            cancel.set()

    with untouched(model, X, y, x_test, y_test, inf.train.X, inf.train.y):
        result = iw.validate_loo(
            inf, x_test, y_test, n_remove=10, retrain=retrain, cancel=cancel, progress=False
        )
    assert seen == [80, 79, 79]
    assert result.cancelled and result.n_removed == 2
    assert len(result.predicted) == len(result.actual) == 2
    assert np.isnan(result.pearson)  # undefined for two points, not a made-up number


def test_a_retrain_function_that_writes_its_data_changes_no_other_retrain(tiny, untouched):
    """Each retrain gets its own copy: one that zeroes its data after training leaves the user's
    tensors, and the data of the retrains after it, as they were."""
    model, X, y, x_test, y_test = tiny
    inf = _influence(tiny)

    def train_then_overwrite(m, data):
        iw.train(m, (data[0].clone(), data[1].clone()), l2=0.05, progress=False)
        data[0].zero_()
        data[1].zero_()

    def plain(m, data):
        iw.train(m, data, l2=0.05, progress=False)

    with untouched(model, X, y, x_test, y_test, inf.train.X, inf.train.y):
        overwritten = iw.validate_loo(
            inf, x_test, y_test, n_remove=3, retrain=train_then_overwrite, progress=False
        )
    clean = iw.validate_loo(inf, x_test, y_test, n_remove=3, retrain=plain, progress=False)
    np.testing.assert_allclose(overwritten.actual, clean.actual, rtol=0, atol=1e-12)


def test_plot_draws_the_scatter_with_r_in_the_title(tiny):
    import matplotlib

    matplotlib.use("Agg")
    model, X, y, x_test, y_test = tiny
    result = iw.validate_loo(_influence(tiny), x_test, y_test, n_remove=5, progress=False)
    ax = result.plot()
    assert "Pearson R = " in ax.get_title()
    offsets = ax.collections[0].get_offsets()
    np.testing.assert_allclose(np.asarray(offsets)[:, 0], result.predicted)
    assert "LOOResult(n_removed=5" in repr(result)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_remove": 0}, "n_remove"),
        ({"n_remove": 1000}, "n_remove"),
        ({"strategy": "largest"}, "strategy"),
        ({"retrain": 3}, "retrain"),
        ({"cancel": True}, "cancel"),
        ({"strategy": "random", "seed": 1.5}, "^seed: "),
        ({"strategy": "random", "seed": 2**70}, "^seed: "),
        ({"strategy": "random", "seed": "abc"}, "^seed: "),
        ({"test_index": "abc"}, "^test_index: "),
        ({"test_index": 1.5}, "^test_index: "),
    ],
)
def test_bad_arguments_name_themselves(tiny, kwargs, match):
    _, _, _, x_test, y_test = tiny
    with pytest.raises((ValueError, TypeError), match=match):
        iw.validate_loo(_influence(tiny), x_test, y_test, progress=False, **kwargs)


def test_one_test_point_at_a_time(tiny):
    _, X, y, _, _ = tiny
    with pytest.raises(ValueError, match="one test point"):
        iw.validate_loo(_influence(tiny), X[:2], y[:2], progress=False)
    with pytest.raises(TypeError, match="influence"):
        iw.validate_loo("model", X[:1], y[:1])


# ----- ChordNewtonRetrain: exact LOO minima in a few steps --------------------------------------
def test_chord_newton_retrain_matches_lbfgs_retraining(tiny, untouched):
    model, X, y, x_test, y_test = tiny
    inf = _influence(tiny, solver="direct")
    chord = iw.ChordNewtonRetrain(inf, tol=1e-11)
    with untouched(model, X, y, x_test, y_test, inf.train.X, inf.train.y):
        fast = iw.validate_loo(inf, x_test, y_test, n_remove=10, retrain=chord, progress=False)
    slow = iw.validate_loo(inf, x_test, y_test, n_remove=10, tol=1e-11, progress=False)
    np.testing.assert_array_equal(fast.removed, slow.removed)
    np.testing.assert_allclose(fast.actual, slow.actual, rtol=1e-6, atol=1e-10)
    assert len(chord.reports) == 11  # the baseline and 10 removals
    assert all(r.grad_norm <= 1e-11 and not r.fell_back for r in chord.reports)
    assert max(r.chord_steps for r in chord.reports) <= 20  # 1 of 80 points: a large change


def test_chord_newton_retrain_falls_back_to_lbfgs(tiny, untouched):
    model, X, y, x_test, y_test = tiny
    inf = _influence(tiny, solver="direct", damping=50.0)  # a poor preconditioner
    chord = iw.ChordNewtonRetrain(inf, tol=1e-8, max_steps=2)
    keep = torch.arange(1, len(X))
    m = inf.objective.model_copy()
    X_keep, y_keep = X[keep], y[keep]
    with untouched(model, X_keep, y_keep, inf.train.X, inf.train.y):
        chord(m, (X_keep, y_keep))
    (report,) = chord.reports
    assert report.fell_back and report.grad_norm <= 1e-8
    reference = inf.objective.model_copy()
    iw.train(reference, (X_keep, y_keep), l2=0.05, tol=1e-11, progress=False)
    for a, b in zip(m.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_chord_newton_retrain_bad_arguments(tiny):
    with pytest.raises(ValueError, match="solver='direct'"):
        iw.ChordNewtonRetrain(_influence(tiny, solver="cg"))
    with pytest.raises(TypeError, match="influence"):
        iw.ChordNewtonRetrain("not an influence")
    with pytest.raises(ValueError, match="tol"):
        iw.ChordNewtonRetrain(_influence(tiny, solver="direct"), tol=0)


def test_cancel_abandons_the_retrain_in_progress_and_keeps_those_done(tiny, untouched):
    """Cancel stops a long retrain at the model copy's next forward call (issue 15: Cancel took
    8.7 s); the two removals finished before it are returned."""
    model, X, y, x_test, y_test = tiny
    inf = _influence(tiny)
    cancel = threading.Event()
    calls = []

    def retrain(m, data):
        calls.append(len(data[0]))
        if len(calls) <= 3:  # the baseline and two removals
            iw.train(m, data, l2=0.05, progress=False)
            return
        threading.Timer(0.2, cancel.set).start()
        for _ in range(1000):  # a 10 s retrain
            m(data[0][:1])
            time.sleep(0.01)

    begin = time.perf_counter()
    with untouched(model, X, y, x_test, y_test, inf.train.X, inf.train.y):
        result = iw.validate_loo(
            inf, x_test, y_test, n_remove=10, retrain=retrain, cancel=cancel, progress=False
        )
    assert time.perf_counter() - begin < 2.0
    assert result.cancelled and result.n_removed == 2 and len(calls) == 4
    assert np.isfinite(result.actual).all() and np.isfinite(result.drift)


def test_cancel_during_the_baseline_returns_no_removals(tiny):
    model, X, y, x_test, y_test = tiny
    cancel = threading.Event()
    cancel.set()
    result = iw.validate_loo(
        _influence(tiny), x_test, y_test, n_remove=5, cancel=cancel, progress=False
    )
    assert result.cancelled and result.n_removed == 0 and np.isnan(result.drift)
