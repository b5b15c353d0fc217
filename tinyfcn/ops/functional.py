"""The ops of tinyfcn: one forward/backward pair each, checked inputs, compiled loops.

Every ``*_forward`` returns ``(out, cache)``; every ``*_backward`` takes ``(dout, cache)``
and returns the gradients, never modifying ``dout``. Inputs are NCHW float32 or
float64 arrays; outputs have the input's dtype, and ``dout`` must have it too. Bad
input raises a ``TypeError`` or ``ValueError`` naming the op, what it expected and
what it got. ``softmax_cross_entropy`` is the loss, not a layer: it returns
``(loss, dscores)`` in one call.

Each cache has the layout of its twin's cache in :mod:`tinyfcn.ops.reference` (see the
forward's "Returns"), so either backward accepts either forward's cache. Where this
module keeps an extra array for speed (conv2d's unfolded input), the reference
cache holds None in its place and the backward here recomputes it.

How the convolutions run
------------------------
``im2col`` unfolds every kernel window into a column, so a convolution is one BLAS
matrix product. For x (N, C_in, H, W) and weight (C_out, C_in, kH, kW)::

    cols = im2col(x)                        # (C_in*kH*kW, N*H_out*W_out)
    out  = weight.reshape(C_out, -1) @ cols # one product per image's block of columns -> NCHW

and backward reuses the same two pieces::

    dweight = dout2 @ cols.T                # dout2 = dout as (C_out, N*H_out*W_out)
    dx      = col2im(weight2.T @ dout2)     # fold the columns back, adding overlaps

The code runs these image by image -- im2col of image n, its product, its bias --
so that each of tinyfcn's threads (:mod:`tinyfcn.threads`) can take whole images
(tiny maps, fewer than ``SMALL_MAP`` pixels, run as one product over the batch instead):
``cols`` is kept as (N, C_in*kH*kW, H_out*W_out), image n's columns in ``cols[n]``,
and ``dweight`` is the sum over images of ``dout[n] @ cols[n].T``, added in image order
so that every thread count gives the same bits. The BLAS computes that product as its
transpose, ``cols[n] @ dout[n].T``: the same numbers, 1.6x to 2.2x faster on FCN's layers
with per-image columns (OpenBLAS reads both operands along their rows; one thread, AVX-512:
conv1_2's (16 x 4096) @ (4096 x 144) 0.33 -> 0.15 ms, conv2_1's and conv1_1's 1.6x). Small
maps keep ``dout2 @ cols.T``: there the weight is large and the product short, and
transposing the result back costs more than the product gains (fc6: 0.35 ms to transpose
(1152 x 256), against 0.04 ms gained).

With 16 channels or more on maps of 8x8 or more (FCN's conv1_2 to conv4_2), Winograd's
F(2x2, 3x3) replaces each 3x3 window's 9 multiplications per output by 4 (16 per 2x2 block):
``out = A^T [(G w G^T) * (B^T d B)] A`` per 4x4 input tile d, the products for an image's tiles as
16 matrix products (``_kernels.winograd_*``; see ``WINOGRAD_CHANNELS``), backward the same steps
in reverse. Where an image's columns would not fit in the cache and the products would be thin but
Winograd does not run (3x3 stride-1 convolutions with fewer than 16 channels on maps of 64x64 or
more), a direct kernel (``_kernels.conv3x3``) convolves each padded image without columns, and
computes the input gradient too, as a convolution of dout with the flipped weight (see ``_direct``).

A transposed convolution runs the same pieces the other way round. Its forward
pass, ``col2im(weight2.T @ x2)``, is literally the paper's picture: column (n, i, j)
of ``weight2.T @ x2`` is the kernel weighted by the input pixel x[n, :, i, j], and
``col2im`` adds each such copy into its output window.

The plain-NumPy twins of these functions live in :mod:`tinyfcn.ops.reference`.
"""
import contextlib
import contextvars

import numpy as np

from .. import threads
from ..labels import IGNORE
from . import _kernels, blas
from .sizes import (
    conv2d_output_size,
    conv_transpose2d_output_size,
    pair,
    pool2d_output_size,
)

# ---------------------------------------------------------------- input checks


class NonFiniteError(ValueError):
    """An op received NaN or inf (during training: the network has diverged)."""


class BatchStatisticsError(ValueError):
    """Batch normalisation in training met one value per channel: there is no batch statistic to normalise with."""



def all_finite(a):
    """True when the float32 or float64 array holds no NaN and no inf.

    Counted by :func:`tinyfcn.ops._kernels.count_nonfinite` on the array's bits (its twin:
    ``np.isfinite(a).all()``); a non-contiguous array is copied first.
    """
    flat = np.ascontiguousarray(a).reshape(-1)
    bits, exponent = _EXPONENT_BITS[flat.dtype.type]
    return _kernels.count_nonfinite(flat.view(bits), exponent) == 0


_EXPONENT_BITS = {np.float32: (np.uint32, np.uint32(0x7f800000)),
                  np.float64: (np.uint64, np.uint64(0x7ff0000000000000))}
"""Per float dtype: the unsigned integer of its width, and the mask of its exponent bits."""


_SCANNING = contextvars.ContextVar("tinyfcn_scanning", default=True)
"""False inside :func:`unscanned`."""


@contextlib.contextmanager
def unscanned():
    """``with unscanned(): ...``: the ops skip their scan for NaN and inf; every other check stays.

    Outside it each op scans every array it is given (:func:`scan`): its input, weight, bias,
    ``dout``. A :class:`~tinyfcn.networks.graph.Graph` runs its layers inside it and scans only its
    own input (or, backward, the gradient it is given) and its output: a map made by one layer
    and read by the next is not scanned again by every reader, nor a weight in every pass (on
    FCN-8s, batch 8 x 64x64, one thread: 2.4 of a training step's 45 ms, 1.6 of an inference
    pass's 14). Nested blocks restore the outer setting on exit.
    """
    token = _SCANNING.set(False)
    try:
        yield
    finally:
        _SCANNING.reset(token)


def scan(who, name, a):
    """Raise :class:`NonFiniteError` ("``who``: ``name`` contains NaN or inf") when the float array ``a``
    holds NaN or inf; nothing inside :func:`unscanned`. Other arrays are left to the ops' type checks."""
    if (_SCANNING.get() and isinstance(a, np.ndarray) and a.dtype in (np.float32, np.float64)
            and not all_finite(a)):
        raise NonFiniteError(f"{who}: {name} contains NaN or inf")


def _check_array(op, name, a, layout=None, dtype=None):
    """Return ``a`` as a C-contiguous float array after checking type, dtype, ndim and finiteness
    (:func:`scan`).

    ``layout`` names the expected axes, e.g. ``("N", "C", "H", "W")``; None accepts any ndim.
    ``dtype``, when given, is the dtype ``a`` must match (that of the op's input).
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: {name} must be float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{op}: {name} is {a.dtype} but the input is {dtype}; cast one of them")
    if layout is not None and a.ndim != len(layout):
        raise ValueError(f"{op}: {name} must be {len(layout)}-D ({', '.join(layout)}), got shape {a.shape}")
    a = np.ascontiguousarray(a)
    scan(op, name, a)
    return a


def _check_grad(op, dout, shape, dtype):
    """Check an upstream gradient against the forward output's shape and the forward input's dtype."""
    dout = _check_array(op, "dout", dout, dtype=dtype)
    if dout.shape != tuple(shape):
        raise ValueError(f"{op}: dout must have the forward output's shape {tuple(shape)}, got {dout.shape}")
    return dout


def _check_bias(op, bias, channels, dtype):
    if bias is None:
        return None
    bias = _check_array(op, "bias", bias, ("C_out",), dtype)
    if bias.shape != (channels,):
        raise ValueError(f"{op}: bias must have shape ({channels},) to match the weight, got {bias.shape}")
    return bias


def _check_geometry(op, kernel, stride, padding):
    """Turn kernel, stride and padding into (h, w) pairs: kernel and stride >= 1, padding >= 0."""
    kernel, stride, padding = pair(kernel, "kernel_size"), pair(stride, "stride"), pair(padding, "padding")
    if min(kernel) < 1 or min(stride) < 1 or min(padding) < 0:
        raise ValueError(f"{op}: need kernel_size >= 1, stride >= 1 and padding >= 0, "
                         f"got kernel_size={kernel}, stride={stride}, padding={padding}")
    return kernel, stride, padding


def _check_conv(op, x, weight, bias, stride, padding, weight_layout):
    """The checks shared by conv2d and conv_transpose2d; their weights differ only in axis order.

    ``weight_layout`` names the weight's axes, ("C_out", "C_in", ...) or ("C_in", "C_out", ...).
    Returns contiguous x, weight and bias, and (h, w) pairs for kernel, stride and padding.
    """
    x = _check_array(op, "x", x, ("N", "C_in", "H", "W"))
    weight = _check_array(op, "weight", weight, weight_layout, x.dtype)
    c_in, c_out = weight.shape[weight_layout.index("C_in")], weight.shape[weight_layout.index("C_out")]
    if x.shape[1] != c_in:
        raise ValueError(f"{op}: x has {x.shape[1]} channels but weight {weight.shape} expects C_in={c_in}")
    bias = _check_bias(op, bias, c_out, x.dtype)
    kernel, stride, padding = _check_geometry(op, weight.shape[2:], stride, padding)
    return x, weight, bias, kernel, stride, padding


# ---------------------------------------------------------------- convolution

SMALL_MAP = 128
"""Output maps of fewer pixels than this (FCN's 4x4 and 2x2 at a 64x64 input, and its 1x1
convolutions on 8x8; its 3x3 ones there run Winograd) are convolved with one matrix product over the whole batch: per image, the products would be
too small for the BLAS to run fast (about 3x slower for 2x2 maps). Threads then share
that product by blocks of 64 output channels (and the input gradient by blocks of 4 images)."""

DIRECT_CHANNELS = 16
DIRECT_PIXELS = 4096
"""The dispatch rule of the direct 3x3 convolution (:func:`_direct`): at most ``DIRECT_CHANNELS``
input and output channels, fewer than :data:`WINOGRAD_CHANNELS` on one side at least (16 in and 16
out runs Winograd), and output maps of at least ``DIRECT_PIXELS`` pixels (64x64).

There an image's columns (C_in*9 rows of H_out*W_out: 1.2 MB for 8 channels at 64x64) no longer
fit in the core's L2 cache, and the products have only 8 or 16 rows, so im2col + BLAS ran at about
25 GFLOP/s where :func:`tinyfcn.ops._kernels.conv3x3` ran at about 50 (one core, single-thread
CPU time, AVX-512; 16->16 at 64x64 and 128x128: 2x faster forward; 8->8 at 64x64: 3x). With 32
channels, or maps of 32x32, the BLAS was as fast or faster (16->32 at 32x32: 1.3x faster), so those
keep im2col. FCN-8s's conv1_2 (16->16 at 64x64) ran this kernel until Winograd's chunks became
faster (a 2-core Intel Xeon, AVX-512, batch 8, medians: forward+backward 9.05 ms direct against 7.22
by Winograd at one thread, 5.33 against 4.68 at two; the forward alone 2.77 against 3.00); it now
runs Winograd, which leaves this kernel the layers of fewer than 16 channels (half FCN-8s's
default widths). Later the same day, with that machine running about 1.3x slower, the two were
level (forward+backward 10.6-15.7 ms by Winograd against 12.2-13.1 direct, one thread) while
FCN-8s's whole training step stayed 1.5 % shorter with Winograd. With Winograd's rows staggered
(:data:`tinyfcn.ops._kernels.ROW_GAP`), three alternating rounds on that machine: forward+backward
6.7-7.2 ms by Winograd against 9.2-9.4 direct at one thread, 4.0-4.3 against 5.4-5.9 at two; the
forward alone 2.5-2.7 against 2.7-2.8. Measured and written here; nothing is timed at run time."""


def _direct(weight, stride, padding, pixels):
    """True when a convolution runs :func:`tinyfcn.ops._kernels.conv3x3` (forward, and the input
    gradient as the same kernel on dout) instead of im2col and matrix products.

    The kernel's own limits: a 3x3 kernel, stride 1, padding at most 2 (the input gradient pads dout
    by ``2 - padding``) and even channel counts (it computes two output channels at a time, and the
    input gradient runs it with C_in outputs); the rule keeps to multiples of 4, the shapes it was
    measured on; then :data:`DIRECT_CHANNELS` and :data:`DIRECT_PIXELS`, from measurements, where
    Winograd does not run (:func:`_winograd`).
    """
    C_out, C_in, kh, kw = weight.shape
    return ((kh, kw) == (3, 3) and tuple(stride) == (1, 1) and max(padding) <= 2 and C_in % 4 == 0
            and C_out % 4 == 0 and max(C_in, C_out) <= DIRECT_CHANNELS and pixels >= DIRECT_PIXELS
            and not _winograd(weight, stride, padding, pixels))


WINOGRAD_CHANNELS = 16
WINOGRAD_PIXELS = 64
"""The dispatch rule of Winograd's F(2x2, 3x3) (:func:`_winograd`): 3x3 stride-1 convolutions with at
least ``WINOGRAD_CHANNELS`` input and output channels and output maps of at least ``WINOGRAD_PIXELS``
pixels (8x8).

Winograd computes each 2x2 block of outputs from a 4x4 tile of input with 16 products instead of
36: 16 matrix products (C_out x C_in) @ (C_in x tiles), 2.25x fewer multiplications than im2col's,
between elementwise transforms (the weights' too: :func:`tinyfcn.ops._kernels.winograd_weight`).
The batch is cut into chunks of images (:data:`WINOGRAD_CHUNK_PIXELS`) and each thread takes a range
of chunks, each chunk through every step before the next (input transform, products, output
transform; backward likewise), so a layer is one hand-over between threads, and a chunk's tiles and
products stay in the core's cache from one step to the next (a range at a time, they did not:
FCN-8s's inference at batch 8, one thread, took 4 % longer; its training step 1 % longer). A
thread's range is one numba call (:func:`tinyfcn.ops._kernels.winograd_chunks` and its backward),
the products through :func:`tinyfcn.ops._kernels.product` (NumPy's own BLAS: :mod:`tinyfcn.ops.blas`), so
the thread takes the interpreter lock only to start it:
with the steps called one by one from Python, two threads waited on each other between them (on a
2-core Intel Xeon, AVX-512, FCN-8s's training step at batch 8 took 53.5-54.1 ms against 58.1-59.6
at one thread and 39.0-39.6 against 44.9-45.1 at two, inference 19.1-19.4 against 20.1-20.4 and
14.2-14.7 against 15.7-17.0; old and new code in alternating processes, the same bits).
Forward+backward against im2col, FCN-8s's layers at batch 8 x 64x64 (quiet, AVX-512; im2col ms ->
Winograd ms at one thread, and at two; measured when each thread ran its whole range of images at once): conv2_1 (16->32 at 32x32) 4.24 -> 2.81 and 2.33 -> 1.82,
conv2_2 8.14 -> 4.60 and 4.28 -> 2.60, conv3_1 (32->64 at 16x16) 3.08 -> 2.57 and 1.81 -> 1.91,
conv3_2 5.93 -> 4.29 and 3.25 -> 2.84, conv4_1 (64->128 at 8x8) 3.02 -> 2.71 and 2.09 -> 2.21,
conv4_2 5.93 -> 4.74 and 3.78 -> 3.55; conv5 (at 4x4) 1.71 -> 2.31, too few tiles for the transforms
to pay. conv1_2 (16->16 at 64x64): 7.22 ms against the direct kernel's 9.05 (see
:data:`DIRECT_CHANNELS`).

Its float32 results differ from im2col's by rounding of the same size (RMS 1e-7 to 4e-7 of the values
against float64, forward and both gradients, on these layers; im2col's 1e-7 to 3e-7), in other places. Measured once and
written here; nothing is timed at run time."""


def _winograd(weight, stride, padding, pixels):
    """True when a convolution runs Winograd's F(2x2, 3x3) (see :data:`WINOGRAD_CHANNELS`): a 3x3
    kernel, stride 1, at least :data:`WINOGRAD_CHANNELS` channels in and out, output maps of at
    least :data:`WINOGRAD_PIXELS` pixels. Any padding (the tiles read a zero-padded copy of the
    input)."""
    C_out, C_in, kh, kw = weight.shape
    return ((kh, kw) == (3, 3) and tuple(stride) == (1, 1) and min(C_in, C_out) >= WINOGRAD_CHANNELS
            and pixels >= WINOGRAD_PIXELS)


def _winograd_tiles(out_shape):
    """(th, tw): tiles of 2x2 outputs per column and per row of an (H_out, W_out) map."""
    return -(-out_shape[0] // 2), -(-out_shape[1] // 2)


WINOGRAD_CHUNK_PIXELS = 512
WINOGRAD_CHUNK_IMAGES = 4
"""Winograd takes ``min(WINOGRAD_CHUNK_IMAGES, ceil(WINOGRAD_CHUNK_PIXELS / (H_out*W_out)))`` images
at a time through every step (:func:`_winograd_chunk_images`): one from 32x32 maps on, two at 16x16, four
at 8x8, so that each of the 16 products has at least 128 tiles (64 at 8x8), and a chunk's tiles stay
in the core's cache. Measured on a 2-core Intel Xeon (AVX-512), FCN-8s's layers at batch 8,
forward+backward, medians of 7 alternating rounds: at 16x16 (conv3_1, conv3_2) chunks of two images
took 1.98 and 3.26 ms against 2.06 and 3.37 for one at one thread, 1.62 and 2.43 against 1.89 and
2.68 at two; at 8x8 (conv4_2) four images took 2.55 ms at two threads against 3.11-3.18 for 8 to 32
(one chunk: one thread). Earlier, on an AMD EPYC (AVX-512), conv4_1 and conv4_2 one image a chunk
-> four: 2.68 -> 2.36 ms and 4.57 -> 4.34 at one thread, 1.81 -> 1.63 and 3.18 -> 2.90 at two.
The chunks do not depend on the thread count, and the weight gradient adds their shares in order, so
neither does any result. (At 4x4, conv5, chunks of 4 or 8 images took 1.66-1.73 ms against im2col's
1.70 at one thread and 1.59-1.67 against 1.29 at two: it keeps im2col.) Measured once and written
here; nothing is timed at run time."""


def _winograd_chunk_images(pixels):
    """B, the images in a chunk: ``min(WINOGRAD_CHUNK_IMAGES, ceil(WINOGRAD_CHUNK_PIXELS / pixels))``. Chunk i
    holds images ``i*B`` to ``min(N, (i+1)*B) - 1`` (the last may be smaller), the same for any thread count,
    so no sum depends on it."""
    return min(WINOGRAD_CHUNK_IMAGES, -(-WINOGRAD_CHUNK_PIXELS // pixels))


def _winograd_weight(weight):
    """U (16, C_out, C_in): every 3x3 kernel transformed, ``U[4a + b, o, c] = (G weight[o, c] G^T)[a, b]``
    (:func:`tinyfcn.ops._kernels.winograd_weight`)."""
    U = np.empty((16, *weight.shape[:2]), weight.dtype)
    _kernels.winograd_weight(weight, U)
    return U


def _winograd_scratch(B, C_in, C_out, th, tw, dtype):
    """This thread's buffers for one chunk of B images (:func:`tinyfcn.ops._kernels.winograd_chunks`): the
    padded input ``xpad`` (B, C_in, 2*th + 2, 2*tw + 2) and, flat, the tiles ``V`` and ``dV`` (16 rows of
    C_in*B*T values, ``T = th*tw``, each followed by :data:`tinyfcn.ops._kernels.ROW_GAP` unused ones) and
    products ``M`` (16 rows of C_out*B*T, each with its gap)."""
    S_in, S_out = C_in * B * th * tw + _kernels.ROW_GAP, C_out * B * th * tw + _kernels.ROW_GAP
    return {"xpad": threads.scratch("winograd xpad", (B, C_in, 2 * th + 2, 2 * tw + 2), dtype),
            "V": threads.scratch("winograd V", (16 * S_in,), dtype),
            "dV": threads.scratch("winograd dV", (16 * S_in,), dtype),
            "M": threads.scratch("winograd M", (16 * S_out,), dtype)}


def _padded(name, a, padding):
    """``a`` (..., H, W) with ``padding`` (ph, pw) zeros around each map, in this thread's scratch
    buffer ``name``; ``a`` itself when there is no padding."""
    (ph, pw), (H, W) = padding, a.shape[-2:]
    if ph == pw == 0:
        return a
    buf = threads.scratch(name, (*a.shape[:-2], H + 2 * ph, W + 2 * pw), a.dtype)
    buf[..., :ph, :] = 0
    buf[..., H + ph:, :] = 0
    buf[..., :pw] = 0
    buf[..., W + pw:] = 0
    buf[..., ph:ph + H, pw:pw + W] = a
    return buf


def _im2col_images(x, n0, cols, kernel, stride, padding, out_size):
    """``cols[i]``: the columns of image ``n0 + i`` of ``x`` (:func:`tinyfcn.ops._kernels.im2col_images`, one
    call; its padded copy in this thread's scratch buffer)."""
    xpad = threads.scratch("xpad", (1, x.shape[1], x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1]), x.dtype)
    _kernels.im2col_images(x, *padding, *kernel, *stride, *out_size, n0, xpad, cols)


def conv2d_forward(x, weight, bias=None, stride=1, padding=0, relu=False, keep_columns=True):
    """2-D convolution (cross-correlation, as in every deep-learning library).

    ``out[n, o, i, j] = bias[o] + sum_{c,u,v} weight[o, c, u, v] * xpad[n, c, i*sh + u, j*sw + v]``

    3x3 stride-1 convolutions with 16 channels or more on maps of 8x8 or more run Winograd's
    F(2x2, 3x3) (:func:`_winograd`), with fewer channels on large maps a direct kernel
    (:func:`_direct`) instead of im2col and a matrix product; both agree with the im2col path to
    float32 rounding (the terms are added in another order).

    With ``relu`` the output is ``max(out, 0)``: the bias and the ReLU after the convolution are
    one pass over each image's output (:func:`tinyfcn.ops._kernels.bias_relu`), and the backward
    pass folds in the ReLU's mask (:class:`tinyfcn.ops.nn.Conv2d` does this when a
    :class:`~tinyfcn.networks.graph.Graph` fuses the two).

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W)
    weight : ndarray, shape (C_out, C_in, kH, kW)
    bias : ndarray, shape (C_out,), or None
    stride, padding : int or (int, int)
        Zero padding is added on both sides.
    relu : bool
        Rectify the output (a convolution followed by a ReLU).
    keep_columns : bool
        Keep the unfolded input in the cache for the backward pass (training). False (inference:
        :class:`tinyfcn.ops.nn.Conv2d` in evaluation mode) unfolds each image into one reused
        buffer instead, so no (N, C_in*kH*kW, H_out*W_out) array is made; a backward pass
        then unfolds the images again.

    Returns
    -------
    out : ndarray, shape (N, C_out, H_out, W_out), ``H_out = floor((H + 2p - kH) / s) + 1``
    cache : ``(x, weight, has_bias, stride, padding, cols, rectified)`` for :func:`conv2d_backward`
        stride and padding as (h, w) pairs; ``cols[n] = im2col(x[n:n+1])``, (N, C_in*kH*kW, H_out*W_out):
        each image's columns (the twin's (C_in*kH*kW, N*H_out*W_out) matrix, cut into images);
        for maps of fewer than :data:`SMALL_MAP` pixels, the twin's matrix itself; None where the
        direct kernel ran (:func:`_direct`); where Winograd ran (:func:`_winograd`), its transformed
        tiles: every chunk's V, chunk after chunk, in one flat array (chunks of B images,
        :func:`_winograd_chunk_images`), each chunk 16 rows of C_in*B*tiles values (its (16, C_in, B, tiles)
        array, a smaller last chunk's in the first columns), each row followed by
        :data:`tinyfcn.ops._kernels.ROW_GAP` unused values;
        None in every case with ``keep_columns=False``. ``rectified``
        is ``out`` with ``relu`` (the gradient passes where it is positive), else None.
        :func:`tinyfcn.ops.reference.conv2d_forward` gives the same layout with ``cols=None``.
    """
    op = "conv2d"
    x, weight, bias, kernel, stride, padding = _check_conv(op, x, weight, bias, stride, padding,
                                                           ("C_out", "C_in", "kH", "kW"))
    C_out, C_in, kh, kw = weight.shape
    N, _, H, W = x.shape
    Ho, Wo = conv2d_output_size((H, W), kernel, stride, padding)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"{op}: kernel {kh}x{kw} is larger than the padded input "
                         f"{H + 2 * padding[0]}x{W + 2 * padding[1]}")
    P = Ho * Wo
    weight2 = weight.reshape(C_out, -1)
    relu = bool(relu)
    size = (N * C_out * P, N * P * weight2.size)                      # values out, multiply-adds: a small job stays on one thread
    if _winograd(weight, stride, padding, P):                          # chunk by chunk of images: tiles, 16 products, outputs
        th, tw = _winograd_tiles((Ho, Wo))
        U, T, B = _winograd_weight(weight), th * tw, _winograd_chunk_images(P)
        gemm = blas.gemm_address(x.dtype)                             # NumPy's BLAS; 0: numba's np.dot
        chunks = -(-N // B)
        cols = np.empty(chunks * 16 * (C_in * B * T + _kernels.ROW_GAP), x.dtype) if keep_columns else None   # every chunk's V, in cols' place
        out = np.empty((N, C_out, Ho, Wo), x.dtype)
        counts = np.zeros(chunks, np.int64)

        def chunk_range(i0, i1):                                       # one range of chunks per thread, in one kernel call
            scratch = _winograd_scratch(B, C_in, C_out, th, tw, x.dtype)
            V = scratch["V"] if cols is None else cols
            counts[i0] = _kernels.winograd_chunks(x, *padding, U, gemm, bias, relu, B, i0, i1, V, cols is not None,
                                                  scratch["xpad"], scratch["M"], out)

        threads.parallel_ranges(chunks, chunk_range, *size)
        out = out.reshape(N, C_out, P)
        nonfinite = counts.sum()
    elif P < SMALL_MAP:                                                # one product over the whole batch
        cols = np.empty((C_in * kh * kw, N * P), x.dtype)
        _kernels.im2col(_padded("xpad", x, padding), kh, kw, *stride, Ho, Wo, cols)
        rows = np.empty((C_out, N * P), x.dtype)                       # threads share it by blocks of rows
        threads.parallel_for_blocks(C_out, 64, lambda b: np.matmul(weight2[b], cols, out=rows[b]), *size)
        out = np.empty((N, C_out, P), x.dtype)
        out[...] = rows.reshape(C_out, N, P).transpose(1, 0, 2)        # into NCHW order
        nonfinite = _kernels.bias_relu(out, bias, relu) if bias is not None or relu else 0
    else:
        direct = _direct(weight, stride, padding, P)                   # no columns: none are kept
        cols = np.empty((N, C_in * kh * kw, P), x.dtype) if keep_columns and not direct else None
        out = np.empty((N, C_out, P), x.dtype)
        counts = np.zeros(N, np.int64)

        def images(n0, n1):                                            # one range of images per thread
            if direct:
                for n in range(n0, n1):
                    _kernels.conv3x3(_padded("xpad", x[n], padding), weight, out[n].reshape(C_out, Ho, Wo))
            elif cols is None:                                         # columns not kept: an image at a time, one reused buffer
                cols_n = threads.scratch("cols", (1, C_in * kh * kw, P), x.dtype)
                for n in range(n0, n1):
                    _im2col_images(x, n, cols_n, kernel, stride, padding, (Ho, Wo))
                    np.matmul(weight2, cols_n[0], out=out[n])
            else:                                                      # the range's columns in one call, its products in one
                _im2col_images(x, n0, cols[n0:n1], kernel, stride, padding, (Ho, Wo))
                np.matmul(weight2, cols[n0:n1], out=out[n0:n1])
            if bias is not None or relu:
                counts[n0] = _kernels.bias_relu(out[n0:n1], bias, relu)

        threads.parallel_ranges(N, images, *size)
        nonfinite = counts.sum()
    _check_rectified(op, nonfinite)
    out = out.reshape(N, C_out, Ho, Wo)
    return out, (x, weight, bias is not None, stride, padding, cols if keep_columns else None, out if relu else None)


def conv2d_backward(dout, cache, input_grad=True):
    """Gradients of :func:`conv2d_forward`.

    ``dweight = dout2 @ cols.T``, ``dbias = sum of dout over (N, H_out, W_out)``,
    ``dx = col2im(weight2.T @ dout2)`` -- the input gradient is a transposed convolution of dout.
    Both products run image by image (``dout[n]`` is already a (C_out, H_out*W_out) matrix):
    ``dweight`` is the sum of the images' ``dout[n] @ cols[n].T`` (computed as its transpose
    ``cols[n] @ dout[n].T``, the faster product; see the module docstring), ``dbias`` of their
    ``dout[n].sum(axis=1)``. Small maps (2-D ``cols``) run the two products over the whole batch,
    as written above, each in one call (cut into blocks, each block's call packs the other
    matrix again: conv5's backward took 1.11 ms instead of 1.00 at one thread), and at two
    threads side by side, one product per thread. With a fused ReLU (the cache's ``rectified`` is not None) ``dout`` is first
    the ReLU's backward, ``dout * (rectified > 0)``: image by image into a buffer that the two
    products then read from the cache.

    Where the forward pass ran the direct kernel (:func:`_direct`; it keeps no columns), each
    image's columns are unfolded again for its ``dweight`` product, and ``dx`` is the direct
    kernel on dout: for stride 1, ``dx = conv2d(dout padded by 2 - p, weight turned into
    (C_in, C_out, 3, 3) and flipped in both spatial axes)``. Where it ran Winograd, see
    :func:`_winograd_backward`.

    Parameters
    ----------
    dout : ndarray, shape (N, C_out, H_out, W_out)
    cache : from :func:`conv2d_forward` (or its reference twin; then cols is recomputed)
    input_grad : bool
        False skips the input gradient (returned as None): a network's first convolution, whose
        input is the data, needs none in a training step (PyTorch's ``requires_grad=False`` input).
        The weight and bias gradients are the same bits either way.

    Returns
    -------
    dx : ndarray, shape (N, C_in, H, W), or None with ``input_grad=False``
    dweight : ndarray, shape (C_out, C_in, kH, kW)
    dbias : ndarray, shape (C_out,), or None if the forward pass had no bias
    """
    x, weight, has_bias, stride, padding, cols, rectified = cache
    N = x.shape[0]
    C_out = weight.shape[0]
    Ho, Wo = conv2d_output_size(x.shape[2:], weight.shape[2:], stride, padding)
    dout = _check_grad("conv2d_backward", dout, (N, C_out, Ho, Wo), x.dtype)
    kept = None if rectified is None else np.ascontiguousarray(rectified).reshape(N, C_out, -1)
    x, P = np.ascontiguousarray(x), Ho * Wo
    dout3 = dout.reshape(N, C_out, -1)                                 # (N, C_out, Ho*Wo): one matrix per image
    if _winograd(weight, stride, padding, P):
        return _winograd_backward(dout, None if kept is None else kept.reshape(dout.shape), x, weight, has_bias,
                                  padding, cols, Ho, Wo, input_grad)
    if cols is None and P < SMALL_MAP:                                 # the twin's cache: unfold the batch again
        cols = np.empty((weight[0].size, N * P), x.dtype)
        _kernels.im2col(_padded("xpad", x, padding), *weight.shape[2:], *stride, Ho, Wo, cols)
    weight2 = weight.reshape(C_out, -1)
    size = (N * C_out * P, N * P * weight2.size)                      # values out, multiply-adds: a small job stays on one thread
    dx = np.empty(x.shape, x.dtype) if input_grad else None
    if P < SMALL_MAP:                                                  # a small map: the whole batch at once
        if kept is not None:
            dout3 = _masked(dout3, kept, np.empty(dout3.shape, x.dtype))
        dout2 = dout3.transpose(1, 0, 2).reshape(C_out, -1)            # (C_out, N*Ho*Wo)
        dweight = np.empty(weight2.shape, x.dtype)

        def product(i):                                                # the two products, side by side at two threads
            if i == 0:
                np.matmul(dout2, cols.T, out=dweight)
            else:
                dcols = threads.scratch("dcols", cols.shape, x.dtype)
                np.matmul(weight2.T, dout2, out=dcols)
                _kernels.col2im(dcols, *weight.shape[2:], *stride, *padding, Ho, Wo, dx)

        threads.parallel_for(2 if input_grad else 1, product, *size)
        return dx, dweight.reshape(weight.shape), dout3.sum(axis=(0, 2)) if has_bias else None
    per_image = np.empty((N, *weight2.shape[::-1]), x.dtype)           # each image's share of dweight, transposed
    per_image_bias = np.empty((N, C_out), x.dtype)                     # ... and of dbias
    direct = _direct(weight, stride, padding, P)
    flipped = np.ascontiguousarray(weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]) if direct and input_grad else None

    def images(n0, n1):                                                # one range of images per thread
        g = dout3[n0:n1]
        if kept is not None:
            g = _masked(g, kept[n0:n1], threads.scratch("masked", g.shape, x.dtype))
        if cols is None:                                               # the direct kernel's (or the twin's) cache
            cols_n = threads.scratch("cols", (1, weight2.shape[1], P), x.dtype)
            for n in range(n0, n1):                                    # each image's columns, then its product
                _im2col_images(x, n, cols_n, weight.shape[2:], stride, padding, (Ho, Wo))
                np.matmul(cols_n[0], g[n - n0].T, out=per_image[n])
        else:                                                          # the range's products in one call
            np.matmul(cols[n0:n1], g.transpose(0, 2, 1), out=per_image[n0:n1])
        if has_bias:
            g.sum(axis=2, out=per_image_bias[n0:n1])
        if not input_grad:
            return
        for n in range(n0, n1):
            if direct:
                flip_padding = (2 - padding[0], 2 - padding[1])
                _kernels.conv3x3(_padded("doutpad", g[n - n0].reshape(C_out, Ho, Wo), flip_padding), flipped, dx[n])
            else:
                dcols = threads.scratch("dcols", (weight2.shape[1], P), x.dtype)
                np.matmul(weight2.T, g[n - n0], out=dcols)
                _kernels.col2im(dcols, *weight.shape[2:], *stride, *padding, Ho, Wo, dx[n:n + 1])

    threads.parallel_ranges(N, images, *size)
    dweight = np.ascontiguousarray(per_image.sum(axis=0).T).reshape(weight.shape)   # a fixed order: the same sum for any thread count
    dbias = per_image_bias.sum(axis=0) if has_bias else None
    return dx, dweight, dbias


def _winograd_backward(dout, kept, x, weight, has_bias, padding, V, Ho, Wo, input_grad):
    """:func:`conv2d_backward` where the forward pass ran Winograd: back through each step, chunk by chunk
    (:func:`tinyfcn.ops._kernels.winograd_chunks_backward`, one call per thread).

    ``dM = A dy A^T`` per tile; ``dU[k] = dM[k] @ V[k].T`` per chunk of images (:func:`_winograd_chunk_images`),
    added over the chunks in order, and ``dweight = G^T dU G``; ``dV[k] = U[k].T @ dM[k]`` and ``dx`` adds
    ``B dv B^T`` of each tile into its window. V is recomputed when the cache holds none (the twin's
    cache, or evaluation mode). With ``input_grad=False`` the steps to dx are skipped and dx is None.
    """
    N, C_in, H, W = x.shape
    C_out = weight.shape[0]
    th, tw = _winograd_tiles((Ho, Wo))
    B = _winograd_chunk_images(Ho * Wo)
    chunks = -(-N // B)
    U = _winograd_weight(weight) if input_grad else None
    gemm = blas.gemm_address(x.dtype)                                 # NumPy's BLAS; 0: numba's np.dot
    per_chunk = np.empty((chunks, 16, C_out, C_in), x.dtype)           # each chunk's dU
    per_image_bias = np.empty((N, C_out), x.dtype)
    dx = np.empty(x.shape, x.dtype) if input_grad else None
    masked = np.empty(dout.shape, x.dtype) if kept is not None else None   # the gradient after the ReLU

    def chunk_range(i0, i1):                                           # one range of chunks per thread, in one kernel call
        scratch = _winograd_scratch(B, C_in, C_out, th, tw, x.dtype)
        _kernels.winograd_chunks_backward(dout, kept, x, *padding, U, gemm, B, i0, i1, scratch["V"] if V is None else V,
                                          V is not None, masked, per_chunk, dx, scratch["xpad"], scratch["M"],
                                          scratch["dV"])
        if has_bias:
            n0, n1 = i0 * B, min(N, i1 * B)
            g = dout if masked is None else masked
            g[n0:n1].reshape(n1 - n0, C_out, -1).sum(axis=2, out=per_image_bias[n0:n1])

    threads.parallel_ranges(chunks, chunk_range, N * C_out * Ho * Wo, N * Ho * Wo * weight.size)
    dweight = np.empty(weight.shape, x.dtype)                          # G^T dU G, the chunks' dU added in a fixed order
    _kernels.winograd_weight_adjoint(per_chunk.sum(axis=0), dweight)
    dbias = per_image_bias.sum(axis=0) if has_bias else None
    return dx, dweight, dbias


def _check_rectified(op, nonfinite):
    """Raise where a fused ReLU met NaN or inf (``nonfinite`` of them): the ReLU on its own would have refused them."""
    if nonfinite:
        raise NonFiniteError(f"{op}: the output contains NaN or inf (before its ReLU)")


def _masked(dout, rectified, out):
    """``out = dout`` where ``rectified > 0``, else 0 (a fused ReLU's backward); arrays of one shape. Returns out."""
    _kernels.relu_backward(dout.reshape(-1), rectified.reshape(-1), out.reshape(-1))
    return out


def conv_transpose2d_forward(x, weight, bias=None, stride=1, padding=0):
    """2-D transposed convolution: every input pixel adds a weighted copy of the kernel to the output.

    ``x[n, c, i, j] * weight[c]`` (a (C_out, kH, kW) block) is added into the output window
    starting at ``(i*sh - ph, j*sw - pw)``; overlapping copies sum and the padding trims the border.
    It is the adjoint of :func:`conv2d_forward` with the same weight array, stride and padding.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W)
    weight : ndarray, shape (C_in, C_out, kH, kW)
    bias : ndarray, shape (C_out,), or None
    stride, padding : int or (int, int)

    Returns
    -------
    out : ndarray, shape (N, C_out, H_out, W_out), ``H_out = (H - 1) * s - 2p + kH``
    cache : ``(x, weight, has_bias, stride, padding, None)`` for :func:`conv_transpose2d_backward`
        stride and padding as (h, w) pairs, the layout of
        :func:`tinyfcn.ops.reference.conv_transpose2d_forward`'s cache. (The last slot once held
        x as rows; image by image, ``x[n]`` is already the (C_in, H*W) matrix the weight
        gradient needs.)
    """
    op = "conv_transpose2d"
    x, weight, bias, kernel, stride, padding = _check_conv(op, x, weight, bias, stride, padding,
                                                           ("C_in", "C_out", "kH", "kW"))
    C_in, C_out, _, _ = weight.shape
    N, _, H, W = x.shape
    Ho, Wo = conv_transpose2d_output_size((H, W), kernel, stride, padding)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"{op}: output size (H-1)*s - 2p + k = {Ho}x{Wo} is not positive; reduce the padding")
    x3 = x.reshape(N, C_in, H * W)                                     # image n as a (C_in, H*W) matrix
    weight2t = weight.reshape(C_in, -1).T
    out = np.empty((N, C_out, Ho, Wo), x.dtype)

    def images(n0, n1):                                                # one range of images per thread
        copies = threads.scratch("copies", weight2t.shape[:1] + (H * W,), x.dtype)
        for n in range(n0, n1):
            np.matmul(weight2t, x3[n], out=copies)                     # column (i, j): kernel weighted by x[n, :, i, j]
            _kernels.col2im(copies, *kernel, *stride, *padding, H, W, out[n:n + 1])
        if bias is not None:
            out[n0:n1] += bias[:, None, None]

    threads.parallel_ranges(N, images, out.size, x.size * weight[0].size)
    return out, (x, weight, bias is not None, stride, padding, None)


def conv_transpose2d_backward(dout, cache, weight_grad=True):
    """Gradients of :func:`conv_transpose2d_forward`.

    Each copy reads back the output window it was added to: ``cols = im2col(dout)``,
    ``dx = weight2 @ cols`` (a convolution of dout with the same weight),
    ``dweight = x_rows @ cols.T`` (summed image by image: ``x[n] @ cols[n].T``, computed as its transpose
    ``cols[n] @ x[n].T``, the faster product, as in :func:`conv2d_backward`), ``dbias = sum of dout over (N, H_out, W_out)``.

    Parameters
    ----------
    dout : ndarray, shape (N, C_out, H_out, W_out)
    cache : from :func:`conv_transpose2d_forward` (or its reference twin)
    weight_grad : bool
        False skips dweight and dbias (a frozen layer, such as FCN's bilinear upsampling).

    Returns
    -------
    dx : ndarray, shape (N, C_in, H, W)
    dweight : ndarray, shape (C_in, C_out, kH, kW), or None if not ``weight_grad``
    dbias : ndarray, shape (C_out,), or None if the forward pass had no bias or not ``weight_grad``
    """
    x, weight, has_bias, stride, padding, _ = cache
    N, C_in, H, W = x.shape
    out_size = conv_transpose2d_output_size((H, W), weight.shape[2:], stride, padding)
    dout = _check_grad("conv_transpose2d_backward", dout, (N, weight.shape[1], *out_size), x.dtype)
    x3 = np.ascontiguousarray(x).reshape(N, C_in, H * W)
    weight2 = weight.reshape(C_in, -1)
    dx = np.empty((N, C_in, H * W), x.dtype)
    per_image = np.empty((N, *weight2.shape[::-1]), x.dtype) if weight_grad else None   # dweight's shares, transposed

    def images(n0, n1):                                                # one range of images per thread
        cols = threads.scratch("cols", (1, weight2.shape[1], H * W), x.dtype)   # an image's (C_out*kH*kW, H*W)
        for n in range(n0, n1):
            _im2col_images(dout, n, cols, weight.shape[2:], stride, padding, (H, W))
            np.matmul(weight2, cols[0], out=dx[n])
            if weight_grad:
                np.matmul(cols[0], x3[n].T, out=per_image[n])

    threads.parallel_ranges(N, images, dout.size, x.size * weight[0].size)
    dx = dx.reshape(N, C_in, H, W)
    if not weight_grad:
        return dx, None, None
    dweight = np.ascontiguousarray(per_image.sum(axis=0).T).reshape(weight.shape)
    dbias = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dweight, dbias


# ---------------------------------------------------------------- pooling


def max_pool2d_forward(x, kernel_size=2, stride=None, padding=0, ceil_mode=False):
    """2-D max-pooling; remembers where each maximum came from.

    2x2 windows at stride 2 without padding, all inside x, run a kernel written for them
    (:func:`tinyfcn.ops._kernels.max_pool2d_2x2`; the same values and indices) on the calling thread:
    FCN-8s's pool1 (16 channels at 64x64, batch 8) takes 0.10 ms on one thread and took 0.14 on two,
    which cost more to hand over than they saved. Padding counts as -inf. ``ceil_mode`` rounds the output size up as PyTorch does
    (the last window may hang over the bottom/right edge but must start inside).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    kernel_size : int or (int, int)
    stride : int or (int, int), default ``kernel_size``
    padding : int or (int, int), at most half the kernel size
    ceil_mode : bool

    Returns
    -------
    out : ndarray, shape (N, C, H_out, W_out), ``H_out = floor_or_ceil((H + 2p - k) / s) + 1``
    cache : ``(indices, x.shape, x.dtype)``; ``indices`` (N, C, H_out, W_out) int64 holds the flat
        position ``h*W + w`` of each window's first maximum in x[n, c]; it is what
        :func:`max_unpool2d_forward` takes.
    """
    op = "max_pool2d"
    x = _check_array(op, "x", x, ("N", "C", "H", "W"))
    kernel, stride, padding = _check_geometry(op, kernel_size, kernel_size if stride is None else stride, padding)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{op}: padding {padding} must be at most half the kernel size {kernel}")
    N, C, H, W = x.shape
    Ho, Wo = pool2d_output_size((H, W), kernel, stride, padding, ceil_mode)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"{op}: kernel {kernel[0]}x{kernel[1]} is larger than the padded input "
                         f"{H + 2 * padding[0]}x{W + 2 * padding[1]}")
    out = np.empty((N, C, Ho, Wo), x.dtype)
    indices = np.empty((N, C, Ho, Wo), np.int64)
    if kernel == stride == (2, 2) and padding == (0, 0) and 2 * Ho <= H and 2 * Wo <= W:   # every window inside x
        _kernels.max_pool2d_2x2(x, out, indices)                       # on this thread: faster than two (see above)
    else:
        threads.parallel_ranges(N, lambda n0, n1: _kernels.max_pool2d_forward(x[n0:n1], *kernel, *stride, *padding,
                                                                              out[n0:n1], indices[n0:n1]), out.size)
    return out, (indices, x.shape, x.dtype)


def max_pool2d_backward(dout, cache):
    """Gradient of :func:`max_pool2d_forward`: each window's gradient goes to its maximum (argmax routing).

    Where overlapping windows share a maximum, their gradients add.
    dout: (N, C, H_out, W_out) -> dx: (N, C, H, W).
    """
    indices, x_shape, dtype = cache
    dout = _check_grad("max_pool2d_backward", dout, indices.shape, dtype)
    return _unpool(dout, indices, x_shape, dout.size)


def _unpool(x, indices, shape, values):
    """Scatter-add x into a zero map of ``shape`` at the flat positions ``indices`` (checked by the caller);
    ``values``: the size of the op's output map (:func:`tinyfcn.threads.parallel_for`)."""
    out = np.empty(shape, x.dtype)
    threads.parallel_ranges(len(x), lambda n0, n1: _kernels.max_unpool2d(x[n0:n1], indices[n0:n1], out[n0:n1]), values)
    return out


def max_unpool2d_forward(x, indices, output_size):
    """Max-unpooling: put every value back at the position its index names; 0 elsewhere.

    ``out[n, c].flat[indices[n, c, i, j]] += x[n, c, i, j]``. With indices from a
    max-pool whose windows do not overlap (kernel == stride, as SegNet uses it) this
    is PyTorch's ``max_unpool2d``; where windows overlap and share a maximum the values
    add, which makes max-pooling's backward pass exactly this op.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    indices : integer ndarray, shape (N, C, H, W), e.g. the first entry of the max-pool cache
    output_size : (H_out, W_out), usually the size of the pooled input

    Returns
    -------
    out : ndarray, shape (N, C, H_out, W_out)
    cache : ``(indices, out.shape, x.dtype)`` for :func:`max_unpool2d_backward`
    """
    op = "max_unpool2d"
    x = _check_array(op, "x", x, ("N", "C", "H", "W"))
    if not isinstance(indices, np.ndarray) or indices.dtype.kind not in "iu":
        got = indices.dtype if isinstance(indices, np.ndarray) else type(indices).__name__
        raise TypeError(f"{op}: indices must be an integer array, got {got}")
    if indices.shape != x.shape:
        raise ValueError(f"{op}: indices must have the shape of x {x.shape}, got {indices.shape}")
    Ho, Wo = pair(tuple(output_size), "output_size")
    if Ho < 1 or Wo < 1:
        raise ValueError(f"{op}: output_size must be positive, got {(Ho, Wo)}")
    if indices.size and (indices.min() < 0 or indices.max() >= Ho * Wo):
        raise ValueError(f"{op}: indices must lie in [0, {Ho * Wo}) to address a {Ho}x{Wo} "
                         f"plane, got values in [{indices.min()}, {indices.max()}]")
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    out_shape = (*x.shape[:2], Ho, Wo)
    return _unpool(x, indices, out_shape, int(np.prod(out_shape))), (indices, out_shape, x.dtype)


def max_unpool2d_backward(dout, cache):
    """Gradient of :func:`max_unpool2d_forward`: ``dx[n, c, i, j] = dout[n, c].flat[indices[n, c, i, j]]``.

    dout: (N, C, H_out, W_out) -> dx: (N, C, H, W), the shape of the indices.
    """
    indices, out_shape, dtype = cache
    dout = _check_grad("max_unpool2d_backward", dout, out_shape, dtype)
    dx = np.empty(indices.shape, dtype)
    _kernels.max_unpool2d_backward(dout, indices, dx)
    return dx


# ---------------------------------------------------------------- activations and loss


def relu_forward(x):
    """``out = max(x, 0)``. x: any shape. Returns ``(out, cache)``; the cache is ``out``."""
    x = _check_array("relu", "x", x)
    out = np.empty_like(x)
    _elementwise(_kernels.relu_forward, x, out)
    return out, out


def relu_backward(dout, cache):
    """``dx = dout`` where the forward output was positive, else 0 (the gradient at 0 is taken as 0)."""
    dout = _check_grad("relu_backward", dout, cache.shape, cache.dtype)
    dx = np.empty_like(dout)
    _elementwise(_kernels.relu_backward, dout, cache, dx)
    return dx


def _elementwise(kernel, *arrays):
    """Run an element-by-element kernel on 1-D views of equal-size arrays, in blocks shared by the threads."""
    flat = [a.reshape(-1) for a in arrays]
    block = max(1 << 16, -(-flat[0].size // (4 * threads.get_threads())))
    threads.parallel_for(-(-flat[0].size // block), lambda i: kernel(*(a[i * block:(i + 1) * block] for a in flat)))


def softmax(scores, axis=1):
    """Softmax along ``axis`` (default: the class axis of (N, K, H, W) scores), stable for any logits."""
    scores = _check_array("softmax", "scores", scores)
    e = np.exp(scores - scores.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_cross_entropy(scores, target, ignore_index=IGNORE, reduction="mean", class_weights=None):
    """Per-pixel softmax cross-entropy with an ignore label and optional class weights, and its gradient.

    With ``w = class_weights`` (all ones when None) and ``t_p`` the label of pixel p,
    ``loss = sum_p w[t_p] * [logsumexp_k scores[n, k, p] - scores[n, t_p, p]]`` over the pixels
    whose label is not ``ignore_index``; ``reduction="mean"`` divides by ``sum_p w[t_p]`` over
    those pixels (the weighted mean; without weights, their number), ``"sum"`` does not.
    ``dscores = w[t_p] * (softmax(scores) - onehot(target))`` at counted pixels (divided
    likewise), 0 elsewhere. These are the semantics of PyTorch's
    ``cross_entropy(scores, target, weight=w, ignore_index=..., reduction=...)``, except where
    the mean's divisor is 0 (every pixel ignored, or every counted pixel's weight 0): the loss
    is then 0 with a zero gradient, where PyTorch gives NaN.

    The denominator is computed first, from the labels alone; then each image runs on one of
    tinyfcn's threads, and the images' sums are added in image order (the same bits for any
    thread count).

    Parameters
    ----------
    scores : ndarray, shape (N, K, H, W), float
    target : ndarray, shape (N, H, W), integer labels in [0, K) or ``ignore_index``
    ignore_index : int
    reduction : {"mean", "sum"}
    class_weights : ndarray, shape (K,), float, or None
        One finite weight >= 0 per class (e.g. from
        :func:`tinyfcn.datasets.statistics.median_frequency_weights`); None weighs every class 1.

    Returns
    -------
    loss : float
    dscores : ndarray, shape (N, K, H, W)
    """
    op = "softmax_cross_entropy"
    scores = _check_array(op, "scores", scores, ("N", "K", "H", "W"))
    if reduction not in ("mean", "sum"):
        raise ValueError(f"{op}: reduction must be 'mean' or 'sum', got {reduction!r}")
    if not isinstance(target, np.ndarray) or target.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must be an integer array of labels, got "
                        f"{target.dtype if isinstance(target, np.ndarray) else type(target).__name__}")
    N, K, H, W = scores.shape
    if target.shape != (N, H, W):
        raise ValueError(f"{op}: target must have shape (N, H, W) = {(N, H, W)} to match scores, got {target.shape}")
    weights = np.ones(K) if class_weights is None else _check_class_weights(op, class_weights, K)
    target = np.ascontiguousarray(target, dtype=np.int64)
    if target.size and (target.min() < 0 or target.max() >= K):
        bad = target[(target != ignore_index) & ((target < 0) | (target >= K))]
        if bad.size:
            raise ValueError(f"{op}: labels must lie in [0, {K}) or equal ignore_index={ignore_index}; "
                             f"found {np.unique(bad)[:10].tolist()}")
    counted = np.bincount(target[target != ignore_index], minlength=K)   # pixels per class
    total_weight = float(counted @ weights)                            # the count itself without weights
    scale = 1.0 / total_weight if reduction == "mean" and total_weight else 1.0
    dscores = np.empty_like(scores)
    scores3, target2, dscores3 = scores.reshape(N, K, -1), target.reshape(N, -1), dscores.reshape(N, K, -1)
    totals = np.empty(N)                                               # each image's summed weighted loss

    def image(n):
        totals[n] = _kernels.softmax_cross_entropy(scores3[n:n + 1], target2[n:n + 1], ignore_index, weights,
                                                   scale, dscores3[n:n + 1])

    threads.parallel_for(N, image, scores.size)
    return float(totals.sum() * scale), dscores


def _check_class_weights(op, class_weights, K):
    """``class_weights`` as float64 (K,) after checking: a 1-D float array of K finite values >= 0."""
    weights = _check_array(op, "class_weights", class_weights, ("K",))
    if weights.shape != (K,):
        raise ValueError(f"{op}: class_weights must hold one weight per class, K = {K}, got {weights.size}")
    if (weights < 0).any():
        raise ValueError(f"{op}: class_weights must be >= 0, got {weights[weights < 0][:10].tolist()} "
                         f"at classes {np.flatnonzero(weights < 0)[:10].tolist()}")
    return weights.astype(np.float64)


# ---------------------------------------------------------------- batch normalisation

BN_SHARE = 1 << 20
"""A batch norm of at least this many values is shared between tinyfcn's threads, one range of
whole channels each; a smaller one runs on the calling thread. Each range runs in one kernel call
(:func:`tinyfcn.ops._kernels.batch_norm2d_forward_channels`, ``..._backward_channels``): with the
per-channel arithmetic in numpy between two kernels, the two threads handed the interpreter lock
back and forth between them.

Measured on a 2-core AMD EPYC (AVX2), the forward and backward pass of a training step, one thread
against two, medians: 8 x 16 channels at 64x64 (512K values, FCN-8s's first block at batch 8)
0.45 / 0.54 ms and 0.43 / 0.55; at 96x96 (1.1M) 1.01 / 0.77 and 1.16 / 0.80; at 128x128 (2M)
2.04 / 1.44 and 2.53 / 1.59; 4 x 64 channels at 64x64 (1M) 0.87 / 0.75 and 0.97 / 0.81. (On an
Intel Xeon, before the one-call kernels, 512K values took 0.27 / 0.33 ms forward and 0.46 / 0.35
backward.) A channel is summed in one piece,
in a fixed order, so no result depends on the ranges or the thread count."""


def _check_per_channel(op, name, a, channels, dtype):
    """A (C,) array of the input's dtype: one value per channel of x."""
    checked = _check_array(op, name, a, ("C",), dtype)
    if checked.shape != (channels,):
        raise ValueError(f"{op}: {name} must have shape ({channels},), one value per channel of x, got {checked.shape}")
    return checked


def _for_channel_ranges(N, C, P, body):
    """Run ``body(c0, c1)`` over the channels ``[0, C)``: one range per thread from :data:`BN_SHARE` values
    (N*C*P) on, else ``body(0, C)`` on the calling thread."""
    if N * C * P >= BN_SHARE:
        threads.parallel_ranges(C, body)
    else:
        body(0, C)


def batch_norm2d_forward(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5, relu=False):
    """Batch normalisation, PyTorch's ``BatchNorm2d``: ``out = gamma * (x - mean) / sqrt(var + eps) + beta`` per channel.

    Training: ``mean`` and the biased variance ``var`` of each channel over the batch, axes
    (N, H, W): m = N*H*W values. The running statistics are updated in place,
    ``running_mean = (1 - momentum) * running_mean + momentum * mean`` and
    ``running_var = (1 - momentum) * running_var + momentum * var * m / (m - 1)`` (the unbiased variance).
    Evaluation: ``mean`` and ``var`` are the running statistics, which stay as they are.
    With ``relu``, the output is ``max(out, 0)``: batch norm and the ReLU after it in one pass
    (:class:`tinyfcn.ops.nn.BatchNorm2d` does this when a :class:`~tinyfcn.networks.graph.Graph`
    fuses the two), and the backward pass folds in the ReLU's mask.

    How it runs: for each channel a kernel sums its values, then their squared deviations from
    the channel's mean, in float64 even for float32 input (a variance is a small difference of
    large sums; float32 keeps 7 digits): ``mean = sum / m``, ``var = squares / m``; then ``out`` is
    written in one pass. Channels are independent, so tinyfcn's threads take ranges of whole channels
    (from :data:`BN_SHARE` values on), each range in one kernel call
    (:func:`tinyfcn.ops._kernels.batch_norm2d_forward_channels`).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    gamma, beta : ndarray, shape (C,)
        The learned scale and shift (the layer's ``weight`` and ``bias``).
    running_mean, running_var : ndarray, shape (C,)
        Updated in place in training; read in evaluation.
    training : bool
    momentum : float in [0, 1]
    eps : float > 0
    relu : bool
        Rectify the output (batch norm followed by a ReLU).

    Returns
    -------
    out : ndarray, shape (N, C, H, W)
    cache : ``(x, gamma, mean, inv_std, training, rectified)`` for :func:`batch_norm2d_backward`
        ``mean`` and ``inv_std = 1 / sqrt(var + eps)``, (C,) float64: the statistics x was
        normalised with (the batch's in training, the running ones in evaluation); ``rectified``
        is ``out`` with ``relu`` (the gradient passes where it is positive), else None.
        :func:`tinyfcn.ops.reference.batch_norm2d_forward` gives the same layout.

    Raises
    ------
    ValueError
        In training when there is only one value per channel (m = 1: its variance is 0 and its
        unbiased variance undefined), as PyTorch does.
    """
    op = "batch_norm2d"
    x = _check_array(op, "x", x, ("N", "C", "H", "W"))
    N, C, H, W = x.shape
    P, m = H * W, N * H * W
    gamma = _check_per_channel(op, "gamma", gamma, C, x.dtype)
    beta = _check_per_channel(op, "beta", beta, C, x.dtype)
    for name, a in (("running_mean", running_mean), ("running_var", running_var)):
        _check_per_channel(op, name, a, C, x.dtype)                   # checked; the caller's arrays are updated
    if not 0 <= momentum <= 1 or not eps > 0:
        raise ValueError(f"{op}: need 0 <= momentum <= 1 and eps > 0, got momentum={momentum}, eps={eps}")
    if (running_var < 0).any():
        raise ValueError(f"{op}: running_var must not be negative, got a minimum of {running_var.min()}")
    x3, out = x.reshape(N, C, P), np.empty_like(x)
    out3, relu = out.reshape(N, C, P), bool(relu)
    if training:
        if m <= 1:
            raise BatchStatisticsError(f"{op}: BatchNorm2d in training needs more than one value per channel; got input of "
                             f"shape {x.shape}; use a batch larger than 1 or eval mode")
        if not (running_mean.flags.writeable and running_var.flags.writeable):
            raise ValueError(f"{op}: running_mean and running_var are updated in place in training; pass writeable arrays")
        mean, var = np.empty(C), np.empty(C)                           # the batch's, range by range
    else:
        mean, var = running_mean.astype(np.float64), running_var.astype(np.float64)
    inv_std, mean_x, scale, counts = np.empty(C), np.empty(C, x.dtype), np.empty(C, x.dtype), np.zeros(C, np.int64)

    def channels(c0, c1):                   # channels c0 to c1 - 1, from start to end, in one kernel call
        counts[c0] = _kernels.batch_norm2d_forward_channels(x3, gamma, beta, training, eps, relu, c0, c1, mean, var,
                                                            inv_std, mean_x, scale, out3)

    _for_channel_ranges(N, C, P, channels)
    _check_rectified(op, counts.sum())
    if training:
        running_mean[...] = (1 - momentum) * running_mean + momentum * mean
        running_var[...] = (1 - momentum) * running_var + momentum * var * (m / (m - 1))
    return out, (x, gamma, mean, inv_std, training, out if relu else None)


def batch_norm2d_backward(dout, cache):
    """Gradients of :func:`batch_norm2d_forward`. Sums run over (N, H, W) per channel; ``sigma = sqrt(var + eps)``.

    ``dbeta = sum(dout)`` and ``dgamma = sum(dout * x_hat)``, ``x_hat = (x - mean) / sigma``. In training::

        dx = gamma / (m * sigma) * (m * dout - sum(dout) - x_hat * sum(dout * x_hat))

    Derivation, per channel, backwards through the graph x -> (mean, var) -> x_hat -> out:
    ``dx_hat = gamma * dout``;
    ``dvar = -1/2 * sigma^-3 * sum(dx_hat * (x - mean))``;
    ``dmean = -sum(dx_hat) / sigma`` (its term through var, ``dvar * -2/m * sum(x - mean)``, is 0);
    ``dx = dx_hat / sigma + dvar * 2 (x - mean) / m + dmean / m``.
    Writing ``x - mean = sigma * x_hat`` turns the three terms into
    ``(m * dx_hat - sum(dx_hat) - x_hat * sum(dx_hat * x_hat)) / (m * sigma)``, the form above.
    The two sums remove from ``dout`` its mean and its component along ``x_hat``: moving every x of
    a channel together, or scaling them about their mean, leaves the normalised output unchanged
    (up to eps), so the gradient has no part along either direction.

    In evaluation mean and sigma are constants, so ``dx = dout * gamma / sigma``.
    With a fused ReLU (the cache's ``rectified`` is not None) ``dout`` is first the ReLU's
    backward, ``dout * (rectified > 0)``, inside the same kernels.

    How it runs: one kernel sums ``dout`` and ``dout * (x - mean)`` per channel (in float64); a second
    writes ``dx = scale * (dout - centre - (x - mean) * slope)`` in one pass, with ``scale = gamma / sigma``,
    ``centre = sum(dout) / m`` and ``slope = sum(dout * x_hat) / (m * sigma)`` in training, and
    centre = slope = 0 in evaluation. Both run on each range of channels in turn, as in the forward pass.

    Parameters
    ----------
    dout : ndarray, shape (N, C, H, W)
    cache : from :func:`batch_norm2d_forward` (or its reference twin)

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dgamma, dbeta : ndarray, shape (C,)
    """
    x, gamma, mean, inv_std, training, rectified = cache
    N, C, H, W = x.shape
    P = H * W
    dout = _check_grad("batch_norm2d_backward", dout, x.shape, x.dtype)
    x3, dout3 = np.ascontiguousarray(x).reshape(N, C, P), dout.reshape(N, C, P)
    kept = None if rectified is None else np.ascontiguousarray(rectified).reshape(N, C, P)
    dbeta, dgamma = np.empty(C), np.empty(C)
    mean_x, scale, centre, slope = (np.zeros(C, x.dtype) for _ in range(4))   # centre = slope = 0 in evaluation
    dx = np.empty(x.shape, x.dtype)
    dx3 = dx.reshape(N, C, P)

    def channels(c0, c1):                   # channels c0 to c1 - 1, from start to end, in one kernel call
        _kernels.batch_norm2d_backward_channels(dout3, x3, gamma, mean, inv_std, kept, training, c0, c1, dbeta, dgamma,
                                                mean_x, scale, centre, slope, dx3)

    _for_channel_ranges(N, C, P, channels)
    return dx, dgamma.astype(x.dtype), dbeta.astype(x.dtype)
