"""The linear datamodeling score (LDS; Park et al., ICML 2023, "TRAK") and its noise floor.

An attribution assigns every test point z a vector tau(z) of n scores on the scale and sign of
``Influence.predicted_removal_effect``: tau(z)_i > 0 when removing z_i would raise the test loss
(z_i is helpful). Read as an additive model of the training set, it predicts for a subset S_j
of the training points

    g_j(z) = sum over i in S_j of tau(z)_i

(a larger g_j: more helpful points kept, so a lower test loss and a larger margin). The LDS
retrains a model f_j from scratch on each of M random subsets S_j (a fraction alpha of the n
points), measures its output on z (the margin log p(y|x) - log(1 - p(y|x)), as TRAK and dattri,
or the test loss) and takes Spearman's rank correlation over j:

    LDS(z) = Spearman_j(f_j(z), g_j(z))       (output="margin")
    LDS(z) = Spearman_j(-L_j(z), g_j(z))      (output="loss")

reported as its mean over the test points with a standard error. Retraining the same subsets
with other seeds moves f_j by itself: the Spearman between two such runs is the noise floor
(Nguyen et al., NeurIPS 2023; K and Sogaard, 2021), how well a second retraining predicts the
first. It is not a ceiling: scores that predicted the average output over seeds correlate with one
run up to about the square root of the floor (under independent noise of equal size per run), so
an LDS above a low floor is possible and not an error.

To compare several attributions on the same retrains, retrain once and rescore:
``LDSResult.rescore(scores)`` scores another (T, n) attribution against a result's subsets and
outputs.

One retrain is :class:`SubsetRetrain` called with (subset indices, seed): a plain, picklable
function of its arguments, so that ``lds(..., client=...)`` (or ``n_workers=``) runs each
retrain as one Dask task (:func:`~influence_widgets.dask_tasks.run_tasks`), with the same
outputs as in this process.
"""

from __future__ import annotations

import copy
import numbers
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.stats import rankdata

from influence_widgets.core.errors import (
    check_cancel_event,
    check_nonnegative,
    check_positive_int,
    check_seed,
)
from influence_widgets.core.influence import Influence
from influence_widgets.core.losses import LossFn, class_margin, resolve_loss
from influence_widgets.core.model_checks import first_line, select_parameters
from influence_widgets.core.objective import TrainingSet, as_tensor, cast_inputs, cast_targets
from influence_widgets.core.progress import progress_bar
from influence_widgets.dask_cluster import check_client, check_n_workers, local_client
from influence_widgets.dask_tasks import run_tasks
from influence_widgets.training import train

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "MIN_SUBSETS",
    "RETRAIN_STEP",
    "LDSResult",
    "SubsetRetrain",
    "TrainFromScratch",
    "draw_subsets",
    "lds",
    "margins",
    "mean_and_se",
    "reinitialise",
    "spearman_columns",
]

OUTPUTS = ("margin", "loss")
MIN_SUBSETS = 3  # the fewest subsets for which a rank correlation can be other than +-1
RETRAIN_STEP = "LDS retraining"  # the progress bar over the retrains, as a listener hears it
TrainFn = Callable[[Callable[[], torch.nn.Module], torch.Tensor, torch.Tensor, int], object]


# ----- the default training recipe -------------------------------------------------------------
def reinitialise(
    model: torch.nn.Module, seed: int, params: Sequence[str] | None = None
) -> torch.nn.Module:
    """Re-initialise ``model``'s trained parameters in place, reproducibly, and return it.

    Every module that owns one of the parameters ``params`` (default: all with
    ``requires_grad``) and has ``reset_parameters()`` calls it, in ``model.modules()`` order,
    after ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng`` (the caller's random state
    is left as it was). Every other parameter and every buffer is put back as it was, so a frozen
    feature extractor stays trained. A trained parameter of a module without
    ``reset_parameters()`` keeps its value.
    """
    names = set(select_parameters(model, params))
    trained = {id(p) for n, p in model.named_parameters() if n in names}
    state = model.state_dict(keep_vars=True)  # tied parameters appear under each name
    kept = {k: v.detach().clone() for k, v in state.items() if id(v) not in trained}
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for module in model.modules():
            owns = any(id(p) in trained for p in module.parameters(recurse=False))
            if owns and callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
    model.load_state_dict(kept, strict=False)
    return model


@dataclass(frozen=True)
class TrainFromScratch:
    """The default ``train_fn`` of :func:`lds`: ``train_fn(model_factory, X, y, seed)``.

    ``model = reinitialise(model_factory(), seed, params)`` (a fresh copy of the model, its
    trained parameters re-initialised by their modules' ``reset_parameters()`` under
    ``torch.manual_seed(seed)``), then ``iw.train(model, (X, y), l2=l2, loss=loss,
    params=params, tol=tol, max_iter=max_iter)``: full-batch L-BFGS to ||grad R_S|| <= tol (1e-8
    in float64) on R_S(theta) = (1/|S|) sum_{i in S} L(z_i, theta) + (l2/2)||theta||^2, the
    risk of the full model with the training set replaced by the subset. Returns the model.
    """

    l2: float
    loss: str | LossFn
    params: Sequence[str] | None = None
    tol: float | None = None
    max_iter: int = 1000

    def __call__(
        self,
        model_factory: Callable[[], torch.nn.Module],
        X: torch.Tensor,
        y: torch.Tensor,
        seed: int,
    ) -> torch.nn.Module:
        model = reinitialise(model_factory(), seed, self.params)
        train(
            model,
            (X, y),
            l2=self.l2,
            loss=self.loss,
            params=self.params,
            tol=self.tol,
            max_iter=self.max_iter,
            progress=False,
        )
        return model


# ----- one retrain -------------------------------------------------------------------------------
def margins(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The margin log p(y|x) - log(1 - p(y|x)) of each of T outputs, (T,).

    ``output`` (T, C), C >= 2: logits, p = softmax, and the margin is
    logit_y - logsumexp_{c != y} logit_c (computed so, without rounding p). ``output`` (T,) or
    (T, 1): a binary score s (logit of class 1, as ``iw.models.linear_svm``): the margin is s for
    y = 1 and -s for y = 0. ``labels``: class indices; else a ValueError naming the argument.
    """
    out = output.reshape(output.shape[0], -1)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(
            f"output: 'margin' needs integer class labels, got y_test of dtype {labels.dtype}; "
            "for a regression or another loss of real targets pass output='loss'"
        )
    labels = labels.reshape(-1).long().to(out.device)
    classes = max(out.shape[1], 2)
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise ValueError(
            f"y_test: labels must be class indices in 0..{classes - 1} for a model of "
            f"{out.shape[1]} output(s), got {labels.min().item()}..{labels.max().item()}"
        )
    return class_margin(out, labels)


@dataclass
class SubsetRetrain:
    """One LDS retrain as a function of (subset indices, seed), returning f(z) for T test points.

    ``self(indices, seed)`` calls ``train_fn(model_factory, X[indices], y[indices], seed)`` (the
    subset as new tensors, never the user's) and evaluates the trained model in eval mode on the
    test points: the margin (:func:`margins`) or the per-sample ``loss_fn`` of ``labels``, as a
    float64 array (T,). Picklable when ``train_fn`` and the model are, so a worker can run it.
    """

    train_fn: TrainFn
    model_factory: Callable[[], torch.nn.Module]
    X: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    labels: torch.Tensor
    output: str
    loss_fn: LossFn
    batch_size: int = 1024

    def __call__(self, indices: np.ndarray, seed: int) -> np.ndarray:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        X, y = self.X[idx.to(self.X.device)], self.y[idx.to(self.y.device)]
        try:
            model = self.train_fn(self.model_factory, X, y, seed)
        except Exception as err:
            raise RuntimeError(
                f"train_fn: raised {type(err).__name__}: {first_line(err)} (on a subset of "
                f"{len(idx)} training points, seed {seed}); check the recipe on one subset, "
                "train_fn(model_factory, X, y, seed)"
            ) from err
        if not isinstance(model, torch.nn.Module):
            raise TypeError(
                f"train_fn: must return the trained torch.nn.Module, got "
                f"{type(model).__name__}; iw.train trains in place and returns a report, so "
                "return the model after it"
            )
        return self.evaluate(model)

    def evaluate(self, model: torch.nn.Module) -> np.ndarray:
        """f(z) for every test point: the margin or the test loss of ``model`` (put in eval
        mode), float64 (T,), in batches of ``batch_size`` test points."""
        param = next(model.parameters())
        model.eval()
        values = []
        with torch.no_grad():
            for start in range(0, len(self.x_test), self.batch_size):
                x = self.x_test[start : start + self.batch_size]
                y = self.labels[start : start + self.batch_size]
                out = model(cast_inputs(x, param.dtype, param.device))
                if self.output == "margin":
                    values.append(margins(out, y))
                else:
                    target = cast_targets(self.loss_fn, y, param.dtype, param.device)
                    values.append(self.loss_fn(out, target))
        return torch.cat(values).detach().double().cpu().numpy()


# ----- subsets, correlations ---------------------------------------------------------------------
def draw_subsets(n: int, subsets: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """M = ``subsets`` random subsets of ``size`` of the n training points, and their seeds.

    Subset j and its two training seeds come from ``numpy.random.default_rng([seed, j])`` alone
    (``size`` indices drawn without replacement, then two distinct seeds in [0, 2**32)), so the
    first 20 subsets of ``subsets=40`` are those of ``subsets=20``. Returns ``masks`` (M, n)
    bool and ``seeds`` (M, 2): column 0 trains the LDS run, column 1 the noise-floor run.
    """
    masks = np.zeros((subsets, n), dtype=bool)
    seeds = np.zeros((subsets, 2), dtype=np.int64)
    for j in range(subsets):
        rng = np.random.default_rng([seed, j])
        masks[j, rng.choice(n, size=size, replace=False)] = True
        seeds[j] = rng.choice(2**32, size=2, replace=False)
    return masks, seeds


def spearman_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho between ``a[:, t]`` and ``b[:, t]`` for each column t, (T,): the Pearson
    correlation of their ranks, ties given average ranks (as ``scipy.stats.spearmanr``). NaN for
    a column with fewer than 3 rows or with all values equal in ``a`` or ``b``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 3:
        return np.full(a.shape[1], np.nan)
    ra, rb = rankdata(a, axis=0), rankdata(b, axis=0)
    ra, rb = ra - ra.mean(axis=0), rb - rb.mean(axis=0)
    scale = np.sqrt((ra**2).sum(axis=0) * (rb**2).sum(axis=0))
    rho = np.full(a.shape[1], np.nan)
    defined = scale > 0
    rho[defined] = (ra * rb).sum(axis=0)[defined] / scale[defined]
    return rho


def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard error (sample std / sqrt(k)) of the k finite values; NaN when k = 0,
    and a NaN standard error when k = 1."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if len(finite) == 0:
        return float("nan"), float("nan")
    se = finite.std(ddof=1) / np.sqrt(len(finite)) if len(finite) > 1 else float("nan")
    return float(finite.mean()), float(se)


# ----- the result --------------------------------------------------------------------------------
@dataclass(frozen=True)
class LDSResult:
    """The linear datamodeling score of an attribution, with its noise floor.

    For m retrained subsets (m = ``subsets`` unless cancelled: then the subsets whose runs all
    finished, in order; in this process the first m, on Dask any m) and T test points:
    ``actual[j, t]`` = f_j(z_t), the output (``output``: margin log p(y|x) - log(1 - p(y|x)), or
    the test loss) of the model trained on subset j; ``predicted[j, t]`` = g_j(z_t) = sum over i
    in S_j of tau(z_t)_i; ``per_test[t]`` = Spearman over j of (f_j, g_j) (of (-loss, g) for
    ``output="loss"``), the LDS of test point t; ``mean`` and ``se`` its mean over the test
    points where it is defined, and the standard error. ``rerun`` holds the same subsets'
    outputs trained with the second seeds; ``noise_floor_per_test[t]`` = Spearman over j of
    (actual, rerun), ``noise_floor`` and ``noise_floor_se`` its mean and standard error (NaN and
    None without a noise-floor run). ``masks`` (m, n) bool: subset j is ``indices(j)``;
    ``seeds`` (m, 2) the training seeds of the two runs; ``labels`` (T,) the labels y of f.
    """

    per_test: np.ndarray  # (T,)
    mean: float
    se: float
    noise_floor_per_test: np.ndarray | None  # (T,)
    noise_floor: float
    noise_floor_se: float
    masks: np.ndarray  # (m, n) bool
    seeds: np.ndarray  # (m, 2)
    actual: np.ndarray  # (m, T)
    predicted: np.ndarray  # (m, T)
    rerun: np.ndarray | None  # (m, T)
    labels: np.ndarray  # (T,)
    output: str
    fraction: float
    subsets: int  # asked for; n_subsets were done
    seconds: float
    cancelled: bool = False

    @property
    def n_subsets(self) -> int:
        """How many subsets were retrained (fewer than ``subsets`` only when cancelled)."""
        return len(self.masks)

    def indices(self, j: int) -> np.ndarray:
        """The training indices of subset S_j, ascending."""
        return np.flatnonzero(self.masks[j])

    def plot(self, test_index: int | None = None, ax=None, *, name: str | None = None):
        """``test_index=None``: a histogram of LDS(z) over the test points with the mean and the
        noise floor marked; a test index: f_j(z) against g_j(z) over the subsets, LDS(z) in the
        title, which calls the point ``name`` (default "test point {test_index}"). Returns the
        Axes (matplotlib, imported only here)."""
        from influence_widgets.plots import lds_histogram, lds_scatter

        if test_index is None:
            return lds_histogram(self, ax=ax)
        return lds_scatter(self, test_index, ax=ax, name=name)

    def to_frame(self):
        """A pandas DataFrame, one row per test point: ``label``, ``lds``, ``noise_floor``
        (NaN without a noise-floor run). Needs pandas."""
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError(
                "LDSResult.to_frame needs pandas: pip install pandas (the arrays are also "
                "attributes: per_test, noise_floor_per_test, labels)"
            ) from err
        floor = self.noise_floor_per_test
        return pd.DataFrame(
            {
                "label": self.labels,
                "lds": self.per_test,
                "noise_floor": np.full(len(self.per_test), np.nan) if floor is None else floor,
            },
            index=pd.RangeIndex(len(self.per_test), name="test_point"),
        )

    def rescore(self, scores: torch.Tensor | np.ndarray) -> LDSResult:
        """The LDS of another attribution against these retrains, without retraining.

        ``scores`` (T, n): another method's tau(z) for the same T test points (labels
        ``labels``) and n training points, on the scale and sign of ``predicted_removal_effect``.
        Returns a new LDSResult with the same ``masks``, ``seeds``, ``actual``, ``rerun`` and
        noise floor and this attribution's ``predicted``, ``per_test``, ``mean`` and ``se``;
        ``seconds`` stays the retrains' time. So M retrains serve every method compared:
        ``base = iw.lds(scores_a, data, ...)``, then ``base.rescore(scores_b)``. Raises a
        ValueError for another shape or non-finite scores.
        """
        values = as_tensor(scores, "scores").double().cpu().numpy()
        expected = (self.actual.shape[1], self.masks.shape[1])
        if values.shape != expected:
            raise ValueError(
                f"scores: of shape {values.shape}, expected (T, n) = {expected}: one row per "
                "test point of this LDSResult, one column per training point"
            )
        if not np.isfinite(values).all():
            raise ValueError("scores: contain NaN or infinite values")
        predicted, per_test, mean, se = _scored(self.masks, self.actual, values, self.output)
        return replace(self, predicted=predicted, per_test=per_test, mean=mean, se=se)

    def __repr__(self) -> str:
        state = ", cancelled" if self.cancelled else ""
        return (
            f"LDSResult(mean={self.mean:.4f}, se={self.se:.4f}, noise_floor="
            f"{self.noise_floor:.4f}, noise_floor_se={self.noise_floor_se:.4f}, "
            f"n_subsets={self.n_subsets}/{self.subsets}, fraction={self.fraction:g}, "
            f"output={self.output!r}, seconds={self.seconds:.1f}{state})"
        )


# ----- arguments ---------------------------------------------------------------------------------
@dataclass
class _Setup:
    """What :func:`lds` needs from its first argument: scores (T, n) float64, the labels (T,),
    the model to copy for every retrain, the loss and the default recipe's l2 and params."""

    scores: np.ndarray
    labels: torch.Tensor
    model: torch.nn.Module
    loss_fn: LossFn
    l2: float
    params: Sequence[str] | None


def _from_influence(influence: Influence, x_test, y_test, given: dict) -> _Setup:
    """scores = influence.predicted_removal_effect(x_test, labels), labels = y_test or, for
    None, the predicted classes at theta_hat; the rest from the Influence."""
    extra = [k for k, v in given.items() if v is not None]
    if extra:
        raise TypeError(
            f"{extra[0]}: comes from the Influence (its model copy, loss, l2 and params); pass "
            f"{', '.join(given)} only with a score array"
        )
    labels = influence.predicted_labels(x_test) if y_test is None else as_tensor(y_test, "y_test")
    scores = influence.predicted_removal_effect(x_test, labels)
    obj = influence.objective
    return _Setup(
        scores=scores.detach().double().cpu().numpy(),
        labels=labels.clone(),
        model=obj.model_copy(),
        loss_fn=obj.loss_fn,
        l2=obj.l2,
        params=list(obj.spec.names),
    )


def _from_scores(scores, y_test, given: dict) -> _Setup:
    """A score array of any method, with the ``model`` to copy (required), labels (required),
    loss (default cross-entropy), l2 (default 0) and params (default all trainable)."""
    if isinstance(scores, str | bytes):
        raise TypeError("influence_or_scores: expected an iw.Influence or a (T, n) score array")
    model = given["model"]
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"model: with a score array, pass model= (a torch.nn.Module, copied for every "
            f"retrain and never modified), got {type(model).__name__}"
        )
    if y_test is None:
        raise ValueError(
            "y_test: needed with a score array (lds cannot know which labels the scores were "
            "computed for); for predicted classes pass inf.predicted_labels(x_test)"
        )
    l2 = 0.0 if given["l2"] is None else check_nonnegative(given["l2"], "l2")
    return _Setup(
        scores=as_tensor(scores, "influence_or_scores").double().cpu().numpy(),
        labels=as_tensor(y_test, "y_test").clone(),
        model=model,
        loss_fn=resolve_loss("cross_entropy" if given["loss"] is None else given["loss"]),
        l2=l2,
        params=None if given["params"] is None else select_parameters(model, given["params"]),
    )


def _check_shapes(setup: _Setup, x_test: torch.Tensor, n: int, influence) -> None:
    """scores (T, n) with T test points and n training points, finite; else a ValueError."""
    T = len(x_test)
    if len(setup.labels) != T:
        raise ValueError(f"y_test: has {len(setup.labels)} labels for {T} test points in x_test")
    if isinstance(influence, Influence) and influence.n != n:
        raise ValueError(
            f"data: has {n} training points but the Influence was built on {influence.n}; "
            "pass the training set the Influence was built on"
        )
    if setup.scores.shape != (T, n):
        raise ValueError(
            f"influence_or_scores: scores of shape {setup.scores.shape}, expected (T, n) = "
            f"({T}, {n}) for the {T} test points of x_test and {n} training points of data "
            "(one row per test point; for one test point scores[None])"
        )
    if not np.isfinite(setup.scores).all():
        raise ValueError("influence_or_scores: the scores contain NaN or infinite values")


def _subset_size(fraction, n: int) -> int:
    """round(fraction * n), checked: 0 < fraction < 1 and 1 <= size <= n - 1."""
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
        raise TypeError(f"fraction: expected a number in (0, 1), got {fraction!r}")
    if not 0 < fraction < 1:
        raise ValueError(f"fraction: must lie strictly between 0 and 1, got {fraction!r}")
    size = round(fraction * n)
    if not 1 <= size <= n - 1:
        raise ValueError(
            f"fraction: {fraction:g} of {n} training points keeps {size}; choose one that keeps "
            f"between 1 and {n - 1}"
        )
    return size


def _checked_options(subsets, output: str, train_fn, seed, cancel) -> tuple[int, int]:
    """subsets >= MIN_SUBSETS, output in OUTPUTS, a callable or None train_fn, seed, cancel."""
    subsets = check_positive_int(subsets, "subsets")
    if subsets < MIN_SUBSETS:
        raise ValueError(
            f"subsets: need at least {MIN_SUBSETS} for a rank correlation, got {subsets}; "
            "TRAK and dattri use 100 (50 or more for a standard error worth reading)"
        )
    if output not in OUTPUTS:
        raise ValueError(f"output: expected one of {OUTPUTS}, got {output!r}")
    if train_fn is not None and not callable(train_fn):
        raise TypeError(
            f"train_fn: expected a callable train_fn(model_factory, X, y, seed) -> trained "
            f"model, or None, got {type(train_fn).__name__}"
        )
    check_cancel_event(cancel)
    return subsets, check_seed(seed)


# ----- the loop ----------------------------------------------------------------------------------
def _retrain_all(
    retrain: SubsetRetrain,
    masks: np.ndarray,
    seeds: np.ndarray,
    runs: int,
    progress: bool,
    where: tuple,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``runs`` (1 or 2) retrains of every subset, run r with ``seeds[:, r]``, here or on Dask
    (``where`` = (client, n_workers, cancel)): the subsets j whose runs are all done, ascending,
    and a list of ``runs`` arrays (m, T) of their outputs. Fewer than len(masks) subsets only
    when cancelled."""
    client, n_workers, cancel = where
    T = len(retrain.x_test)
    if not len(masks):  # all resumed: no cluster to start, no bar to show
        return np.zeros(0, dtype=np.int64), [np.zeros((0, T)) for _ in range(runs)]
    jobs = [
        (np.flatnonzero(masks[j]), int(seeds[j, r])) for j in range(len(masks)) for r in range(runs)
    ]
    outputs: dict[int, np.ndarray] = {}

    def keep(k: int, value: np.ndarray) -> None:
        outputs[k] = value
        bar.update()

    bar = progress_bar(total=len(jobs), desc=RETRAIN_STEP, disable=not progress)
    try:
        if client is not None:
            run_tasks(client, retrain, jobs, keep, cancel, name="train_fn")
        elif n_workers is not None:
            with local_client(n_workers, "iw.lds(n_workers=...)") as own:
                run_tasks(own, retrain, jobs, keep, cancel, name="train_fn")
        else:
            for k, job in enumerate(jobs):
                if cancel is not None and cancel.is_set():
                    break
                keep(k, retrain(*job))
    finally:
        bar.close()
    complete = [j for j in range(len(masks)) if all(j * runs + r in outputs for r in range(runs))]
    done = np.array(complete, dtype=np.int64)
    return done, [
        np.array([outputs[j * runs + r] for j in done]).reshape(len(done), T) for r in range(runs)
    ]


def lds(
    influence_or_scores: Influence | torch.Tensor | np.ndarray,
    data,
    *,
    x_test,
    y_test,
    train_fn: TrainFn | None = None,
    subsets: int = 100,
    fraction: float = 0.5,
    output: str = "margin",
    noise_floor: bool = True,
    seed: int = 0,
    model: torch.nn.Module | None = None,
    loss: str | LossFn | None = None,
    l2: float | None = None,
    params: Sequence[str] | None = None,
    tol: float | None = None,
    max_iter: int = 1000,
    progress: bool = True,
    cancel: threading.Event | None = None,
    client: Client | None = None,
    n_workers: int | None = None,
    resume: LDSResult | None = None,
) -> LDSResult:
    """The linear datamodeling score of an attribution (Park et al. 2023), with its noise floor.

    Draws ``subsets`` = M random subsets S_j of round(alpha n) training points (alpha =
    ``fraction``; seeded, see :func:`draw_subsets`), retrains a model from scratch on each with
    ``train_fn`` and records f_j(z) on every test point z: with ``output="margin"`` the margin
    log p(y|x) - log(1 - p(y|x)) (TRAK, dattri), with ``output="loss"`` the test loss L_j(z).
    The attribution's prediction is g_j(z) = sum over i in S_j of tau(z)_i, with tau(z) the
    scores in the sign and scale of ``predicted_removal_effect`` (> 0: removing z_i would raise
    the test loss). Keeping a helpful point therefore lowers the loss and raises the margin, so
    LDS(z) = Spearman over j of (f_j(z), g_j(z)) for the margin and of (-L_j(z), g_j(z)) for
    the loss: 1 when the scores rank the subsets exactly as retraining does, about 0 for random
    scores, negative for scores of the wrong sign. ``result.mean`` is its mean over the test
    points (those where it is defined), ``result.se`` the standard error. Under cross-entropy
    and the smooth hinge, -L is an increasing function of the margin, so both outputs give the
    same LDS (``actual`` differs); ``output="loss"`` also serves regression (``"mse"``) and
    other losses of real targets, where no margin is defined.

    With ``noise_floor=True`` (default; it doubles the retrains) every subset is trained a second
    time with another seed (seeds[:, 1], never the first run's), and Spearman over j between
    the two runs' f_j(z), averaged, is how well one retraining predicts another with this
    recipe (not a ceiling: see the module docstring).
    With the default recipe the seed is the initialisation: a convex, regularised model then
    reaches the same minimum from either start and the floor is 1 (to the training tolerance);
    a non-convex one, or a recipe with random batches, lands elsewhere and the floor drops.

    Args:
        influence_or_scores: an :class:`~influence_widgets.Influence` (its
            ``predicted_removal_effect(x_test, y_test)`` are the scores; its model, loss, l2 and
            params define the retrains), or a (T, n) tensor/array of any method's scores on
            that scale and sign; then pass ``model=`` (and ``loss=``, ``l2=``, ``params=`` for
            the default recipe or ``output="loss"``).
        data: the n training points the scores refer to: ``(X, y)``, a torch Dataset or an
            ``iw.datasets`` Dataset (its training split). Never modified.
        x_test, y_test: the T test points. ``y_test=None`` (with an Influence only) takes the
            predicted classes at theta_hat, y_hat = argmax_c p(c|x), as the scores do; f_j(z)
            is then the margin or loss of y_hat under every retrained model. With a score
            array, pass the labels the scores were computed for.
        train_fn: ``train_fn(model_factory, X, y, seed)`` returning the trained model;
            ``model_factory()`` gives a fresh deep copy of the model each call (the Influence's
            at theta_hat, or ``model``); ``X, y`` are the subset (new tensors). Default
            :class:`TrainFromScratch` with the l2, loss and params: the copy re-initialised
            by its modules' ``reset_parameters()`` under ``torch.manual_seed(seed)``, then
            ``iw.train`` (full-batch L-BFGS) to ||grad R_S|| <= ``tol`` within ``max_iter``.
        subsets: M >= 3 (TRAK and dattri use 100). fraction: alpha in (0, 1).
        output: "margin" (integer class labels needed) or "loss".
        seed: subsets and training seeds, an integer in [0, 2**64).
        model, loss, l2, params: only with a score array: the model to copy (required), the
            loss (default "cross_entropy"), the L2 coefficient (default 0) and the parameter
            names to re-initialise and train (default all trainable).
        progress: a progress bar over the retrains (also reported to a listener).
        cancel: a ``threading.Event``; once set, no new retrain starts (in this process the
            current one finishes; on Dask the queued retrains are cancelled and the running
            ones abandoned), and the subsets whose runs are all done are returned, in order of
            j, ``cancelled=True``.
        client: a ``dask.distributed.Client`` (any cluster): every retrain is one task on its
            workers, used for every Dask call even when another Client is Dask's default. The
            recipe, the model copy and the training and test tensors are sent to each worker
            once (so ``train_fn`` and the model must pickle: cloudpickle sends a function or
            class defined in a notebook; one from a module must be importable on the workers);
            each task carries its subset's indices and seed. The outputs equal this process's
            for the same seeds (the same recipe on the same tensors), and the progress bar
            advances as retrains finish. None (default): one after another, in this process.
        n_workers: with ``client=None``, retrain on a new ``LocalCluster`` of this many worker
            processes (one torch thread each), closed on return
            (:func:`~influence_widgets.dask_cluster.local_client`); None (default): in this
            process. Ignored with a ``client``. Dask is needed only for ``client`` or
            ``n_workers``: ``pip install "influence-widgets[dask]"``.
        resume: an LDSResult of an earlier call on the same data, test points and labels with
            the same recipe, ``seed``, ``fraction`` and ``output`` (a cancelled one, or one of
            fewer ``subsets``: the first subsets of a smaller M are those of a larger): its
            retrains are kept and only the subsets it lacks are retrained, so a run cancelled
            or cut off goes on where it stopped. The result's ``seconds`` add the earlier
            call's. Its subsets and seeds must be among those this call draws and its test
            points as many, with a rerun where ``noise_floor=True``; else a ValueError naming
            ``resume``. That the recipe is the same cannot be checked: it is the caller's word.

    Returns an :class:`LDSResult`. The user's model, data and test tensors are never modified:
    each retrain trains a new copy on new tensors. Raises ValueError/TypeError naming the
    argument; ``RuntimeError("train_fn: raised ...")`` when a retrain fails, on a Dask worker
    too (the same message; the other retrains are cancelled).
    """
    start = time.perf_counter()
    subsets, seed = _checked_options(subsets, output, train_fn, seed, cancel)
    check_client(client, "iw.lds(client=...)", "to retrain in this process")
    n_workers = check_n_workers(n_workers)
    ts = TrainingSet(data, "data")
    size = _subset_size(fraction, ts.n)
    x = as_tensor(x_test, "x_test").clone()
    given = {"model": model, "loss": loss, "l2": l2, "params": params}
    if isinstance(influence_or_scores, Influence):
        setup = _from_influence(influence_or_scores, x, y_test, given)
    else:
        setup = _from_scores(influence_or_scores, y_test, given)
    _check_shapes(setup, x, ts.n, influence_or_scores)
    X, y = ts.tensors()
    recipe = train_fn or TrainFromScratch(setup.l2, setup.loss_fn, setup.params, tol, max_iter)
    retrain = SubsetRetrain(
        recipe, partial(copy.deepcopy, setup.model), X, y, x, setup.labels, output, setup.loss_fn
    )
    retrain.evaluate(retrain.model_factory())  # the output is defined for these labels
    masks, seeds = draw_subsets(ts.n, subsets, size, seed)
    n_runs = 2 if noise_floor else 1
    kept = _kept_from(resume, masks, seeds, setup.labels, (output, fraction, n_runs))
    todo = np.array([j for j in range(subsets) if j not in kept], dtype=np.int64)
    where = (client, n_workers, cancel)
    done, runs = _retrain_all(retrain, masks[todo], seeds[todo], n_runs, progress, where)
    outputs = dict(kept)
    outputs.update({int(todo[d]): [run[k] for run in runs] for k, d in enumerate(done)})
    order = np.array(sorted(outputs), dtype=np.int64)
    runs = [
        np.array([outputs[j][r] for j in order]).reshape(len(order), len(x)) for r in range(n_runs)
    ]
    start -= 0.0 if resume is None else resume.seconds
    return _result(setup, runs, masks[order], seeds[order], (output, fraction, subsets, start))


def _kept_from(
    resume: LDSResult | None, masks: np.ndarray, seeds: np.ndarray, labels, settings: tuple
) -> dict[int, list[np.ndarray]]:
    """{j: [the outputs of subset j's runs]} for the subsets of ``resume`` (the drawn subset
    j with its seeds and mask), checked against this call's draw, labels and settings (output,
    fraction, runs); {} for None. ValueError naming ``resume`` for a result of another run."""
    if resume is None:
        return {}
    if not isinstance(resume, LDSResult):
        raise TypeError(
            f"resume: expected the LDSResult of an earlier iw.lds call, got {type(resume).__name__}"
        )
    output, fraction, n_runs = settings
    T = len(labels)
    theirs = {
        "output": resume.output,
        "fraction": resume.fraction,
        "test points": resume.actual.shape[1],
        "training points": resume.masks.shape[1],
    }
    ours = {
        "output": output,
        "fraction": float(fraction),
        "test points": T,
        "training points": masks.shape[1],
    }
    for name in theirs:
        if theirs[name] != ours[name]:
            raise ValueError(
                f"resume: the result has {name} {theirs[name]!r} and this call {ours[name]!r}; "
                "resume a run with the same data, test points, fraction and output"
            )
    if not np.array_equal(np.asarray(resume.labels), labels.cpu().numpy()):
        raise ValueError("resume: the result's labels differ from this call's y_test")
    if n_runs == 2 and resume.rerun is None:
        raise ValueError(
            "resume: the result has no noise-floor run; pass noise_floor=False to resume it"
        )
    where = {int(s): j for j, s in enumerate(seeds[:, 0])}
    kept: dict[int, list[np.ndarray]] = {}
    for k in range(resume.n_subsets):
        j = where.get(int(resume.seeds[k, 0]))
        if j is None or not (
            np.array_equal(resume.seeds[k], seeds[j]) and np.array_equal(resume.masks[k], masks[j])
        ):
            raise ValueError(
                f"resume: the result's subset {k} is not among those this call draws; pass the "
                "seed, fraction and training set of the run you resume"
            )
        kept[j] = [resume.actual[k]] + ([resume.rerun[k]] if n_runs == 2 else [])
    return kept


def _scored(masks: np.ndarray, actual: np.ndarray, scores: np.ndarray, output: str) -> tuple:
    """predicted g_j(z) = masks @ scores.T (m, T), the LDS per test point, its mean and se."""
    predicted = masks.astype(np.float64) @ scores.T
    sign = 1.0 if output == "margin" else -1.0
    per_test = spearman_columns(sign * actual, predicted)
    mean, se = mean_and_se(per_test)
    return predicted, per_test, mean, se


def _result(setup: _Setup, runs: list[np.ndarray], masks, seeds, settings: tuple) -> LDSResult:
    """The LDSResult of the retrains done: LDS and noise floor per test point and averaged."""
    output, fraction, subsets, start = settings
    m = len(runs[0])
    predicted, per_test, mean, se = _scored(masks, runs[0], setup.scores, output)
    floor = spearman_columns(runs[0], runs[1]) if len(runs) > 1 else None
    floor_mean, floor_se = mean_and_se(floor) if floor is not None else (np.nan, np.nan)
    return LDSResult(
        per_test=per_test,
        mean=mean,
        se=se,
        noise_floor_per_test=floor,
        noise_floor=float(floor_mean),
        noise_floor_se=float(floor_se),
        masks=masks,
        seeds=seeds,
        actual=runs[0],
        predicted=predicted,
        rerun=runs[1] if len(runs) > 1 else None,
        labels=setup.labels.cpu().numpy(),
        output=output,
        fraction=float(fraction),
        subsets=subsets,
        seconds=time.perf_counter() - start,
        cancelled=m < subsets,
    )
