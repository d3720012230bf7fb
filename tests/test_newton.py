"""core.newton's chord_newton and newton_pcg on a quadratic risk R(theta) = theta^T A theta / 2 -
b^T theta, whose minimum A^-1 b is known, with preconditioners M of known quality; newton_pcg also
on a logistic regression risk against a float64 brute-force minimum."""

from __future__ import annotations

import pytest
import torch

from influence_widgets.core.newton import chord_newton, newton_pcg

A = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]], dtype=torch.float64)
B = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
MINIMUM = torch.linalg.solve(A, B)
START = torch.zeros(3, dtype=torch.float64)


def gradient(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad R, R) of the quadratic."""
    return A @ theta - B, 0.5 * theta @ A @ theta - B @ theta


def solver(M: torch.Tensor):
    return lambda rhs: torch.linalg.solve(M, rhs)


def test_the_exact_factor_takes_one_newton_step():
    result = chord_newton(gradient, START, solver(A), tol=1e-12, max_steps=10)
    torch.testing.assert_close(result.theta, MINIMUM, rtol=0, atol=1e-14)
    assert (result.steps, result.solves, result.refactorised) == (1, 1, False)
    assert result.gradient_norm <= 1e-12
    assert result.value < result.start_value == 0.0


def test_an_aged_factor_contracts_linearly_to_the_same_minimum():
    M = A + 0.3 * torch.eye(3, dtype=torch.float64)  # rate ||I - M^-1 A|| < 1
    result = chord_newton(gradient, START, solver(M), tol=1e-12, max_steps=100)
    torch.testing.assert_close(result.theta, MINIMUM, rtol=0, atol=1e-11)
    assert 3 < result.steps == result.solves < 100 and result.gradient_norm <= 1e-12


def test_max_steps_stops_above_the_tolerance():
    M = A + 0.3 * torch.eye(3, dtype=torch.float64)
    result = chord_newton(gradient, START, solver(M), tol=1e-12, max_steps=2)
    assert result.steps == result.solves == 2 and result.gradient_norm > 1e-12


def test_a_step_that_raises_the_gradient_norm_is_not_taken():
    M = 0.3 * A  # steps 1/0.3 times too long: ||grad R|| grows
    result = chord_newton(gradient, START, solver(M), tol=1e-12, max_steps=10)
    assert torch.equal(result.theta, START)
    assert (result.steps, result.solves) == (0, 1)
    assert result.gradient_norm == pytest.approx(float(B.norm()))


def test_a_slow_step_refactorises_once_at_the_current_theta():
    factor = {"M": 0.3 * A}
    seen = []

    def refactorise(theta: torch.Tensor) -> None:
        seen.append(theta.clone())
        factor["M"] = A

    result = chord_newton(
        gradient,
        START,
        lambda rhs: torch.linalg.solve(factor["M"], rhs),  # looked up at every call
        tol=1e-12,
        max_steps=10,
        refactorise=refactorise,
        slow_rate=0.5,
    )
    assert len(seen) == 1 and torch.equal(seen[0], START)  # the rejected step was not taken
    assert result.refactorised and (result.steps, result.solves) == (1, 1)
    torch.testing.assert_close(result.theta, MINIMUM, rtol=0, atol=1e-14)


# ----- newton_pcg -----------------------------------------------------------------------------
def hessian_at(theta: torch.Tensor):
    return lambda V: A @ V


def test_newton_pcg_takes_one_step_on_a_quadratic_however_aged_the_factor():
    """CG solves the Newton system to rtol whatever M is (M only sets the iterations), so one
    step reaches the minimum, where the chord iteration with the same M needs many."""
    M = A + 2.0 * torch.eye(3, dtype=torch.float64)
    result = newton_pcg(gradient, hessian_at, START, solver(M), tol=1e-10, max_steps=10, rtol=1e-14)
    torch.testing.assert_close(result.theta, MINIMUM, rtol=0, atol=1e-12)
    assert result.steps == 1 and 1 <= result.cg_iterations <= 3 and not result.refactorised
    chord = chord_newton(gradient, START, solver(M), tol=1e-10, max_steps=100)
    assert chord.steps > 5


def test_newton_pcg_converges_on_logistic_regression_to_the_brute_force_minimum():
    torch.manual_seed(0)
    X = torch.randn(40, 3, dtype=torch.float64)
    y = (X[:, 0] + 0.5 * torch.randn(40, dtype=torch.float64) > 0).double()
    l2 = 0.1

    def risk(w):
        return torch.nn.functional.binary_cross_entropy_with_logits(X @ w, y) + 0.5 * l2 * w @ w

    def grad_value(w):
        return torch.func.grad_and_value(risk)(w)

    def hessian(w):
        H = torch.func.hessian(risk)(w)
        return lambda V: H @ V

    reference = torch.zeros(3, dtype=torch.float64)
    for _ in range(50):  # plain Newton with the exact Hessian, to round-off
        reference = reference - torch.linalg.solve(torch.func.hessian(risk)(reference),
                                                   torch.func.grad(risk)(reference))  # fmt: skip
    M = torch.func.hessian(risk)(torch.zeros(3, dtype=torch.float64))  # the factor at the start
    result = newton_pcg(grad_value, hessian, torch.zeros(3, dtype=torch.float64), solver(M),
                        tol=1e-12, max_steps=20)  # fmt: skip
    torch.testing.assert_close(result.theta, reference, rtol=0, atol=1e-11)
    assert result.gradient_norm <= 1e-12 and result.value < result.start_value
    assert result.steps <= 8  # rtol = 1e-2: about two decades per step


def test_newton_pcg_refactorises_once_when_pcg_fails_and_then_converges():
    factor = {"solve": lambda B: torch.full_like(B, float("nan"))}
    seen = []

    def refactorise(theta: torch.Tensor) -> None:
        seen.append(theta.clone())
        factor["solve"] = solver(A)

    result = newton_pcg(gradient, hessian_at, START, lambda B: factor["solve"](B), tol=1e-12,
                        max_steps=10, max_cg=5, refactorise=refactorise)  # fmt: skip
    assert len(seen) == 1 and torch.equal(seen[0], START)
    assert result.refactorised and result.gradient_norm <= 1e-12
    torch.testing.assert_close(result.theta, MINIMUM, rtol=0, atol=1e-12)


def test_newton_pcg_without_refactorise_stops_where_a_step_fails():
    result = newton_pcg(gradient, hessian_at, START, lambda B: torch.full_like(B, float("nan")),
                        tol=1e-12, max_steps=10, max_cg=5)  # fmt: skip
    assert torch.equal(result.theta, START) and result.steps == 0 and not result.refactorised
    assert result.gradient_norm == pytest.approx(float(B.norm()))
