"""FCN-32s, FCN-16s and FCN-8s on a small VGG-style backbone, for any input size.

The networks (Long, Shelhamer & Darrell, CVPR 2015, figure 3)::

    conv1 -> pool1 -> conv2 -> pool2 -> conv3 -> pool3 -> conv4 -> pool4 -> conv5 -> pool5
          -> fc6 -> fc7 -> score_fr                       (fc6/fc7 are convolutions)
    FCN-32s: score_fr x32                                      -> crop to the input
    FCN-16s: score_fr x2 + score_pool4, then x16               -> crop to the input
    FCN-8s:  (score_fr x2 + score_pool4) x2 + score_pool3, x8  -> crop to the input

Every upsampling is a transposed convolution with kernel 2s and stride s, initialised
to bilinear interpolation and frozen unless ``learn_upsampling=True``.

Coordinate maps
---------------
Where does pixel ``x`` of some feature map sit in the input image? For each layer the
answer is affine, ``x_in = scale * x_out + shift``:

- convolution / pooling (kernel k, stride s, padding p): ``scale = s``, ``shift = (k - 1)/2 - p``
  (the centre of the window);
- transposed convolution: the inverse map, ``scale = 1/s``, ``shift = (p - (k - 1)/2) / s``;
- crop at offset o: ``scale = 1``, ``shift = o``; ReLU, dropout, scaling: the identity.

Composing them along the network gives every map's position in the input. Two maps
line up when their scales agree; the crop offset is the difference of their shifts
divided by the scale. :func:`coord_map` and :func:`crop_offset` do exactly this, and
every :class:`~tinyfcn.nn.Crop` in these models takes its offset from them -- none is
hard-coded. The fusions crop both maps to the window where both are defined.

With the authors' VGG16 settings (conv1_1 padding 100, ceil-mode pooling, fc6 7x7
unpadded, upsampling padding 0) this reproduces the reference offsets 19 (FCN-32s),
5 and 27 (FCN-16s), 5, 9 and 31 (FCN-8s). The tiny default pads every 3x3
convolution by 1, pools in ceil mode and pads each upsampling by s/2, so every map
starts at the same place (all offsets 0) and, for any H, W >= 1, every map is large
enough to be cropped to the input.
"""
import math

import numpy as np

from . import nn
from .sizes import pair

# ---------------------------------------------------------------- coordinate maps


def _geometry(layer):
    """Kernel, stride and padding of a convolution, pooling or transposed convolution, as (h, w) arrays."""
    if isinstance(layer, nn.MaxPool2d):
        k = pair(layer.kernel_size)
        s = k if layer.stride is None else pair(layer.stride)
        return np.array(k), np.array(s), np.array(pair(layer.padding))
    return np.array(layer.params["weight"].shape[2:]), np.array(layer.stride), np.array(layer.padding)


def layer_map(layer):
    """The affine map ``x_in = scale * x_out + shift`` of one layer, as ``(scale, shift)`` arrays over (h, w)."""
    if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
        k, s, p = _geometry(layer)
        return s.astype(float), (k - 1) / 2 - p
    if isinstance(layer, nn.ConvTranspose2d):
        k, s, p = _geometry(layer)
        return 1 / s, (p - (k - 1) / 2) / s
    if isinstance(layer, nn.Crop):
        return np.ones(2), np.array(layer.offset, dtype=float)
    return np.ones(2), np.zeros(2)                        # ReLU, Dropout, Scale, Add: same coordinates


def compose(outer, inner):
    """Chain two maps: ``outer`` takes layer A's output to the input, ``inner`` a later layer's output to A's output."""
    (s1, t1), (s2, t2) = outer, inner
    return s1 * s2, s1 * t2 + t1


def coord_map(layers, start=(np.ones(2), np.zeros(2))):
    """The map from the output of the last of ``layers`` (applied in order) to the input of the first."""
    result = start
    for layer in layers:
        result = compose(result, layer_map(layer))
    return result


def crop_offset(a, b):
    """Where map ``b`` starts inside map ``a``, in a's pixels: ``(shift_b - shift_a) / scale``.

    Both are maps to the same input. Raises ValueError if their scales differ (they
    cannot be aligned by a crop) or the offset is not a whole number of pixels.
    """
    (sa, ta), (sb, tb) = a, b
    if not np.allclose(sa, sb):
        raise ValueError(f"cannot align maps with scales {sa} and {sb}")
    offset = (tb - ta) / sa
    if not np.allclose(offset, np.round(offset)):
        raise ValueError(f"maps are misaligned by a fraction of a pixel: offset {offset}")
    return tuple(int(v) for v in np.round(offset))


# ---------------------------------------------------------------- the networks


class FCN:
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
    """

    arch = None

    def __init__(self, num_classes, in_channels=3, widths=(16, 32, 64, 128, 128), fc_width=256,
                 depths=(2, 2, 2, 2, 2), first_padding=1, fc6_kernel=3, fc6_padding=1, upsample_padding=True,
                 ceil_mode=True, dropout=0.5, learn_upsampling=False, seed=0, dtype=np.float32, **head):
        if len(widths) != 5 or len(depths) != 5:
            raise ValueError(f"{type(self).__name__}: widths and depths need one entry per stage (5), "
                             f"got {widths} and {depths}")
        self.config = dict(arch=self.arch, num_classes=num_classes, in_channels=in_channels, widths=list(widths),
                           fc_width=fc_width, depths=list(depths), first_padding=first_padding,
                           fc6_kernel=fc6_kernel, fc6_padding=fc6_padding, upsample_padding=upsample_padding,
                           ceil_mode=ceil_mode, dropout=dropout, learn_upsampling=learn_upsampling, **head)
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)
        self.layers, self.sources, self.maps = {}, {}, {"input": (np.ones(2), np.zeros(2))}
        self.training = True
        self.trunk = []                                    # conv1_1 ... score_fr, in order
        source, channels = "input", in_channels
        for stage, (width, depth) in enumerate(zip(widths, depths), start=1):
            for i in range(1, depth + 1):
                padding = first_padding if (stage, i) == (1, 1) else 1
                source = self._add_trunk(f"conv{stage}_{i}", self._conv(channels, width, 3, padding), source)
                source = self._add_trunk(f"relu{stage}_{i}", nn.ReLU(), source)
                channels = width
            source = self._add_trunk(f"pool{stage}", nn.MaxPool2d(2, 2, ceil_mode=ceil_mode), source)
        for name, c_in, k, p in (("6", channels, fc6_kernel, fc6_padding), ("7", fc_width, 1, 0)):
            source = self._add_trunk(f"fc{name}", self._conv(c_in, fc_width, k, p), source)
            source = self._add_trunk(f"relu{name}", nn.ReLU(), source)
            source = self._add_trunk(f"drop{name}", nn.Dropout(dropout, rng=self.rng), source)
        self._add_trunk("score_fr", self._conv(fc_width, num_classes, 1, 0, init="zeros"), source)
        self._build_head()

    # -- construction helpers: every layer is added with the name(s) of the map(s) it reads

    def _conv(self, c_in, c_out, k, padding, init="he"):
        return nn.Conv2d(c_in, c_out, k, padding=padding, init=init, rng=self.rng, dtype=self.dtype)

    def _upsample(self, factor):
        K = self.config["num_classes"]
        return nn.ConvTranspose2d(K, K, 2 * factor, stride=factor,
                                  padding=factor // 2 if self.config["upsample_padding"] else 0, bias=False,
                                  init="bilinear", trainable=self.config["learn_upsampling"], dtype=self.dtype)

    def _add(self, name, layer, *sources):
        self.layers[name] = layer
        self.sources[name] = sources
        self.maps[name] = compose(self.maps[sources[0]], layer_map(layer))
        return name

    def _add_trunk(self, name, layer, source):
        self.trunk.append(name)
        return self._add(name, layer, source)

    def _add_fusion(self, up, skip, fuse):
        """Crop ``up`` and ``skip`` to the window where both are defined, then add them as ``fuse``."""
        offset = np.array(crop_offset(self.maps[up], self.maps[skip]))
        self._add(up + "c", nn.Crop(tuple(int(v) for v in np.maximum(offset, 0))), up)
        self._add(skip + "c", nn.Crop(tuple(int(v) for v in np.maximum(-offset, 0))), skip)
        return self._add(fuse, nn.Add(), up + "c", skip + "c")

    def _add_output(self, up):
        """The final crop, ``score``: the window of ``up`` that covers the input pixel for pixel."""
        offset = crop_offset(self.maps[up], self.maps["input"])
        if min(offset) < 0:
            raise ValueError(f"{type(self).__name__}: the upsampled scores start {-min(offset)} px after the "
                             "input's first pixel; this configuration cannot cover the input")
        return self._add("score", nn.Crop(offset), up)

    def _add_skip(self, tap, scale=None):
        """``score_<tap>``: a zero-initialised 1x1 convolution scoring a pooled map (optionally scaled first)."""
        source = tap
        if scale is not None:
            source = self._add(f"scale_{tap}", nn.Scale(scale), tap)
        channels = self.config["widths"][int(tap[-1]) - 1]
        return self._add(f"score_{tap}", self._conv(channels, self.config["num_classes"], 1, 0, init="zeros"), source)

    # -- running the shared part

    def _check_input(self, x):
        C = self.config["in_channels"]
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1] != C or min(x.shape[2:], default=0) < 1:
            shape = x.shape if isinstance(x, np.ndarray) else type(x).__name__
            raise ValueError(f"{type(self).__name__}: expected an input of shape (N, {C}, H, W) with H, W >= 1, "
                             f"got {shape}")
        if x.dtype != self.dtype:
            raise TypeError(f"{type(self).__name__}: expected {self.dtype} input, got {x.dtype}")

    def _run(self, name, *inputs):
        out = self.layers[name].forward(*inputs)
        self.output_shapes[name] = out.shape
        return out

    def _features(self, x):
        """Backbone to score_fr; keeps pool3 and pool4 in ``self.taps`` for the skips."""
        self._check_input(x)
        self.output_shapes = {}
        h = x
        self.taps = {}
        for name in self.trunk:
            h = self._run(name, h)
            if name in ("pool3", "pool4"):
                self.taps[name] = h
        return h

    def _features_backward(self, dscore_fr, dtaps):
        """Backward through score_fr ... conv1_1. ``dtaps`` adds the skips' gradients where pool3/pool4 fan out."""
        d = dscore_fr
        for name in reversed(self.trunk):
            if name in dtaps:
                d = d + dtaps[name]
            d = self.layers[name].backward(d)
        return d

    def _skip_scores(self, tap):
        h = self.taps[tap]
        if f"scale_{tap}" in self.layers:
            h = self._run(f"scale_{tap}", h)
        return self._run(f"score_{tap}", h)

    def _skip_scores_backward(self, tap, d):
        d = self.layers[f"score_{tap}"].backward(d)
        if f"scale_{tap}" in self.layers:
            d = self.layers[f"scale_{tap}"].backward(d)
        return d

    def _fuse(self, up_name, skip_name, fuse_name, up, skip):
        crop_up, crop_skip = self.layers[up_name + "c"], self.layers[skip_name + "c"]
        size = (min(up.shape[2] - crop_up.offset[0], skip.shape[2] - crop_skip.offset[0]),
                min(up.shape[3] - crop_up.offset[1], skip.shape[3] - crop_skip.offset[1]))
        return self._run(fuse_name, self._run(up_name + "c", up, size), self._run(skip_name + "c", skip, size))

    def _fuse_backward(self, up_name, skip_name, fuse_name, d):
        dup, dskip = self.layers[fuse_name].backward(d)
        return self.layers[up_name + "c"].backward(dup), self.layers[skip_name + "c"].backward(dskip)

    # -- the model API

    @property
    def params(self):
        """Every parameter, keyed ``"<layer>.<name>"`` (e.g. ``"score_fr.weight"``): the arrays the layers use."""
        return {f"{name}.{k}": v for name, layer in self.layers.items() for k, v in layer.params.items()}

    @property
    def grads(self):
        """Gradients from the last ``backward``, keyed like :attr:`params`; frozen layers have none."""
        return {f"{name}.{k}": v for name, layer in self.layers.items() for k, v in layer.grads.items()}

    def train(self, mode=True):
        """Training mode (dropout on); ``mode=False`` is evaluation mode. Returns self."""
        self.training = mode
        for layer in self.layers.values():
            layer.train(mode)
        return self

    def eval(self):
        """Evaluation mode: dropout off. Returns self."""
        return self.train(False)

    def predict(self, x):
        """Label map (N, H, W) int64: the arg-max class of :meth:`forward` (call :meth:`eval` first)."""
        return self.forward(x).argmax(axis=1)

    def state_dict(self):
        """A copy of every parameter (frozen ones included), keyed like :attr:`params`."""
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, state):
        """Copy arrays into the parameters in place. Names and shapes must match exactly.

        Raises
        ------
        ValueError
            Naming the first missing, unexpected or wrongly shaped key.
        """
        params = self.params
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        if missing or unexpected:
            raise ValueError(f"{type(self).__name__}.load_state_dict: "
                             + (f"missing key {missing[0]!r}" if missing else f"unexpected key {unexpected[0]!r}")
                             + f" ({len(missing)} missing, {len(unexpected)} unexpected); "
                             "is this a checkpoint of another architecture?")
        for k, v in params.items():
            if np.shape(state[k]) != v.shape:
                raise ValueError(f"{type(self).__name__}.load_state_dict: {k!r} has shape {np.shape(state[k])}, "
                                 f"the model expects {v.shape}")
        for k, v in params.items():
            v[...] = state[k]

    def _copy_shared_from(self, other):
        """Copy every parameter this model shares (by name) with ``other``; new layers keep their init."""
        mine = self.params
        for k, v in other.params.items():
            if k in mine:
                mine[k][...] = v

    def summary(self, input_size=(64, 64)):
        """Print (and return) a table of every layer: output shape, total stride, receptive field, parameters.

        Runs one forward pass on zeros of ``input_size`` in evaluation mode. Total stride is
        how many input pixels one step on the layer's output spans (the scale of its
        coordinate map). The receptive field is the input
        window one output pixel can see (after a transposed convolution: at most).
        """
        training = self.training
        self.eval()
        self.forward(np.zeros((1, self.config["in_channels"], *pair(tuple(input_size))), self.dtype))
        self.train(training)
        field = {"input": 1.0}
        lines = [f"{type(self).__name__} on a {input_size[0]}x{input_size[1]} input",
                 f"{'layer':16s} {'type':17s} {'output shape':>20s} {'stride':>7s} {'field':>6s} {'params':>9s}"]
        for name, layer in self.layers.items():
            source = self.sources[name][0]
            jump = self.maps[source][0][0]                  # input pixels per step of the source map
            rf = max(field[s] for s in self.sources[name])
            if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
                rf += (_geometry(layer)[0][0] - 1) * jump
            elif isinstance(layer, nn.ConvTranspose2d):
                k, s, _ = _geometry(layer)
                rf += (math.ceil(k[0] / s[0]) - 1) * jump
            field[name] = rf
            stride = self.maps[name][0][0]
            n = sum(v.size for v in layer.params.values())
            lines.append(f"{name:16s} {type(layer).__name__:17s} {str(self.output_shapes[name]):>20s} "
                         f"{stride:7.4g} {rf:6.0f} {n:9,d}")
        total = sum(v.size for v in self.params.values())
        trainable = sum(v.size for name, layer in self.layers.items() for v in layer.params.values()
                        if getattr(layer, "trainable", True))
        lines.append(f"total parameters: {total:,d} ({trainable:,d} trainable)")
        text = "\n".join(lines)
        print(text)
        return text

class FCN32s(FCN):
    """FCN-32s: score_fr upsampled x32 in one step. Parameters: see :class:`FCN`."""

    arch = "fcn32s"

    def _build_head(self):
        self._add_output(self._add("upscore", self._upsample(32), "score_fr"))

    def forward(self, x):
        """Scores (N, K, H, W) for input x (N, C, H, W), any H, W >= 1."""
        up = self._run("upscore", self._features(x))
        return self._run("score", up, x)

    def backward(self, dscores):
        """Fill ``grads`` from dscores (N, K, H, W); returns the gradient with respect to the input."""
        d = self.layers["upscore"].backward(self.layers["score"].backward(dscores))
        return self._features_backward(d, {})


class FCN16s(FCN):
    """FCN-16s: score_fr x2, plus score_pool4, then x16. Parameters: see :class:`FCN`."""

    arch = "fcn16s"

    def _build_head(self):
        self._add("upscore2", self._upsample(2), "score_fr")
        self._add_skip("pool4")
        self._add_fusion("upscore2", "score_pool4", "fuse_pool4")
        self._add_output(self._add("upscore16", self._upsample(16), "fuse_pool4"))

    @classmethod
    def from_fcn32s(cls, model):
        """Staged training: an FCN-16s with every parameter it shares with a trained FCN-32s.

        score_pool4 starts at zero, so at first the skip adds nothing.
        """
        if not isinstance(model, FCN32s):
            raise TypeError(f"FCN16s.from_fcn32s needs an FCN32s, got {type(model).__name__}")
        new = cls(**{k: v for k, v in model.config.items() if k != "arch"}, dtype=model.dtype)
        new._copy_shared_from(model)
        return new

    def forward(self, x):
        """Scores (N, K, H, W) for input x (N, C, H, W), any H, W >= 1."""
        up = self._run("upscore2", self._features(x))
        fuse = self._fuse("upscore2", "score_pool4", "fuse_pool4", up, self._skip_scores("pool4"))
        return self._run("score", self._run("upscore16", fuse), x)

    def backward(self, dscores):
        """Fill ``grads`` from dscores (N, K, H, W); returns the gradient with respect to the input."""
        d = self.layers["upscore16"].backward(self.layers["score"].backward(dscores))
        dup, dskip = self._fuse_backward("upscore2", "score_pool4", "fuse_pool4", d)
        dpool4 = self._skip_scores_backward("pool4", dskip)
        return self._features_backward(self.layers["upscore2"].backward(dup), {"pool4": dpool4})


class FCN8s(FCN):
    """FCN-8s: (score_fr x2 + score_pool4) x2 + score_pool3, then x8.

    Parameters: see :class:`FCN`, plus ``at_once``: the authors' single-stage FCN-8s, which
    scales pool4 by 0.01 and pool3 by 0.0001 before scoring them, so the skips start small
    even when trained together with the rest from the beginning.
    """

    arch = "fcn8s"

    def __init__(self, num_classes, at_once=False, **kwargs):
        super().__init__(num_classes, at_once=at_once, **kwargs)

    def _build_head(self):
        at_once = self.config["at_once"]
        self._add("upscore2", self._upsample(2), "score_fr")
        self._add_skip("pool4", 0.01 if at_once else None)
        self._add_fusion("upscore2", "score_pool4", "fuse_pool4")
        self._add("upscore_pool4", self._upsample(2), "fuse_pool4")
        self._add_skip("pool3", 0.0001 if at_once else None)
        self._add_fusion("upscore_pool4", "score_pool3", "fuse_pool3")
        self._add_output(self._add("upscore8", self._upsample(8), "fuse_pool3"))

    @classmethod
    def from_fcn16s(cls, model, at_once=False):
        """Staged training: an FCN-8s with every parameter it shares with a trained FCN-16s.

        score_pool3 starts at zero, so at first the new skip adds nothing.
        """
        if not isinstance(model, FCN16s):
            raise TypeError(f"FCN8s.from_fcn16s needs an FCN16s, got {type(model).__name__}")
        new = cls(**{k: v for k, v in model.config.items() if k != "arch"}, at_once=at_once, dtype=model.dtype)
        new._copy_shared_from(model)
        return new

    def forward(self, x):
        """Scores (N, K, H, W) for input x (N, C, H, W), any H, W >= 1."""
        up = self._run("upscore2", self._features(x))
        fuse4 = self._fuse("upscore2", "score_pool4", "fuse_pool4", up, self._skip_scores("pool4"))
        up = self._run("upscore_pool4", fuse4)
        fuse3 = self._fuse("upscore_pool4", "score_pool3", "fuse_pool3", up, self._skip_scores("pool3"))
        return self._run("score", self._run("upscore8", fuse3), x)

    def backward(self, dscores):
        """Fill ``grads`` from dscores (N, K, H, W); returns the gradient with respect to the input."""
        d = self.layers["upscore8"].backward(self.layers["score"].backward(dscores))
        dup, dskip3 = self._fuse_backward("upscore_pool4", "score_pool3", "fuse_pool3", d)
        dpool3 = self._skip_scores_backward("pool3", dskip3)
        dup, dskip4 = self._fuse_backward("upscore2", "score_pool4", "fuse_pool4",
                                          self.layers["upscore_pool4"].backward(dup))
        dpool4 = self._skip_scores_backward("pool4", dskip4)
        return self._features_backward(self.layers["upscore2"].backward(dup), {"pool3": dpool3, "pool4": dpool4})


MODELS = {"fcn32s": FCN32s, "fcn16s": FCN16s, "fcn8s": FCN8s}


def build(config, dtype=np.float32, seed=0):
    """A model from its ``config`` dict (as stored in checkpoints): ``config["arch"]`` picks the class."""
    config = dict(config)
    arch = config.pop("arch", None)
    if arch not in MODELS:
        raise ValueError(f"unknown model {arch!r}: choose one of {', '.join(MODELS)}")
    return MODELS[arch](**config, dtype=dtype, seed=seed)
