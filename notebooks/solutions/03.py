"""Notebook 3, transposed convolution: the exercises solved, and the answers to the questions.

Q1. (H - 1) * s - 2p + k with H = 2, s = 32, k = 64: padding 0 gives 32 + 64 = 96, padding 16
    gives 96 - 32 = 64. For a 64x64 image the unpadded 96x96 map must be cropped to 64x64
    (FCN's Crop layer, at the offset the coordinate maps give); the padded one is already
    64x64 and aligned.

Q2. No. C maps the 25 pixels of a 5x5 image to 9 outputs, so it has rank at most 9 and
    throws information away; nothing maps 9 numbers back to every 25-pixel image.
    C^T maps the 9 outputs back to 25 pixels, but C^T C is a 25x25 matrix of rank at most 9,
    not the identity: it blurs the image through the kernel twice and keeps only what C can
    see. The transpose is the adjoint, <C x, y> = <x, C^T y>; it is the inverse only for
    an orthogonal C, which a convolution with stride 2 never is.

Q3. Away from the border an output pixel of phase (a, b) (its position modulo 2) receives
    the taps w[a, b] + w[a + 2, b] + w[a, b + 2] + w[a + 2, b + 2] times the input value.
    A flat input comes out flat exactly when these four phase sums are equal. Bilinear and
    box kernels satisfy it; training does not keep it, because the loss never asks for it:
    a learned kernel drifts to unequal phase sums and paints a checkerboard. That is why
    FCN's frozen bilinear kernels show none, and why Odena et al. suggest resizing first
    and convolving after.
"""
import numpy as np


def my_conv_transpose2d(x, weight, stride, padding):
    """x (N, C_in, H, W), weight (C_in, C_out, k, k), int stride and padding -> (N, C_out, H_out, W_out)."""
    N, C_in, H, W = x.shape
    _, C_out, k, _ = weight.shape
    full = np.zeros((N, C_out, (H - 1) * stride + k, (W - 1) * stride + k))
    for i in range(H):
        for j in range(W):
            # every image n and input channel c adds x[n, c, i, j] * weight[c] at (i*stride, j*stride)
            full[:, :, i * stride:i * stride + k, j * stride:j * stride + k] += np.einsum(
                "nc,cokl->nokl", x[:, :, i, j], weight)
    return full[:, :, padding:full.shape[2] - padding, padding:full.shape[3] - padding]


def copies_per_pixel(n, k, s, p):
    """Counts of kernel copies reaching each output pixel of a 1-D transposed convolution: an int array."""
    counts = np.zeros((n - 1) * s + k, dtype=int)        # the uncropped output
    for i in range(n):
        counts[i * s:i * s + k] += 1                     # input pixel i's copy covers these pixels
    return counts[p:len(counts) - p]
