"""Notebook 4, softmax and the loss: the exercises solved, and the answers to the questions.

Q1. The gradient of a summed loss is |V| times the gradient of the mean (|V| = the counted
    pixels), and so is every SGD step at the same learning rate. With a sum, the right
    learning rate depends on the image size (a 500x375 image has 187,500 pixels, a 64x64
    one 4,096), on how many pixels are ignored, and on the batch size if the batch is
    summed too; the reference needed lr = 1e-10 for that reason. The mean removes all
    three: one learning rate works for any image size, crop, ignore mask or batch.

Q2. J(w) = L(w) + (lambda / 2) ||w||^2, over every parameter the optimizer decays. A weight
    whose loss gradient is always 0 gets g = lambda * w, so plain SGD does
    w <- w - eta * lambda * w = (1 - eta * lambda) w: it shrinks geometrically towards 0, by
    the factor (1 - eta * lambda) per step. The plotted loss is L alone; SGD lowers J, and
    can lower it by shrinking the weights at the price of a slightly higher L, so L may rise
    (or stop falling) while J falls.

Q3. All-zero scores give every class probability 1/K at every pixel, so the loss is log K:
    log 21 = 3.04 on VOC, log 4 = 1.39 on the shapes. A first loss far above log K means the
    initial scores are large and confidently wrong: an initialisation or input scale that
    is off (e.g. unnormalised pixels in 0-255), or score layers that do not start at zero.
"""
import numpy as np

IGNORE = 255


def my_softmax(scores):
    """scores (N, K, H, W) -> probabilities (N, K, H, W), summing to 1 along axis 1."""
    e = np.exp(scores - scores.max(axis=1, keepdims=True))   # the largest exponent is e^0 = 1: no overflow
    return e / e.sum(axis=1, keepdims=True)


def my_softmax_cross_entropy(scores, target, reduction):
    """scores (N, K, H, W), integer target (N, H, W), "mean" or "sum" -> (loss, dscores)."""
    N, K, H, W = scores.shape
    counted = target != IGNORE                                               # (N, H, W)
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_q = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))     # log-softmax, (N, K, H, W)
    t = np.where(counted, target, 0)                                         # any class at ignored pixels
    log_q_t = np.take_along_axis(log_q, t[:, None], axis=1)[:, 0]            # (N, H, W)
    loss = -log_q_t[counted].sum()
    dscores = np.exp(log_q)
    np.put_along_axis(dscores, t[:, None], np.take_along_axis(dscores, t[:, None], axis=1) - 1, axis=1)
    dscores *= counted[:, None]                                              # 0 at ignored pixels
    if reduction == "mean" and counted.any():
        loss, dscores = loss / counted.sum(), dscores / counted.sum()
    return float(loss), dscores
