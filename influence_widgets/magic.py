"""The %influence line magic: ``%load_ext influence_widgets`` registers it.

Forms:
    %influence --demo digits            (also breast_cancer, fashion_mnist, fashion_attack)
    %influence --demo digits --methods influence,tracin,trak    (a method switch and Compare)
    %influence MODEL --train X y --test Xt yt [--l2 L] [--damping D|auto] [--hessian H]
               [--solver S] [-k K]
               [--kind KIND] [--image-shape H W [C]] [--class-names ...] [--feature-names ...]

Names are looked up in the user namespace, never evaluated as code: the line is not expanded either
(``{...}`` and ``$name`` stay as they are). The magic returns the explorer, so it shows as the cell's
output and ``ex = _`` keeps it.
"""

from __future__ import annotations

import argparse
import re

import numpy as np
import torch
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from influence_widgets import datasets, models
from influence_widgets.core.damping import AUTO, check_damping, ladder_text
from influence_widgets.core.hvp import EXACT, HESSIANS
from influence_widgets.core.influence import Influence
from influence_widgets.core.solvers import solver_names
from influence_widgets.demo_methods import METHOD_CHOICES, demo_methods, parse_methods
from influence_widgets.methods.checkpoints import CheckpointRecorder
from influence_widgets.training import train
from influence_widgets.widgets.explorer import InfluenceExplorer
from influence_widgets.widgets.inputs import NamedPoints, as_numpy, check_same_names, read_points
from influence_widgets.widgets.minimum import at_minimum
from influence_widgets.widgets.precompute import failure_message

__all__ = ["InfluenceMagics", "demo_explorer"]

DEMOS = ("digits", "breast_cancer", "fashion_mnist", "fashion_attack")

# The Attack tab's defaults per demo (eps in the sliders' units: 8-bit levels for images, standard
# deviations for breast_cancer's standardised features), chosen with benchmarks/demo_attacks.py
# (its JSON holds the numbers) so that on 10 random correctly classified test points at least 8
# flip, each clearly: the attack goes on after the flip until the new class leads the true one
# by 20 percentage points (attack_stop_margin), not a near tie. eps stays small enough that a
# poisoned digit still looks like its digit (64 of 255 levels; 255 would let any pixel take any
# value), which takes more poisoned images (200 of the 1,300 digits). At most 40 steps, so that a
# point that does not flip stops in seconds (the paper's 100 is the sliders' default elsewhere).
DEMO_ATTACK = {
    "digits": {
        "attack_n_poison": 200,
        "attack_eps": 64.0,
        "attack_max_iter": 40,
        "attack_stop_margin": 0.2,
    },
    "breast_cancer": {
        "attack_n_poison": 60,
        "attack_eps": 0.5,
        "attack_max_iter": 40,
        "attack_stop_margin": 0.2,
    },
    "fashion_mnist": {
        "attack_n_poison": 100,
        "attack_eps": 64.0,
        "attack_max_iter": 40,
        "attack_stop_margin": 0.2,
    },
    "fashion_attack": {
        "attack_n_poison": 20,
        "attack_eps": 32.0,
        "attack_max_iter": 40,
        "attack_stop_margin": 0.2,
    },
}
# The head of fashion_attack's frozen extractor (iw.models.fmnist_attack_model) and its L2, as in
# benchmarks/attack.py
FASHION_ATTACK_HEAD = ["1.weight", "1.bias"]
DEMO_L2 = 0.01


def demo_explorer(name: str, k: int = 8, solver: str = "auto", methods: list[str] | None = None):
    """Train the default model on a built-in data set and open the explorer on it.

    ``fashion_attack`` is the paper's attack setting (Sec 5.2) scaled down: Sandal vs Sneaker
    (``iw.datasets.sandal_sneaker``) on the shipped frozen Fashion-MNIST extractor, with
    influence over its logistic-regression top layer only.

    ``methods``: names from ``demo_methods.METHOD_CHOICES`` (influence among them) for a method
    switch and a Compare view (:mod:`~influence_widgets.demo_methods`: TracIn on the checkpoints
    of the demo model's own training, TRAK's extra models trained in the background); not for
    ``fashion_attack``, whose methods would need its frozen extractor handled apart.
    """
    if name not in DEMOS:
        raise UsageError(f"--demo: unknown data set {name!r}; choose one of {', '.join(DEMOS)}")
    if methods and name == "fashion_attack":
        raise UsageError(
            "--methods: not with --demo fashion_attack (influence over the top layer of a frozen "
            "extractor); use digits, breast_cancer or fashion_mnist"
        )
    recorder = None
    if name == "fashion_attack":
        data = datasets.sandal_sneaker()
        model = models.fmnist_attack_model()
        with torch.no_grad():  # the extractor is frozen: fit the head on its features
            features = model[0](data.X_train.to(torch.float64))
        train(model[1], (features, data.y_train), l2=DEMO_L2, progress=False)
        inf = Influence(
            model,
            (data.X_train, data.y_train),
            l2=DEMO_L2,
            params=FASHION_ATTACK_HEAD,
            solver=solver,
        )
    else:
        if name == "fashion_mnist":
            data = datasets.fashion_mnist(n_train=10_000, n_test=2_000)
        else:
            data = getattr(datasets, name)()
        model = models.logistic_regression(data)
        # TracIn's checkpoints come from this very training (saving them changes nothing in it)
        recorder = CheckpointRecorder(model) if methods and "tracin" in methods else None
        train(model, data, l2=DEMO_L2, recorder=recorder)
        inf = Influence(model, (data.X_train, data.y_train), l2=DEMO_L2, solver=solver)
    if methods:
        explorer = MagicExplorer(
            methods=demo_methods(methods, model, inf, recorder), data=data, k=k
        )
    else:
        explorer = MagicExplorer(inf, data, k=k)
    for trait, value in DEMO_ATTACK[name].items():
        setattr(explorer, trait, value)
    return explorer


def methods_option(text: str) -> list[str]:
    """``--methods``'s value as a list of names (:func:`~influence_widgets.demo_methods.
    parse_methods`); an argparse error naming the option otherwise."""
    try:
        return parse_methods(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--methods: ")) from err


class SolverChoices:
    """The names ``--solver`` accepts: "auto" and the registered solvers, read from the registry
    whenever argparse checks a value or formats the help (a solver registered later is in)."""

    def __contains__(self, name: object) -> bool:
        return name in solver_names()

    def __iter__(self):
        return iter(solver_names())


class MagicExplorer(InfluenceExplorer):
    """The explorer %influence opens: its advice is spelled as the magic's options."""

    def describe_failure(self, err: Exception) -> str:
        return in_magic_terms(failure_message(err))


def damping_option(text: str) -> float | str:
    """``--damping``'s value: "auto" or a number >= 0; else an argparse error naming the option
    (IPython raises it as a UsageError)."""
    try:
        return check_damping(AUTO if text == AUTO else float(text), "--damping")
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected auto or a number >= 0, got {text!r}; auto takes the smallest of "
            f"{ladder_text()} that makes the Hessian positive definite"
        ) from err


def in_magic_terms(text: str) -> str:
    """``text`` with the Python API's ``damping=D`` and ``hessian='H'`` spelled as the magic's
    ``--damping D`` and ``--hessian H``."""
    text = re.sub(
        r"build a new Influence with the damping it suggests \(.*?\) and open a new explorer "
        r"on it",
        "run %influence again with the --damping it suggests",
        text,
    )
    text = re.sub(r"\bhessian='([a-z-]+)'", r"--hessian \1", text)
    return re.sub(r"\bdamping=([0-9][0-9.eE+-]*)", r"--damping \1", text)


def in_option_terms(text: str, options: dict[str, str]) -> str:
    """An explorer error as the magic's: a message that starts with an argument the magic sets
    from an option starts with that option (``class_names: ...`` -> ``--class-names: ...``);
    any other is prefixed with ``%influence:``."""
    for name, option in options.items():
        if text.startswith(f"{name}:"):
            return option + text[len(name) :]
    return f"%influence: {text}"


def check_l2(influence, given: float) -> None:
    """A UsageError naming ``--l2`` when theta_hat is not a minimum of R with the given l2 but is
    one with another l2 (the l2 the model was trained with: a forgotten or wrong ``--l2``)."""
    found = at_minimum(influence)
    if found.likely_l2 is None:
        return
    likely = f"{found.likely_l2:.2g}"
    raise UsageError(
        f"--l2: the model looks trained with l2 = {likely} (the gradient of the training risk "
        f"vanishes there, but ||grad R|| = {found.grad_norm:.2g} with --l2 {given:g}); pass "
        f"--l2 {likely}"
    )


def read_tables(X, y, Xt, yt) -> tuple[NamedPoints, NamedPoints]:
    """The training and test points as arrays with their names, read as the explorer reads them
    (``widgets.inputs.read_points``): a UsageError naming the option when they cannot be read or
    the test points would mean other features or classes than the training points."""
    try:
        train = read_points(X, y, "--train: X", "--train: y")
        test = read_points(Xt, yt, "--test: Xt", "--test: yt")
        check_same_names(train, test)
    except ValueError as err:
        raise UsageError(str(err)) from err
    return train, test


def names_and_sources(
    args, columns: list[str] | None, categories: list[str] | None
) -> tuple[dict, dict[str, str]]:
    """The explorer's ``class_names`` and ``feature_names``: the options when given, else the
    categories of y and the columns of X (None when there are none); and where each of them and
    the test points came from, for the errors (see :func:`in_option_terms`)."""
    names = {
        "class_names": args.class_names or categories,
        "feature_names": args.feature_names or columns,
    }
    sources = {
        "class_names": "--class-names" if args.class_names else "--train: the categories of y",
        "feature_names": "--feature-names" if args.feature_names else "--train: the columns of X",
        "x_test": "--test: Xt",
        "y_test": "--test: yt",
    }
    return names, sources


def display_options(args, X, Xt) -> dict:
    """The explorer's ``kind`` and, with ``--image-shape``, its ``train_display`` and
    ``test_display``: the input rows reshaped to images."""
    kind = args.kind or ("image" if args.image_shape else "tabular")
    if args.image_shape is None:
        if kind == "image":
            check_not_flat(X)
        return {"kind": kind}
    if kind != "image":
        raise UsageError(f"--image-shape: shows the inputs as images; drop --kind {kind}")
    shape = check_image_shape(args.image_shape)
    return {
        "kind": "image",
        "train_display": as_images(X, shape, "X"),
        "test_display": as_images(Xt, shape, "Xt"),
    }


def check_image_shape(shape: list[int]) -> tuple[int, ...]:
    """``--image-shape`` as (H, W) or (H, W, C) with C in 1, 3, 4 (grey, RGB, RGBA)."""
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise UsageError(f"--image-shape: pass H W or H W C, positive integers, got {shape}")
    if len(shape) == 3 and shape[2] not in (1, 3, 4):
        raise UsageError(f"--image-shape: C must be 1, 3 or 4 (grey, RGB, RGBA), got {shape[2]}")
    return tuple(shape)


def as_images(X, shape: tuple[int, ...], name: str) -> np.ndarray:
    """The rows of ``X`` (n, H*W*C) as images (n, H, W[, C]); C = 1 shows as (n, H, W)."""
    rows = as_numpy(X)
    size = int(np.prod(shape))
    if rows.ndim != 2 or rows.shape[1] != size:
        raise UsageError(
            f"--image-shape: {' x '.join(map(str, shape))} = {size} values per image, but {name} "
            f"has shape {rows.shape}; pass H W [C] whose product is the number of columns"
        )
    images = rows.reshape(len(rows), *shape)
    return images[..., 0] if images.ndim == 4 and images.shape[3] == 1 else images


def check_not_flat(X) -> None:
    """A UsageError for ``--kind image`` on flat rows (n, d): they need ``--image-shape``."""
    shape = tuple(np.shape(X))
    if len(shape) != 2:
        return
    raise UsageError(
        f"--kind image: the inputs are flat rows of {shape[1]} values (X has shape {shape}); "
        f"pass --image-shape H W (or H W C) to show each row as an H x W image"
        f"{square_shape_hint(shape[1])}"
    )


def square_shape_hint(d: int) -> str:
    """``", here --image-shape S S"`` (or ``S S 3``) when ``d`` values make a square grey (or
    RGB) image; else ``""``."""
    for channels in ("", " 3"):
        side = round((d / (3 if channels else 1)) ** 0.5)
        if side * side * (3 if channels else 1) == d:
            return f", here --image-shape {side} {side}{channels}"
    return ""


def check_variable_name(name: str, what: str) -> None:
    """A UsageError unless ``name`` is a plain variable name (the magic never evaluates code)."""
    if not name.isidentifier():
        raise UsageError(
            f"{what} must be a variable name, got {name!r} (names are looked up in the "
            "notebook, never evaluated: assign the value to a variable first)"
        )


@magics_class
class InfluenceMagics(Magics):
    """Open an InfluenceExplorer from one line."""

    def _lookup(self, name: str, what: str):
        check_variable_name(name, what)
        if name not in self.shell.user_ns:
            raise UsageError(f"{what}: no variable named {name!r} in this notebook")
        return self.shell.user_ns[name]

    def _model_and_points(self, args) -> tuple[torch.nn.Module, NamedPoints, NamedPoints]:
        """MODEL and the training and test points of ``--train X y --test Xt [yt]``, looked up
        in the notebook and read as the explorer reads them (see :func:`read_tables`)."""
        model = self._lookup(args.model, "MODEL")
        if not isinstance(model, torch.nn.Module):
            raise UsageError(
                f"MODEL: {args.model!r} is a {type(model).__name__}, not a torch.nn.Module"
            )
        if len(args.test) > 2:
            raise UsageError(f"--test: takes Xt and optionally yt, got {len(args.test)} names")
        X, y = (self._lookup(n, "--train") for n in args.train)
        Xt, *rest = (self._lookup(n, "--test") for n in args.test)
        return (model, *read_tables(X, y, Xt, rest[0] if rest else None))

    @magic_arguments()
    @argument("model", nargs="?", help="name of a trained torch.nn.Module")
    @argument(
        "--demo",
        choices=DEMOS,
        help="train the default model on a built-in data set; fashion_attack is the paper's "
        "attack setting: Sandal vs Sneaker on a frozen extractor, influence over the top layer",
    )
    @argument(
        "--methods",
        type=methods_option,
        metavar="M1,M2,...",
        help="with --demo: attribution methods to switch between and compare, comma-separated "
        f"from {', '.join(METHOD_CHOICES)}, influence among them (e.g. influence,tracin,trak); "
        "the models TRAK needs are trained in the background",
    )
    @argument("--train", nargs=2, metavar=("X", "y"), help="names of the training inputs, labels")
    @argument(
        "--test",
        nargs="+",
        metavar=("Xt", "yt"),
        help="names of the test inputs and, if known, labels (without yt each test point is "
        "explained for its predicted class)",
    )
    @argument(
        "--l2",
        type=float,
        default=0.0,
        help="the L2 coefficient the model was trained with, the same as iw.train's l2 "
        "(default: %(default)g)",
    )
    @argument(
        "--damping",
        type=damping_option,
        default=AUTO,
        metavar="D",
        help="a number added to the Hessian's diagonal, or auto: the smallest of "
        f"{ladder_text()} that makes it positive definite (0 when it is: a model at a minimum); "
        "the explorer says which (default: %(default)s)",
    )
    @argument(
        "--hessian",
        default=EXACT,
        choices=HESSIANS,
        help="exact (the Hessian of the training risk, as the paper) or gauss-newton (its "
        "Gauss-Newton matrix, positive semi-definite wherever the model is; --solver ekfac "
        "always uses it) (default: %(default)s)",
    )
    @argument(
        "--solver",
        default="auto",
        choices=SolverChoices(),
        metavar="SOLVER",
        help="the inverse-HVP solver, one of %(choices)s (default: %(default)s); "
        "iw.core.available_solvers() describes each",
    )
    @argument(
        "--kind",
        help="image, tabular or text: how points are shown (default: tabular), image with "
        "--image-shape",
    )
    @argument("-k", type=int, default=8, help="helpful and harmful points to show (default: 8)")
    @argument(
        "--class-names",
        nargs="+",
        metavar="NAME",
        help="one name per class, in label order (default: 0, 1, ...)",
    )
    @argument(
        "--feature-names",
        nargs="+",
        metavar="NAME",
        help="one name per input column (default: x0, x1, ...)",
    )
    @argument(
        "--image-shape",
        nargs="+",
        type=int,
        metavar="N",
        help="H W or H W C: show each input row of H*W*C values as an H x W image",
    )
    @no_var_expand
    @line_magic
    def influence(self, line: str):
        """Open the influence explorer on a demo or on your own model and data.

        Examples::

            %load_ext influence_widgets
            %influence --demo digits
            %influence --demo digits --methods influence,tracin,trak
            %influence model --train X_train y_train --test X_test y_test --l2 0.01
            %influence model --train X y --test Xt yt --l2 0.01 --image-shape 8 8 -k 5
            %influence model --train X y --test Xt yt --l2 0.01 --class-names cat dog
            %influence model --train X y --test Xt yt --feature-names age height weight
            ex = _    # the explorer, to use from Python (ex.selected, ex.results())

        MODEL, X, y, Xt, yt are names of variables in the notebook (tensors, arrays or pandas
        objects), never expressions. Train the model to a minimum with the same l2 first, e.g.
        ``iw.train(model, (X, y), l2=0.01)`` and then ``--l2 0.01``: influence assumes the
        trained parameters minimise the training risk with that l2. Defaults: --l2 0 (no L2
        term), --damping auto, --hessian exact, --solver auto, --kind tabular, -k 8.

        Names: a pandas DataFrame X names the features by its columns, and a pandas categorical
        y with named categories names the classes (its codes are the labels; y and yt must
        share the categories). --feature-names and --class-names take precedence.

        Images: inputs of shape (n, H, W) or (n, H, W, C) show with --kind image; flattened rows
        (n, H*W*C) with --image-shape H W [C] (e.g. 8 8 for digits' 64 columns, 28 28 3 for
        colour), which implies --kind image.
        """
        first = line.split(None, 1)[0] if line.strip() else "-"
        if not first.startswith("-"):  # MODEL: before argparse, which would split "{a b}"
            check_variable_name(first, "MODEL")
        try:
            args = parse_argstring(self.influence, line)
        except UsageError:
            raise
        except SystemExit as err:  # argparse's own exit on a bad option
            raise UsageError(f"%influence: could not parse {line!r}; see %influence?") from err
        if args.k < 1:
            raise UsageError(f"-k: must be a positive integer, got {args.k}")
        if args.demo:
            if args.model or args.train or args.test:
                raise UsageError("--demo: takes no model, --train or --test")
            return demo_explorer(args.demo, k=args.k, solver=args.solver, methods=args.methods)
        if args.methods:
            raise UsageError(
                "--methods: only with --demo; for your own model build the methods in Python and "
                "pass them: iw.InfluenceExplorer(methods={'influence': inf, 'TRAK': trak}, ...)"
            )
        if not (args.model and args.train and args.test):
            raise UsageError(
                "%influence: give --demo NAME, or MODEL --train X y --test Xt yt (see %influence?)"
            )
        model, train, test = self._model_and_points(args)
        names, sources = names_and_sources(args, train.feature_names, train.class_names)
        shown = display_options(args, train.X, test.X)
        try:
            inf = Influence(
                model,
                (train.X, train.y),
                l2=args.l2,
                damping=args.damping,
                hessian=args.hessian,
                solver=args.solver,
            )
            check_l2(inf, args.l2)
            return MagicExplorer(inf, x_test=test.X, y_test=test.y, k=args.k, **shown, **names)
        except (TypeError, ValueError) as err:
            raise UsageError(in_option_terms(in_magic_terms(str(err)), sources)) from err
