"""Optimizers -- SGD with momentum, Adam and AdamW -- and learning-rate schedules.

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
tinyfcn "paper" recipe   mean  0.03   0.9    8      0.3             160x
=========================  ====  =====  =====  =====  ==============  ================

P = 500 x 375 = 187,500 is a typical PASCAL image. The reference fine-tunes an
ImageNet-trained VGG16 and lowers lr 100x at each stage (each new skip is a small
correction); tinyfcn trains tiny networks from scratch on toy data, where a step ~160x
larger is what converges in a few epochs (measured: ``tinyfcn train --recipe paper`` reaches
tinyfcn 0.1's accuracy with it; ``docs/recipe.md`` has the figures). The default recipe
trains with AdamW instead, whose step does not follow these factors (below).

Biases: the reference gives every bias twice the learning rate and no weight decay
(``lr_mult: 2, decay_mult: 0``); PyTorch's SGD, and tinyfcn's by default, treat biases
like weights. :class:`SGD` offers Caffe's rule as ``bias_lr_mult=2, bias_decay_mult=0``.

Adam and AdamW
--------------
Adam gives every weight its own step size: it keeps running averages of the gradient,
m, and of its square, v, and moves each weight by ``lr * m / sqrt(v)`` (both corrected
for starting at 0, plus a tiny eps). The ratio stays the same when the gradient is
multiplied by any factor, so every weight moves by about lr per step (exactly lr while
its gradient stays the same), whatever the gradient's scale: pixel count, loss
normalisation and momentum, the factors above, hardly change Adam's steps, and its lr
is the step itself (1e-3 is the usual start). Adam's weight decay is added to the
gradient, so it is divided by sqrt(v) too: weights with large gradients are barely
decayed. AdamW decouples the two: it shrinks every weight directly,
``w *= 1 - lr * weight_decay``, before the moment update, at the same rate for all.
"""
import numpy as np

from .. import threads
from ..ops import _kernels


def _origin(state):
    """Which optimizer a state dict is from, by its keys: Adam's start ``exp_avg/``..., SGD's are parameter names."""
    return "Adam or AdamW" if any(k.startswith("exp_avg/") for k in state) else "SGD"


class Optimizer:
    """The part every optimizer shares: parameter and gradient checks, the threaded loop, the state.

    A subclass states only its update (``_update``, on one parameter) and its state (``_state``,
    a flat dict of the live arrays). ``lr`` is a plain attribute: a schedule sets it between steps.

    Parameters
    ----------
    params : dict of name -> ndarray
        The model's :attr:`params`; the arrays are modified in place.
    lr : float
    """

    def __init__(self, params, lr):
        for name, w in params.items():
            if not (isinstance(w, np.ndarray) and w.flags.c_contiguous and w.flags.writeable):
                raise ValueError(f"{type(self).__name__}: parameter {name!r} must be a writeable C-contiguous array, "
                                 "so that it can be updated in place")
        self.params, self.lr = params, lr

    def step(self, grads):
        """Update every parameter that has an entry in ``grads`` (frozen layers have none).

        Every gradient is checked before any parameter changes; the parameters are then
        updated side by side on tinyfcn's threads (each update touches only its own arrays).
        """
        who = f"{type(self).__name__}.step"
        names = list(grads)
        for name in names:
            if name not in self.params:
                raise ValueError(f"{who}: a gradient for {name!r}, which is not one of the optimizer's parameters")
            w, grad = self.params[name], grads[name]
            if not isinstance(grad, np.ndarray):
                raise TypeError(f"{who}: gradient of {name!r} must be a numpy array, got {type(grad).__name__}")
            if grad.shape != w.shape or grad.dtype != w.dtype:
                raise ValueError(f"{who}: gradient of {name!r} is {grad.dtype} {grad.shape}, "
                                 f"the parameter is {w.dtype} {w.shape}")
        threads.parallel_for(len(names), lambda i: self._update(
            names[i], self.params[names[i]].reshape(-1), np.ascontiguousarray(grads[names[i]]).reshape(-1)))

    def _update(self, name, w, grad):
        """Apply one step to parameter ``name``; ``w`` and ``grad`` are 1-D views of it and its gradient."""
        raise NotImplementedError

    def _state(self):
        """key -> the state array itself (the one :meth:`step` updates), for every parameter."""
        raise NotImplementedError

    def state_dict(self):
        """A copy of the state: a flat dict of key -> array (the layout is in the class's docstring)."""
        return {k: v.copy() for k, v in self._state().items()}

    def load_state_dict(self, state):
        """Restore a state saved by :meth:`state_dict`; keys, shapes and kinds must match (else nothing changes).

        Raises
        ------
        ValueError
            Naming the first missing, unexpected or wrongly shaped key, or the optimizer the state is from.
        """
        who = f"{type(self).__name__}.load_state_dict"
        own = self._state()
        if state and _origin(state) != _origin(own):
            raise ValueError(f"{who}: this is the state of {_origin(state)}, not of {type(self).__name__}; "
                             "continue with the optimizer that saved it")
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if missing or unexpected:
            first = f"missing key {missing[0]!r}" if missing else f"unexpected key {unexpected[0]!r}"
            raise ValueError(f"{who}: {first} ({len(missing)} missing, {len(unexpected)} unexpected); "
                             "is this the state of another model?")
        for k, v in own.items():
            got = np.asarray(state[k])
            if got.shape != v.shape or got.dtype.kind != v.dtype.kind:
                raise ValueError(f"{who}: {k!r} is {got.dtype} {got.shape}, expected {v.dtype} {v.shape}")
        for k, v in own.items():
            v[...] = state[k]


class SGD(Optimizer):
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

    Attributes
    ----------
    velocity : dict of name -> ndarray
        The momentum buffers, keyed like the parameters; they are the whole state (:meth:`state_dict`).
    """

    def __init__(self, params, lr, momentum=0.9, weight_decay=5e-4, nesterov=False, bias_lr_mult=1.0,
                 bias_decay_mult=1.0):
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0 or bias_lr_mult < 0 or bias_decay_mult < 0:
            raise ValueError(f"SGD: need lr > 0, 0 <= momentum < 1, weight_decay >= 0 and non-negative bias "
                             f"multipliers; got lr={lr}, momentum={momentum}, weight_decay={weight_decay}, "
                             f"bias_lr_mult={bias_lr_mult}, bias_decay_mult={bias_decay_mult}")
        if nesterov and momentum == 0:
            raise ValueError("SGD: Nesterov momentum needs momentum > 0")
        super().__init__(params, lr)
        self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, nesterov
        self.bias_lr_mult, self.bias_decay_mult = bias_lr_mult, bias_decay_mult
        self.velocity = {k: np.zeros_like(v) for k, v in params.items()}

    def _update(self, name, w, grad):
        bias = name.endswith(".bias")
        _kernels.sgd_update(w, grad, self.velocity[name].reshape(-1), self.lr * (self.bias_lr_mult if bias else 1),
                            self.momentum, self.weight_decay * (self.bias_decay_mult if bias else 1), self.nesterov)

    def _state(self):
        return self.velocity


class Adam(Optimizer):
    """Adam, updating the parameter arrays in place (PyTorch's rule; weight decay as an L2 term in the gradient).

    Per parameter, with its own step count t (counted when it has a gradient, so 1 on its first update):
    ``g = grad + weight_decay * w``; ``m = beta1 * m + (1 - beta1) * g``; ``v = beta2 * v + (1 - beta2) * g**2``;
    ``w -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)``.
    A parameter with no gradient in a step is not touched and keeps its count, as in PyTorch.

    Parameters
    ----------
    params : dict of name -> ndarray
        The model's :attr:`params`; the arrays are modified in place.
    lr : float
        The step: with a steady gradient, every weight moves by lr per step.
    betas : (float, float) in [0, 1)
        Decay rates of the running averages of the gradient and of its square.
    eps : float
        Added to the denominator, after the square root.
    weight_decay : float
        L2 penalty, added to the gradient of every parameter with a gradient.

    Attributes
    ----------
    exp_avg, exp_avg_sq : dict of name -> ndarray
        The running averages m and v, keyed like the parameters.
    steps : dict of name -> 0-d int64 ndarray
        Each parameter's step count t.

    :meth:`state_dict` holds all three, keyed ``exp_avg/<param>``, ``exp_avg_sq/<param>`` and ``step/<param>``.
    """

    decoupled = False
    """False: weight decay is added to the gradient (Adam); True: it shrinks the weights directly (AdamW)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        name = type(self).__name__
        if np.shape(betas) != (2,):
            raise ValueError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        beta1, beta2 = betas
        if not (lr > 0 and 0 <= beta1 < 1 and 0 <= beta2 < 1 and eps > 0 and weight_decay >= 0):
            raise ValueError(f"{name}: need lr > 0, 0 <= beta1 < 1, 0 <= beta2 < 1, eps > 0 and weight_decay >= 0; "
                             f"got lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay = (beta1, beta2), eps, weight_decay
        self.exp_avg = {k: np.zeros_like(v) for k, v in params.items()}
        self.exp_avg_sq = {k: np.zeros_like(v) for k, v in params.items()}
        self.steps = {k: np.zeros((), np.int64) for k in params}

    def _update(self, name, w, grad):
        self.steps[name] += 1                   # in place: the 0-d array stays the one in the state
        _kernels.adam_update(w, grad, self.exp_avg[name].reshape(-1), self.exp_avg_sq[name].reshape(-1), self.lr,
                             *self.betas, self.eps, self.weight_decay, self.decoupled, int(self.steps[name]))

    def _state(self):
        return {**{f"exp_avg/{k}": v for k, v in self.exp_avg.items()},
                **{f"exp_avg_sq/{k}": v for k, v in self.exp_avg_sq.items()},
                **{f"step/{k}": v for k, v in self.steps.items()}}


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay (PyTorch's rule).

    As :class:`Adam`, but with ``g = grad``, and every parameter with a gradient first shrinks,
    ``w *= 1 - lr * weight_decay``; the decay then does not pass through the moments, so every
    weight decays at the same rate whatever its gradient. Same parameters and state as
    :class:`Adam`; ``weight_decay`` defaults to PyTorch's 1e-2.
    """

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
"""name -> optimizer class; a checkpoint records its optimizer by this name."""


def build_optimizer(name, params, lr, weight_decay, momentum=0.9, nesterov=False):
    """The optimizer called ``name`` ("sgd", "adam" or "adamw") over ``params``.

    ``momentum`` and ``nesterov`` are SGD's; Adam and AdamW keep their betas (0.9, 0.999) and eps (1e-8).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")
    if name == "sgd":
        return SGD(params, lr, momentum, weight_decay, nesterov)
    return OPTIMIZERS[name](params, lr, weight_decay=weight_decay)


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


def warmed_up(schedule, warmup_steps):
    """``schedule`` with a linear warm-up: the rate times ``(step + 1) / warmup_steps`` over the first steps.

    Composes with every schedule; ``warmup_steps = 0`` returns ``schedule`` itself.
    """
    if warmup_steps <= 0:
        return schedule

    def rate(base_lr, step, total_steps):
        return schedule(base_lr, step, total_steps) * min(1.0, (step + 1) / warmup_steps)

    return rate
