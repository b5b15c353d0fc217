"""The direct 3x3 convolution (no columns) and Winograd's F(2x2, 3x3) against the im2col path:
the dispatch rules, agreement, gradients, threads."""
import numpy as np
import pytest

from tinyfcn import functional as F
from tinyfcn import threads
from tinyfcn.ops import _kernels
from tinyfcn.ops.gradcheck import numerical_gradient, rel_error

AGREEMENT = {np.float32: 1e-6, np.float64: 1e-12}
"""Largest difference from the im2col path, relative to the largest entry: the paths add the same
terms in another order (the direct path: bit for bit for the weight and bias gradients, which it
computes with im2col's products; Winograd: bit for bit for the bias gradient)."""

PATHS = {"direct": ("DIRECT_PIXELS", 1), "winograd": ("WINOGRAD_CHANNELS", 1)}
"""path -> (the rule's setting, the value that opens it to every shape below); 10**9 closes it."""


def _rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _both_paths(monkeypatch, path, x, w, b, padding, relu, dout):
    """(path, im2col): each one's output and gradients. The direct path takes maps of at least
    :data:`F.SMALL_MAP` pixels only (smaller ones are one product over the batch, before it is asked)."""
    setting, opened = PATHS[path]
    monkeypatch.setattr(F, "WINOGRAD_PIXELS", 1 if path == "winograd" else 10 ** 9)   # only the path under test opens
    results = []
    for value in (opened, 10 ** 9):
        monkeypatch.setattr(F, setting, value)
        out, cache = F.conv2d_forward(x, w, b, 1, padding, relu)
        if path == "direct":
            assert (cache[5] is None) == (value == opened)             # the direct path keeps no columns
        else:
            assert (cache[5].ndim == 1) == (value == opened)          # Winograd keeps every chunk's V, flat
        results.append((out, *F.conv2d_backward(dout, cache)))
    return results


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,c_out,padding", [((2, 4, 13, 12), 8, 1), ((1, 8, 14, 13), 4, 0), ((3, 4, 10, 11), 12, 2),
                                                 ((2, 12, 12, 11), 4, (1, 2)), ((1, 16, 12, 12), 16, 1)])
@pytest.mark.parametrize("bias,relu", [(True, False), (False, False), (True, True)])
@pytest.mark.parametrize("path", list(PATHS))
def test_each_path_agrees_with_im2col(monkeypatch, path, dtype, shape, c_out, padding, bias, relu):
    rng = np.random.default_rng(0)
    x, w = _rand(rng, shape, dtype), _rand(rng, (c_out, shape[1], 3, 3), dtype)
    b = _rand(rng, c_out, dtype) if bias else None
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    dout = _rand(rng, (shape[0], c_out, shape[2] + 2 * ph - 2, shape[3] + 2 * pw - 2), dtype)
    fast, im2col = _both_paths(monkeypatch, path, x, w, b, padding, relu, dout)
    for name, a, want in zip(("out", "dx", "dweight", "dbias"), fast, im2col):
        if want is None:
            assert a is None
            continue
        assert a.dtype == dtype and a.shape == want.shape, name
        if name == "dbias" or (name == "dweight" and path == "direct"):
            np.testing.assert_array_equal(a, want)
        else:
            assert np.abs(a - want).max() <= AGREEMENT[dtype] * np.abs(want).max(), name


def _rule(rule, c_in, c_out, size, kernel=3, stride=1, padding=1):
    return rule(np.empty((c_out, c_in, kernel, kernel)), (stride, stride), (padding, padding), size * size)


def test_the_dispatch_rules():
    direct = lambda *args, **kw: _rule(F._direct, *args, **kw)        # noqa: E731
    winograd = lambda *args, **kw: _rule(F._winograd, *args, **kw)    # noqa: E731
    assert direct(8, 8, 64) and direct(8, 8, 128) and direct(8, 16, 64) and direct(16, 8, 64)   # width-8 conv1_x
    assert not direct(16, 32, 32) and not direct(32, 32, 64) and not direct(8, 8, 32)   # the BLAS is as fast
    assert not direct(16, 16, 64) and not direct(16, 16, 128)                        # FCN's conv1_2: Winograd
    assert not direct(3, 16, 64) and not direct(8, 6, 64)                            # four channels at a time
    assert not direct(8, 8, 64, kernel=5) and not direct(8, 8, 64, stride=2) and not direct(8, 8, 64, padding=3)
    for c_in, c_out, size in ((16, 16, 64), (16, 32, 32), (32, 32, 32), (32, 64, 16), (64, 64, 16), (64, 128, 8),
                              (128, 128, 8), (16, 16, 128), (16, 32, 64), (32, 64, 32)):   # conv1_2 to conv4_x, at 64 and 128
        assert winograd(c_in, c_out, size) and not direct(c_in, c_out, size)
    assert not winograd(3, 16, 64) and not winograd(8, 8, 64) and not winograd(8, 16, 32)   # conv1_1; few channels
    assert not winograd(128, 128, 4) and not winograd(128, 256, 2)                # conv5, fc6: too few tiles
    assert not winograd(64, 64, 32, kernel=1) and not winograd(64, 64, 32, stride=2)
    assert winograd(64, 64, 32, padding=0) and winograd(64, 64, 32, padding=2)       # any padding


@pytest.mark.parametrize("padding,seed", [(1, 0), (0, 1), (2, 2)])
@pytest.mark.parametrize("path", list(PATHS))
def test_each_paths_gradients(monkeypatch, path, padding, seed):
    setting, opened = PATHS[path]
    monkeypatch.setattr(F, setting, opened)
    monkeypatch.setattr(F, "WINOGRAD_PIXELS", 1)
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((2, 4, 14, 13)), rng.standard_normal((8, 4, 3, 3)), rng.standard_normal(8)
    out, cache = F.conv2d_forward(x, w, b, 1, padding)
    tiles = -(-out.shape[2] // 2) * -(-out.shape[3] // 2)
    B = F._winograd_chunk_images(out[0, 0].size)                       # images a chunk; one chunk of rows of tiles
    kept = -(-2 // B) * 16 * (4 * B * tiles + _kernels.ROW_GAP)         # each row: C_in*B*tiles values and a gap
    assert cache[5] is None if path == "direct" else cache[5].shape == (kept,)    # V, flat
    dout = rng.standard_normal(out.shape)
    dx, dw, db = F.conv2d_backward(dout, cache)
    assert rel_error(dx, numerical_gradient(lambda v: F.conv2d_forward(v, w, b, 1, padding)[0], x, dout)) < 1e-7
    assert rel_error(dw, numerical_gradient(lambda v: F.conv2d_forward(x, v, b, 1, padding)[0], w, dout)) < 1e-7
    assert rel_error(db, numerical_gradient(lambda v: F.conv2d_forward(x, w, v, 1, padding)[0], b, dout)) < 1e-7


def test_winograd_chunk_sizes_follow_the_map_not_the_thread_count():
    assert F._winograd_chunk_images(64) == 4                               # 8x8 maps: four images a chunk
    assert F._winograd_chunk_images(256) == 2                              # 16x16: two
    assert F._winograd_chunk_images(16) == 4                               # at most four
    assert F._winograd_chunk_images(1024) == 1                             # large maps: one image a chunk


@pytest.mark.parametrize("c_in,c_out,size", [(8, 8, 64), (32, 32, 32), (64, 64, 9)])   # direct; Winograd (odd maps too)
def test_the_same_bits_for_any_thread_count(c_in, c_out, size, every_job_shared):
    rng = np.random.default_rng(0)
    x, w, b = _rand(rng, (5, c_in, size, size), np.float32), _rand(rng, (c_out, c_in, 3, 3), np.float32), \
        _rand(rng, c_out, np.float32)
    dout = _rand(rng, (5, c_out, size, size), np.float32)

    def run():
        out, cache = F.conv2d_forward(x, w, b, 1, 1, True)
        B, T = F._winograd_chunk_images(size * size), (-(-size // 2)) ** 2        # V: each chunk's rows, with gaps
        assert cache[5] is None if c_in == 8 else cache[5].shape == (-(-5 // B) * 16 * (c_in * B * T + _kernels.ROW_GAP),)
        return (out, *F.conv2d_backward(dout, cache))

    with threads.using(1):
        one = run()
    with threads.using(3):
        for a, c in zip(one, run()):
            np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("path,shape,c_out", [("im2col", (3, 3, 16, 12), 8), ("small map", (3, 8, 5, 6), 8),
                                              ("direct", (2, 8, 64, 64), 8), ("winograd", (2, 32, 32, 32), 32)])
@pytest.mark.parametrize("relu", [False, True])
def test_without_the_input_gradient_the_weight_and_bias_gradients_keep_their_bits(path, shape, c_out, relu):
    rng = np.random.default_rng(0)
    x, w, b = _rand(rng, shape, np.float32), _rand(rng, (c_out, shape[1], 3, 3), np.float32), _rand(rng, c_out, np.float32)
    out, cache = F.conv2d_forward(x, w, b, 1, 1, relu)
    assert F._direct(w, (1, 1), (1, 1), out[0, 0].size) == (path == "direct")
    assert F._winograd(w, (1, 1), (1, 1), out[0, 0].size) == (path == "winograd")
    assert (out[0, 0].size < F.SMALL_MAP) == (path == "small map")
    dout = _rand(rng, out.shape, np.float32)
    dx, dweight, dbias = F.conv2d_backward(dout, cache)
    none, dweight_alone, dbias_alone = F.conv2d_backward(dout, cache, input_grad=False)
    assert dx is not None and none is None
    np.testing.assert_array_equal(dweight_alone, dweight)
    np.testing.assert_array_equal(dbias_alone, dbias)
