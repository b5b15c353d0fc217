"""Statistics of a dataset split: pixels per class, median-frequency class weights, channel mean and std.

Each statistic reads every image or label map of a :class:`~tinyfcn.datasets.Dataset` once,
with ``np.bincount`` and sums (a Python loop over the images, none over pixels). The class
weights are meant for :func:`tinyfcn.ops.functional.softmax_cross_entropy`'s
``class_weights``; :func:`read_class_weights` reads weights written by hand.
"""
import math
from pathlib import Path

import numpy as np

from ..labels import IGNORE
from .dataset import DatasetError


def _label_counts(dataset):
    """Per class c: the pixels labelled c, and the labelled pixels of the images in which c appears.

    Returns two int64 arrays (K,). ``IGNORE`` pixels count in neither. A label that is neither
    in [0, K) nor ``IGNORE`` is a :class:`DatasetError` naming the image.
    """
    K = dataset.num_classes
    counts = np.zeros(K, np.int64)
    area = np.zeros(K, np.int64)
    names = getattr(dataset, "names", None) or [str(i) for i in range(len(dataset))]
    for i, name in enumerate(names):                    # by index: any dataset that is indexed like one
        label = dataset[i][1]
        histogram = np.bincount(label.reshape(-1), minlength=IGNORE + 1)  # uint8 labels: 256 bins
        stray = np.flatnonzero(histogram[K:IGNORE]) + K
        if stray.size:
            raise DatasetError(f"label {name!r}: values {stray[:8].tolist()} are >= K = {K} classes "
                               f"and not {IGNORE} (ignore)")
        counts += histogram[:K]
        area[histogram[:K] > 0] += histogram[:K].sum()
    return counts, area


def class_pixel_counts(dataset):
    """How many pixels of the split carry each label.

    Parameters
    ----------
    dataset : tinyfcn.datasets.Dataset

    Returns
    -------
    ndarray, int64 (K,)
        ``counts[c]`` = the pixels labelled c over every label map; ``IGNORE`` pixels are not counted.
    """
    return _label_counts(dataset)[0]


def median_frequency_weights(dataset):
    """Median-frequency balancing: class weights that make rare classes count as much as common ones.

    ``freq(c) = pixels of class c / labelled pixels of the images in which c appears`` and
    ``w(c) = median_c' freq(c') / freq(c)``, the median taken over the classes that appear
    (the mean of the two middle values for an even number). A class of median frequency gets
    weight 1, a class half as frequent weight 2. Pixels labelled ``IGNORE`` belong to no class
    and are in no total. A class that never appears gets weight 0 (it has no pixels to weigh)
    and is left out of the median.

    From Eigen & Fergus, "Predicting Depth, Surface Normals and Semantic Labels with a Common
    Multi-Scale Convolutional Architecture" (ICCV 2015), as used to train SegNet
    (Badrinarayanan, Kendall & Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder
    Architecture for Image Segmentation", TPAMI 2017).

    Parameters
    ----------
    dataset : tinyfcn.datasets.Dataset

    Returns
    -------
    ndarray, float64 (K,)

    Raises
    ------
    ValueError
        When no pixel of the split is labelled (every one is ``IGNORE``).
    """
    counts, area = _label_counts(dataset)
    present = counts > 0
    if not present.any():
        raise ValueError(f"median_frequency_weights: no pixel of the {len(dataset)} label maps has a class "
                         f"(all are {IGNORE}, ignore)")
    freq = counts[present] / area[present]
    weights = np.zeros(len(counts))
    weights[present] = np.median(freq) / freq
    return weights


def channel_mean_std(dataset):
    """The mean and standard deviation of each image channel over every pixel of the split, in [0, 1] units.

    ``mean[c] = sum x_c / (255 n)`` and ``std[c] = sqrt(sum x_c^2 / n - (sum x_c / n)^2) / 255``
    (the population std) over the n pixels of all images, x the uint8 values. The sums are
    exact integer sums; only the final division rounds. The result is what
    ``Dataset.from_arrays(..., normalize=(mean, std))`` takes.

    Parameters
    ----------
    dataset : tinyfcn.datasets.Dataset with uint8 images (H, W, C)

    Returns
    -------
    mean, std : ndarray, float64 (C,) each

    Raises
    ------
    ValueError
        For float32 images: those are network input, already normalized, and the statistics are
        of raw 0 ... 255 images.
    """
    first = dataset[0][0]
    if first.dtype != np.uint8:
        raise ValueError(f"channel_mean_std: the images are {first.dtype} network input, already "
                         f"normalized; the statistics are of raw 0..255 (uint8) images")
    C = first.shape[2]
    n, total, squares = 0, np.zeros(C, np.int64), np.zeros(C, np.int64)
    for image in (dataset[i][0] for i in range(len(dataset))):
        values = image.reshape(-1, C).astype(np.int64)
        n += len(values)
        total += values.sum(axis=0)
        squares += (values * values).sum(axis=0)
    total, squares = [int(v) for v in total], [int(v) for v in squares]     # Python ints: n * squares is exact
    mean = np.array([t / (255 * n) for t in total])
    std = np.array([math.sqrt((n * q - t * t) / (255 * n) ** 2) for t, q in zip(total, squares)])
    return mean, std


def read_class_weights(path, num_classes):
    """Class weights from a text file: one number >= 0 per line, line i of the numbers for class i.

    Blank lines and ``#`` comments (whole lines, or after a number) are skipped.

    Parameters
    ----------
    path : str or Path
    num_classes : int
        K; the file must hold exactly K numbers.

    Returns
    -------
    ndarray, float64 (K,)

    Raises
    ------
    ValueError
        One line naming the file and the line: text that is not a number, a negative or non-finite
        number, or more or fewer than K numbers.
    """
    path = Path(path)
    need = f"the file needs one weight per class, K = {num_classes} lines"
    lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    weights, where = [], []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{path}: line {number}: {text!r} is not a number; {need}") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{path}: line {number}: {text} is not a finite weight >= 0; {need}")
        weights.append(value)
        where.append(number)
    if len(weights) > num_classes:
        raise ValueError(f"{path}: line {where[num_classes]}: weight {num_classes + 1} of {len(weights)}, "
                         f"more than the classes; {need}")
    if len(weights) < num_classes:
        end = (f"line {len(lines)}: the file ends after {len(weights)} weights" if weights
               else "no weights, only blank lines and comments")
        raise ValueError(f"{path}: {end}; {need}")
    return np.array(weights)
