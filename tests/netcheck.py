"""The whole-network settings and checks shared by the model tests: the tiny and the VGG16 settings, crop
offsets, any input size, random weights, and a sparse float64 gradient check."""
import numpy as np

from tinyfcn import functional as F
from tinyfcn import nn
from tinyfcn.ops.gradcheck import sparse_gradient_check

TINY = dict(widths=(2, 3, 3, 4, 4), fc_width=4)
"""Every layer of an FCN at the smallest widths: cheap enough for whole-network checks."""

VGG16 = dict(widths=(1, 1, 1, 1, 1), fc_width=1, depths=(2, 2, 3, 3, 3), first_padding=100,
             fc6_kernel=7, fc6_padding=0, upsample_padding=False, ceil_mode=True)
"""The authors' VGG16 settings at width 1, so a test is cheap: the crop offsets do not depend on widths."""


def crop_offsets(model):
    """Layer name -> offset of every Crop of ``model`` that does not start at (0, 0)."""
    return {name: layer.offset for name, layer in model.layers.items() if isinstance(layer, nn.Crop) and any(layer.offset)}


def assert_any_size_in_same_size_out(model, sizes):
    """For a (2, 3, H, W) input of each size, scores (2, K, H, W) and an input gradient of the input's shape."""
    for H, W in sizes:
        x = np.random.default_rng(0).standard_normal((2, 3, H, W)).astype(np.float32)
        scores = model.forward(x)
        assert scores.shape == (2, model.config["num_classes"], H, W), (H, W)
        assert model.backward(np.ones_like(scores)).shape == x.shape


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
