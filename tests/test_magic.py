"""The %influence magic in a real IPython shell: demos, user variables, errors, and no code run."""

from __future__ import annotations

import re

import pytest
import torch
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import influence_widgets as iw


@pytest.fixture(scope="module")
def shell():
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "influence_widgets")
    return ip


@pytest.fixture(scope="module")
def digits_variables(shell):
    """A trained digits model and its data, as variables of the shell."""
    data = iw.datasets.digits()
    model = iw.models.logistic_regression(data)
    iw.train(model, data, l2=0.01, progress=False)
    shell.user_ns.update(m=model, X=data.X_train, y=data.y_train, Xt=data.X_test, yt=data.y_test)
    return data, model


def test_magic_demo_returns_an_explorer(shell):
    ex = shell.run_line_magic("influence", "--demo digits -k 4")
    assert isinstance(ex, iw.InfluenceExplorer) and ex.k == 4
    ex.wait_ready()
    ex.selected = 3
    assert ex.panel["test_index"] == 3


def test_magic_with_user_variables_and_its_errors(shell, digits_variables):
    ex = shell.run_line_magic("influence", "m --train X y --test Xt yt --l2 0.01")
    assert isinstance(ex, iw.InfluenceExplorer) and ex.kind == "tabular"
    with pytest.raises(UsageError, match="train_display: image data must be"):
        shell.run_line_magic("influence", "m --train X y --test Xt yt --l2 0.01 --kind image")
    with pytest.raises(UsageError, match="no variable named 'nope'"):
        shell.run_line_magic("influence", "nope --train X y --test Xt yt")
    shell.user_ns["s"] = "a string"
    with pytest.raises(UsageError, match="not a torch.nn.Module"):
        shell.run_line_magic("influence", "s --train X y --test Xt yt")
    with pytest.raises(UsageError, match="--demo NAME"):
        shell.run_line_magic("influence", "")
    with pytest.raises(UsageError):
        shell.run_line_magic("influence", "--demo nope")
    with pytest.raises(UsageError, match="solver"):
        shell.run_line_magic("influence", "m --train X y --test Xt yt --solver nope")
    with pytest.raises(UsageError, match="--train must be a variable name"):
        shell.run_line_magic("influence", "m --train X[0] y --test Xt yt")


def test_magic_help_is_available(shell):
    doc = shell.find_line_magic("influence").__doc__
    assert "--demo" in doc and "--train" in doc


def test_magic_help_has_examples_defaults_and_the_same_l2_rule(shell):
    """``%influence?`` shows examples, the defaults and how to train first, not argparse only."""
    doc = shell.find_line_magic("influence").__doc__
    assert "Examples::" in doc and "%influence --demo digits" in doc
    assert "%influence model --train X_train y_train --test X_test y_test --l2 0.01" in doc
    assert "--l2 0 (no L2" in doc and "--kind tabular" in doc
    assert "to a minimum with the same l2" in doc
    assert re.search(r"--l2 L2 .*\(default: 0\)", " ".join(doc.split()))
    assert re.search(r"--kind KIND .*\(default: tabular\)", " ".join(doc.split()))


# ----- nothing in the line is evaluated -------------------------------------------------------
@pytest.mark.parametrize(
    "model",
    [
        "{__import__('os').system('touch SENTINEL')}",  # a space inside: argparse would split it
        "{__import__('pathlib').Path('SENTINEL').touch()}",
        "{seen.append(1)}",
        "$mname",  # "m", a model: expanded, the line would open an explorer on it
    ],
    ids=["os.system", "pathlib", "append", "dollar"],
)
def test_magic_never_evaluates_the_line(shell, digits_variables, tmp_path, model):
    """IPython expands {expr} and $name in a line magic unless it is marked @no_var_expand: the
    expression would run before the magic sees the line. Run through ``run_cell`` as typed."""
    sentinel = tmp_path / "sentinel"
    shell.user_ns["seen"] = seen = []
    shell.user_ns["mname"] = "m"
    line = model.replace("SENTINEL", str(sentinel))
    result = shell.run_cell(f"%influence {line} --train X y --test Xt yt", store_history=False)
    assert not sentinel.exists(), "the magic ran code from its line"
    assert seen == [], "the magic evaluated an expression in its line"
    assert isinstance(result.error_in_exec, UsageError)
    assert "MODEL must be a variable name" in str(result.error_in_exec)


@pytest.mark.parametrize("model", ["1abc", "a.b", "{x}", "m[0]", "m()"])
def test_magic_model_that_is_not_a_name_is_named(shell, digits_variables, model):
    with pytest.raises(UsageError, match="MODEL must be a variable name"):
        shell.run_line_magic("influence", f"{model} --train X y --test Xt yt")


# ----- advice in the magic's own terms --------------------------------------------------------
def test_a_forgotten_l2_is_named_with_the_l2_to_pass(shell, digits_variables):
    """The model was trained with l2 = 0.01; opened without --l2 the magic says to pass
    --l2 0.01 (before, a NotPositiveDefiniteError advised a tiny damping in API spelling)."""
    with pytest.raises(UsageError) as caught:
        shell.run_line_magic("influence", "m --train X y --test Xt yt")
    text = str(caught.value)
    assert text.startswith("--l2: the model looks trained with l2 = 0.01")
    assert "pass --l2 0.01" in text and "damping" not in text
    with pytest.raises(UsageError, match=r"pass --l2 0\.01"):
        shell.run_line_magic("influence", "m --train X y --test Xt yt --l2 0.001")


# An untrained tanh network: H is indefinite, so the background fit (no damping) fails.
def test_a_failed_fit_advises_the_magics_damping_option(shell):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 4, dtype=torch.float64),
        torch.nn.Tanh(),
        torch.nn.Linear(4, 2, dtype=torch.float64),
    )
    shell.user_ns.update(net=net, Xn=X, yn=(X[:, 0] > 0).long())
    ex = shell.run_line_magic("influence", "net --train Xn yn --test Xn yn --solver direct")
    with pytest.raises(RuntimeError, match="NotPositiveDefiniteError"):
        ex.wait_ready()
    assert re.search(r"--damping \d", ex.error), ex.error
    assert "run %influence again with the --damping it suggests" in ex.error
    assert "damping=" not in ex.error and "inf.rebuild" not in ex.error


# ----- names and how points are shown ---------------------------------------------------------
def test_class_and_feature_names_options(shell, digits_variables):
    names = " ".join(f"d{c}" for c in range(10))
    features = " ".join(f"px{j}" for j in range(64))
    ex = shell.run_line_magic(
        "influence",
        f"m --train X y --test Xt yt --l2 0.01 --class-names {names} --feature-names {features}",
    )
    assert ex.class_names == [f"d{c}" for c in range(10)]
    assert ex.display_data.feature_names[:2] == ["px0", "px1"]


@pytest.mark.parametrize(
    "option, message",
    [
        ("--class-names a b c", r"^--class-names: got 3 names for 10 classes; pass one name"),
        ("--feature-names a b", r"^--feature-names: got 2 names for 64 features; pass one name"),
    ],
    ids=["class-names", "feature-names"],
)
def test_a_wrong_number_of_names_names_the_option(shell, digits_variables, option, message):
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("influence", f"m --train X y --test Xt yt --l2 0.01 {option}")
