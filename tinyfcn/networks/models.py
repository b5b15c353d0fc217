"""FCN-32s, FCN-16s and FCN-8s on a small VGG-style backbone, for any input size.

The networks (Long, Shelhamer & Darrell, CVPR 2015, figure 3)::

    conv1 -> pool1 -> conv2 -> pool2 -> conv3 -> pool3 -> conv4 -> pool4 -> conv5 -> pool5
          -> fc6 -> fc7 -> score_fr                       (fc6/fc7 are convolutions)
    FCN-32s: score_fr x32                                      -> crop to the input
    FCN-16s: score_fr x2 + score_pool4, then x16               -> crop to the input
    FCN-8s:  (score_fr x2 + score_pool4) x2 + score_pool3, x8  -> crop to the input

Every upsampling is a transposed convolution with kernel 2s and stride s, initialised
to bilinear interpolation and frozen unless ``learn_upsampling=True``.

Each network is a :class:`~tinyfcn.networks.graph.Graph`: the shared backbone
(:meth:`FCN.backbone`) followed by the variant's head (its ``head()``), declared as a
list of nodes and nothing else. One executor runs every variant; the crop offsets come
from the coordinate maps of :mod:`tinyfcn.networks.coord_map` -- none is typed in. Each fusion
crops the upsampled map and the skip to the window where both are defined, then adds them
(or, with ``fusion="concat"``, stacks and scores them).
:func:`tinyfcn.networks.surgery.grow` turns a trained FCN-32s into an FCN-16s and that
into an FCN-8s (staged training); this module holds the declarations only.

With the authors' VGG16 settings (conv1_1 padding 100, ceil-mode pooling, fc6 7x7
unpadded, upsampling padding 0) this reproduces the reference offsets 19 (FCN-32s),
5 and 27 (FCN-16s), 5, 9 and 31 (FCN-8s). The tiny default pads every 3x3
convolution by 1, pools in ceil mode and pads each upsampling by s/2, so every map
starts at the same place (all offsets 0) and, for any H, W >= 1, every map is large
enough to be cropped to the input.

The design space of the FCN text, as three switches (each stored in ``config``):

``downsample="pool" | "conv"``
    Each stage ends in a 2x2 max-pool (FCN's choice), or in a learned 3x3 stride-2
    convolution padded by 1, plus a ReLU (the map is still called ``pool<k>``). Both halve
    sizes rounding up. A stride-2 convolution samples its input at the even pixels (shift 0)
    where a 2x2 pool sits between two pixels (shift 1/2), so with ``"conv"`` every
    upsampling is the triangle (bilinear) kernel of odd size 2s - 1, unpadded, centred on
    those samples; the coordinate maps then give crop offsets of s - 1 and every map still
    covers the input.
``upsample="transposed" | "unpool"``
    ``"transposed"`` is FCN's: bilinear transposed convolutions, fused with the skips.
    ``"unpool"`` is the DeconvNet/SegNet decoder, declared as a variant of FCN-32s only:
    fc7's features are projected by a 1x1 convolution (``dec_fr``) to pool5's channels, then
    ``unpool5`` puts them back where pool5 found its maxima, a 3x3 convolution (+ ReLU)
    densifies them, and so on down to ``unpool1``; a 1x1 convolution (``score_dec``, He-initialised,
    not zero like FCN's score layers: see :meth:`FCN.unpool_decoder`) scores the K classes at the
    input's resolution. The switches carry the "where" that FCN's skips
    carry, so this decoder takes no skips, and it needs max-pools (``downsample="pool"``)
    and an fc6 that keeps pool5's size (``fc6_padding = (fc6_kernel - 1) / 2``).
``fusion="sum" | "concat"``
    How a skip joins the upsampled scores. ``"sum"`` (FCN) adds a 1x1 score of the pooled
    map. ``"concat"`` (U-Net) stacks the upsampled scores and the pooled map itself (both
    cropped) along channels and scores them with a 1x1 convolution (``fuse_pool<k>``) that
    starts as the identity on the scores and zero on the features, so a grown network
    starts out computing exactly its coarser parent. FCN-32s has no skip; it keeps the
    setting for ``grow``.

Every network also takes ``norm="none" | "batch"`` (stored in ``config``; a config without it is
``"none"``, the networks above). With ``"batch"`` each convolution that a ReLU follows -- the
backbone's ``conv<s>_<i>`` and ``pool<k>_conv``, ``fc6``, ``fc7``, the decoder's ``dec_fr`` and
``dec<k>`` -- is followed by a :class:`~tinyfcn.ops.nn.BatchNorm2d` before its ReLU, and loses its
bias (BatchNorm's beta plays that role). The BatchNorm nodes are named::

    conv<s>_<i> -> bn<s>_<i>        fc6 -> bn6, fc7 -> bn7
    pool<k>_conv -> pool<k>_bn      dec<k> -> bn_dec<k>, dec_fr -> bn_dec_fr

and the ReLUs keep their names (``relu1_1``, ``pool2``, ``relu6``, ``relu_dec3``, ...). Score
layers (``score_fr``, ``score_pool<k>``, ``fuse_pool<k>``, ``score_dec``, ``score``) and
upsamplings have none: scores are not normalised. :meth:`Backbone.conv_block` is the one place
that declares "convolution (+ BatchNorm) + ReLU". The dense :class:`Classifier` normalises fc6's
and fc7's features with :class:`~tinyfcn.ops.nn.BatchNorm1d`, which becomes a BatchNorm2d with
the same arrays when it is convolutionalized. :func:`tinyfcn.networks.surgery.fold_batchnorm`
folds a trained network's BatchNorms into the convolutions before them, for inference.

:class:`Classifier` (fixed-size crops -> Flatten -> fc6 -> fc7 -> score, all dense) and its
convolutionalized twin :class:`ScoreMap` are the paper's section 3.1: the same weights,
reshaped into convolutions (:func:`tinyfcn.networks.surgery.convolutionalize`), run on any
input and give a coarse score map; ``surgery.from_classifier`` starts an FCN from them.
"""
import numpy as np

from ..ops import nn
from ..ops.sizes import pair
from .graph import Graph

DOWNSAMPLE, UPSAMPLE, FUSION = ("pool", "conv"), ("transposed", "unpool"), ("sum", "concat")
"""The values of the three design switches; the first of each is FCN's."""

NORM = ("none", "batch")
"""The values of ``norm``: no normalisation (FCN's), or a BatchNorm after every convolution a ReLU follows."""

SKIP_SCALES = {"pool4": 0.01, "pool3": 0.0001}
"""The at-once FCN-8s scales pool4 and pool3 by these before scoring them (the authors' values)."""


class Backbone(Graph):
    """What every network here shares: the five stages of 3x3 convolutions, each ending in a downsampling.

    Subclasses set ``config`` (with ``in_channels``, ``widths``, ``depths``, ``downsample``,
    ``ceil_mode``, ``dropout``, ``norm`` and optionally ``first_padding``), ``dtype`` and ``rng``, then call
    ``Graph.__init__`` with :meth:`stages` and their own nodes. After :meth:`stages`,
    ``pools`` maps ``"pool<k>"`` to that stage's MaxPool2d (for unpooling with its switches).
    """

    def stages(self):
        """conv1_1 ... pool5: per stage ``depth`` 3x3 convolutions (+ BatchNorm) + ReLU, then the downsampling pool<k>.

        With ``downsample="conv"`` the downsampling is ``pool<k>_conv``, a 3x3 stride-2
        convolution padded by 1 (+ ``pool<k>_bn``), and its ReLU is the map ``pool<k>``.
        """
        c = self.config
        nodes, source, channels, self.pools = [], "input", c["in_channels"], {}
        for stage, (width, depth) in enumerate(zip(c["widths"], c["depths"]), start=1):
            for i in range(1, depth + 1):
                padding = c.get("first_padding", 1) if (stage, i) == (1, 1) else 1
                nodes += self.conv_block((f"conv{stage}_{i}", f"bn{stage}_{i}", f"relu{stage}_{i}"),
                                         channels, width, 3, padding, source)
                source, channels = f"relu{stage}_{i}", width
            if c["downsample"] == "conv":
                nodes += self.conv_block((f"pool{stage}_conv", f"pool{stage}_bn", f"pool{stage}"),
                                         width, width, 3, 1, source, stride=2)
            else:
                self.pools[f"pool{stage}"] = nn.MaxPool2d(2, 2, ceil_mode=c["ceil_mode"])
                nodes.append((f"pool{stage}", self.pools[f"pool{stage}"], source))
            source = f"pool{stage}"
        return nodes

    def top(self, source, fc6_kernel, fc6_padding, dense=False):
        """fc6 -> (bn6) -> relu6 -> drop6 -> fc7 -> (bn7) -> relu7 -> drop7 after the map ``source``: the top.

        fc6 is a ``fc6_kernel`` x ``fc6_kernel`` convolution of pool5's channels, padded by
        ``fc6_padding``, and fc7 a 1x1 convolution (:class:`FCN`, :class:`ScoreMap`); ``dense=True``
        makes them the same weights as dense layers (:class:`Classifier`, whose ``source`` is the
        flattened pool5). Dropout is ``config["dropout"]``.
        """
        c, nodes, channels = self.config, [], self.config["widths"][-1]
        for n, k, padding in ((6, fc6_kernel, fc6_padding), (7, 1, 0)):
            nodes += self.conv_block((f"fc{n}", f"bn{n}", f"relu{n}"), channels, c["fc_width"], k, padding, source,
                                     dense=dense)
            nodes.append((f"drop{n}", nn.Dropout(c["dropout"], rng=self.rng), f"relu{n}"))
            source, channels = f"drop{n}", c["fc_width"]
        return nodes

    def conv_block(self, names, c_in, c_out, k, padding, source, stride=1, dense=False):
        """A k x k convolution -> BatchNorm (with ``norm="batch"``) -> ReLU after the map ``source``, as nodes.

        ``names`` are the three nodes' names (convolution, BatchNorm, ReLU). With BatchNorm the
        convolution has no bias: BatchNorm subtracts any per-channel constant, and its beta
        is the learned shift. ``dense=True`` declares the same weights as a dense layer on
        the flattened c_in x k x k input (:class:`~tinyfcn.ops.nn.Linear` of c_in * k * k
        features, padding ignored) followed by a :class:`~tinyfcn.ops.nn.BatchNorm1d`.
        """
        conv, norm, relu = names
        batch = self.config["norm"] == "batch"
        if dense:
            layer = nn.Linear(c_in * k * k, c_out, bias=not batch, rng=self.rng, dtype=self.dtype)
        else:
            layer = self.conv(c_in, c_out, k, padding, stride=stride, bias=not batch)
        if not batch:
            return [(conv, layer, source), (relu, nn.ReLU(), conv)]
        return [(conv, layer, source),
                (norm, (nn.BatchNorm1d if dense else nn.BatchNorm2d)(c_out, dtype=self.dtype), conv),
                (relu, nn.ReLU(), norm)]

    def conv(self, c_in, c_out, k, padding, init="he", stride=1, bias=True):
        """A convolution of the model's dtype, He-initialised from the model's generator."""
        return nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, bias=bias, init=init, rng=self.rng,
                         dtype=self.dtype)


def _choice(who, name, value, choices):
    if value not in choices:
        raise ValueError(f"{who}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


class FCN(Backbone):
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
    ceil_mode : bool
        Round pooled sizes up, so no input row is dropped and a 1x1 input stays 1x1.
    dropout : float
        Dropout probability after fc6 and fc7.
    learn_upsampling : bool
        Train the bilinear-initialised upsampling layers instead of freezing them.
    downsample : {"pool", "conv"}
        2x2 max-pools, or learned 3x3 stride-2 convolutions (+ ReLU).
    upsample : {"transposed", "unpool"}
        FCN's transposed convolutions, or the unpooling decoder (FCN-32s only, pools only).
    fusion : {"sum", "concat"}
        How skips join the upsampled scores (see the module docstring).
    norm : {"none", "batch"}
        A BatchNorm2d after every convolution a ReLU follows, which then has no bias (see the
        module docstring for where and under which names).
    upsample_padding : bool or None
        Pad each transposed convolution by s/2, making it exactly "x s" (the authors: no
        padding). None (the default) is True with pools and False with strided convolutions
        (the only geometry in which the odd upsampling kernel covers the input).
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
                 depths=(2, 2, 2, 2, 2), first_padding=1, fc6_kernel=3, fc6_padding=1, upsample_padding=None,
                 ceil_mode=True, dropout=0.5, learn_upsampling=False, downsample="pool", upsample="transposed",
                 fusion="sum", norm="none", seed=0, dtype=np.float32):
        who = type(self).__name__
        if len(widths) != 5 or len(depths) != 5:
            raise ValueError(f"{who}: widths and depths need one entry per stage (5), got {widths} and {depths}")
        _choice(who, "downsample", downsample, DOWNSAMPLE)
        _choice(who, "upsample", upsample, UPSAMPLE)
        _choice(who, "fusion", fusion, FUSION)
        _choice(who, "norm", norm, NORM)
        if upsample_padding is None:
            upsample_padding = downsample == "pool"
        if upsample == "unpool" and downsample != "pool":
            raise ValueError(f"{who}: upsample='unpool' needs downsample='pool', because it unpools with the "
                             "max-pools' switches and strided convolutions keep none")
        if upsample == "unpool" and self.arch != "fcn32s":
            raise ValueError(f"{who}: upsample='unpool' is a decoder of its own that reads every pool's switches "
                             "and takes no skips, so it is an fcn32s option")
        if upsample == "unpool" and fc6_kernel != 2 * fc6_padding + 1:
            raise ValueError(f"{who}: upsample='unpool' unpools fc7's map with pool5's switches, so fc6 must keep "
                             f"pool5's size (fc6_padding = (fc6_kernel - 1) / 2), got kernel {fc6_kernel}, "
                             f"padding {fc6_padding}")
        if downsample == "conv" and upsample_padding:
            raise ValueError(f"{who}: downsample='conv' needs upsample_padding=False: its upsampling kernels "
                             "(size 2s - 1) cover the input only unpadded")
        self.config = dict(arch=self.arch, num_classes=num_classes, in_channels=in_channels, widths=list(widths),
                           fc_width=fc_width, depths=list(depths), first_padding=first_padding,
                           fc6_kernel=fc6_kernel, fc6_padding=fc6_padding, upsample_padding=upsample_padding,
                           ceil_mode=ceil_mode, dropout=dropout, learn_upsampling=learn_upsampling,
                           downsample=downsample, upsample=upsample, fusion=fusion, norm=norm)
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)
        nodes = self.backbone()
        super().__init__(nodes + (self.unpool_decoder() if upsample == "unpool" else self.head()))

    # -- the declaration: every node is (name, layer, the map(s) it reads)

    def backbone(self):
        """conv1_1 ... pool5, then fc6, fc7 (convolutions) and score_fr: the nodes every variant shares.

        (The unpooling decoder reads fc7 directly, so without score_fr.)
        """
        c = self.config
        nodes = self.stages() + self.top("pool5", c["fc6_kernel"], c["fc6_padding"])
        if c["upsample"] == "unpool":
            return nodes
        return nodes + [("score_fr", self.conv(c["fc_width"], c["num_classes"], 1, 0, init="zeros"), "drop7")]

    def head(self):
        """The variant's nodes after score_fr, ending in ``score``; each subclass declares its own."""
        raise NotImplementedError

    def unpool_decoder(self):
        """The DeconvNet/SegNet decoder after fc7: dec_fr, then unpool<k> -> dec<k> -> relu_dec<k> for k = 5 ... 1, score_dec.

        With ``norm="batch"``, ``bn_dec_fr`` and ``bn_dec<k>`` come before the ReLUs.
        """
        c, w = self.config, self.config["widths"]
        nodes = self.conv_block(("dec_fr", "bn_dec_fr", "relu_dec_fr"), c["fc_width"], w[4], 1, 0, "drop7")
        source = "relu_dec_fr"
        for stage in range(5, 0, -1):
            out = w[max(stage - 2, 0)]                     # back to the channels of the stage before
            dec = self.conv_block((f"dec{stage}", f"bn_dec{stage}", f"relu_dec{stage}"), w[stage - 1], out, 3, 1,
                                  f"unpool{stage}")
            # An unpooled map is 3/4 zeros, so only a quarter of He's fan-in carries signal: without
            # a gain of sqrt(4) every unpool halves the activations (1/32 of them after five).
            dec[0][1].params["weight"] *= 2
            nodes += [(f"unpool{stage}", nn.MaxUnpool2d(self.pools[f"pool{stage}"]), source), *dec]
            source = f"relu_dec{stage}"
        # score_dec starts He-initialised, not at zero as FCN's score layers do. The decoder's gradient is
        # score_dec's weight (transposed) times the score gradient, so while the object classes' rows of that
        # weight are equal, nothing asks the decoder to carry *which* object is where; zero rows drift apart
        # only as fast as the 16 local channels under them already differ by class, and the decoder then
        # calls every object one class. score_fr reads fc7, whose 256 channels differ by class from the start.
        return nodes + [("score_dec", self.conv(w[0], c["num_classes"], 1, 0), source),
                        ("score", nn.Crop(), "score_dec", "input")]

    def upsample(self, factor):
        """``x factor``: a bilinear transposed convolution with stride factor, frozen unless learned.

        After pools the kernel is 2*factor (padded by factor/2 with ``upsample_padding``); after
        strided convolutions it is the odd triangle of size 2*factor - 1, unpadded.
        """
        K, c = self.config["num_classes"], self.config
        kernel = 2 * factor - 1 if c["downsample"] == "conv" else 2 * factor
        return nn.ConvTranspose2d(K, K, kernel, stride=factor,
                                  padding=factor // 2 if c["upsample_padding"] else 0, bias=False,
                                  init="bilinear", trainable=c["learn_upsampling"], dtype=self.dtype)

    def skip(self, tap):
        """``score_<tap>``: a zero-initialised 1x1 convolution scoring a pooled map (scaled first in the at-once FCN-8s)."""
        channels = self.config["widths"][int(tap[-1]) - 1]
        score = self.conv(channels, self.config["num_classes"], 1, 0, init="zeros")
        if not self.at_once:
            return [(f"score_{tap}", score, tap)]
        return [(f"scale_{tap}", nn.Scale(SKIP_SCALES[tap]), tap), (f"score_{tap}", score, f"scale_{tap}")]

    def fuse(self, up, tap, name):
        """Join the upsampled scores ``up`` and the pooled map ``tap`` into the map ``name``.

        ``"sum"``: score the tap (``score_<tap>``), crop both to the window where both are
        defined, add them. ``"concat"``: crop the scores and the tap itself, stack them
        (``cat_<tap>``) and score them with a 1x1 convolution that starts as the identity
        on the scores and zero on the tap's features.
        """
        if self.config["fusion"] == "sum":
            skip = f"score_{tap}"
            return [*self.skip(tap),
                    (f"{up}c", nn.Crop(), up, skip),
                    (f"{skip}c", nn.Crop(), skip, up),
                    (name, nn.Add(), f"{up}c", f"{skip}c")]
        K, channels = self.config["num_classes"], self.config["widths"][int(tap[-1]) - 1]
        nodes = [(f"scale_{tap}", nn.Scale(SKIP_SCALES[tap]), tap)] if self.at_once else []
        source = f"scale_{tap}" if self.at_once else tap
        score = self.conv(K + channels, K, 1, 0, init="zeros")
        score.params["weight"][range(K), range(K)] = 1              # the identity on the upsampled scores
        return nodes + [(f"{up}c", nn.Crop(), up, source),
                        (f"{tap}c", nn.Crop(), source, up),
                        (f"cat_{tap}", nn.Concat(), f"{up}c", f"{tap}c"),
                        (name, score, f"cat_{tap}")]

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

    def summary(self, input_size=(64, 64)):
        """Print (and return) the layer table (:meth:`Graph.summary`) for one ``input_size`` image."""
        c = self.config
        return super().summary((1, c["in_channels"], *pair(tuple(input_size))),
                               f"{type(self).__name__} on a {input_size[0]}x{input_size[1]} input "
                               f"(downsample={c['downsample']}, upsample={c['upsample']}, fusion={c['fusion']}, "
                               f"norm={c['norm']})")


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
                *self.fuse("upscore2", "pool4", "fuse_pool4"),
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
                *self.fuse("upscore2", "pool4", "fuse_pool4"),
                ("upscore_pool4", self.upsample(2), "fuse_pool4"),
                *self.fuse("upscore_pool4", "pool3", "fuse_pool3"),
                ("upscore8", self.upsample(8), "fuse_pool3"),
                ("score", nn.Crop(), "upscore8", "input")]


MODELS = {"fcn32s": FCN32s, "fcn16s": FCN16s, "fcn8s": FCN8s}
"""Every variant by name, coarsest first: the order in which :func:`grow` refines them."""


def last_map_size(crop_size):
    """The side of pool5 for a ``crop_size`` input: five halvings, rounding up (pools in ceil mode and
    3x3 stride-2 convolutions padded by 1 agree)."""
    for _ in range(5):
        crop_size = -(-crop_size // 2)
    return crop_size


class Classifier(Backbone):
    """A classifier of fixed-size crops: the FCN's five stages, then Flatten -> fc6 -> fc7 -> score, all dense.

    This is the network FCN starts from (VGG16 trained on ImageNet crops), at toy size.

    Parameters
    ----------
    num_classes : int
        K, the crop labels (the segmentation classes: 0 is background).
    in_channels, widths, fc_width, depths, dropout : as for :class:`FCN`
    crop_size : int
        The side of the square crops it classifies; pool5 is ``k = last_map_size(crop_size)``
        pixels wide, and fc6 reads all k x k x C5 of them.
    downsample : {"pool", "conv"}
    norm : {"none", "batch"}
        As for :class:`FCN`; fc6's and fc7's features are normalised by BatchNorm1d.
    seed, dtype : as for :class:`FCN`

    ``forward(x)``: x (N, C, crop_size, crop_size) -> logits (N, K). ``config`` is stored by
    checkpoints like an FCN's (``arch="classifier"``).
    """

    arch = "classifier"

    def __init__(self, num_classes, in_channels=3, crop_size=48, widths=(16, 32, 64, 128, 128), fc_width=256,
                 depths=(2, 2, 2, 2, 2), downsample="pool", norm="none", dropout=0.5, seed=0, dtype=np.float32):
        who = type(self).__name__
        if len(widths) != 5 or len(depths) != 5:
            raise ValueError(f"{who}: widths and depths need one entry per stage (5), got {widths} and {depths}")
        _choice(who, "downsample", downsample, DOWNSAMPLE)
        _choice(who, "norm", norm, NORM)
        self.config = dict(arch=self.arch, num_classes=num_classes, in_channels=in_channels, crop_size=crop_size,
                           widths=list(widths), fc_width=fc_width, depths=list(depths), downsample=downsample,
                           norm=norm, ceil_mode=True, dropout=dropout)
        self.dtype, self.rng = np.dtype(dtype), np.random.default_rng(seed)
        super().__init__(self.stages() + self.dense())

    def dense(self):
        """flatten, fc6, (bn6), relu6, drop6, fc7, (bn7), relu7, drop7, score: the fully connected top."""
        c, k = self.config, last_map_size(self.config["crop_size"])
        nodes = [("flatten", nn.Flatten(), "pool5"), *self.top("flatten", k, 0, dense=True)]
        return nodes + [("score", nn.Linear(c["fc_width"], c["num_classes"], init="zeros", dtype=self.dtype), "drop7")]

    def forward(self, x):
        S, C = self.config["crop_size"], self.config["in_channels"]
        if not isinstance(x, np.ndarray) or x.shape[1:] != (C, S, S):
            shape = x.shape if isinstance(x, np.ndarray) else type(x).__name__
            raise ValueError(f"Classifier: expected crops of shape (N, {C}, {S}, {S}), got {shape}; "
                             "convolutionalize() it to run on other sizes")
        if x.dtype != self.dtype:
            raise TypeError(f"Classifier: expected {self.dtype} input, got {x.dtype}")
        return super().forward(x)


class ScoreMap(Backbone):
    """A convolutionalized :class:`Classifier`: the same stages, then fc6 as a k x k convolution and fc7 and score as 1x1.

    Built by :func:`convolutionalize`. ``forward(x)`` takes any H, W >= 1 (H, W >= crop_size
    for a map of at least one pixel) and returns coarse scores (N, K, h, w); on a
    crop-size input h = w = 1 and they are the classifier's logits. The classifier's BatchNorm1d
    (``norm="batch"``) are BatchNorm2d here, with the same parameters and running statistics.
    """

    def __init__(self, config, dtype=np.float32):
        self.config, self.dtype, self.rng = dict(config), np.dtype(dtype), np.random.default_rng(0)
        c, k = self.config, last_map_size(self.config["crop_size"])
        nodes = self.stages() + self.top("pool5", k, 0)
        super().__init__(nodes + [("score", self.conv(c["fc_width"], c["num_classes"], 1, 0), "drop7")])
