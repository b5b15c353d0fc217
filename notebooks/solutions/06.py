"""Notebook 6, skips: the exercises solved, and the answers to the questions.

Q1. The skip's output is W_4 * pool4 + b_4, so the gradient of its weight is the gradient
    arriving at its output (delta, the same that reaches the upsampled coarse scores it is
    added to) times pool4: sum over pixels of delta[k] * pool4[c]. Neither factor is zero
    once the loss is not, so the first update moves W_4 off zero, and from then on the
    skip adds what the coarse scores lack. Started at random values, the skip would add
    noise of the size of pool4's features to scores that the trained coarse network got
    right, and the grown network would begin worse than its parent and first have to
    unlearn that noise.

Q2. FCN-32s: pool5 is 2 x 2 on a 64 x 64 image (64 / 32), upsampled x32. FCN-16s: the x2
    upsampled 2 x 2 scores and score_pool4 are 4 x 4 (64 / 16), upsampled x16. FCN-8s: 8 x 8
    (64 / 8), upsampled x8. The block experiment of notebook 5 on shapes: the best label per
    32-pixel block reaches a mean IoU of about 0.32, per 16-pixel block about 0.58 and per
    8-pixel block about 0.75: an outline drawn from scores 8 pixels apart can follow the edge
    of a 16-32 pixel object, one drawn from scores 32 pixels apart cannot; the boundary band
    is exactly where the coarse networks' interpolated labels go wrong.

Q3. Write the concat network's 1x1 convolution as [W_u W_p] on the stack [u; p]:
    W_u u + W_p p + b. A sum network computes u' + W_p p + b with u' its upsampled scores; put
    a 1 x 1 convolution with weight W_u (and no bias) on the upsampled scores before the sum
    and it computes the same function. So concat adds nothing but those K x K weights when a
    linear layer follows the stack. It can compute more only when a non-linearity comes
    between the stack and the scores (a ReLU, or a 3 x 3 convolution block as in decoders
    that stack features), because then u and p are mixed before the sum.
"""
import numpy as np


def my_fuse_sum(up, pool, weight, bias):
    """up (N, K, h, w), pool (N, C, h, w), weight (K, C, 1, 1), bias (K,) -> fused scores (N, K, h, w)."""
    skip = np.einsum("kc,nchw->nkhw", weight[:, :, 0, 0], pool) + bias[None, :, None, None]
    return up + skip


def my_boundary_band(label, width):
    """label (H, W) integers, width >= 1 -> bool (H, W): pixels within `width` of another label, 255 never in it."""
    H, W = label.shape
    band = np.zeros((H, W), bool)
    for i in range(H):
        for j in range(W):
            window = label[max(i - width, 0):i + width + 1, max(j - width, 0):j + width + 1]
            band[i, j] = (window != label[i, j]).any()
    return band & (label != 255)
