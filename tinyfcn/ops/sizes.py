"""Output-size arithmetic shared by every layer.

One formula per op, exactly as PyTorch defines them (dilation 1, output_padding 0):

- convolution:            H_out = floor((H + 2p - k) / s) + 1
- transposed convolution: H_out = (H - 1) * s - 2p + k
- max-pooling:            H_out = floor_or_ceil((H + 2p - k) / s) + 1, and in ceil mode
                          the last window must start inside the input or its left padding.
"""
import operator

import numpy as np


def pair(value, name="value"):
    """Return ``value`` as an ``(h, w)`` tuple of ints; an int ``v`` becomes ``(v, v)``.

    Anything integer-like counts (``operator.index``): Python ints and NumPy integers,
    but not bools, floats or strings.

    Raises
    ------
    TypeError
        If ``value`` is neither an integer nor a pair of integers.
    """
    items = value if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or not all(hasattr(v, "__index__") and not isinstance(v, (bool, np.bool_)) for v in items):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return (operator.index(items[0]), operator.index(items[1]))


def conv2d_output_size(size, kernel, stride, padding):
    """Spatial output size ``(H_out, W_out)`` of a convolution.

    ``H_out = floor((H + 2p - k) / s) + 1``; a result below 1 means the kernel does not fit.
    """
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(size, kernel, stride, padding))


def conv_transpose2d_output_size(size, kernel, stride, padding):
    """Spatial output size ``(H_out, W_out)`` of a transposed convolution: ``(H - 1) * s - 2p + k``."""
    return tuple((n - 1) * s - 2 * p + k for n, k, s, p in zip(size, kernel, stride, padding))


def pool2d_output_size(size, kernel, stride, padding, ceil_mode=False):
    """Spatial output size ``(H_out, W_out)`` of max-pooling, with PyTorch's ceil-mode rule.

    In ceil mode the division rounds up, but a window that would start beyond the
    input and its left padding is dropped (it would only see right padding).
    """
    out = []
    for n, k, s, p in zip(size, kernel, stride, padding):
        span = n + 2 * p - k
        o = (span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (o - 1) * s >= n + p:
            o -= 1
        out.append(o)
    return tuple(out)
