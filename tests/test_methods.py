"""Grad-Dot, TracIn, TRAK and influence ensembles against float64 brute force on tiny problems.

The references below write each model as a pure function of a flat parameter vector (the
conftest problems' ``forward``), take per-sample gradients with ``jacrev`` and solve with
``torch.linalg.solve``: no package code.
"""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import jacrev, vmap

import influence_widgets as iw
from tests.conftest import Problem, rel_err

pytestmark = pytest.mark.filterwarnings("ignore::influence_widgets.InfluenceWarning")


# ----- brute-force references ---------------------------------------------------------------------
def loss_gradients(pb: Problem, theta: torch.Tensor, X, y) -> torch.Tensor:
    """grad_theta CE(z_i, theta), (n, p), no L2 term."""

    def loss(th, x, t):
        return F.cross_entropy(pb.forward(th, x[None]), t[None])

    return vmap(jacrev(loss), in_dims=(None, 0, 0))(theta, X, y)


def true_probability(pb: Problem, X, y) -> torch.Tensor:
    return torch.softmax(pb.forward(pb.theta, X), dim=1).gather(1, y[:, None])[:, 0]


def margin_gradients(pb: Problem, X, y) -> torch.Tensor:
    """grad_theta [log p_y - log(1 - p_y)], (n, p), from the softmax probability itself."""

    def margin(th, x, t):
        probs = torch.softmax(pb.forward(th, x[None])[0], dim=0)
        p_y = (probs * (torch.arange(len(probs)) == t)).sum()
        return torch.log(p_y) - torch.log1p(-p_y)

    return vmap(jacrev(margin), in_dims=(None, 0, 0))(pb.theta, X, y)


def trak_reference(pb: Problem, damping: float, weighted: bool) -> torch.Tensor:
    """q_t phi_t^T (Phi^T W Phi + damping I)^-1 phi_i q_i, W = diag(p(1-p)) or I."""
    Phi, phi_t = margin_gradients(pb, pb.X, pb.y), margin_gradients(pb, pb.Xt, pb.yt)
    p_i, p_t = true_probability(pb, pb.X, pb.y), true_probability(pb, pb.Xt, pb.yt)
    W = p_i * (1 - p_i) if weighted else torch.ones_like(p_i)
    K = Phi.T @ (W[:, None] * Phi) + damping * torch.eye(Phi.shape[1], dtype=Phi.dtype)
    return (1 - p_t)[:, None] * (phi_t @ torch.linalg.solve(K, Phi.T)) * (1 - p_i)[None, :]


def two_class_mlp() -> Problem:
    """A float64 4-5-2 tanh MLP trained on 30 points of two classes."""
    gen = torch.Generator().manual_seed(5)
    X = torch.randn(36, 4, generator=gen, dtype=torch.float64)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long()
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    iw.train(model, (X[:30], y[:30]), l2=0.01, progress=False)

    def forward(theta, x):
        W1, b1 = theta[:20].reshape(5, 4), theta[20:25]
        W2, b2 = theta[25:35].reshape(2, 5), theta[35:37]
        return torch.tanh(x @ W1.T + b1) @ W2.T + b2

    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return Problem("mlp2", model, X[:30], y[:30], X[30:], y[30:], 0.01, forward, theta)


# ----- Grad-Dot and TracIn -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lr_problem", "mlp_problem"])
def test_grad_dot_is_the_dot_product_of_loss_gradients(name, request):
    pb = request.getfixturevalue(name)
    method = iw.GradDot(pb.model, (pb.X, pb.y), progress=False)
    G = loss_gradients(pb, pb.theta, pb.X, pb.y)
    Gt = loss_gradients(pb, pb.theta, pb.Xt, pb.yt)
    assert rel_err(method.scores(pb.Xt, pb.yt), Gt @ G.T) < 1e-10
    assert rel_err(method.self_scores(), G.pow(2).sum(1)) < 1e-10


def test_grad_dot_streams_the_same_scores_as_it_caches(mlp_problem):
    pb = mlp_problem
    cached = iw.GradDot(pb.model, (pb.X, pb.y), progress=False)
    streamed = iw.GradDot(pb.model, (pb.X, pb.y), progress=False, gradient_cache_mb=0, batch_size=7)
    assert cached.diagnostics.details["gradients"] == "cached"
    assert streamed.diagnostics.details["gradients"] == "streamed"
    assert rel_err(streamed.scores(pb.Xt, pb.yt), cached.scores(pb.Xt, pb.yt)) < 1e-12
    assert rel_err(streamed.self_scores(), cached.self_scores()) < 1e-12


def test_tracin_with_one_checkpoint_is_its_learning_rate_times_grad_dot(mlp_problem):
    pb = mlp_problem
    rec = iw.CheckpointRecorder(pb.model)
    rec.save(lr=0.3)
    tracin = iw.TracIn(pb.model, (pb.X, pb.y), rec, progress=False)
    grad_dot = iw.GradDot(pb.model, (pb.X, pb.y), progress=False)
    assert rel_err(tracin.scores(pb.Xt, pb.yt), 0.3 * grad_dot.scores(pb.Xt, pb.yt)) < 1e-12
    assert rel_err(tracin.self_scores(), 0.3 * grad_dot.self_scores()) < 1e-12


def test_tracin_sums_learning_rate_times_gradient_dots_over_checkpoints(mlp_problem, untouched):
    """Checkpoints saved from the user's own loop (Adam); each a copy, never the live state."""
    pb = mlp_problem
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    rec = iw.CheckpointRecorder(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    thetas, lrs = [], [0.05, 0.02, 0.01]
    for lr in lrs:
        opt.param_groups[0]["lr"] = lr
        for _ in range(5):
            opt.zero_grad()
            F.cross_entropy(model(pb.X), pb.y).backward()
            opt.step()
        rec.save(lr=lr)
        thetas.append(torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()]))
    with untouched(model, pb.X, pb.y, pb.Xt, pb.yt):
        tracin = iw.TracIn(model, (pb.X, pb.y), rec, progress=False)
        got = tracin.scores(pb.Xt, pb.yt)
    expected = sum(
        lr * loss_gradients(pb, th, pb.Xt, pb.yt) @ loss_gradients(pb, th, pb.X, pb.y).T
        for lr, th in zip(lrs, thetas, strict=True)
    )
    assert rel_err(got, expected) < 1e-10
    assert tracin.diagnostics.n_models == 3
    assert tracin.diagnostics.details["learning_rates"] == lrs


def test_iw_train_records_each_round_with_its_step_length():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    y = (X[:, 0] > 0).long()
    model = nn.Linear(3, 2, dtype=torch.float64)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    rec = iw.CheckpointRecorder(model)
    iw.train(model, (X, y), l2=0.1, progress=False, recorder=rec)
    assert len(rec) >= 1
    assert all(torch.equal(rec[0].state[k], start[k]) for k in start)  # the start of round 1
    nxt = rec[1].state if len(rec) > 1 else model.state_dict()
    # eta_0 = ||theta_1 - theta_0|| / ||grad R(theta_0)||
    start_model = nn.Linear(3, 2, dtype=torch.float64)
    start_model.load_state_dict(start)
    risk = F.cross_entropy(start_model(X), y) + 0.05 * sum(
        p.pow(2).sum() for p in start_model.parameters()
    )
    grads = torch.autograd.grad(risk, list(start_model.parameters()))
    grad_norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    step = torch.sqrt(sum((nxt[k] - start[k]).pow(2).sum() for k in start))
    assert rec[0].lr == pytest.approx(float(step / grad_norm), rel=1e-8)
    iw.TracIn(model, (X, y), rec, progress=False).scores(X[:2], y[:2])


def test_a_saved_checkpoint_is_a_copy():
    model = nn.Linear(3, 2)
    rec = iw.CheckpointRecorder(model)
    saved = rec.save(lr=0.1)
    before = saved.state["weight"].clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert torch.equal(saved.state["weight"], before)


# ----- TRAK -------------------------------------------------------------------------------------
def test_trak_with_the_identity_is_gauss_newton_influence_of_a_two_class_model():
    """TRAK(projection="identity", curvature="gauss-newton", damping=lambda).scores
    == Influence(hessian="gauss-newton", l2=0, damping=lambda/n).predicted_removal_effect: for two
    classes the softmax Gauss-Newton matrix G is (1/n) Phi^T R Phi of the margin gradients, the
    training gradients are -(1-p_i) phi_i and H^-1 = n (Phi^T R Phi + lambda I)^-1."""
    pb = two_class_mlp()
    lam = 0.3
    trak = iw.TRAK(
        pb.model, (pb.X, pb.y), projection="identity", curvature="gauss-newton", damping=lam,
        progress=False,
    )  # fmt: skip
    inf = iw.Influence(
        pb.model, (pb.X, pb.y), hessian="gauss-newton", l2=0.0, damping=lam / len(pb.X),
        solver="direct", progress=False,
    )  # fmt: skip
    expected = inf.predicted_removal_effect(pb.Xt, pb.yt)
    assert rel_err(trak.scores(pb.Xt, pb.yt), expected) < 1e-9
    assert rel_err(trak.scores(pb.Xt, pb.yt), trak_reference(pb, lam, weighted=True)) < 1e-9
    assert (trak.scores(pb.Xt, pb.yt) * expected).sum() > 0  # the same sign, not just size


def test_trak_gauss_newton_is_the_removal_effect_of_the_margin_gauss_newton(mlp_problem):
    """Three classes: TRAK(identity, gauss-newton) = (1/n) g_t^T (G_f + d I)^-1 g_i with the CE
    loss gradients g and G_f = (1/n) sum_i p_i (1 - p_i) phi_i phi_i^T, lambda = n d."""
    pb = mlp_problem
    lam, n = 0.2, len(pb.X)
    trak = iw.TRAK(
        pb.model, (pb.X, pb.y), projection="identity", curvature="gauss-newton", damping=lam,
        progress=False,
    )  # fmt: skip
    Phi, p_i = margin_gradients(pb, pb.X, pb.y), true_probability(pb, pb.X, pb.y)
    G_f = Phi.T @ ((p_i * (1 - p_i))[:, None] * Phi) / n
    H = G_f + lam / n * torch.eye(len(pb.theta), dtype=torch.float64)
    g, g_t = loss_gradients(pb, pb.theta, pb.X, pb.y), loss_gradients(pb, pb.theta, pb.Xt, pb.yt)
    expected = g_t @ torch.linalg.solve(H, g.T) / n
    assert rel_err(trak.scores(pb.Xt, pb.yt), expected) < 1e-9


def test_trak_default_kernel_is_phi_transpose_phi(mlp_problem):
    pb = mlp_problem
    trak = iw.TRAK(pb.model, (pb.X, pb.y), projection="identity", damping=0.5, progress=False)
    assert rel_err(trak.scores(pb.Xt, pb.yt), trak_reference(pb, 0.5, weighted=False)) < 1e-9
    # self-scores: each training point's score for itself
    own = iw.TRAK(pb.model, (pb.X, pb.y), projection="identity", damping=0.5, progress=False)
    diagonal = own.scores(pb.X, pb.y).diagonal()
    assert rel_err(own.self_scores(), diagonal) < 1e-9


def test_trak_ensemble_averages_the_models_scores(mlp_problem):
    pb = mlp_problem
    other = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    iw.train(other, (pb.X, pb.y), l2=0.05, progress=False)
    options = {"projection": "identity", "damping": 0.5, "progress": False}
    both = iw.TRAK([pb.model, other], (pb.X, pb.y), **options).scores(pb.Xt, pb.yt)
    each = [iw.TRAK(m, (pb.X, pb.y), **options).scores(pb.Xt, pb.yt) for m in (pb.model, other)]
    assert rel_err(both, (each[0] + each[1]) / 2) < 1e-10


def test_trak_paper_ensemble_averages_kernel_terms_and_weights_apart(mlp_problem):
    """ensemble="paper": qbar_t [(1/M) sum_m phi_m,t^T K_m^-1 phi_m,i] qbar_i with qbar the mean
    of 1 - p over the models (Park et al.'s Algorithm 1), against brute force for two models;
    one model: the default's scores; self-scores: the diagonal of the scores."""
    pb = mlp_problem
    other = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    iw.train(other, (pb.X, pb.y), l2=0.05, progress=False)
    theta = torch.cat([t.detach().reshape(-1) for t in other.parameters()])
    problems = [pb, dataclasses.replace(pb, model=other, theta=theta)]
    options = {"projection": "identity", "damping": 0.5, "progress": False}
    terms, q_train, q_test = 0, 0, 0
    for p in problems:
        Phi, phi_t = margin_gradients(p, p.X, p.y), margin_gradients(p, p.Xt, p.yt)
        K = Phi.T @ Phi + 0.5 * torch.eye(Phi.shape[1], dtype=Phi.dtype)
        terms = terms + phi_t @ torch.linalg.solve(K, Phi.T) / 2
        q_train = q_train + (1 - true_probability(p, p.X, p.y)) / 2
        q_test = q_test + (1 - true_probability(p, p.Xt, p.yt)) / 2
    expected = q_test[:, None] * terms * q_train[None, :]
    paper = iw.TRAK([pb.model, other], (pb.X, pb.y), ensemble="paper", **options)
    assert rel_err(paper.scores(pb.Xt, pb.yt), expected) < 1e-9
    whole = iw.TRAK([pb.model, other], (pb.X, pb.y), **options).scores(pb.Xt, pb.yt)
    assert rel_err(whole, expected) > 1e-3  # the two ensembles differ
    assert rel_err(paper.self_scores(), paper.scores(pb.X, pb.y).diagonal()) < 1e-9
    assert paper.diagnostics.details["ensemble"] == "paper"
    one = iw.TRAK(pb.model, (pb.X, pb.y), ensemble="paper", **options).scores(pb.Xt, pb.yt)
    assert rel_err(one, iw.TRAK(pb.model, (pb.X, pb.y), **options).scores(pb.Xt, pb.yt)) < 1e-12
    with pytest.raises(ValueError, match="ensemble: expected one of"):
        iw.TRAK(pb.model, (pb.X, pb.y), ensemble="mean", **options)


def test_a_random_projection_keeps_inner_products_and_is_seeded(mlp_problem):
    """k = p: a Gaussian P with E[P P^T] = I gives scores near the exact ones; the same seed the
    same scores, another seed others."""
    pb = mlp_problem
    kw = {"damping": 0.5, "progress": False}
    exact = iw.TRAK(pb.model, (pb.X, pb.y), projection="identity", **kw).scores(pb.Xt, pb.yt)
    one = iw.TRAK(pb.model, (pb.X, pb.y), seed=1, **kw).scores(pb.Xt, pb.yt)
    again = iw.TRAK(pb.model, (pb.X, pb.y), seed=1, **kw).scores(pb.Xt, pb.yt)
    other = iw.TRAK(pb.model, (pb.X, pb.y), seed=2, **kw).scores(pb.Xt, pb.yt)
    assert torch.equal(one, again) and not torch.equal(one, other)
    for projected in (one, other):
        assert torch.corrcoef(torch.stack([projected.flatten(), exact.flatten()]))[0, 1] > 0.8


def test_trak_streams_the_projection_in_chunks_with_the_same_numbers():
    """p = 2,450 > one block of 1,024 rows: a budget too small for P generates it in chunks at
    each use and the gradients in batches of 4, with the same scores as P kept whole (to the
    float32 round-off of the projection's sums, which run in another order)."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(24, 40, generator=gen, dtype=torch.float64)
    y = torch.arange(24) % 10
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 50), nn.Tanh(), nn.Linear(50, 10)).double()
    kw = {"projection_dim": 16, "damping": 0.1, "progress": False, "projection": "rademacher"}
    whole = iw.TRAK(model, (X, y), **kw)
    chunked = iw.TRAK(model, (X, y), memory_mb=0.2, **kw)
    assert whole.projections[0].kept is not None and chunked.projections[0].kept is None
    assert chunked.projections[0].n_chunks == 3 and chunked.batch_size < 24
    assert rel_err(chunked.scores(X[:3], y[:3]), whole.scores(X[:3], y[:3])) < 1e-5
    # Two models in 0.5 MB: each P_m (0.16 MB in float32) is kept while its model is fitted, but
    # both do not fit half the budget, so scoring generates them in chunks: the same numbers again.
    torch.manual_seed(1)
    second = nn.Sequential(nn.Linear(40, 50), nn.Tanh(), nn.Linear(50, 10)).double()
    pair = iw.TRAK([model, second], (X, y), memory_mb=0.5, **kw)
    assert pair.projections[1].kept is None
    kept = iw.TRAK([model, second], (X, y), **kw)
    assert rel_err(pair.scores(X[:3], y[:3]), kept.scores(X[:3], y[:3])) < 1e-5


def test_a_random_projection_runs_in_float32_and_returns_the_gradients_dtype():
    """As TRAK and dattri project: P and g P in float32 for float64 gradients, the features
    back in float64, equal to the float64 product to float32 round-off."""
    from influence_widgets.methods.projection import Projection, projection_dtype

    G = torch.randn(6, 300, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    proj = Projection("gaussian", 300, 8, seed=0, model=0, dtype=projection_dtype(G.dtype),
                      device=G.device, budget_mb=64)  # fmt: skip
    assert proj.kept.dtype == torch.float32
    phi = proj(G)
    assert phi.dtype == torch.float64
    assert rel_err(phi, G @ proj.kept.double()) < 1e-6


# ----- influence ensembles ---------------------------------------------------------------------
def test_influence_ensemble_averages_predicted_removal_effects(mlp_problem):
    pb = mlp_problem
    other = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    iw.train(other, (pb.X, pb.y), l2=0.05, progress=False)
    ens = iw.InfluenceEnsemble(
        [pb.model, other], (pb.X, pb.y), l2=0.05, damping=0.01, progress=False
    )
    each = [
        iw.Influence(m, (pb.X, pb.y), l2=0.05, damping=0.01, progress=False)
        for m in (pb.model, other)
    ]
    expected = sum(i.predicted_removal_effect(pb.Xt, pb.yt) for i in each) / 2
    assert rel_err(ens.scores(pb.Xt, pb.yt), expected) < 1e-10
    assert rel_err(ens.self_scores(), sum(i.self_scores() for i in each) / 2) < 1e-10
    assert rel_err(each[0].self_scores(), -each[0].self_influence() / len(pb.X)) < 1e-12
    labels = ens.predicted_labels(pb.Xt)  # y_test=None: the first model's classes, for both
    assert torch.equal(labels, each[0].predicted_labels(pb.Xt))
    assert torch.equal(ens.scores(pb.Xt, None), ens.scores(pb.Xt, labels))


# ----- the contract, for every method ------------------------------------------------------------
def duplicate_problem():
    """30 points of two blobs plus a copy of test point 0 as training point 30; the test point
    sits between the blobs, so its copy is the training point that supports it most."""
    gen = torch.Generator().manual_seed(2)
    X = torch.cat([torch.randn(15, 2, generator=gen) - 2, torch.randn(15, 2, generator=gen) + 2])
    y = torch.cat([torch.zeros(15), torch.ones(15)]).long()
    xt = torch.tensor([[0.3, -0.6]])
    yt = torch.tensor([1])
    X = torch.cat([X, xt]).double()
    y = torch.cat([y, yt])
    return X, y, xt.double(), yt


def every_method(X, y):
    """{name: method} for one problem: each method of the contract, ``Influence`` included."""
    models = []
    recorder = None
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 2)).double()
        rec = iw.CheckpointRecorder(model)
        iw.train(model, (X, y), l2=0.01, progress=False, recorder=rec)
        models.append(model)
        recorder = recorder or rec
    train = (X, y)
    return {
        "influence": iw.Influence(models[0], train, l2=0.01, progress=False),
        "grad-dot": iw.GradDot(models[0], train, progress=False),
        "tracin": iw.TracIn(models[0], train, recorder, progress=False),
        "trak": iw.TRAK(models, train, projection_dim=20, damping=0.01, progress=False),
        "trak-gn": iw.TRAK(models[0], train, projection="identity", curvature="gauss-newton",
                           damping=0.01, progress=False),
        "ensemble": iw.InfluenceEnsemble(models, train, l2=0.01, progress=False),
    }  # fmt: skip


@pytest.fixture(scope="module")
def methods():
    X, y, xt, yt = duplicate_problem()
    return X, y, xt, yt, every_method(X, y)


METHODS = ["influence", "grad-dot", "tracin", "trak", "trak-gn", "ensemble"]


@pytest.mark.parametrize("name", METHODS)
def test_a_duplicate_of_the_test_point_is_helpful(methods, name):
    X, y, xt, yt, found = methods
    method = found[name]
    scores = method.scores(xt, yt)
    assert scores.shape == (1, len(X))
    assert scores[0, -1] > 0, f"{name}: the duplicate's score {scores[0, -1]:.3g} is not > 0"
    top = method.top(xt, yt, k=3)
    assert isinstance(top, iw.TopInfluence)
    assert len(X) - 1 in top.helpful[0].tolist()
    assert torch.equal(top.helpful_scores, torch.sort(scores, descending=True).values[:, :3])


@pytest.mark.parametrize("name", METHODS)
def test_every_method_offers_the_contract(methods, name):
    X, y, xt, _, found = methods
    method = iw.check_method(found[name])
    assert method.n == len(X) and method.device == torch.device("cpu")
    assert method.self_scores().shape == (len(X),)
    assert (method.self_scores() >= -1e-12).all()
    assert isinstance(method.diagnostics.method, str) and method.diagnostics.method
    labels = method.predicted_labels(xt)
    assert torch.equal(method.scores(xt, None), method.scores(xt, labels))


def test_checking_the_contract_does_not_fit(monkeypatch, lr_problem):
    def refuse(self):
        raise AssertionError("check_method fitted the Influence")

    monkeypatch.setattr(iw.Influence, "fit", refuse)
    iw.check_method(iw.Influence(lr_problem.model, (lr_problem.X, lr_problem.y), l2=0.05))


@pytest.mark.parametrize("name", METHODS)
def test_no_method_changes_what_it_is_given(name, untouched):
    X, y, xt, yt = duplicate_problem()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    rec = iw.CheckpointRecorder(model)
    iw.train(model.train(), (X, y), l2=0.01, progress=False, recorder=rec)
    state = {k: v.clone() for k, v in rec[0].state.items()}
    build = {
        "influence": lambda: iw.Influence(model, (X, y), l2=0.01, progress=False),
        "grad-dot": lambda: iw.GradDot(model, (X, y), progress=False),
        "tracin": lambda: iw.TracIn(model, (X, y), rec, progress=False),
        "trak": lambda: iw.TRAK([model, model], (X, y), projection_dim=8, damping=0.1,
                                progress=False),
        "trak-gn": lambda: iw.TRAK(rec, (X, y), projection="identity", damping=0.1,
                                   progress=False),
        "ensemble": lambda: iw.InfluenceEnsemble([model, model], (X, y), l2=0.01,
                                                 progress=False),
    }  # fmt: skip
    with untouched(model, X, y, xt, yt):
        method = build[name]()
        method.scores(xt, yt)
        method.self_scores()
        method.top(xt, None, k=2)
    assert all(torch.equal(rec[0].state[k], v) for k, v in state.items())


@pytest.mark.parametrize("name", METHODS)
def test_a_cancelled_fit_stops_and_a_later_fit_gives_the_same_scores(methods, name):
    X, y, xt, yt, found = methods
    expected = found[name].scores(xt, yt)
    fresh = every_method(X, y)[name]
    stop = threading.Event()
    stop.set()
    with iw.cancellable(stop), pytest.raises(iw.Cancelled):
        fresh.fit()
    with iw.cancellable(threading.Event()):  # not set: nothing changes
        assert torch.allclose(fresh.scores(xt, yt), expected, rtol=1e-10, atol=0)


def test_cancel_stops_a_scoring_pass_that_streams(mlp_problem):
    pb = mlp_problem
    method = iw.GradDot(pb.model, (pb.X, pb.y), progress=False, gradient_cache_mb=0, batch_size=4)
    method.fit()
    stop = threading.Event()
    stop.set()
    with iw.cancellable(stop), pytest.raises(iw.Cancelled):
        method.scores(pb.Xt, pb.yt)
    assert method.scores(pb.Xt, pb.yt).shape == (len(pb.Xt), len(pb.X))


def test_the_device_is_where_results_lie(mlp_problem):
    pb = mlp_problem
    trak = iw.TRAK(pb.model, (pb.X, pb.y), projection_dim=8, damping=0.1, device="cpu",
                   progress=False)  # fmt: skip
    assert trak.device == torch.device("cpu")
    assert trak.scores(pb.Xt, pb.yt).device == trak.device
    assert trak.top(pb.Xt, pb.yt, k=2).helpful.device == trak.device
