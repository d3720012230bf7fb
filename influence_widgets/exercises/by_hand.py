"""Exercise 1: the influence of one training point, by hand, from H and two gradients.

The student computes g_test = grad L(z_test, theta_hat), g_i = grad ell_i(theta_hat) (with the L2
term), H = Hess R(theta_hat), I_up,loss(z_i, z_test) = -g_test^T H^-1 g_i and the predicted
removal effect -(1/n) I_up,loss; each checker compares one of them with what
:class:`~influence_widgets.Influence` computes and names the typical mistake it reproduces.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import grad, hessian

from influence_widgets.core.errors import check_index
from influence_widgets.core.influence import Influence, check_influence
from influence_widgets.exercises.feedback import (
    CheckResult,
    Mistake,
    arguments,
    as_number,
    as_tensor,
    check_answer,
    close,
    first_match,
    not_yet,
    passed,
)

__all__ = ["check_gradients", "check_hessian", "check_influence_value", "check_removal_effect"]


@dataclass(frozen=True)
class _Reference:
    """The exact pieces, from the Influence object's own objective."""

    inf: Influence  # checked
    i: int  # checked: in [0, n)
    theta: torch.Tensor  # theta_hat, (p,)
    l2: float
    n: int
    g_test: torch.Tensor  # grad L(z_test), no L2 term
    g_i: torch.Tensor  # grad ell_i, L2 term included
    H: torch.Tensor  # Hess R (+ damping I)


def _hessian(inf: Influence) -> torch.Tensor:
    obj = inf.objective
    X, y = inf.train.tensors()
    X, y = obj.cast_inputs(X), obj.cast_targets(y)
    H = hessian(lambda th: obj.loss(th, X, y).mean())(obj.theta).cpu()
    return H + (obj.l2 + inf.damping) * torch.eye(inf.p, dtype=H.dtype)


def _point(inf, i) -> tuple[Influence, int]:
    """The checked ``inf`` and training index ``i``; a bad one becomes the feedback."""
    with arguments():
        inf = check_influence(inf, "inf")
        return inf, check_index(i, "i", inf.n)


def _reference(inf: Influence, x_test, y_test, i: int) -> _Reference:
    inf, i = _point(inf, i)
    obj = inf.objective
    with arguments():
        g_test = inf.test_gradients(x_test, y_test)[0]
    x_i, y_i = inf.train.take([i])
    g_i = grad(obj.train_term)(obj.theta, obj.cast_inputs(x_i)[0], obj.cast_targets(y_i)[0])
    return _Reference(  # on the CPU, where the answers are compared (a CUDA Influence too)
        inf=inf,
        i=i,
        theta=obj.theta.detach().cpu(),
        l2=obj.l2,
        n=inf.n,
        g_test=g_test.detach().cpu(),
        g_i=g_i.detach().cpu(),
        H=_hessian(inf).detach(),
    )


def _influence(g_test: torch.Tensor, H: torch.Tensor, g_i: torch.Tensor) -> float:
    return float(-g_test @ torch.linalg.solve(H, g_i))


def _vector_mistakes(ref: _Reference, which: str) -> list[Mistake]:
    l2_term = ref.l2 * ref.theta
    if which == "g_test":
        return [
            Mistake(-ref.g_test, "has the wrong sign: differentiate the loss itself, not -loss."),
            Mistake(
                ref.g_test + l2_term,
                "includes the L2 term l2 * theta: the test loss L(z_test, theta) has no "
                "regulariser, only the training terms ell_i do.",
            ),
            Mistake(
                ref.g_i,
                "is the gradient at the training point z_i: use x_test, y_test here.",
            ),
        ]
    return [
        Mistake(-ref.g_i, "has the wrong sign: differentiate the loss itself, not -loss."),
        Mistake(
            ref.g_i - l2_term,
            "misses the L2 term: the training term is ell_i = L(z_i, theta) + (l2/2)||theta||^2, "
            "so its gradient adds l2 * theta.",
        ),
        Mistake(ref.g_test, "is the gradient at the test point: use training point i here."),
        Mistake(
            ref.g_i / ref.n,
            "is divided by n: g_i is the gradient of ONE training term, the 1/n belongs to R.",
        ),
    ]


def _check_vector(answer, name: str, ref: _Reference, want: torch.Tensor) -> CheckResult | None:
    value = as_tensor(answer, name, tuple(want.shape))
    if close(value, want):
        return None
    mistake = first_match(value, _vector_mistakes(ref, name))
    if mistake is not None:
        return not_yet(f"`{name}` {mistake.feedback}")
    return not_yet(
        f"`{name}` differs from the gradient by {float((value - want).norm()):.3g} (its norm is "
        f"{float(want.norm()):.3g}). Hint: torch.func.grad of a function that returns one "
        "scalar loss, evaluated at theta_hat."
    )


def check_gradients(g_test, g_i, inf: Influence, x_test, y_test, i: int) -> CheckResult:
    """Check g_test = grad L(z_test, theta_hat) and g_i = grad ell_i(theta_hat), both (p,)."""

    def check() -> CheckResult:
        ref = _reference(inf, x_test, y_test, i)
        for answer, name, want in [(g_test, "g_test", ref.g_test), (g_i, "g_i", ref.g_i)]:
            wrong = _check_vector(answer, name, ref, want)
            if wrong is not None:
                return wrong
        return passed("both gradients are right (g_i with the L2 term, g_test without).")

    return check_answer(check)


def check_hessian(H, inf: Influence) -> CheckResult:
    """Check H = Hess R(theta_hat), R = (1/n) sum_i L(z_i, theta) + (l2/2)||theta||^2, (p, p)."""

    def check() -> CheckResult:
        with arguments():
            ref = _hessian(check_influence(inf, "inf")).detach()
        value = as_tensor(H, "H", tuple(ref.shape))
        if close(value, ref):
            return passed(f"H is right: {inf.p} x {inf.p}, symmetric, L2 term included.")
        l2, n, eye = inf.objective.l2, inf.n, torch.eye(inf.p, dtype=ref.dtype)
        data_part = ref - l2 * eye
        mistakes = [
            Mistake(
                data_part,
                "misses the L2 term: R includes (l2/2)||theta||^2, whose Hessian is l2 * I.",
            ),
            Mistake(
                n * data_part + l2 * eye,
                "sums the losses instead of averaging them: R is the MEAN training loss.",
            ),
            Mistake(n * ref, "is n times too large: R is the MEAN training loss plus the L2 term."),
            Mistake(-ref, "has the wrong sign: take the Hessian of R, not of -R."),
        ]
        mistake = first_match(value, mistakes)
        if mistake is not None:
            return not_yet(f"`H` {mistake.feedback}")
        if not close(value, value.T):
            return not_yet("`H` is not symmetric: a Hessian of a scalar function always is.")
        return not_yet(
            f"`H` differs from Hess R by up to {float((value - ref).abs().max()):.3g}. Hint: "
            "torch.func.hessian of a function theta -> R(theta) over ALL n training points."
        )

    return check_answer(check)


def check_influence_value(I_up_loss, inf: Influence, x_test, y_test, i: int) -> CheckResult:
    """Check I_up,loss(z_i, z_test) = -g_test^T H^-1 g_i (one number)."""

    def check() -> CheckResult:
        ref = _reference(inf, x_test, y_test, i)
        want = float(ref.inf.influence_on_loss(x_test, y_test)[0, ref.i])
        value = as_number(I_up_loss, "I_up_loss")
        if close(value, want):
            return passed(
                f"I_up,loss = {want:.4g} matches Influence.influence_on_loss; "
                f"{'negative: upweighting z_i lowers' if want < 0 else 'positive: upweighting z_i raises'}"
                " the test loss."
            )
        n, l2_term = ref.n, ref.l2 * ref.theta
        mistakes = [
            Mistake(-want, "has the wrong sign: I_up,loss = MINUS g_test^T H^-1 g_i."),
            Mistake(
                -want / n,
                "is divided by n: that is the removal effect -(1/n) I_up,loss (the next step), "
                "not I_up,loss, the derivative with respect to an upweighting epsilon.",
            ),
            Mistake(want / n, "is divided by n: I_up,loss has no 1/n; removal does (next step)."),
            Mistake(want * n, "is multiplied by n: I_up,loss has no factor n."),
            Mistake(
                float(-ref.g_test @ ref.H @ ref.g_i),
                "multiplies by H: influence needs H^-1 (torch.linalg.solve(H, g_i)).",
            ),
            Mistake(
                _influence(ref.g_test, ref.H, ref.g_i - l2_term),
                "uses g_i without its L2 term l2 * theta.",
            ),
            Mistake(
                _influence(ref.g_test + l2_term, ref.H, ref.g_i),
                "uses a test gradient that includes the L2 term.",
            ),
        ]
        mistake = first_match(value, mistakes)
        if mistake is not None:
            return not_yet(f"`I_up_loss` {mistake.feedback}")
        return not_yet(
            f"`I_up_loss` is {value / want:.3g} times the right value. Hint: first check g_test, "
            "g_i and H above, then combine them as -g_test^T H^-1 g_i."
        )

    return check_answer(check)


def check_removal_effect(removal_effect, inf: Influence, x_test, y_test, i: int) -> CheckResult:
    """Check the predicted change of the test loss when z_i is removed: -(1/n) I_up,loss."""

    def check() -> CheckResult:
        inf_, index = _point(inf, i)
        with arguments():
            want = float(inf_.predicted_removal_effect(x_test, y_test)[0, index])
        n = inf_.n
        value = as_number(removal_effect, "removal_effect")
        if close(value, want):
            return passed(
                f"removal effect = {want:.4g}, as Influence.predicted_removal_effect: removing "
                f"z_i would {'raise' if want > 0 else 'lower'} the test loss, so z_i "
                f"{'helped' if want > 0 else 'hurt'} this prediction."
            )
        mistakes = [
            Mistake(
                -want,
                "has the wrong sign: removing z_i is upweighting it by epsilon = -1/n, so the "
                "change is (-1/n) * I_up,loss.",
            ),
            Mistake(
                n * want,
                "misses the 1/n: removing one point is upweighting it by epsilon = -1/n, not -1.",
            ),
            Mistake(
                -n * want,
                "is I_up,loss itself: removal is upweighting by epsilon = -1/n, so multiply by "
                "-1/n (both the sign and the 1/n are missing).",
            ),
            Mistake(want / n, "divides by n twice: the 1/n appears once."),
        ]
        mistake = first_match(value, mistakes)
        if mistake is not None:
            return not_yet(f"`removal_effect` {mistake.feedback}")
        return not_yet(
            f"`removal_effect` is {value / want:.3g} times the right value. Hint: removing z_i "
            "is upweighting it by epsilon = -1/n; the loss changes by about epsilon * I_up,loss."
        )

    return check_answer(check)
