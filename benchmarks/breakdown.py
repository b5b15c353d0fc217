"""Worker: where tinyfcn's time goes -- inside each convolution, and inside one training step.

1. Convolution pieces. ``conv2d_forward`` is: check the inputs, ``im2col_images`` (a thread's
   images padded and unfolded in one kernel call), one stacked matrix product straight into NCHW,
   add the bias; ``conv2d_backward`` is: check
   dout, the weight gradient's products as one stacked call, then per image the column
   gradient's product and ``col2im``, and the images' weight gradients summed. Maps of fewer
   than ``SMALL_MAP`` pixels run each product once over the whole batch instead. Where
   tinyfcn runs its direct 3x3 kernel instead (``functional._direct``: fewer than 16 channels
   on 64x64 maps or larger; none of FCN-8s's layers at its default widths), the pieces are:
   pad the image, the direct kernel; and backward: unfold the image again for the weight
   gradient's product, pad dout, the direct kernel for the input gradient. Where it
   runs Winograd (``functional._winograd``), the pieces are its transforms and its three sets of
   16 products, chunk by chunk of images (inside one numba call per thread, ``_kernels.winograd_chunks``
   and ``_kernels.winograd_chunks_backward``; the replica calls the pieces one by one, each product by
   ``_kernels.product`` on NumPy's BLAS, as the kernels do). A transposed convolution runs the same pieces the other way round. A
   replica of each call, built from tinyfcn's own private helpers (read-only), runs the
   pieces in order with a stopwatch lap after each, at the FCN-8s shapes; the real call
   is timed alongside to show the pieces add up. So a slow op can be pinned on the BLAS,
   on the numba loops or on copies.
2. Winograd on either BLAS. For each of FCN-8s's Winograd layers, its forward and backward kernels
   (``_kernels.winograd_chunks`` and ``..._backward``, every chunk in one call) with their products on
   NumPy's own BLAS, as tinyfcn runs them, and on SciPy's (numba's ``np.dot``), both BLAS held at one
   thread; and whether the two give the same bits (output, weight and input gradients): the figures
   behind ``tinyfcn.ops.blas``, for checking them on another CPU.
3. Training-step profile. Every layer of an FCN-8s gets a stopwatch around its
   ``forward``/``backward`` (on the instance, nothing in tinyfcn is modified); the
   step's time is split by layer type, plus the loss and the SGD update.
4. Two threads against one (on a machine with two cores or more). FCN-8s training steps at one
   and at two tinyfcn threads, alternating in this process; stopwatches around
   ``threads.parallel_for`` and ``threads.parallel_ranges`` (swapped in on the module for the
   measurement, put back after) split each step into the jobs two threads share and the rest, and
   time each piece of a shared job on the thread that ran it: how long the two threads were busy,
   how late the worker started, how long the job ran on after its last piece. Beside it, what this
   machine gives two threads on work that shares nothing: two one-thread matrix products at once, and
   a memory-bound addition split in two, against one thread alone.

This describes tinyfcn's current implementation; if its internals change, the affected
part is reported as skipped instead of failing the suite.
"""
import collections
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import fcn_layers
import numpy as np
from _common import (
    calls_per_sample,
    log,
    read_job,
    threads_from_env,
    time_calls,
    write_result,
)

from tinyfcn import functional as F
from tinyfcn import nn, threads
from tinyfcn.labels import IGNORE
from tinyfcn.networks.models import FCN8s
from tinyfcn.ops import _kernels, blas
from tinyfcn.training.optim import SGD


def _randn(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


class Laps:
    """A stopwatch with named laps: ``lap(name)`` records the time since the previous lap."""

    def __init__(self):
        self.times, self.last = {}, time.perf_counter()

    def lap(self, name):
        """Add the time since the previous lap to ``name`` (a piece repeated per image sums up)."""
        now = time.perf_counter()
        self.times[name] = self.times.get(name, 0.0) + now - self.last
        self.last = now


def conv_replica(op, rng):
    """A step-by-step copy of ``conv2d_forward`` + ``conv2d_backward`` at one thread, with a lap after each piece.

    Returns ``(replica, real, gemm_flops)``: ``replica()`` returns ``{piece: seconds}``; ``real()``
    runs the public functions, to check that the pieces add up to the real thing. Timing
    the pieces in sequence (not each on its own, over and over) keeps the cache effects
    of the real call: e.g. ``col2im`` reads a matrix the GEMM just wrote. The three paths are
    copied as ``functional`` runs them on one thread: small maps (fewer than ``SMALL_MAP``
    pixels) as one product over the batch; the direct kernel image by image, each image
    unfolded again in backward for its weight-gradient product; and otherwise im2col image by
    image, then one stacked product over the batch.
    """
    x = _randn(rng, op["x_shape"])
    w = _randn(rng, op["w_shape"], 0.1)
    b = _randn(rng, (w.shape[0],))
    k, s, p = tuple(w.shape[2:]), op["stride"], op["padding"]
    N, C_out = x.shape[0], w.shape[0]
    Ho, Wo = fcn_layers.output_size(op)
    P = Ho * Wo
    dout = _randn(rng, (N, C_out, Ho, Wo))

    direct = F._direct(w, s, p, P)                       # the direct 3x3 kernel instead of im2col + GEMMs
    small = P < F.SMALL_MAP                              # the whole batch as one product
    flipped = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])

    def replica():
        t = Laps()
        xc, wc = F._check_array("conv2d", "x", x), F._check_array("conv2d", "weight", w)
        bc = F._check_bias("conv2d", b, C_out, x.dtype)
        t.lap("fwd: checks")
        w2 = wc.reshape(C_out, -1)
        K = w2.shape[1]
        out = np.empty((N, C_out, P), x.dtype)
        if small:
            cols = np.empty((K, N * P), x.dtype)
            _kernels.im2col(F._padded("xpad", xc, p), *k, *s, Ho, Wo, cols)
            t.lap("fwd: im2col")
            rows = np.empty((C_out, N * P), x.dtype)
            for r in range(0, C_out, 64):
                np.matmul(w2[r:r + 64], cols, out=rows[r:r + 64])
            out[...] = rows.reshape(C_out, N, P).transpose(1, 0, 2)
            t.lap("fwd: GEMM W@cols")
        elif direct:
            cols = None
            for n in range(N):
                xpad = F._padded("xpad", xc[n], p)
                t.lap("fwd: pad")
                _kernels.conv3x3(xpad, wc, out[n].reshape(C_out, Ho, Wo))
                t.lap("fwd: direct conv3x3")
        else:
            cols = np.empty((N, K, P), x.dtype)
            F._im2col_images(xc, 0, cols, k, s, p, (Ho, Wo))              # the one thread's range: every image
            t.lap("fwd: im2col")
            np.matmul(w2, cols, out=out)
            t.lap("fwd: GEMM W@cols")
        _kernels.bias_relu(out, bc, False)
        t.lap("fwd: +bias")
        d3 = F._check_array("conv2d_backward", "dout", dout).reshape(N, C_out, -1)
        t.lap("bwd: check dout")
        dx = np.empty(x.shape, x.dtype)
        if small:
            d2 = d3.transpose(1, 0, 2).reshape(C_out, -1)
            np.matmul(d2, cols.T)
            t.lap("bwd: GEMM dW")
            d3.sum(axis=(0, 2))
            t.lap("bwd: db")
            dcols = np.matmul(w2.T, d2)
            t.lap("bwd: GEMM W.T@dout")
            _kernels.col2im(dcols, *k, *s, *p, Ho, Wo, dx)
            t.lap("bwd: col2im")
            return t.times
        per_image = np.empty((N, K, C_out), x.dtype)
        if direct:
            cols_n = np.empty((1, K, P), x.dtype)
            for n in range(N):
                F._im2col_images(xc, n, cols_n, k, s, p, (Ho, Wo))
                t.lap("bwd: im2col again")
                np.matmul(cols_n[0], d3[n].T, out=per_image[n])
                t.lap("bwd: GEMM dW")
        else:
            np.matmul(cols, d3.transpose(0, 2, 1), out=per_image)
            t.lap("bwd: GEMM dW")
        d3.sum(axis=2)
        t.lap("bwd: db")
        dcols = np.empty((K, P), x.dtype)
        for n in range(N):
            if direct:
                dpad = F._padded("doutpad", d3[n].reshape(C_out, Ho, Wo), (2 - p[0], 2 - p[1]))
                t.lap("bwd: pad dout")
                _kernels.conv3x3(dpad, flipped, dx[n])
                t.lap("bwd: direct dx")
            else:
                np.matmul(w2.T, d3[n], out=dcols)
                t.lap("bwd: GEMM W.T@dout")
                _kernels.col2im(dcols, *k, *s, *p, Ho, Wo, dx[n:n + 1])
                t.lap("bwd: col2im")
        np.ascontiguousarray(per_image.sum(axis=0).T)
        t.lap("bwd: dW summed over images")
        return t.times

    def real():
        F.conv2d_backward(dout, F.conv2d_forward(x, w, b, s, p)[1])

    return replica, real, 2 * C_out * w[0].size * N * Ho * Wo


def winograd_replica(op, rng):
    """As :func:`conv_replica`, where tinyfcn runs Winograd's F(2x2, 3x3) (``functional._winograd``): each
    chunk of images' tiles in turn (``functional._winograd_chunk_images`` a chunk) -- transforms, the 16
    products of each pass, and back."""
    x = _randn(rng, op["x_shape"])
    w = _randn(rng, op["w_shape"], 0.1)
    b = _randn(rng, (w.shape[0],))
    p = op["padding"]
    N, C_in, H, W = x.shape
    C_out = w.shape[0]
    Ho, Wo = fcn_layers.output_size(op)
    tiles = F._winograd_tiles((Ho, Wo))
    T = tiles[0] * tiles[1]
    dout = _randn(rng, (N, C_out, Ho, Wo))

    gemm = blas.gemm_address(x.dtype)                                  # NumPy's BLAS (0: numba's np.dot), as the real call

    def products(A, B, out):                                           # out[k] = A[k] @ B[k], as the kernels do
        for k in range(16):
            _kernels.product(gemm, A[k], B[k], out[k])

    def replica():                      # the pieces of one chunk of images after another, serially
        t = Laps()
        xc, wc = F._check_array("conv2d", "x", x), F._check_array("conv2d", "weight", w)
        bc = F._check_bias("conv2d", b, C_out, x.dtype)
        t.lap("fwd: checks")
        U = F._winograd_weight(wc)
        t.lap("fwd: weight transform")
        B = F._winograd_chunk_images(Ho * Wo)
        chunks = [(n, min(N, n + B)) for n in range(0, N, B)]
        gap = _kernels.ROW_GAP                                         # the kernels' rows: C*B*T values, then a gap
        Vs = [np.empty((16, C_in * (n1 - n0) * T + gap), x.dtype) for n0, n1 in chunks]
        out = np.empty((N, C_out, Ho, Wo), x.dtype)
        for (n0, n1), V in zip(chunks, Vs):
            B = n1 - n0
            M = np.empty((16, C_out * B * T + gap), x.dtype)
            xpad = np.zeros((B, C_in, 2 * tiles[0] + 2, 2 * tiles[1] + 2), x.dtype)
            xpad[:, :, p[0]:p[0] + H, p[1]:p[1] + W] = xc[n0:n1]
            _kernels.winograd_input(xpad, V)
            t.lap("fwd: pad + input transform")
            products(U, V[:, :C_in * B * T].reshape(16, C_in, B * T), M[:, :C_out * B * T].reshape(16, C_out, B * T))
            t.lap("fwd: 16 GEMMs U@V")
            _kernels.winograd_output(M, out[n0:n1])
            t.lap("fwd: output transform")
            _kernels.bias_relu(out[n0:n1].reshape(B, C_out, -1), bc, False)
            t.lap("fwd: +bias")
        d = F._check_array("conv2d_backward", "dout", dout)
        t.lap("bwd: check dout")
        dU = np.empty((len(chunks), *U.shape), x.dtype)
        for i, ((n0, n1), V) in enumerate(zip(chunks, Vs)):
            B = n1 - n0
            M, dV = np.empty((16, C_out * B * T + gap), x.dtype), np.empty((16, C_in * B * T + gap), x.dtype)
            dxpad = np.empty((B, C_in, 2 * tiles[0] + 2, 2 * tiles[1] + 2), x.dtype)
            _kernels.winograd_output_adjoint(d[n0:n1], M)
            t.lap("bwd: output adjoint")
            Mv, Vv = M[:, :C_out * B * T].reshape(16, C_out, B * T), V[:, :C_in * B * T].reshape(16, C_in, B * T)
            products(Mv, Vv.transpose(0, 2, 1), dU[i])
            t.lap("bwd: 16 GEMMs dM@V.T (dW)")
            products(U.transpose(0, 2, 1), Mv, dV[:, :C_in * B * T].reshape(16, C_in, B * T))
            t.lap("bwd: 16 GEMMs U.T@dM (dx)")
            _kernels.winograd_input_adjoint(dV, dxpad)
            t.lap("bwd: input adjoint")
        _kernels.winograd_weight_adjoint(dU.sum(axis=0), np.empty(w.shape, x.dtype))
        t.lap("bwd: dW summed over chunks, weight adjoint")
        return t.times

    def real():
        F.conv2d_backward(dout, F.conv2d_forward(x, w, b, op["stride"], p)[1])

    return replica, real, 2 * C_out * w[0].size * N * Ho * Wo


def convT_replica(op, rng):
    """As :func:`conv_replica`, for ``conv_transpose2d_forward`` + ``conv_transpose2d_backward``."""
    x = _randn(rng, op["x_shape"])
    w = _randn(rng, op["w_shape"], 0.1)
    k, s, p = tuple(w.shape[2:]), op["stride"], op["padding"]
    N, C_in, H, W = x.shape
    C_out = w.shape[1]
    Ho, Wo = fcn_layers.output_size(op)
    dout = _randn(rng, (N, C_out, Ho, Wo))

    def replica():                      # the pieces of one image after another, serially
        t = Laps()
        xc = F._check_array("conv_transpose2d", "x", x)
        wc = F._check_array("conv_transpose2d", "weight", w)
        x3 = xc.reshape(N, C_in, H * W)
        t.lap("fwd: checks")
        w2 = wc.reshape(C_in, -1)
        out, copies = np.empty((N, C_out, Ho, Wo), x.dtype), np.empty((w2.shape[1], H * W), x.dtype)
        for n in range(N):
            np.matmul(w2.T, x3[n], out=copies)
            t.lap("fwd: GEMM W.T@x")
            _kernels.col2im(copies, *k, *s, *p, H, W, out[n:n + 1])
            t.lap("fwd: col2im")
        dc = F._check_array("conv_transpose2d_backward", "dout", dout)
        t.lap("bwd: check dout")
        cols3, dx = np.empty((1, w2.shape[1], H * W), x.dtype), np.empty((N, C_in, H * W), x.dtype)
        cols = cols3[0]
        dw = np.zeros(w2.shape, x.dtype)
        for n in range(N):
            F._im2col_images(dc, n, cols3, k, s, p, (H, W))
            t.lap("bwd: im2col(dout)")
            np.matmul(w2, cols, out=dx[n])
            t.lap("bwd: GEMM dx")
            dw += x3[n] @ cols.T
            t.lap("bwd: GEMM dW")
        return t.times

    def real():
        F.conv_transpose2d_backward(dout, F.conv_transpose2d_forward(x, w, None, s, p)[1])

    return replica, real, 2 * N * H * W * w.size


def op_breakdown(quick):
    """Per conv / transposed conv of FCN-8s: median ms of each piece, GEMM GFLOP/s, and the real call's ms."""
    rng = np.random.default_rng(0)
    repeats, target = (5, 0.01) if quick else (15, 0.02)
    rows = []
    for op in fcn_layers.fcn_ops():
        if op["kind"] == "pool" or "fcn8s" not in op["uses"]:
            continue
        if op["kind"] == "conv":
            winograd = F._winograd(np.empty(op["w_shape"]), op["stride"], op["padding"], np.prod(fcn_layers.output_size(op)))
            make = winograd_replica if winograd else conv_replica
        else:
            make = convT_replica
        replica, real, flops = make(op, rng)
        for _ in range(2):                                    # warm-up: numba, BLAS buffers
            replica(), real()
        laps = collections.defaultdict(list)
        number = calls_per_sample(real, target)
        real_times = []
        for _ in range(repeats):                              # alternate replica and real calls
            for _ in range(number):
                for name, sec in replica().items():
                    laps[name].append(sec)
            real_times.append(time_calls(real, number))
        pieces = {name: {"ms": float(np.median(v)) * 1e3} for name, v in laps.items()}
        for name, piece in pieces.items():
            piece["gflops"] = flops / piece["ms"] / 1e6 if "GEMM" in name else None
        rows.append({"label": fcn_layers.label(op), "uses": fcn_layers.uses_text(op), "pieces": pieces,
                     "real_ms": float(np.median(real_times)) * 1e3})
    return rows


def winograd_blas(quick):
    """Per Winograd layer of FCN-8s: its forward + backward kernels with the products on NumPy's BLAS and
    on SciPy's, median ms, and whether the two give the same bits (see the module docstring); [] where
    NumPy's BLAS is not one tinyfcn can call (every product is then numba's ``np.dot``)."""
    numpy_blas = blas.gemm_address(np.float32)
    if not numpy_blas:
        return []
    rng = np.random.default_rng(0)
    repeats = 5 if quick else 15
    rows = []
    for op in fcn_layers.fcn_ops():
        if op["kind"] != "conv" or "fcn8s" not in op["uses"]:
            continue
        (Ho, Wo), (ph, pw) = fcn_layers.output_size(op), op["padding"]
        if not F._winograd(np.empty(op["w_shape"]), op["stride"], op["padding"], Ho * Wo):
            continue
        x, w = _randn(rng, op["x_shape"]), _randn(rng, op["w_shape"], 0.1)
        (N, C_in), C_out = x.shape[:2], w.shape[0]
        dout = _randn(rng, (N, C_out, Ho, Wo))
        th, tw = F._winograd_tiles((Ho, Wo))
        B, U = F._winograd_chunk_images(Ho * Wo), F._winograd_weight(w)
        chunks, S_in, S_out = -(-N // B), C_in * B * th * tw + _kernels.ROW_GAP, C_out * B * th * tw + _kernels.ROW_GAP
        xpad = np.empty((B, C_in, 2 * th + 2, 2 * tw + 2), np.float32)
        V, M, dM, dV = (np.empty(n, np.float32) for n in (chunks * 16 * S_in, 16 * S_out, 16 * S_out, 16 * S_in))
        results, times = {}, {}
        for name, gemm in (("numpy", numpy_blas), ("scipy", 0)):
            out, dU, dx = np.empty(dout.shape, np.float32), np.empty((chunks, 16, C_out, C_in), np.float32), \
                np.empty(x.shape, np.float32)

            def layer():                                               # the whole batch in one call each way
                _kernels.winograd_chunks(x, ph, pw, U, gemm, None, False, B, 0, chunks, V, True, xpad, M, out)
                _kernels.winograd_chunks_backward(dout, None, x, ph, pw, U, gemm, B, 0, chunks, V, True, None, dU, dx,
                                                  xpad, dM, dV)

            with threads.computing():                                  # both BLAS at one thread, as tinyfcn runs
                layer()
                number = calls_per_sample(layer, 0.02)
                times[name] = float(np.median([time_calls(layer, number) for _ in range(repeats)]))
            results[name] = (out, dU, dx)
        rows.append({"label": fcn_layers.label(op), "uses": fcn_layers.uses_text(op),
                     "numpy_ms": times["numpy"] * 1e3, "scipy_ms": times["scipy"] * 1e3,
                     "same_bits": all(np.array_equal(a, b) for a, b in zip(results["numpy"], results["scipy"]))})
    return rows


def _stopwatch(totals, key, fn):
    """Wrap ``fn`` so that each call adds its duration to ``totals[key]``."""
    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - t0
    return timed


def train_step_profile(quick, batch=8, size=64):
    """Median seconds per FCN-8s training step, split by layer type and direction, loss and SGD."""
    rng = np.random.default_rng(0)
    model = FCN8s(fcn_layers.NUM_CLASSES)
    loss_fn = nn.SoftmaxCrossEntropy(IGNORE)
    opt = SGD(model.params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = _randn(rng, (batch, 3, size, size))
    y = rng.integers(0, fcn_layers.NUM_CLASSES, (batch, size, size))
    totals = collections.defaultdict(float)
    for layer in model.layers.values():
        kind = type(layer).__name__
        layer.forward = _stopwatch(totals, f"{kind} fwd", layer.forward)
        layer.backward = _stopwatch(totals, f"{kind} bwd", layer.backward)
    loss_fn.forward = _stopwatch(totals, "loss fwd (+grad)", loss_fn.forward)
    loss_fn.backward = _stopwatch(totals, "loss bwd", loss_fn.backward)
    opt.step = _stopwatch(totals, "SGD step", opt.step)
    grads = _stopwatch(totals, "model.grads dict", lambda: model.grads)
    per_step = collections.defaultdict(list)
    for i in range(2 + (5 if quick else 15)):
        totals.clear()
        t0 = time.perf_counter()
        loss_fn.forward(model.forward(x), y)
        model.backward(loss_fn.backward(), input_grad=False)   # as train_step: no gradient of the images
        opt.step(grads())
        step = time.perf_counter() - t0
        if i >= 2:                                   # two warm-up steps
            per_step["step total"].append(step)
            per_step["unaccounted (model glue)"].append(step - sum(totals.values()))
            for key, value in totals.items():
                per_step[key].append(value)
    return {key: float(np.median(v)) for key, v in per_step.items()}


class Ceiling:
    """What this machine gives two threads on work that shares nothing, one sample per :meth:`sample` call.

    ``products``: twelve 512x512 float32 products (NumPy's BLAS held at one thread) on one thread,
    against twelve on each of two threads at once: 2 x alone / together. ``memory``: ``a = b + c`` over
    three 32 MB arrays (more than most L3 caches hold) on one thread, against its two halves on two threads at once.
    """

    def __init__(self, pool):
        rng = np.random.default_rng(0)
        self.pool, self.samples = pool, {"products": [], "memory": []}
        self.mats = [[_randn(rng, (512, 512)) for _ in range(3)] for _ in range(2)]
        self.big = [_randn(rng, (8 << 20,)) for _ in range(3)]

    def _products(self, k):
        a, b, c = self.mats[k]
        for _ in range(12):
            np.matmul(a, b, out=c)

    def _add(self, part):
        np.add(self.big[1][part], self.big[2][part], out=self.big[0][part])

    def sample(self):
        half = self.big[0].size // 2
        for name, alone, mine, other, work in (
                ("products", lambda: self._products(0), lambda: self._products(0), lambda: self._products(1), 2),
                ("memory", lambda: self._add(slice(None)), lambda: self._add(slice(0, half)),
                 lambda: self._add(slice(half, None)), 1)):
            with threads.computing():
                t0 = time.perf_counter()
                alone()
                one = time.perf_counter() - t0
                t0 = time.perf_counter()
                pending = self.pool.submit(other)
                mine()
                pending.result()
                self.samples[name].append(work * one / (time.perf_counter() - t0))

    def medians(self):
        return {name: float(np.median(v)) for name, v in self.samples.items()}


def _watched(fn, state, main_thread):
    """``fn`` (``threads.parallel_for`` or ``parallel_ranges``) with stopwatches for the jobs two threads share.

    A job counts as shared when it is not nested in another and tinyfcn would give it two threads
    (two items or more, not a small job); its figures add up in ``state["step"]``.
    """
    def call(count, body, values=None, macs=0):
        if state["depth"] > 0 or count < 2 or threads._small(values, macs):
            state["depth"] += 1
            try:
                return fn(count, body, values, macs)
            finally:
                state["depth"] -= 1
        step, marks = state["step"], {"start": None, "ends": [time.perf_counter()]}

        def piece(*args):
            t0 = time.perf_counter()
            on_worker = threading.get_ident() != main_thread
            if on_worker and marks["start"] is None:
                marks["start"] = t0
            try:
                return body(*args)
            finally:
                t1 = time.perf_counter()
                step["worker busy" if on_worker else "caller busy"] += t1 - t0
                marks["ends"].append(t1)

        t0 = time.perf_counter()
        state["depth"] += 1
        try:
            return fn(count, piece, values, macs)
        finally:
            state["depth"] -= 1
            t1 = time.perf_counter()
            step["shared jobs"] += t1 - t0
            step["jobs"] += 1
            step["worker start delay"] += (marks["start"] or t1) - t0
            step["after the last piece"] += t1 - max(marks["ends"])
    return call


def two_threads(quick, batch=8, size=64):
    """FCN-8s training steps at one and two tinyfcn threads, alternating, for norm "none" and "batch":
    per step (medians) the wall time, the time in jobs two threads share, and at two threads each
    thread's busy time in them, the worker's start delay and the time after the last piece; a
    :class:`Ceiling` sample between each pair of steps. None on a machine with one core."""
    if len(os.sched_getaffinity(0)) < 2:
        return None
    rng = np.random.default_rng(0)
    x = _randn(rng, (batch, 3, size, size))
    y = rng.integers(0, fcn_layers.NUM_CLASSES, (batch, size, size))
    state = {"depth": 0, "step": None}
    original = threads.parallel_for, threads.parallel_ranges
    result = {}
    threads.parallel_for, threads.parallel_ranges = (_watched(fn, state, threading.get_ident()) for fn in original)
    try:
        with ThreadPoolExecutor(1) as pool:
            for norm in ("none", "batch"):
                model = FCN8s(fcn_layers.NUM_CLASSES, norm=norm)
                loss_fn = nn.SoftmaxCrossEntropy(IGNORE)
                opt = SGD(model.params, lr=0.01, momentum=0.9, weight_decay=5e-4)
                steps, ceiling = {1: collections.defaultdict(list), 2: collections.defaultdict(list)}, Ceiling(pool)
                for i in range(2 + (8 if quick else 30)):
                    for n in ((1, 2) if i % 2 == 0 else (2, 1)):
                        state["step"] = collections.defaultdict(float)
                        with threads.using(n):
                            t0 = time.perf_counter()
                            loss_fn.forward(model.forward(x), y)
                            model.backward(loss_fn.backward(), input_grad=False)   # as train_step
                            opt.step(model.grads)
                            state["step"]["step"] = time.perf_counter() - t0
                        if i >= 2:                                              # two warm-up pairs
                            for key, value in state["step"].items():
                                steps[n][key].append(value)
                    if i >= 2:
                        ceiling.sample()
                pairs = np.array(steps[1]["step"]) / np.array(steps[2]["step"])
                result[norm] = {**{str(n): {k: float(np.median(v)) for k, v in s.items()} for n, s in steps.items()},
                                "speed_up": float(np.median(pairs)), "ceiling": ceiling.medians()}
    finally:
        threads.parallel_for, threads.parallel_ranges = original
    return result


def main():
    job = read_job()
    threads.set_threads(1)                # the replicas are serial: compare them with a serial real call
    result = {"threads": threads_from_env(), "note": "pieces and real call at 1 tinyfcn thread"}
    for name, fn in (("ops", op_breakdown), ("winograd_blas", winograd_blas), ("train_step", train_step_profile),
                     ("two_threads", two_threads)):
        log(f"  breakdown: {name}")
        try:
            result[name] = fn(job["quick"])
        except (AttributeError, TypeError) as e:      # tinyfcn's private helpers changed
            result[name] = None
            result[f"{name}_skipped"] = f"{type(e).__name__}: {e}"
    write_result(job["out"], result)


if __name__ == "__main__":
    main()
