"""Exercise 5: which training points really made this prediction? Three attribution methods
against retraining, on a linear model and on a small network.

:func:`setup` trains, on the same 300 digits, a logistic regression to its minimum (convex, L2)
and a 64-32-10 ReLU network with a few epochs of Adam (as practitioners train: it stops far from a
minimum), saving checkpoints of both for TracIn. The student predicts which method will agree
best with retraining on each (:func:`check_prediction`: recorded, judged only after the
measurement), scores influence functions, Grad-Dot and TracIn and measures each one's linear
datamodeling score with its noise floor on one set of retrains per model
(:func:`check_measurement`, which compares every number with its own computation), names the
method that agreed best on each model (:func:`check_best`) and picks the statements that explain
the difference (:func:`check_reasons`). Every verdict of the last two steps is taken from the
student's own measured values (:func:`best_methods`, :func:`judge_reasons`), never from expected
ones.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial

import numpy as np
import torch
import torch.nn.functional as F

from influence_widgets.analysis.lds import (
    MIN_SUBSETS,
    LDSResult,
    SubsetRetrain,
    TrainFromScratch,
    draw_subsets,
    mean_and_se,
    reinitialise,
)
from influence_widgets.core.errors import check_positive_int, check_seed
from influence_widgets.core.influence import Influence, InfluenceWarning
from influence_widgets.core.losses import resolve_loss
from influence_widgets.datasets import digits
from influence_widgets.exercises.feedback import (
    AnswerError,
    CheckResult,
    answer_tensor,
    as_letters,
    check_answer,
    close,
    not_yet,
    passed,
)
from influence_widgets.methods import CheckpointRecorder, GradDot, TracIn
from influence_widgets.models import logistic_regression
from influence_widgets.training import train

__all__ = [
    "FIRST_ORDER",
    "METHODS",
    "MODELS",
    "REASONS",
    "TOPICS",
    "AdamTraining",
    "ComparedModel",
    "Setup",
    "Verdict",
    "best_methods",
    "check_best",
    "check_measurement",
    "check_prediction",
    "check_reasons",
    "fit_report",
    "is_ahead",
    "judge_reasons",
    "paired_difference",
    "setup",
]

METHODS = {
    "influence": "influence functions (iw.Influence): the Hessian of the training risk at the "
    "trained parameters, -grad L(z_test)^T H^-1 grad l_i / n",
    "grad-dot": "Grad-Dot (iw.GradDot): the dot product of the two loss gradients at the "
    "trained parameters, no Hessian",
    "tracin": "TracIn (iw.TracIn): learning rate x the gradient dot product, summed over "
    "checkpoints saved during training",
}
NAMES = {"influence": "influence functions", "grad-dot": "Grad-Dot", "tracin": "TracIn"}
FIRST_ORDER = ("grad-dot", "tracin")  # the methods without a Hessian
MODELS = ("linear", "network")
ALIASES = {
    "influence": "influence",
    "influences": "influence",
    "influencefunction": "influence",
    "influencefunctions": "influence",
    "if": "influence",
    "graddot": "grad-dot",
    "tracin": "tracin",
}

N_TRAIN, N_TEST = 300, 40
SUBSETS, FRACTION, SEED = 25, 0.5, 0
LINEAR_L2 = 0.01
HIDDEN = 32
TIE_SE = 2.0  # a method is ahead of another when their paired LDS difference exceeds 2 SE
NEAR_FLOOR = 0.05  # "as well as retraining agrees with itself": LDS within this of the floor
FLOOR_WELL_BELOW_ONE = 0.8  # a noise floor at most this is "well below 1"
SCORE_RTOL = 1e-6  # scores computed as the checker does agree to round-off
OUTPUT_RTOL = 1e-5  # one retrain, repeated with the same recipe, subset and seed

REASONS = {
    "A": "The linear model's training risk is convex and the model was trained to its minimum, "
    "where the quadratic expansion behind influence functions is nearly exact: that is why "
    "they agree with retraining there almost as well as retraining agrees with itself, ahead "
    "of the methods without a Hessian.",
    "B": "The network was trained with a few epochs of Adam and stopped far from a minimum, so "
    "an expansion at its final parameters describes retraining less well; TracIn, which sums "
    "over checkpoints along the training path, follows what training did and agrees with "
    "retraining better than influence functions there.",
    "C": "Retraining the network on the same subset with another seed gives other outputs (its "
    "noise floor is well below 1), so on the network no method could reach an LDS near 1, "
    "however good.",
    "D": "The network has too many parameters for its Hessian to be computed, so influence "
    "functions had to approximate it, and that is what went wrong.",
    "E": "A method that uses no Hessian (Grad-Dot, TracIn) can never agree with retraining "
    "better than influence functions.",
    "F": "The damping added to the network's Hessian is what spoils influence functions there: "
    "without it they would agree with retraining as well as on the linear model.",
}
# What to reread for a statement that holds but was not picked (never which letter it is).
TOPICS = {
    "A": "where the linear model was trained to",
    "B": "how the network was trained and what TracIn follows",
    "C": "the noise floors",
    "D": "how the network's Hessian was computed",
    "E": "what the methods without a Hessian measured",
    "F": "the damping",
}


# ----- the two models ----------------------------------------------------------------------------
@dataclass(frozen=True)
class AdamTraining:
    """How the network is trained, and the ``train_fn(model_factory, X, y, seed)`` that retrains
    it for :func:`~influence_widgets.lds`: re-initialise under ``seed``
    (:func:`~influence_widgets.analysis.lds.reinitialise`), then ``epochs`` epochs of Adam
    (learning rate ``lr``, torch's coupled ``weight_decay``, i.e. the gradient of
    (weight_decay/2)||theta||^2 added) on mini-batches of ``batch_size``, shuffled by a
    generator seeded ``seed``. The mean cross-entropy of each batch is minimised."""

    epochs: int = 5
    lr: float = 1e-2
    weight_decay: float = 1e-4
    batch_size: int = 32

    def __call__(
        self,
        model_factory: Callable[[], torch.nn.Module],
        X: torch.Tensor,
        y: torch.Tensor,
        seed: int,
    ) -> torch.nn.Module:
        return self.fit(reinitialise(model_factory(), seed), X, y, seed)

    def fit(
        self,
        model: torch.nn.Module,
        X: torch.Tensor,
        y: torch.Tensor,
        seed: int,
        recorder: CheckpointRecorder | None = None,
    ) -> torch.nn.Module:
        """Train ``model`` in place from where it stands; with a ``recorder``, save a checkpoint
        after every epoch with the learning rate. Returns the model, in eval mode."""
        opt = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        order = torch.Generator().manual_seed(int(seed))
        model.train()
        for _ in range(self.epochs):
            for idx in torch.randperm(len(X), generator=order).split(self.batch_size):
                opt.zero_grad()
                F.cross_entropy(model(X[idx]), y[idx]).backward()
                opt.step()
            if recorder is not None:
                recorder.save(lr=self.lr)
        return model.eval()

    def __str__(self) -> str:
        return (
            f"{self.epochs} epochs of Adam (learning rate {self.lr:g}, weight decay "
            f"{self.weight_decay:g}, shuffled batches of {self.batch_size})"
        )


NETWORK_TRAINING = AdamTraining()


@dataclass(frozen=True, eq=False)
class ComparedModel:
    """One of the two models: the trained ``model``, the ``l2`` its training risk carries (the
    value for ``iw.Influence``), its ``checkpoints`` (for ``iw.TracIn``), the ``train_fn`` that
    retrains it as it was trained (for ``iw.lds``) and that recipe in words."""

    name: str
    model: torch.nn.Module
    l2: float
    checkpoints: CheckpointRecorder
    train_fn: Callable
    recipe: str

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def __repr__(self) -> str:
        return (
            f"{self.name}: {self.n_params:,} parameters, {self.recipe}; l2 = {self.l2:g}; "
            f"{len(self.checkpoints)} checkpoints"
        )


@dataclass(frozen=True, eq=False)
class Setup:
    """The exercise's data, its two trained models and the LDS settings every measurement uses:
    ``subsets`` random subsets of a ``fraction`` of the training points, drawn with ``seed``."""

    X: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    linear: ComparedModel
    network: ComparedModel
    subsets: int
    fraction: float
    seed: int

    @property
    def train(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training set (X, y)."""
        return self.X, self.y

    def compared(self, name: str) -> ComparedModel:
        """The model called ``name``: "linear" or "network"."""
        if name not in MODELS:
            raise ValueError(f"model: expected one of {', '.join(MODELS)}, got {name!r}")
        return self.linear if name == "linear" else self.network

    def __repr__(self) -> str:
        return "\n".join(
            [
                f"{len(self.y)} training digits, {len(self.y_test)} test digits",
                repr(self.linear),
                repr(self.network),
                f"LDS: {self.subsets} subsets of {self.fraction:g} of the training set, "
                f"seed {self.seed}",
            ]
        )


def _network() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(64, HIDDEN, dtype=torch.float64),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, 10, dtype=torch.float64),
    )


def setup(
    n_train: int = N_TRAIN, n_test: int = N_TEST, subsets: int = SUBSETS, seed: int = SEED
) -> Setup:
    """Train the two models on ``n_train`` digits (``iw.datasets.digits(n_train=...)``) and keep
    the first ``n_test`` test digits; every LDS of the exercise uses ``subsets`` subsets of half
    the training set drawn with ``seed``. Seeded: the same call gives the same models."""
    n_train = check_positive_int(n_train, "n_train")
    n_test = check_positive_int(n_test, "n_test")
    subsets = check_positive_int(subsets, "subsets")
    if subsets < MIN_SUBSETS:
        raise ValueError(f"subsets: at least {MIN_SUBSETS}, got {subsets}")
    seed = check_seed(seed)
    data = digits(n_train=n_train)
    X, y = data.X_train.double(), data.y_train
    x_test, y_test = data.X_test[:n_test].double(), data.y_test[:n_test]

    linear_model = logistic_regression(data)
    linear_checkpoints = CheckpointRecorder(linear_model)
    train(linear_model, (X, y), l2=LINEAR_L2, progress=False, recorder=linear_checkpoints)
    linear = ComparedModel(
        "linear",
        linear_model,
        LINEAR_L2,
        linear_checkpoints,
        TrainFromScratch(LINEAR_L2, "cross_entropy"),
        "logistic regression trained by iw.train (L-BFGS) to the minimum of its training risk",
    )

    network_model = reinitialise(_network(), 0)
    network_checkpoints = CheckpointRecorder(network_model)
    NETWORK_TRAINING.fit(network_model, X, y, 0, recorder=network_checkpoints)
    network = ComparedModel(
        "network",
        network_model,
        NETWORK_TRAINING.weight_decay,
        network_checkpoints,
        NETWORK_TRAINING,
        f"64-{HIDDEN}-10 ReLU network trained with {NETWORK_TRAINING}",
    )
    return Setup(X, y, x_test, y_test, linear, network, subsets, FRACTION, seed)


# ----- the checker's own computation ------------------------------------------------------------
@lru_cache(maxsize=4)
def _methods(exercise: Setup, name: str) -> dict:
    """The three methods on model ``name``, fitted once per setup."""
    case = exercise.compared(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InfluenceWarning)
        methods = {
            "influence": Influence(case.model, exercise.train, l2=case.l2, progress=False),
            "grad-dot": GradDot(case.model, exercise.train, progress=False),
            "tracin": TracIn(case.model, exercise.train, case.checkpoints, progress=False),
        }
        for method in methods.values():
            method.fit()
    return methods


@lru_cache(maxsize=4)
def _scores(exercise: Setup, name: str) -> dict[str, torch.Tensor]:
    """Each method's scores of the test points, float64 on the CPU."""
    x, y = exercise.x_test, exercise.y_test
    return {m: s.scores(x, y).detach().double().cpu() for m, s in _methods(exercise, name).items()}


def _retrained_output(exercise: Setup, model: torch.nn.Module, train_fn, result: LDSResult):
    """The margins on the test points of one retrain: ``result``'s first subset and seed."""
    retrain = SubsetRetrain(
        train_fn,
        partial(copy.deepcopy, model),
        exercise.X,
        exercise.y,
        exercise.x_test,
        torch.as_tensor(result.labels),
        "margin",
        resolve_loss("cross_entropy"),
    )
    return retrain(result.indices(0), int(result.seeds[0, 0]))


# ----- reading the answers ------------------------------------------------------------------------
def _method_name(answer, name: str) -> str:
    if answer is ...:
        raise AnswerError(
            f"`{name}` is not filled in yet: replace the `...` with the name of a method, one "
            f"of {', '.join(METHODS)}."
        )
    if not isinstance(answer, str):
        raise AnswerError(
            f"`{name}` should be the name of a method as a string, one of "
            f"{', '.join(METHODS)}; got a {type(answer).__name__}."
        )
    key = ALIASES.get(re.sub(r"[^a-z]", "", answer.lower()))
    if key is None:
        raise AnswerError(
            f"`{name}` names {answer!r}, which is not one of the methods compared: "
            f"{', '.join(METHODS)}."
        )
    return key


def _per_method(answer, name: str, holds: str) -> dict:
    """``answer`` as a dict with exactly the keys of METHODS (``holds``: what each value is)."""
    if answer is ...:
        raise AnswerError(
            f"`{name}` is not filled in yet: replace the `...` with your computation."
        )
    if not isinstance(answer, Mapping):
        raise AnswerError(
            f"`{name}` should be a dict from each method's name ({', '.join(METHODS)}) to "
            f"{holds}; got a {type(answer).__name__}."
        )
    unknown = [k for k in answer if k not in METHODS]
    if unknown:
        raise AnswerError(
            f"`{name}` has the key {unknown[0]!r}, which is not a method's name; use "
            f"{', '.join(METHODS)}."
        )
    missing = [k for k in METHODS if k not in answer]
    if missing:
        raise AnswerError(f"`{name}` has no entry for `{missing[0]}`: measure all three methods.")
    return {m: answer[m] for m in METHODS}


def _score_matrix(answer, name: str, method: str, T: int, n: int) -> torch.Tensor:
    """The ``method`` entry of the answer ``name`` as a float64 (T, n) tensor; a typical wrong
    shape gets its reason."""
    t = answer_tensor(answer, name, f"a dict of tensors of shape ({T}, {n})")
    label = f"the `{method}` entry of `{name}`"
    shape = tuple(t.shape)
    if t.dtype == torch.bool:
        raise AnswerError(f"{label} holds True/False values; it should hold scores (numbers).")
    if shape == (n, T) and T != n:
        raise AnswerError(
            f"{label} has shape {shape}: it is transposed. Scores have one row per test point "
            f"and one column per training point, ({T}, {n})."
        )
    if shape in {(n,), (1, n)}:
        raise AnswerError(
            f"{label} has shape {shape}: the scores of one test point. Score all {T} test "
            f"points at once: ({T}, {n})."
        )
    if shape in {(T,), (T, 1)}:
        raise AnswerError(
            f"{label} has shape {shape}: one number per test point. The LDS needs one score "
            f"per training point for every test point: ({T}, {n})."
        )
    if shape != (T, n):
        raise AnswerError(f"{label} has shape {shape} but should have shape ({T}, {n}).")
    t = t.to(torch.float64)
    if not torch.isfinite(t).all():
        raise AnswerError(f"{label} contains NaN or infinite values.")
    return t


def _positive_multiple(value: torch.Tensor, reference: torch.Tensor) -> bool:
    """Each row of ``value`` a positive multiple of the same row of ``reference``: the same
    rankings and the same LDS."""
    norms = (reference * reference).sum(1)
    if bool((norms == 0).any()):
        return False
    c = (value * reference).sum(1) / norms
    return bool((c > 0).all()) and close(value, c[:, None] * reference, SCORE_RTOL)


def _score_mistake(value: torch.Tensor, method: str, exercise: Setup, name: str) -> str | None:
    """None when ``value`` are ``method``'s scores on model ``name`` (or a positive multiple of
    them, which leaves the LDS as it is); else what went wrong."""
    own = _scores(exercise, name)
    if close(value, own[method], SCORE_RTOL) or _positive_multiple(value, own[method]):
        return None
    label = f"the `{method}` entry of `scores_{name}`"
    if close(value, -own[method], SCORE_RTOL):
        return (
            f"{label} has the wrong sign. The contract of every method: positive means "
            "helpful, i.e. removing the training point would raise the test loss."
        )
    if method == "influence" and _positive_multiple(-value, own[method]):
        return (
            f"{label} is the influence of upweighting a point, I_up,loss, whose sign is the "
            "opposite of a removal effect. The scores must say what removing each point would "
            "do (positive: helpful)."
        )
    for other in METHODS:
        if other != method and close(value, own[other], SCORE_RTOL):
            return f"{label} holds the scores of {NAMES[other]}: check which method you scored."
    fitted = _methods(exercise, name)[method]
    predicted = fitted.scores(exercise.x_test).detach().double().cpu()
    if close(value, predicted, SCORE_RTOL):
        return (
            f"{label} explains the classes the model predicts, not the labels `y_test`: "
            "the LDS measures the margin of the true label, so score that label."
        )
    other_model = "network" if name == "linear" else "linear"
    if close(value, _scores(exercise, other_model)[method], SCORE_RTOL):
        return f"{label} holds the scores of the {other_model} model, not of the {name} model."
    how = {
        "influence": "build it on this model and training set, with the L2 coefficient that "
        "the model's training risk carries (its `l2`), and leave the damping automatic",
        "grad-dot": "build it on this model and training set",
        "tracin": "build it on this model and training set with this model's checkpoints",
    }
    return f"{label} does not match {NAMES[method]} of the {name} model: {how[method]}."


def _check_setup(value) -> None:
    if not isinstance(value, Setup):
        raise AnswerError(
            f"setup: expected what which_method.setup() returns, got {type(value).__name__}"
        )


def _results(answer, name: str) -> dict[str, LDSResult]:
    results = _per_method(answer, name, "its LDSResult")
    for m, r in results.items():
        if not isinstance(r, LDSResult):
            raise AnswerError(
                f"the `{m}` entry of `{name}` should be an LDSResult (what iw.lds or "
                f"LDSResult.rescore returns), got a {type(r).__name__}."
            )
    return results


def _measured(answer, name: str, exercise: Setup) -> dict[str, LDSResult]:
    """``answer`` as three LDS results of the exercise's kind on one set of retrains, with a noise
    floor; else an AnswerError naming what differs."""
    results = _results(answer, name)
    for m, r in results.items():
        where = f"the `{m}` entry of `{name}`"
        if r.cancelled:
            raise AnswerError(f"{where} comes from a cancelled run: let the retrains finish.")
        if r.output != "margin":
            raise AnswerError(
                f"{where} measures the test loss (output='loss'). This exercise compares the "
                "margin log p(y|x) - log(1 - p(y|x)) of every retrained model, as TRAK and "
                "dattri do: keep the default output."
            )
        if r.rerun is None:
            raise AnswerError(
                f"{where} has no noise floor (it was run with noise_floor=False). Without it "
                "you cannot tell how much of a low LDS is the retraining's own randomness: "
                "measure it."
            )
    first = results["influence"]
    for m, r in results.items():
        shared = (
            r.masks.shape == first.masks.shape
            and np.array_equal(r.masks, first.masks)
            and np.array_equal(r.seeds, first.seeds)
            and np.array_equal(r.actual, first.actual)
        )
        if not shared:
            raise AnswerError(
                f"the `{m}` entry of `{name}` was measured on other retrains than the `influence`"
                " entry. Retrain once per model and score every method against those same "
                "retrains (LDSResult.rescore); otherwise the differences between methods mix in "
                "the retraining's randomness, and the work triples."
            )
    n, T = len(exercise.y), len(exercise.y_test)
    if first.masks.shape[1] != n:
        raise AnswerError(
            f"`{name}` was measured on {first.masks.shape[1]} training points, not on the "
            f"{n} of `setup.train`."
        )
    labels = np.asarray(first.labels)
    if labels.shape != (T,) or not np.array_equal(labels, exercise.y_test.numpy()):
        raise AnswerError(
            f"`{name}` was measured on other test points or labels than `x_test`, `y_test` "
            f"({T} test digits with their true labels)."
        )
    if first.n_subsets != exercise.subsets:
        raise AnswerError(
            f"`{name}` retrained {first.n_subsets} subsets; this exercise uses "
            f"`setup.subsets` ({exercise.subsets}) so that it stays quick and every "
            "measurement uses the same retrains."
        )
    size = round(exercise.fraction * n)
    masks, seeds = draw_subsets(n, exercise.subsets, size, exercise.seed)
    if not (np.array_equal(first.masks, masks) and np.array_equal(first.seeds, seeds)):
        raise AnswerError(
            f"`{name}` was retrained on other subsets than the exercise's: pass the subset "
            "count, fraction and seed that `setup` gives, so that the measurement is the one "
            "the exercise was checked on."
        )
    return results


def _retrain_mistake(first: LDSResult, exercise: Setup, name: str) -> str | None:
    """None when the first retrain of ``first`` is what model ``name``'s recipe gives; else what
    the retrains were instead."""
    case = exercise.compared(name)
    mine = _retrained_output(exercise, case.model, case.train_fn, first)
    if np.allclose(first.actual[0], mine, rtol=OUTPUT_RTOL, atol=1e-8):
        return None
    other = exercise.compared("network" if name == "linear" else "linear")
    tried = [
        (
            other.model,
            other.train_fn,
            f"`lds_{name}` retrained the {other.name} model, as it was trained, not the {name} "
            "model.",
        )
    ]
    if name == "network":
        default = TrainFromScratch(case.l2, "cross_entropy")
        default_words = (
            f"`lds_{name}` retrained the network with iw.lds's default recipe (L-BFGS to a "
            "minimum of the training risk), not the way the network was trained. The LDS asks "
            "whether a method predicts what retraining does, so retrain each model as it was "
            "trained: pass its `train_fn`."
        )
        tried.insert(0, (case.model, default, default_words))
    for model, recipe, mistake in tried:
        theirs = _retrained_output(exercise, model, recipe, first)
        if np.allclose(first.actual[0], theirs, rtol=OUTPUT_RTOL, atol=1e-8):
            return mistake
    return (
        f"the retrains in `lds_{name}` are not those of the {name} model: retrain its own "
        "model (or its Influence) on `setup.train` with its `train_fn`."
    )


def _scored_from(result: LDSResult, matrices: dict[str, torch.Tensor]) -> str | None:
    """The method whose scores ``result``'s predictions g_j(z) were computed from, or None."""
    for method, value in matrices.items():
        if close(result.predicted, result.masks.astype(np.float64) @ value.numpy().T, 1e-8):
            return method
    return None


def _lds_table(results: dict[str, LDSResult]) -> str:
    first = results["influence"]
    rows = [f"| {NAMES[m]} | {r.mean:.3f} ± {r.se:.3f} |" for m, r in results.items()]
    return "\n".join(
        [
            "",
            "",
            "| method | LDS (mean ± standard error) |",
            "| --- | --- |",
            *rows,
            f"| *noise floor* | {first.noise_floor:.3f} ± {first.noise_floor_se:.3f} |",
        ]
    )


# ----- the checks ---------------------------------------------------------------------------------
def check_prediction(predict_linear, predict_network) -> CheckResult:
    """Record the prediction: the method (a key of :data:`METHODS`) expected to agree best with
    retraining on each model. Judged only after the measurement, in :func:`check_best`."""

    def check() -> CheckResult:
        linear = _method_name(predict_linear, "predict_linear")
        network = _method_name(predict_network, "predict_network")
        return passed(
            f"prediction recorded: {NAMES[linear]} on the linear model, {NAMES[network]} on the "
            "network. Now measure."
        )

    return check_answer(check)


def check_measurement(scores, results, setup: Setup, model: str) -> CheckResult:
    """Check the scores (dict method -> (T, n)) and the LDS results (dict method -> LDSResult) of
    ``model`` ("linear" or "network") against the checker's own computation: the same methods on
    the same model, one set of the exercise's retrains (one of them repeated here), margins, a
    noise floor, and each result computed from the student's scores of its method."""

    def check() -> CheckResult:
        _check_setup(setup)
        if model not in MODELS:
            raise AnswerError(f"model: expected one of {', '.join(MODELS)}, got {model!r}")
        T, n = len(setup.y_test), len(setup.y)
        given = _per_method(scores, f"scores_{model}", f"its ({T}, {n}) scores")
        matrices = {m: _score_matrix(s, f"scores_{model}", m, T, n) for m, s in given.items()}
        for m, value in matrices.items():
            mistake = _score_mistake(value, m, setup, model)
            if mistake:
                return not_yet(mistake)
        measured = _measured(results, f"lds_{model}", setup)
        mistake = _retrain_mistake(measured["influence"], setup, model)
        if mistake:
            return not_yet(mistake)
        for m, r in measured.items():
            source = _scored_from(r, matrices)
            if source != m:
                what = (
                    f"from your scores of {NAMES[source]}"
                    if source
                    else f"from your `scores_{model}` of that method"
                )
                return not_yet(
                    f"the `{m}` entry of `lds_{model}` was not computed {what}: score each "
                    "method's own scores against the shared retrains."
                )
        return passed(
            f"the {model} model: every method scored and measured as the checker does, on "
            f"{setup.subsets} retrains of half the training set (and {setup.subsets} more "
            f"with other seeds for the noise floor).{_lds_table(measured)}"
        )

    return check_answer(check)


def paired_difference(a: LDSResult, b: LDSResult) -> tuple[float, float]:
    """The mean over the test points of LDS_a(z) - LDS_b(z), and its standard error: the paired
    comparison of two methods scored on the same retrains."""
    return mean_and_se(np.asarray(a.per_test) - np.asarray(b.per_test))


def is_ahead(a: LDSResult, b: LDSResult) -> bool:
    """Method a agrees with retraining better than b: their paired LDS difference is positive
    and larger than :data:`TIE_SE` standard errors."""
    diff, se = paired_difference(a, b)
    return bool(diff > (TIE_SE * se if np.isfinite(se) else 0.0))


def best_methods(results: Mapping[str, LDSResult]) -> set[str]:
    """The methods that agreed best with retraining: the one with the highest mean LDS and every
    one not clearly behind it (:func:`is_ahead`)."""
    top = max(results, key=lambda m: results[m].mean)
    return {m for m in results if m == top or not is_ahead(results[top], results[m])}


def check_best(
    best_linear,
    best_network,
    predict_linear,
    predict_network,
    lds_linear,
    lds_network,
    setup: Setup,
) -> CheckResult:
    """Check the method named as agreeing best with retraining on each model against the
    student's measurements (:func:`best_methods`), and compare with the prediction."""

    def check() -> CheckResult:
        picks = {
            "linear": _method_name(best_linear, "best_linear"),
            "network": _method_name(best_network, "best_network"),
        }
        _check_setup(setup)
        measured = {
            "linear": _measured(lds_linear, "lds_linear", setup),
            "network": _measured(lds_network, "lds_network", setup),
        }
        for name, pick in picks.items():
            results = measured[name]
            best = best_methods(results)
            if pick in best:
                continue
            if pick == min(results, key=lambda m: results[m].mean):
                return not_yet(
                    f"`best_{name}` names the method with the lowest LDS on the {name} model. "
                    "A higher LDS means the method's predictions rank the retrained models "
                    "more as retraining does."
                )
            return not_yet(
                f"`best_{name}` is not the method that agreed best on the {name} model: another "
                "method's LDS is ahead of it by more than twice the standard error of their "
                f"difference. Compare the means and standard errors in `lds_{name}`."
            )
        predicted = {
            "linear": _method_name(predict_linear, "predict_linear"),
            "network": _method_name(predict_network, "predict_network"),
        }
        lines = []
        for name in MODELS:
            best = best_methods(measured[name])
            tie = (
                f" ({' and '.join(NAMES[m] for m in sorted(best))} are within twice the "
                "standard error of their difference: either counts)"
                if len(best) > 1
                else ""
            )
            guess = predicted[name]
            verdict = (
                "as you predicted"
                if guess in best
                else f"you predicted {NAMES[guess]}, and measuring said otherwise"
            )
            lines.append(f"on the {name} model, {NAMES[picks[name]]}{tie}: {verdict}.")
        return passed(" ".join(s[0].upper() + s[1:] for s in lines))

    return check_answer(check)


@dataclass(frozen=True)
class Verdict:
    """Whether a statement of :data:`REASONS` holds in a measurement, and why (or why not)."""

    holds: bool
    why: str


def judge_reasons(lds_linear, lds_network, setup: Setup) -> dict[str, Verdict]:
    """Each statement of :data:`REASONS` judged against the measured LDS results of the two
    models (dicts method -> LDSResult, as :func:`check_measurement` accepts) and what fitting
    influence functions on them reported (their Hessians, the damping)."""
    _check_setup(setup)
    linear = _measured(lds_linear, "lds_linear", setup)
    network = _measured(lds_network, "lds_network", setup)
    inf_lin, floor_lin = linear["influence"].mean, linear["influence"].noise_floor
    floor_net = network["influence"].noise_floor
    near = inf_lin >= floor_lin - NEAR_FLOOR
    lin_ahead = all(is_ahead(linear["influence"], linear[m]) for m in FIRST_ORDER)
    a_why = (
        "on the linear model influence functions come within "
        f"{NEAR_FLOOR} of the noise floor and ahead of both methods without a Hessian."
        if near and lin_ahead
        else (
            f"on your measurement influence functions' LDS on the linear model ({inf_lin:.3f}) "
            f"is more than {NEAR_FLOOR} below its noise floor ({floor_lin:.3f})."
            if not near
            else "on your measurement a method without a Hessian is not behind influence "
            "functions on the linear model."
        )
    )
    diff, se = paired_difference(network["tracin"], network["influence"])
    b_holds = is_ahead(network["tracin"], network["influence"])
    b_why = (
        f"on the network TracIn is ahead of influence functions by {diff:.3f} ± {se:.3f}."
        if b_holds
        else f"on your measurement TracIn is not clearly ahead of influence functions on the "
        f"network (difference {diff:.3f} ± {se:.3f})."
    )
    c_holds = floor_net <= FLOOR_WELL_BELOW_ONE
    c_why = (
        f"the network's noise floor is {floor_net:.3f}; the linear model's {floor_lin:.3f}."
        if c_holds
        else f"on your measurement the network's noise floor ({floor_net:.3f}) is not well below 1."
    )
    inf = _methods(setup, "network")["influence"]
    diag = inf.diagnostics
    exact = diag.solver.solver == "direct" and diag.hessian == "exact"
    d_why = (
        f"the network's Hessian ({inf.p:,} x {inf.p:,}) was formed and solved exactly (the "
        "`direct` solver): its size is not what limits influence functions here."
        if exact
        else f"influence functions on the network used the {diag.solver.solver!r} solver."
    )
    ahead = [
        (name, m)
        for name, results in (("linear", linear), ("network", network))
        for m in FIRST_ORDER
        if is_ahead(results[m], results["influence"])
    ]
    e_why = (
        f"on your measurement {NAMES[ahead[0][1]]} is ahead of influence functions on the "
        f"{ahead[0][0]} model."
        if ahead
        else "on your measurement no method without a Hessian is ahead of influence functions."
    )
    if diag.damping > 0:
        f_why = (
            'the network\'s Hessian is not positive definite (damping="auto" had to add '
            f"{diag.damping:g}): without damping it has no inverse at all (exercise 4), so there "
            "is no undamped influence to compare."
        )
    else:
        f_why = "no damping was added to the network's Hessian: it is positive definite."
    return {
        "A": Verdict(near and lin_ahead, a_why),
        "B": Verdict(b_holds, b_why),
        "C": Verdict(c_holds, c_why),
        "D": Verdict(not exact, d_why),
        "E": Verdict(not ahead, e_why),
        "F": Verdict(False, f_why),
    }


def check_reasons(reasons, lds_linear, lds_network, setup: Setup) -> CheckResult:
    """Check the set of letters of :data:`REASONS` picked to explain the difference: exactly the
    statements that hold in the student's measurements (:func:`judge_reasons`)."""

    def check() -> CheckResult:
        picked = as_letters(reasons, "reasons", list(REASONS))
        verdicts = judge_reasons(lds_linear, lds_network, setup)
        holding = {letter for letter, v in verdicts.items() if v.holds}
        wrong = sorted(picked - holding)
        missing = sorted(holding - picked)
        if not wrong and not missing:
            why = " ".join(f"{letter}: {verdicts[letter].why}" for letter in sorted(holding))
            return passed(
                "exactly the statements your measurements support. " + (why or "None of them.")
            )
        parts = [f"{letter} does not hold: {verdicts[letter].why}" for letter in wrong]
        if missing:
            topics = "; ".join(TOPICS[letter] for letter in missing)
            count = (
                "one more statement holds"
                if len(missing) == 1
                else (f"{len(missing)} more statements hold")
            )
            parts.append(f"{count} in your measurements: reread what they say about {topics}.")
        return not_yet(" ".join(parts))

    return check_answer(check)


def fit_report(setup: Setup) -> str:
    """What fitting influence functions on each model reported, in words: the gradient norm of
    the training risk at the trained parameters (about 0 at a minimum) and whether its Hessian
    is positive definite, with the damping ``damping="auto"`` added and why."""
    lines = []
    for name in MODELS:
        inf = _methods(setup, name)["influence"]
        diag = inf.diagnostics
        lines.append(
            f"{name}: {inf.p:,} parameters, ||grad R|| = {diag.grad_norm:.2g} at the trained "
            f"parameters, damping {diag.damping:g} added to H. Why: {diag.damping_reason}"
        )
    return "\n\n".join(lines)
