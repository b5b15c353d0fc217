"""The FCN paper's four metrics, all read off one confusion matrix accumulated over a dataset.

As in the FCN authors' ``score.py``, every labelled pixel of the whole dataset goes into a
single K x K matrix, ``n[i, j]`` = pixels of class i predicted as class j, built with
``np.bincount(K * target + pred, minlength=K * K)``. The metrics come from that matrix at
the end; averaging per-image scores instead gives different (and noisier) numbers.

With ``t_i = sum_j n[i, j]`` (pixels of class i) and ``n_cl`` classes (paper, section 5):

- pixel accuracy:          ``sum_i n_ii / sum_i t_i``
- mean accuracy:           ``(1 / n_cl) sum_i n_ii / t_i``
- mean IU:                 ``(1 / n_cl) sum_i n_ii / (t_i + sum_j n_ji - n_ii)``
- frequency-weighted IU:   ``(sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)``

The module also measures accuracy in a band around the object boundaries (what DeepLab
calls a trimap evaluation; the FCN paper reports none), where coarse FCN-32s predictions
lose most against FCN-8s.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..labels import IGNORE


def _check_labels(name, a):
    """Return ``a`` as an integer ndarray, or raise a TypeError naming it."""
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array of labels, got dtype {a.dtype}")
    return a


def confusion_matrix(target, pred, num_classes, ignore_index=IGNORE):
    """Count pixels by (true class, predicted class).

    Parameters
    ----------
    target : integer ndarray, any shape, e.g. (H, W) or (N, H, W)
        Ground-truth labels. Pixels equal to ``ignore_index`` or outside ``[0, num_classes)``
        are dropped (not counted anywhere).
    pred : integer ndarray, same shape as ``target``
        Predicted labels. At the counted pixels they must lie in ``[0, num_classes)``;
        at dropped pixels they are not looked at.
    num_classes : int
        K, the number of classes.
    ignore_index : int

    Returns
    -------
    matrix : ndarray, shape (K, K), int64
        ``matrix[i, j]`` = pixels of class i predicted as class j: rows are ground truth,
        columns are predictions.

    Raises
    ------
    ValueError
        If the shapes differ, K < 1, or a counted prediction is outside ``[0, K)``.
    """
    target, pred = _check_labels("target", target), _check_labels("pred", pred)
    if target.shape != pred.shape:
        raise ValueError(f"confusion_matrix: target {target.shape} and pred {pred.shape} must have the same shape")
    if num_classes < 1:
        raise ValueError(f"confusion_matrix: num_classes must be at least 1, got {num_classes}")
    keep = (target != ignore_index) & (target >= 0) & (target < num_classes)
    t, p = target[keep].astype(np.int64), pred[keep].astype(np.int64)
    bad = (p < 0) | (p >= num_classes)
    if bad.any():
        raise ValueError(f"confusion_matrix: predictions must lie in [0, {num_classes}); "
                         f"found {np.unique(p[bad])[:10].tolist()}")
    counts = np.bincount(num_classes * t + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _nanmean(values):
    """Mean of the non-NaN entries; NaN (and no warning) when there are none."""
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else float("nan")


def scores(matrix):
    """The paper's four metrics and the per-class IoU from a confusion matrix.

    Classes with no pixels in the target *and* none predicted have an undefined IoU:
    it is NaN and the means skip it (``np.nanmean``), so a dataset without, say, any
    "sofa" is not punished for it. A class predicted but absent from the target has
    IoU 0 and counts in the mean. Mean accuracy skips classes with no target pixels.

    Parameters
    ----------
    matrix : ndarray, shape (K, K)
        From :func:`confusion_matrix`; rows are ground truth, columns predictions.

    Returns
    -------
    dict
        ``"pixel_accuracy"``, ``"mean_accuracy"``, ``"mean_iou"``, ``"fw_iou"`` (floats) and
        ``"per_class_iou"`` (list of K floats, NaN for classes absent from target and
        prediction). An empty matrix gives NaN everywhere.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"scores: matrix must be square (K, K), got shape {m.shape}")
    if (m < 0).any():
        raise ValueError("scores: a confusion matrix holds counts, but this one has negative entries")
    hits = np.diag(m)                    # n_ii
    true = m.sum(axis=1)                 # t_i
    predicted = m.sum(axis=0)            # sum_j n_ji
    total = true.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = hits / (true + predicted - hits)        # NaN where the class is in neither
        accuracy = hits / true                        # NaN where the class has no target pixels
        pixel_accuracy = hits.sum() / total
        fw_iou = (true[true > 0] * iou[true > 0]).sum() / total
    return {
        "pixel_accuracy": float(pixel_accuracy),
        "mean_accuracy": _nanmean(accuracy),
        "mean_iou": _nanmean(iou),
        "fw_iou": float(fw_iou),
        "per_class_iou": iou.tolist(),
    }


class ConfusionMatrix:
    """A confusion matrix accumulated over many batches; read the metrics at the end.

    Parameters
    ----------
    num_classes : int
    ignore_index : int

    Attributes
    ----------
    matrix : ndarray, shape (K, K), int64
        Counts so far; rows are ground truth, columns predictions.

    Examples
    --------
    >>> cm = ConfusionMatrix(3)
    >>> cm.update(np.array([[0, 1], [2, 255]]), np.array([[0, 1], [1, 0]]))
    >>> cm.scores()["pixel_accuracy"]
    0.6666666666666666
    """

    def __init__(self, num_classes, ignore_index=IGNORE):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, target, pred):
        """Add a batch: ``target`` and ``pred`` integer arrays of the same shape, see :func:`confusion_matrix`."""
        self.matrix += confusion_matrix(target, pred, self.num_classes, self.ignore_index)

    def scores(self):
        """The metrics of everything seen so far; see :func:`scores`."""
        return scores(self.matrix)

    def __repr__(self):
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={self.matrix.sum()})"


def _window_reduce(reduce, a, radius):
    """Apply ``reduce`` (np.max or np.min) over a (2r+1) x (2r+1) window on the last two axes.

    The border is padded by repeating the edge, which changes neither a max nor a min,
    so windows are simply clipped at the image border. Max and min over a square are
    separable: one pass along the rows, one along the columns.
    """
    for axis in (-2, -1):
        pad = [(0, 0)] * a.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(a, pad, mode="edge")
        a = reduce(sliding_window_view(padded, 2 * radius + 1, axis=axis), axis=-1)
    return a


def boundary_band(target, width, ignore_index=IGNORE):
    """Pixels within ``width`` pixels of a ground-truth label boundary (the boundary band).

    A pixel is in the band when some pixel at Chebyshev distance at most ``width``
    (``max(|di|, |dj|) <= width``, a (2w+1) x (2w+1) square) has a different label; with
    ``width=1``, when one of its 8 neighbours differs. The ignore label counts as a label
    here, because VOC draws a void outline around every object: its edges are the object
    boundaries. Ignore pixels themselves are never in the band. So give each image at its own
    size: a batch padded with the ignore label would make the padding's edge a boundary
    (:func:`tinyfcn.training.train.evaluate` passes each image unpadded).

    Computed as ``max over the square != min over the square``, which is true exactly when
    the square holds two different labels.

    Parameters
    ----------
    target : integer ndarray, shape (H, W) or (N, H, W)
        Ground-truth labels; in a batch each image gets its own band.
    width : int
        Band half-width in pixels, at least 1.
    ignore_index : int

    Returns
    -------
    band : bool ndarray, the shape of ``target``
    """
    target = _check_labels("target", target)
    if target.ndim not in (2, 3):
        raise ValueError(f"boundary_band: target must be (H, W) or (N, H, W), got shape {target.shape}")
    if not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"boundary_band: width must be an int >= 1, got {width!r}")
    band = _window_reduce(np.max, target, width) != _window_reduce(np.min, target, width)
    return band & (target != ignore_index)


class BoundaryAccuracy:
    """Pixel accuracy inside the boundary band (:func:`boundary_band`), accumulated over a dataset.

    How well object outlines are placed, which whole-image metrics
    barely see because boundary pixels are few. Counts are summed over every update, so
    the value is a dataset-level accuracy, not a mean of per-image ones.

    Parameters
    ----------
    width : int
        Band half-width in pixels.
    ignore_index : int

    Attributes
    ----------
    correct, total : int
        Band pixels predicted correctly, and band pixels, so far.
    """

    def __init__(self, width=3, ignore_index=IGNORE):
        self.width = width
        self.ignore_index = ignore_index
        self.correct = 0
        self.total = 0

    def update(self, target, pred):
        """Add a batch: ``target`` and ``pred`` integer arrays of shape (H, W) or (N, H, W)."""
        pred = _check_labels("pred", pred)
        band = boundary_band(target, self.width, self.ignore_index)
        if pred.shape != band.shape:
            raise ValueError(f"BoundaryAccuracy: target {band.shape} and pred {pred.shape} must have the same shape")
        self.correct += int((np.asarray(target)[band] == pred[band]).sum())
        self.total += int(band.sum())

    def value(self):
        """Accuracy in the band so far; NaN before any band pixel has been seen."""
        return self.correct / self.total if self.total else float("nan")

    def __repr__(self):
        return f"BoundaryAccuracy(width={self.width}, pixels={self.total})"
