"""core.newton.chord_newton on a quadratic risk R(theta) = theta^T A theta / 2 - b^T theta, whose
minimum A^-1 b is known, with preconditioners M of known quality."""

from __future__ import annotations

import pytest
import torch

from influence_widgets.core.newton import chord_newton

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
