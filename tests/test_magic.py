"""The %influence magic in a real IPython shell: demos, user variables, errors, and no code run."""

from __future__ import annotations

import re
import time
import warnings

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
    with pytest.raises(UsageError, match="--kind image: the inputs are flat rows"):
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


def test_test_inputs_without_labels_are_explained_for_the_predicted_class(shell, digits_variables):
    ex = shell.run_line_magic("influence", "m --train X y --test Xt --l2 0.01").wait_ready()
    assert not ex.labelled
    ex.selected = 0
    assert ex.panel["explanation"].startswith("No label given: explained for the predicted class")
    with pytest.raises(UsageError, match="--test: takes Xt and optionally yt, got 3 names"):
        shell.run_line_magic("influence", "m --train X y --test Xt yt X --l2 0.01")


def bad_test_inputs(data) -> dict:
    """Test inputs the model cannot take: a NaN in test point 0, 63 of 64 features."""
    nan = data.X_test.clone()
    nan[0, 5] = float("nan")
    return {"Xt_nan": nan, "Xt_63": data.X_test[:, :63]}


@pytest.mark.parametrize(
    "line, message",
    [
        ("m --train X y --test Xt_nan", r"^--test: Xt: test point 0 has a NaN or infinite value"),
        ("m --train X y --test Xt_nan yt", r"^--test: Xt: test point 0 has a NaN"),
        ("m --train X y --test Xt_63", r"^--test: Xt: each test point has shape \(63,\) but"),
        ("m --train X y --test Xt yt --class-names a a a a a a a a a a", r"^--class-names: 'a'"),
    ],
    ids=["nan-without-labels", "nan-with-labels", "63-of-64-features", "duplicate-class-names"],
)
def test_test_inputs_and_names_the_explorer_cannot_use_are_named(
    shell, digits_variables, line, message
):
    """Before, a NaN test point opened as predicted '0' with confidence NaN, 63 features raised
    torch's "mat1 and mat2 shapes cannot be multiplied", and duplicate names were accepted."""
    shell.user_ns.update(bad_test_inputs(digits_variables[0]))
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("influence", f"{line} --l2 0.01")


def test_integer_test_inputs_are_cast_to_the_models_dtype(shell, digits_variables):
    """Before: "mat1 and mat2 must have the same dtype, but got Long and Double"."""
    data, model = digits_variables
    whole = data.X_test.round()
    shell.user_ns.update(Xt_int=whole.long())
    ex = shell.run_line_magic("influence", "m --train X y --test Xt_int --l2 0.01").wait_ready()
    with torch.no_grad():
        expected = model(whole.to(model.weight.dtype)).argmax(1)
    assert [item["pred"] for item in ex.gallery] == [str(int(c)) for c in expected[:40]]
    ex.selected = 0
    assert ex.error == "" and ex.panel["helpful"]


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
    assert "--image-shape 8 8" in doc and "--class-names cat dog" in doc
    assert "--feature-names age" in doc and "DataFrame" in doc
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


# An untrained tanh network: H is indefinite, so the background fit with --damping 0 fails.
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
    ex = shell.run_line_magic(
        "influence", "net --train Xn yn --test Xn yn --solver direct --damping 0"
    )
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


@pytest.fixture(scope="module")
def frame_variables(shell):
    """breast_cancer as pandas objects: X a DataFrame with named columns (read-only arrays, as
    pandas hands out), y a categorical with named categories whose codes the model learnt."""
    pd = pytest.importorskip("pandas")
    data = iw.datasets.breast_cancer()
    model = iw.models.logistic_regression(data)
    iw.train(model, data, l2=0.01, progress=False)
    names = data.class_names

    def frame(X):
        return pd.DataFrame(X.numpy(), columns=data.feature_names)

    def labels(y):
        return pd.Series(pd.Categorical.from_codes(y.numpy(), categories=names))

    shell.user_ns.update(
        fm=model,
        FX=frame(data.X_train),
        Fy=labels(data.y_train),
        FXt=frame(data.X_test),
        Fyt=labels(data.y_test),
    )
    return data


def test_a_dataframe_names_the_features_and_a_categorical_the_classes(shell, frame_variables):
    """Before, the columns showed as x0 ... x29 and a categorical of names could not be read."""
    data = frame_variables
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ex = shell.run_line_magic("influence", "fm --train FX Fy --test FXt Fyt --l2 0.01")
    assert not [w for w in caught if "not writable" in str(w.message)]
    assert ex.display_data.feature_names == data.feature_names
    assert ex.class_names == data.class_names
    assert torch.equal(ex.y_test, data.y_test)
    ex = shell.run_line_magic(
        "influence",
        "fm --train FX Fy --test FXt Fyt --l2 0.01 --class-names bad good --feature-names "
        + " ".join(f"f{j}" for j in range(30)),
    )
    assert ex.class_names == ["bad", "good"] and ex.display_data.feature_names[0] == "f0"


def test_the_explorer_names_a_dataframe_and_a_categorical_as_the_magic_does(shell, frame_variables):
    """One input boundary (widgets/inputs.py): before, InfluenceExplorer given the DataFrame and
    the categorical that the magic names could not read the categorical's names."""
    data, ns = frame_variables, shell.user_ns
    by_magic = shell.run_line_magic("influence", "fm --train FX Fy --test FXt Fyt --l2 0.01")
    inf = iw.Influence(ns["fm"], (data.X_train, data.y_train), l2=0.01, progress=False)
    by_explorer = iw.InfluenceExplorer(inf, x_test=ns["FXt"], y_test=ns["Fyt"], kind="tabular")
    assert by_explorer.display_data.feature_names == by_magic.display_data.feature_names
    assert by_explorer.display_data.feature_names == data.feature_names
    assert by_explorer.class_names == by_magic.class_names == data.class_names
    assert torch.equal(by_explorer.y_test, by_magic.y_test)
    shown = [
        [(i["index"], i["label"], i["pred"]) for i in ex.gallery] for ex in (by_explorer, by_magic)
    ]
    assert shown[0] == shown[1]
    unlabelled = iw.InfluenceExplorer(inf, x_test=ns["FXt"], kind="tabular")
    assert unlabelled.display_data.feature_names == data.feature_names
    missing = ns["Fyt"].where(ns["Fyt"].index != 2)
    with pytest.raises(ValueError, match=r"^y_test: the labels have missing values"):
        iw.InfluenceExplorer(inf, x_test=ns["FXt"], y_test=missing, kind="tabular")


def test_integer_categories_are_the_labels_themselves(shell, frame_variables):
    shell.user_ns.update(Iy=shell.user_ns["Fy"].cat.codes.astype("category"))
    shell.user_ns.update(Iyt=shell.user_ns["Fyt"].cat.codes.astype("category"))
    ex = shell.run_line_magic("influence", "fm --train FX Iy --test FXt Iyt --l2 0.01")
    assert ex.class_names == ["0", "1"] and torch.equal(ex.y_test, frame_variables.y_test)


@pytest.mark.parametrize(
    "line, message",
    [
        ("fm --train FX Fy --test FXt Fyt_other", r"^--test: yt: the training and test labels"),
        ("fm --train FX Fy --test FXt Fyt_codes", r"^--test: yt: the training and test labels"),
        ("fm --train FX Fy_nan --test FXt Fyt", r"^--train: y: the labels have missing values"),
        ("fm --train FX Fy --test FXt_shuffled Fyt", r"^--test: Xt: its columns differ"),
    ],
    ids=["other-categories", "codes-and-categorical", "missing-label", "other-columns"],
)
def test_pandas_labels_and_columns_that_do_not_match(shell, frame_variables, line, message):
    Fy, Fyt, FXt = (shell.user_ns[n] for n in ("Fy", "Fyt", "FXt"))
    shell.user_ns.update(
        Fyt_other=Fyt.cat.rename_categories(["a", "b"]),
        Fyt_codes=Fyt.cat.codes,
        Fy_nan=Fy.where(Fy.index != 0),  # one missing label, the same categories
        FXt_shuffled=FXt[FXt.columns[::-1]],
    )
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("influence", f"{line} --l2 0.01")


def test_image_shape_shows_flat_rows_as_images(shell, digits_variables):
    data, _ = digits_variables
    ex = shell.run_line_magic("influence", "m --train X y --test Xt yt --l2 0.01 --image-shape 8 8")
    assert ex.kind == "image" and ex.display_data.train[0].shape == (8, 8)
    assert ex.display_data.test.shape == (len(data.X_test), 8, 8)
    assert ex.display_data.item("test", 0)["png"].startswith(b"\x89PNG")
    ex = shell.run_line_magic(
        "influence", "m --train X y --test Xt yt --l2 0.01 --image-shape 8 8 1"
    )
    assert ex.display_data.train[0].shape == (8, 8)


def test_kind_image_on_flat_rows_says_to_pass_image_shape(shell, digits_variables):
    """Before, the explorer's "train_display: image data must be (n, H, W) ..., got items of
    shape (64,)" did not say how to fix it."""
    with pytest.raises(UsageError) as caught:
        shell.run_line_magic("influence", "m --train X y --test Xt yt --l2 0.01 --kind image")
    text = str(caught.value)
    assert text.startswith("--kind image: the inputs are flat rows of 64 values")
    assert "pass --image-shape H W" in text and text.endswith("here --image-shape 8 8")


@pytest.mark.parametrize(
    "option, message",
    [
        ("--image-shape 8 9", r"^--image-shape: 8 x 9 = 72 values per image, but X has shape \("),
        ("--image-shape 8", r"^--image-shape: pass H W or H W C"),
        ("--image-shape 8 0", r"^--image-shape: pass H W or H W C"),
        ("--image-shape 4 8 2", r"^--image-shape: C must be 1, 3 or 4"),
        ("--image-shape 8 8 --kind tabular", r"^--image-shape: .*drop --kind tabular"),
    ],
    ids=["product", "one-number", "zero", "two-channels", "kind-tabular"],
)
def test_a_bad_image_shape_is_named(shell, digits_variables, option, message):
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("influence", f"m --train X y --test Xt yt --l2 0.01 {option}")


def test_square_shape_hint():
    from influence_widgets.magic import square_shape_hint

    assert square_shape_hint(64) == ", here --image-shape 8 8"
    assert square_shape_hint(3 * 32 * 32) == ", here --image-shape 32 32 3"
    assert square_shape_hint(30) == ""


def test_magic_demo_with_methods_trains_what_they_need_in_the_background(shell):
    ex = shell.run_line_magic("influence", "--demo digits --methods influence,tracin,trak -k 4")
    names = [m["name"] for m in ex.methods]
    assert names[0] == "influence" and names[1].startswith("TracIn (")
    assert names[2] == "TRAK \u00d710"
    ex.wait_ready()
    deadline = time.time() + 120
    while any(m["state"] not in ("ready", "error") for m in ex.methods):
        assert time.time() < deadline, ex.methods
        time.sleep(0.1)
    assert [m["state"] for m in ex.methods] == ["ready"] * 3, ex.methods
    assert "TRAK: 10 model(s)" in ex.methods[2]["description"]
    ex.selected = 2
    ex.method = names[2]
    assert ex.panel["method"] == names[2] and len(ex.panel["helpful"]) == 4
    ex.influence_view = "compare"
    ex.compare_pair = ["influence", names[2]]
    assert "helpful and" in ex.compare["overlap"]["text"]


def test_magic_methods_errors_name_the_option(shell, digits_variables):
    cases = [
        ("--demo digits --methods influence,nope", "unknown method 'nope'"),
        ("--demo digits --methods tracin,trak", "include influence"),
        ("--demo digits --methods influence,influence", "each method once"),
        ("--demo fashion_attack --methods influence,trak", "--methods: not with --demo"),
        ("m --train X y --test Xt yt --l2 0.01 --methods influence,trak", "--methods: only with"),
    ]
    for line, message in cases:
        with pytest.raises(UsageError, match=re.escape(message)):
            shell.run_line_magic("influence", line)
