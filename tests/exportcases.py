"""Models for the export tests: every variant and option, with every trainable parameter randomised.

FCN's score layers start at zero, which would make most scores (and most gradients)
trivially equal; randomising every trainable parameter makes every layer count. Frozen
upsampling keeps its bilinear kernel, as in a trained model. Models with BatchNorm then take a
few training steps, so their running statistics are not the initial 0 and 1 either.
"""
import numpy as np

from tinyfcn import nn
from tinyfcn.networks.graph import Graph
from tinyfcn.networks.surgery import build, convolutionalize, from_classifier
from tinyfcn.training.optim import SGD

VGG16 = dict(widths=(1, 1, 1, 1, 1), fc_width=1, depths=(2, 2, 3, 3, 3), first_padding=100, fc6_kernel=7,
             fc6_padding=0, upsample_padding=False)
"""The authors' VGG16 geometry on one channel per layer: crop offsets 19 (32s), 5 and 27 (16s), 5, 9 and 31 (8s)."""

CASES = {
    "fcn32s": dict(arch="fcn32s"),
    "fcn16s": dict(arch="fcn16s"),
    "fcn8s": dict(arch="fcn8s"),
    "fcn8s-at-once": dict(arch="fcn8s", at_once=True),
    "fcn8s-learned-upsampling": dict(arch="fcn8s", learn_upsampling=True),
    "fcn32s-vgg16": dict(arch="fcn32s", **VGG16),
    "fcn16s-vgg16": dict(arch="fcn16s", **VGG16),
    "fcn8s-vgg16": dict(arch="fcn8s", **VGG16),
    # the design space (docs/design_space.md)
    "fcn8s-conv": dict(arch="fcn8s", downsample="conv"),
    "fcn8s-concat": dict(arch="fcn8s", fusion="concat"),
    "fcn16s-concat": dict(arch="fcn16s", fusion="concat"),
    "fcn8s-conv-concat": dict(arch="fcn8s", downsample="conv", fusion="concat"),
    "fcn32s-unpool": dict(arch="fcn32s", upsample="unpool"),
    "classifier": dict(arch="classifier", crop_size=35),
    "classifier-convolutionalized": lambda dtype, **overrides: convolutionalize(random_model("classifier", dtype, **overrides)),
    "fcn8s-from-classifier": lambda dtype, **overrides: from_classifier(random_model("classifier", dtype), "fcn8s", **overrides),
    # BatchNorm (norm="batch") after every backbone, fc and decoder convolution
    "fcn32s-bn": dict(arch="fcn32s", norm="batch"),
    "fcn8s-bn": dict(arch="fcn8s", norm="batch"),
    "fcn8s-conv-bn": dict(arch="fcn8s", downsample="conv", norm="batch"),
    "fcn8s-concat-bn": dict(arch="fcn8s", fusion="concat", norm="batch"),
    "fcn32s-unpool-bn": dict(arch="fcn32s", upsample="unpool", norm="batch"),
    "classifier-bn": dict(arch="classifier", crop_size=35, norm="batch"),
    "classifier-bn-convolutionalized": lambda dtype, **overrides: convolutionalize(random_model("classifier-bn", dtype,
                                                                                                 **overrides)),
}
"""Test name -> model config (4 classes, RGB), or a function of the dtype and the overrides returning the model."""

SIZES = [(1, 1), (35, 29), (64, 64), (17, 48), (100, 31)]
"""Input sizes (H, W) every export is compared on: a single pixel, odd, square, wide, tall and odd."""

CASE_SIZES = {
    "classifier": [(35, 35)],
    "classifier-convolutionalized": [(35, 35), (36, 40), (100, 37)],
    "classifier-bn": [(35, 35)],
    "classifier-bn-convolutionalized": [(35, 35), (36, 40), (100, 37)],
}
"""Sizes for the cases that do not take every size: the classifier takes its crop size only, its
convolutionalized version anything at least that large (fc6 is an unpadded 2x2 convolution on pool5)."""


def sizes(case):
    """The input sizes (H, W) ``case`` is compared on."""
    return CASE_SIZES.get(case, SIZES)


def perturb(graph, seed=0):
    """Randomise every trainable parameter of ``graph`` at its initial scale; returns the graph.

    Zero weights (the score layers) get variance 1/fan_in, biases noise of 0.1, and the
    rest is scaled by 1 + 10 % noise (so a learned upsampling kernel is no longer symmetric).
    """
    rng = np.random.default_rng(seed)
    for layer in graph.layers.values():
        if getattr(layer, "trainable", True):
            for name, v in layer.params.items():
                noise = rng.standard_normal(v.shape).astype(v.dtype)
                if name == "bias":
                    v += 0.1 * noise
                elif not v.any():
                    v += noise / np.sqrt(np.prod(v.shape[1:]))
                else:
                    v *= 1 + 0.1 * noise
    return graph


def train_a_little(model, steps=3, seed=3):
    """``steps`` SGD steps in training mode on random images (at the classifier's crop size, else 24 x 20)
    and labels; returns the model. Each step's forward pass moves BatchNorm's running statistics."""
    rng = np.random.default_rng(seed)
    size = (model.config["crop_size"],) * 2 if model.config["arch"] == "classifier" else (24, 20)
    loss, optimizer = nn.SoftmaxCrossEntropy(), SGD(model.params, lr=0.01, momentum=0.9)
    model.train()
    for _ in range(steps):
        x = rng.standard_normal((2, 3, *size)).astype(model.dtype)
        scores = model.forward(x)
        loss.forward(scores, rng.integers(0, 4, (2, *scores.shape[2:])))
        model.backward(loss.backward())
        optimizer.step(model.grads)
    return model


def random_model(case, dtype=np.float32, **overrides):
    """The model of ``CASES[case]`` (4 classes, ``dtype``) with perturbed weights (and, with BatchNorm,
    trained a little), in evaluation mode."""
    made = CASES[case]
    model = made(dtype, **overrides) if callable(made) else build(dict(made, num_classes=4, **overrides), dtype=dtype)
    model = perturb(model)
    return (train_a_little(model) if model.buffers else model).eval()


def mixed_graph():
    """A non-FCN graph: ceil-mode pooling that drops a window, strided convolution, offset crops, Concat, Scale."""
    rng = np.random.default_rng(0)
    return perturb(Graph([
        ("pool", nn.MaxPool2d(3, 3, padding=1, ceil_mode=True), "input"),
        ("conv", nn.Conv2d(3, 4, 3, stride=(3, 2), padding=(1, 0), rng=rng), "input"),
        ("poolc", nn.Crop(offset=(1, 0), like_offset=(0, 1)), "pool", "conv"),
        ("convc", nn.Crop(offset=(0, 1), like_offset=(1, 0)), "conv", "pool"),
        ("cat", nn.Concat(), "poolc", "convc"),
        ("scale", nn.Scale(0.5), "cat"),
        ("up", nn.ConvTranspose2d(7, 2, 4, stride=2, padding=1, rng=rng), "scale"),
        ("relu", nn.ReLU(), "up"),
    ])).eval()


MIXED_SIZES = [(8, 7), (11, 11), (14, 9), (10, 13)]
"""Sizes for :func:`mixed_graph`; 8, 11 and 14 make the ceil-mode pooling drop its last window."""


def inputs(size, channels=3, batch=2, seed=1, dtype=np.float32):
    """Random images (batch, channels, H, W)."""
    return np.random.default_rng(seed).standard_normal((batch, channels, *size)).astype(dtype)


def worst(a, b, rtol=1e-5):
    """max |a - b| and the tolerance it is held to: ``rtol`` of the largest value (at least ``rtol``)."""
    return np.abs(a - b).max(), rtol * max(1.0, np.abs(b).max())
