"""The exact op shapes of tinyfcn's FCN-32s/16s/8s, read from the models themselves.

Nothing here is hard-coded: each model runs one forward pass, and every layer's input
shape is the output shape of the layer it reads (``model.sources``). Layers with the
same op, input shape and geometry are merged into one entry that remembers every
layer (of every architecture) that uses it, so a per-op timing can be multiplied back
into a per-model total.
"""
import numpy as np

from tinyfcn import nn
from tinyfcn.networks.models import MODELS

ARCHS = ("fcn32s", "fcn16s", "fcn8s")
NUM_CLASSES = 4


def layer_input_shapes(model, x):
    """``{layer name: input shape}`` for every layer of ``model``, from one forward pass on ``x``."""
    model.forward(x)
    return {name: tuple(model.shapes[model.sources[name][0]]) for name in model.layers}


def _describe(layer, x_shape):
    """An op entry for a Conv2d, ConvTranspose2d or MaxPool2d layer (None for any other layer)."""
    if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
        kind = "conv" if isinstance(layer, nn.Conv2d) else "convT"
        return {"kind": kind, "x_shape": x_shape, "w_shape": tuple(layer.params["weight"].shape),
                "stride": tuple(layer.stride), "padding": tuple(layer.padding), "bias": "bias" in layer.params}
    if isinstance(layer, nn.MaxPool2d):
        k = layer.kernel_size
        return {"kind": "pool", "x_shape": x_shape, "kernel": k, "stride": layer.stride or k,
                "padding": layer.padding, "ceil_mode": layer.ceil_mode}
    return None


def fcn_ops(batch=8, size=64, num_classes=NUM_CLASSES):
    """Every distinct conv, transposed conv and max-pool of the three FCNs at ``batch x 3 x size x size``.

    Returns a list of dicts: ``kind`` ("conv", "convT", "pool"), ``x_shape`` and the op's
    geometry, plus ``uses = {arch: [layer names]}`` -- e.g. FCN-8s's conv5_1 and conv5_2
    share one entry with ``uses["fcn8s"] == ["conv5_1", "conv5_2"]``.
    Convolutions come first (in network order), then transposed convolutions, then pools.
    """
    x = np.zeros((batch, 3, size, size), np.float32)
    entries = {}
    for arch in ARCHS:
        model = MODELS[arch](num_classes)
        for name, x_shape in layer_input_shapes(model, x).items():
            op = _describe(model.layers[name], x_shape)
            if op is None:
                continue
            key = tuple(sorted((k, str(v)) for k, v in op.items()))
            entry = entries.setdefault(key, {**op, "uses": {}})
            entry["uses"].setdefault(arch, []).append(name)
    order = {"conv": 0, "convT": 1, "pool": 2}
    return sorted(entries.values(), key=lambda e: order[e["kind"]])   # stable: network order within a kind


def loss_shape(batch=8, size=64, num_classes=NUM_CLASSES):
    """The scores shape the loss sees: the FCN's output, (N, K, H, W)."""
    return (batch, num_classes, size, size)


def output_size(op):
    """(H_out, W_out) of an op entry, by PyTorch's formulas (the same as :mod:`tinyfcn.ops.sizes`)."""
    from tinyfcn.ops.sizes import (
        conv2d_output_size,
        conv_transpose2d_output_size,
        pair,
        pool2d_output_size,
    )
    hw = op["x_shape"][2:]
    if op["kind"] == "conv":
        return conv2d_output_size(hw, op["w_shape"][2:], op["stride"], op["padding"])
    if op["kind"] == "convT":
        return conv_transpose2d_output_size(hw, op["w_shape"][2:], op["stride"], op["padding"])
    return pool2d_output_size(hw, pair(op["kernel"]), pair(op["stride"]), pair(op["padding"]), op["ceil_mode"])


def conv_flops(op):
    """Multiply-adds x 2 of one forward pass of a (transposed) convolution; None for a pool.

    Convolution: ``2 N C_out H_out W_out C_in kH kW``. Transposed convolution: every input
    pixel scales the whole kernel, ``2 N C_in H_in W_in C_out kH kW`` (nominal: the copies
    that land in the padding are computed, then dropped). The backward pass computes two
    products of the same size (input gradient and weight gradient), so forward+backward
    is 3x; both tinyfcn and torch (with requires_grad on input and weight) do all three.
    """
    if op["kind"] == "pool":
        return None
    N, _, H, W = op["x_shape"]
    a, b, kh, kw = op["w_shape"]
    if op["kind"] == "conv":
        Ho, Wo = output_size(op)
        return 2 * N * a * Ho * Wo * b * kh * kw
    return 2 * N * H * W * a * b * kh * kw


def label(op):
    """A short human-readable name for an op entry, e.g. ``conv 64->128 k3 @16x16``."""
    H, W = op["x_shape"][2:]
    if op["kind"] == "pool":
        return f"pool {op['x_shape'][1]}ch k{op['kernel']} @{H}x{W}"
    a, b, kh, _ = op["w_shape"]
    c_in, c_out = (b, a) if op["kind"] == "conv" else (a, b)
    extra = f" s{op['stride'][0]}" if op["stride"][0] != 1 else ""
    return f"{op['kind']} {c_in}->{c_out} k{kh}{extra} p{op['padding'][0]} @{H}x{W}"


def uses_text(op, arch="fcn8s"):
    """The layers of ``arch`` using this op (or of the first architecture that does), e.g. ``conv5_1,conv5_2``."""
    if arch in op["uses"]:
        return ",".join(op["uses"][arch])
    other = next(iter(op["uses"]))
    return f"{other}:" + ",".join(op["uses"][other])
