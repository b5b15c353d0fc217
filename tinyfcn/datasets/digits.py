"""The digits dataset: multi-digit scenes from real handwritten digits (:func:`make_digits`).

The 8x8 digits are UCI's optical-digits test set, shipped inside the package as
``digits.csv.gz`` (CC BY 4.0; see data/README.md) and read with :func:`load_digits`.
"""
import gzip
from importlib import resources

import numpy as np
from PIL import Image

from ..ops.sizes import pair
from .toy import check_counts, image_rngs
from .voc import write_dataset

DIGITS_CSV = resources.files(__package__) / "digits.csv.gz"
DIGITS_N_TRAIN = 1440
"""Rows [0, 1440) of the digits file make the training scenes, rows [1440, 1797) the validation scenes."""

DIGITS_CLASSES = ["background"] + [str(d) for d in range(10)]


def load_digits(split=None):
    """The 1797 handwritten digits of UCI's optical-digits set, shipped as ``tinyfcn/datasets/digits.csv.gz``.

    Each row of the file is 64 pixel values (an 8x8 image, 0 = paper ... 16 = ink) and the digit.

    Parameters
    ----------
    split : {None, "train", "val"}
        None: all rows. "train": rows [0, 1440). "val": rows [1440, 1797), digit images
        that the training scenes never show.

    Returns
    -------
    pixels : ndarray, uint8 (n, 8, 8), values 0 ... 16
    digits : ndarray, int64 (n,), values 0 ... 9
    """
    if not DIGITS_CSV.is_file():
        raise FileNotFoundError(f"{DIGITS_CSV}: the digits file is missing from the installed tinyfcn package; "
                                f"reinstall it (pip install .)")
    with DIGITS_CSV.open("rb") as raw, gzip.open(raw, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    rows = {None: slice(None), "train": slice(0, DIGITS_N_TRAIN), "val": slice(DIGITS_N_TRAIN, None)}
    if split not in rows:
        raise ValueError(f"load_digits: split must be None, 'train' or 'val', got {split!r}")
    table = table[rows[split]]
    return table[:, :64].reshape(-1, 8, 8).astype(np.uint8), table[:, 64]


def _resize_bilinear(a, h, w):
    """Bilinear resize of a 2-D array to (h, w) with Pillow, sampling pixel centres (align_corners=False).

    Computed in float32 (Pillow's "F" images); returns a float32 array.
    """
    return np.asarray(Image.fromarray(np.asarray(a, np.float32)).resize((w, h), Image.BILINEAR))


DIGIT_INK = 0.5
"""A scene pixel is labelled with a digit where the upscaled ink (0 ... 1) is above this."""


def _digits_scene(rng, pixels, digits, size):
    """One digits scene and its label; see :func:`make_digits`.

    Returns
    -------
    image : ndarray, uint8 (H, W, 1), ink white on black
    label : ndarray, uint8 (H, W), 0 background, d + 1 for digit d
    """
    H, W = size
    ink = np.zeros((H, W))                 # the strongest ink at each pixel so far
    label = np.zeros((H, W), np.uint8)
    for n in range(rng.integers(1, 4)):
        k = rng.integers(len(digits))
        side = min(int(round(10 * rng.uniform(2, 3))), H, W)
        # a blank border of one source pixel lets the strokes fade out before the edge
        glyph = _resize_bilinear(np.pad(pixels[k] / 16, 1), side, side)
        mine = glyph > DIGIT_INK
        for _attempt in range(20):         # a place where at most 10% of its labelled pixels cover other digits
            top, left = rng.integers(0, H - side + 1), rng.integers(0, W - side + 1)
            window = np.s_[top:top + side, left:left + side]
            if n == 0 or (mine & (label[window] > 0)).sum() <= 0.1 * mine.sum():
                break
        else:
            continue
        wins = glyph > ink[window]
        label[window][wins & mine] = digits[k] + 1
        ink[window] = np.maximum(ink[window], glyph)
    return np.round(ink * 255).astype(np.uint8)[:, :, None], label


def make_digits(out, n_train=2000, n_val=400, seed=0, size=(64, 84)):
    """Generate multi-digit scenes (M2NIST-style) in the VOC layout from real handwritten digits.

    11 classes: 0 background, then label d + 1 for digit d ("0" ... "9"). Each grayscale
    scene holds 1-3 digits from :func:`load_digits`, each upscaled smoothly (bilinear)
    from 8x8 (plus a blank 1-pixel border) to a random 20-30 px square and placed at random
    with at most 10% of its labelled pixels over other digits. A pixel is labelled with a
    digit where its ink is above ``DIGIT_INK`` = 0.5. Training scenes use digit rows
    [0, 1440) and validation scenes rows [1440, 1797): validation digits are unseen in training.

    Parameters
    ----------
    out : str or Path, the folder to write (created; old split lists are replaced)
    n_train, n_val : int >= 1
    seed : int; the same seed writes the same files
    size : int or (H, W), at least 20x20 (default 64 x 84)

    Returns
    -------
    Path, the dataset folder
    """
    check_counts(n_train, n_val)
    size = pair(size, "size")
    if min(size) < 20:
        raise ValueError(f"make_digits: size must be at least 20x20, got {size}")
    splits = {}
    for k, (split, n) in enumerate((("train", n_train), ("val", n_val))):
        pixels, digits = load_digits(split)
        splits[split] = (_digits_scene(rng, pixels, digits, size) for rng in image_rngs(seed, n, k))
    return write_dataset(out, DIGITS_CLASSES, splits)
