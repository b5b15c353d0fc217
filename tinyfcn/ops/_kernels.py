"""Every compiled loop of tinyfcn, and the only module that imports numba.

These kernels are private. They take C-contiguous arrays and plain ints, write into
output arrays the caller allocates, and check nothing: the wrappers in
:mod:`tinyfcn.ops.functional` validate shapes, dtypes and values first. Each kernel has
a plain-NumPy twin in :mod:`tinyfcn.ops.reference` (``im2col`` in ``reference.im2col``,
``max_unpool2d`` in ``reference.max_unpool2d_forward``, ...), and the tests call every
kernel directly and compare it with its twin; the index helper ``_valid_range`` is
compared with a brute-force count.

numba's options are decided here, once, by ``jit``:

- ``cache=True``: compiled code is stored next to this file, so a second process
  starts without recompiling;
- no ``fastmath``: it would let LLVM assume there is no inf or NaN, and max-pooling
  starts from -inf;
- no ``parallel``: the kernels are serial. :mod:`tinyfcn.threads` runs them on
  whole images (or blocks of channels) from several Python threads at once;
- ``nogil=True``: a running kernel releases the interpreter lock, which is what lets
  those threads run at the same time;
- ``error_model="numpy"``: a division by zero gives inf or NaN, as in NumPy, instead of
  raising Python's ZeroDivisionError. Python's rule puts a test of the divisor before every
  division, and a loop with such a branch is not turned into vector instructions:
  :func:`adam_update` took 5.7 ms for FCN-8s's 957,308 weights with it and 1.5 ms without (one
  thread, an AVX2 AMD EPYC; the same bits). No kernel divides by a value that can be 0 (Adam's
  divisor holds ``eps > 0``, the loss's a sum that includes ``exp(0) = 1``).

Matrix products inside a kernel (:func:`winograd_chunks`) go through :func:`product`: NumPy's own
BLAS, called at the address :func:`tinyfcn.ops.blas.gemm_address` finds, or numba's ``np.dot``,
which calls SciPy's BLAS (``scipy.linalg.cython_blas``; numba needs SciPy for it).
:mod:`tinyfcn.threads` holds both at one thread while tinyfcn computes.

Set the environment variable ``NUMBA_DISABLE_JIT=1`` to run these functions as plain
Python (for a debugger or a coverage report).
"""
import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

jit = numba.njit(cache=True, nogil=True, error_model="numpy")


@jit
def _valid_range(n_out, n_in, offset, stride):
    """Output positions ``o`` in ``[lo, hi)`` whose input position ``o*stride + offset`` lies in ``[0, n_in)``."""
    lo = max(0, -(offset // stride))          # ceil(-offset / stride)
    hi = min(n_out, (n_in - 1 - offset) // stride + 1)
    return lo, max(lo, hi)


@jit
def im2col(xpad, kh, kw, sh, sw, Ho, Wo, cols):
    """Unfold every convolution window of the padded input ``xpad`` into a column of ``cols``.

    ``cols[(c*kh + i)*kw + j, (n*Ho + oh)*Wo + ow] = xpad[n, c, oh*sh + i, ow*sw + j]``.

    xpad: (N, C, H + 2*ph, W + 2*pw), the input with its zero padding already in place (the
    caller pads it); cols: (C*kh*kw, N*Ho*Wo), overwritten.
    A convolution is then one matrix product: ``weight.reshape(C_out, -1) @ cols``.

    Rows are the outer loop so that every write is contiguous, and every window lies inside
    ``xpad``, so the copy tests no bounds. (Testing each row of windows against the padding
    instead of copying the input into a padded buffer first was slower where the rows are short
    or mostly padding: FCN-32s's 64x64 upsampling kernel 0.27 ms an image against 0.16 with the
    copy, conv5's 4x4 maps 0.15 ms a batch against 0.13; at stride 2 on a 33x33 map the copy
    costs more than it saves, 0.025 ms against 0.019.) The innermost index is cast to ``uint64``: numba then
    knows it is never negative and skips Python's negative-index wraparound, which lets LLVM
    turn the stride-1 copy into vector moves.
    """
    N, C = xpad.shape[0], xpad.shape[1]
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                row = (c * kh + i) * kw + j
                for n in range(N):
                    for oh in range(Ho):
                        col = (n * Ho + oh) * Wo
                        h = oh * sh + i
                        if sw == 1:
                            for ow in range(Wo):
                                cols[row, np.uint64(col + ow)] = xpad[n, c, h, np.uint64(ow + j)]
                        else:
                            for ow in range(Wo):
                                cols[row, np.uint64(col + ow)] = xpad[n, c, h, np.uint64(ow * sw + j)]


@jit
def im2col_images(x, ph, pw, kh, kw, sh, sw, Ho, Wo, n0, xpad, cols):
    """:func:`im2col` of images ``n0`` to ``n0 + B - 1`` one by one: ``cols[i]`` holds the columns of image
    ``n0 + i``, copied into ``xpad`` with ``ph``, ``pw`` zeros around it first.

    One call takes a thread's whole range of images: padding each image with NumPy and then unfolding
    it passed Python's interpreter lock back and forth between two threads several times an image
    (FCN-8s's conv1_1 forward at batch 8, the code before and this kernel alternating in one process,
    medians of two runs: 1.15-1.17 -> 0.92-0.94 ms on two threads, 1.51-1.59 -> 1.38-1.47 on one;
    the same bits). The padding is copied row by row: a NumPy-style slice assignment of the whole
    image in numba was slower than NumPy's copy had been.
    x: (N, C, H, W); xpad: (1, C, H + 2*ph, W + 2*pw), overwritten; cols: (B, C*kh*kw, Ho*Wo), overwritten.
    """
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    xpad[:, :, :ph] = 0                               # the border, once: every image overwrites the inside
    xpad[:, :, ph + H:] = 0
    xpad[:, :, ph:ph + H, :pw] = 0
    xpad[:, :, ph:ph + H, pw + W:] = 0
    for i in range(cols.shape[0]):
        for c in range(C):
            for h in range(H):
                row, src = xpad[0, c, ph + h], x[n0 + i, c, h]
                for w in range(W):
                    row[np.uint64(pw + w)] = src[np.uint64(w)]
        im2col(xpad, kh, kw, sh, sw, Ho, Wo, cols[i])


@jit
def conv3x3(xpad, w, out):
    """A 3x3 stride-1 convolution of one padded image, computed directly (no columns):
    ``out[o, i, j] = sum_{c,u,v} w[o, c, u, v] * xpad[c, i + u, j + v]``.

    xpad: (C_in, H_out + 2, W_out + 2), the image with its zero padding already in place;
    w: (C_out, C_in, 3, 3) with C_out even; out: (C_out, H_out, W_out), overwritten.

    Two output channels and one output row at a time, accumulated in a small buffer ``acc``. For
    each input channel c one statement per output channel adds the whole 3x3 window to the row,
    ``acc[q, j] = ((acc[q, j] + row_0) + row_1) + row_2`` with ``row_u = w0 * r[j] + w1 * r[j + 1] +
    w2 * r[j + 2]``, ``r = xpad[c, i + u]``: each of the nine input values is loaded once for two
    channels' multiplications, the accumulator once for nine, and the loop over j becomes vector
    instructions (one array written, one read: the compiler checks them for overlap once). Without
    ``fastmath`` every output adds its terms in this fixed order: channel c, then kernel row u, the
    three taps of a row summed first (:func:`tinyfcn.ops.reference.conv3x3` adds them in the same
    order, and agrees to the bit).
    """
    C_out, C_in = w.shape[0], w.shape[1]
    Ho, Wo = out.shape[1], out.shape[2]
    one, two = np.uint64(1), np.uint64(2)
    acc = np.empty((2, Wo), out.dtype)
    for o in range(0, C_out, 2):
        for i in range(Ho):
            acc[:] = 0
            for c in range(C_in):
                x = xpad[c, i:i + 3]                  # the window's three input rows
                p, q = w[o, c], w[o + 1, c]           # the two channels' 3x3 kernels
                for j in range(Wo):
                    k = np.uint64(j)
                    r0, r1, r2 = x[0, k], x[0, k + one], x[0, k + two]
                    s0, s1, s2 = x[1, k], x[1, k + one], x[1, k + two]
                    t0, t1, t2 = x[2, k], x[2, k + one], x[2, k + two]
                    acc[0, k] = (((acc[0, k] + (p[0, 0] * r0 + p[0, 1] * r1 + p[0, 2] * r2))
                                  + (p[1, 0] * s0 + p[1, 1] * s1 + p[1, 2] * s2))
                                 + (p[2, 0] * t0 + p[2, 1] * t1 + p[2, 2] * t2))
                    acc[1, k] = (((acc[1, k] + (q[0, 0] * r0 + q[0, 1] * r1 + q[0, 2] * r2))
                                  + (q[1, 0] * s0 + q[1, 1] * s1 + q[1, 2] * s2))
                                 + (q[2, 0] * t0 + q[2, 1] * t1 + q[2, 2] * t2))
            out[o, i] = acc[0]
            out[o + 1, i] = acc[1]


@jit
def winograd_weight(weight, U):
    """Winograd F(2x2, 3x3)'s weight transform: ``U[4a + b, o, c] = (G g G^T)[a, b]`` for every 3x3 kernel
    ``g = weight[o, c]``, ``G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]``.

    Row r of ``G g`` combines the rows of g as ``g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2``; the
    columns of that row combine the same way. An output channel at a time, the input channels
    innermost, so every loop runs over contiguous rows of U.
    weight: (C_out, C_in, 3, 3); U: (16, C_out, C_in), overwritten.
    """
    C_out, C_in = weight.shape[0], weight.shape[1]
    w = weight.reshape(C_out, C_in * 9)
    Gg = np.empty((4, 3, C_in), weight.dtype)         # G g, for every input channel
    for o in range(C_out):
        wo = w[o]
        for j in range(3):
            t0, t1, t2, t3 = Gg[0, j], Gg[1, j], Gg[2, j], Gg[3, j]
            for c in range(C_in):
                i = np.uint64(c * 9 + j)
                g0, g1, g2 = wo[i], wo[i + 3], wo[i + 6]
                t0[c] = g0
                t1[c] = (g0 + g1 + g2) * 0.5
                t2[c] = (g0 - g1 + g2) * 0.5
                t3[c] = g2
        for r in range(4):
            u0, u1, u2, u3 = U[4 * r, o], U[4 * r + 1, o], U[4 * r + 2, o], U[4 * r + 3, o]
            a, b, d = Gg[r, 0], Gg[r, 1], Gg[r, 2]
            for c in range(C_in):
                u0[c] = a[c]
                u1[c] = (a[c] + b[c] + d[c]) * 0.5
                u2[c] = (a[c] - b[c] + d[c]) * 0.5
                u3[c] = d[c]


@jit
def winograd_weight_adjoint(dU, dweight):
    """The adjoint of :func:`winograd_weight`: ``dweight[o, c] = G^T du G`` for every ``du = dU[:, o, c]`` (as 4x4).

    ``G^T`` combines four rows (or columns) ``u0, u1, u2, u3`` into three: ``u0 + (u1 + u2) / 2``,
    ``(u1 - u2) / 2``, ``(u1 + u2) / 2 + u3``. An output channel at a time, the input channels innermost.
    dU: (16, C_out, C_in); dweight: (C_out, C_in, 3, 3), overwritten.
    """
    C_out, C_in = dweight.shape[0], dweight.shape[1]
    w = dweight.reshape(C_out, C_in * 9)
    uG = np.empty((4, 3, C_in), dU.dtype)             # du G, row r, column j
    for o in range(C_out):
        for r in range(4):
            u0, u1, u2, u3 = dU[4 * r, o], dU[4 * r + 1, o], dU[4 * r + 2, o], dU[4 * r + 3, o]
            t0, t1, t2 = uG[r, 0], uG[r, 1], uG[r, 2]
            for c in range(C_in):
                t0[c] = u0[c] + (u1[c] + u2[c]) * 0.5
                t1[c] = (u1[c] - u2[c]) * 0.5
                t2[c] = (u1[c] + u2[c]) * 0.5 + u3[c]
        wo = w[o]
        for j in range(3):
            a, b, d, e = uG[0, j], uG[1, j], uG[2, j], uG[3, j]
            for c in range(C_in):
                i = np.uint64(c * 9 + j)
                wo[i] = a[c] + (b[c] + d[c]) * 0.5
                wo[i + 3] = (b[c] - d[c]) * 0.5
                wo[i + 6] = (b[c] + d[c]) * 0.5 + e[c]


ROW_GAP = 32
"""Values left unused after each row of the (16, S) arrays the Winograd kernels read and write (``S = L + ROW_GAP``
with L = C*N*T values in use), and after each row of their own temporaries.

A row holds one position k of every tile, so the 16 rows are written (or read) side by side, a few values of each
in turn. Rows of L values alone start a power of two bytes apart on FCN's maps (64 KB for conv1_2's 16 channels of
1024 tiles), all in the same sets of the core's L1 and L2 caches, which hold 8 to 16 lines a set: the streams then
evict one another. 32 values (128 bytes of float32) between rows spreads them over different sets. Measured on a
2-core Intel Xeon (AVX-512), FCN-8s's seven Winograd layers at batch 8, one thread, medians: the input transform
3.45 ms without the gap, 2.52 with 16 values, 2.41 with 32, 2.38 with 48."""


@jit
def winograd_input(xpad, V):
    """Winograd F(2x2, 3x3)'s input transform: ``V[k, (c*N + n)*T + t]`` is position k = 4a + b of ``B^T d B``
    for every 4x4 tile ``d = xpad[n, c, 2i:2i+4, 2j:2j+4]``, tile ``t = i*tw + j`` (T = th*tw tiles a map).

    ``B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]``: each row of ``e = B^T d`` is
    a sum or difference of two rows of d, each entry of ``e B`` of two columns of e. A row of tiles at
    a time: the four rows of e over the whole width, split into even and odd columns, so that tile j
    reads ``even[j], odd[j], even[j + 1], odd[j + 1]`` and every loop over j runs on contiguous memory.
    xpad: (N, C, 2*th + 2, 2*tw + 2); V: (16, S) with S >= C*N*T (see :data:`ROW_GAP`); its first
    C*N*T columns overwritten.
    """
    N, C = xpad.shape[0], xpad.shape[1]
    th, tw = (xpad.shape[2] - 2) // 2, (xpad.shape[3] - 2) // 2
    T = th * tw
    even, odd = np.empty((4, tw + 1), xpad.dtype), np.empty((4, tw + 1), xpad.dtype)
    for c in range(C):
        for n in range(N):
            for i in range(th):
                r0, r1, r2, r3 = xpad[n, c, 2 * i], xpad[n, c, 2 * i + 1], xpad[n, c, 2 * i + 2], xpad[n, c, 2 * i + 3]
                for q in range(tw + 1):
                    for half, k in ((even, 2 * q), (odd, 2 * q + 1)):
                        half[0, q] = r0[k] - r2[k]
                        half[1, q] = r1[k] + r2[k]
                        half[2, q] = r2[k] - r1[k]
                        half[3, q] = r1[k] - r3[k]
                t0 = (c * N + n) * T + i * tw
                for a in range(4):
                    e, o = even[a], odd[a]
                    v0, v1, v2, v3 = V[4 * a, t0:t0 + tw], V[4 * a + 1, t0:t0 + tw], \
                        V[4 * a + 2, t0:t0 + tw], V[4 * a + 3, t0:t0 + tw]
                    for j in range(tw):
                        v0[j] = e[j] - e[j + 1]
                        v1[j] = o[j] + e[j + 1]
                        v2[j] = e[j + 1] - o[j]
                        v3[j] = o[j] - o[j + 1]


@jit
def winograd_output(M, out):
    """Winograd F(2x2, 3x3)'s output transform: each tile's 2x2 outputs ``A^T m A`` from its 16 products
    ``m = M[:, (o*N + n)*T + t]`` (as 4x4, row-major), ``A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]``.

    Two passes over all of M at once, each a loop over every tile of every map (row k of M holds position
    k of every tile): ``f = A^T m`` (rows of m combined: ``f[0] = m0 + m1 + m2``, ``f[1] = m1 - m2 -
    m3``, left to right), then ``y = f A`` (its columns combined the same way); last, each output row is
    filled from y, the tiles' even and odd columns interleaved. Short loops cost more than their
    arithmetic here: with one loop per map over its tiles (and per output row), this kernel took 2x
    as long on FCN-8s's 32x32 maps and 4x on its 8x8 ones (one thread, AVX-512); its adjoint, 1.6x
    and 4x. The sums are the same, in the same order (a test checks the bits).
    M: (16, S) with S >= C_out*N*T (see :data:`ROW_GAP`); out: (N, C_out, H_out, W_out) with
    ``th = ceil(H_out / 2)``, ``tw = ceil(W_out / 2)``, T = th*tw, overwritten (an odd map drops its
    tiles' last row or column).
    """
    N, C, Ho, Wo = out.shape
    th, tw = (Ho + 1) // 2, (Wo + 1) // 2
    T = th * tw
    L = C * N * T
    f = np.empty((8, L + ROW_GAP), M.dtype)           # f[4r + b] = (A^T m)[r, b], for every tile
    for b in range(4):
        m0, m1, m2, m3, f0, f1 = M[b], M[4 + b], M[8 + b], M[12 + b], f[b], f[4 + b]
        for k in range(L):
            f0[k] = m0[k] + m1[k] + m2[k]
            f1[k] = m1[k] - m2[k] - m3[k]
    y = np.empty((4, L + ROW_GAP), M.dtype)           # y[2r + s]: output (r, s) of every tile
    for r in range(2):
        g0, g1, g2, g3, ye, yo = f[4 * r], f[4 * r + 1], f[4 * r + 2], f[4 * r + 3], y[2 * r], y[2 * r + 1]
        for k in range(L):
            ye[k] = g0[k] + g1[k] + g2[k]
            yo[k] = g1[k] - g2[k] - g3[k]
    for o in range(C):
        for n in range(N):
            base = (o * N + n) * T
            for Y in range(Ho):                       # output row Y: row Y % 2 of tile row Y // 2
                t0, r = base + (Y // 2) * tw, Y % 2
                row, ye, yo = out[n, o, Y], y[2 * r, t0:t0 + tw], y[2 * r + 1, t0:t0 + tw]
                for j in range(Wo // 2):
                    row[2 * j] = ye[j]
                    row[2 * j + 1] = yo[j]
            if Wo % 2:                                # an odd map's last column: the last tiles' column 0
                for Y in range(Ho):
                    out[n, o, Y, Wo - 1] = y[2 * (Y % 2), base + (Y // 2) * tw + tw - 1]


@jit
def winograd_output_adjoint(dout, dM):
    """The adjoint of :func:`winograd_output`: ``dM[:, (o*N + n)*T + t] = A dy A^T`` for each tile's 2x2 gradient
    ``dy = dout[n, o, 2i:2i+2, 2j:2j+2]`` (0 past an odd map's edge).

    With ``A = [[1, 0], [1, 1], [1, -1], [0, -1]]``, row a of ``A dy`` is ``(p, q)`` = dy's first row,
    the sum of its rows, their difference, minus its second row; then ``dM[4a:4a+4] = (p, p + q, p - q, -q)``.
    First each tile's four dy entries are gathered from dout's rows (even and odd columns), then both
    steps run as loops over every tile of every map at once (row k of dM holds position k of every
    tile), as in :func:`winograd_output`.
    dout: (N, C_out, H_out, W_out); dM: (16, S) with S >= C_out*N*T (see :data:`ROW_GAP`), its first
    C_out*N*T columns overwritten.
    """
    N, C, Ho, Wo = dout.shape
    th, tw = (Ho + 1) // 2, (Wo + 1) // 2
    T = th * tw
    L = C * N * T
    y = np.empty((4, L + ROW_GAP), dout.dtype)        # y[2r + s]: dy[r, s] of every tile (0 past the edge)
    for o in range(C):
        for n in range(N):
            base = (o * N + n) * T
            for Y in range(Ho):                       # dout's row Y: row Y % 2 of tile row Y // 2
                t0, r = base + (Y // 2) * tw, Y % 2
                row, ye, yo = dout[n, o, Y], y[2 * r, t0:t0 + tw], y[2 * r + 1, t0:t0 + tw]
                for j in range(Wo // 2):
                    ye[j] = row[2 * j]
                    yo[j] = row[2 * j + 1]
            if Wo % 2:                                # an odd map's last tiles: column 0 from dout, column 1 zero
                for Y in range(Ho):
                    t = base + (Y // 2) * tw + tw - 1
                    y[2 * (Y % 2), t] = dout[n, o, Y, Wo - 1]
                    y[2 * (Y % 2) + 1, t] = 0
            if Ho % 2:                                # ... and the last tile row's row 1 zero
                y[2, base + T - tw:base + T] = 0
                y[3, base + T - tw:base + T] = 0
    g = np.empty((8, L + ROW_GAP), dout.dtype)        # g[2a + s] = (A dy)[a, s]
    for s in range(2):
        a0, a1, b0, b1, b2, b3 = y[s], y[2 + s], g[s], g[2 + s], g[4 + s], g[6 + s]
        for k in range(L):
            b0[k] = a0[k]
            b1[k] = a0[k] + a1[k]
            b2[k] = a0[k] - a1[k]
            b3[k] = -a1[k]
    for a in range(4):
        p, q, d0, d1, d2, d3 = g[2 * a], g[2 * a + 1], dM[4 * a], dM[4 * a + 1], dM[4 * a + 2], dM[4 * a + 3]
        for k in range(L):
            d0[k] = p[k]
            d1[k] = p[k] + q[k]
            d2[k] = p[k] - q[k]
            d3[k] = -q[k]


@jit
def winograd_input_adjoint(dV, dxpad):
    """The adjoint of :func:`winograd_input`: every tile adds ``B dv B^T`` (``dv = dV[:, (c*N + n)*T + t]`` as 4x4)
    into its window ``dxpad[n, c, 2i:2i+4, 2j:2j+4]``; windows overlap by two rows and columns.

    One map at a time: ``E = dv B^T`` combines the columns of dv and ``R = B E`` the rows of E, for
    all of the map's tiles in loops over t, which is contiguous in dV (loops over one row of tiles
    took 1.1x to 1.4x as long on FCN-8s's 8x8 to 32x32 maps). Then a row of tiles at a time: each
    window's columns 0 and 1 are the even and odd columns at j, its columns 2 and 3 those at j + 1,
    added up in even and odd halves before they go into the rows of dxpad.
    dV: (16, S) with S >= C*N*T (see :data:`ROW_GAP`); dxpad: (N, C, 2*th + 2, 2*tw + 2), overwritten.
    """
    N, C = dxpad.shape[0], dxpad.shape[1]
    th, tw = (dxpad.shape[2] - 2) // 2, (dxpad.shape[3] - 2) // 2
    T = th * tw
    E = np.empty((4, 4, T + ROW_GAP), dV.dtype)       # row a, column b of dv B^T, for every tile t
    R = np.empty((4, 4, T + ROW_GAP), dV.dtype)       # row r, column b of B dv B^T
    half = np.empty((2, tw + 1), dV.dtype)            # one window row's even and odd columns, summed
    dxpad[:] = 0
    for c in range(C):
        for n in range(N):
            base = (c * N + n) * T
            for a in range(4):
                v0, v1, v2, v3 = dV[4 * a, base:base + T], dV[4 * a + 1, base:base + T], \
                    dV[4 * a + 2, base:base + T], dV[4 * a + 3, base:base + T]
                e0, e1, e2, e3 = E[a, 0], E[a, 1], E[a, 2], E[a, 3]
                for t in range(T):
                    e0[t] = v0[t]
                    e1[t] = v1[t] - v2[t] + v3[t]
                    e2[t] = v1[t] + v2[t] - v0[t]
                    e3[t] = -v3[t]
            for b in range(4):
                s0, s1, s2, s3 = E[0, b], E[1, b], E[2, b], E[3, b]
                q0, q1, q2, q3 = R[0, b], R[1, b], R[2, b], R[3, b]
                for t in range(T):
                    q0[t] = s0[t]
                    q1[t] = s1[t] - s2[t] + s3[t]
                    q2[t] = s1[t] + s2[t] - s0[t]
                    q3[t] = -s3[t]
            for i in range(th):
                t0 = i * tw
                for r in range(4):
                    row = dxpad[n, c, 2 * i + r]
                    for s in range(2):                # columns 2j + s and 2j + 2 + s
                        h, first, second = half[s], R[r, s, t0:t0 + tw], R[r, 2 + s, t0:t0 + tw]
                        h[0] = first[0]
                        for j in range(1, tw):
                            h[j] = first[j] + second[j - 1]
                        h[tw] = second[tw - 1]
                    for q in range(tw + 1):
                        row[2 * q] += half[0, q]
                        row[2 * q + 1] += half[1, q]


# ---------------------------------------------------------------- matrix products

_COMPILED = not numba.config.DISABLE_JIT
"""False when numba runs the kernels as plain Python, where :func:`_cblas_gemm` cannot run."""


@intrinsic
def _cblas_gemm(typingctx, address, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
    """``c = op(a) @ op(b)`` (m x n, inner size k) by the CBLAS ``?gemm`` at ``address``: row-major, alpha 1,
    beta 0, ``trans_*`` 111 for a matrix as stored and 112 for its transpose, 64-bit integer sizes.

    The call is compiled in and the address is an argument, so numba can cache the kernels that call it
    (an address known at compile time would be stale in the next process).
    """
    def codegen(context, builder, signature, args):
        address, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc = args
        real = context.get_value_type(signature.args[6].dtype)      # float or double
        i32, i64, ptr = ir.IntType(32), ir.IntType(64), real.as_pointer()
        gemm = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, real, ptr, i64, ptr, i64, real, ptr, i64])
        a, b, c = (context.make_array(t)(context, builder, v).data for t, v in zip(signature.args[6:11:2], (a, b, c)))
        builder.call(builder.inttoptr(address, gemm.as_pointer()),
                     [ir.Constant(i32, 101), builder.trunc(trans_a, i32), builder.trunc(trans_b, i32), m, n, k,
                      ir.Constant(real, 1.0), a, lda, b, ldb, ir.Constant(real, 0.0), c, ldc])
        return context.get_dummy_value()
    i = types.int64
    return types.void(i, i, i, i, i, i, a, i, b, i, c, i), codegen


@jit
def product(gemm, a, b, out):
    """``out = a @ b`` by NumPy's own BLAS, its ``cblas_?gemm`` at address ``gemm``
    (:func:`tinyfcn.ops.blas.gemm_address`), or by numba's ``np.dot`` (SciPy's BLAS) when ``gemm`` is 0.

    a, b: 2-D, each with contiguous rows or a transposed view of such (``V.T``); out: C-contiguous
    (a.shape[0], b.shape[1]), overwritten. The same bits as ``np.matmul`` on NumPy's BLAS at one thread
    (a test checks). Run as plain Python (``NUMBA_DISABLE_JIT=1``), ``np.dot`` is NumPy's and serves
    for both.
    """
    if gemm == 0 or not _COMPILED:
        np.dot(a, b, out)
        return
    s = a.itemsize
    ta, lda = (111, a.strides[0] // s) if a.strides[1] == s and a.strides[0] >= a.shape[1] * s else (112, a.strides[1] // s)
    tb, ldb = (111, b.strides[0] // s) if b.strides[1] == s and b.strides[0] >= b.shape[1] * s else (112, b.strides[1] // s)
    _cblas_gemm(gemm, ta, tb, out.shape[0], out.shape[1], a.shape[1], a, max(lda, 1), b, max(ldb, 1), out,
                max(out.strides[0] // s, 1))


@jit
def winograd_chunks(x, ph, pw, U, gemm, bias, relu, B, i0, i1, V, keep, xpad, M, out):
    """Winograd F(2x2, 3x3) convolution of chunks ``i0`` to ``i1 - 1`` of ``B`` images each (chunk i: images
    ``i*B`` to ``min(N, (i+1)*B) - 1``), each chunk through every step before the next:

    ``xpad`` = the chunk's images with ``ph``, ``pw`` zeros around them (and past them to whole tiles),
    ``V = B^T d B`` of its tiles (:func:`winograd_input`), ``M[k] = U[k] @ V[k]`` for the 16 positions
    k (:func:`product`, by the BLAS ``gemm`` says), ``out = A^T m A`` of every tile (:func:`winograd_output`), then
    bias and ReLU (:func:`bias_relu`). One call does a thread's whole range of chunks without the
    interpreter lock: with a Python loop around the steps, two threads waited on each other's passes
    through the interpreter between them.

    x: (N, C_in, H, W); U: (16, C_out, C_in) (:func:`winograd_weight`); gemm: the products' BLAS, as for
    :func:`product`; bias: (C_out,) or None;
    V: with ``keep``, every chunk's tiles one chunk after another, flat: chunk i's (16, S_in) array, its
    rows ``S_in = C_in*B*T + ROW_GAP`` long (:data:`ROW_GAP`), starts at ``16*S_in*i`` (a training step's
    backward reads them); without, room for one chunk's, overwritten by each. xpad: (B, C_in, 2*th + 2,
    2*tw + 2); M: flat, room for 16 rows of ``S_out = C_out*B*T + ROW_GAP``;
    out: (N, C_out, H_out, W_out), ``th = ceil(H_out / 2)``, ``T = th*tw``; chunks i0 to i1 - 1's images
    overwritten. Returns how many values were NaN or inf before a ReLU (:func:`bias_relu`).
    """
    N, C_in, H, W = x.shape
    C_out, Ho, Wo = out.shape[1], out.shape[2], out.shape[3]
    T = ((Ho + 1) // 2) * ((Wo + 1) // 2)
    S_in, S_out = C_in * B * T + ROW_GAP, C_out * B * T + ROW_GAP
    bad = 0
    for i in range(i0, i1):
        n0, n1 = i * B, min(N, (i + 1) * B)
        b = n1 - n0
        bT = b * T                                    # the chunk's tiles: each row's first C*bT values are in use
        pad = xpad[:b]
        pad[:] = 0
        pad[:, :, ph:ph + H, pw:pw + W] = x[n0:n1]
        start = 16 * S_in * i if keep else 0
        Vi = V[start:start + 16 * S_in].reshape(16, S_in)
        winograd_input(pad, Vi)
        Mi = M[:16 * S_out].reshape(16, S_out)
        for k in range(16):
            product(gemm, U[k], Vi[k, :C_in * bT].reshape(C_in, bT), Mi[k, :C_out * bT].reshape(C_out, bT))
        winograd_output(Mi, out[n0:n1])
        if bias is not None or relu:
            bad += bias_relu(out[n0:n1].reshape(b, C_out, Ho * Wo), bias, relu)
    return bad


@jit
def winograd_chunks_backward(dout, rectified, x, ph, pw, U, gemm, B, i0, i1, V, keep, masked, dU, dx, xpad, dM, dV):
    """The backward pass of :func:`winograd_chunks`, chunk by chunk (the same chunks), each through every step:

    with a ReLU (``rectified``, the forward's output, not None) ``masked = dout * (rectified > 0)``, the
    gradient from here on (:func:`relu_backward`); ``dM = A dy A^T`` per tile (:func:`winograd_output_adjoint`);
    ``dU[i, k] = dM[k] @ V[k].T`` (the products by :func:`product` with ``gemm``), chunk i's share of the transformed weights' gradient (V recomputed
    into the room V gives when ``keep`` is False); with ``U`` (not None), ``dV[k] = U[k].T @ dM[k]`` and
    dx adds ``B dv B^T`` of each tile into its window (:func:`winograd_input_adjoint`), cropped by the padding.

    dout, rectified, masked: (N, C_out, H_out, W_out) (masked: written where there is a ReLU, for the
    bias gradient; else unused); x, dx: (N, C_in, H, W) (dx: None with U None); dU: (chunks, 16, C_out,
    C_in); V, xpad: as in :func:`winograd_chunks`; dM, dV: flat, room for 16 rows of S_out and of S_in values
    (see :func:`winograd_chunks`).
    Chunks i0 to i1 - 1's images of masked and dx and their rows of dU are overwritten.
    """
    N, C_in, H, W = x.shape
    C_out, Ho, Wo = dout.shape[1], dout.shape[2], dout.shape[3]
    T = ((Ho + 1) // 2) * ((Wo + 1) // 2)
    S_in, S_out = C_in * B * T + ROW_GAP, C_out * B * T + ROW_GAP
    for i in range(i0, i1):
        n0, n1 = i * B, min(N, (i + 1) * B)
        b = n1 - n0
        bT = b * T                                    # the chunk's tiles: each row's first C*bT values are in use
        g = dout[n0:n1]
        if rectified is not None:
            relu_backward(g.reshape(-1), rectified[n0:n1].reshape(-1), masked[n0:n1].reshape(-1))
            g = masked[n0:n1]
        dMi = dM[:16 * S_out].reshape(16, S_out)
        winograd_output_adjoint(g, dMi)
        start = 16 * S_in * i if keep else 0
        Vi = V[start:start + 16 * S_in].reshape(16, S_in)
        pad = xpad[:b]
        if not keep:
            pad[:] = 0
            pad[:, :, ph:ph + H, pw:pw + W] = x[n0:n1]
            winograd_input(pad, Vi)
        for k in range(16):
            product(gemm, dMi[k, :C_out * bT].reshape(C_out, bT), Vi[k, :C_in * bT].reshape(C_in, bT).T, dU[i, k])
        if U is not None:
            dVi = dV[:16 * S_in].reshape(16, S_in)
            for k in range(16):
                product(gemm, U[k].T, dMi[k, :C_out * bT].reshape(C_out, bT), dVi[k, :C_in * bT].reshape(C_in, bT))
            winograd_input_adjoint(dVi, pad)
            dx[n0:n1] = pad[:, :, ph:ph + H, pw:pw + W]


@jit
def col2im(cols, kh, kw, sh, sw, ph, pw, Ho, Wo, x):
    """Fold columns back onto the image, adding where windows overlap: the adjoint of :func:`im2col`.

    ``x[n, c, oh*sh - ph + i, ow*sw - pw + j] += cols[(c*kh + i)*kw + j, (n*Ho + oh)*Wo + ow]``
    for every position inside ``x``; entries that fall in the padding are dropped.

    cols: (C*kh*kw, N*Ho*Wo); x: (N, C, H, W), overwritten.
    Used for the input gradient of a convolution and for the forward pass of a
    transposed convolution, where each column is one weighted copy of the kernel.
    Unsigned inner indices as in :func:`im2col`.
    """
    N, C, H, W = x.shape
    x[...] = 0
    for c in range(C):
        for i in range(kh):
            oh_lo, oh_hi = _valid_range(Ho, H, i - ph, sh)
            for j in range(kw):
                ow_lo, ow_hi = _valid_range(Wo, W, j - pw, sw)
                row = (c * kh + i) * kw + j
                for n in range(N):
                    for oh in range(oh_lo, oh_hi):
                        h = oh * sh - ph + i
                        col = (n * Ho + oh) * Wo
                        if sw == 1:
                            for ow in range(ow_lo, ow_hi):
                                x[n, c, h, np.uint64(ow - pw + j)] += cols[row, np.uint64(col + ow)]
                        else:
                            for ow in range(ow_lo, ow_hi):
                                x[n, c, h, np.uint64(ow * sw - pw + j)] += cols[row, np.uint64(col + ow)]


@jit
def max_pool2d_forward(x, kh, kw, sh, sw, ph, pw, out, indices):
    """Max over each window, and where it was found.

    ``out[n, c, oh, ow] = max x[n, c, h, w]`` over the window rows ``oh*sh - ph + [0, kh)``
    and columns ``ow*sw - pw + [0, kw)`` clipped to the input (padding counts as -inf);
    ``indices[n, c, oh, ow] = h*W + w`` of the first maximum in row-major order.

    x: (N, C, H, W); out, indices: (N, C, Ho, Wo), overwritten.
    Indices into the plane are cast to ``uint64`` as in :func:`im2col` (about 30 % faster).
    """
    N, C, H, W = x.shape
    Ho, Wo = out.shape[2], out.shape[3]
    for n in range(N):
        for c in range(C):
            plane = x[n, c]
            for oh in range(Ho):
                h0 = max(oh * sh - ph, 0)
                h1 = min(oh * sh - ph + kh, H)
                for ow in range(Wo):
                    w0 = max(ow * sw - pw, 0)
                    w1 = min(ow * sw - pw + kw, W)
                    best = plane[np.uint64(h0), np.uint64(w0)]
                    arg = h0 * W + w0
                    for h in range(h0, h1):
                        for w in range(w0, w1):
                            v = plane[np.uint64(h), np.uint64(w)]
                            if v > best:
                                best = v
                                arg = h * W + w
                    out[n, c, oh, ow] = best
                    indices[n, c, oh, ow] = arg


@jit
def max_pool2d_2x2(x, out, indices):
    """:func:`max_pool2d_forward` for 2x2 windows at stride 2 without padding (FCN's every pool),
    with the four comparisons written out: about 5x faster than the general loops, whose
    window sizes are only known at run time. The same values and indices.

    x: (N, C, H, W); out, indices: (N, C, Ho, Wo) with ``2*Ho <= H`` and ``2*Wo <= W`` (every
    window inside x), overwritten.
    """
    N, C, H, W = x.shape
    Ho, Wo = out.shape[2], out.shape[3]
    for n in range(N):
        for c in range(C):
            for oh in range(Ho):
                top, bottom = x[n, c, 2 * oh], x[n, c, 2 * oh + 1]
                best_row, arg_row = out[n, c, oh], indices[n, c, oh]
                for ow in range(Wo):
                    best, arg = top[2 * ow], 0                 # the first maximum in row-major order
                    if top[2 * ow + 1] > best:
                        best, arg = top[2 * ow + 1], 1
                    if bottom[2 * ow] > best:
                        best, arg = bottom[2 * ow], W
                    if bottom[2 * ow + 1] > best:
                        best, arg = bottom[2 * ow + 1], W + 1
                    best_row[ow] = best
                    arg_row[ow] = 2 * oh * W + 2 * ow + arg


@jit
def max_unpool2d(x, indices, out):
    """Scatter-add every value to the position its index names: ``out[n, c].flat[indices[n, c, i, j]] += x[n, c, i, j]``.

    x, indices: (N, C, H, W); out: (N, C, Ho, Wo), overwritten.
    This is max-pooling's argmax routing: the backward pass of max-pooling, and max-unpooling.
    """
    N, C, H, W = x.shape
    Wo = out.shape[3]
    out[...] = 0
    for n in range(N):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    k = indices[n, c, i, j]
                    out[n, c, k // Wo, k % Wo] += x[n, c, i, j]


@jit
def max_unpool2d_backward(dout, indices, dx):
    """Gather: ``dx[n, c, i, j] = dout[n, c].flat[indices[n, c, i, j]]`` (the adjoint of :func:`max_unpool2d`).

    dout: (N, C, Ho, Wo); indices, dx: (N, C, H, W), dx overwritten.
    """
    N, C, H, W = dx.shape
    Wo = dout.shape[3]
    for n in range(N):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    k = indices[n, c, i, j]
                    dx[n, c, i, j] = dout[n, c, k // Wo, k % Wo]


@jit
def count_nonfinite(bits, exponent):
    """How many values are inf or NaN, read from the bits: those are the values whose exponent bits are all set.

    bits: a float array viewed as unsigned integers of its width, 1-D (float32 as uint32,
    float64 as uint64); exponent: the exponent mask of that width (``0x7f800000`` or
    ``0x7ff0000000000000``), of the same dtype. Counting with integers needs no
    ``fastmath`` to run as vector instructions (about 10x faster than numpy's float sum,
    which would see a NaN too); unsigned indices as in :func:`im2col`.
    """
    count = 0
    for i in range(bits.size):
        count += (bits[np.uint64(i)] & exponent) == exponent
    return count


@jit
def relu_forward(x, out):
    """``out = max(x, 0)``, element by element. x, out: 1-D views of equal size."""
    for i in range(x.size):
        out[i] = x[i] if x[i] > 0 else 0


@jit
def relu_backward(dout, out, dx):
    """``dx = dout`` where the forward output was positive, else 0. All 1-D views of equal size."""
    for i in range(dout.size):
        dx[i] = dout[i] if out[i] > 0 else 0


@jit
def bias_relu(out, bias, relu):
    """A convolution's epilogue, in place and in one pass: ``out[n, c, p] += bias[c]`` (no bias: None),
    then ``out = max(out, 0)`` with ``relu``.

    out: (N, C, P), P = H*W; bias: (C,) of out's dtype, or None.
    Returns how many values were NaN or inf before the ReLU (0 without ``relu``): the ReLU turns
    them into 0 or keeps them, so the caller checks the count where a ReLU would have refused them.
    """
    N, C, P = out.shape
    zero = np.zeros(1, out.dtype)[0]                  # a 0 of out's dtype: a literal 0 would turn float32 into float64
    bad = 0
    for n in range(N):
        for c in range(C):
            plane = out[n, c]
            b = zero if bias is None else bias[c]
            if relu:
                for p in range(P):
                    v = plane[np.uint64(p)] + b
                    bad += (v - v) != 0                # NaN for NaN and inf, else 0: no fastmath needed
                    plane[np.uint64(p)] = v if v > 0 else 0
            else:
                for p in range(P):
                    plane[np.uint64(p)] += b
    return bad


@jit
def softmax_cross_entropy(scores, target, ignore_index, weights, scale, dscores):
    """Per-pixel class-weighted softmax cross-entropy and its gradient, in one pass over the scores.

    For every pixel p whose target t is not ``ignore_index``, with ``w = weights[t]``:
    ``loss_p = logsumexp_k(scores[n, :, p]) - scores[n, t, p]`` and
    ``dscores[n, :, p] = scale * w * (softmax(scores[n, :, p]) - onehot(t))``; ignored pixels get 0.
    The max is subtracted before ``exp`` so logits of any size are safe.

    scores, dscores: (N, K, P) with P = H*W, dscores overwritten; target: (N, P) int64;
    weights: (K,) float64, all ones for the unweighted loss (multiplying by 1.0 is exact, so
    that gives the unweighted loss's bits).
    Returns the summed ``w * loss_p`` (not scaled). For the weighted mean over the counted
    pixels of a batch, the caller passes ``scale = 1 / sum_p weights[t_p]`` and multiplies the
    sum by it.
    """
    N, K, P = scores.shape
    peak = np.empty(P, scores.dtype)
    sumexp = np.empty(P, scores.dtype)
    factor = np.empty(P, scores.dtype)
    total = 0.0
    for n in range(N):
        peak[:] = scores[n, 0]
        for k in range(1, K):
            for p in range(P):
                peak[p] = max(peak[p], scores[n, k, p])
        sumexp[:] = 0
        for k in range(K):
            for p in range(P):
                e = math.exp(scores[n, k, p] - peak[p])
                dscores[n, k, p] = e
                sumexp[p] += e
        for p in range(P):
            t = target[n, p]
            if t == ignore_index:
                factor[p] = 0
            else:
                w = weights[t]
                total += w * (peak[p] + math.log(sumexp[p]) - scores[n, t, p])
                factor[p] = scale * w / sumexp[p]
        for k in range(K):
            for p in range(P):
                dscores[n, k, p] *= factor[p]
        for p in range(P):
            t = target[n, p]
            if t != ignore_index:
                dscores[n, t, p] -= scale * weights[t]
    return total


@jit
def sgd_update(w, grad, velocity, lr, momentum, weight_decay, nesterov):
    """One SGD-with-momentum step, in place, in one pass and without temporary arrays.

    ``g = grad + weight_decay * w``; ``velocity = momentum * velocity + g``;
    ``w -= lr * (g + momentum * velocity)`` (Nesterov) or ``w -= lr * velocity``.
    All arrays 1-D views of equal size; ``w`` and ``velocity`` are updated.
    """
    for i in range(w.size):
        g = grad[i] + weight_decay * w[i]
        velocity[i] = momentum * velocity[i] + g
        w[i] -= lr * (g + momentum * velocity[i] if nesterov else velocity[i])


@jit
def adam_update(w, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    """One Adam step (AdamW's with ``decoupled``), in place, in one pass and without temporary arrays.

    ``g = grad + weight_decay * w`` (Adam: L2 added to the gradient) or ``w *= 1 - lr * weight_decay``
    first and ``g = grad`` (AdamW: decoupled decay); ``exp_avg = beta1 * exp_avg + (1 - beta1) * g``;
    ``exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g**2``;
    ``w -= lr / (1 - beta1**t) * exp_avg / (sqrt(exp_avg_sq) / sqrt(1 - beta2**t) + eps)``.
    ``step`` is this parameter's count t including this step (1 on its first update). The
    two bias corrections depend on t only, so they are computed once, before the loop.
    All arrays 1-D views of equal size; ``w``, ``exp_avg`` and ``exp_avg_sq`` are updated.
    """
    step_size = lr / (1 - beta1 ** step)
    bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
    decay = 1 - lr * weight_decay
    for i in range(w.size):
        g = grad[i]
        if decoupled:
            w[i] *= decay
        else:
            g += weight_decay * w[i]
        exp_avg[i] = beta1 * exp_avg[i] + (1 - beta1) * g
        exp_avg_sq[i] = beta2 * exp_avg_sq[i] + (1 - beta2) * g * g
        w[i] -= step_size * exp_avg[i] / (math.sqrt(exp_avg_sq[i]) / bias_correction2_sqrt + eps)


# ---------------------------------------------------------------- batch normalisation

LANES = 64
"""The sums below keep this many running sums (element p of a plane goes to sum p % LANES)
and add them at the end, in a fixed order. Without ``fastmath`` LLVM may not reorder the
additions of one running sum, so each would wait for the one before it; 64 independent
sums become vector instructions, about 7x faster than one sum (4 sums: about 3x). The
arithmetic is fixed by the lanes, not by the compiler: the same bits on every run.

A channel's planes (one per image) all add into the same lanes, which are added up once per
channel, pairwise (:func:`_reduce`): on small maps (FCN's 8x8 to 1x1 at a 64x64 input) adding
64 lanes one after the other for every plane cost more than the plane's own sum."""


@jit
def _reduce(lanes):
    """``sum(lanes)`` pairwise: lane k gets lane k + 32, then k + 16, ... (a fixed order, 6 steps deep).

    lanes: (LANES,) float64, overwritten.
    """
    width = LANES // 2
    while width:
        for k in range(width):
            lanes[k] += lanes[k + width]
        width //= 2
    return lanes[0]


@jit
def _sum(a, lanes):
    """Add ``a[p]`` into ``lanes[p % LANES]``, in float64, whatever a's dtype. a: 1-D; lanes: (LANES,) float64."""
    P = a.size
    whole = P - P % LANES
    for p in range(0, whole, LANES):
        for k in range(LANES):
            lanes[k] += a[np.uint64(p + k)]
    for p in range(whole, P):
        lanes[p - whole] += a[np.uint64(p)]


@jit
def _dot(a, a0, b, b0, lanes):
    """Add ``(a[p] - a0) * (b[p] - b0)`` into ``lanes[p % LANES]`` in float64, as :func:`_sum` does.

    a, b: 1-D of equal size; lanes: (LANES,) float64.
    """
    P = a.size
    whole = P - P % LANES
    for p in range(0, whole, LANES):
        for k in range(LANES):
            i = np.uint64(p + k)
            lanes[k] += (a[i] - a0) * (b[i] - b0)
    for p in range(whole, P):
        i = np.uint64(p)
        lanes[p - whole] += (a[i] - a0) * (b[i] - b0)


@jit
def batch_norm2d_stats(x, c0, c1, sums, squares):
    """Per channel c in ``[c0, c1)``: the sum of its values and of their squared deviations from its mean.

    ``sums[c] = sum_{n,p} x[n, c, p]``, ``squares[c] = sum_{n,p} (x[n, c, p] - sums[c] / (N*P))^2``,
    both in float64. The second pass reads the channel again (from the cache for all but the
    largest maps); deviations from the mean do not cancel, as ``sum(x^2) - sum(x)^2 / m`` would
    for values far from 0.

    x: (N, C, P), P = H*W; sums, squares: (C,) float64, entries c0 to c1 - 1 overwritten.
    """
    N, C, P = x.shape
    lanes = np.empty(LANES)
    for c in range(c0, c1):
        lanes[:] = 0
        for n in range(N):
            _sum(x[n, c], lanes)
        total = _reduce(lanes)
        mean = total / (N * P)
        lanes[:] = 0
        for n in range(N):
            _dot(x[n, c], mean, x[n, c], mean, lanes)
        sums[c] = total
        squares[c] = _reduce(lanes)


@jit
def batch_norm2d_normalize(x, mean, scale, shift, relu, c0, c1, out):
    """``out[n, c, p] = (x[n, c, p] - mean[c]) * scale[c] + shift[c]`` for channels c in ``[c0, c1)``:
    batch norm's forward pass once the statistics are known; with ``relu``, ``max`` of that and 0.

    x, out: (N, C, P), out's channels c0 to c1 - 1 overwritten; mean, scale, shift: (C,) of x's dtype
    (``scale = gamma / sqrt(var + eps)``, ``shift = beta``).
    Returns how many values were NaN or inf before the ReLU (0 without ``relu``), as :func:`bias_relu` does.
    """
    N, C, P = x.shape
    bad = 0
    for n in range(N):
        for c in range(c0, c1):
            m, s, b = mean[c], scale[c], shift[c]
            plane, result = x[n, c], out[n, c]
            if relu:
                for p in range(P):
                    v = (plane[np.uint64(p)] - m) * s + b
                    bad += (v - v) != 0
                    result[np.uint64(p)] = v if v > 0 else 0
            else:
                for p in range(P):
                    result[np.uint64(p)] = (plane[np.uint64(p)] - m) * s + b
    return bad


@jit
def batch_norm2d_grad_sums(dout, x, mean, rectified, c0, c1, sums, products):
    """Per channel c in ``[c0, c1)``: ``sums[c] = sum_{n,p} g[n, c, p]`` and ``products[c] = sum_{n,p} g[n, c, p] * (x[n, c, p] - mean[c])``.

    ``g = dout``; with a fused ReLU (``rectified``, the forward output, not None) ``g = dout`` where
    ``rectified > 0``, else 0. They give dbeta, and dgamma once multiplied by ``1 / sqrt(var + eps)``.
    dout, x, rectified: (N, C, P); mean: (C,) float64; sums, products: (C,) float64, entries c0 to c1 - 1 overwritten.
    """
    N, C, P = x.shape
    lanes, dots = np.empty(LANES), np.empty(LANES)
    masked = np.empty(P, dout.dtype)                  # g of one plane, with a fused ReLU
    for c in range(c0, c1):
        lanes[:] = 0
        dots[:] = 0
        for n in range(N):
            g = dout[n, c]
            if rectified is not None:
                kept = rectified[n, c]
                for p in range(P):
                    i = np.uint64(p)
                    masked[i] = g[i] if kept[i] > 0 else 0
                g = masked
            _sum(g, lanes)
            _dot(g, 0.0, x[n, c], mean[c], dots)
        sums[c] = _reduce(lanes)
        products[c] = _reduce(dots)


@jit
def batch_norm2d_grad_input(dout, x, mean, scale, centre, slope, rectified, c0, c1, dx):
    """``dx[n, c, p] = scale[c] * (g[n, c, p] - centre[c] - (x[n, c, p] - mean[c]) * slope[c])`` for channels c in ``[c0, c1)``:
    batch norm's input gradient, with ``g`` as in :func:`batch_norm2d_grad_sums`.

    Training: ``scale = gamma / sigma``, ``centre = sum(g) / m``, ``slope = sum(g * x_hat) / (m * sigma)``;
    evaluation: centre = slope = 0. dout, x, rectified, dx: (N, C, P), dx's channels c0 to c1 - 1
    overwritten; the rest (C,) of x's dtype.
    """
    N, C, P = x.shape
    zero = np.zeros(1, dx.dtype)[0]                   # a 0 of x's dtype: a literal 0 would turn float32 into float64
    for n in range(N):
        for c in range(c0, c1):
            m, s, a, b = mean[c], scale[c], centre[c], slope[c]
            g, plane, result = dout[n, c], x[n, c], dx[n, c]
            if rectified is None:
                for p in range(P):
                    i = np.uint64(p)
                    result[i] = s * (g[i] - a - (plane[i] - m) * b)
            else:
                kept = rectified[n, c]
                for p in range(P):
                    i = np.uint64(p)
                    result[i] = s * ((g[i] if kept[i] > 0 else zero) - a - (plane[i] - m) * b)


@jit
def batch_norm2d_forward_channels(x, gamma, beta, training, eps, relu, c0, c1, mean, var, inv_std, mean_x, scale, out):
    """Batch norm's forward pass for the channels c in ``[c0, c1)``, in one call: in training the batch's
    ``mean[c] = sums[c] / m`` and biased ``var[c] = squares[c] / m`` (:func:`batch_norm2d_stats`, m = N*P;
    in evaluation mean and var are given), then ``inv_std[c] = 1 / sqrt(var[c] + eps)`` and
    :func:`batch_norm2d_normalize` with ``mean_x[c] = mean[c]`` and ``scale[c] = gamma[c] * inv_std[c]``
    in x's dtype, ``shift = beta``.

    One call a thread's range: with the per-channel arithmetic in NumPy between two kernels, two
    threads passed Python's interpreter lock back and forth between them, and a batch norm of FCN-8s's
    16 channels at 64x64 (batch 8) took as long on two threads as on one.
    x, out: (N, C, P); gamma, beta, mean_x, scale: (C,) of x's dtype; mean, var, inv_std: (C,) float64.
    Entries c0 to c1 - 1 of mean and var (in training), inv_std, mean_x, scale and out's channels are
    overwritten. Returns how many values were NaN or inf before the ReLU, as :func:`batch_norm2d_normalize` does.
    """
    N, C, P = x.shape
    m = N * P
    if training:
        batch_norm2d_stats(x, c0, c1, mean, var)      # the sums and squares, divided next
        for c in range(c0, c1):
            mean[c] = mean[c] / m
            var[c] = var[c] / m
    for c in range(c0, c1):
        inv_std[c] = 1 / np.sqrt(var[c] + eps)
        mean_x[c] = mean[c]
        scale[c] = gamma[c] * inv_std[c]
    return batch_norm2d_normalize(x, mean_x, scale, beta, relu, c0, c1, out)


@jit
def batch_norm2d_backward_channels(dout, x, gamma, mean, inv_std, rectified, training, c0, c1, dbeta, dgamma, mean_x,
                                   scale, centre, slope, dx):
    """Batch norm's backward pass for the channels c in ``[c0, c1)``, in one call (see
    :func:`batch_norm2d_forward_channels`): ``dbeta[c] = sum(g)`` and ``dgamma[c] = inv_std[c] * sum(g * (x - mean[c]))``
    (:func:`batch_norm2d_grad_sums`); in training ``centre[c] = dbeta[c] / m`` and ``slope[c] = inv_std[c] *
    dgamma[c] / m`` (m = N*P; in evaluation centre and slope stay as given, 0); then
    :func:`batch_norm2d_grad_input` with ``mean_x[c] = mean[c]`` and ``scale[c] = gamma[c] * inv_std[c]``.
    dout, x, rectified, dx: (N, C, P) (rectified: None without a fused ReLU); gamma, mean_x, scale, centre,
    slope: (C,) of x's dtype; mean, inv_std, dbeta, dgamma: (C,) float64. Entries c0 to c1 - 1 of dbeta,
    dgamma, mean_x, scale, centre and slope (in training) and dx's channels are overwritten.
    """
    N, C, P = x.shape
    m = N * P
    batch_norm2d_grad_sums(dout, x, mean, rectified, c0, c1, dbeta, dgamma)   # dgamma: the products, scaled next
    for c in range(c0, c1):
        dgamma[c] = inv_std[c] * dgamma[c]
        if training:
            centre[c] = dbeta[c] / m
            slope[c] = inv_std[c] * dgamma[c] / m
        mean_x[c] = mean[c]
        scale[c] = gamma[c] * inv_std[c]
    batch_norm2d_grad_input(dout, x, mean_x, scale, centre, slope, rectified, c0, c1, dx)
