"""EK-FAC (issue 17, section 1): against a brute-force float64 EK-FAC built by hand, exact where
K-FAC is exact, close to the direct solver on a small classifier, and on a small CNN."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, hessian, jacrev

import influence_widgets as iw

pytestmark = pytest.mark.filterwarnings("ignore::influence_widgets.InfluenceWarning")

L2, DAMPING = 1e-2, 1e-3


def _mlp_problem(n=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    y = (X[:, 0] + X[:, 1] > 0).long() + (X[:, 2] > 0.5).long()
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)
    ).double()
    iw.train(model, (X, y), l2=L2, progress=False)
    return model, X, y


def _brute_force_ekfac(model, X, y, l2, damping):
    """The dense (p, p) EK-FAC matrix of a Linear-Tanh-Linear network, in theta's order, built
    from the definitions: a~_i, g_ic = J_{s,i}^T S_i[:, c] by hand, D_ic from the full Jacobian."""
    lin1, lin2 = model[0], model[2]
    W1, b1, W2 = lin1.weight.detach(), lin1.bias.detach(), lin2.weight.detach()
    names = [n for n, _ in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    shapes = [p.shape for p in model.parameters()]

    def forward(th, x):
        parts = torch.split(th, [s.numel() for s in shapes])
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        return functional_call(model, params, (x[None],))[0]

    def loss(o, t):
        return torch.nn.functional.cross_entropy(o[None], t[None])

    n, p = len(X), theta.numel()
    s1 = X @ W1.T + b1
    h = torch.tanh(s1)
    ones = torch.ones(n, 1, dtype=X.dtype)
    acts = [torch.cat([X, ones], 1), torch.cat([h, ones], 1)]  # a~_i of each layer
    Ds = [[], []]
    G = [torch.zeros(5, 5, dtype=X.dtype), torch.zeros(3, 3, dtype=X.dtype)]
    for i in range(n):
        o = forward(theta, X[i])
        lam, U = torch.linalg.eigh(hessian(loss)(o, y[i]))
        S = U * lam.clamp_min(0).sqrt()
        J = jacrev(forward)(theta, X[i])  # (C, p)
        for c in range(3):
            g2 = S[:, c]
            g1 = (1 - h[i] ** 2) * (W2.T @ g2)
            G[0] += torch.outer(g1, g1)
            G[1] += torch.outer(g2, g2)
            v = J.T @ S[:, c]  # the per-sample gradient of o^T S[:, c]: vec of the D_ic
            Ds[0].append(torch.cat([v[:20].reshape(5, 4), v[20:25].reshape(5, 1)], 1))
            Ds[1].append(torch.cat([v[25:40].reshape(3, 5), v[40:43].reshape(3, 1)], 1))
    H = torch.zeros(p, p, dtype=X.dtype)
    starts = [(0, 20, 5, 4), (25, 40, 3, 5)]
    for layer, (w0, b0, out, inp) in enumerate(starts):
        a = acts[layer]
        Q_A = torch.linalg.eigh(a.T @ a)[1]
        Q_G = torch.linalg.eigh(G[layer])[1]
        s = sum((Q_G.T @ D @ Q_A) ** 2 for D in Ds[layer]) / n
        Q = torch.kron(Q_G, Q_A)  # acts on the row-major vec of [W | b]
        block = Q @ torch.diag(s.reshape(-1)) @ Q.T
        # theta index of each entry of the row-major [W | b] (out, inp + 1)
        idx = torch.tensor(
            [w0 + o * inp + j if j < inp else b0 + o for o in range(out) for j in range(inp + 1)]
        )
        H[idx[:, None], idx[None, :]] = block
    return H + (l2 + damping) * torch.eye(p, dtype=X.dtype)


def test_solve_equals_brute_force_ekfac():
    model, X, y = _mlp_problem()
    H = _brute_force_ekfac(model, X, y, L2, DAMPING)
    inf = iw.Influence(
        model, (X, y), l2=L2, damping=DAMPING, solver="ekfac", batch_size=16, progress=False
    )
    inf.ensure_fit()
    B = torch.randn(inf.p, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    X_ek = inf.solver.solve(B)
    torch.testing.assert_close(X_ek, torch.linalg.solve(H, B), rtol=1e-10, atol=1e-10)
    eig = torch.linalg.eigvalsh(H)
    d = inf.solver.diagnostics
    assert d.min_eigenvalue == pytest.approx(float(eig[0]), rel=1e-9)
    assert d.max_eigenvalue == pytest.approx(float(eig[-1]), rel=1e-9)
    assert d.extra["layers"] == {"0": "Linear", "2": "Linear"}


@pytest.mark.parametrize("bias_only", [False, True])
def test_exact_for_linear_regression(bias_only):
    """One Linear layer under mse: G = (2/C) I kron E[a~ a~^T] is a Kronecker product, so EK-FAC
    is H itself and the influence equals the direct solver's."""
    gen = torch.Generator().manual_seed(3)
    X = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    Y = X @ torch.randn(4, 2, generator=gen, dtype=torch.float64) + 0.1 * torch.randn(
        50, 2, generator=gen, dtype=torch.float64
    )
    model = torch.nn.Linear(4, 2).double()
    iw.train(model, (X, Y), loss="mse", l2=L2, progress=False)
    params = ["bias"] if bias_only else None
    kw = dict(loss="mse", l2=L2, params=params, progress=False)
    direct = iw.Influence(model, (X, Y), solver="direct", **kw)
    ekfac = iw.Influence(model, (X, Y), solver=iw.EKFAC(batch_size=7), **kw)
    torch.testing.assert_close(
        ekfac.influence_on_loss(X[:3], Y[:3]),
        direct.influence_on_loss(X[:3], Y[:3]),
        rtol=1e-9,
        atol=1e-12,
    )


def test_correlates_with_direct_on_mlp_classifier(untouched):
    """Measured (seed 4, 6 test points): Pearson r pooled over all (test, train) pairs 0.91,
    per test point 0.51 to 0.94; seed 6 on 10 test points: pooled 0.81, per point 0.67 to 0.9. The
    gap is the Gauss-Newton (no second-derivative term of the Tanh layer) and the block-diagonal
    Kronecker approximation of H."""
    model, X, y = _mlp_problem(n=120, seed=4)
    kw = dict(l2=L2, damping=DAMPING, progress=False)
    exact = iw.Influence(model, (X, y), solver="direct", **kw).influence_on_loss(X[:6], y[:6])
    with untouched(model, X, y):
        approx = iw.Influence(model, (X, y), solver="ekfac", **kw).influence_on_loss(X[:6], y[:6])
    pooled = torch.corrcoef(torch.stack([exact.flatten(), approx.flatten()]))[0, 1]
    r = [torch.corrcoef(torch.stack([a, b]))[0, 1] for a, b in zip(exact, approx, strict=True)]
    assert pooled > 0.85 and min(r) > 0.4, (pooled, r)


def test_conv2d_matches_brute_force_per_layer():
    """A Conv2d with several positions: the correction s equals sum_ic (Q_G^T D_ic Q_A)^2 with
    D_ic the per-sample gradient matrix from the full Jacobian."""
    gen = torch.Generator().manual_seed(5)
    X = torch.randn(12, 1, 5, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (12,), generator=gen)
    torch.manual_seed(5)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(50, 2)
    ).double()
    params = ["0.weight", "0.bias"]
    inf = iw.Influence(
        model, (X, y), l2=L2, damping=DAMPING, params=params, solver="ekfac", progress=False
    )
    inf.ensure_fit()
    layer = inf.solver.layers[0]
    names = [n for n, _ in model.named_parameters()][:2]
    theta = torch.cat([p.detach().reshape(-1) for p in model[0].parameters()])
    rest = {k: v.detach() for k, v in model.named_parameters() if k not in names}

    def forward(th, x):
        w, b = th[:18].reshape(2, 1, 3, 3), th[18:]
        return functional_call(model, {**rest, "0.weight": w, "0.bias": b}, (x[None],))[0]

    s = torch.zeros(2, 10, dtype=torch.float64)
    for i in range(len(X)):
        o = forward(theta, X[i])
        Lam = hessian(lambda o_, t=y[i]: torch.nn.functional.cross_entropy(o_[None], t[None]))(o)
        lam, U = torch.linalg.eigh(Lam)
        S = U * lam.clamp_min(0).sqrt()
        J = jacrev(forward)(theta, X[i])
        for c in range(2):
            v = J.T @ S[:, c]
            D = torch.cat([v[:18].reshape(2, 9), v[18:].reshape(2, 1)], 1)
            s += (layer.Q_G.T @ D @ layer.Q_A) ** 2
    torch.testing.assert_close(layer.s, s, rtol=1e-10, atol=1e-12)


def test_settings_and_unfitted():
    solver = iw.EKFAC(batch_size=8)
    assert solver.settings() == {"batch_size": 8}
    copy = solver.unfitted()
    assert isinstance(copy, iw.EKFAC) and copy is not solver and copy.batch_size == 8
    assert repr(solver) == "EKFAC(batch_size=8)"
