"""damping="auto" (the default): the smallest rung of the documented ladder that makes H + damping I
positive definite with a margin, 0 (results unchanged) when H already is; and the user story of
an Adam-trained digits MLP that opens with every default."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import influence_widgets as iw
from influence_widgets.core.damping import DAMPING_LADDER, ladder_text
from tests.conftest import make_mlp

ROOT = Path(__file__).resolve().parent.parent
N, D = 40, 4  # training points, features
SOLVERS = {
    "direct": "direct",
    "cg": "cg",
    "lissa": iw.LiSSA(depth=2000),
    "arnoldi": iw.Arnoldi(),  # rank 50 + 20 >= p = 12: every eigenvalue
}


def known_spectrum(lowest: float):
    """A linear model (no bias, p = 3 D = 12) at a stationary point of the loss
    0.5 sum_k s_k (o_k - t_k)^2 with s = (1, 0.5, lowest) and X^T X / n = I: H = diag(s) kron I,
    so lambda_min(H) = ``lowest`` exactly (l2 = 0)."""
    gen = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(N, D, generator=gen, dtype=torch.float64))
    X = Q * N**0.5  # X^T X / n = I
    Y = torch.randn(N, 3, generator=gen, dtype=torch.float64)
    signs = torch.tensor([1.0, 0.5, lowest], dtype=torch.float64)

    def loss(out, target):
        return 0.5 * ((out - target) ** 2 * signs).sum(1)

    model = torch.nn.Linear(D, 3, bias=False, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_((X.T @ Y / N).T)  # least squares: every output's gradient is 0
    return model, X, Y, loss


@pytest.mark.filterwarnings("ignore:damping='auto' added:influence_widgets.InfluenceWarning")
@pytest.mark.parametrize(
    "lowest, rung", [(0.2, 0.0), (-0.015, 0.03), (-0.025, 0.1), (-0.5, 1.0), (-1e-9, 1e-4)]
)
@pytest.mark.parametrize("solver", list(SOLVERS))
def test_auto_takes_the_documented_rung(lowest, rung, solver, untouched):
    """The smallest rung d > 0 with d >= 1.5 (-lambda_min); 0 when lambda_min > 0."""
    model, X, Y, loss = known_spectrum(lowest)
    with untouched(model, X, Y):
        inf = iw.Influence(model, (X, Y), loss=loss, solver=SOLVERS[solver], progress=False)
        assert inf.damping == rung
        d = inf.diagnostics
        assert d.damping == rung and d.hessian == "exact"
        assert d.damping_reason.startswith("auto: ")
        assert d.min_eigenvalue is None or d.min_eigenvalue == pytest.approx(lowest + rung)
        scores = inf.influence_on_loss(X[:3], Y[:3])
    given = iw.Influence(model, (X, Y), loss=loss, damping=rung, solver=SOLVERS[solver])
    assert torch.allclose(scores, given.influence_on_loss(X[:3], Y[:3]), rtol=1e-6, atol=1e-12)
    assert given.diagnostics.damping_reason is None


def test_a_positive_rung_warns_and_says_why():
    model, X, Y, loss = known_spectrum(-0.025)
    inf = iw.Influence(model, (X, Y), loss=loss, progress=False)
    with pytest.warns(iw.InfluenceWarning, match=r"damping='auto' added damping=0\.1 to the exact"):
        inf.fit()
    reason = inf.diagnostics.damping_reason
    assert "-0.025" in reason and "not a (strict) minimum" in reason and ladder_text() in reason
    assert "damping=0.1 (auto)" in repr(inf) and "damping_reason=" in repr(inf.diagnostics)


def test_no_rung_is_enough_raises_naming_damping():
    model, X, Y, loss = known_spectrum(-80.0)  # 1.5 x 80 > the top rung, 100
    with pytest.raises(iw.NotPositiveDefiniteError, match=r"^damping: 'auto' found no rung"):
        iw.Influence(model, (X, Y), loss=loss, progress=False).fit()


@pytest.mark.filterwarnings("ignore:damping='auto' added:influence_widgets.InfluenceWarning")
def test_ekfac_rung_comes_from_its_own_eigenvalues():
    """EK-FAC's Gauss-Newton drops the negative output curvature: its smallest eigenvalue is 0
    (l2 = 0), so "auto" takes the first positive rung, and says the matrix is singular."""
    model, X, Y, loss = known_spectrum(-0.5)
    inf = iw.Influence(model, (X, Y), loss=loss, solver="ekfac", progress=False)
    assert inf.damping == DAMPING_LADDER[1]
    assert "singular" in inf.diagnostics.damping_reason
    assert inf.diagnostics.min_eigenvalue == pytest.approx(DAMPING_LADDER[1])


@pytest.mark.parametrize(
    "solver", ["direct", "cg", iw.LiSSA(depth=3000), iw.Arnoldi(rank=20), "ekfac"], ids=repr
)
def test_auto_on_a_positive_definite_hessian_changes_no_result(mlp_problem, solver, untouched):
    pb = mlp_problem
    with untouched(pb.model, pb.X, pb.y, pb.Xt, pb.yt):
        auto = iw.Influence(pb.model, (pb.X, pb.y), l2=pb.l2, solver=solver, progress=False)
        zero = iw.Influence(
            pb.model, (pb.X, pb.y), l2=pb.l2, damping=0, solver=solver, progress=False
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error", iw.InfluenceWarning)  # no damping, no warning
            assert torch.equal(
                auto.influence_on_loss(pb.Xt, pb.yt), zero.influence_on_loss(pb.Xt, pb.yt)
            )
    assert auto.config.damping == "auto" and auto.damping == 0.0
    assert auto.diagnostics.damping_reason.startswith("auto: ")
    assert "positive definite" in auto.diagnostics.damping_reason


def test_the_ladder_is_documented_where_users_read():
    ladder = ladder_text()
    assert ladder == "0, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100"
    doc = " ".join(iw.Influence.__doc__.split())
    assert ladder in doc
    for page in ("README.md", "docs/api.md"):
        assert ladder in (ROOT / page).read_text(), page


# ----- the user story: an Adam-trained MLP opens with the defaults ----------------------------
@pytest.fixture(scope="module")
def adam_mlp():
    """digits, a 64-64-10 ReLU MLP trained with Adam(lr=1e-3, weight_decay=1e-4) for 20 epochs
    of batches of 64: ~95% test accuracy, not at a minimum, its exact H indefinite."""
    data = iw.datasets.digits()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
    ).to(data.X_train.dtype)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    X, y = data.X_train, data.y_train
    for _ in range(20):
        for idx in torch.randperm(len(X)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    accuracy = float((model(data.X_test).argmax(1) == data.y_test).double().mean())
    assert accuracy > 0.9
    return model, data


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::influence_widgets.InfluenceWarning")
def test_the_adam_mlp_raises_with_an_explicit_damping_too_small(adam_mlp):
    """The story's explicit path stays as it was: damping=0.01 is not enough and says so."""
    model, data = adam_mlp
    inf = iw.Influence(model, data, l2=1e-4, damping=0.01, progress=False)
    with pytest.raises(iw.NotPositiveDefiniteError, match=r"Pass damping=0\.0\d+ or more"):
        inf.fit()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::influence_widgets.InfluenceWarning")
def test_the_adam_mlp_opens_in_the_explorer_with_the_defaults(adam_mlp, untouched):
    model, data = adam_mlp
    with untouched(model, data.X_train, data.y_train):
        inf = iw.Influence(model, (data.X_train, data.y_train), progress=False)
        ex = iw.InfluenceExplorer(inf, data, fit_in_background=False)
    assert ex.status == "ready", (ex.message, ex.error)
    d = inf.diagnostics
    assert d.hessian == "exact" and d.damping in DAMPING_LADDER and d.damping > 0
    assert f"exact Hessian + {d.damping:g} I (damping='auto')" in ex.message
    assert "not at a minimum" in ex.notice and "not positive definite" in ex.notice
    assert f"H + {d.damping:g} I" in ex.notice and "gauss-newton" in ex.notice
    ex.selected = 0
    assert ex.panel["test_index"] == 0 and ex.panel.get("helpful")


@pytest.fixture(scope="module")
def shell():
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "influence_widgets")
    return ip


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::influence_widgets.InfluenceWarning")
def test_the_adam_mlp_opens_with_the_magic_defaults(adam_mlp, shell):
    model, data = adam_mlp
    shell.user_ns.update(
        model=model, X=data.X_train, y=data.y_train, Xt=data.X_test, yt=data.y_test
    )
    ex = shell.run_line_magic("influence", "model --train X y --test Xt yt")
    ex.wait_ready()
    assert ex.status == "ready", (ex.message, ex.error)
    assert re.search(r"exact Hessian \+ \S+ I \(damping='auto'\)", ex.message), ex.message
    assert "not positive definite" in ex.notice


@pytest.mark.parametrize(
    "option, pattern",
    [
        ("--damping automatic", r"--damping.*'automatic'.*auto"),
        ("--damping -1", r"--damping"),
        ("--hessian foo", r"--hessian.*'foo'"),
    ],
)
def test_the_magics_bad_damping_and_hessian_name_the_option(shell, option, pattern):
    model, X, Y, _ = known_spectrum(0.2)
    shell.user_ns.update(lin=model, Xl=X, Yl=Y)
    with pytest.raises(UsageError, match=pattern):
        shell.run_line_magic("influence", f"lin --train Xl Yl --test Xl Yl {option}")


def test_the_magic_takes_a_damping_number_or_auto_and_a_hessian(shell):
    pb = make_mlp()
    shell.user_ns.update(net=pb.model, Xn=pb.X, yn=pb.y)
    cases = [
        ("--damping 0.3", 0.3, "exact Hessian, damping 0.3"),
        ("--damping auto", 0.0, "exact Hessian, no damping (damping='auto')"),
        ("", 0.0, "exact Hessian, no damping (damping='auto')"),
        ("--hessian gauss-newton", 0.0, "Gauss-Newton matrix, no damping (damping='auto')"),
    ]
    for option, damping, text in cases:
        ex = shell.run_line_magic("influence", f"net --train Xn yn --test Xn yn --l2 0.05 {option}")
        ex.wait_ready()
        assert ex.influence.damping == damping and text in ex.message, ex.message
    assert ex.influence.hessian == "gauss-newton"
