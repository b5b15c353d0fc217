"""Gradient checking: compare a hand-written backward pass with finite differences.

The idea: for a function f and a small step h, the centred difference
``(f(x + h e_i) - f(x - h e_i)) / 2h`` approximates ``df/dx_i`` with an error of
order h^2. For an array-valued f we check the gradient of ``sum(f(x) * dout)`` for
a random ``dout``: exactly what a backward pass computes.

Everything here works in float64 only: in float32 the rounding error of f,
divided by 2h, swamps the comparison. Choose inputs away from kinks (ReLU at 0,
ties inside a max-pool window), where finite differences and gradients disagree
for honest reasons.
"""
import numpy as np


def rel_error(a, b):
    """Largest absolute difference relative to the largest entry: ``max|a - b| / max(1e-8, max(|a| + |b|))``.

    Relative to the whole array rather than entry by entry, so entries that are
    exactly 0 in one and 1e-12 in the other do not count as a 100 % error.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(1e-8, np.max(np.abs(a) + np.abs(b))))


def _require_float64(name, a):
    if not isinstance(a, np.ndarray) or a.dtype != np.float64:
        got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
        raise TypeError(f"gradient checks need float64 arrays (float32 rounding swamps the finite "
                        f"differences); {name} is {got}")


def _probe(f, x, index, h, dout):
    """Centred difference of f (projected on dout) along one entry of x, which is restored afterwards."""
    old = x[index]
    try:
        x[index] = old + h
        plus = np.array(f(x), dtype=np.float64)    # a copy: f may return a view of x
        x[index] = old - h
        minus = np.array(f(x), dtype=np.float64)
    finally:
        x[index] = old
    diff = plus - minus
    return float(np.sum(diff * dout) if dout is not None else diff) / (2 * h)


def numerical_gradient(f, x, dout=None, h=1e-5):
    """Centred-difference gradient of ``f`` with respect to the array ``x``, changed in place and restored.

    Parameters
    ----------
    f : callable
        Called as ``f(x)``. Returns a scalar, or an array when ``dout`` is given.
    x : ndarray, float64
        Perturbed one entry at a time; every entry is restored, even if f raises.
    dout : ndarray, optional
        Upstream gradient for an array-valued f: the result is the gradient of ``sum(f(x) * dout)``.
    h : float

    Returns
    -------
    grad : ndarray, shape of x
    """
    _require_float64("x", x)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        grad[index] = _probe(f, x, index, h, dout)
    return grad


def sparse_gradient_check(f, x, analytic, dout=None, num_checks=20, h=1e-5, seed=0):
    """Compare ``analytic`` with centred differences at ``num_checks`` random entries of x (for big tensors).

    Returns
    -------
    float
        :func:`rel_error` between the analytic and numerical values at the sampled entries.
    """
    _require_float64("x", x)
    if np.shape(analytic) != x.shape:
        raise ValueError(f"sparse_gradient_check: analytic gradient shape {np.shape(analytic)} != x shape {x.shape}")
    rng = np.random.default_rng(seed)
    flat = rng.choice(x.size, size=min(num_checks, x.size), replace=False)
    indices = [np.unravel_index(i, x.shape) for i in flat]
    numeric = [_probe(f, x, index, h, dout) for index in indices]
    return rel_error([analytic[index] for index in indices], numeric)


def adjoint_error(A, AT, x, y):
    """How far ``AT`` is from the adjoint of the linear map ``A``: compares <A x, y> with <x, AT y>.

    Returns ``|<A x, y> - <x, AT y>| / max(|<A x, y>|, |<x, AT y>|, 1e-300)``. For a correct
    pair this is rounding error only (about 1e-15 in float64).
    """
    _require_float64("x", x)
    _require_float64("y", y)
    left = float(np.vdot(A(x), y))
    right = float(np.vdot(x, AT(y)))
    return abs(left - right) / max(abs(left), abs(right), 1e-300)
