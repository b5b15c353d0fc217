"""Thin layer objects for assembling networks.

Every layer has ``forward(...)`` and ``backward(dout)``; ``forward`` keeps what
``backward`` needs, so call them in pairs. Layers with weights expose
``params`` (name -> the array the layer computes with, so updating it in place
trains the layer) and ``grads`` (same names and shapes, filled by ``backward``).
A frozen layer keeps its ``params`` but leaves ``grads`` empty, so an optimizer
that walks ``grads`` never moves it. State that is not learned by gradient descent (a
:class:`BatchNorm2d`'s running statistics) lives in ``buffers``: arrays the layer updates
in place during training-mode forward passes, saved with the parameters in a state dict,
but never in ``params`` or ``grads``, so no optimizer (and no weight decay) touches them.

A ``backward`` never modifies the gradient it is given. Where one map feeds two
layers, the caller adds the two gradients that come back.
"""
import contextlib

import numpy as np

from .. import threads
from ..labels import IGNORE
from . import functional as F
from .init import bilinear_kernel, he_normal, zeros
from .sizes import pair


class Layer:
    """Base class: empty ``params``/``grads``/``buffers`` and a training flag (:class:`Dropout` and :class:`BatchNorm2d` read it)."""

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.buffers = {}
        self.training = True

    def train(self, mode=True):
        """Switch to training mode (or evaluation mode with ``mode=False``); returns self."""
        self.training = mode
        return self

    def eval(self):
        """Switch to evaluation mode; returns self."""
        return self.train(False)

    def __repr__(self):
        return f"{type(self).__name__}()"


@contextlib.contextmanager
def evaluating(layer):
    """``with evaluating(model): ...`` runs the block in evaluation mode, then restores the caller's mode."""
    training = layer.training
    layer.eval()
    try:
        yield layer
    finally:
        layer.train(training)


def _initial_weight(init, shape, fan_in, rng, dtype):
    if init == "he":
        return he_normal(shape, fan_in, rng, dtype)
    if init == "zeros":
        return zeros(shape, dtype)
    if init == "bilinear":
        return bilinear_kernel(shape[0], shape[1], shape[2:], dtype)
    raise ValueError(f"unknown init {init!r}: use 'he', 'zeros' or 'bilinear'")


class Conv2d(Layer):
    """2-D convolution, ``y = conv2d(x, weight) + bias``; see :func:`tinyfcn.ops.functional.conv2d_forward`.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding : int or (int, int)
    bias : bool
    init : {"he", "zeros"}
        He normal (default) or all zeros (FCN's score layers). The bias starts at 0.
    rng : numpy.random.Generator, optional
    dtype : float32 (default) or float64

    ``params``: ``weight`` (C_out, C_in, kH, kW) and ``bias`` (C_out,).
    In evaluation mode the forward pass keeps no unfolded input (``keep_columns=False``: less
    memory for inference; a ``backward`` after it unfolds the input again).
    ``relu``: False; True makes the output ``max(out, 0)`` (bias and ReLU in one pass) and folds
    the ReLU's mask into ``backward`` (a :class:`~tinyfcn.networks.graph.Graph` sets it when a
    :class:`ReLU` alone reads this layer's map, and marks that ReLU ``fused``).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 init="he", rng=None, dtype=np.float32):
        super().__init__()
        kh, kw = pair(kernel_size, "kernel_size")
        self.stride, self.padding = pair(stride, "stride"), pair(padding, "padding")
        self.relu = False
        shape = (out_channels, in_channels, kh, kw)
        self.params["weight"] = _initial_weight(init, shape, in_channels * kh * kw, rng, dtype)
        if bias:
            self.params["bias"] = zeros(out_channels, dtype)

    def forward(self, x):
        self.cache = None          # free the last step's columns (the largest array) before making new ones
        out, self.cache = F.conv2d_forward(x, self.params["weight"], self.params.get("bias"),
                                           self.stride, self.padding, self.relu, keep_columns=self.training)
        return out

    def backward(self, dout, input_grad=True):
        """Fills ``grads``; returns dx, or None with ``input_grad=False`` (see :func:`~tinyfcn.ops.functional.conv2d_backward`)."""
        dx, self.grads["weight"], dbias = F.conv2d_backward(dout, self.cache, input_grad)
        if dbias is not None:
            self.grads["bias"] = dbias
        return dx

    def __repr__(self):
        C_out, C_in, kh, kw = self.params["weight"].shape
        return (f"Conv2d({C_in}, {C_out}, kernel_size=({kh}, {kw}), stride={self.stride}, "
                f"padding={self.padding}, bias={'bias' in self.params})")


class ConvTranspose2d(Layer):
    """2-D transposed convolution (learnable upsampling); see :func:`tinyfcn.ops.functional.conv_transpose2d_forward`.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, bias, rng, dtype
        As for :class:`Conv2d`.
    init : {"he", "zeros", "bilinear"}
        ``"bilinear"`` is FCN's upsampling kernel (needs in_channels == out_channels).
    trainable : bool
        False freezes the weight (FCN's default for its upsampling layers): ``backward``
        returns dx only; it neither computes nor fills ``grads``.

    ``params``: ``weight`` (C_in, C_out, kH, kW) and ``bias`` (C_out,).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 init="he", trainable=True, rng=None, dtype=np.float32):
        super().__init__()
        kh, kw = pair(kernel_size, "kernel_size")
        self.stride, self.padding = pair(stride, "stride"), pair(padding, "padding")
        self.trainable = trainable
        s = self.stride
        shape = (in_channels, out_channels, kh, kw)
        # each output pixel sees about in_channels * (kH/sH) * (kW/sW) inputs
        fan_in = max(1, in_channels * (kh // s[0]) * (kw // s[1]))
        self.params["weight"] = _initial_weight(init, shape, fan_in, rng, dtype)
        if bias:
            self.params["bias"] = zeros(out_channels, dtype)

    def forward(self, x):
        out, self.cache = F.conv_transpose2d_forward(x, self.params["weight"], self.params.get("bias"),
                                                     self.stride, self.padding)
        return out

    def backward(self, dout):
        dx, dweight, dbias = F.conv_transpose2d_backward(dout, self.cache, weight_grad=self.trainable)
        if dweight is not None:
            self.grads["weight"] = dweight
        if dbias is not None:
            self.grads["bias"] = dbias
        return dx

    def __repr__(self):
        C_in, C_out, kh, kw = self.params["weight"].shape
        return (f"ConvTranspose2d({C_in}, {C_out}, kernel_size=({kh}, {kw}), stride={self.stride}, "
                f"padding={self.padding}, bias={'bias' in self.params}, trainable={self.trainable})")


class MaxPool2d(Layer):
    """2-D max-pooling; see :func:`tinyfcn.ops.functional.max_pool2d_forward`.

    After ``forward``, ``indices`` holds where each maximum came from, for :class:`MaxUnpool2d`.
    """

    def __init__(self, kernel_size=2, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.ceil_mode = kernel_size, stride, padding, ceil_mode

    def forward(self, x):
        out, self.cache = F.max_pool2d_forward(x, self.kernel_size, self.stride, self.padding, self.ceil_mode)
        return out

    def backward(self, dout):
        return F.max_pool2d_backward(dout, self.cache)

    @property
    def indices(self):
        """(N, C, H_out, W_out) flat positions of the maxima of the last forward pass."""
        return self.cache[0]

    def __repr__(self):
        return (f"MaxPool2d(kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, ceil_mode={self.ceil_mode})")


class MaxUnpool2d(Layer):
    """Max-unpooling: every value goes back where a max-pool found its maximum, zeros elsewhere.

    See :func:`tinyfcn.ops.functional.max_unpool2d_forward`. Two ways to give it the switches:

    - ``MaxUnpool2d()``: ``forward(x, indices, output_size)`` with the indices of a max-pool;
    - ``MaxUnpool2d(pool)``: ``forward(x)`` takes the switches of the :class:`MaxPool2d`
      ``pool`` from its last forward pass and unpools to the size of that pool's input (odd
      sizes and ceil-mode windows included). This is the DeconvNet/SegNet decoder's layer, a
      node of a :class:`~tinyfcn.networks.graph.Graph`; its coordinate map is the pool's, inverted.

    ``backward(dout)`` reads dout at the same positions (a gather).
    """

    def __init__(self, pool=None):
        super().__init__()
        if pool is not None and not isinstance(pool, MaxPool2d):
            raise TypeError(f"MaxUnpool2d: needs the MaxPool2d whose switches it reads, got {type(pool).__name__}")
        self.pool = pool

    def forward(self, x, indices=None, output_size=None):
        if self.pool is not None:
            indices, x_shape, _ = self.pool.cache
            output_size = x_shape[2:]
        out, self.cache = F.max_unpool2d_forward(x, indices, output_size)
        return out

    def backward(self, dout):
        return F.max_unpool2d_backward(dout, self.cache)

    def __repr__(self):
        return "MaxUnpool2d()" if self.pool is None else f"MaxUnpool2d({self.pool!r})"


class ReLU(Layer):
    """``max(x, 0)``.

    ``fused``: False, or True when the layer before it rectifies its own output (its ``relu``,
    set with this flag by :class:`~tinyfcn.networks.graph.Graph`, which fuses the two). Then
    ``forward`` passes the already rectified map through (keeping it as ``cache``, as it keeps its
    output otherwise) and ``backward`` passes dout through: that layer's backward applies the mask.
    """

    def __init__(self):
        super().__init__()
        self.fused = False

    def forward(self, x):
        if self.fused:
            self.cache = x
            return x
        out, self.cache = F.relu_forward(x)
        return out

    def backward(self, dout):
        return dout if self.fused else F.relu_backward(dout, self.cache)


class BatchNorm2d(Layer):
    """Batch normalisation of each channel; see :func:`tinyfcn.ops.functional.batch_norm2d_forward`.

    Training mode normalises with the batch's statistics over (N, H, W) and moves the running
    statistics towards them; evaluation mode normalises with the running statistics.

    Parameters
    ----------
    num_features : int
        C, the number of channels.
    momentum : float in [0, 1]
        Weight of the new batch in the running statistics.
    eps : float > 0
        Added to the variance before the square root.
    dtype : float32 (default) or float64

    ``params``: ``weight`` (C,) ones and ``bias`` (C,) zeros (gamma and beta).
    ``buffers``: ``running_mean`` (C,) zeros and ``running_var`` (C,) ones.
    ``relu``: False; True makes the output ``max(out, 0)`` and folds the ReLU's mask into
    ``backward`` (a :class:`~tinyfcn.networks.graph.Graph` sets it when a :class:`ReLU` alone reads
    this layer's map, and marks that ReLU ``fused``).
    """

    def __init__(self, num_features, momentum=0.1, eps=1e-5, dtype=np.float32):
        super().__init__()
        self.momentum, self.eps, self.relu = momentum, eps, False
        self.params["weight"] = np.ones(num_features, dtype)
        self.params["bias"] = zeros(num_features, dtype)
        self.buffers["running_mean"] = zeros(num_features, dtype)
        self.buffers["running_var"] = np.ones(num_features, dtype)

    def forward(self, x):
        out, self.cache = F.batch_norm2d_forward(x, self.params["weight"], self.params["bias"],
                                                 self.buffers["running_mean"], self.buffers["running_var"],
                                                 self.training, self.momentum, self.eps, self.relu)
        return out

    def backward(self, dout):
        dx, self.grads["weight"], self.grads["bias"] = F.batch_norm2d_backward(dout, self.cache)
        return dx

    def fold(self, weight, bias=None):
        """The weight and bias of the layer before this one with this layer's evaluation-mode map folded in.

        In evaluation a BatchNorm is a per-channel affine map of the convolution (or dense layer)
        before it: with ``s = gamma / sqrt(running_var + eps)``, ``bn(conv(x; w, b)) = conv(x; w', b')``
        for ``w' = s * w`` (each output channel's row of ``weight``, shape (C, ...)) and
        ``b' = (b - running_mean) * s + beta`` (``bias`` None: b = 0). ``s`` and ``b'`` are
        computed in float64; ``w'`` is ``weight`` times ``s`` rounded to ``weight``'s dtype, one
        product per weight. Returns ``(w', b')`` in ``weight``'s dtype.
        """
        mean, var = (self.buffers[k].astype(np.float64) for k in ("running_mean", "running_var"))
        gamma, beta = (self.params[k].astype(np.float64) for k in ("weight", "bias"))
        scale = gamma / np.sqrt(var + self.eps)
        folded_bias = ((0.0 if bias is None else bias.astype(np.float64)) - mean) * scale + beta
        return weight * scale.astype(weight.dtype).reshape(-1, *[1] * (weight.ndim - 1)), folded_bias.astype(weight.dtype)

    def __repr__(self):
        return f"{type(self).__name__}({self.params['weight'].size}, momentum={self.momentum}, eps={self.eps})"


class BatchNorm1d(BatchNorm2d):
    """Batch normalisation of the features of (N, C) input, PyTorch's ``BatchNorm1d`` on 2-D input.

    Each row is a 1 x 1 map, so this is :class:`BatchNorm2d` on (N, C, 1, 1): the statistics of a
    feature run over the N rows (training needs N > 1). A dense layer's features become a 1x1
    convolution's channels when a classifier is convolutionalized; its BatchNorm1d becomes a
    BatchNorm2d with the same ``params`` and ``buffers``.

    Parameters, ``params`` and ``buffers``: as for :class:`BatchNorm2d`.
    """

    def forward(self, x):
        if np.ndim(x) != 2:
            raise ValueError(f"BatchNorm1d: expected an input of shape (N, C), got {np.shape(x)}")
        return super().forward(x[:, :, None, None])[:, :, 0, 0]

    def backward(self, dout):
        return super().backward(dout[:, :, None, None])[:, :, 0, 0]


class Dropout(Layer):
    """Inverted dropout: in training, zero each value with probability p and scale the rest by 1/(1-p).

    In evaluation mode it is the identity, so nothing needs rescaling at test time.

    Parameters
    ----------
    p : float in [0, 1)
    rng : numpy.random.Generator, optional
        Source of the masks; seed it for a reproducible run.
    """

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must lie in [0, 1), got {p}")
        self.p = p
        self.rng = np.random.default_rng() if rng is None else rng

    def forward(self, x):
        if not self.training or self.p == 0:
            self.mask = None
            return x
        self.mask = (self.rng.random(x.shape) >= self.p).astype(x.dtype) / x.dtype.type(1 - self.p)
        return x * self.mask

    def backward(self, dout):
        return dout if self.mask is None else dout * self.mask

    def __repr__(self):
        return f"Dropout(p={self.p})"


class SoftmaxCrossEntropy(Layer):
    """Per-pixel softmax cross-entropy; see :func:`tinyfcn.ops.functional.softmax_cross_entropy`.

    Parameters
    ----------
    ignore_index : int
        The label of pixels that count in neither the loss nor its gradient.
    reduction : {"mean", "sum"}
    class_weights : ndarray (K,) of floats >= 0, or None
        Each pixel's loss is multiplied by its label's weight (PyTorch's ``weight``); the mean
        is then the weighted mean. Checked against the scores' K at every ``forward``.

    ``forward(scores, target)`` returns the loss (a float); ``backward()`` returns dscores.
    Scores (N, K, H, W) with labels (N, H, W), or a classifier's logits (N, K) with labels (N,)
    (each taken as a 1 x 1 map).
    """

    def __init__(self, ignore_index=IGNORE, reduction="mean", class_weights=None):
        super().__init__()
        self.ignore_index, self.reduction, self.class_weights = ignore_index, reduction, class_weights

    def forward(self, scores, target):
        self.logits = np.ndim(scores) == 2
        if self.logits:
            scores, target = scores[:, :, None, None], np.asarray(target)[:, None, None]
        loss, self.dscores = F.softmax_cross_entropy(scores, target, self.ignore_index, self.reduction,
                                                     self.class_weights)
        return loss

    def backward(self, dloss=1.0):
        dscores = self.dscores * self.dscores.dtype.type(dloss)
        return dscores[:, :, 0, 0] if self.logits else dscores

    def __repr__(self):
        weights = "" if self.class_weights is None else f", class_weights={np.asarray(self.class_weights).tolist()}"
        return f"SoftmaxCrossEntropy(ignore_index={self.ignore_index}, reduction={self.reduction!r}{weights})"


class Scale(Layer):
    """Multiply by a fixed factor (the at-once FCN-8s scales pool4 by 0.01 and pool3 by 0.0001)."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * x.dtype.type(self.factor)

    def backward(self, dout):
        return dout * dout.dtype.type(self.factor)

    def __repr__(self):
        return f"Scale({self.factor})"


class Crop(Layer):
    """The window of ``x`` that lines up with another map, ``like`` (Caffe's Crop on axes 2, 3).

    ``forward(x, like)``: x (N, C, H, W), ``like`` an array (N', C', H', W') or an (H', W') pair.
    Returns ``x[:, :, oh:oh + h, ow:ow + w]``, the part of x that overlaps ``like``:
    ``h = min(H - oh, H' - lh)`` where ``offset`` (oh, ow) is where the window starts in x
    and ``like_offset`` (lh, lw) where it starts in ``like``. FCN crops an upsampled map and
    a skip this way before adding them, and the final scores to the input.
    ``backward(dout)`` returns ``(dx, None)``: dout put back in a zero map of x's shape
    (``like`` only lends its size).

    The offsets come from coordinate maps (:mod:`tinyfcn.networks.coord_map`): a
    :class:`~tinyfcn.networks.graph.Graph` fills them in for a ``Crop()`` declared without them.
    Both are counted from the top-left corner, so they must be >= 0 (a negative one would
    silently read a window counted from the far end, as Python slicing does): a ValueError
    at construction says so.
    """

    def __init__(self, offset=None, like_offset=0):
        super().__init__()
        self.offset = None if offset is None else pair(offset, "offset")
        self.like_offset = pair(like_offset, "like_offset")
        for name, corner, where in (("offset", self.offset or (0, 0), "x"), ("like_offset", self.like_offset, "like")):
            if min(corner) < 0:
                raise ValueError(f"Crop: {name} must be >= 0 (where the window starts in {where}), got {corner}")

    def forward(self, x, like):
        if self.offset is None:
            raise ValueError("Crop: no offset; give one, or add the layer to a Graph, which computes it")
        H_like, W_like = like.shape[-2:] if isinstance(like, np.ndarray) else pair(tuple(like), "like")
        (oh, ow), (lh, lw), (H, W) = self.offset, self.like_offset, x.shape[-2:]
        h, w = min(H - oh, H_like - lh), min(W - ow, W_like - lw)
        if h < 1 or w < 1:
            raise ValueError(f"Crop: a {H}x{W} map cropped at {(oh, ow)} does not overlap a {H_like}x{W_like} "
                             f"map cropped at {(lh, lw)}")
        self.x_shape = x.shape
        return x[:, :, oh:oh + h, ow:ow + w]

    def backward(self, dout):
        oh, ow = self.offset
        dx = np.zeros(self.x_shape, dout.dtype)
        dx[:, :, oh:oh + dout.shape[2], ow:ow + dout.shape[3]] = dout
        return dx, None

    def __repr__(self):
        return f"Crop(offset={self.offset}, like_offset={self.like_offset})"


class Add(Layer):
    """Element-wise sum of two maps of the same shape (FCN's skip fusion). Both inputs receive dout."""

    def forward(self, a, b):
        if a.shape != b.shape:
            raise ValueError(f"Add: the two maps must have the same shape, got {a.shape} and {b.shape}")
        return a + b

    def backward(self, dout):
        return dout, dout


class Concat(Layer):
    """Concatenate maps along the channel axis (the U-Net alternative to FCN's sum). ``backward`` splits dout."""

    def forward(self, *maps):
        if len({(m.shape[0], *m.shape[2:]) for m in maps}) != 1:
            raise ValueError(f"Concat: maps must agree on N, H and W, got {[m.shape for m in maps]}")
        self.splits = np.cumsum([m.shape[1] for m in maps])[:-1]
        return np.concatenate(maps, axis=1)

    def backward(self, dout):
        return tuple(np.split(dout, self.splits, axis=1))


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W), in C, H, W order (a convolution weight's order); ``backward`` reshapes back."""

    def forward(self, x):
        self.x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self.x_shape)


class Linear(Layer):
    """A fully connected layer, ``y = x @ weight.T + bias`` (PyTorch's layout).

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    init : {"he", "zeros"}
    rng : numpy.random.Generator, optional
    dtype : float32 (default) or float64

    ``params``: ``weight`` (out_features, in_features) and ``bias`` (out_features,).
    Reshaped to (out, C, k, k) the weight is a k x k convolution over a C x k x k map
    (:func:`tinyfcn.networks.surgery.convolutionalize`).
    """

    def __init__(self, in_features, out_features, bias=True, init="he", rng=None, dtype=np.float32):
        super().__init__()
        self.params["weight"] = _initial_weight(init, (out_features, in_features), in_features, rng, dtype)
        if bias:
            self.params["bias"] = zeros(out_features, dtype)

    def forward(self, x):
        W = self.params["weight"]
        if x.ndim != 2 or x.shape[1] != W.shape[1]:
            raise ValueError(f"Linear: expected an input of shape (N, {W.shape[1]}), got {x.shape}")
        self.x = x
        with threads.computing():                              # a one-thread BLAS: the same bits for any count
            out = x @ W.T
        return out + self.params["bias"] if "bias" in self.params else out

    def backward(self, dout):
        with threads.computing():
            self.grads["weight"] = dout.T @ self.x             # (out, N) @ (N, in)
            dx = dout @ self.params["weight"]
        if "bias" in self.params:
            self.grads["bias"] = dout.sum(axis=0)
        return dx

    def __repr__(self):
        out_features, in_features = self.params["weight"].shape
        return f"Linear({in_features}, {out_features}, bias={'bias' in self.params})"
