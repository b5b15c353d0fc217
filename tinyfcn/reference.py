"""The ops of tinyfcn in plain NumPy, written to be read beside the math.

This is the teaching version. Every function here has the same signature and
returns the same values as its twin in :mod:`tinyfcn.functional`, which runs
compiled kernels instead; the tests prove that the two agree. These versions
loop in Python and check nothing, so keep the arrays small.

Layout: NCHW. Convolution weights are (C_out, C_in, kH, kW); transposed-convolution
weights are (C_in, C_out, kH, kW), as in PyTorch. Every ``*_forward`` returns
``(out, cache)`` and every ``*_backward`` takes ``(dout, cache)``.
"""
import numpy as np

from .labels import IGNORE
from .sizes import conv2d_output_size, conv_transpose2d_output_size, pair, pool2d_output_size


def conv2d_forward(x, weight, bias=None, stride=1, padding=0):
    """Cross-correlate ``x`` with ``weight``: a dot product of the kernel with every window.

    ``out[n, o, i, j] = b[o] + sum_{c,u,v} weight[o, c, u, v] * xpad[n, c, i*sh + u, j*sw + v]``

    Shapes: x (N, C_in, H, W), weight (C_out, C_in, kH, kW), bias (C_out,) or None,
    out (N, C_out, H_out, W_out) with ``H_out = floor((H + 2p - kH) / s) + 1``.
    """
    stride, padding = pair(stride), pair(padding)
    (sh, sw), (ph, pw) = stride, padding
    kh, kw = weight.shape[2:]
    Ho, Wo = conv2d_output_size(x.shape[2:], (kh, kw), stride, padding)
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out = np.zeros((x.shape[0], weight.shape[0], Ho, Wo), dtype=x.dtype)
    for i in range(Ho):
        for j in range(Wo):
            window = xpad[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]      # (N, C_in, kH, kW)
            out[:, :, i, j] = np.tensordot(window, weight, axes=([1, 2, 3], [1, 2, 3]))
    if bias is not None:
        out += bias[None, :, None, None]
    return out, (x, weight, bias is not None, stride, padding)


def conv2d_backward(dout, cache):
    """Gradients of :func:`conv2d_forward`: each window's output pushes ``dout`` back through the same dot product.

    ``dweight[o] += dout[n, o, i, j] * window``, ``dxpad[window] += dout[n, o, i, j] * weight[o]``,
    ``dbias[o] = sum_{n,i,j} dout[n, o, i, j]``. Returns ``(dx, dweight, dbias)``; dbias is None without a bias.
    """
    x, weight, has_bias, (sh, sw), (ph, pw) = cache
    kh, kw = weight.shape[2:]
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dxpad = np.zeros_like(xpad)
    dweight = np.zeros_like(weight)
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            window = xpad[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            g = dout[:, :, i, j]                                              # (N, C_out)
            dweight += np.tensordot(g, window, axes=([0], [0]))
            dxpad[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += np.tensordot(g, weight, axes=([1], [0]))
    dx = dxpad[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]
    dbias = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dweight, dbias


def conv_transpose2d_forward(x, weight, bias=None, stride=1, padding=0):
    """Transposed convolution as the paper draws it: a weighted copy of the kernel for every input pixel.

    Each input pixel ``x[n, c, i, j]`` adds ``x[n, c, i, j] * weight[c]`` (a (C_out, kH, kW)
    block) into the output window that starts at ``(i*sh - ph, j*sw - pw)``. Overlapping
    copies sum; the padding trims ``p`` rows and columns from each border.

    Shapes: x (N, C_in, H, W), weight (C_in, C_out, kH, kW), bias (C_out,) or None,
    out (N, C_out, H_out, W_out) with ``H_out = (H - 1) * s - 2p + kH``.
    """
    stride, padding = pair(stride), pair(padding)
    (sh, sw), (ph, pw) = stride, padding
    N, C_in, H, W = x.shape
    kh, kw = weight.shape[2:]
    Ho, Wo = conv_transpose2d_output_size((H, W), (kh, kw), stride, padding)
    full = np.zeros((N, weight.shape[1], Ho + 2 * ph, Wo + 2 * pw), dtype=x.dtype)
    for n in range(N):
        for c in range(C_in):
            for i in range(H):
                for j in range(W):
                    full[n, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += x[n, c, i, j] * weight[c]
    out = full[:, :, ph:ph + Ho, pw:pw + Wo]
    if bias is not None:
        out = out + bias[None, :, None, None]
    return out, (x, weight, bias is not None, stride, padding)


def conv_transpose2d_backward(dout, cache):
    """Gradients of :func:`conv_transpose2d_forward`: every copy reads back the output window it was added to.

    ``dx[n, c, i, j] = <dout_full[n, :, window(i, j)], weight[c]>`` (a convolution of ``dout``),
    ``dweight[c] = sum_{n,i,j} x[n, c, i, j] * dout_full[n, :, window(i, j)]``,
    ``dbias[o] = sum dout[n, o]``. Returns ``(dx, dweight, dbias)``; dbias is None without a bias.
    """
    x, weight, has_bias, (sh, sw), (ph, pw) = cache
    N, C_in, H, W = x.shape
    kh, kw = weight.shape[2:]
    dfull = np.pad(dout, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dx = np.zeros_like(x)
    dweight = np.zeros_like(weight)
    for n in range(N):
        for i in range(H):
            for j in range(W):
                window = dfull[n, :, i * sh:i * sh + kh, j * sw:j * sw + kw]   # (C_out, kH, kW)
                dx[n, :, i, j] = np.tensordot(weight, window, axes=3)
                dweight += x[n, :, i, j][:, None, None, None] * window
    dbias = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dweight, dbias


def max_pool2d_forward(x, kernel_size=2, stride=None, padding=0, ceil_mode=False):
    """Keep the largest value of every window, and remember where it was.

    Padding counts as -inf, so a window's maximum is always a real input value.
    ``indices[n, c, i, j] = h*W + w``, the flat position of the (first) maximum in its
    input plane. Shapes: x (N, C, H, W), out and indices (N, C, H_out, W_out) with
    ``H_out = floor_or_ceil((H + 2p - k) / s) + 1``.
    """
    kernel = pair(kernel_size)
    stride = kernel if stride is None else pair(stride)
    padding = pair(padding)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    N, C, H, W = x.shape
    Ho, Wo = pool2d_output_size((H, W), kernel, stride, padding, ceil_mode)
    out = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    indices = np.empty((N, C, Ho, Wo), dtype=np.int64)
    for i in range(Ho):
        for j in range(Wo):
            h0, w0 = max(i * sh - ph, 0), max(j * sw - pw, 0)
            h1, w1 = min(i * sh - ph + kh, H), min(j * sw - pw + kw, W)
            window = x[:, :, h0:h1, w0:w1].reshape(N, C, -1)
            arg = window.argmax(axis=2)                                    # first maximum
            dh, dw = np.divmod(arg, w1 - w0)
            out[:, :, i, j] = np.take_along_axis(window, arg[:, :, None], axis=2)[:, :, 0]
            indices[:, :, i, j] = (h0 + dh) * W + (w0 + dw)
    return out, (indices, x.shape)


def max_unpool2d(x, cache_or_indices, output_size):
    """Put every value back where its maximum came from; everything else is 0.

    ``out[n, c].flat[indices[n, c, i, j]] += x[n, c, i, j]``. Where pooling windows
    overlap and share a maximum, the values add (this is exactly max-pooling's backward
    pass). ``output_size`` is (H_out, W_out). Shapes: x and indices (N, C, H, W).
    """
    indices = cache_or_indices[0] if isinstance(cache_or_indices, tuple) else cache_or_indices
    N, C = x.shape[:2]
    Ho, Wo = output_size
    out = np.zeros((N, C, Ho * Wo), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            np.add.at(out[n, c], indices[n, c].ravel(), x[n, c].ravel())
    return out.reshape(N, C, Ho, Wo)


def max_unpool2d_backward(dout, cache_or_indices):
    """Gradient of :func:`max_unpool2d`: each input reads the gradient at its index, ``dx = dout.flat[indices]``."""
    indices = cache_or_indices[0] if isinstance(cache_or_indices, tuple) else cache_or_indices
    N, C = dout.shape[:2]
    return np.take_along_axis(dout.reshape(N, C, -1), indices.reshape(N, C, -1), axis=2).reshape(indices.shape)


def max_pool2d_backward(dout, cache):
    """Route each gradient to the input that won its window (argmax routing); overlapping winners add."""
    indices, x_shape = cache
    return max_unpool2d(dout, indices, x_shape[2:])


def relu_forward(x):
    """``out = max(x, 0)``. The cache is the output: the gradient passes where it is positive."""
    out = np.maximum(x, 0)
    return out, out


def relu_backward(dout, cache):
    """``dx = dout * (out > 0)``."""
    return dout * (cache > 0)


def softmax(scores, axis=1):
    """``exp(s) / sum(exp(s))`` along ``axis``, computed after subtracting the max so it never overflows."""
    e = np.exp(scores - scores.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_cross_entropy(scores, target, ignore_index=IGNORE, reduction="mean"):
    """Per-pixel cross-entropy of softmax(scores) against integer labels, and its gradient.

    ``loss = sum_p [logsumexp_k s[n, k, p] - s[n, t_p, p]]`` over pixels whose label is not
    ``ignore_index``, divided by their number when ``reduction="mean"``.
    ``dscores = softmax(s) - onehot(t)`` at counted pixels (divided likewise), 0 at ignored ones.
    Shapes: scores (N, K, H, W), target (N, H, W); returns ``(loss, dscores)``.
    """
    K = scores.shape[1]
    valid = target != ignore_index                                   # (N, H, W)
    labels = np.where(valid, target, 0)
    onehot = np.moveaxis(np.eye(K, dtype=scores.dtype)[labels], -1, 1)  # (N, K, H, W)
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -(log_probs * onehot).sum(axis=1)[valid].sum()
    dscores = (np.exp(log_probs) - onehot) * valid[:, None]
    count = valid.sum()
    if reduction == "mean" and count > 0:
        loss, dscores = loss / count, dscores / count
    return float(loss), dscores.astype(scores.dtype)
