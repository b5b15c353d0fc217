"""From a :class:`~tinyfcn.datasets.Dataset` to network input: normalize, augment, collate, batches.

:func:`batches` turns a dataset into normalized NCHW float32 batches with int64 labels,
padding images of different sizes to a common size (labels with ``IGNORE``).

Normalization maps the 0 ... 1 pixel values ``v = image / 255`` to ``(v - mean) / std`` per
channel. ``FIXED = (0.5, 0.25)`` maps 0 ... 255 to -2 ... 2 whatever the data; a dataset's own
channel statistics (:func:`tinyfcn.datasets.statistics.channel_mean_std`) give its pixels mean 0
and standard deviation 1. A trained network expects the normalization it was trained with:
checkpoints store it, and evaluation, prediction and the exports use it.
"""
import numpy as np

from ..labels import IGNORE
from ..ops.sizes import pair

FIXED = (0.5, 0.25)
"""The normalization tinyfcn uses unless told otherwise: pixel values 0 ... 255 map to -2 ... 2."""


def normalize(images, normalization=FIXED):
    """uint8 images to float32 network input: ``(x / 255 - mean) / std`` per channel, channels first.

    With the default :data:`FIXED` (0.5, 0.25), pixel values 0 ... 255 map to -2 ... 2 and 0.0
    is the middle grey 127.5.

    Parameters
    ----------
    images : ndarray, uint8 (N, H, W, C) or (H, W, C)
    normalization : (mean, std), numbers or one per channel, in units of the 0 ... 1 values

    Returns
    -------
    ndarray, float32 (N, C, H, W) or (C, H, W)
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"normalize: images must be uint8 (N, H, W, C) or (H, W, C), "
                         f"got {images.dtype} {images.shape}")
    mean, std = (np.asarray(v, np.float32) for v in normalization)
    x = (images.astype(np.float32) / 255 - mean) / std
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def augment(image, label, rng, flip=True, crop=None):
    """Random training augmentation applied identically to an image and its label.

    Parameters
    ----------
    image : ndarray, uint8 (H, W, C)
    label : ndarray, uint8 (H, W)
    rng : numpy.random.Generator
    flip : bool
        Mirror left-right with probability 1/2.
    crop : int or (h, w), optional
        Cut a random h x w window. A side shorter than the window is first padded at the
        bottom/right: the image with 0, the label with 255 (ignore).

    Returns
    -------
    image : ndarray, uint8 (H, W, C), or (h, w, C) with ``crop``
    label : ndarray, uint8 (H, W), or (h, w) with ``crop``
    """
    if image.shape[:2] != label.shape:
        raise ValueError(f"augment: image {image.shape} and label {label.shape} differ in size")
    if flip and rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    if crop is not None:
        h, w = pair(crop, "crop")
        if h < 1 or w < 1:
            raise ValueError(f"augment: crop must be positive, got {(h, w)}")
        H, W = label.shape
        if h > H or w > W:
            pad = ((0, max(h - H, 0)), (0, max(w - W, 0)))
            image = np.pad(image, pad + ((0, 0),))
            label = np.pad(label, pad, constant_values=IGNORE)
            H, W = label.shape
        top, left = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
        image, label = image[top:top + h, left:left + w], label[top:top + h, left:left + w]
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def collate(pairs, normalization=FIXED):
    """Stack (image, label) pairs into one batch of network input and integer targets.

    uint8 images are normalized by :func:`normalize` with ``normalization``; float32 images (from
    :meth:`Dataset.from_arrays <tinyfcn.datasets.Dataset.from_arrays>`) are network input already.
    Images of different sizes are padded at the bottom/right to the largest H and W:
    the normalized image with 0.0, the label with 255 (ignore), so padding adds no loss.
    Labels are only ever copied, never interpolated.

    Parameters
    ----------
    pairs : sequence of (image uint8 or float32 (H, W, C), label uint8 (H, W))

    Returns
    -------
    x : ndarray, float32 (N, C, H, W), normalized
    y : ndarray, int64 (N, H, W), labels in [0, K) or 255
    """
    H = max(label.shape[0] for _, label in pairs)
    W = max(label.shape[1] for _, label in pairs)
    x = np.zeros((len(pairs), pairs[0][0].shape[2], H, W), np.float32)
    y = np.full((len(pairs), H, W), IGNORE, np.int64)
    for n, (image, label) in enumerate(pairs):
        h, w = label.shape
        x[n, :, :h, :w] = normalize(image, normalization) if image.dtype == np.uint8 else np.moveaxis(image, -1, 0)
        y[n, :h, :w] = label
    return x, y


def batches(dataset, batch_size, rng=None, augment_fn=None, order=None, start=0, normalization=FIXED):
    """Iterate over a dataset in batches made by :func:`collate`. The last batch may be smaller.

    Parameters
    ----------
    dataset : Dataset
    batch_size : int >= 1
    rng : numpy.random.Generator, optional
        Shuffle the order with it; None keeps the dataset's order.
    augment_fn : callable, optional
        ``augment_fn(image, label) -> (image, label)`` on uint8 arrays before
        normalization, e.g. ``functools.partial(augment, rng=rng, crop=48)``.
    order : int ndarray, optional
        Go through the images in this order instead (e.g. a saved epoch's shuffle); not with ``rng``.
    start : int
        Begin at this position of the order, to continue an epoch where it stopped.
    normalization : (mean, std) for :func:`normalize`

    Yields
    ------
    x : ndarray, float32 (N, C, H, W)
    y : ndarray, int64 (N, H, W)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batches: batch_size must be an int >= 1, got {batch_size!r}")
    if order is None:
        order = np.arange(len(dataset)) if rng is None else rng.permutation(len(dataset))
    elif rng is not None:
        raise ValueError("batches: give rng (to shuffle) or order, not both")
    for position in range(start, len(order), batch_size):
        pairs = [dataset[i] for i in order[position:position + batch_size]]
        if augment_fn is not None:
            pairs = [augment_fn(image, label) for image, label in pairs]
        yield collate(pairs, normalization)
