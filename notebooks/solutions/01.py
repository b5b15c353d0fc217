"""Notebook 1, convolution: the exercises solved, and the answers to the questions.

Q1. After the convolution: floor((224 + 2*3 - 7) / 2) + 1 = floor(223 / 2) + 1 = 112. After
    the pool: floor((112 + 2*1 - 3) / 2) + 1 = floor(111 / 2) + 1 = 56. A 223x223 image
    also gives 112 after the convolution: floor(222 / 2) + 1 = 112. The last window needs
    the rows up to 2*111 + 7 = 229 of the padded input; 224 + 6 = 230 rows has one to spare,
    223 + 6 = 229 exactly enough, and the floor drops the spare row without a trace. (225
    gives 113.)

Q2. Two 3x3 layers: 2 * 9 * C^2 = 18 C^2 weights (plus 2C biases); one 5x5 layer: 25 C^2
    (plus C): the stack has 28 % fewer. It also puts a ReLU between the two convolutions,
    so on the same 5x5 window it computes a non-linear function that one linear filter
    followed by one ReLU cannot (VGG's argument for stacks of 3x3 convolutions).

Q3. The centred difference has two errors. Truncation: about h^2 times the third derivative,
    ~1e-10 at h = 1e-5. Rounding: each evaluation of the loss is off by about eps * |loss|
    (eps, the machine epsilon: 2.2e-16 in float64, 1.2e-7 in float32), and dividing by 2h
    magnifies that to ~eps / h relative. In float32 at h = 1e-5 that is ~1e-2; in float64 at
    h = 1e-12 it is ~1e-4. Both drown the 1e-7 threshold; float64 at h ~ 1e-5 balances the
    two errors near their smallest sum.
"""
import numpy as np


def my_im2col(x, kernel, stride, padding):
    """x (N, C, H, W) -> cols (C*kH*kW, N*H_out*W_out); kernel, stride, padding are (h, w) pairs of ints."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    N, C, H, W = x.shape
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((C * kh * kw, N * Ho * Wo), dtype=x.dtype)
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                window = xpad[n, :, i * sh:i * sh + kh, j * sw:j * sw + kw]    # (C, kH, kW)
                cols[:, (n * Ho + i) * Wo + j] = window.ravel()              # rows in the order (c, u, v)
    return cols


def receptive_field(layers):
    """layers: [(kernel, stride), ...], first layer first -> width of one output pixel's window on the input."""
    field, jump = 1, 1                   # the field so far, and how many image pixels one step of the map spans
    for kernel, stride in layers:
        field += (kernel - 1) * jump
        jump *= stride
    return field
