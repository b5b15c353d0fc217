"""The gradient checker itself: it must find real errors, not only agree with correct code."""
import numpy as np
import pytest

from tinyfcn.ops.gradcheck import (
    adjoint_error,
    numerical_gradient,
    rel_error,
    sparse_gradient_check,
)


def test_rel_error_scale_and_zeros():
    assert rel_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert rel_error([0.0, 1.0], [1e-12, 1.0]) < 1e-11          # a near-zero entry is not a 100 % error
    assert rel_error([1.0], [2.0]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        rel_error(np.zeros(2), np.zeros(3))


def test_numerical_gradient_of_known_functions():
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    assert rel_error(numerical_gradient(lambda v: np.sum(v ** 3), x), 3 * x ** 2) < 1e-9
    dout = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert rel_error(numerical_gradient(lambda v: np.sin(v), x, dout), np.cos(x) * dout) < 1e-9


def test_numerical_gradient_restores_input_even_when_f_raises():
    x = np.arange(4.0)
    calls = []

    def f(v):
        calls.append(v.copy())
        if len(calls) == 2:
            raise RuntimeError("boom")
        return v.sum()

    with pytest.raises(RuntimeError):
        numerical_gradient(f, x)
    assert np.array_equal(x, np.arange(4.0))


def test_float32_is_refused():
    with pytest.raises(TypeError, match="float64"):
        numerical_gradient(lambda v: v.sum(), np.ones(3, np.float32))
    with pytest.raises(TypeError, match="float64"):
        adjoint_error(lambda v: v, lambda v: v, np.ones(3, np.float32), np.ones(3))


def test_sparse_check_catches_a_wrong_gradient():
    x = np.random.default_rng(0).standard_normal((30, 40))
    right = 2 * x
    wrong = right.copy()
    wrong[wrong > 1.5] *= 1.01                                     # a 1 % error on a few entries
    f = lambda v: np.sum(v ** 2)                                   # noqa: E731
    assert sparse_gradient_check(f, x, right, num_checks=200) < 1e-7
    assert sparse_gradient_check(f, x, wrong, num_checks=1200) > 1e-4


def test_adjoint_error_catches_a_wrong_transpose():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((5, 3))
    x, y = rng.standard_normal(3), rng.standard_normal(5)
    assert adjoint_error(lambda v: A @ v, lambda v: A.T @ v, x, y) < 1e-14
    B = A.copy()
    B[0, 0] += 0.1
    assert adjoint_error(lambda v: A @ v, lambda v: B.T @ v, x, y) > 1e-4
