"""Bad input gets a clear TypeError/ValueError naming the op -- never a numba traceback or a wrong answer."""
import numpy as np
import pytest

from tinyfcn import functional as F

x = np.ones((2, 3, 8, 8), np.float32)
w = np.ones((4, 3, 3, 3), np.float32)
wt = np.ones((3, 4, 3, 3), np.float32)


def with_nan(a, value=np.nan):
    a = a.copy()
    a.flat[5] = value
    return a


@pytest.mark.parametrize("call,error,message", [
    (lambda: F.conv2d_forward(x[0], w), ValueError, r"conv2d: x must be 4-D \(N, C_in, H, W\), got shape \(3, 8, 8\)"),
    (lambda: F.conv2d_forward(x, w[:, :2]), ValueError, "conv2d: x has 3 channels but weight"),
    (lambda: F.conv2d_forward(x.astype(np.int64), w), TypeError, "conv2d: x must be float32 or float64, got int64"),
    (lambda: F.conv2d_forward(x.astype(np.float16), w), TypeError, "float16"),
    (lambda: F.conv2d_forward(x, w.astype(np.float64)), TypeError, "conv2d: weight is float64 but the input is float32"),
    (lambda: F.conv2d_forward(x.tolist(), w), TypeError, "conv2d: x must be a numpy array, got list"),
    (lambda: F.conv2d_forward(with_nan(x), w), ValueError, "conv2d: x contains NaN or inf"),
    (lambda: F.conv2d_forward(x, with_nan(w, np.inf)), ValueError, "conv2d: weight contains NaN or inf"),
    (lambda: F.conv2d_forward(x, np.ones((4, 3, 11, 3), np.float32)), ValueError, "kernel 11x3 is larger than the padded input 8x8"),
    (lambda: F.conv2d_forward(x, w, np.ones(5, np.float32)), ValueError, r"bias must have shape \(4,\)"),
    (lambda: F.conv2d_forward(x, w, None, stride=0), ValueError, "stride >= 1"),
    (lambda: F.conv2d_forward(x, w, None, padding=-1), ValueError, "padding >= 0"),
    (lambda: F.conv2d_forward(x, w, None, stride=1.5), TypeError, "stride must be an int or a pair of ints"),
    (lambda: F.conv_transpose2d_forward(x, wt, None, stride=1, padding=6), ValueError, "conv_transpose2d: output size"),
    (lambda: F.conv_transpose2d_forward(x, w), ValueError, "conv_transpose2d: x has 3 channels"),
    (lambda: F.conv_transpose2d_forward(with_nan(x), wt), ValueError, "conv_transpose2d: x contains NaN"),
    (lambda: F.max_pool2d_forward(x[:, :, :1, :1], 2), ValueError, "max_pool2d: kernel 2x2 is larger than the padded input 1x1"),
    (lambda: F.max_pool2d_forward(x, 2, 2, padding=2), ValueError, "at most half the kernel size"),
    (lambda: F.max_pool2d_forward(with_nan(x), 2), ValueError, "max_pool2d: x contains NaN"),
    (lambda: F.max_unpool2d_forward(x, np.zeros(x.shape, np.int64), (0, 5)), ValueError, "output_size must be positive"),
    (lambda: F.max_unpool2d_forward(x, np.full(x.shape, 99), (8, 8)), ValueError, r"indices must lie in \[0, 64\)"),
    (lambda: F.max_unpool2d_forward(x, np.zeros(x.shape), (8, 8)), TypeError, "indices must be an integer array, got float64"),
    (lambda: F.max_unpool2d_forward(x, np.zeros((2, 3, 4, 4), np.int64), (8, 8)), ValueError, "indices must have the shape of x"),
    (lambda: F.relu_forward(with_nan(x)), ValueError, "relu: x contains NaN"),
    (lambda: F.softmax_cross_entropy(x, np.zeros((2, 8, 8), np.int64), reduction="avg"), ValueError, "reduction must be 'mean' or 'sum'"),
    (lambda: F.softmax_cross_entropy(x, np.zeros((2, 8, 7), np.int64)), ValueError, r"target must have shape \(N, H, W\) = \(2, 8, 8\)"),
    (lambda: F.softmax_cross_entropy(x, np.zeros((2, 8, 8))), TypeError, "target must be an integer array"),
    (lambda: F.softmax_cross_entropy(x, np.full((2, 8, 8), 3)), ValueError, r"labels must lie in \[0, 3\) or equal ignore_index=255; found \[3\]"),
    (lambda: F.softmax_cross_entropy(x, np.full((2, 8, 8), -2)), ValueError, r"found \[-2\]"),
    (lambda: F.softmax_cross_entropy(with_nan(x), np.zeros((2, 8, 8), np.int64)), ValueError, "scores contains NaN"),
])
def test_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_backward_checks_dout():
    out, cache = F.conv2d_forward(x, w)
    with pytest.raises(ValueError, match=r"conv2d_backward: dout must have the forward output's shape \(2, 4, 6, 6\)"):
        F.conv2d_backward(out[:, :, :5], cache)
    with pytest.raises(TypeError, match="dout is float64 but the input is float32"):
        F.conv2d_backward(out.astype(np.float64), cache)
    with pytest.raises(ValueError, match="dout contains NaN"):
        F.conv2d_backward(with_nan(out), cache)
    out, cache = F.max_pool2d_forward(x, 2)
    with pytest.raises(ValueError, match="max_pool2d_backward: dout must have"):
        F.max_pool2d_backward(out[:1], cache)


def test_huge_logits_are_stable_and_all_ignored_gives_zero():
    scores = np.zeros((1, 3, 2, 2), np.float32)
    scores[0, 0] = 1e4
    scores[0, 1] = -1e4
    target = np.array([[[0, 1], [2, 0]]])
    loss, d = F.softmax_cross_entropy(scores, target)
    assert np.isfinite(loss) and np.isfinite(d).all()
    # pixels labelled 1 or 2 cost about 1e4 (or 2e4), pixels labelled 0 cost nothing
    assert loss == pytest.approx((2e4 + 1e4) / 4, rel=1e-6)
    loss, d = F.softmax_cross_entropy(scores, np.full((1, 2, 2), 255))
    assert loss == 0.0 and not d.any()


def test_overflowing_sum_of_finite_values_is_not_called_nan():
    big = np.full((1, 1, 4, 4), 3e38, np.float32)                    # the sum overflows, the values are fine
    out, _ = F.relu_forward(big)
    assert np.array_equal(out, big)


def _forwards_float32():
    """Every op with a backward: its forward called on float32 input."""
    indices = np.zeros((2, 3, 4, 4), np.int64)
    return {
        "conv2d": lambda: F.conv2d_forward(x, w),
        "conv_transpose2d": lambda: F.conv_transpose2d_forward(x, wt),
        "max_pool2d": lambda: F.max_pool2d_forward(x, 2),
        "max_unpool2d": lambda: F.max_unpool2d_forward(x[:, :, :4, :4], indices, (8, 8)),
        "relu": lambda: F.relu_forward(x),
    }


@pytest.mark.parametrize("op", list(_forwards_float32()))
def test_every_backward_wants_dout_in_the_forward_dtype(op):
    out, cache = _forwards_float32()[op]()
    backward = getattr(F, f"{op}_backward")
    with pytest.raises(TypeError, match=f"{op}_backward: dout is float64 but the input is float32"):
        backward(out.astype(np.float64), cache)
    grads = backward(out, cache)
    assert all(g.dtype == np.float32 for g in (grads if isinstance(grads, tuple) else (grads,)) if g is not None)
