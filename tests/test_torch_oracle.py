"""PyTorch as an independent oracle for the semantics (shapes, ceil mode, ignore_index, reductions).

Skipped cleanly when torch is not installed (``pip install -e ".[torch]"`` adds it).
"""
import numpy as np
import pytest

from tinyfcn import functional as F
from tinyfcn.ops.check_table import _distinct

torch = pytest.importorskip("torch")
tF = torch.nn.functional


def t(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), ((2, 5), (2, 1), (1, 2)), (4, 3, 0), (1, 2, 1)])
def test_conv2d_and_transpose_match_torch(kernel, stride, padding):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 11, 8)), rng.standard_normal((4, 3, *np.broadcast_to(kernel, 2))), rng.standard_normal(4)
    out, cache = F.conv2d_forward(x, w, b, stride, padding)
    tx, tw, tb = t(x, True), t(w, True), t(b, True)
    tout = tF.conv2d(tx, tw, tb, stride, padding)
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    tout.backward(t(dout))
    for mine, theirs in zip(F.conv2d_backward(dout, cache), (tx, tw, tb)):
        np.testing.assert_allclose(mine, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)

    wt = rng.standard_normal((3, 4, *np.broadcast_to(kernel, 2)))
    out, cache = F.conv_transpose2d_forward(x, wt, b, stride, padding)
    tx, tw, tb = t(x, True), t(wt, True), t(b, True)
    tout = tF.conv_transpose2d(tx, tw, tb, stride, padding)
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    tout.backward(t(dout))
    for mine, theirs in zip(F.conv_transpose2d_backward(dout, cache), (tx, tw, tb)):
        np.testing.assert_allclose(mine, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kernel,stride,padding,ceil_mode,size", [
    (2, 2, 0, True, (7, 5)), (3, 2, 1, True, (8, 9)), (3, 3, 1, True, (10, 4)), (2, 2, 0, False, (7, 5)), (2, 2, 0, True, (1, 1)),
    ((3, 2), (2, 1), (1, 0), True, (9, 6))])
def test_max_pool_matches_torch_including_ceil_mode(kernel, stride, padding, ceil_mode, size):
    x = _distinct((2, 3, *size), np.random.default_rng(0))
    out, cache = F.max_pool2d_forward(x, kernel, stride, padding, ceil_mode)
    tx = t(x, True)
    tout, tidx = tF.max_pool2d(tx, kernel, stride, padding, ceil_mode=ceil_mode, return_indices=True)
    np.testing.assert_array_equal(out, tout.detach().numpy())
    np.testing.assert_array_equal(cache[0], tidx.numpy())
    dout = np.random.default_rng(1).standard_normal(out.shape)
    tout.backward(t(dout))
    np.testing.assert_allclose(F.max_pool2d_backward(dout, cache), tx.grad.numpy(), rtol=1e-12)


def test_max_unpool_matches_torch():
    x = _distinct((2, 3, 8, 6), np.random.default_rng(0))
    out, cache = F.max_pool2d_forward(x, 2)
    theirs = tF.max_unpool2d(t(out), torch.tensor(cache[0]), 2, output_size=(8, 6))
    np.testing.assert_array_equal(F.max_unpool2d_forward(out, cache[0], (8, 6))[0], theirs.numpy())


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_matches_torch(reduction):
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((2, 5, 6, 7)) * 3
    target = rng.integers(0, 5, (2, 6, 7))
    target[0, :3] = 255
    loss, d = F.softmax_cross_entropy(scores, target, 255, reduction)
    ts = t(scores, True)
    tloss = tF.cross_entropy(ts, torch.tensor(target), ignore_index=255, reduction=reduction)
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    np.testing.assert_allclose(d, ts.grad.numpy(), rtol=1e-10, atol=1e-15)
