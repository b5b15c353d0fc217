"""The gradient-check table: every op, every parameter, over a grid of configurations.

Each ``check_*`` function builds one small float64 problem, runs the op's backward
pass, and returns the :func:`~tinyfcn.ops.gradcheck.rel_error` against centred
differences for the input and every parameter. ``CHECKS`` lists each op with its
grid; :func:`table` runs them all. The test suite asserts every entry, and
``tinyfcn gradcheck`` prints the table.

The grid covers kernel sizes 1-5, strides 1-3 and paddings 0-2, always with
non-square kernels, strides and paddings, an odd-sized non-square input and a
batch of 2. Inputs avoid the points where an op has no derivative: ReLU inputs
stay away from 0 and max-pool inputs are distinct and well separated, so a step of
1e-5 never changes which value wins a window. Batch norm is checked in training and in
evaluation mode, on one image of many pixels and on 1x1 maps of a few images.
"""
import itertools

import numpy as np

from ..labels import IGNORE
from . import functional as F
from . import nn
from .gradcheck import adjoint_error, numerical_gradient, rel_error
from .sizes import conv2d_output_size, conv_transpose2d_output_size, pool2d_output_size

TOLERANCE = 1e-7
"""Largest relative error accepted for any op (float64, h = 1e-5)."""


def _grid():
    """(kernel, stride, padding) triples: kernel k x (6-k), stride (s, 1 + s % 3), padding (p, (p+1) % 3)."""
    for k, s, p in itertools.product(range(1, 6), range(1, 4), range(3)):
        yield (k, 6 - k), (s, 1 + s % 3), (p, (p + 1) % 3)


def _distinct(shape, rng):
    """Values that are all different and at least 0.01 apart, in random order (no max-pool ties)."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01 - 0.5).astype(np.float64)


def conv2d_configs():
    x_shape = (2, 3, 7, 6)
    return [dict(x_shape=x_shape, kernel=k, stride=s, padding=p) for k, s, p in _grid()
            if min(conv2d_output_size(x_shape[2:], k, s, p)) >= 1]


def check_conv2d(x_shape, kernel, stride, padding, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((4, x_shape[1], *kernel))
    b = rng.standard_normal(4)
    out, cache = F.conv2d_forward(x, w, b, stride, padding)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = F.conv2d_backward(dout, cache)
    return {
        "x": rel_error(dx, numerical_gradient(lambda v: F.conv2d_forward(v, w, b, stride, padding)[0], x, dout)),
        "weight": rel_error(dw, numerical_gradient(lambda v: F.conv2d_forward(x, v, b, stride, padding)[0], w, dout)),
        "bias": rel_error(db, numerical_gradient(lambda v: F.conv2d_forward(x, w, v, stride, padding)[0], b, dout)),
    }


def conv_transpose2d_configs():
    x_shape = (2, 3, 5, 4)
    return [dict(x_shape=x_shape, kernel=k, stride=s, padding=p) for k, s, p in _grid()
            if min(conv_transpose2d_output_size(x_shape[2:], k, s, p)) >= 1]


def check_conv_transpose2d(x_shape, kernel, stride, padding, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((x_shape[1], 4, *kernel))
    b = rng.standard_normal(4)
    f = F.conv_transpose2d_forward
    out, cache = f(x, w, b, stride, padding)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = F.conv_transpose2d_backward(dout, cache)
    return {
        "x": rel_error(dx, numerical_gradient(lambda v: f(v, w, b, stride, padding)[0], x, dout)),
        "weight": rel_error(dw, numerical_gradient(lambda v: f(x, v, b, stride, padding)[0], w, dout)),
        "bias": rel_error(db, numerical_gradient(lambda v: f(x, w, v, stride, padding)[0], b, dout)),
    }


def check_conv_adjoint(x_shape, kernel, stride, padding, seed=0):
    """<conv2d(x, W), y> = <x, conv_transpose2d(y, W)> for the same weight array, stride and padding.

    Both maps are linear in their input when the bias is None. The transposed
    convolution's output size can be smaller than x when the convolution dropped
    rows; only then are x's last rows unreachable, and the check uses x's reachable size.
    """
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, x_shape[1], *kernel))
    out_size = conv2d_output_size(x_shape[2:], kernel, stride, padding)
    reach = conv_transpose2d_output_size(out_size, kernel, stride, padding)
    x = rng.standard_normal((*x_shape[:2], *reach))
    y = rng.standard_normal((x_shape[0], 4, *out_size))
    return {"adjoint": adjoint_error(lambda v: F.conv2d_forward(v, w, None, stride, padding)[0],
                                     lambda v: F.conv_transpose2d_forward(v, w, None, stride, padding)[0], x, y)}


def max_pool2d_configs():
    x_shape = (2, 3, 7, 6)
    configs = []
    for (k, s, p), ceil_mode in itertools.product(_grid(), (False, True)):
        p = (min(p[0], k[0] // 2), min(p[1], k[1] // 2))
        if min(pool2d_output_size(x_shape[2:], k, s, p, ceil_mode)) >= 1:
            configs.append(dict(x_shape=x_shape, kernel=k, stride=s, padding=p, ceil_mode=ceil_mode))
    return configs


def check_max_pool2d(x_shape, kernel, stride, padding, ceil_mode, seed=0):
    rng = np.random.default_rng(seed)
    x = _distinct(x_shape, rng)
    f = F.max_pool2d_forward
    out, cache = f(x, kernel, stride, padding, ceil_mode)
    dout = rng.standard_normal(out.shape)
    dx = F.max_pool2d_backward(dout, cache)
    return {"x": rel_error(dx, numerical_gradient(lambda v: f(v, kernel, stride, padding, ceil_mode)[0], x, dout))}


def max_unpool2d_configs():
    return [dict(x_shape=(2, 3, 7, 6), kernel=k, stride=s) for k, s in [(2, 2), (3, 3), (3, 2), ((2, 3), (1, 2))]]


def check_max_unpool2d(x_shape, kernel, stride, seed=0):
    """Unpool the output of a max-pool back to its input size; overlapping windows (stride < kernel) included."""
    rng = np.random.default_rng(seed)
    pooled, (indices, _, _) = F.max_pool2d_forward(_distinct(x_shape, rng), kernel, stride)
    out, cache = F.max_unpool2d_forward(pooled, indices, x_shape[2:])
    dout = rng.standard_normal(out.shape)
    dx = F.max_unpool2d_backward(dout, cache)
    num = numerical_gradient(lambda v: F.max_unpool2d_forward(v, indices, x_shape[2:])[0], pooled, dout)
    return {"x": rel_error(dx, num)}


def relu_configs():
    return [dict(x_shape=s) for s in [(2, 3, 7, 6), (1, 1, 1, 1), (3, 5)]]


def check_relu(x_shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.1, 1.0, x_shape) * rng.choice([-1.0, 1.0], x_shape)   # |x| >= 0.1: no kink
    out, cache = F.relu_forward(x)
    dout = rng.standard_normal(out.shape)
    return {"x": rel_error(F.relu_backward(dout, cache), numerical_gradient(lambda v: F.relu_forward(v)[0], x, dout))}


def softmax_cross_entropy_configs():
    return [dict(scores_shape=s, reduction=r, ignored=i, weighted=w) for s, r, i, w in itertools.product(
        [(2, 4, 3, 5), (1, 2, 1, 1), (3, 11, 4, 3)], ("mean", "sum"), (0.0, 0.3, 1.0), (False, True))]


def check_softmax_cross_entropy(scores_shape, reduction, ignored, weighted, seed=0):
    """Loss gradient with a fraction ``ignored`` of the pixels set to the ignore label (1.0: all of them).

    ``weighted`` adds class weights in [0.5, 2), with the last class's weight 0: its pixels count in
    neither the loss nor, for the mean, its divisor.
    """
    rng = np.random.default_rng(seed)
    N, K, H, W = scores_shape
    scores = rng.standard_normal(scores_shape) * 3
    target = rng.integers(0, K, (N, H, W))
    target[rng.random((N, H, W)) < ignored] = IGNORE
    weights = None
    if weighted:
        weights = rng.uniform(0.5, 2.0, K)
        weights[-1] = 0.0
    _, dscores = F.softmax_cross_entropy(scores, target, IGNORE, reduction, weights)
    num = numerical_gradient(lambda v: F.softmax_cross_entropy(v, target, IGNORE, reduction, weights)[0], scores)
    return {"scores": rel_error(dscores, num)}


def batch_norm2d_configs():
    """Odd non-square sizes, one image with many pixels, one pixel with a few images; both modes."""
    shapes = [(2, 3, 7, 6), (1, 4, 3, 5), (3, 2, 1, 1), (5, 1, 2, 3)]
    return [dict(x_shape=s, training=t) for s, t in itertools.product(shapes, (True, False))]


def check_batch_norm2d(x_shape, training, seed=0):
    """Batch norm's input, weight (gamma) and bias (beta) gradients, in training mode (the batch's
    statistics, so every input of a channel moves every output) and in evaluation mode (fixed running statistics)."""
    rng = np.random.default_rng(seed)
    C = x_shape[1]
    x = rng.standard_normal(x_shape) * 1.5 + 0.5
    gamma, beta = rng.uniform(0.5, 2.0, C), rng.standard_normal(C)
    running = rng.standard_normal(C), rng.uniform(0.5, 2.0, C)

    def f(x, gamma, beta):                  # fresh running statistics each call: training updates them in place
        return F.batch_norm2d_forward(x, gamma, beta, running[0].copy(), running[1].copy(), training)[0]

    out, cache = F.batch_norm2d_forward(x, gamma, beta, running[0].copy(), running[1].copy(), training)
    dout = rng.standard_normal(out.shape)
    dx, dgamma, dbeta = F.batch_norm2d_backward(dout, cache)
    return {
        "x": rel_error(dx, numerical_gradient(lambda v: f(v, gamma, beta), x, dout)),
        "weight": rel_error(dgamma, numerical_gradient(lambda v: f(x, v, beta), gamma, dout)),
        "bias": rel_error(dbeta, numerical_gradient(lambda v: f(x, gamma, v), beta, dout)),
    }


def layer_configs():
    return [dict(layer="Dropout", arg=0), dict(layer="Crop", arg=0),
            dict(layer="Add", arg=0), dict(layer="Add", arg=1),
            dict(layer="Concat", arg=0), dict(layer="Concat", arg=1)]


def check_layer(layer, arg, seed=0):
    """The layers without a functional twin: the gradient of input number ``arg`` through the nn object."""
    rng = np.random.default_rng(seed)
    x, y, z = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((2, 1, 7, 6))
    make, inputs = {
        # a generator with the same seed every time: every Dropout draws the same mask
        "Dropout": (lambda: nn.Dropout(0.4, rng=np.random.default_rng(seed)), [x]),
        "Crop": (lambda: nn.Crop((1, 2)), [x, (4, 3)]),
        "Add": (nn.Add, [x, y]),
        "Concat": (nn.Concat, [x, z]),
    }[layer]
    module = make()
    out = module.forward(*inputs)
    dout = rng.standard_normal(out.shape)
    grads = module.backward(dout)
    analytic = grads[arg] if isinstance(grads, tuple) else grads

    def f(v):
        return make().forward(*inputs[:arg], v, *inputs[arg + 1:])

    return {f"input {arg}": rel_error(analytic, numerical_gradient(f, inputs[arg], dout))}


def new_layer_configs():
    return [dict(layer="Linear", bias=True), dict(layer="Linear", bias=False), dict(layer="Flatten", bias=False),
            dict(layer="MaxUnpool2d(pool)", bias=False)]


def check_new_layer(layer, bias, seed=0):
    """Linear (input, weight and bias), Flatten, and MaxUnpool2d with the switches of a ceil-mode max-pool."""
    rng = np.random.default_rng(seed)
    if layer == "MaxUnpool2d(pool)":
        pool = nn.MaxPool2d(2, ceil_mode=True)
        x = pool.forward(_distinct((2, 3, 7, 5), rng))
        make = lambda: nn.MaxUnpool2d(pool)                           # noqa: E731 (the same pool, the same switches)
    elif layer == "Flatten":
        x, make = rng.standard_normal((2, 3, 4, 5)), nn.Flatten
    else:
        x = rng.standard_normal((5, 7))
        weights = {k: rng.standard_normal(v.shape) for k, v in nn.Linear(7, 4, bias=bias, dtype=np.float64).params.items()}

        def make():
            module = nn.Linear(7, 4, bias=bias, dtype=np.float64)
            module.params.update(weights)           # the same arrays: perturbing one perturbs every copy
            return module
    module = make()
    out = module.forward(x)
    dout = rng.standard_normal(out.shape)
    errors = {"x": rel_error(module.backward(dout), numerical_gradient(lambda v: make().forward(v), x, dout))}
    for name, p in module.params.items():
        errors[name] = rel_error(module.grads[name], numerical_gradient(lambda v: make().forward(x), p, dout))
    return errors


CHECKS = {
    "conv2d": (conv2d_configs, check_conv2d),
    "conv_transpose2d": (conv_transpose2d_configs, check_conv_transpose2d),
    "conv2d / conv_transpose2d adjoint": (conv2d_configs, check_conv_adjoint),
    "max_pool2d": (max_pool2d_configs, check_max_pool2d),
    "max_unpool2d": (max_unpool2d_configs, check_max_unpool2d),
    "relu": (relu_configs, check_relu),
    "softmax_cross_entropy": (softmax_cross_entropy_configs, check_softmax_cross_entropy),
    "batch_norm2d": (batch_norm2d_configs, check_batch_norm2d),
    "Dropout / Crop / Add / Concat": (layer_configs, check_layer),
    "Linear / Flatten / MaxUnpool2d(pool)": (new_layer_configs, check_new_layer),
}
"""op name -> (function listing its configurations, function checking one configuration)."""


def table():
    """Run every check. Returns a list of ``(op, number of configurations, worst relative error)``."""
    rows = []
    for op, (configs, check) in CHECKS.items():
        cases = configs()
        worst = max(max(check(**case).values()) for case in cases)
        rows.append((op, len(cases), worst))
    return rows


def format_table(rows):
    """The table as text, one op per line, with a verdict against :data:`TOLERANCE`."""
    lines = [f"{'op':36s} {'configs':>7s} {'worst rel. error':>17s}  verdict",
             "-" * 70]
    for op, n, worst in rows:
        lines.append(f"{op:36s} {n:7d} {worst:17.2e}  {'ok' if worst < TOLERANCE else 'FAIL'}")
    return "\n".join(lines)
