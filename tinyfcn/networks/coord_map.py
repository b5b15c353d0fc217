"""Coordinate maps: where a pixel of any feature map sits in the input image.

For each layer the answer is affine, ``x_in = scale * x_out + shift``:

- convolution / pooling (kernel k, stride s, padding p): ``scale = s``, ``shift = (k - 1)/2 - p``
  (the centre of the window);
- transposed convolution: the inverse map, ``scale = 1/s``, ``shift = (p - (k - 1)/2) / s``;
- unpooling with a pool's switches: that pool's map inverted, ``scale = 1/s``, ``shift = -((k - 1)/2 - p)/s``,
  so the unpooled map lines up with the pool's input;
- crop at offset o: ``scale = 1``, ``shift = o``; ReLU, dropout, scaling, sums: the identity.

Composing them along a network gives every map's position in the input. Two maps
line up when their scales agree; the crop offset is the difference of their shifts
divided by the scale. :func:`crop_offset` does exactly this, and every
:class:`~tinyfcn.ops.nn.Crop` of a :class:`~tinyfcn.networks.graph.Graph` takes its offset from it:
none is typed in. (Caffe keeps the same algebra in its ``coord_map.py``.)
"""
import numpy as np

from ..ops import nn
from ..ops.sizes import pair

IDENTITY = (np.ones(2), np.zeros(2))
"""The map of the input image onto itself: scale 1, shift 0 on both axes."""


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
    if isinstance(layer, nn.MaxUnpool2d) and layer.pool is not None:
        scale, shift = layer_map(layer.pool)
        return 1 / scale, -shift / scale
    if isinstance(layer, nn.Crop):
        return np.ones(2), np.array(layer.offset, dtype=float)
    return IDENTITY                                       # ReLU, Dropout, Scale, Add: same coordinates


def compose(outer, inner):
    """Chain two maps: ``outer`` takes layer A's output to the input, ``inner`` a later layer's output to A's output."""
    (s1, t1), (s2, t2) = outer, inner
    return s1 * s2, s1 * t2 + t1


def coord_map(layers, start=IDENTITY):
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


def receptive_field(layer, field, jump):
    """The receptive field (in input pixels, along h) of ``layer``'s output.

    ``field`` is that of its input and ``jump`` how many input pixels one step on its
    input spans. A k-wide window adds ``(k - 1) * jump``; a transposed convolution with
    kernel k and stride s mixes at most ``ceil(k / s)`` input pixels, so it adds at most
    ``(ceil(k / s) - 1) * jump``.
    """
    if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
        return field + (_geometry(layer)[0][0] - 1) * jump
    if isinstance(layer, nn.ConvTranspose2d):
        k, s, _ = _geometry(layer)
        return field + (-(-k[0] // s[0]) - 1) * jump
    return field
