"""Stochastic gradient descent with momentum, and learning-rate schedules.

Loss scale and learning rate
----------------------------
Only the *effective step* -- how far the weights move per unit of gradient of the
pixel-mean loss -- can be compared between two recipes. Three factors set it:

- **pixel count P**: a loss *summed* over pixels has P times the gradient of the
  pixel-mean loss, so ``lr_sum * P`` plays the role of ``lr_mean``;
- **momentum beta**: with a steady gradient g, momentum moves the weights by
  ``lr * g / (1 - beta)`` per step in the long run;
- **batch B**: Caffe's ``normalize: false`` divides the summed loss by B only, so at
  B = 1 nothing is divided; a pixel-mean over the batch divides by B*P, so B changes
  only the gradient's noise, not the effective step.

Side by side (effective step = lr * P / (1 - beta) for a summed loss, lr / (1 - beta) for a mean):

=========================  ====  =====  =====  =====  ==============  ================
recipe                     loss  lr     beta   batch  effective step  vs reference 32s
=========================  ====  =====  =====  =====  ==============  ================
FCN-32s reference (Caffe)  sum   1e-10  0.99   1      1.9e-3          1x
FCN-16s reference          sum   1e-12  0.99   1      1.9e-5          0.01x
FCN-8s reference (staged)  sum   1e-14  0.99   1      1.9e-7          0.0001x
everyday PyTorch recipe    mean  0.01   0.9    8-16   0.1             53x
tinyfcn default            mean  0.03   0.9    8      0.3             160x
=========================  ====  =====  =====  =====  ==============  ================

P = 500 x 375 = 187,500 is a typical PASCAL image. The reference fine-tunes an
ImageNet-trained VGG16 and lowers lr 100x at each stage (each new skip is a small
correction); tinyfcn trains tiny networks from scratch on toy data, where a step ~160x
larger is what converges in a few epochs (measured: ``tinyfcn train`` reaches the
README's accuracy with it).

Biases: the reference gives every bias twice the learning rate and no weight decay
(``lr_mult: 2, decay_mult: 0``); PyTorch's SGD, and tinyfcn's by default, treat biases
like weights. :class:`SGD` offers Caffe's rule as ``bias_lr_mult=2, bias_decay_mult=0``.
"""
import numpy as np

from .. import threads
from ..ops import _kernels


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
        L2 penalty, applied to every parameter with a gradient (biases scaled by ``bias_decay_mult``).
    nesterov : bool
    bias_lr_mult, bias_decay_mult : float
        Multipliers of lr and weight_decay for parameters named ``*.bias`` (Caffe's
        ``lr_mult``/``decay_mult``). The FCN reference uses 2 and 0; the default 1 and 1 is PyTorch's rule.
    """

    def __init__(self, params, lr, momentum=0.9, weight_decay=5e-4, nesterov=False, bias_lr_mult=1.0,
                 bias_decay_mult=1.0):
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0 or bias_lr_mult < 0 or bias_decay_mult < 0:
            raise ValueError(f"SGD: need lr > 0, 0 <= momentum < 1, weight_decay >= 0 and non-negative bias "
                             f"multipliers; got lr={lr}, momentum={momentum}, weight_decay={weight_decay}, "
                             f"bias_lr_mult={bias_lr_mult}, bias_decay_mult={bias_decay_mult}")
        if nesterov and momentum == 0:
            raise ValueError("SGD: Nesterov momentum needs momentum > 0")
        for name, w in params.items():
            if not (isinstance(w, np.ndarray) and w.flags.c_contiguous and w.flags.writeable):
                raise ValueError(f"SGD: parameter {name!r} must be a writeable C-contiguous array, "
                                 "so that it can be updated in place")
        self.params = params
        self.lr, self.momentum, self.weight_decay, self.nesterov = lr, momentum, weight_decay, nesterov
        self.bias_lr_mult, self.bias_decay_mult = bias_lr_mult, bias_decay_mult
        self.velocity = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, grads):
        """Update every parameter that has an entry in ``grads`` (frozen layers have none).

        Every gradient is checked before any parameter changes; the parameters are then
        updated side by side on tinyfcn's threads (each update touches only its own arrays).
        """
        names = list(grads)
        for name in names:
            w, grad = self.params[name], grads[name]
            if grad.shape != w.shape or grad.dtype != w.dtype:
                raise ValueError(f"SGD.step: gradient of {name!r} is {grad.dtype} {grad.shape}, "
                                 f"the parameter is {w.dtype} {w.shape}")

        def update(i):
            name = names[i]
            bias = name.endswith(".bias")
            _kernels.sgd_update(self.params[name].reshape(-1), np.ascontiguousarray(grads[name]).reshape(-1),
                                self.velocity[name].reshape(-1), self.lr * (self.bias_lr_mult if bias else 1),
                                self.momentum, self.weight_decay * (self.bias_decay_mult if bias else 1),
                                self.nesterov)

        threads.parallel_for(len(names), update)

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
