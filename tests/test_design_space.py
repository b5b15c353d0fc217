"""The design space of the FCN text: downsampling, upsampling and fusion switches, and convolutionalization."""
import numpy as np
import pytest

from tinyfcn import functional as F
from tinyfcn import nn
from tinyfcn.gradcheck import sparse_gradient_check
from tinyfcn.models import (FCN8s, FCN16s, FCN32s, Classifier, build, convolutionalize, from_classifier, grow,
                            last_map_size)

VGG16 = dict(widths=(1, 1, 1, 1, 1), fc_width=1, depths=(2, 2, 3, 3, 3), first_padding=100,
             fc6_kernel=7, fc6_padding=0, upsample_padding=False, ceil_mode=True)
TINY = dict(widths=(2, 3, 3, 4, 4), fc_width=4)
SIZES = [(1, 1), (35, 29), (100, 31)]

# every option away from FCN's defaults, with the variants it applies to
OPTIONS = {
    "conv": ([FCN32s, FCN16s, FCN8s], dict(downsample="conv")),
    "unpool": ([FCN32s], dict(upsample="unpool")),
    "concat": ([FCN16s, FCN8s], dict(fusion="concat")),
    "conv+concat": ([FCN8s], dict(downsample="conv", fusion="concat")),
    "fc6-2x2": ([FCN32s, FCN8s], dict(fc6_kernel=2, fc6_padding=1)),
}
CASES = [(name, cls) for name, (classes, _) in OPTIONS.items() for cls in classes]


def _randomize(model, seed):
    rng = np.random.default_rng(seed)
    for v in model.params.values():
        v[...] = rng.standard_normal(v.shape) * 0.5


def _vgg16(options):
    config = {**VGG16, **options}
    if options.get("upsample") == "unpool":
        config["fc6_padding"] = 3                                    # the decoder needs fc6 to keep pool5's size
    return config


@pytest.mark.parametrize("name,cls", CASES)
@pytest.mark.parametrize("vgg", [False, True], ids=["tiny", "vgg16-settings"])
def test_every_option_takes_any_input_size(name, cls, vgg):
    options = OPTIONS[name][1]
    if vgg and "fc6_kernel" in options:
        pytest.skip("the VGG16 settings fix fc6 at 7x7")
    model = cls(3, **(_vgg16(options) if vgg else {**TINY, **options}))
    for H, W in SIZES:
        x = np.random.default_rng(0).standard_normal((2, 3, H, W)).astype(np.float32)
        scores = model.forward(x)
        assert scores.shape == (2, 3, H, W)
        assert model.backward(np.ones_like(scores)).shape == x.shape


def test_crop_offsets_come_from_the_coordinate_maps():
    def offsets(model):
        return {n: l.offset for n, l in model.layers.items() if isinstance(l, nn.Crop) and any(l.offset)}
    # stride-2 convolutions sample at even pixels: the (2s-1)-tap upsampling lands s - 1 pixels early
    assert offsets(FCN8s(3, **TINY, downsample="conv")) == {"upscore2c": (1, 1), "upscore_pool4c": (1, 1),
                                                            "score": (7, 7)}
    assert offsets(FCN8s(3, **VGG16, fusion="concat")) == {"pool4c": (5, 5), "pool3c": (9, 9), "score": (31, 31)}
    assert offsets(FCN32s(3, **_vgg16(dict(upsample="unpool")))) == {"score": (99, 99)}   # conv1_1's padding
    conv = FCN32s(3, **TINY, downsample="conv")
    assert conv.layers["upscore"].params["weight"].shape[2:] == (63, 63)
    assert isinstance(conv.layers["pool3_conv"], nn.Conv2d) and conv.layers["pool3_conv"].stride == (2, 2)


@pytest.mark.parametrize("cls,options,size", [
    (FCN8s, dict(downsample="conv"), (35, 29)),
    (FCN32s, dict(upsample="unpool"), (35, 29)),
    (FCN8s, dict(fusion="concat"), (35, 29)),
    (FCN16s, dict(downsample="conv", fusion="concat"), (33, 30)),
    (FCN8s, dict(fc6_kernel=2, fc6_padding=1), (35, 29)),
], ids=["conv", "unpool", "concat", "conv+concat-16s", "fc6-2x2"])
def test_whole_network_gradient_check(cls, options, size):
    model = cls(3, **TINY, **options, learn_upsampling=True, dropout=0.3, dtype=np.float64)
    _randomize(model, 1)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, *size))
    target = rng.integers(0, 3, (2, *size))
    target[0, :4] = 255
    state = model.rng.bit_generator.state

    def loss(_):
        model.rng.bit_generator.state = state
        return F.softmax_cross_entropy(model.forward(x), target)[0]

    model.rng.bit_generator.state = state
    _, dscores = F.softmax_cross_entropy(model.forward(x), target)
    dx = model.backward(dscores)
    assert set(model.grads) == set(model.params)
    worst = {k: sparse_gradient_check(loss, p, model.grads[k], num_checks=6, seed=3) for k, p in model.params.items()}
    worst["input"] = sparse_gradient_check(loss, x, dx, num_checks=10, seed=4)
    assert max(worst.values()) < 1e-5, {k: v for k, v in worst.items() if v >= 1e-5}
