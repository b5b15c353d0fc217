"""A PyTorch twin of tinyfcn's default FCN-32s/16s/8s, for side-by-side speed and memory.

Same layers as :class:`tinyfcn.networks.models.FCN` with its default settings: five stages of
two 3x3 convolutions (padding 1) + ReLU, each followed by a 2x2 max-pool in ceil mode;
fc6 (3x3, padding 1) and fc7 (1x1) with ReLU and dropout 0.5; 1x1 score layers
initialised to zero; upsampling by frozen bilinear ``ConvTranspose2d`` without bias
(kernel 2s, stride s, padding s/2); skip fusions by sum; the output cropped to the input.
With ``norm="batch"`` (tinyfcn's ``FCN8s(K, norm="batch")``) every backbone and fc convolution
loses its bias and is followed by ``BatchNorm2d`` before its ReLU.

With these settings every crop offset is 0 (tinyfcn computes them from coordinate maps;
:func:`copy_from_tinyfcn` plus a forward-pass comparison in ``ops.py`` checks that the two
networks really compute the same function). This file imports only torch, so the
memory measured for the torch side does not include numba or tinyfcn.
"""
import torch
from torch import nn

WIDTHS = (16, 32, 64, 128, 128)
FC_WIDTH = 256
UPSAMPLING = {"fcn32s": (32,), "fcn16s": (2, 16), "fcn8s": (2, 2, 8)}
"""The upsampling factors of each architecture, in order; all but the last are followed by a skip fusion."""


def bilinear_weight(channels, kernel):
    """(C, C, k, k) weight of a transposed convolution that upsamples each channel bilinearly on its own."""
    f = (kernel + 1) // 2
    c = f - 1 if kernel % 2 == 1 else f - 0.5
    taps = 1 - torch.abs(torch.arange(kernel, dtype=torch.float32) - c) / f
    weight = torch.zeros(channels, channels, kernel, kernel)
    for i in range(channels):
        weight[i, i] = taps[:, None] * taps[None, :]
    return weight


def upsample(channels, factor):
    """Frozen bilinear ``x factor`` upsampling: kernel 2f, stride f, padding f/2, no bias."""
    layer = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
    layer.weight.data.copy_(bilinear_weight(channels, 2 * factor))
    layer.weight.requires_grad_(False)
    return layer


def _conv(c_in, c_out, kernel, padding, zero=False, bias=True):
    layer = nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=bias)
    if zero:
        nn.init.zeros_(layer.weight)
    else:
        nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")   # tinyfcn's he_normal
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


def _conv_block(c_in, c_out, kernel, padding, norm):
    """[convolution, (BatchNorm2d,) ReLU]: tinyfcn's ``conv_block``; with BatchNorm the convolution has no bias."""
    if norm == "batch":
        return [_conv(c_in, c_out, kernel, padding, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    return [_conv(c_in, c_out, kernel, padding), nn.ReLU()]


class TorchFCN(nn.Module):
    """FCN-32s, 16s or 8s (``arch``) mirroring tinyfcn's default configuration, or its ``norm="batch"`` one."""

    def __init__(self, arch, num_classes, in_channels=3, widths=WIDTHS, fc_width=FC_WIDTH, dropout=0.5, norm="none"):
        super().__init__()
        stages, c = [], in_channels
        for width in widths:
            stages.append(nn.Sequential(*_conv_block(c, width, 3, 1, norm), *_conv_block(width, width, 3, 1, norm),
                                        nn.MaxPool2d(2, 2, ceil_mode=True)))
            c = width
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Sequential(*_conv_block(c, fc_width, 3, 1, norm), nn.Dropout(dropout),
                                *_conv_block(fc_width, fc_width, 1, 0, norm), nn.Dropout(dropout))
        self.score_fr = _conv(fc_width, num_classes, 1, 0, zero=True)
        factors = UPSAMPLING[arch]
        self.ups = nn.ModuleList(upsample(num_classes, f) for f in factors)
        # skips[0] scores pool4, skips[1] pool3
        self.skips = nn.ModuleList(_conv(widths[3 - i], num_classes, 1, 0, zero=True) for i in range(len(factors) - 1))

    def forward(self, x):
        taps, h = [], x
        for i, stage in enumerate(self.stages):
            h = stage(h)
            if i in (2, 3):                       # pool3, pool4
                taps.append(h)
        h = self.score_fr(self.fc(h))
        for up, skip, tap in zip(self.ups, self.skips, (taps[1], taps[0])):
            h, s = up(h), skip(tap)
            H, W = min(h.shape[2], s.shape[2]), min(h.shape[3], s.shape[3])
            h = h[:, :, :H, :W] + s[:, :, :H, :W]
        return self.ups[-1](h)[:, :, :x.shape[2], :x.shape[3]]


def copy_from_tinyfcn(net, model):
    """Copy every parameter (and BatchNorm's running statistics) of a tinyfcn model of the same
    architecture and norm into ``net``, in place."""
    p, b = model.params, model.buffers
    layers = [layer for block in (*net.stages, net.fc) for layer in block]       # conv1_1 ... fc7, in order
    convs = [layer for layer in layers if isinstance(layer, nn.Conv2d)]
    norms = [layer for layer in layers if isinstance(layer, nn.BatchNorm2d)]
    names = [f"{s}_{i}" for s in range(1, len(net.stages) + 1) for i in (1, 2)] + ["6", "7"]
    pairs = [(conv, f"conv{n}" if "_" in n else f"fc{n}") for conv, n in zip(convs, names)]
    pairs += [(net.score_fr, "score_fr")] + list(zip(net.skips, ("score_pool4", "score_pool3")))
    ups = {"fcn32s": ("upscore",), "fcn16s": ("upscore2", "upscore16"),
           "fcn8s": ("upscore2", "upscore_pool4", "upscore8")}[model.config["arch"]]
    pairs += list(zip(net.ups, ups))
    with torch.no_grad():
        for layer, name in pairs + [(bn, f"bn{n}") for bn, n in zip(norms, names)]:
            layer.weight.copy_(torch.from_numpy(p[f"{name}.weight"]))
            if layer.bias is not None:
                layer.bias.copy_(torch.from_numpy(p[f"{name}.bias"]))
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.copy_(torch.from_numpy(b[f"{name}.running_mean"]))
                layer.running_var.copy_(torch.from_numpy(b[f"{name}.running_var"]))
