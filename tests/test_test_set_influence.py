"""Influence on a set of test points {z_t} (issue 16, section 2): the summed test loss
sum_t L(z_t, theta_hat), scored with ONE solve s_set = H^-1 sum_t grad L(z_t, theta_hat)."""

from __future__ import annotations

import pytest
import torch

import influence_widgets as iw
from tests.conftest import make_lr, make_regression_influence, reference, rel_err

SOLVERS = {
    "direct": (lambda: "direct", 1e-10),
    "cg": (lambda: iw.ConjugateGradient(rtol=1e-12), 1e-8),
}


def build(pb, solver="direct", **kw) -> iw.Influence:
    return iw.Influence(
        pb.model, (pb.X, pb.y), l2=pb.l2, solver=solver, params=pb.params, progress=False, **kw
    )


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    """Elementwise rtol, with an absolute floor of rtol * max|expected| for entries near 0."""
    atol = rtol * float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


@pytest.fixture(params=["lr_problem", "mlp_problem", "mlp_top_problem"])
def problem(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("solver_name", list(SOLVERS))
def test_set_influence_is_the_sum_of_the_per_point_influences(problem, solver_name):
    make, rtol = SOLVERS[solver_name]
    pb = problem
    inf = build(pb, make())
    per_point = inf.influence_on_loss(pb.Xt, pb.yt)
    on_set = inf.influence_on_set_loss(pb.Xt, pb.yt)
    assert on_set.shape == (len(pb.X),)
    assert_close(on_set, per_point.sum(0), rtol)
    assert_close(inf.s_test_of_set(pb.Xt, pb.yt), inf.s_test(pb.Xt, pb.yt).sum(0), rtol)
    removal = inf.predicted_removal_effect_of_set(pb.Xt, pb.yt)
    assert_close(removal, -per_point.sum(0) / len(pb.X), rtol)
    ref = reference(pb)  # float64 brute force: explicit Hessian, torch.linalg.solve
    expected = -ref.Gt.sum(0) @ ref.inv(ref.G.T)
    assert rel_err(on_set, expected) < 1e-8
    assert rel_err(removal, -expected / len(pb.X)) < 1e-8


def test_top_of_set_ranks_by_the_removal_effect_on_the_summed_loss(lr_problem):
    pb = lr_problem
    ref = reference(pb)
    scores = -(-ref.Gt.sum(0) @ ref.inv(ref.G.T)) / len(pb.X)
    top = build(pb).top_of_set(pb.Xt, pb.yt, k=5)
    assert top.helpful.shape == top.harmful.shape == top.helpful_scores.shape == (1, 5)
    assert torch.equal(top.helpful[0], torch.argsort(scores, descending=True)[:5])
    assert torch.equal(top.harmful[0], torch.argsort(scores)[:5])
    assert rel_err(top.helpful_scores[0], scores.sort(descending=True).values[:5]) < 1e-8
    assert build(pb).top_of_set(pb.Xt, pb.yt, k=10**6).helpful.shape == (1, len(pb.X))  # k <= n


def test_one_test_point_as_a_set_is_top(lr_problem):
    pb = lr_problem
    inf = build(pb)
    one, per_point = inf.top_of_set(pb.Xt[2:3], pb.yt[2:3], k=4), inf.top(pb.Xt[2:3], pb.yt[2:3], 4)
    assert torch.equal(one.helpful, per_point.helpful)
    assert torch.equal(one.harmful, per_point.harmful)


def test_without_labels_the_set_is_explained_for_the_predicted_classes(problem):
    pb = problem
    inf = build(pb)
    X = pb.X[:20]  # 20 points, some of them misclassified by the MLPs
    y_hat = inf.predicted_labels(X)
    assert_close(inf.s_test_of_set(X), inf.s_test_of_set(X, y_hat), 1e-12)
    assert_close(inf.influence_on_set_loss(X), inf.influence_on_set_loss(X, y_hat), 1e-12)
    assert_close(inf.influence_on_set_loss(X), inf.influence_on_loss(X).sum(0), 1e-10)
    assert torch.equal(inf.top_of_set(X, k=3).helpful, inf.top_of_set(X, y_hat, k=3).helpful)


@pytest.mark.parametrize("solver_name", list(SOLVERS))
def test_twenty_test_points_cost_one_solve_of_one_column(lr_problem, solver_name):
    pb = lr_problem
    inf = build(pb, SOLVERS[solver_name][0](), batch_size=8)  # 20 test points: 3 test batches
    inf.fit()
    X, y = pb.X[:20], pb.y[:20]
    expected = inf.influence_on_loss(X, y).sum(0)
    calls = []
    solve = inf.solver.solve

    def counting_solve(B, progress=False):
        calls.append(tuple(B.shape))
        return solve(B, progress)

    inf.solver.solve = counting_solve
    on_set = inf.influence_on_set_loss(X, y)
    assert calls == [(inf.p, 1)]
    assert_close(on_set, expected, SOLVERS[solver_name][1])
    inf.top_of_set(X, y, k=3)
    inf.predicted_removal_effect_of_set(X)
    assert calls == [(inf.p, 1)] * 3


@pytest.mark.parametrize("cache_mb", [0, 512], ids=["streamed_gradients", "cached_gradients"])
def test_training_gradients_streamed_or_cached_agree(mlp_problem, cache_mb):
    pb = mlp_problem
    inf = build(pb, gradient_cache_mb=cache_mb)
    assert_close(
        inf.influence_on_set_loss(pb.Xt, pb.yt), inf.influence_on_loss(pb.Xt, pb.yt).sum(0), 1e-10
    )


def test_the_users_data_and_model_are_untouched(lr_problem, untouched):
    pb = lr_problem
    inf = build(pb)
    X, y = pb.Xt.clone().requires_grad_(True), pb.yt.clone()
    Xn, yn = X.detach().numpy().copy(), y.numpy().copy()
    with untouched(pb.model, pb.X, pb.y, X, y, Xn, yn):
        inf.s_test_of_set(X, y)
        inf.influence_on_set_loss(X, y)
        inf.predicted_removal_effect_of_set(Xn, yn)
        inf.top_of_set(X, None, k=3)
        inf.top_of_set(Xn, yn, k=3)


# ----- bad input: each case is a call, the exception type, and a regex naming the argument ----
# Self-contained (to be merged into the bad-input module with the other areas' cases).
def _lr_influence():
    pb = make_lr()
    return iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, progress=False), pb


def _empty_set():
    inf, pb = _lr_influence()
    inf.influence_on_set_loss(pb.Xt[:0], pb.yt[:0])


def _empty_set_without_labels():
    inf, pb = _lr_influence()
    inf.s_test_of_set(pb.Xt[:0])


def _mismatched_lengths():
    inf, pb = _lr_influence()
    inf.predicted_removal_effect_of_set(pb.Xt[:3], pb.yt[:2])


def _label_out_of_range():
    inf, pb = _lr_influence()
    inf.top_of_set(pb.Xt[:2], torch.tensor([0, 3]))


def _negative_label():
    inf, pb = _lr_influence()
    inf.influence_on_set_loss(pb.Xt[:2], torch.tensor([0, -1]))


def _scalar_point():
    inf, pb = _lr_influence()
    inf.s_test_of_set(pb.Xt[0, 0], pb.yt[0])


def _wrong_feature_count():
    inf, pb = _lr_influence()
    inf.influence_on_set_loss(pb.Xt[:2, :3], pb.yt[:2])


def _non_finite_input():
    inf, pb = _lr_influence()
    x = pb.Xt[:2].clone()
    x[1, 0] = float("nan")
    inf.influence_on_set_loss(x, pb.yt[:2])


def _k_zero():
    inf, pb = _lr_influence()
    inf.top_of_set(pb.Xt, pb.yt, k=0)


def _no_labels_with_a_regression_loss():
    inf, X = make_regression_influence()
    inf.influence_on_set_loss(X[:4])


BAD_INPUT_CASES = [
    ("empty_set", _empty_set, ValueError, r"^x_test: is empty"),
    ("empty_set_without_labels", _empty_set_without_labels, ValueError, r"^x_test: is empty"),
    ("mismatched_lengths", _mismatched_lengths, ValueError, r"^x_test has 3 rows but y_test has 2"),
    (
        "label_out_of_range",
        _label_out_of_range,
        ValueError,
        r"^y_test: labels must lie in \[0, 2\]",
    ),
    ("negative_label", _negative_label, ValueError, r"^y_test: labels must lie in \[0, 2\]"),
    ("scalar_point", _scalar_point, ValueError, r"^x_test, y_test: expected a batch"),
    ("wrong_feature_count", _wrong_feature_count, ValueError, r"^x_test: the model cannot take"),
    ("non_finite_input", _non_finite_input, ValueError, r"^x_test\b"),
    ("k_zero", _k_zero, ValueError, r"^k\b"),
    ("no_labels_regression", _no_labels_with_a_regression_loss, ValueError, r"^y_test: None"),
]


@pytest.mark.parametrize(
    ("call", "exc", "pattern"),
    [case[1:] for case in BAD_INPUT_CASES],
    ids=[case[0] for case in BAD_INPUT_CASES],
)
def test_bad_input_of_the_set_methods_names_the_argument(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()
