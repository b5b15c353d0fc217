"""The ops of tinyfcn in plain NumPy, written to be read beside the math.

This is the teaching version, and the twin the compiled code is tested against. Three
kinds of function live here:

- The ops :func:`conv2d_forward`, :func:`conv2d_backward`, :func:`conv_transpose2d_forward`,
  :func:`conv_transpose2d_backward`, :func:`max_pool2d_forward`, :func:`max_pool2d_backward`,
  :func:`max_unpool2d_forward`, :func:`max_unpool2d_backward`, :func:`relu_forward`,
  :func:`relu_backward`, :func:`batch_norm2d_forward`, :func:`batch_norm2d_backward`,
  :func:`softmax` and :func:`softmax_cross_entropy` have the signatures
  of their twins in :mod:`tinyfcn.ops.functional` and return the same values (up to the
  rounding of sums added in another order).
- :func:`im2col`, :func:`im2col_images`, :func:`col2im`, :func:`count_nonfinite`, :func:`sgd_update`, :func:`adam_update`,
  :func:`batch_norm2d_stats`, :func:`batch_norm2d_normalize`, :func:`batch_norm2d_grad_sums`,
  :func:`batch_norm2d_grad_input`, :func:`batch_norm2d_forward_channels`,
  :func:`batch_norm2d_backward_channels`, :func:`bias_relu`, :func:`conv3x3`, :func:`winograd_weight`, :func:`winograd_weight_adjoint`, :func:`winograd_input`,
  :func:`winograd_output`, :func:`winograd_output_adjoint`, :func:`winograd_input_adjoint`, :func:`winograd_chunks`,
  :func:`winograd_chunks_backward` and :func:`product` are the twins of numba kernels in :mod:`tinyfcn.ops._kernels`
  only (some ops above are a kernel's twin too). A kernel takes its sizes one by one and fills arrays its caller made, as in
  ``_kernels.col2im(cols, kh, kw, sh, sw, ph, pw, Ho, Wo, x)``; its twin takes pairs and
  returns the result, ``col2im(cols, x_shape, kernel, stride, padding)`` (``_kernels.im2col``
  takes the input already padded, as the twin's first line makes it; :func:`sgd_update` and
  :func:`adam_update` update in place, as their kernels do).
- :func:`conv_transpose2d_copies` spells out the kernel copies a transposed convolution
  sums, for :mod:`tinyfcn.viz`; it has no twin.

The tests prove that every twin agrees. These versions loop in Python and validate
nothing of their own -- an argument of the wrong shape or type fails somewhere inside or
gives a wrong answer; :mod:`tinyfcn.ops.functional` checks its inputs -- so keep the
arrays small.

Layout: NCHW. Convolution weights are (C_out, C_in, kH, kW); transposed-convolution
weights are (C_in, C_out, kH, kW), as in PyTorch. Every ``*_forward`` returns
``(out, cache)`` and every ``*_backward`` takes ``(dout, cache)``; the caches have
the layouts documented in :mod:`tinyfcn.ops.functional`, so a cache from either module
works with either backward. ``softmax_cross_entropy`` is the loss and returns
``(loss, dscores)``.
"""
import numpy as np

from ..labels import IGNORE
from .sizes import (
    conv2d_output_size,
    conv_transpose2d_output_size,
    pair,
    pool2d_output_size,
)


def im2col(x, kernel, stride, padding):
    """Unfold every convolution window of ``x`` into a column, so a convolution is one matrix product.

    ``cols[(c*kH + u)*kW + v, (n*H_out + i)*W_out + j] = xpad[n, c, i*sh + u, j*sw + v]``:
    each kernel offset (u, v) is one strided slice of the padded input, filling row (c, u, v) for every c.
    Shapes: x (N, C, H, W) -> cols (C*kH*kW, N*H_out*W_out), ``H_out = floor((H + 2p - kH) / s) + 1``.
    """
    (kh, kw), (sh, sw), (ph, pw) = pair(kernel), pair(stride), pair(padding)
    N, C, H, W = x.shape
    Ho, Wo = conv2d_output_size((H, W), (kh, kw), (sh, sw), (ph, pw))
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((C, kh, kw, N, Ho, Wo), dtype=x.dtype)
    for u in range(kh):
        for v in range(kw):
            cols[:, u, v] = xpad[:, :, u:u + sh * Ho:sh, v:v + sw * Wo:sw].transpose(1, 0, 2, 3)
    return cols.reshape(C * kh * kw, N * Ho * Wo)


def im2col_images(x, kernel, stride, padding):
    """:func:`im2col` image by image: ``cols[n]`` holds the columns of image n, shape (N, C*kH*kW, H_out*W_out)."""
    return np.stack([im2col(x[n:n + 1], kernel, stride, padding) for n in range(len(x))])


def col2im(cols, x_shape, kernel, stride, padding):
    """Fold columns back onto an image of shape ``x_shape``, adding where windows overlap (the adjoint of :func:`im2col`).

    ``xpad[n, c, i*sh + u, j*sw + v] += cols[(c*kH + u)*kW + v, (n*H_out + i)*W_out + j]``, then the
    padding is cut off. Shapes: cols (C*kH*kW, N*H_out*W_out) -> x (N, C, H, W).
    """
    (kh, kw), (sh, sw), (ph, pw) = pair(kernel), pair(stride), pair(padding)
    N, C, H, W = x_shape
    Ho, Wo = conv2d_output_size((H, W), (kh, kw), (sh, sw), (ph, pw))
    cols = cols.reshape(C, kh, kw, N, Ho, Wo)
    xpad = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for u in range(kh):
        for v in range(kw):
            xpad[:, :, u:u + sh * Ho:sh, v:v + sw * Wo:sw] += cols[:, u, v].transpose(1, 0, 2, 3)
    return xpad[:, :, ph:ph + H, pw:pw + W]


def conv2d_forward(x, weight, bias=None, stride=1, padding=0, relu=False, keep_columns=True):
    """Cross-correlate ``x`` with ``weight``: a dot product of the kernel with every window.

    ``out[n, o, i, j] = b[o] + sum_{c,u,v} weight[o, c, u, v] * xpad[n, c, i*sh + u, j*sw + v]``;
    with ``relu``, ``out = max(out, 0)``. ``keep_columns`` changes nothing here: this version
    never unfolds the input.

    Shapes: x (N, C_in, H, W), weight (C_out, C_in, kH, kW), bias (C_out,) or None,
    out (N, C_out, H_out, W_out) with ``H_out = floor((H + 2p - kH) / s) + 1``.
    The cache is ``(x, weight, has_bias, stride, padding, None, rectified)``: no unfolded columns
    here; ``rectified`` is the output with ``relu``, else None.
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
    out, _ = bias_relu(out, bias, relu)
    return out, (x, weight, bias is not None, stride, padding, None, out if relu else None)


def conv2d_backward(dout, cache, input_grad=True):
    """Gradients of :func:`conv2d_forward`: each window's output pushes ``dout`` back through the same dot product.

    ``dweight[o] += dout[n, o, i, j] * window``, ``dxpad[window] += dout[n, o, i, j] * weight[o]``,
    ``dbias[o] = sum_{n,i,j} dout[n, o, i, j]``. Returns ``(dx, dweight, dbias)``; dbias is None without a bias,
    dx None with ``input_grad=False``.
    With a ReLU (``rectified`` in the cache) ``dout`` first becomes ``dout * (rectified > 0)``.
    """
    x, weight, has_bias, (sh, sw), (ph, pw), _, rectified = cache           # the columns are not needed
    if rectified is not None:
        dout = dout * (rectified > 0)
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
    dx = dxpad[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]] if input_grad else None
    dbias = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dweight, dbias


def conv3x3(xpad, w):
    """A 3x3 stride-1 convolution of one image already padded: ``xpad`` (C_in, H_out + 2, W_out + 2),
    ``w`` (C_out, C_in, 3, 3) -> (C_out, H_out, W_out), :func:`conv2d_forward` without padding on a
    batch of one, its terms added in the kernel's order: input channel c, then kernel row u, each
    row's three taps summed before they join the running sum."""
    C_out, C_in = w.shape[:2]
    Ho, Wo = xpad.shape[1] - 2, xpad.shape[2] - 2
    out = np.zeros((C_out, Ho, Wo), xpad.dtype)
    for c in range(C_in):
        for u in range(3):
            r, t = xpad[c, u:u + Ho], w[:, c, u, :, None, None]          # input rows; taps (C_out, 3, 1, 1)
            out += t[:, 0] * r[:, :Wo] + t[:, 1] * r[:, 1:Wo + 1] + t[:, 2] * r[:, 2:]
    return out


# Winograd's F(2x2, 3x3): Lavin & Gray's matrices. A 3x3 convolution's 2x2 block of outputs from a 4x4 tile d
# of input and a kernel g is ``A^T [(G g G^T) * (B^T d B)] A`` (``*`` elementwise).
WINOGRAD_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
WINOGRAD_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
WINOGRAD_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])


def winograd_weight(weight):
    """``G g G^T`` of every 3x3 kernel ``g = weight[o, c]``: (C_out, C_in, 3, 3) -> (16, C_out, C_in), position ``4a + b``."""
    return np.einsum("au,ocuv,bv->aboc", WINOGRAD_G, weight, WINOGRAD_G).reshape(16, *weight.shape[:2])


def winograd_weight_adjoint(dU):
    """The adjoint of :func:`winograd_weight`: ``G^T du G`` of every ``du = dU[:, o, c]`` (as 4x4), (16, C_out, C_in) -> (C_out, C_in, 3, 3)."""
    return np.einsum("au,aboc,bv->ocuv", WINOGRAD_G, dU.reshape(4, 4, *dU.shape[1:]), WINOGRAD_G)


def winograd_input(xpad):
    """``B^T d B`` of every 4x4 tile ``d = xpad[n, c, 2i:2i+4, 2j:2j+4]``, tiles overlapping by 2.

    xpad: (N, C, 2*th + 2, 2*tw + 2) -> (16, C, N, th*tw), position ``4a + b``, tile ``i*tw + j``.
    """
    N, C, Hp, Wp = xpad.shape
    th, tw = (Hp - 2) // 2, (Wp - 2) // 2
    tiles = np.array([[xpad[:, :, 2 * i:2 * i + 4, 2 * j:2 * j + 4] for j in range(tw)] for i in range(th)])
    return np.einsum("ar,ijncrs,bs->abcnij", WINOGRAD_BT, tiles, WINOGRAD_BT).reshape(16, C, N, th * tw)


def winograd_output(M, out_shape):
    """``A^T m A`` of every tile's 16 products ``m = M[:, o, n, t]`` (as 4x4): its 2x2 block of the output.

    M: (16, C, N, th*tw) -> out_shape (N, C, H_out, W_out), ``th = ceil(H_out / 2)``; an odd map drops the last row or column.
    """
    N, C, Ho, Wo = out_shape
    th, tw = -(-Ho // 2), -(-Wo // 2)
    y = np.einsum("ra,abcnij,sb->ncirjs", WINOGRAD_AT, M.reshape(4, 4, C, N, th, tw), WINOGRAD_AT)
    return y.reshape(N, C, 2 * th, 2 * tw)[:, :, :Ho, :Wo]


def winograd_output_adjoint(dout):
    """The adjoint of :func:`winograd_output`: ``A dy A^T`` of each tile's 2x2 block of dout (0 past the edge), (16, C, N, th*tw)."""
    N, C, Ho, Wo = dout.shape
    th, tw = -(-Ho // 2), -(-Wo // 2)
    dy = np.zeros((N, C, 2 * th, 2 * tw), dout.dtype)
    dy[:, :, :Ho, :Wo] = dout
    dm = np.einsum("ra,ncirjs,sb->abcnij", WINOGRAD_AT, dy.reshape(N, C, th, 2, tw, 2), WINOGRAD_AT)
    return dm.reshape(16, C, N, th * tw)


def winograd_input_adjoint(dV, xpad_shape):
    """The adjoint of :func:`winograd_input`: ``B dv B^T`` of every tile added into its 4x4 window of a zero (N, C, Hp, Wp) array."""
    N, C, Hp, Wp = xpad_shape
    th, tw = (Hp - 2) // 2, (Wp - 2) // 2
    dd = np.einsum("ar,abcnij,bs->ncijrs", WINOGRAD_BT, dV.reshape(4, 4, C, N, th, tw), WINOGRAD_BT)
    dxpad = np.zeros(xpad_shape, dV.dtype)
    for i in range(th):
        for j in range(tw):
            dxpad[:, :, 2 * i:2 * i + 4, 2 * j:2 * j + 4] += dd[:, :, i, j]
    return dxpad


def product(a, b):
    """``a @ b``, the matrix product :func:`tinyfcn.ops._kernels.product` computes (by either BLAS) into the array it is given."""
    return a @ b


def winograd_chunks(x, padding, U, bias, relu, B):
    """A Winograd F(2x2, 3x3) convolution a chunk of B images at a time, each through every step: the chunk
    zero-padded (to whole tiles past the padding), ``V = B^T d B`` of its tiles, ``M[k] = U[k] @ V[k]``,
    ``A^T m A`` of every tile, bias and ReLU.

    x: (N, C_in, H, W); U: (16, C_out, C_in) (:func:`winograd_weight`); bias: (C_out,) or None. Returns the
    output (N, C_out, H + 2*ph - 2, W + 2*pw - 2), every chunk's V (16, C_in, B, th*tw) flat one after
    another, and how many values were NaN or inf before a ReLU.
    """
    (N, C_in, H, W), (ph, pw) = x.shape, padding
    Ho, Wo = H + 2 * ph - 2, W + 2 * pw - 2
    th, tw = -(-Ho // 2), -(-Wo // 2)
    outs, Vs, bad = [], [], 0
    for n0 in range(0, N, B):
        chunk = x[n0:n0 + B]
        xpad = np.zeros((len(chunk), C_in, 2 * th + 2, 2 * tw + 2), x.dtype)
        xpad[:, :, ph:ph + H, pw:pw + W] = chunk
        V = winograd_input(xpad)
        M = U @ V.reshape(16, C_in, -1)
        out, n_bad = bias_relu(winograd_output(M.reshape(16, -1, len(chunk), th * tw), (len(chunk), U.shape[1], Ho, Wo)),
                               bias, relu)
        outs.append(out)
        Vs.append(V.ravel())
        bad += n_bad
    return np.concatenate(outs), np.concatenate(Vs), bad


def winograd_chunks_backward(dout, rectified, x, padding, U, B):
    """The backward pass of :func:`winograd_chunks`, chunk by chunk: with a ReLU (``rectified``, the forward's
    output, not None) the gradient ``masked = dout * (rectified > 0)``; ``dM = A dy A^T`` per tile; each
    chunk's ``dU[k] = dM[k] @ V[k].T``; with ``U`` (not None) ``dV[k] = U[k].T @ dM[k]`` and dx, the
    windows' ``B dv B^T`` added up and cropped by the padding.

    Returns ``dU`` (chunks, 16, C_out, C_in), dx (N, C_in, H, W) or None, masked (as dout) or None.
    """
    (N, C_in, H, W), (ph, pw) = x.shape, padding
    masked = None if rectified is None else dout * (rectified > 0)
    g = dout if masked is None else masked
    Ho, Wo = g.shape[2:]
    th, tw = -(-Ho // 2), -(-Wo // 2)
    dU, dx = [], []
    for n0 in range(0, N, B):
        chunk = x[n0:n0 + B]
        xpad = np.zeros((len(chunk), C_in, 2 * th + 2, 2 * tw + 2), x.dtype)
        xpad[:, :, ph:ph + H, pw:pw + W] = chunk
        V = winograd_input(xpad).reshape(16, C_in, -1)
        dM = winograd_output_adjoint(g[n0:n0 + B]).reshape(16, g.shape[1], -1)
        dU.append(dM @ V.transpose(0, 2, 1))
        if U is not None:
            dV = U.transpose(0, 2, 1) @ dM
            dx.append(winograd_input_adjoint(dV.reshape(16, C_in, len(chunk), -1), xpad.shape)[:, :, ph:ph + H, pw:pw + W])
    return np.stack(dU), np.concatenate(dx) if U is not None else None, masked


def bias_relu(out, bias, relu):
    """A convolution's epilogue: ``out + bias[c]`` for every channel c (no bias: None), then ``max(., 0)`` with ``relu``.

    out: (N, C, ...) -- the kernel's (N, C, P) or the op's (N, C, H, W). Returns a new array, and
    how many values were NaN or inf before the ReLU (0 without ``relu``).
    """
    if bias is not None:
        out = out + bias.reshape(-1, *[1] * (out.ndim - 2))
    return (np.maximum(out, 0), count_nonfinite(out)) if relu else (out, 0)


def conv_transpose2d_copies(x, weight, stride=1):
    """The weighted kernel copies a transposed convolution sums, each placed in the uncropped output grid.

    ``copies[n, c, i, j]`` is ``x[n, c, i, j] * weight[c]`` (a (C_out, kH, kW) block) put at rows
    ``i*sh + [0, kH)`` and columns ``j*sw + [0, kW)`` of a zero (C_out, H_full, W_full) grid,
    ``H_full = (H - 1) * sh + kH``. Shapes: x (N, C_in, H, W), weight (C_in, C_out, kH, kW),
    copies (N, C_in, H, W, C_out, H_full, W_full).
    """
    sh, sw = pair(stride)
    N, C_in, H, W = x.shape
    _, C_out, kh, kw = weight.shape
    copies = np.zeros((N, C_in, H, W, C_out, (H - 1) * sh + kh, (W - 1) * sw + kw), dtype=x.dtype)
    for i in range(H):
        for j in range(W):
            copies[:, :, i, j, :, i * sh:i * sh + kh, j * sw:j * sw + kw] = x[:, :, i, j, None, None, None] * weight
    return copies


def conv_transpose2d_forward(x, weight, bias=None, stride=1, padding=0):
    """Transposed convolution as the paper draws it: a weighted copy of the kernel for every input pixel.

    Each input pixel ``x[n, c, i, j]`` adds ``x[n, c, i, j] * weight[c]`` (a (C_out, kH, kW)
    block) into the output window that starts at ``(i*sh - ph, j*sw - pw)``: the copies of
    :func:`conv_transpose2d_copies` are summed, and the padding trims ``p`` rows and
    columns from each border.

    Shapes: x (N, C_in, H, W), weight (C_in, C_out, kH, kW), bias (C_out,) or None,
    out (N, C_out, H_out, W_out) with ``H_out = (H - 1) * s - 2p + kH``.
    The cache is ``(x, weight, has_bias, stride, padding, None)``.
    """
    stride, padding = pair(stride), pair(padding)
    ph, pw = padding
    Ho, Wo = conv_transpose2d_output_size(x.shape[2:], weight.shape[2:], stride, padding)
    full = conv_transpose2d_copies(x, weight, stride).sum(axis=(1, 2, 3))     # (N, C_out, H_full, W_full)
    out = full[:, :, ph:ph + Ho, pw:pw + Wo]
    if bias is not None:
        out = out + bias[None, :, None, None]
    return out, (x, weight, bias is not None, stride, padding, None)


def conv_transpose2d_backward(dout, cache, weight_grad=True):
    """Gradients of :func:`conv_transpose2d_forward`: every copy reads back the output window it was added to.

    ``dx[n, c, i, j] = <dout_full[n, :, window(i, j)], weight[c]>`` (a convolution of ``dout``),
    ``dweight[c] = sum_{n,i,j} x[n, c, i, j] * dout_full[n, :, window(i, j)]``,
    ``dbias[o] = sum dout[n, o]``. Returns ``(dx, dweight, dbias)``; dbias is None without a bias,
    and both are None when ``weight_grad`` is False (a frozen layer).
    """
    x, weight, has_bias, (sh, sw), (ph, pw), _ = cache                      # x as rows is not needed
    N, C_in, H, W = x.shape
    kh, kw = weight.shape[2:]
    dfull = np.pad(dout, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dx = np.zeros_like(x)
    dweight = np.zeros_like(weight) if weight_grad else None
    for n in range(N):
        for i in range(H):
            for j in range(W):
                window = dfull[n, :, i * sh:i * sh + kh, j * sw:j * sw + kw]   # (C_out, kH, kW)
                dx[n, :, i, j] = np.tensordot(weight, window, axes=3)
                if weight_grad:
                    dweight += x[n, :, i, j][:, None, None, None] * window
    dbias = dout.sum(axis=(0, 2, 3)) if has_bias and weight_grad else None
    return dx, dweight, dbias


def max_pool2d_forward(x, kernel_size=2, stride=None, padding=0, ceil_mode=False):
    """Keep the largest value of every window, and remember where it was.

    Padding counts as -inf, so a window's maximum is always a real input value.
    ``indices[n, c, i, j] = h*W + w``, the flat position of the (first) maximum in its
    input plane. Shapes: x (N, C, H, W), out and indices (N, C, H_out, W_out) with
    ``H_out = floor_or_ceil((H + 2p - k) / s) + 1``. The cache is ``(indices, x.shape, x.dtype)``.
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
    return out, (indices, x.shape, x.dtype)


def max_unpool2d_forward(x, indices, output_size):
    """Put every value back where its maximum came from; everything else is 0.

    ``out[n, c].flat[indices[n, c, i, j]] += x[n, c, i, j]``. Where pooling windows
    overlap and share a maximum, the values add (this is exactly max-pooling's backward
    pass). ``output_size`` is (H_out, W_out). Shapes: x and indices (N, C, H, W).
    The cache is ``(indices, out.shape, x.dtype)``.
    """
    N, C = x.shape[:2]
    Ho, Wo = output_size
    out = np.zeros((N, C, Ho * Wo), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            np.add.at(out[n, c], indices[n, c].ravel(), x[n, c].ravel())
    return out.reshape(N, C, Ho, Wo), (indices, (N, C, Ho, Wo), x.dtype)


def max_unpool2d_backward(dout, cache):
    """Gradient of :func:`max_unpool2d_forward`: each input reads the gradient at its index, ``dx = dout.flat[indices]``."""
    indices, _, _ = cache
    N, C = dout.shape[:2]
    return np.take_along_axis(dout.reshape(N, C, -1), indices.reshape(N, C, -1), axis=2).reshape(indices.shape)


def max_pool2d_backward(dout, cache):
    """Route each gradient to the input that won its window (argmax routing); overlapping winners add."""
    indices, x_shape, _ = cache
    return max_unpool2d_forward(dout, indices, x_shape[2:])[0]


def count_nonfinite(a):
    """How many values of ``a`` are inf or NaN (every op refuses such input)."""
    return int(np.count_nonzero(~np.isfinite(a)))


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


def softmax_cross_entropy(scores, target, ignore_index=IGNORE, reduction="mean", class_weights=None):
    """Per-pixel cross-entropy of softmax(scores) against integer labels, weighted by class, and its gradient.

    With ``w = class_weights`` (all ones when None): ``loss = sum_p w[t_p] * [logsumexp_k s[n, k, p] - s[n, t_p, p]]``
    over pixels whose label is not ``ignore_index``, divided by ``sum_p w[t_p]`` over them when
    ``reduction="mean"`` (the weighted mean; loss 0 and a zero gradient when that sum is 0).
    ``dscores = w[t_p] * (softmax(s) - onehot(t))`` at counted pixels (divided likewise), 0 at ignored ones.
    Shapes: scores (N, K, H, W), target (N, H, W), class_weights (K,) or None; returns ``(loss, dscores)``.
    """
    K = scores.shape[1]
    valid = target != ignore_index                                   # (N, H, W)
    labels = np.where(valid, target, 0)
    weights = np.ones(K) if class_weights is None else np.asarray(class_weights, dtype=np.float64)
    pixel_weights = weights[labels] * valid                          # (N, H, W): w[t_p], 0 where ignored
    onehot = np.moveaxis(np.eye(K, dtype=scores.dtype)[labels], -1, 1)  # (N, K, H, W)
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = (pixel_weights * -(log_probs * onehot).sum(axis=1)).sum()
    dscores = (np.exp(log_probs) - onehot) * pixel_weights[:, None]
    total_weight = pixel_weights.sum()
    if reduction == "mean" and total_weight > 0:
        loss, dscores = loss / total_weight, dscores / total_weight
    return float(loss), dscores.astype(scores.dtype)


def sgd_update(w, grad, velocity, lr, momentum, weight_decay, nesterov):
    """One SGD-with-momentum step, in place: PyTorch's rule, as :class:`tinyfcn.training.optim.SGD` applies it.

    ``g = grad + weight_decay * w``; ``velocity = momentum * velocity + g``;
    ``w -= lr * (g + momentum * velocity)`` (Nesterov) or ``w -= lr * velocity``.
    ``w`` and ``velocity`` are updated; all arrays have the same shape.
    """
    g = grad + weight_decay * w
    velocity[...] = momentum * velocity + g
    w -= lr * (g + momentum * velocity if nesterov else velocity)


def adam_update(w, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    """One Adam step (AdamW's with ``decoupled``), in place: PyTorch's rule, as ``training.optim.Adam`` applies it.

    Adam adds the L2 term to the gradient, ``g = grad + weight_decay * w``; AdamW first shrinks the
    weights, ``w *= 1 - lr * weight_decay``, and uses ``g = grad``. Then the moments
    ``exp_avg = beta1 * exp_avg + (1 - beta1) * g`` and ``exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g**2``,
    and with the parameter's step count t (1 on its first update), corrected for their start at 0:
    ``w -= lr / (1 - beta1**t) * exp_avg / (sqrt(exp_avg_sq) / sqrt(1 - beta2**t) + eps)``.
    ``w``, ``exp_avg`` and ``exp_avg_sq`` are updated; all arrays have the same shape.
    """
    if decoupled:
        w *= 1 - lr * weight_decay
        g = grad
    else:
        g = grad + weight_decay * w
    exp_avg[...] = beta1 * exp_avg + (1 - beta1) * g
    exp_avg_sq[...] = beta2 * exp_avg_sq + (1 - beta2) * g * g
    w -= lr / (1 - beta1 ** step) * exp_avg / (np.sqrt(exp_avg_sq) / np.sqrt(1 - beta2 ** step) + eps)


# ---------------------------------------------------------------- batch normalisation


def batch_norm2d_forward(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5, relu=False):
    """Normalise every channel, then scale and shift it: ``out = gamma * (x - mean) / sqrt(var + eps) + beta``.

    Training: mean and the biased variance over the batch, axes (N, H, W) -- m = N*H*W values
    per channel; the running statistics move towards them in place (the variance unbiased,
    times m / (m - 1)). Evaluation: mean and var are the running statistics. With ``relu``,
    ``out = max(out, 0)``. Shapes: x (N, C, H, W), gamma, beta, running_mean, running_var (C,).
    The cache is ``(x, gamma, mean, inv_std, training, rectified)``, mean and ``inv_std = 1 / sqrt(var + eps)``
    float64, ``rectified`` the output with ``relu``, else None.
    """
    if training:
        m = x.size // x.shape[1]
        mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
        var = ((x - mean[:, None, None]) ** 2).mean(axis=(0, 2, 3))          # biased: divided by m
        running_mean[...] = (1 - momentum) * running_mean + momentum * mean
        running_var[...] = (1 - momentum) * running_var + momentum * var * m / (m - 1)
    else:
        mean, var = running_mean.astype(np.float64), running_var.astype(np.float64)
    inv_std = 1 / np.sqrt(var + eps)
    x_hat = (x - mean[:, None, None]) * inv_std[:, None, None]
    out = (gamma[:, None, None] * x_hat + beta[:, None, None]).astype(x.dtype)
    if relu:
        out = np.maximum(out, 0)
    return out, (x, gamma, mean, inv_std, training, out if relu else None)


def batch_norm2d_backward(dout, cache):
    """Gradients of :func:`batch_norm2d_forward`, sums over (N, H, W) per channel, ``sigma = sqrt(var + eps)``.

    With a ReLU (``rectified`` in the cache) ``dout`` first becomes ``dout * (rectified > 0)``. Then
    ``dbeta = sum(dout)``, ``dgamma = sum(dout * x_hat)``; training:
    ``dx = gamma / (m * sigma) * (m * dout - sum(dout) - x_hat * sum(dout * x_hat))`` (mean and var
    depend on every x of the channel); evaluation: ``dx = dout * gamma / sigma``. Returns ``(dx, dgamma, dbeta)``.
    """
    x, gamma, mean, inv_std, training, rectified = cache
    if rectified is not None:
        dout = dout * (rectified > 0)
    x_hat = (x - mean[:, None, None]) * inv_std[:, None, None]
    dbeta = dout.sum(axis=(0, 2, 3))
    dgamma = (dout * x_hat).sum(axis=(0, 2, 3))
    if training:
        m = x.size // x.shape[1]
        dx = (gamma * inv_std / m)[:, None, None] * (m * dout - dbeta[:, None, None] - x_hat * dgamma[:, None, None])
    else:
        dx = dout * (gamma * inv_std)[:, None, None]
    return dx.astype(x.dtype), dgamma.astype(x.dtype), dbeta.astype(x.dtype)


# The compiled batch norm in steps (tinyfcn.ops.functional combines them); x, dout: (N, C, P), P = H*W.
# The kernels fill in a range of channels; these twins give every channel.


def batch_norm2d_stats(x):
    """Per channel: the sum of its values and of their squared deviations from its mean, (C,) float64 each."""
    sums = x.sum(axis=(0, 2), dtype=np.float64)
    squares = ((x - sums[:, None] / (x.shape[0] * x.shape[2])) ** 2).sum(axis=(0, 2))
    return sums, squares


def batch_norm2d_normalize(x, mean, scale, shift, relu):
    """``out = (x - mean[c]) * scale[c] + shift[c]`` for every channel c; with ``relu``, ``max(out, 0)``.

    Returns out, and how many values were NaN or inf before the ReLU (0 without ``relu``).
    """
    out = (x - mean[:, None]) * scale[:, None] + shift[:, None]
    return (np.maximum(out, 0), count_nonfinite(out)) if relu else (out, 0)


def batch_norm2d_grad_sums(dout, x, mean, rectified):
    """Per channel: ``sum(g)`` and ``sum(g * (x - mean[c]))``, (C,) float64 each; ``g = dout * (rectified > 0)``, or dout if rectified is None."""
    g = dout if rectified is None else dout * (rectified > 0)
    return g.sum(axis=(0, 2), dtype=np.float64), (g * (x - mean[:, None])).sum(axis=(0, 2), dtype=np.float64)


def batch_norm2d_grad_input(dout, x, mean, scale, centre, slope, rectified):
    """``dx = scale[c] * (g - centre[c] - (x - mean[c]) * slope[c])`` for every channel c, g as in :func:`batch_norm2d_grad_sums`."""
    g = dout if rectified is None else dout * (rectified > 0)
    return scale[:, None] * (g - centre[:, None] - (x - mean[:, None]) * slope[:, None])


def batch_norm2d_forward_channels(x, gamma, beta, mean, var, training, eps, relu):
    """The forward pass from the steps above: in training ``mean = sums / m`` and ``var = squares / m``
    (:func:`batch_norm2d_stats`, m = N*P; else mean and var as given), ``inv_std = 1 / sqrt(var + eps)``, then
    :func:`batch_norm2d_normalize` with ``scale = gamma * inv_std`` and ``shift = beta``.
    Returns out, the count of NaN or inf before the ReLU, and mean, var and inv_std (float64)."""
    if training:
        sums, squares = batch_norm2d_stats(x)
        m = x.shape[0] * x.shape[2]
        mean, var = sums / m, squares / m
    inv_std = 1 / np.sqrt(var + eps)
    out, bad = batch_norm2d_normalize(x, mean.astype(x.dtype), (gamma * inv_std).astype(x.dtype), beta, relu)
    return out, bad, mean, var, inv_std


def batch_norm2d_backward_channels(dout, x, gamma, mean, inv_std, rectified, training):
    """The backward pass from the steps above: ``dbeta`` and the products of :func:`batch_norm2d_grad_sums`,
    ``dgamma = inv_std * products``, then :func:`batch_norm2d_grad_input` with ``scale = gamma * inv_std``
    and, in training, ``centre = dbeta / m``, ``slope = inv_std * dgamma / m`` (0 in evaluation).
    Returns dx, dgamma and dbeta (float64)."""
    dbeta, products = batch_norm2d_grad_sums(dout, x, mean, rectified)
    dgamma = inv_std * products
    m = x.shape[0] * x.shape[2]
    centre, slope = (dbeta / m, inv_std * dgamma / m) if training else (0 * dbeta, 0 * dbeta)
    dx = batch_norm2d_grad_input(dout, x, mean.astype(x.dtype), (gamma * inv_std).astype(x.dtype),
                                 centre.astype(x.dtype), slope.astype(x.dtype), rectified)
    return dx, dgamma, dbeta
