"""FCN-32s, FCN-16s and FCN-8s on a small VGG-style backbone, for any input size.

The networks (Long, Shelhamer & Darrell, CVPR 2015, figure 3)::

    conv1 -> pool1 -> conv2 -> pool2 -> conv3 -> pool3 -> conv4 -> pool4 -> conv5 -> pool5
          -> fc6 -> fc7 -> score_fr                       (fc6/fc7 are convolutions)
    FCN-32s: score_fr x32                                      -> crop to the input
    FCN-16s: score_fr x2 + score_pool4, then x16               -> crop to the input
    FCN-8s:  (score_fr x2 + score_pool4) x2 + score_pool3, x8  -> crop to the input

Every upsampling is a transposed convolution with kernel 2s and stride s, initialised
to bilinear interpolation and frozen unless ``learn_upsampling=True``.

Each network is a :class:`~tinyfcn.graph.Graph`: the shared backbone
(:meth:`FCN.backbone`) followed by the variant's head (its ``head()``), declared as a
list of nodes and nothing else. One executor runs every variant; the crop offsets come
from the coordinate maps of :mod:`tinyfcn.coord_map` -- none is typed in. Each fusion
crops the upsampled map and the skip to the window where both are defined, then adds them.
:func:`grow` turns a trained FCN-32s into an FCN-16s and that into an FCN-8s (staged training).

With the authors' VGG16 settings (conv1_1 padding 100, ceil-mode pooling, fc6 7x7
unpadded, upsampling padding 0) this reproduces the reference offsets 19 (FCN-32s),
5 and 27 (FCN-16s), 5, 9 and 31 (FCN-8s). The tiny default pads every 3x3
convolution by 1, pools in ceil mode and pads each upsampling by s/2, so every map
starts at the same place (all offsets 0) and, for any H, W >= 1, every map is large
enough to be cropped to the input.
"""
import numpy as np

from . import nn
from .graph import Graph
from .sizes import pair

SKIP_SCALES = {"pool4": 0.01, "pool3": 0.0001}
"""The at-once FCN-8s scales pool4 and pool3 by these before scoring them (the authors' values)."""


class FCN(Graph):
    """What FCN-32s, 16s and 8s share: the backbone, fc6, fc7 and score_fr, and the model API.

    Parameters
    ----------
    num_classes : int
        K, the number of output channels (classes, background included).
    in_channels : int
        Channels of the input images (3 for RGB, 1 for grayscale).
    widths : tuple of 5 ints
        Channels of the five backbone stages (VGG16: 64, 128, 256, 512, 512).
    fc_width : int
        Channels of fc6 and fc7 (VGG16: 4096).
    depths : tuple of 5 ints
        3x3 convolutions per stage (VGG16: 2, 2, 3, 3, 3).
    first_padding : int
        Padding of conv1_1 (the authors use 100; the other 3x3 convolutions pad by 1).
    fc6_kernel, fc6_padding : int
        fc6 is a convolution: 3x3 padded by 1 here, 7x7 unpadded in VGG16.
    upsample_padding : bool
        Pad each transposed convolution by s/2, making it exactly "x s" (the authors: no padding).
    ceil_mode : bool
        Round pooled sizes up, so no input row is dropped and a 1x1 input stays 1x1.
    dropout : float
        Dropout probability after fc6 and fc7.
    learn_upsampling : bool
        Train the bilinear-initialised upsampling layers instead of freezing them.
    seed : int
        Seeds the He initialisation of the backbone and the dropout masks.
    dtype : float32 (training) or float64 (gradient checks)

    The score layers start at zero and the upsampling layers at bilinear interpolation.
    ``config`` holds every argument but ``seed`` and ``dtype`` (checkpoints store it);
    an unknown keyword raises TypeError.
    """

    arch = None
    at_once = False

    def __init__(self, num_classes, in_channels=3, widths=(16, 32, 64, 128, 128), fc_width=256,
                 depths=(2, 2, 2, 2, 2), first_padding=1, fc6_kernel=3, fc6_padding=1, upsample_padding=True,
                 ceil_mode=True, dropout=0.5, learn_upsampling=False, seed=0, dtype=np.float32):
        if len(widths) != 5 or len(depths) != 5:
            raise ValueError(f"{type(self).__name__}: widths and depths need one entry per stage (5), "
                             f"got {widths} and {depths}")
        self.config = dict(arch=self.arch, num_classes=num_classes, in_channels=in_channels, widths=list(widths),
                           fc_width=fc_width, depths=list(depths), first_padding=first_padding,
                           fc6_kernel=fc6_kernel, fc6_padding=fc6_padding, upsample_padding=upsample_padding,
                           ceil_mode=ceil_mode, dropout=dropout, learn_upsampling=learn_upsampling)
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)
        super().__init__(self.backbone() + self.head())

    # -- the declaration: every node is (name, layer, the map(s) it reads)

    def backbone(self):
        """conv1_1 ... pool5, then fc6, fc7 (convolutions) and score_fr: the nodes every variant shares."""
        c = self.config
        nodes, source, channels = [], "input", c["in_channels"]
        for stage, (width, depth) in enumerate(zip(c["widths"], c["depths"]), start=1):
            for i in range(1, depth + 1):
                padding = c["first_padding"] if (stage, i) == (1, 1) else 1
                nodes += [(f"conv{stage}_{i}", self.conv(channels, width, 3, padding), source),
                          (f"relu{stage}_{i}", nn.ReLU(), f"conv{stage}_{i}")]
                source, channels = f"relu{stage}_{i}", width
            nodes.append((f"pool{stage}", nn.MaxPool2d(2, 2, ceil_mode=c["ceil_mode"]), source))
            source = f"pool{stage}"
        for n, c_in, k, p in ((6, channels, c["fc6_kernel"], c["fc6_padding"]), (7, c["fc_width"], 1, 0)):
            nodes += [(f"fc{n}", self.conv(c_in, c["fc_width"], k, p), source),
                      (f"relu{n}", nn.ReLU(), f"fc{n}"),
                      (f"drop{n}", nn.Dropout(c["dropout"], rng=self.rng), f"relu{n}")]
            source = f"drop{n}"
        return nodes + [("score_fr", self.conv(c["fc_width"], c["num_classes"], 1, 0, init="zeros"), source)]

    def head(self):
        """The variant's nodes after score_fr, ending in ``score``; each subclass declares its own."""
        raise NotImplementedError

    def conv(self, c_in, c_out, k, padding, init="he"):
        """A stride-1 convolution of the model's dtype, He-initialised from the model's generator."""
        return nn.Conv2d(c_in, c_out, k, padding=padding, init=init, rng=self.rng, dtype=self.dtype)

    def upsample(self, factor):
        """``x factor``: a transposed convolution, kernel 2*factor, stride factor, bilinear, frozen unless learned."""
        K = self.config["num_classes"]
        return nn.ConvTranspose2d(K, K, 2 * factor, stride=factor,
                                  padding=factor // 2 if self.config["upsample_padding"] else 0, bias=False,
                                  init="bilinear", trainable=self.config["learn_upsampling"], dtype=self.dtype)

    def skip(self, tap):
        """``score_<tap>``: a zero-initialised 1x1 convolution scoring a pooled map (scaled first in the at-once FCN-8s)."""
        channels = self.config["widths"][int(tap[-1]) - 1]
        score = self.conv(channels, self.config["num_classes"], 1, 0, init="zeros")
        if not self.at_once:
            return [(f"score_{tap}", score, tap)]
        return [(f"scale_{tap}", nn.Scale(SKIP_SCALES[tap]), tap), (f"score_{tap}", score, f"scale_{tap}")]

    @staticmethod
    def fuse(up, skip, name):
        """Crop the upsampled map and the skip to the window where both are defined, then add them."""
        return [(f"{up}c", nn.Crop(), up, skip),
                (f"{skip}c", nn.Crop(), skip, up),
                (name, nn.Add(), f"{up}c", f"{skip}c")]

    # -- the model API

    def forward(self, x):
        """Scores (N, K, H, W) for input x (N, C, H, W), any H, W >= 1."""
        C = self.config["in_channels"]
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1] != C or min(x.shape[2:], default=0) < 1:
            shape = x.shape if isinstance(x, np.ndarray) else type(x).__name__
            raise ValueError(f"{type(self).__name__}: expected an input of shape (N, {C}, H, W) with H, W >= 1, "
                             f"got {shape}")
        if x.dtype != self.dtype:
            raise TypeError(f"{type(self).__name__}: expected {self.dtype} input, got {x.dtype}")
        scores = super().forward(x)
        if scores.shape[2:] != x.shape[2:]:
            raise ValueError(f"{type(self).__name__}: the upsampled scores cover {scores.shape[2:]} of the "
                             f"{x.shape[2:]} input; this configuration cannot cover the input")
        return scores

    def predict(self, x):
        """Label map (N, H, W) int64: the arg-max class of :meth:`forward`, run in evaluation mode."""
        with nn.evaluating(self):
            return self.forward(x).argmax(axis=1)

    def summary(self, input_size=(64, 64)):
        """Print (and return) a table of every layer: output shape, total stride, receptive field, parameters.

        Runs one forward pass on zeros of ``input_size`` in evaluation mode (see :meth:`Graph.table`).
        """
        with nn.evaluating(self):
            self.forward(np.zeros((1, self.config["in_channels"], *pair(tuple(input_size))), self.dtype))
        lines = [f"{type(self).__name__} on a {input_size[0]}x{input_size[1]} input",
                 f"{'layer':16s} {'type':17s} {'output shape':>20s} {'stride':>7s} {'field':>6s} {'params':>9s}"]
        for name, kind, shape, stride, field, n in self.table():
            lines.append(f"{name:16s} {kind:17s} {str(shape):>20s} {stride:7.4g} {field:6.0f} {n:9,d}")
        total = sum(v.size for v in self.params.values())
        trainable = sum(v.size for layer in self.layers.values() for v in layer.params.values()
                        if getattr(layer, "trainable", True))
        lines.append(f"total parameters: {total:,d} ({trainable:,d} trainable)")
        text = "\n".join(lines)
        print(text)
        return text


class FCN32s(FCN):
    """FCN-32s: score_fr upsampled x32 in one step. Parameters: see :class:`FCN`."""

    arch = "fcn32s"

    def head(self):
        return [("upscore", self.upsample(32), "score_fr"),
                ("score", nn.Crop(), "upscore", "input")]


class FCN16s(FCN):
    """FCN-16s: score_fr x2, plus score_pool4, then x16. Parameters: see :class:`FCN`."""

    arch = "fcn16s"

    def head(self):
        return [("upscore2", self.upsample(2), "score_fr"),
                *self.skip("pool4"),
                *self.fuse("upscore2", "score_pool4", "fuse_pool4"),
                ("upscore16", self.upsample(16), "fuse_pool4"),
                ("score", nn.Crop(), "upscore16", "input")]


class FCN8s(FCN):
    """FCN-8s: (score_fr x2 + score_pool4) x2 + score_pool3, then x8.

    Parameters: see :class:`FCN`, plus ``at_once``: the authors' single-stage FCN-8s, which
    scales pool4 by 0.01 and pool3 by 0.0001 before scoring them, so the skips start small
    even when trained together with the rest from the beginning.
    """

    arch = "fcn8s"

    def __init__(self, num_classes, at_once=False, **kwargs):
        self.at_once = at_once
        super().__init__(num_classes, **kwargs)
        self.config["at_once"] = at_once

    def head(self):
        return [("upscore2", self.upsample(2), "score_fr"),
                *self.skip("pool4"),
                *self.fuse("upscore2", "score_pool4", "fuse_pool4"),
                ("upscore_pool4", self.upsample(2), "fuse_pool4"),
                *self.skip("pool3"),
                *self.fuse("upscore_pool4", "score_pool3", "fuse_pool3"),
                ("upscore8", self.upsample(8), "fuse_pool3"),
                ("score", nn.Crop(), "upscore8", "input")]


MODELS = {"fcn32s": FCN32s, "fcn16s": FCN16s, "fcn8s": FCN8s}
"""Every variant by name, coarsest first: the order in which :func:`grow` refines them."""


def build(config, dtype=np.float32, seed=0):
    """A model from its ``config`` dict (as stored in checkpoints): ``config["arch"]`` picks the class."""
    config = dict(config)
    arch = config.pop("arch", None)
    if arch not in MODELS:
        raise ValueError(f"unknown model {arch!r}: choose one of {', '.join(MODELS)}")
    return MODELS[arch](**config, dtype=dtype, seed=seed)


def grow(model, arch):
    """Staged training: a finer FCN with every parameter it shares (by name) with ``model``, copied.

    FCN-32s grows into FCN-16s, FCN-16s into FCN-8s (FCN-32s straight into FCN-8s too);
    the new skips' score layers start at zero, so at first they add nothing and the grown
    network's scores are the coarser network's (up to how the upsampling is split).
    The new model keeps ``model``'s configuration, dtype and training mode. Growing into
    the same variant returns a copy.

    Raises
    ------
    ValueError
        For an unknown variant, or one coarser than ``model``.
    """
    if arch not in MODELS:
        raise ValueError(f"grow: unknown model {arch!r}: choose one of {', '.join(MODELS)}")
    order = list(MODELS)
    if order.index(arch) < order.index(model.config["arch"]):
        raise ValueError(f"grow: an {model.config['arch']} cannot become the coarser {arch}")
    config = {k: v for k, v in model.config.items() if k not in ("arch", "at_once")}
    if arch == model.config["arch"] == "fcn8s":
        config["at_once"] = model.config["at_once"]
    new = MODELS[arch](**config, dtype=model.dtype)
    for k, v in model.params.items():
        if k in new.params and new.params[k].shape == v.shape:
            new.params[k][...] = v
    return new.train(model.training)
