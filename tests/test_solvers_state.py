"""A solver instance is a settings object: Influence fits its own copy (issue 14, item 1)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

import influence_widgets as iw
from influence_widgets.core.influence import InfluenceConfig
from tests.conftest import reference, rel_err

NOT_AT_MINIMUM = (
    "ignore:The model is not at a minimum:influence_widgets.core.errors.InfluenceWarning"
)

SHARED = {
    "cg": (lambda: iw.ConjugateGradient(rtol=1e-10), 1e-7),
    "direct": (lambda: iw.Direct(), 1e-8),
}


def _influence(pb, X, y, solver, **kw) -> iw.Influence:
    return iw.Influence(
        pb.model, (X, y), l2=pb.l2, solver=solver, params=pb.params, progress=False, **kw
    )


@pytest.mark.filterwarnings(NOT_AT_MINIMUM)
@pytest.mark.parametrize("name", list(SHARED))
def test_one_solver_instance_shared_by_two_influences_leaves_the_first_intact(
    mlp_problem, lr_problem, name, untouched
):
    """Two models, each given one instance twice: fitting the second Influence must not change
    what the first computes (the old code fitted the user's instance in place)."""
    make, tol = SHARED[name]
    for pb in (mlp_problem, lr_problem):
        solver = make()
        first = _influence(pb, pb.X, pb.y, solver)
        alone = first.influence_on_loss(pb.Xt, pb.yt)
        assert rel_err(alone, reference(pb).influence_on_loss) < tol

        # the same parameter count, another Hessian: a scaled copy of the training inputs
        second = _influence(pb, 1.5 * pb.X, pb.y, solver)
        with untouched(pb.model, pb.X, pb.y, pb.Xt, pb.yt):
            second.fit()
            second.influence_on_loss(pb.Xt, pb.yt)
            again = first.influence_on_loss(pb.Xt, pb.yt)
        assert torch.equal(again, alone)
        assert first.solver is not solver and second.solver is not first.solver
        assert solver.op is None  # the user's instance was never fitted


def test_a_solver_instance_gives_the_same_results_as_its_name(lr_problem):
    pb = lr_problem
    by_name = _influence(pb, pb.X, pb.y, "cg").influence_on_loss(pb.Xt, pb.yt)
    by_instance = _influence(pb, pb.X, pb.y, iw.ConjugateGradient()).influence_on_loss(pb.Xt, pb.yt)
    assert torch.equal(by_name, by_instance)


@pytest.mark.parametrize(
    "solver",
    [
        iw.Direct(),
        iw.ConjugateGradient(rtol=1e-9, maxiter=77, block_size=3),
        iw.LiSSA(depth=123, repeats=2, batch_size=5, scale=4.0, rtol=1e-4, seed=7),
        iw.Arnoldi(rank=9, oversample=0, seed=3),
    ],
    ids=repr,
)
def test_unfitted_copy_keeps_every_setting(solver):
    copy = solver.unfitted()
    assert type(copy) is type(solver) and copy is not solver
    assert copy.settings() == solver.settings()
    assert repr(copy) == repr(solver)
    assert copy.op is None


def test_rebuild_fits_its_own_copy_with_the_same_settings(mlp_problem, untouched):
    pb = mlp_problem
    solver = iw.ConjugateGradient(rtol=1e-10, block_size=2)
    inf = _influence(pb, pb.X, pb.y, solver)
    inf.fit()
    with untouched(pb.model, pb.X, pb.y, pb.Xt, pb.yt):
        damped = inf.rebuild(pb.model, (pb.X, pb.y), damping=0.3)
        result = damped.influence_on_loss(pb.Xt, pb.yt)
    assert damped.config.damping == 0.3 and damped.damping == 0.3
    assert inf.config.damping == "auto" and inf.damping == 0.0  # the default: H is PD here
    assert damped.solver.settings() == solver.settings()
    assert damped.solver is not inf.solver and damped.solver is not solver
    assert rel_err(result, reference(pb, damping=0.3).influence_on_loss) < 1e-7
    # the original still gives its own, undamped answer
    assert rel_err(inf.influence_on_loss(pb.Xt, pb.yt), reference(pb).influence_on_loss) < 1e-7


def test_config_lists_every_keyword_of_influence():
    keywords = [
        name
        for name, p in inspect.signature(iw.Influence).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    fields = [f.name for f in dataclasses.fields(InfluenceConfig)]
    assert fields == keywords
