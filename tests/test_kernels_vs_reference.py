"""The compiled ops (tinyfcn.ops.functional) and each compiled kernel (tinyfcn.ops._kernels) against their plain-NumPy twins (tinyfcn.ops.reference)."""
import itertools
import os

import numpy as np
import pytest

from tinyfcn import functional as F
from tinyfcn import reference as R
from tinyfcn.ops import _kernels, blas
from tinyfcn.ops.check_table import _distinct
from tinyfcn.ops.sizes import conv2d_output_size, pair, pool2d_output_size

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
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("size", [(9, 8), (13, 12)])                  # small maps (one product) and image by image
def test_conv2d(dtype, kernel, stride, padding, bias, relu, size):
    x, w = data((3, 2, *size), dtype, 0), data((4, 2, *kernel), dtype, 1)
    b = data(4, dtype, 2) if bias else None
    out, cache = F.conv2d_forward(x, w, b, stride, padding, relu)
    ref, ref_cache = R.conv2d_forward(x.astype(np.float64), w.astype(np.float64), None if b is None else b.astype(np.float64),
                                      stride, padding, relu)
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
@pytest.mark.parametrize("reduction,ignore", list(itertools.product(["mean", "sum"], [255, -1, 3])))
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_cross_entropy(dtype, reduction, ignore, weighted):
    scores = data((2, 5, 6, 7), dtype, 0) * 4
    target = np.random.default_rng(1).integers(0, 5, (2, 6, 7))
    target[:, :2, :3] = ignore
    weights = np.array([0.5, 0.0, 2.0, 1.5, 3.0]) if weighted else None
    loss, d = F.softmax_cross_entropy(scores, target, ignore, reduction, weights)
    ref_loss, ref_d = R.softmax_cross_entropy(scores.astype(np.float64), target, ignore, reduction, weights)
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
        "batch_norm2d": (x, data(3, np.float64, 7), data(3, np.float64, 8), np.zeros(3), np.ones(3)),
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


# ---------------------------------------------------------------- each compiled kernel against its twin
# The kernels are called directly, as tinyfcn.ops.functional calls them: C-contiguous inputs, outputs allocated here.


def _valid_range_by_brute_force(n_out, n_in, offset, stride):
    """The output positions whose input position lies inside, found by trying each one."""
    return [o for o in range(n_out) if 0 <= o * stride + offset < n_in]


def _lanes_by_numpy(values):
    """Each value added into lane p % LANES of a plane of the values."""
    lanes = np.zeros(_kernels.LANES)
    np.add.at(lanes, np.arange(values.size) % _kernels.LANES, values)
    return lanes


def _sum_by_numpy(a, lanes):
    return lanes + _lanes_by_numpy(a.astype(np.float64))


def _dot_by_numpy(a, a0, b, b0, lanes):
    return lanes + _lanes_by_numpy((a.astype(np.float64) - a0) * (b.astype(np.float64) - b0))


def _reduce_by_numpy(lanes):
    return np.sum(lanes)


KERNEL_TWINS = {
    "_valid_range": _valid_range_by_brute_force,
    "im2col": R.im2col,
    "im2col_images": R.im2col_images,
    "col2im": R.col2im,
    "conv3x3": R.conv3x3,
    "winograd_weight": R.winograd_weight,
    "winograd_weight_adjoint": R.winograd_weight_adjoint,
    "winograd_input": R.winograd_input,
    "winograd_output": R.winograd_output,
    "winograd_output_adjoint": R.winograd_output_adjoint,
    "winograd_input_adjoint": R.winograd_input_adjoint,
    "winograd_chunks": R.winograd_chunks,
    "winograd_chunks_backward": R.winograd_chunks_backward,
    "product": R.product,
    "_cblas_gemm": R.product,
    "max_pool2d_forward": R.max_pool2d_forward,
    "max_pool2d_2x2": R.max_pool2d_forward,
    "max_unpool2d": R.max_unpool2d_forward,
    "max_unpool2d_backward": R.max_unpool2d_backward,
    "count_nonfinite": R.count_nonfinite,
    "relu_forward": R.relu_forward,
    "relu_backward": R.relu_backward,
    "bias_relu": R.bias_relu,
    "softmax_cross_entropy": R.softmax_cross_entropy,
    "sgd_update": R.sgd_update,
    "adam_update": R.adam_update,
    "_sum": _sum_by_numpy,
    "_dot": _dot_by_numpy,
    "_reduce": _reduce_by_numpy,
    "batch_norm2d_stats": R.batch_norm2d_stats,
    "batch_norm2d_normalize": R.batch_norm2d_normalize,
    "batch_norm2d_grad_sums": R.batch_norm2d_grad_sums,
    "batch_norm2d_grad_input": R.batch_norm2d_grad_input,
    "batch_norm2d_forward_channels": R.batch_norm2d_forward_channels,
    "batch_norm2d_backward_channels": R.batch_norm2d_backward_channels,
}
"""kernel name -> its plain-NumPy twin; each entry has a test below."""

DTYPES = [np.float64, np.float32]
SHAPES = [(2, 3, 9, 8), (1, 2, 7, 5), (3, 1, 4, 11)]
CONV_GEOMETRY = GEOMETRY + [((4, 4), 2, 1), ((3, 1), (1, 3), (0, 1)), ((2, 2), 3, 0)]


def test_the_reference_docstring_says_which_functions_are_twins_of_what():
    """Its first list: the ops with the signature of their functional twin; its second: the twins of kernels only."""
    import inspect
    import re
    ops, kernels_only, rest = (set(re.findall(r":func:`(\w+)`", part)) for part in R.__doc__.split("\n- ")[1:4])
    functions = {n for n, f in vars(R).items() if inspect.isfunction(f) and f.__module__ == R.__name__}
    assert ops | kernels_only | rest == functions                          # every function is named once
    assert ops == {n for n in functions if hasattr(F, n)}
    for name in ops:
        assert inspect.signature(getattr(R, name)) == inspect.signature(getattr(F, name)), name
    assert kernels_only <= {twin.__name__ for twin in KERNEL_TWINS.values()} and not kernels_only & ops


def test_every_kernel_has_a_twin_test():
    kernels = {name for name, obj in vars(_kernels).items()
               if callable(obj) and getattr(obj, "__module__", None) == _kernels.__name__}
    assert kernels == set(KERNEL_TWINS)


@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_images_pads_and_unfolds_a_range_of_images(dtype):
    for seed, (shape, kernel, stride, padding, (Ho, Wo)) in enumerate(_conv_cases()):
        x = data(shape, dtype, seed)
        n0 = shape[0] // 2                                             # from the middle of the batch on
        cols = np.full((shape[0] - n0, shape[1] * kernel[0] * kernel[1], Ho * Wo), np.nan, dtype)
        xpad = np.full((1, shape[1], shape[2] + 2 * padding[0], shape[3] + 2 * padding[1]), np.nan, dtype)  # stale
        _kernels.im2col_images(x, *padding, *kernel, *stride, Ho, Wo, n0, xpad, cols)
        np.testing.assert_array_equal(cols, KERNEL_TWINS["im2col_images"](x[n0:], kernel, stride, padding))


@pytest.mark.parametrize("n_out,n_in,stride", [(5, 5, 1), (4, 9, 2), (3, 7, 3), (6, 2, 1), (1, 1, 1)])
def test_valid_range(n_out, n_in, stride):
    for offset in range(-4, 5):
        lo, hi = _kernels._valid_range(n_out, n_in, offset, stride)
        assert list(range(lo, hi)) == KERNEL_TWINS["_valid_range"](n_out, n_in, offset, stride)


def _conv_cases():
    for shape, (kernel, stride, padding) in itertools.product(SHAPES, CONV_GEOMETRY):
        kernel, stride, padding = pair(kernel), pair(stride), pair(padding)
        out_size = conv2d_output_size(shape[2:], kernel, stride, padding)
        if min(out_size) >= 1:
            yield shape, kernel, stride, padding, out_size


@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_and_col2im(dtype):
    for seed, (shape, kernel, stride, padding, (Ho, Wo)) in enumerate(_conv_cases()):
        x = data(shape, dtype, seed)
        cols = np.empty((shape[1] * kernel[0] * kernel[1], shape[0] * Ho * Wo), dtype)
        (ph, pw) = padding
        _kernels.im2col(np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))), *kernel, *stride, Ho, Wo, cols)
        np.testing.assert_array_equal(cols, KERNEL_TWINS["im2col"](x, kernel, stride, padding))
        folded = np.empty(shape, dtype)
        cols = data(cols.shape, dtype, seed + 100)
        _kernels.col2im(cols, *kernel, *stride, *padding, Ho, Wo, folded)
        assert_close(folded, KERNEL_TWINS["col2im"](cols, shape, kernel, stride, padding), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kernel,stride,padding,ceil_mode", [
    ((2, 2), (2, 2), (0, 0), False), ((2, 2), (2, 2), (0, 0), True), ((3, 3), (2, 2), (1, 1), True),
    ((3, 2), (2, 1), (1, 0), False), ((1, 1), (1, 1), (0, 0), False), ((4, 3), (3, 2), (2, 1), True)])
def test_max_pool2d_forward(dtype, shape, kernel, stride, padding, ceil_mode):
    x = _distinct(shape, np.random.default_rng(0)).astype(dtype)
    out_shape = (*shape[:2], *pool2d_output_size(shape[2:], kernel, stride, padding, ceil_mode))
    out, indices = np.empty(out_shape, dtype), np.empty(out_shape, np.int64)
    _kernels.max_pool2d_forward(x, *kernel, *stride, *padding, out, indices)
    ref, (ref_indices, _, _) = KERNEL_TWINS["max_pool2d_forward"](x, kernel, stride, padding, ceil_mode)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(indices, ref_indices)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(2, 2, 6, 6)])
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool2d_2x2(dtype, shape, ties):
    """The written-out 2x2 kernel against the twin's general windows, odd sizes (the last row or column
    is left out) and ties (the first maximum in row-major order wins) included."""
    rng = np.random.default_rng(0)
    x = (rng.integers(-2, 2, shape) if ties else _distinct(shape, rng)).astype(dtype)
    x[..., 0, 0] = -np.inf
    out_shape = (*shape[:2], shape[2] // 2, shape[3] // 2)
    out, indices = np.empty(out_shape, dtype), np.empty(out_shape, np.int64)
    _kernels.max_pool2d_2x2(x, out, indices)
    ref, (ref_indices, _, _) = KERNEL_TWINS["max_pool2d_2x2"](x, 2)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(indices, ref_indices)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,out_size", [((2, 3, 4, 4), (8, 8)), ((1, 2, 3, 5), (7, 11)), ((2, 1, 5, 3), (2, 3))])
def test_max_unpool2d_and_its_backward(dtype, shape, out_size):
    rng = np.random.default_rng(0)
    indices = rng.integers(0, out_size[0] * out_size[1], shape)     # repeats included: they must add
    x = data(shape, dtype, 1)
    out = np.empty((*shape[:2], *out_size), dtype)
    _kernels.max_unpool2d(x, indices, out)
    ref, cache = KERNEL_TWINS["max_unpool2d"](x, indices, out_size)
    assert_close(out, ref, dtype)
    dout = data(out.shape, dtype, 2)
    dx = np.empty(shape, dtype)
    _kernels.max_unpool2d_backward(dout, indices, dx)
    np.testing.assert_array_equal(dx, KERNEL_TWINS["max_unpool2d_backward"](dout, cache))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [1, 7, 64, 1000])
def test_count_nonfinite(dtype, size):
    info = np.finfo(dtype)
    bits, exponent = F._EXPONENT_BITS[dtype]
    x = data(size, dtype, 0)
    specials = [np.nan, -np.nan, np.inf, -np.inf, info.max, -info.max, info.tiny, info.smallest_subnormal, 0.0, -0.0]
    rng = np.random.default_rng(size)
    for k in range(len(specials) + 1):
        y = x.copy()
        y[rng.integers(0, size, k)] = specials[:k]                # the first k specials, some at the same spot
        assert _kernels.count_nonfinite(y.view(bits), exponent) == KERNEL_TWINS["count_nonfinite"](y)
        assert F.all_finite(y) == np.isfinite(y).all()
    assert F.all_finite(np.ones((3, 10), dtype)[:, ::2])          # a non-contiguous view


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [1, 7, 64])
def test_relu_kernels(dtype, size):
    x = data(size, dtype, 0)
    x[0] = 0.0
    out = np.empty_like(x)
    _kernels.relu_forward(x, out)
    np.testing.assert_array_equal(out, KERNEL_TWINS["relu_forward"](x)[0])
    dout, dx = data(size, dtype, 1), np.empty_like(x)
    _kernels.relu_backward(dout, out, dx)
    np.testing.assert_array_equal(dx, KERNEL_TWINS["relu_backward"](dout, out))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 5, 3, 7), (1, 1, 1, 1), (3, 21, 2, 5)])
@pytest.mark.parametrize("mean", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_cross_entropy_kernel(dtype, shape, mean, weighted):
    N, K, H, W = shape
    scores = data(shape, dtype, 0) * 5
    target = np.random.default_rng(1).integers(0, K, (N, H, W))
    target.reshape(-1)[::3] = 255
    weights = np.random.default_rng(2).uniform(0.5, 2.0, K) if weighted else None
    if weighted and K > 1:
        weights[target.reshape(-1)[1]] = 0.0                      # a counted pixel's class weighs nothing
    ones = np.ones(K)                                                 # the kernel's weights for the unweighted loss
    dscores = np.empty(shape, dtype)
    total_weight = (ones if weights is None else weights)[target[target != 255]].sum()
    scale = 1.0 / total_weight if mean and total_weight else 1.0
    loss = scale * _kernels.softmax_cross_entropy(scores.reshape(N, K, -1), target.reshape(N, -1), 255,
                                                  ones if weights is None else weights, scale,
                                                  dscores.reshape(N, K, -1))
    ref_loss, ref_d = KERNEL_TWINS["softmax_cross_entropy"](scores.astype(np.float64), target, 255,
                                                            "mean" if mean else "sum", weights)
    assert loss == pytest.approx(ref_loss, rel=1e-9 if dtype == np.float64 else 1e-5, abs=1e-12)
    assert_close(dscores, ref_d, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum,weight_decay,nesterov", [(0.9, 5e-4, False), (0.9, 0.0, True), (0.0, 1e-2, False)])
def test_sgd_update(dtype, momentum, weight_decay, nesterov):
    w, grad, velocity = data(37, dtype, 0), data(37, dtype, 1), data(37, dtype, 2)
    w_ref, velocity_ref = w.copy(), velocity.copy()
    for _ in range(3):
        _kernels.sgd_update(w, grad, velocity, 0.1, momentum, weight_decay, nesterov)
        KERNEL_TWINS["sgd_update"](w_ref, grad, velocity_ref, 0.1, momentum, weight_decay, nesterov)
    assert_close((w, velocity), (w_ref, velocity_ref), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_decay,decoupled", [(0.0, False), (0.1, False), (0.1, True)])
def test_adam_update(dtype, weight_decay, decoupled):
    w, grad = data(37, dtype, 0), data(37, dtype, 1)
    exp_avg, exp_avg_sq = data(37, dtype, 2), data(37, dtype, 3) ** 2
    w_ref, exp_avg_ref, exp_avg_sq_ref = w.copy(), exp_avg.copy(), exp_avg_sq.copy()
    for step in (1, 2, 7):                                  # eps = 0.1: large enough that where it is added shows
        _kernels.adam_update(w, grad, exp_avg, exp_avg_sq, 0.01, 0.8, 0.95, 0.1, weight_decay, decoupled, step)
        KERNEL_TWINS["adam_update"](w_ref, grad, exp_avg_ref, exp_avg_sq_ref, 0.01, 0.8, 0.95, 0.1, weight_decay,
                                    decoupled, step)
    assert_close((w, exp_avg, exp_avg_sq), (w_ref, exp_avg_ref, exp_avg_sq_ref), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c_in,c_out,size", [(1, 4, (3, 3)), (4, 8, (9, 7)), (8, 4, (5, 66)), (3, 12, (13, 12)),
                                             (5, 2, (7, 70)), (2, 6, (66, 19))])
def test_conv3x3(dtype, c_in, c_out, size):
    xpad, w = data((c_in, *size), dtype, 0), data((c_out, c_in, 3, 3), dtype, 1)
    out = np.full((c_out, size[0] - 2, size[1] - 2), np.nan, dtype)
    _kernels.conv3x3(xpad, w, out)
    twin = KERNEL_TWINS["conv3x3"](xpad, w)
    assert np.array_equal(out, twin), "the kernel adds its terms in another order than its twin"  # to the bit
    assert_close(twin, R.conv2d_forward(xpad[None], w)[0][0], dtype)                             # and convolves


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (4, 16)])
def test_winograd_weight(dtype, shape):
    weight = data((*shape, 3, 3), dtype, 0)
    U = np.full((16, *shape), np.nan, dtype)                           # every value overwritten
    _kernels.winograd_weight(weight, U)
    assert_close(U, KERNEL_TWINS["winograd_weight"](weight), dtype)
    dU, dweight = data(U.shape, dtype, 1), np.full(weight.shape, np.nan, dtype)
    _kernels.winograd_weight_adjoint(dU, dweight)
    assert_close(dweight, KERNEL_TWINS["winograd_weight_adjoint"](dU), dtype)


def rows(a):
    """A (16, ...) array in the Winograd kernels' layout: its 16 rows flat, each followed by ROW_GAP NaNs."""
    out = np.full((16, a[0].size + _kernels.ROW_GAP), np.nan, a.dtype)
    out[:, :a[0].size] = a.reshape(16, -1)
    return out


def unrows(r, shape):
    """The (16, C, N, T) array of ``shape`` in the first columns of the kernels' rows ``r``."""
    return r[:, :int(np.prod(shape[1:]))].reshape(shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out_size", [(1, 1), (2, 2), (5, 4), (6, 9), (8, 7)])     # odd maps: tiles cut at the edge
def test_winograd_transforms(dtype, out_size):
    """Each transform against its twin, its (16, C, N, T) arrays as the kernels take them: rows with a gap of
    NaNs after each (:data:`tinyfcn.ops._kernels.ROW_GAP`), which the kernels must neither read nor write."""
    N, C = 3, 2
    th, tw = -(-out_size[0] // 2), -(-out_size[1] // 2)
    xpad, dout = data((N, C, 2 * th + 2, 2 * tw + 2), dtype, 0), data((N, C, *out_size), dtype, 1)
    M, dV = data((16, C, N, th * tw), dtype, 2), data((16, C, N, th * tw), dtype, 3)
    V = rows(np.full(M.shape, np.nan, dtype))                          # every value overwritten
    _kernels.winograd_input(xpad, V)
    assert_close(unrows(V, M.shape), KERNEL_TWINS["winograd_input"](xpad), dtype)
    out = np.full((N, C, *out_size), np.nan, dtype)
    _kernels.winograd_output(rows(M), out)
    assert_close(out, KERNEL_TWINS["winograd_output"](M, out.shape), dtype)
    dM = rows(np.full(M.shape, np.nan, dtype))
    _kernels.winograd_output_adjoint(dout, dM)
    assert_close(unrows(dM, M.shape), KERNEL_TWINS["winograd_output_adjoint"](dout), dtype)
    dxpad = np.full(xpad.shape, np.nan, dtype)
    _kernels.winograd_input_adjoint(rows(dV), dxpad)
    assert_close(dxpad, KERNEL_TWINS["winograd_input_adjoint"](dV, xpad.shape), dtype)
    assert np.isnan(V[:, M[0].size:]).all() and np.isnan(dM[:, M[0].size:]).all()   # the gaps untouched


def _blas_addresses(dtype):
    """The ``gemm`` arguments to test: 0 (numba's np.dot), and NumPy's BLAS where tinyfcn can call it."""
    return [0] + [address for address in [blas.gemm_address(dtype)] if address]


def test_numpy_blas_is_found_where_numpy_carries_the_wheels_openblas():
    config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    wheels = config.get("name") == "scipy-openblas" and "USE64BITINT" in config.get("openblas configuration", "")
    for dtype in DTYPES:
        assert (blas.gemm_address(dtype) != 0) == wheels
    assert blas.gemm_address(np.float16) == blas.gemm_address(np.int32) == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k,n", [(5, 7, 9), (16, 16, 64), (1, 4, 3), (4, 1, 3), (3, 4, 1)])
def test_product(dtype, m, k, n):
    """By either BLAS, each operand as stored or a transposed view of a stored matrix (as ``V[k].T``), into a
    C-contiguous output: its twin's values; NumPy's BLAS gives np.matmul's very bits (both at one thread) where no
    size is 1 (there NumPy may take another routine)."""
    from threadpoolctl import threadpool_limits
    for gemm, a_t, b_t in itertools.product(_blas_addresses(dtype), (False, True), (False, True)):
        a = data((k, m), dtype, 0).T if a_t else data((m, k), dtype, 0)
        b = data((n, k), dtype, 1).T if b_t else data((k, n), dtype, 1)
        out = np.full((m, n), np.nan, dtype)
        with threadpool_limits(1):
            _kernels.product(gemm, a, b, out)
            want = KERNEL_TWINS["product"](a, b)
        assert_close(out, want, dtype)
        if gemm and 1 not in (m, k, n):
            np.testing.assert_array_equal(out, want)


def test_the_kernels_run_as_plain_python_with_numba_disabled():
    """``NUMBA_DISABLE_JIT=1`` (a debugger, a coverage report) runs every kernel as Python, the BLAS
    products included: a Winograd layer of 16 channels, forward and backward, against the twins."""
    import subprocess
    import sys
    code = """
import numpy as np
from tinyfcn import functional as F, reference as R
rng = np.random.default_rng(0)
x, w, dout = (rng.standard_normal(s) for s in ((1, 16, 8, 8), (16, 16, 3, 3), (1, 16, 8, 8)))
out, cache = F.conv2d_forward(x, w, None, 1, 1)
assert F._winograd(w, (1, 1), (1, 1), 64) and cache[5] is not None
got, want = (out, *F.conv2d_backward(dout, cache)[:2]), R.conv2d_backward(dout, R.conv2d_forward(x, w, None, 1, 1)[1])[:2]
print(max(float(np.abs(g - v).max() / np.abs(v).max()) for g, v in zip(got, (R.conv2d_forward(x, w, None, 1, 1)[0], *want))))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "NUMBA_DISABLE_JIT": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.split()[-1]) < 1e-12


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size,padding,B", [((6, 5), (1, 1), 2), ((7, 8), (0, 2), 3), ((4, 4), (2, 0), 1), ((5, 9), (1, 2), 5)])
def test_winograd_chunks(dtype, size, padding, B):
    """The whole chunk loop, forward and backward, against its twin: five images, so the last chunk is
    smaller (but for B = 1 and 5); odd maps; the chunks split between two calls, as between two threads;
    with and without bias, ReLU, kept tiles and input gradient; the products by either BLAS."""
    N, C_in, C_out = 5, 3, 4
    (H, W), (ph, pw) = size, padding
    Ho, Wo = H + 2 * ph - 2, W + 2 * pw - 2
    th, tw = -(-Ho // 2), -(-Wo // 2)
    T, chunks = th * tw, -(-N // B)
    x, U, bias, dout = data((N, C_in, H, W), dtype, 0), data((16, C_out, C_in), dtype, 1), data(C_out, dtype, 2), \
        data((N, C_out, Ho, Wo), dtype, 3)
    S_in = C_in * B * T + _kernels.ROW_GAP                             # a chunk's rows of tiles, with their gaps
    scratch = lambda C: np.full(16 * (C * B * T + _kernels.ROW_GAP), np.nan, dtype)   # noqa: E731 -- read only where written
    xpad = np.full((B, C_in, 2 * th + 2, 2 * tw + 2), np.nan, dtype)
    for b, relu, keep, gemm in itertools.product((None, bias), (False, True), (False, True), _blas_addresses(dtype)):
        want, want_V, want_bad = KERNEL_TWINS["winograd_chunks"](x, padding, U, b, relu, B)
        out, V = np.full(want.shape, np.nan, dtype), np.full(chunks * 16 * S_in, np.nan, dtype) if keep else scratch(C_in)
        bad = sum(_kernels.winograd_chunks(x, ph, pw, U, gemm, b, relu, B, i0, i1, V, keep, xpad, scratch(C_out), out)
                  for i0, i1 in ((0, chunks // 2), (chunks // 2, chunks)))
        assert_close(out, want, dtype)
        assert bad == want_bad == 0
        if keep:                                                       # chunk i's (16, C_in, b, T) in its rows
            kept = [V[16 * S_in * i:16 * S_in * (i + 1)].reshape(16, S_in)[:, :C_in * len(x[i * B:(i + 1) * B]) * T]
                    for i in range(chunks)]
            assert_close(np.concatenate([k.ravel() for k in kept]), want_V, dtype)
        rectified = out if relu else None
        for with_U in (False, True):
            want_dU, want_dx, want_masked = KERNEL_TWINS["winograd_chunks_backward"](dout, rectified, x, padding,
                                                                                     U if with_U else None, B)
            dU = np.full((chunks, 16, C_out, C_in), np.nan, dtype)
            dx = np.full(x.shape, np.nan, dtype) if with_U else None
            masked = np.full(dout.shape, np.nan, dtype) if relu else None
            for i0, i1 in ((0, chunks // 2), (chunks // 2, chunks)):
                _kernels.winograd_chunks_backward(dout, rectified, x, ph, pw, U if with_U else None, gemm, B, i0, i1, V, keep,
                                                  masked, dU, dx, xpad, scratch(C_out), scratch(C_in))
            assert_close((dU, dx, masked), (want_dU, want_dx, want_masked), dtype)
    x[1, 2, 0, 0] = np.nan                                             # counted where a ReLU meets it (the twin's
    assert KERNEL_TWINS["winograd_chunks"](x, padding, U, bias, True, B)[2] > 0   # einsums spread it further: 0 * NaN)
    assert _kernels.winograd_chunks(x, ph, pw, U, 0, bias, True, B, 0, chunks, scratch(C_in), False, xpad, scratch(C_out),
                                    out) > 0


@pytest.mark.parametrize("out_size", [(1, 1), (5, 4), (6, 9), (8, 8)])
def test_the_winograd_output_transforms_add_in_their_documented_order(out_size):
    """Each value's terms are added in the order the docstrings give (``f = A^T m`` row by row, then ``f A``;
    ``A dy`` then ``(A dy) A^T``), whatever the loops look like: compared bit for bit with NumPy doing the
    same float32 sums, so a faster kernel cannot change any result of a training run."""
    N, C = 2, 3
    H, W = out_size
    th, tw = -(-H // 2), -(-W // 2)
    M, dout = data((16, C, N, th * tw), np.float32, 0), data((N, C, H, W), np.float32, 1)
    m = M.reshape(4, 4, C, N, th, tw)                                  # m[a, b]: row a, column b of every tile
    f = np.stack([m[0] + m[1] + m[2], m[1] - m[2] - m[3]])             # A^T m, f[r, b]
    y = np.stack([f[:, 0] + f[:, 1] + f[:, 2], f[:, 1] - f[:, 2] - f[:, 3]], axis=-1)    # f A, y[r, c, n, i, j, s]
    expected = y.transpose(2, 1, 3, 0, 4, 5).reshape(N, C, 2 * th, 2 * tw)[:, :, :H, :W]
    out = np.full((N, C, H, W), np.nan, np.float32)
    _kernels.winograd_output(rows(M), out)
    assert np.array_equal(out.view(np.uint32), expected.view(np.uint32))
    dy = np.zeros((N, C, 2 * th, 2 * tw), np.float32)
    dy[:, :, :H, :W] = dout
    d = dy.reshape(N, C, th, 2, tw, 2).transpose(3, 5, 1, 0, 2, 4)     # d[r, s, c, n, i, j]
    g = np.stack([d[0], d[0] + d[1], d[0] - d[1], -d[1]])              # A dy, g[a, s]
    p, q = g[:, 0], g[:, 1]
    expected = np.stack([p, p + q, p - q, -q], axis=1).reshape(16, C, N, th * tw)
    dM = rows(np.full(M.shape, np.nan, np.float32))
    _kernels.winograd_output_adjoint(dout, dM)
    assert np.array_equal(unrows(dM, M.shape).view(np.uint32), expected.view(np.uint32))

def test_the_winograd_adjoints_are_adjoints():
    xpad, dout = data((2, 3, 8, 10), np.float64, 0), data((2, 3, 5, 7), np.float64, 1)
    V, M = data((16, 3, 2, 3 * 4), np.float64, 2), data((16, 3, 2, 3 * 4), np.float64, 3)
    assert np.vdot(R.winograd_input(xpad), V) == pytest.approx(np.vdot(xpad, R.winograd_input_adjoint(V, xpad.shape)))
    assert np.vdot(R.winograd_output(M, dout.shape), dout) == pytest.approx(np.vdot(M, R.winograd_output_adjoint(dout)))
    weight, dU = data((4, 3, 3, 3), np.float64, 4), data((16, 4, 3), np.float64, 5)
    assert np.vdot(R.winograd_weight(weight), dU) == pytest.approx(np.vdot(weight, R.winograd_weight_adjoint(dU)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 9), (1, 4, 1), (3, 2, 130)])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_bias_relu(dtype, shape, bias, relu):
    out, b = data(shape, dtype, 0), data(shape[1], dtype, 1) if bias else None
    want, count = KERNEL_TWINS["bias_relu"](out, b, relu)
    assert _kernels.bias_relu(out, b, relu) == count == 0              # in place; returns the count
    assert_close(out, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_relu_counts_what_a_relu_would_have_refused(dtype):
    out = data((2, 3, 9), dtype, 0)
    out[0, 1, 2], out[1, 0, 0], out[1, 2, 8] = np.nan, np.inf, -np.inf
    assert KERNEL_TWINS["bias_relu"](out, None, True)[1] == 3
    assert _kernels.bias_relu(out.copy(), None, False) == 0            # no ReLU: nothing is hidden, nothing counted
    assert _kernels.bias_relu(out, None, True) == 3
    assert (out[0, 1, 2], out[1, 0, 0], out[1, 2, 8]) == (0, np.inf, 0)   # what a ReLU alone would have refused


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [0, 1, 5, 63, 64, 65, 1001])
def test_lane_sums(dtype, size):
    a, b = data(size, dtype, 0) + 3, data(size, dtype, 1)             # fewer values than lanes, and tails
    start = data(_kernels.LANES, np.float64, 2)                        # lanes already holding earlier planes' sums
    lanes = start.copy()
    _kernels._sum(a, lanes)
    np.testing.assert_allclose(lanes, KERNEL_TWINS["_sum"](a, start), rtol=1e-12, atol=1e-12)
    lanes = start.copy()
    _kernels._dot(a, 3.0, b, -0.5, lanes)
    np.testing.assert_allclose(lanes, KERNEL_TWINS["_dot"](a, 3.0, b, -0.5, start), rtol=1e-12, atol=1e-12)
    assert _kernels._reduce(lanes.copy()) == pytest.approx(KERNEL_TWINS["_reduce"](lanes), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 9), (1, 4, 1), (3, 2, 37), (2, 3, 200), (2, 1, 4096)])
@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm2d_kernels(dtype, shape, relu):
    N, C, P = shape
    x, dout = data(shape, dtype, 0) * 2 + 5, data(shape, dtype, 1)
    mean = data(C, np.float64, 2)
    scale, shift, centre, slope = (data(C, dtype, seed) for seed in (3, 4, 5, 6))
    rectified = data(shape, dtype, 7) if relu else None                # positive where the ReLU passed
    for c0, c1 in ((0, C), (C // 2, C)):                               # every channel, and the last half only
        part = slice(c0, c1)
        sums, squares = np.full(C, np.nan), np.full(C, np.nan)
        _kernels.batch_norm2d_stats(x, c0, c1, sums, squares)
        assert_close((sums[part], squares[part]), tuple(t[part] for t in KERNEL_TWINS["batch_norm2d_stats"](x)),
                     np.float64)
        out = np.full(shape, np.nan, dtype)
        count = _kernels.batch_norm2d_normalize(x, mean.astype(dtype), scale, shift, relu, c0, c1, out)
        want, want_count = KERNEL_TWINS["batch_norm2d_normalize"](x, mean.astype(dtype), scale, shift, relu)
        assert count == want_count == 0
        assert_close(out[:, part], want[:, part], dtype)
        products = np.full(C, np.nan)
        _kernels.batch_norm2d_grad_sums(dout, x, mean, rectified, c0, c1, sums, products)
        want = KERNEL_TWINS["batch_norm2d_grad_sums"](dout, x, mean, rectified)
        assert_close((sums[part], products[part]), tuple(t[part] for t in want), np.float64)
        dx = np.full(shape, np.nan, dtype)
        _kernels.batch_norm2d_grad_input(dout, x, mean.astype(dtype), scale, centre, slope, rectified, c0, c1, dx)
        want = KERNEL_TWINS["batch_norm2d_grad_input"](dout, x, mean.astype(dtype), scale, centre, slope, rectified)
        assert_close(dx[:, part], want[:, part], dtype)
        assert np.isnan(dx[:, :c0]).all()                              # channels outside the range untouched


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm2d_channel_range_kernels(dtype, training, relu):
    """Each direction's steps in one call for a range of channels, against the steps' twins."""
    shape = N, C, P = (3, 5, 37)
    x, dout = data(shape, dtype, 0) * 2 + 5, data(shape, dtype, 1)
    gamma, beta = data(C, dtype, 2), data(C, dtype, 3)
    given_mean, given_var = data(C, np.float64, 4) + 5, data(C, np.float64, 5) ** 2
    rectified = data(shape, dtype, 7) if relu else None
    want, want_bad, want_mean, want_var, want_inv_std = KERNEL_TWINS["batch_norm2d_forward_channels"](
        x, gamma, beta, given_mean, given_var, training, 1e-5, relu)
    want_dx, want_dgamma, want_dbeta = KERNEL_TWINS["batch_norm2d_backward_channels"](
        dout, x, gamma, want_mean, want_inv_std, rectified, training)
    for c0, c1 in ((0, C), (2, C)):                                    # every channel, and the last ones only
        part = slice(c0, c1)
        mean, var = (given_mean.copy(), given_var.copy()) if not training else (np.full(C, np.nan), np.full(C, np.nan))
        inv_std, mean_x, scale = np.full(C, np.nan), np.full(C, np.nan, dtype), np.full(C, np.nan, dtype)
        out = np.full(shape, np.nan, dtype)
        bad = _kernels.batch_norm2d_forward_channels(x, gamma, beta, training, 1e-5, relu, c0, c1, mean, var, inv_std,
                                                     mean_x, scale, out)
        assert bad == want_bad == 0
        assert_close((mean[part], var[part], inv_std[part]), (want_mean[part], want_var[part], want_inv_std[part]),
                     np.float64)
        assert_close(out[:, part], want[:, part], dtype)
        assert np.isnan(out[:, :c0]).all()                             # channels outside the range untouched
        dbeta, dgamma, dx = np.full(C, np.nan), np.full(C, np.nan), np.full(shape, np.nan, dtype)
        centre, slope = np.zeros(C, dtype), np.zeros(C, dtype)
        _kernels.batch_norm2d_backward_channels(dout, x, gamma, mean, inv_std, rectified, training, c0, c1, dbeta,
                                                dgamma, mean_x, scale, centre, slope, dx)
        assert_close((dbeta[part], dgamma[part]), (want_dbeta[part], want_dgamma[part]), np.float64)
        assert_close(dx[:, part], want_dx[:, part], dtype)
        assert np.isnan(dx[:, :c0]).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 9, 8), (1, 2, 7, 5), (4, 5, 1, 1)])
@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm2d(dtype, training, shape, relu):
    C = shape[1]
    x, dout = data(shape, dtype, 0) * 3 + 2, data(shape, dtype, 1)
    gamma, beta, running_mean = data(C, dtype, 2), data(C, dtype, 3), data(C, dtype, 4)
    running_var = np.abs(data(C, dtype, 5)) + 0.5
    ref_running = running_mean.astype(np.float64), running_var.astype(np.float64)
    out, cache = F.batch_norm2d_forward(x, gamma, beta, running_mean, running_var, training, 0.3, relu=relu)
    ref, ref_cache = R.batch_norm2d_forward(*(a.astype(np.float64) for a in (x, gamma, beta)), *ref_running, training, 0.3,
                                            relu=relu)
    assert_close(out, ref, dtype)
    assert (out >= 0).all() if relu else (out < 0).any()
    assert_close((running_mean, running_var), ref_running, dtype)     # updated in place alike (or left alone)
    assert_close(F.batch_norm2d_backward(dout, cache), R.batch_norm2d_backward(dout.astype(np.float64), ref_cache), dtype)
    if dtype == np.float64:                                           # either backward takes either cache, in both modes
        assert_close(F.batch_norm2d_backward(dout, ref_cache), R.batch_norm2d_backward(dout, cache), dtype)


def test_batch_norm2d_with_relu_is_batch_norm2d_then_relu():
    x, dout = data((3, 4, 5, 6), np.float64, 0), data((3, 4, 5, 6), np.float64, 1)
    gamma, beta = data(4, np.float64, 2), data(4, np.float64, 3)
    fused, cache = F.batch_norm2d_forward(x, gamma, beta, np.zeros(4), np.ones(4), relu=True)
    normalized, bn_cache = F.batch_norm2d_forward(x, gamma, beta, np.zeros(4), np.ones(4))
    rectified, relu_cache = F.relu_forward(normalized)
    np.testing.assert_array_equal(fused, rectified)
    assert_close(F.batch_norm2d_backward(dout, cache), F.batch_norm2d_backward(F.relu_backward(dout, relu_cache), bn_cache),
                 np.float64)


@pytest.mark.parametrize("kernel,stride,padding", CONV_GEOMETRY)
def test_reference_conv2d_is_im2col_and_one_matrix_product(kernel, stride, padding):
    x, w, b = data((2, 3, 9, 8), np.float64, 0), data((4, 3, *kernel), np.float64, 1), data(4, np.float64, 2)
    out, _ = R.conv2d_forward(x, w, b, stride, padding)
    product = w.reshape(4, -1) @ R.im2col(x, kernel, stride, padding)              # (C_out, N*H_out*W_out)
    np.testing.assert_allclose(out, product.reshape(4, 2, *out.shape[2:]).transpose(1, 0, 2, 3)
                               + b[:, None, None], rtol=1e-12, atol=1e-12)


def test_reference_col2im_is_the_adjoint_of_im2col():
    x = data((2, 3, 7, 6), np.float64, 0)
    cols = R.im2col(x, (3, 2), (2, 1), (1, 1))
    c = data(cols.shape, np.float64, 1)
    assert np.vdot(cols, c) == pytest.approx(np.vdot(x, R.col2im(c, x.shape, (3, 2), (2, 1), (1, 1))), rel=1e-12)
