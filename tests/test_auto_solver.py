"""solver="auto" (issue 17, section 1): direct while H and its factor fit ``hessian_budget_mb``;
beyond it EK-FAC when every parameter is in a Linear/Conv2d layer, else CG; the reason is in
``diagnostics``."""

from __future__ import annotations

import pytest
import torch

import influence_widgets as iw

pytestmark = pytest.mark.filterwarnings("ignore::influence_widgets.InfluenceWarning")

TINY_BUDGET_MB = 1e-6  # below any Hessian: "beyond direct"
L2 = 1e-2


def _data(n=30, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    return X, (X[:, 0] + X[:, 1] > 0).long()


def _trained(model):
    iw.train(model, _data(), l2=L2, progress=False)
    return model


def _mlp(seed=0):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)]
    return _trained(torch.nn.Sequential(*layers).double())


def _normed_mlp(seed=0):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(4, 5), torch.nn.LayerNorm(5), torch.nn.Tanh(), torch.nn.Linear(5, 2)]
    return _trained(torch.nn.Sequential(*layers).double())


def _auto(model, X, y, **kwargs):
    return iw.Influence(model, (X, y), l2=L2, damping=1e-3, progress=False, **kwargs)


def test_auto_is_direct_while_the_hessian_fits_the_budget():
    X, y = _data()
    inf = _auto(_mlp(), X, y)
    assert inf.solver.name == "direct"
    # p = 37 float64: H and its factor need 2 * 37^2 * 8 bytes = 0.0209 MB
    assert inf.diagnostics.solver.extra["auto"] == (
        "direct: H (p=37) needs 0.0209 MB <= hessian_budget_mb=2048"
    )


def test_auto_is_ekfac_beyond_the_budget_when_every_layer_is_covered(untouched):
    X, y = _data()
    model = _mlp()
    with untouched(model, X, y):
        inf = _auto(model, X, y, hessian_budget_mb=TINY_BUDGET_MB)
        assert isinstance(inf.solver, iw.EKFAC)
        reason = inf.diagnostics.solver.extra["auto"]
    assert reason == (
        "ekfac: H (p=37) needs 0.0209 MB > hessian_budget_mb=1e-06; all params in Linear/Conv2d "
        "layers; influence uses the EK-FAC approximation of the Gauss-Newton matrix, not H"
    )
    assert f"auto={reason!r}" in repr(inf.diagnostics)
    # the same numbers as asking for EK-FAC by name
    named = _auto(model, X, y, solver="ekfac")
    Xt, yt = _data(4, seed=1)
    torch.testing.assert_close(inf.influence_on_loss(Xt, yt), named.influence_on_loss(Xt, yt))


def test_auto_is_cg_beyond_the_budget_and_names_the_uncovered_layer():
    X, y = _data()
    inf = _auto(_normed_mlp(), X, y, hessian_budget_mb=TINY_BUDGET_MB)
    assert inf.solver.name == "cg"
    assert inf.diagnostics.solver.extra["auto"] == (
        "cg: H (p=47) needs 0.0337 MB > hessian_budget_mb=1e-06; "
        "layer '1' (LayerNorm) is not covered by EK-FAC"
    )


def test_auto_is_ekfac_when_params_leaves_the_uncovered_layer_out():
    X, y = _data()
    inf = _auto(
        _normed_mlp(), X, y, params=["3.weight", "3.bias"], hessian_budget_mb=TINY_BUDGET_MB
    )
    assert inf.solver.name == "ekfac"
    assert inf.diagnostics.solver.extra["auto"].startswith("ekfac: H (p=12) needs")


def test_auto_keeps_direct_for_uncovered_layers_within_the_budget():
    X, y = _data()
    inf = _auto(_normed_mlp(), X, y)
    assert inf.solver.name == "direct"
    assert inf.diagnostics.solver.extra["auto"].startswith("direct: H (p=47) needs")


def test_auto_reports_large_hessians_in_megabytes():
    X = torch.randn(8, 1000, dtype=torch.float64)
    y = torch.arange(8) % 2
    model = torch.nn.Linear(1000, 2).double()  # p = 2,002: 2 * 2002^2 * 8 bytes = 61.2 MB
    choice, reason = iw.core.solvers.auto_solver(
        iw.Influence(model, (X, y), solver="cg", progress=False).objective, budget_mb=10
    )
    assert choice == "ekfac"
    assert reason.startswith("ekfac: H (p=2,002) needs 61.2 MB > hessian_budget_mb=10;")
    model = torch.nn.Linear(4000, 2).double()  # p = 8,002: 977 MB
    X = torch.randn(8, 4000, dtype=torch.float64)
    choice, reason = iw.core.solvers.auto_solver(
        iw.Influence(model, (X, y), solver="cg", progress=False).objective, budget_mb=2048
    )
    assert reason == "direct: H (p=8,002) needs 977 MB <= hessian_budget_mb=2048"


def test_a_solver_chosen_by_name_has_no_auto_reason():
    X, y = _data()
    for solver in ("direct", "cg", "ekfac", iw.ConjugateGradient()):
        inf = _auto(_mlp(), X, y, solver=solver)
        assert "auto" not in inf.solver.diagnostics.extra


def _conv(*layers):
    torch.manual_seed(0)
    return torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.LazyLinear(2)).double().eval()


@pytest.mark.parametrize(
    ("layers", "choice", "why"),
    [
        ([torch.nn.Conv2d(2, 2, 3)], "ekfac", "all params in Linear/Conv2d layers"),
        (
            [torch.nn.Conv2d(2, 2, 3, groups=2)],
            "cg",
            "layer '0' (Conv2d) has groups=2, padding=(0, 0), padding_mode='zeros'",
        ),
        (
            [torch.nn.Conv2d(2, 2, 3), torch.nn.BatchNorm2d(2)],
            "cg",
            "layer '1' (BatchNorm2d) is not covered by EK-FAC",
        ),
    ],
    ids=["conv", "grouped_conv", "batchnorm"],
)
def test_auto_beyond_the_budget_on_convolutions(layers, choice, why):
    X = torch.randn(8, 2, 5, 5, dtype=torch.float64)
    y = torch.arange(8) % 2
    model = _conv(*layers)
    model(X)  # materialise the lazy Linear
    inf = iw.Influence(model, (X, y), hessian_budget_mb=TINY_BUDGET_MB, progress=False)
    assert inf.solver.name == choice
    reason = inf.solver.diagnostics.extra["auto"]
    assert reason.startswith(f"{choice}: H (p={inf.p:,}) needs ") and why in reason, reason


@pytest.mark.parametrize("solver, says", [("ekfac", True), ("direct", False)])
def test_the_explorer_says_when_its_scores_are_ek_fac(solver, says):
    """An explorer on an EK-FAC Influence says its scores are an approximation and where to
    check them; an exact solver's explorer does not."""
    X, y = _data()
    inf = iw.Influence(_mlp(), (X, y), l2=L2, solver=solver, progress=False)
    ex = iw.InfluenceExplorer(
        inf, x_test=X[:4], y_test=y[:4], kind="tabular", fit_in_background=False
    )
    assert ex.status == "ready"
    assert ("EK-FAC, an approximation: check them in the Verify tab" in ex.message) is says
