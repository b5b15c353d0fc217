"""Stochastic gradient descent with momentum, and learning-rate schedules.

Loss scale and learning rate
----------------------------
tinyfcn averages the loss over the valid pixels of a batch. The FCN reference summed
it instead, and trained with lr 1e-10 and momentum 0.99 at batch 1. The two are the
same optimisation up to two factors:

- a summed loss's gradient is the mean loss's gradient times the pixel count P
  (about 500 x 375 = 187,500 for a PASCAL image), so lr_sum * P plays the role of lr_mean;
- with momentum beta a constant gradient g moves the weights by lr * g / (1 - beta) per
  step in the long run, so only lr / (1 - beta) matters for the step size.

The reference's 1e-10 * 187,500 / (1 - 0.99) = 1.9e-3 per unit of mean gradient is
within a factor of ten of the everyday lr 1e-3 to 1e-2 with momentum 0.9
(1e-2 to 1e-1 per unit): a pixel count and 1/(1 - beta) apart.
"""
import numpy as np

from . import _kernels


class SGD:
    """SGD with momentum and weight decay, updating the parameter arrays in place (PyTorch's rule).

    ``g = grad + weight_decay * w``; ``v = momentum * v + g``;
    ``w -= lr * (g + momentum * v)`` with Nesterov momentum, else ``w -= lr * v``.

    Parameters
    ----------
    params : dict of name -> ndarray
        The model's :attr:`params`; the arrays are modified in place.
    lr : float
    momentum : float in [0, 1)
    weight_decay : float
        L2 penalty; applied to every parameter with a gradient (biases included, as in Caffe's default).
    nesterov : bool
    """

    def __init__(self, params, lr, momentum=0.9, weight_decay=5e-4, nesterov=False):
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(f"SGD: need lr > 0, 0 <= momentum < 1, weight_decay >= 0; "
                             f"got lr={lr}, momentum={momentum}, weight_decay={weight_decay}")
        if nesterov and momentum == 0:
            raise ValueError("SGD: Nesterov momentum needs momentum > 0")
        for name, w in params.items():
            if not (isinstance(w, np.ndarray) and w.flags.c_contiguous and w.flags.writeable):
                raise ValueError(f"SGD: parameter {name!r} must be a writeable C-contiguous array, "
                                 "so that it can be updated in place")
        self.params = params
        self.lr, self.momentum, self.weight_decay, self.nesterov = lr, momentum, weight_decay, nesterov
        self.velocity = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, grads):
        """Update every parameter that has an entry in ``grads`` (frozen layers have none)."""
        for name, grad in grads.items():
            w = self.params[name]
            if grad.shape != w.shape or grad.dtype != w.dtype:
                raise ValueError(f"SGD.step: gradient of {name!r} is {grad.dtype} {grad.shape}, "
                                 f"the parameter is {w.dtype} {w.shape}")
            _kernels.sgd_update(w.reshape(-1), np.ascontiguousarray(grad).reshape(-1),
                                self.velocity[name].reshape(-1), self.lr, self.momentum, self.weight_decay,
                                self.nesterov)

    def state_dict(self):
        """The momentum buffers, keyed like the parameters (a copy)."""
        return {k: v.copy() for k, v in self.velocity.items()}

    def load_state_dict(self, state):
        """Restore momentum buffers saved by :meth:`state_dict`; names and shapes must match."""
        for k, v in self.velocity.items():
            if k not in state or np.shape(state[k]) != v.shape:
                raise ValueError(f"SGD.load_state_dict: no momentum of shape {v.shape} for {k!r}")
            v[...] = state[k]


def constant(base_lr, step, total_steps):
    """The same learning rate throughout."""
    return base_lr


def step_decay(base_lr, step, total_steps, every=None, gamma=0.1):
    """Multiply by ``gamma`` every ``every`` steps (default: a third of the run)."""
    every = every or max(1, total_steps // 3)
    return base_lr * gamma ** (step // every)


def poly(base_lr, step, total_steps, power=0.9):
    """``base_lr * (1 - step / total_steps) ** power`` (DeepLab's and torchvision's segmentation recipe)."""
    return base_lr * max(0.0, 1 - step / total_steps) ** power


SCHEDULES = {"constant": constant, "step": step_decay, "poly": poly}
"""name -> ``f(base_lr, step, total_steps)``, the learning rate for a step (counted from 0)."""
