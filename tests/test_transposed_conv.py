"""Transposed convolution, FCN's upsampling: known answers, adjointness, and the bilinear kernel."""
import numpy as np
import pytest

from tinyfcn import functional as F
from tinyfcn import nn
from tinyfcn import reference as R
from tinyfcn.ops.init import bilinear_kernel

X = np.array([[0.0, 1.0], [2.0, 3.0]])[None, None]
K = np.array([[0.0, 1.0], [2.0, 3.0]])[None, None]


@pytest.mark.parametrize("impl", [F, R], ids=["kernel", "reference"])
def test_d2l_example_by_hand(impl):
    # Each input pixel adds a copy of K scaled by it:  0*K at (0,0), 1*K at (0,1), 2*K at (1,0), 3*K at (1,1).
    out, _ = impl.conv_transpose2d_forward(X, K, None)
    np.testing.assert_array_equal(out[0, 0], [[0, 0, 1], [0, 4, 6], [4, 12, 9]])
    out, _ = impl.conv_transpose2d_forward(X, K, None, stride=2)    # copies no longer overlap
    np.testing.assert_array_equal(out[0, 0], [[0, 0, 0, 1], [0, 0, 2, 3], [0, 2, 0, 3], [4, 6, 6, 9]])
    out, _ = impl.conv_transpose2d_forward(X, K, None, padding=1)   # padding trims the border
    np.testing.assert_array_equal(out[0, 0], [[4]])


@pytest.mark.parametrize("H,W", [(1, 1), (4, 4), (5, 8), (7, 3)])
def test_kernel3_stride2_pad1_gives_2H_minus_1(H, W):
    x = np.random.default_rng(0).standard_normal((2, 3, H, W))
    w = np.random.default_rng(1).standard_normal((3, 5, 3, 3))
    out, _ = F.conv_transpose2d_forward(x, w, None, stride=2, padding=1)
    assert out.shape == (2, 5, 2 * H - 1, 2 * W - 1)
    # an even output position (2i, 2j) sits on input pixel (i, j) and sees only the kernel centre
    np.testing.assert_allclose(out[:, :, ::2, ::2], np.einsum("ncij,co->noij", x, w[:, :, 1, 1]), rtol=1e-12)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (4, 2, 1), ((3, 5), (2, 3), (1, 2)), (16, 8, 4)])
def test_transposed_conv_is_the_adjoint_of_conv(kernel, stride, padding):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, *np.broadcast_to(kernel, 2)))
    x = rng.standard_normal((2, 3, 17, 24))
    y_shape = F.conv2d_forward(x, w, None, stride, padding)[0].shape
    y = rng.standard_normal(y_shape)
    t, _ = F.conv_transpose2d_forward(y, w, None, stride, padding)
    x = x[:, :, :t.shape[2], :t.shape[3]]        # rows the convolution never reads have no adjoint partner
    lhs = np.vdot(F.conv2d_forward(x, w, None, stride, padding)[0], y)
    rhs = np.vdot(x, F.conv_transpose2d_forward(y, w, None, stride, padding)[0])
    assert abs(lhs - rhs) / abs(lhs) < 1e-12


@pytest.mark.parametrize("kernel,stride,padding,size", [(3, 1, 1, 9), (4, 2, 1, 10), (3, 2, 0, 9), (5, 3, 2, 10)])
def test_transposed_conv_forward_equals_conv_backward_dx(kernel, stride, padding, size):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, kernel, kernel))
    x = rng.standard_normal((2, 3, size, size))
    out, cache = F.conv2d_forward(x, w, None, stride, padding)
    dout = rng.standard_normal(out.shape)
    dx, _, _ = F.conv2d_backward(dout, cache)
    up, _ = F.conv_transpose2d_forward(dout, w, None, stride, padding)
    assert up.shape == dx.shape
    np.testing.assert_allclose(up, dx, rtol=1e-12, atol=1e-12)


def test_bilinear_taps():
    w = bilinear_kernel(2, 2, 4, dtype=np.float64)
    taps = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(w[0, 0], np.outer(taps, taps))
    np.testing.assert_array_equal(w[0, 1], 0)                         # no mixing across classes
    np.testing.assert_allclose(bilinear_kernel(1, 1, 3, np.float64)[0, 0, 1], [0.5, 1.0, 0.5])
    np.testing.assert_allclose(bilinear_kernel(1, 1, 2, np.float64)[0, 0], np.full((2, 2), 0.25))
    with pytest.raises(ValueError, match="in_channels"):
        bilinear_kernel(3, 2, 4)


@pytest.mark.parametrize("s", [2, 4, 8, 16, 32])
def test_bilinear_upsampling_is_a_partition_of_unity_and_keeps_ramps_linear(s):
    w = bilinear_kernel(1, 1, 2 * s, dtype=np.float64)
    H, W = 5, 4
    const, _ = F.conv_transpose2d_forward(np.full((1, 1, H, W), 3.0), w, None, stride=s, padding=s // 2)
    assert const.shape == (1, 1, H * s, W * s)                        # exactly x s
    inner = (slice(None), slice(None), slice(s, -s), slice(s, -s))
    np.testing.assert_allclose(const[inner], 3.0, rtol=1e-12)
    i, j = np.mgrid[0:H, 0:W]
    ramp, _ = F.conv_transpose2d_forward((2.0 * i - 0.5 * j + 1.0)[None, None], w, None, stride=s, padding=s // 2)
    r = ramp[inner][0, 0]
    np.testing.assert_allclose(np.diff(r, n=2, axis=0), 0, atol=1e-10)   # linear down the columns
    np.testing.assert_allclose(np.diff(r, n=2, axis=1), 0, atol=1e-10)   # and along the rows
    np.testing.assert_allclose(np.diff(r, axis=0), 2.0 / s, rtol=1e-10)  # slope divided by the factor


@pytest.mark.parametrize("impl", [F, R], ids=["kernel", "reference"])
def test_backward_can_skip_the_weight_gradient(impl):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((3, 2, 4, 4)), rng.standard_normal(2)
    out, cache = impl.conv_transpose2d_forward(x, w, b, stride=2, padding=1)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = impl.conv_transpose2d_backward(dout, cache, weight_grad=False)
    assert dw is None and db is None
    np.testing.assert_allclose(dx, impl.conv_transpose2d_backward(dout, cache)[0], rtol=1e-12)


def test_frozen_upsampling_layer_skips_the_weight_gradient(monkeypatch):
    calls = []

    def spy(dout, cache, weight_grad=True):
        grads = backward(dout, cache, weight_grad)
        calls.append(grads)
        return grads

    backward = F.conv_transpose2d_backward
    monkeypatch.setattr(F, "conv_transpose2d_backward", spy)
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 3))
    frozen = nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1, init="bilinear", trainable=False, dtype=np.float64)
    live = nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1, init="bilinear", dtype=np.float64)
    dout = np.random.default_rng(1).standard_normal(frozen.forward(x).shape)
    live.forward(x)
    np.testing.assert_array_equal(frozen.backward(dout), live.backward(dout))
    assert calls[0][1] is None and calls[0][2] is None and frozen.grads == {}
    assert calls[1][1] is not None and set(live.grads) == {"weight", "bias"}


def test_the_kernel_copies_sum_to_the_transposed_convolution():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 4, 3)), rng.standard_normal((3, 2, 3, 4))
    copies = R.conv_transpose2d_copies(x, w, stride=(2, 1))
    assert copies.shape == (2, 3, 4, 3, 2, 9, 6)
    np.testing.assert_allclose(copies[1, 2, 3, 1, :, 6:9, 1:5], x[1, 2, 3, 1] * w[2], rtol=1e-15)
    out, _ = F.conv_transpose2d_forward(x, w, None, stride=(2, 1), padding=(1, 2))
    np.testing.assert_allclose(copies.sum(axis=(1, 2, 3))[:, :, 1:-1, 2:-2], out, rtol=1e-12)
