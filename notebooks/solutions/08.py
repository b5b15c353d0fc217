"""Notebook 8, why training works or fails: the exercises solved, and the answers to the questions.

Q1. A prediction must depend on the image alone. With the batch's statistics, an image's
    labels would change with the other images it is batched with (section 2 shows one image
    normalised two ways), and an image predicted alone, one pixel per channel in the worst
    case, has a variance of 0 (or of its own pixels only), so every channel would be
    normalised to its own mean and lose what it measured. The running statistics are fixed
    numbers after training: in evaluation mode BatchNorm is one per-channel affine map, the
    same for every image, and it can even be folded into the convolution before it. They are
    not parameters because no gradient defines them: they are averages of what the layer
    saw, updated by the forward pass; weight decay would pull the variance towards 0 and
    break the normalisation.

Q2. Adam's step is lr * m_hat / (sqrt(v_hat) + eps): multiplying every gradient by P
    multiplies m_hat by P and sqrt(v_hat) by P, so the step stays the same, except where eps
    mattered (gradients near 1e-8, now P times larger, where eps matters even less). So
    the scale of the loss barely moves Adam's steps. The average still matters for (a)
    Adam's L2 weight decay, which is added to the gradient: with a summed loss the gradient
    is P times larger and the same weight_decay would do P times less; AdamW's decoupled
    decay, w *= 1 - lr * weight_decay, does not depend on the loss at all; (b) SGD, which
    tinyfcn keeps first-class (the paper recipe), whose step is proportional to the gradient;
    (c) the loss a run reports: a mean is comparable between image sizes, batches and
    datasets (log K at the start), a sum is not.

Q3. The weighted loss is minimised, at a pixel that is a digit with probability q, by the
    prediction p_digit = q w_d / (q w_d + (1 - q) w_0): the weights scale the odds. The
    arg-max picks the digit when p_digit > 1/2, that is when q w_d > (1 - q) w_0, or
    q > w_0 / (w_0 + w_d), about 0.05 / 1.05 = 0.05 instead of 0.5. The network then labels
    as digits many pixels it is not sure of: the share of pixels predicted as digits rises
    above its true share; pixel accuracy falls (background pixels, the vast majority, are
    the ones given away); and mean IoU rises when the network was collapsed to the
    background (the digit IoUs leave 0), but it can fall for a network that was already
    placing the digits well, because every digit's IoU pays for the background pixels
    painted as that digit.
"""
import numpy as np


def my_batch_norm_forward(x, gamma, beta, eps):
    """x (N, C, H, W), gamma and beta (C,), eps -> out (N, C, H, W), normalised with the batch's statistics."""
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)                       # biased: divided by m
    x_hat = (x - mean) / np.sqrt(var + eps)
    return gamma[None, :, None, None] * x_hat + beta[None, :, None, None]


def my_batch_norm_backward(dout, x, gamma, eps):
    """dout and x (N, C, H, W), gamma (C,), eps -> (dx (N, C, H, W), dgamma (C,), dbeta (C,)), training mode."""
    m = x.size // x.shape[1]
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    s = np.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + eps)
    x_hat = (x - mean) / s
    dbeta = dout.sum(axis=(0, 2, 3))
    dgamma = (dout * x_hat).sum(axis=(0, 2, 3))
    dx = gamma[None, :, None, None] / (m * s) * (m * dout - dbeta[None, :, None, None]
                                                 - x_hat * dgamma[None, :, None, None])
    return dx, dgamma, dbeta


def my_adam_step(w, grad, m, v, t, lr, beta1, beta2, eps):
    """Arrays w, grad, m, v of one shape, step number t >= 1 -> the new (w, m, v)."""
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
    return w - lr * m_hat / (np.sqrt(v_hat) + eps), m, v
