"""The direct 3x3 convolution (no columns) against the im2col path: the dispatch rule, agreement, gradients, threads."""
import numpy as np
import pytest

from tinyfcn import functional as F
from tinyfcn import threads
from tinyfcn.ops.gradcheck import numerical_gradient, rel_error

AGREEMENT = {np.float32: 1e-6, np.float64: 1e-12}
"""Largest difference from the im2col path, relative to the largest entry: the two add the same
terms in another order (bit for bit: the weight and bias gradients, which both compute with the same products)."""


def _rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _both_paths(monkeypatch, x, w, b, padding, relu, dout):
    """(direct, im2col): each path's output and gradients (maps of at least :data:`F.SMALL_MAP` pixels:
    smaller ones are one product over the batch, before the rule is asked)."""
    results = []
    for pixels in (1, 10 ** 9):                                        # every map is large enough; none is
        monkeypatch.setattr(F, "DIRECT_PIXELS", pixels)
        out, cache = F.conv2d_forward(x, w, b, 1, padding, relu)
        assert (cache[5] is None) == (pixels == 1)                     # the direct path keeps no columns
        results.append((out, *F.conv2d_backward(dout, cache)))
    return results


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,c_out,padding", [((2, 4, 13, 12), 8, 1), ((1, 8, 14, 13), 4, 0), ((3, 4, 10, 11), 12, 2),
                                                 ((2, 12, 12, 11), 4, (1, 2)), ((1, 16, 12, 12), 16, 1)])
@pytest.mark.parametrize("bias,relu", [(True, False), (False, False), (True, True)])
def test_the_direct_path_agrees_with_im2col(monkeypatch, dtype, shape, c_out, padding, bias, relu):
    rng = np.random.default_rng(0)
    x, w = _rand(rng, shape, dtype), _rand(rng, (c_out, shape[1], 3, 3), dtype)
    b = _rand(rng, c_out, dtype) if bias else None
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    dout = _rand(rng, (shape[0], c_out, shape[2] + 2 * ph - 2, shape[3] + 2 * pw - 2), dtype)
    direct, im2col = _both_paths(monkeypatch, x, w, b, padding, relu, dout)
    for name, a, want in zip(("out", "dx", "dweight", "dbias"), direct, im2col):
        if want is None:
            assert a is None
            continue
        assert a.dtype == dtype and a.shape == want.shape, name
        if name in ("dweight", "dbias"):
            np.testing.assert_array_equal(a, want)
        else:
            assert np.abs(a - want).max() <= AGREEMENT[dtype] * np.abs(want).max(), name


def test_the_dispatch_rule():
    def direct(c_in, c_out, size, kernel=3, stride=1, padding=1):
        return F._direct(np.empty((c_out, c_in, kernel, kernel)), (stride, stride), (padding, padding), size * size)

    assert direct(16, 16, 64) and direct(16, 16, 128) and direct(8, 8, 64)          # FCN's conv1_2, at 64 and 128
    assert not direct(16, 32, 32) and not direct(32, 32, 64) and not direct(16, 16, 32)   # the BLAS is as fast
    assert not direct(3, 16, 64) and not direct(16, 6, 64)                           # four channels at a time
    assert not direct(16, 16, 64, kernel=5) and not direct(16, 16, 64, stride=2) and not direct(16, 16, 64, padding=3)


@pytest.mark.parametrize("padding,seed", [(1, 0), (0, 1), (2, 2)])
def test_direct_path_gradients(monkeypatch, padding, seed):
    monkeypatch.setattr(F, "DIRECT_PIXELS", 1)
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((2, 4, 14, 13)), rng.standard_normal((8, 4, 3, 3)), rng.standard_normal(8)
    out, cache = F.conv2d_forward(x, w, b, 1, padding)
    assert cache[5] is None
    dout = rng.standard_normal(out.shape)
    dx, dw, db = F.conv2d_backward(dout, cache)
    assert rel_error(dx, numerical_gradient(lambda v: F.conv2d_forward(v, w, b, 1, padding)[0], x, dout)) < 1e-7
    assert rel_error(dw, numerical_gradient(lambda v: F.conv2d_forward(x, v, b, 1, padding)[0], w, dout)) < 1e-7
    assert rel_error(db, numerical_gradient(lambda v: F.conv2d_forward(x, w, v, 1, padding)[0], b, dout)) < 1e-7


def test_the_same_bits_for_any_thread_count():
    rng = np.random.default_rng(0)
    x, w, b = _rand(rng, (5, 16, 64, 64), np.float32), _rand(rng, (16, 16, 3, 3), np.float32), _rand(rng, 16, np.float32)
    dout = _rand(rng, (5, 16, 64, 64), np.float32)

    def run():
        out, cache = F.conv2d_forward(x, w, b, 1, 1, True)
        assert cache[5] is None                                        # conv1_2's shape: the direct path
        return (out, *F.conv2d_backward(dout, cache))

    with threads.using(1):
        one = run()
    with threads.using(3):
        for a, c in zip(one, run()):
            np.testing.assert_array_equal(a, c)
