"""Exercise 4: predict, then verify with leave-one-out, when influence fails.

A small tanh MLP trained without weight decay is non-convex: at theta_hat its Hessian has
eigenvalues at or below zero, so H^-1 does not exist without damping. The student predicts
whether influence will match leave-one-out retraining (:func:`check_prediction`), runs
``iw.validate_loo`` and reports its Pearson R (:func:`check_loo`), and concludes
(:func:`check_conclusion`).
"""

from __future__ import annotations

import numpy as np

from influence_widgets.analysis.loo import LOOResult
from influence_widgets.core.influence import Influence, check_influence
from influence_widgets.exercises.feedback import (
    AnswerError,
    CheckResult,
    arguments,
    as_number,
    check_answer,
    not_yet,
    passed,
)

__all__ = ["MATCH_R", "REASONS", "check_conclusion", "check_loo", "check_prediction"]

MATCH_R = 0.9  # "influence matches leave-one-out": Pearson R at least this
MAX_REMOVALS = 20  # keep the exercise quick
REASONS = {
    "A": "Leave-one-out retraining starts from a new random initialisation each time, so its "
    "measurements are noise.",
    "B": "The risk is non-convex and flat in some directions at theta_hat: H has eigenvalues at "
    "or below zero, so the quadratic model behind influence does not describe retraining; "
    "damping makes H invertible but does not make the prediction right.",
    "C": "Influence functions only work for test points that the model classifies correctly.",
    "D": "The model has too few parameters for influence functions to be accurate.",
}
RIGHT_REASON = "B"


def _bool(answer, name: str) -> bool:
    if answer is ...:
        raise AnswerError(f"`{name}` is not filled in yet: replace the `...` with True or False.")
    if not isinstance(answer, bool | np.bool_):
        raise AnswerError(f"`{name}` should be True or False, got {answer!r}.")
    return bool(answer)


def check_prediction(will_match) -> CheckResult:
    """Record the prediction (True: influence will match leave-one-out, R >= 0.9)."""

    def check() -> CheckResult:
        guess = _bool(will_match, "will_match")
        return passed(
            f"prediction recorded: influence will {'' if guess else 'NOT '}match leave-one-out "
            f"(Pearson R >= {MATCH_R}). Now measure it."
        )

    return check_answer(check)


def _loo(loo) -> LOOResult:
    if loo is ...:
        raise AnswerError(
            "`loo` is not filled in yet: keep what the leave-one-out check of this step "
            "(`iw.validate_loo`, as the text above describes it) returns."
        )
    if not isinstance(loo, LOOResult):
        raise AnswerError(
            f"`loo` should be what iw.validate_loo returns, got {type(loo).__name__}."
        )
    return loo


def check_loo(loo, reported_r, inf: Influence, x_test, y_test) -> CheckResult:
    """Check that ``loo`` is a leave-one-out run of ``inf`` on this test point, quick enough, and
    that ``reported_r`` is its Pearson R."""

    def check() -> CheckResult:
        result = _loo(loo)
        with arguments():
            inf_ = check_influence(inf, "inf")
            effects = inf_.predicted_removal_effect(x_test, y_test)[0].cpu().numpy()
        if result.n_removed > MAX_REMOVALS:
            return not_yet(
                f"`loo` removed {result.n_removed} points; {MAX_REMOVALS} or fewer keep this "
                "quick (ten are enough to see the effect)."
            )
        removed = np.asarray(result.removed)
        in_range = bool(((removed >= 0) & (removed < inf_.n)).all())
        matches = in_range and np.allclose(
            result.predicted, effects[removed], rtol=1e-6, atol=1e-12
        )
        if not matches:
            return not_yet(
                "`loo` was not run on `inf_mlp` and this test point: its predictions differ from "
                "inf_mlp.predicted_removal_effect(x_test, y_test). Pass the same objects."
            )
        value = as_number(reported_r, "reported_r")
        r, rho = result.pearson, result.spearman
        if np.isnan(r):
            return not_yet("`loo` has no Pearson R (too few removals): remove ten points.")
        if abs(value - r) <= 5e-3:
            return passed(f"Pearson R = {r:.4f} over {result.n_removed} removals, as reported.")
        if abs(value - rho) <= 5e-3:
            return not_yet(
                "`reported_r` is the Spearman (rank) correlation; the question asks for "
                "Pearson's R, which measures how close the points lie to a straight line."
            )
        if abs(value - r * r) <= 5e-3:
            return not_yet("`reported_r` is R squared: report R itself.")
        return not_yet(
            "`reported_r` is not this run's Pearson R: the `LOOResult` that `loo` holds prints it."
        )

    return check_answer(check)


def check_conclusion(matched, reason, loo, will_match) -> CheckResult:
    """Check ``matched`` (did influence match, R >= 0.9?) against ``loo``, and the ``reason``
    (a letter of :data:`REASONS`); compares with the prediction."""

    def check() -> CheckResult:
        result = _loo(loo)
        said = _bool(matched, "matched")
        truth = bool(result.pearson >= MATCH_R)
        if said != truth:
            return not_yet(
                "`matched` does not agree with your measurement: compare the Pearson R you "
                f"measured with the threshold, $R \\ge {MATCH_R}$."
            )
        predicted = _bool(will_match, "will_match")
        verdict = (
            "Your prediction was right."
            if predicted == truth
            else "Your prediction was wrong, which is what measuring is for."
        )
        if truth:
            return passed(
                f"{verdict} This run matched (R = {result.pearson:.3f}); influence can work near "
                "a strict minimum. Try a test point the model gets wrong."
            )
        if reason is ...:
            raise AnswerError("`reason` is not filled in yet: pick one letter of REASONS.")
        letter = str(reason).strip().upper()
        if letter not in REASONS:
            raise AnswerError(f"`reason` should be one of {', '.join(REASONS)}, got {reason!r}.")
        if letter == RIGHT_REASON:
            return passed(f"{verdict} And that is why: {REASONS[letter]}")
        hints = {
            "A": "validate_loo warm-starts every retrain from theta_hat; nothing is random.",
            "C": "the paper's Figure 2 uses misclassified test points too, and they match.",
            "D": "the logistic regression above has fewer parameters and matches well.",
        }
        return not_yet(f"{verdict} But reason {letter} does not hold: {hints[letter]}")

    return check_answer(check)
