"""The compiled ops (tinyfcn.functional) against their plain-NumPy twins (tinyfcn.reference)."""
import itertools

import numpy as np
import pytest

from tinyfcn import functional as F
from tinyfcn import reference as R
from tinyfcn.checks import _distinct

GEOMETRY = [((3, 3), 1, 1), ((1, 1), 1, 0), ((2, 4), (2, 1), (1, 2)), ((5, 3), 3, 2), ((4, 4), 2, 0)]


def assert_close(got, want, dtype):
    """rtol 1e-9 in float64; in float32, 1e-5 of the largest entry (the kernel's rounding)."""
    got, want = (got,) if not isinstance(got, tuple) else got, (want,) if not isinstance(want, tuple) else want
    for g, w in zip(got, want):
        if w is None:
            assert g is None
            continue
        assert g.dtype == dtype and g.shape == w.shape
        scale = np.max(np.abs(w)) if w.size else 0.0
        np.testing.assert_allclose(g, w, rtol=1e-9 if dtype == np.float64 else 0, atol=1e-5 * scale if dtype == np.float32 else 1e-12 * scale)


def data(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kernel,stride,padding", GEOMETRY)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d(dtype, kernel, stride, padding, bias):
    x, w = data((3, 2, 9, 8), dtype, 0), data((4, 2, *kernel), dtype, 1)
    b = data(4, dtype, 2) if bias else None
    out, cache = F.conv2d_forward(x, w, b, stride, padding)
    ref, ref_cache = R.conv2d_forward(x.astype(np.float64), w.astype(np.float64), None if b is None else b.astype(np.float64), stride, padding)
    assert_close(out, ref, dtype)
    dout = data(out.shape, dtype, 3)
    assert_close(F.conv2d_backward(dout, cache), R.conv2d_backward(dout.astype(np.float64), ref_cache), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kernel,stride,padding", GEOMETRY + [((4, 4), 2, 1), ((16, 16), 8, 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose2d(dtype, kernel, stride, padding, bias):
    x, w = data((2, 3, 5, 4), dtype, 0), data((3, 2, *kernel), dtype, 1)
    b = data(2, dtype, 2) if bias else None
    out, cache = F.conv_transpose2d_forward(x, w, b, stride, padding)
    ref, ref_cache = R.conv_transpose2d_forward(x.astype(np.float64), w.astype(np.float64), None if b is None else b.astype(np.float64), stride, padding)
    assert_close(out, ref, dtype)
    dout = data(out.shape, dtype, 3)
    assert_close(F.conv_transpose2d_backward(dout, cache), R.conv_transpose2d_backward(dout.astype(np.float64), ref_cache), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kernel,stride,padding,ceil_mode", [
    (2, None, 0, False), (2, None, 0, True), (3, 2, 1, True), ((3, 2), (2, 1), (1, 0), False), (3, 1, 1, False), (5, 3, 2, True)])
def test_max_pool2d_and_unpool(dtype, kernel, stride, padding, ceil_mode):
    x = _distinct((2, 3, 9, 7), np.random.default_rng(0)).astype(dtype)
    out, cache = F.max_pool2d_forward(x, kernel, stride, padding, ceil_mode)
    ref, ref_cache = R.max_pool2d_forward(x, kernel, stride, padding, ceil_mode)
    assert_close(out, ref, dtype)
    np.testing.assert_array_equal(cache[0], ref_cache[0])
    dout = data(out.shape, dtype, 3)
    assert_close(F.max_pool2d_backward(dout, cache), R.max_pool2d_backward(dout, ref_cache), dtype)
    up, up_cache = F.max_unpool2d_forward(out, cache[0], (9, 7))
    ref_up, ref_up_cache = R.max_unpool2d_forward(out, ref_cache[0], (9, 7))
    assert_close(up, ref_up, dtype)
    d_up = data((2, 3, 9, 7), dtype, 4)
    assert_close(F.max_unpool2d_backward(d_up, up_cache), R.max_unpool2d_backward(d_up, ref_up_cache), dtype)


def test_max_pool_ties_pick_the_first_maximum():
    x = np.zeros((1, 1, 2, 2))
    _, (indices, _, _) = F.max_pool2d_forward(x, 2)
    assert indices[0, 0, 0, 0] == 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu(dtype):
    x = data((2, 3, 5, 4), dtype, 0)
    out, cache = F.relu_forward(x)
    ref, ref_cache = R.relu_forward(x)
    assert_close(out, ref, dtype)
    dout = data(x.shape, dtype, 1)
    assert_close(F.relu_backward(dout, cache), R.relu_backward(dout, ref_cache), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction,ignore", itertools.product(["mean", "sum"], [255, -1, 3]))
def test_softmax_cross_entropy(dtype, reduction, ignore):
    scores = data((2, 5, 6, 7), dtype, 0) * 4
    target = np.random.default_rng(1).integers(0, 5, (2, 6, 7))
    target[:, :2, :3] = ignore
    loss, d = F.softmax_cross_entropy(scores, target, ignore, reduction)
    ref_loss, ref_d = R.softmax_cross_entropy(scores.astype(np.float64), target, ignore, reduction)
    assert loss == pytest.approx(ref_loss, rel=1e-9 if dtype == np.float64 else 1e-5)
    assert_close(d, ref_d, dtype)


def test_softmax_matches_reference():
    s = data((2, 4, 3, 3), np.float64, 0) * 50
    np.testing.assert_allclose(F.softmax(s), R.softmax(s), rtol=1e-12)
    np.testing.assert_allclose(F.softmax(s).sum(axis=1), 1.0)


def test_non_contiguous_inputs_give_the_same_answer():
    x = data((2, 8, 9, 3), np.float64, 0).transpose(0, 3, 1, 2)       # (2, 3, 8, 9), not C-contiguous
    w = data((4, 3, 3, 3), np.float64, 1)[:, :, ::-1, ::-1]
    assert not x.flags.c_contiguous and not w.flags.c_contiguous
    out, _ = F.conv2d_forward(x, w, None, 1, 1)
    ref, _ = R.conv2d_forward(np.ascontiguousarray(x), np.ascontiguousarray(w), None, 1, 1)
    np.testing.assert_allclose(out, ref, rtol=1e-9)


# ---------------------------------------------------------------- one cache layout for both modules


def _op_pairs():
    """op -> (forward arguments, backward keyword arguments) for every op with a cache, float64."""
    x, w, wt = data((2, 3, 7, 6), np.float64, 0), data((4, 3, 3, 2), np.float64, 1), data((3, 4, 3, 2), np.float64, 2)
    b = data(4, np.float64, 3)
    pooled_x = _distinct((2, 3, 7, 6), np.random.default_rng(4))
    _, (indices, _, _) = F.max_pool2d_forward(pooled_x, 3, 2, 1)
    return {
        "conv2d": (x, w, b, (2, 1), (1, 0)),
        "conv_transpose2d": (x, wt, b, (2, 3), (1, 0)),
        "max_pool2d": (pooled_x, 3, 2, 1, True),
        "max_unpool2d": (data(indices.shape, np.float64, 5), indices, (7, 6)),
        "relu": (x,),
    }


@pytest.mark.parametrize("op", list(_op_pairs()))
def test_either_backward_accepts_either_forwards_cache(op):
    args = _op_pairs()[op]
    out, f_cache = getattr(F, f"{op}_forward")(*args)
    ref, r_cache = getattr(R, f"{op}_forward")(*args)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    dout = data(out.shape, np.float64, 6)
    f_backward, r_backward = getattr(F, f"{op}_backward"), getattr(R, f"{op}_backward")
    want = r_backward(dout, r_cache)
    for got in (f_backward(dout, r_cache), r_backward(dout, f_cache), f_backward(dout, f_cache)):
        assert_close(got, want, np.float64)
