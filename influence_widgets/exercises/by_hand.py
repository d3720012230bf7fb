r"""Exercise 1: the influence of one training point, by hand, from H and two gradients.

The student computes g_test = grad L(z_test, theta_hat), g_i = grad ell_i(theta_hat) (with the L2
term), H = Hess R(theta_hat), I_up,loss(z_i, z_test) = -g_test^T H^-1 g_i and the predicted
removal effect -(1/n) I_up,loss; each checker compares one of them with what
:class:`~influence_widgets.Influence` computes and names the typical mistake it reproduces (wrong
sign, H in place of H^-1, a missing or doubled 1/n, a missing L2 term, the gradient of the whole
risk in place of one point's, another training point, a wrong shape) and the idea to revisit. The
feedback never shows the formula or the code of the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import grad, hessian, vmap

from influence_widgets.core.errors import check_index
from influence_widgets.core.influence import Influence, check_influence
from influence_widgets.exercises.feedback import (
    CheckResult,
    Mistake,
    arguments,
    as_tensor,
    check_answer,
    close,
    first_match,
    not_yet,
    passed,
)

__all__ = ["check_gradients", "check_hessian", "check_influence_value", "check_removal_effect"]

I_UP = r"$\mathcal{I}_{\mathrm{up,loss}}$"
NEAR_ZERO = 1e-3  # an answer this small against the right one is "almost zero"


@dataclass(frozen=True)
class _Reference:
    """The exact pieces, from the Influence object's own objective."""

    inf: Influence  # checked
    i: int  # checked: in [0, n)
    theta: torch.Tensor  # theta_hat, (p,)
    l2: float
    n: int
    g_test: torch.Tensor  # grad L(z_test), no L2 term
    g_train: torch.Tensor  # grad ell_j of every training point, L2 term included, (n, p)
    H: torch.Tensor  # Hess R (+ damping I)

    @property
    def g_i(self) -> torch.Tensor:
        return self.g_train[self.i]


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
    X, y = inf.train.tensors()
    per_point = vmap(grad(obj.train_term), in_dims=(None, 0, 0))
    g_train = per_point(obj.theta, obj.cast_inputs(X), obj.cast_targets(y))
    return _Reference(  # on the CPU, where the answers are compared (a CUDA Influence too)
        inf=inf,
        i=i,
        theta=obj.theta.detach().cpu(),
        l2=obj.l2,
        n=inf.n,
        g_test=g_test.detach().cpu(),
        g_train=g_train.detach().cpu(),
        H=_hessian(inf).detach(),
    )


def _influence(g_test: torch.Tensor, H: torch.Tensor, g_i: torch.Tensor) -> float:
    return float(-g_test @ torch.linalg.solve(H, g_i))


def _near_zero(value: torch.Tensor | float, want: torch.Tensor | float) -> bool:
    value, want = torch.as_tensor(value), torch.as_tensor(want)
    return bool(value.norm() <= NEAR_ZERO * want.norm())


WHOLE_RISK = (
    "is almost zero (norm {norm:.2g}, where the answer's is {want:.2g}). That is what the "
    r"gradient of the whole training risk $R$ looks like at its minimum $\hat\theta$: zero, by "
    "the definition of a minimum. The per-point gradient was asked for: {which}."
)


def _other_point(value: torch.Tensor, ref: _Reference, name: str) -> str | None:
    """Feedback when ``value`` is the gradient of another training point (with or without the L2
    term), else None."""
    without_l2 = ref.g_train - ref.l2 * ref.theta
    for rows, missing in [(ref.g_train, ""), (without_l2, " without the L2 term")]:
        hits = [j for j in range(ref.n) if j != ref.i and close(value, rows[j])]
        if hits:
            return (
                f"`{name}` is the gradient of training point #{hits[0]}{missing}, but the "
                f"exercise asks about training point `i` = {ref.i}: check which point you "
                "differentiate at."
            )
    return None


def _vector_mistakes(ref: _Reference, which: str) -> list[Mistake]:
    l2_term = ref.l2 * ref.theta
    data_mean = ref.g_train.mean(0) - l2_term  # the mean of grad L(z_j) over the training set
    sign = Mistake(
        -(ref.g_test if which == "g_test" else ref.g_i),
        "has the wrong sign: it is the gradient of minus the loss. Differentiate the loss itself.",
    )
    whole = [
        Mistake(
            data_mean,
            "is the gradient of the average loss over all $n$ training points (without the "
            "regulariser), not of one point's loss. The per-point gradient was asked for.",
        ),
        Mistake(
            ref.n * data_mean,
            "is the gradient of the summed loss over all $n$ training points, not of one "
            "point's loss. The per-point gradient was asked for.",
        ),
    ]
    if which == "g_test":
        return [
            sign,
            Mistake(
                ref.g_test + l2_term,
                r"includes the gradient of the L2 term: the test loss $L(z_{test}, \theta)$ has "
                r"no regulariser; only the training terms $\ell_i$ carry it.",
            ),
            Mistake(
                ref.g_i,
                r"is the gradient at the training point $z_i$: $g_{test}$ is taken at the test "
                "point (`x_test`, `y_t`).",
            ),
            *whole,
        ]
    return [
        sign,
        Mistake(
            ref.g_i - l2_term,
            r"misses the L2 term: revisit the definition of the training term $\ell_i$ at the "
            "top of the notebook: the regulariser is part of it, so its gradient has a part "
            "from the L2 term too.",
        ),
        Mistake(
            ref.g_test,
            r"is the gradient at the test point: $g_i$ belongs to training point $z_i$ "
            "(`x_i`, `y_i`).",
        ),
        Mistake(
            ref.g_i / ref.n,
            r"is $n$ times too small: $g_i$ is the gradient of ONE training term $\ell_i$; the "
            r"average over the $n$ points belongs to the risk $R$, not to $g_i$.",
        ),
        *whole,
    ]


def _vector_shapes(ref: _Reference, name: str) -> dict[tuple[int, ...], str]:
    which = "the test point" if name == "g_test" else "training point `i`"
    return {
        (ref.n, ref.g_i.numel()): (
            f"it holds one gradient per training point ({ref.n} rows), but `{name}` is the "
            f"gradient at one point, {which}."
        ),
        (ref.g_i.numel(), ref.g_i.numel()): (
            f"that is a matrix of second derivatives, but `{name}` is a gradient: one first "
            r"derivative per parameter of $\theta$."
        ),
    }


def _check_vector(answer, name: str, ref: _Reference, want: torch.Tensor) -> CheckResult | None:
    value = as_tensor(answer, name, tuple(want.shape), _vector_shapes(ref, name))
    if close(value, want):
        return None
    mistake = first_match(value, _vector_mistakes(ref, name))
    if mistake is not None:
        return not_yet(f"`{name}` {mistake.feedback}")
    if _near_zero(value, want):
        which = (
            r"the gradient of the loss at the one test point $z_{test}$"
            if name == "g_test"
            else r"the gradient of the one training term $\ell_i$ of training point $z_i$"
        )
        return not_yet(
            f"`{name}` "
            + WHOLE_RISK.format(norm=float(value.norm()), want=float(want.norm()), which=which)
        )
    if name == "g_i":
        other = _other_point(value, ref, name)
        if other is not None:
            return not_yet(other)
    return not_yet(
        f"`{name}` differs from the gradient by {float((value - want).norm()):.3g} (its norm is "
        f"{float(want.norm()):.3g}). Revisit which scalar function of $\\theta$ you "
        r"differentiate, and that you evaluate its gradient at $\hat\theta$ (`theta`)."
    )


def check_gradients(g_test, g_i, inf: Influence, x_test, y_test, i: int) -> CheckResult:
    """Check g_test = grad L(z_test, theta_hat) and g_i = grad ell_i(theta_hat), both (p,)."""

    def check() -> CheckResult:
        ref = _reference(inf, x_test, y_test, i)
        for answer, name, want in [(g_test, "g_test", ref.g_test), (g_i, "g_i", ref.g_i)]:
            wrong = _check_vector(answer, name, ref, want)
            if wrong is not None:
                return wrong
        return passed(r"both gradients are right ($g_i$ with the L2 term, $g_{test}$ without).")

    return check_answer(check)


def _hessian_mistakes(ref: torch.Tensor, inf: Influence, i: int | None) -> list[Mistake]:
    l2, n, eye = inf.objective.l2, inf.n, torch.eye(inf.p, dtype=ref.dtype)
    data_part = ref - l2 * eye
    mistakes = [
        Mistake(
            data_part,
            r"misses the L2 term: revisit the definition of $R$: the regulariser is part of "
            "the risk, so its curvature is part of the Hessian.",
        ),
        Mistake(
            n * data_part + l2 * eye,
            r"sums the training losses instead of averaging them: revisit the definition of "
            r"$R$, a mean over the $n$ training points.",
        ),
        Mistake(
            n * ref,
            r"is $n$ times too large: $R$ is the MEAN training loss plus the L2 term.",
        ),
        Mistake(ref / n, r"is $n$ times too small: the mean over the $n$ points is taken once."),
        Mistake(-ref, "has the wrong sign: take the Hessian of $R$, not of $-R$."),
    ]
    if i is not None:
        obj = inf.objective
        x_i, y_i = inf.train.take([i])
        x_i, y_i = obj.cast_inputs(x_i), obj.cast_targets(y_i)
        one = hessian(lambda th: obj.train_terms(th, x_i, y_i)[0])(obj.theta).detach().cpu()
        mistakes.append(
            Mistake(
                one + inf.damping * eye,
                r"is the Hessian of one training term $\ell_i$: $H$ is the curvature of the "
                r"whole risk $R$, over all $n$ training points.",
            )
        )
    return mistakes


def check_hessian(H, inf: Influence, i: int | None = None) -> CheckResult:
    """Check H = Hess R(theta_hat), R = (1/n) sum_i L(z_i, theta) + (l2/2)||theta||^2, (p, p).

    ``i``: the exercise's training point, whose own Hessian (of ell_i) is a typical wrong answer
    that the feedback then names."""

    def check() -> CheckResult:
        if i is None:
            with arguments():
                inf_, index = check_influence(inf, "inf"), None
        else:
            inf_, index = _point(inf, i)
        ref = _hessian(inf_).detach()
        p, n = inf_.p, inf_.n
        shapes = {
            (p,): r"that is a vector, one number per parameter, like a gradient; $H$ holds the "
            "second derivatives of $R$, one for each pair of parameters.",
            (n, p, p): r"it holds one Hessian per training point, but $H$ is the Hessian of "
            "the one function $R$.",
        }
        value = as_tensor(H, "H", tuple(ref.shape), shapes)
        if close(value, ref):
            return passed(f"H is right: {p} x {p}, symmetric, L2 term included.")
        mistake = first_match(value, _hessian_mistakes(ref, inf_, index))
        if mistake is not None:
            return not_yet(f"`H` {mistake.feedback}")
        if not close(value, value.T):
            return not_yet("`H` is not symmetric: a Hessian of a scalar function always is.")
        return not_yet(
            f"`H` differs from the Hessian of $R$ by up to {float((value - ref).abs().max()):.3g}."
            r" Revisit the definition of $R$: over ALL $n$ training points, at $\hat\theta$, "
            "regulariser included."
        )

    return check_answer(check)


def _influence_mistakes(ref: _Reference, want: float) -> list[Mistake]:
    n, l2_term = ref.n, ref.l2 * ref.theta
    eye = torch.eye(len(ref.theta), dtype=ref.H.dtype)
    return [
        Mistake(
            -want,
            f"has the wrong sign: revisit the sign in the definition of {I_UP} at the top of "
            "the notebook.",
        ),
        Mistake(
            -want / n,
            f"is the removal effect of step 4, not {I_UP}: the influence is a derivative with "
            r"respect to the weight $\varepsilon$ of $z_i$, before any choice of $\varepsilon$.",
        ),
        Mistake(
            want / n,
            f"is divided by $n$: {I_UP} is a derivative with respect to $\\varepsilon$ and has no "
            "division by $n$ (removal has one: next step).",
        ),
        Mistake(want * n, f"is multiplied by $n$: {I_UP} has no factor $n$."),
        Mistake(
            float(-ref.g_test @ ref.H @ ref.g_i),
            "multiplies by $H$ where influence needs its inverse $H^{-1}$: the inverse "
            r"curvature turns a gradient into a change of $\hat\theta$ (a Newton step). Revisit "
            "step 3's advice on solving rather than inverting.",
        ),
        Mistake(
            float(-ref.g_test @ ref.g_i),
            "leaves out the Hessian: influence weighs the two gradients by the inverse "
            r"curvature $H^{-1}$ of the risk, not by the identity.",
        ),
        Mistake(
            _influence(ref.g_test, ref.H - ref.l2 * eye, ref.g_i),
            "uses a Hessian without the L2 term: check `H` with step 2's checker.",
        ),
        Mistake(
            _influence(ref.g_test, ref.H, ref.g_i - l2_term),
            r"uses $g_i$ without its L2 term: check the gradients with step 1's checker.",
        ),
        Mistake(
            _influence(ref.g_test + l2_term, ref.H, ref.g_i),
            "uses a test gradient that includes the L2 term: check the gradients with step "
            "1's checker.",
        ),
    ]


def _scalar_shapes(ref_n: int, p: int, name: str) -> dict[tuple[int, ...], str]:
    return {
        (p,): f"it is a vector of {p} numbers, one per parameter, but `{name}` is one number: "
        "revisit how the two gradient vectors (and the Hessian) combine into a single number.",
        (ref_n,): f"it holds one value per training point ({ref_n}), but `{name}` is about one "
        "point: training point `i`.",
        (1, ref_n): f"it holds one value per training point ({ref_n}), but `{name}` is about "
        "one point: training point `i`.",
    }


def check_influence_value(I_up_loss, inf: Influence, x_test, y_test, i: int) -> CheckResult:
    """Check I_up,loss(z_i, z_test) = -g_test^T H^-1 g_i (one number)."""

    def check() -> CheckResult:
        ref = _reference(inf, x_test, y_test, i)
        every = ref.inf.influence_on_loss(x_test, y_test)[0].detach().cpu()
        want = float(every[ref.i])
        shapes = _scalar_shapes(ref.n, len(ref.theta), "I_up_loss")
        value = float(as_tensor(I_up_loss, "I_up_loss", (), shapes))
        if close(value, want):
            effect = "lowers" if want < 0 else "raises"
            return passed(
                f"{I_UP} = {want:.4g} matches `Influence.influence_on_loss`; "
                f"{'negative' if want < 0 else 'positive'}: upweighting $z_i$ {effect} the test "
                "loss."
            )
        mistake = first_match(value, _influence_mistakes(ref, want))
        if mistake is not None:
            return not_yet(f"`I_up_loss` {mistake.feedback}")
        if _near_zero(value, want):
            return not_yet(
                f"`I_up_loss` is almost zero ({value:.2g}) where the answer is not: one of its "
                r"pieces is probably about zero, such as the gradient of the whole training risk "
                r"$R$ (zero at its minimum) in place of a per-point gradient. Check `g_test` "
                "and `g_i` with step 1's checker."
            )
        hits = [j for j in range(ref.n) if j != ref.i and close(value, every[j])]
        if hits:
            return not_yet(
                f"`I_up_loss` is the value for training point #{hits[0]}, but the exercise asks "
                f"about training point `i` = {ref.i}: check `g_i` with step 1's checker."
            )
        return not_yet(
            f"`I_up_loss` is {value / want:.3g} times the right value. First check `g_test`, "
            "`g_i` and `H` with the checkers above, then revisit how the definition of "
            f"{I_UP} at the top of the notebook combines them."
        )

    return check_answer(check)


def _removal_mistakes(want: float, n: int) -> list[Mistake]:
    return [
        Mistake(
            -want,
            r"has the wrong sign: removing $z_i$ is an upweighting by a NEGATIVE $\varepsilon$."
            " Revisit the last sentence of the introduction.",
        ),
        Mistake(
            n * want,
            r"is $n$ times too large: revisit how large an upweighting $\varepsilon$ removing "
            "one of the $n$ training points is.",
        ),
        Mistake(
            -n * want,
            f"is {I_UP} itself: removing $z_i$ is one particular upweighting $\\varepsilon$. "
            "Revisit which one (its sign and its size both matter) and how the test loss "
            r"changes to first order in $\varepsilon$.",
        ),
        Mistake(want / n, r"is $n$ times too small: the scaling by $n$ appears once."),
    ]


def check_removal_effect(removal_effect, inf: Influence, x_test, y_test, i: int) -> CheckResult:
    """Check the predicted change of the test loss when z_i is removed: -(1/n) I_up,loss."""

    def check() -> CheckResult:
        inf_, index = _point(inf, i)
        with arguments():
            every = inf_.predicted_removal_effect(x_test, y_test)[0].detach().cpu()
        want, n = float(every[index]), inf_.n
        shapes = _scalar_shapes(n, inf_.p, "removal_effect")
        value = float(as_tensor(removal_effect, "removal_effect", (), shapes))
        if close(value, want):
            return passed(
                f"removal effect = {want:.4g}, as `Influence.predicted_removal_effect`: removing "
                f"$z_i$ would {'raise' if want > 0 else 'lower'} the test loss, so $z_i$ "
                f"{'helped' if want > 0 else 'hurt'} this prediction."
            )
        mistake = first_match(value, _removal_mistakes(want, n))
        if mistake is not None:
            return not_yet(f"`removal_effect` {mistake.feedback}")
        hits = [j for j in range(n) if j != index and close(value, every[j])]
        if hits:
            return not_yet(
                f"`removal_effect` is the value for training point #{hits[0]}, but the exercise "
                f"asks about training point `i` = {index}."
            )
        return not_yet(
            f"`removal_effect` is {value / want:.3g} times the right value. Revisit what "
            r"removing $z_i$ means as an upweighting $\varepsilon$, and how the test loss "
            r"changes to first order in $\varepsilon$ (check `I_up_loss` first)."
        )

    return check_answer(check)
