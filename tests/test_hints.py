"""The code the explorer shows runs as shown in a notebook where only ``%load_ext
influence_widgets`` and ``%influence --demo digits`` ran (a real IPython shell, nothing else in its
namespace): the Review tab's cell that explores the retrained model, and the one its failure
message gives; ``InfluenceExplorer.opened`` and ``explore_retrained`` behind them."""

from __future__ import annotations

import sys

import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell

import influence_widgets as iw
from influence_widgets.widgets.hints import fixes_code, retrained_code

NAMES_A_HINT_MAY_NOT_ASSUME = {"iw", "ex", "inf", "data", "model"}


@pytest.fixture(scope="module")
def shell():
    """A shell as a fresh notebook: its namespace emptied, then the two commands of the
    quickstart; returns (shell, the explorer %influence returned)."""
    ip = InteractiveShell.instance()
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    ip.reset(new_session=False)
    for cell in ("%load_ext influence_widgets", "%influence --demo digits"):
        ran = ip.run_cell(cell)
        assert ran.success, ran.error_in_exec
    assert not NAMES_A_HINT_MAY_NOT_ASSUME & set(ip.user_ns)
    yield ip, ran.result.wait_ready()
    # the reset cleared the shell's user module, which is __main__, __spec__ with it: later
    # tests start Dask worker processes themselves, and spawn reads it
    if not hasattr(sys.modules["__main__"], "__spec__"):
        sys.modules["__main__"].__spec__ = spec


def run_as_shown(ip: InteractiveShell, code: str):
    """Run ``code`` as one notebook cell; its value (the last expression's)."""
    ran = ip.run_cell(code)
    assert ran.success, f"{code!r} raised {ran.error_in_exec!r}"
    return ran.result


def test_the_review_cell_opens_an_explorer_on_the_retrained_model(shell):
    ip, ex = shell
    wrong = next(i for i in range(len(ex.x_test)) if ex.test_points.misclassified(i))
    ex.selected = wrong
    harmful = [it["index"] for it in ex.panel["harmful"]]
    ex.mark_for_removal(harmful[0])
    ex.relabel(harmful[1], (ex.influence.train.take([harmful[1]])[1].item() + 1) % 10)
    result = ex.retrain_with_fixes(wait=True)
    code = ex.review_retrain["code"]
    assert code == retrained_code(ex.number)
    assert not NAMES_A_HINT_MAY_NOT_ASSUME & set(ip.user_ns)

    new = run_as_shown(ip, code)
    assert isinstance(new, type(ex)) and new is not ex and new.number > ex.number
    assert new.influence.objective.module is not ex.influence.objective.module
    new.wait_ready()
    assert new.influence.n == ex.influence.n - 1 and result.fixes == ex.review_fixes
    assert torch.equal(new.x_test, ex.x_test) and torch.equal(new.y_test, ex.y_test)
    assert (new.k, new.page_size, new.class_names) == (ex.k, ex.page_size, ex.class_names)
    # its panel is influence on the retrained model and the fixed data
    X, y = ex.fixed_dataset()
    fresh = iw.Influence(result.model, (X, y), l2=ex.influence.objective.l2, progress=False)
    new.selected = wrong
    expected = fresh.top(ex.x_test[wrong : wrong + 1], ex.y_test[wrong : wrong + 1], k=new.k)
    assert [it["index"] for it in new.panel["helpful"]] == expected.helpful[0].tolist()
    # training point r of the new explorer is the r-th point the fixes keep, shown as it was
    kept = ex.review_tab.kept(result.fixes)
    for item in new.panel["helpful"] + new.panel["harmful"]:
        original = int(kept[item["index"]])
        assert item["png"] == ex.display_data.item("train", original)["png"]
        assert item["label"] == ex.label(int(y[item["index"]]))


def test_the_cell_a_failed_retrain_gives_runs_as_shown(shell):
    ip, ex = shell
    ex.clear_fixes()
    ex.mark_for_removal(7)
    fixes, (X, y) = run_as_shown(ip, fixes_code(ex.number))
    assert fixes == {7: None} and len(X) == ex.influence.n - 1 == len(y)


def test_opened_finds_explorers_by_number_and_names_the_ones_open(shell):
    _ip, ex = shell
    assert iw.InfluenceExplorer.opened(ex.number) is ex
    with pytest.raises(LookupError, match=r"number: no explorer 999999 in this kernel \(open: "):
        iw.InfluenceExplorer.opened(999_999)
    with pytest.raises(TypeError, match="number"):
        iw.InfluenceExplorer.opened("1")


def test_explore_retrained_before_a_retrain_says_what_to_do(digits_influence):
    data, inf = digits_influence
    ex = iw.InfluenceExplorer(inf, data, k=3)
    with pytest.raises(RuntimeError, match="explore_retrained: no retrain has finished yet"):
        ex.explore_retrained()
