"""Notebook 2, pooling and unpooling: the exercises solved, and the answers to the questions.

Q1. Floor mode: 100 -> 50 -> 25 -> 12 -> 6 -> 3. Ceil mode: 100 -> 50 -> 25 -> 13 -> 7 -> 4.
    Floor mode drops the last row of the 25-row map (25 -> 12 pairs rows 0-23 only); one of
    its rows spans 4 image rows, so image rows 96-99 (and columns 96-99) never reach the
    output. Ceil mode keeps them: its last windows hang over the border (25 -> 13, 13 -> 7,
    7 -> 4), and every image row is seen.

Q2. An average pool computes out = (x1 + x2 + x3 + x4) / 4 over each window, so each of the
    four pixels gets dout / 4: dx is dout repeated over each 2x2 block, divided by 4. Every
    input pixel gets some gradient at every step; max-pooling gives it to the winners only,
    a quarter of the pixels for 2x2 windows at stride 2.

Q3. At a tie the maximum is not differentiable. Raising one of the tied values by h raises
    the output by h; lowering it by h changes nothing (the other value still wins). The
    centred difference then reports (h - 0) / 2h = 1/2 for each tied pixel, while the
    backward pass sends the whole gradient to one of them: tinyfcn, like PyTorch, to the
    first maximum of the window in row-major order (its switch). Both are valid
    subgradients, but they differ, so the check would fail for a correct backward pass.
"""
import numpy as np


def pool_output_size(H, kernel, stride, ceil_mode):
    """Output height of a max-pool with this kernel and stride, no padding; floor or ceil mode."""
    span = H - kernel                                        # how far the window can move
    steps = -(-span // stride) if ceil_mode else span // stride
    return steps + 1


def my_max_pool2d_backward(dout, cache):
    """dout (N, C, H_out, W_out), cache = (switches, x.shape, x.dtype) -> dx (N, C, H, W)."""
    switches, shape, dtype = cache
    N, C, H, W = shape
    dx = np.zeros((N, C, H * W), dtype=dtype)
    for n in range(N):
        for c in range(C):
            for position, g in zip(switches[n, c].ravel(), dout[n, c].ravel()):
                dx[n, c, position] += g                      # a pixel that won several windows collects them all
    return dx.reshape(shape)
