"""The whole-network checks shared by the model tests: random weights, and a sparse float64 gradient check."""
import numpy as np

from tinyfcn import functional as F
from tinyfcn.ops.gradcheck import sparse_gradient_check


def randomize(model, seed):
    """Random weights everywhere (score layers included) so every gradient is non-zero."""
    rng = np.random.default_rng(seed)
    for v in model.params.values():
        v[...] = rng.standard_normal(v.shape) * 0.5


def whole_network_errors(model, size):
    """Worst relative error of every parameter tensor's gradient (6 sampled entries each) and of d input.

    ``model`` must be float64; dropout masks are replayed from the same generator state on
    every call, and the first four rows of one target are ignored (255).
    """
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, *size))
    target = rng.integers(0, 3, (2, *size))
    target[0, :4] = 255
    state = model.rng.bit_generator.state                           # same dropout masks on every call

    def loss(_):
        model.rng.bit_generator.state = state
        return F.softmax_cross_entropy(model.forward(x), target)[0]

    model.rng.bit_generator.state = state
    _, dscores = F.softmax_cross_entropy(model.forward(x), target)
    dx = model.backward(dscores)
    assert set(model.grads) == set(model.params)
    worst = {k: sparse_gradient_check(loss, p, model.grads[k], num_checks=6, seed=3) for k, p in model.params.items()}
    worst["input"] = sparse_gradient_check(loss, x, dx, num_checks=10, seed=4)
    return worst
