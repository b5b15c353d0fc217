"""The in-memory dataset: :class:`Dataset` (images, label masks, names, classes) and :class:`DatasetError`."""
import numpy as np

from ..labels import IGNORE


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or holds values that cannot be right."""


class DatasetWarning(UserWarning):
    """A dataset that loads but may not be what its author meant (a skipped file, classes with almost no pixels)."""


# ---------------------------------------------------------------- the in-memory dataset


class Dataset:
    """Images and label masks in memory.

    Parameters
    ----------
    images : list of ndarray, each (H, W, C) with C = 1 or 3, the same C and dtype for all
        uint8 images (0 ... 255) are normalized for the network by
        :func:`tinyfcn.datasets.normalize` when batched; float32 images are taken as
        network input already normalized (what :meth:`from_arrays` makes from float data).
    labels : list of ndarray, each uint8 (H, W) matching its image; values in [0, K) or ``IGNORE`` (255)
    names : list of str, the stems
    classes : list of str, the K class names; label i is ``classes[i]``

    Images may differ in size. ``dataset[i]`` is ``(image, label)``. For NumPy arrays of any
    dtype and layout, use :meth:`from_arrays`.
    """

    def __init__(self, images, labels, names, classes):
        if not len(images) == len(labels) == len(names):
            raise ValueError(f"Dataset: got {len(images)} images, {len(labels)} labels and {len(names)} names")
        if not images:
            raise ValueError("Dataset: needs at least one image")
        for image, label, name in zip(images, labels, names):
            first = images[0]
            if (image.dtype not in (np.uint8, np.float32) or image.dtype != first.dtype or image.ndim != 3
                    or image.shape[2] != first.shape[2]):
                raise ValueError(f"Dataset: image {name!r} must be {first.dtype if first.dtype == np.float32 else 'uint8'} "
                                 f"(H, W, {first.shape[2] if first.ndim == 3 else 'C'}), got {image.dtype} {image.shape}; "
                                 f"for other arrays use Dataset.from_arrays")
            if label.dtype != np.uint8 or label.shape != image.shape[:2]:
                raise ValueError(f"Dataset: label {name!r} must be uint8 {image.shape[:2]} like its image, "
                                 f"got {label.dtype} {label.shape}")
        self.images = list(images)
        self.labels = list(labels)
        self.names = list(names)
        self.classes = list(classes)

    @classmethod
    def from_arrays(cls, images, labels, classes=None, normalize="auto", names=None):
        """A dataset from NumPy arrays, e.g. ``fit(model, Dataset.from_arrays(X, Y))``.

        Parameters
        ----------
        images : ndarray, (N, H, W) grayscale, (N, H, W, C) or (N, C, H, W) with C = 1 or 3
            Any real dtype. The layout is read from where the size of ``labels`` appears
            (and the axis of size 1 or 3).
        labels : ndarray of integers (or bools), (N, H, W)
            Class indices 0 ... K-1 per pixel, or 255 (ignore).
        classes : None, int K, or list of K names
            None: K is the largest label + 1 and the classes are named "class 0", "class 1", ...
        normalize : "auto", "none" or (mean, std)
            How pixel values become network input:

            - ``"auto"``: uint8 images are read as 0 ... 255, float images as 0 ... 1 (values
              outside [0, 1] are refused); both map to ``(v - 0.5) / 0.25``, exactly what the
              command line does with image files (:func:`tinyfcn.datasets.normalize`).
            - ``"none"``: the values as given, as float32 (already normalized data).
            - ``(mean, std)``: numbers or per-channel sequences applied to the 0 ... 1
              values as in ``"auto"``: ``(v - mean) / std``.
        names : list of N str, optional; default "0", "1", ...

        Raises
        ------
        TypeError, ValueError
            Naming the argument: wrong ndim or layout, counts or sizes that differ, labels that
            are not integers or lie outside [0, K) and are not 255, NaN or inf in images, empty arrays.
        """
        who = "Dataset.from_arrays"
        images, labels = np.asarray(images), np.asarray(labels)
        if images.dtype == object or labels.dtype == object:
            raise TypeError(f"{who}: images and labels must each be one numeric array (N, ...); "
                            f"for images of different sizes build Dataset(images, labels, names, classes) directly")
        if images.dtype.kind not in "biuf":
            raise TypeError(f"{who}: images must be a real-valued array, got dtype {images.dtype}")
        if images.dtype.kind == "b":
            images = images.astype(np.float32)                   # False/True as 0 and 1
        if labels.dtype.kind not in "biu":
            hint = (" (they are whole numbers: pass labels.astype(np.int64))" if labels.dtype.kind == "f"
                    and np.isfinite(labels).all() and (labels == np.round(labels)).all() else "")
            raise TypeError(f"{who}: labels must be an integer array of class indices, got {labels.dtype}{hint}")
        if labels.ndim == 4 and labels.shape[1] == 1:           # (N, 1, H, W) or (N, H, W, 1)
            labels = labels[:, 0]
        elif labels.ndim == 4 and labels.shape[3] == 1:
            labels = labels[..., 0]
        if images.ndim not in (3, 4):
            raise ValueError(f"{who}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W), got shape "
                             f"{images.shape}" + ("; for one image use images[None]" if images.ndim == 2 else ""))
        if labels.ndim != 3:
            raise ValueError(f"{who}: labels must be (N, H, W), got shape {labels.shape}"
                             + ("; for one label map use labels[None]" if labels.ndim == 2 else ""))
        if images.shape[:1] != labels.shape[:1]:
            raise ValueError(f"{who}: {images.shape[0] if images.ndim else 0} images but {labels.shape[0]} labels; "
                             f"there must be one label map per image")
        if labels.shape[0] == 0:
            raise ValueError(f"{who}: needs at least one image, got 0")
        hw = labels.shape[1:]
        if images.ndim == 3 and images.shape[1:] == hw:
            images = images[..., None]
        elif images.ndim == 4 and images.shape[2:] == hw and images.shape[1] in (1, 3):
            images = np.moveaxis(images, 1, -1)                      # NCHW -> NHWC
        elif not (images.ndim == 4 and images.shape[1:3] == hw and images.shape[3] in (1, 3)):
            raise ValueError(f"{who}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3 and "
                             f"(H, W) = {hw} like the labels, got shape {images.shape}")
        if images.dtype.kind == "f":
            bad = ~np.isfinite(images).reshape(len(images), -1).all(axis=1)
            if bad.any():
                raise ValueError(f"{who}: images contain NaN or inf (first at image {int(np.argmax(bad))}, "
                                 f"{int(bad.sum())} images in all)")
        labels = labels.astype(np.int64)
        if (labels < 0).any():
            raise ValueError(f"{who}: labels must be >= 0, found {np.unique(labels[labels < 0])[:8].tolist()}")
        found = labels[labels != IGNORE]
        if classes is None:
            classes = int(found.max()) + 1 if found.size else 1
        if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
            if classes < 1:
                raise ValueError(f"{who}: classes must be >= 1, got {classes}")
            classes = [f"class {i}" for i in range(classes)]
        classes = [str(c) for c in classes]
        bad = np.unique(found[found >= len(classes)])
        if bad.size:
            raise ValueError(f"{who}: labels {bad[:8].tolist()} are >= K = {len(classes)} classes and not "
                             f"{IGNORE} (ignore); pass classes=K or fix the labels")
        if len(classes) >= IGNORE:
            raise ValueError(f"{who}: at most {IGNORE} classes (label {IGNORE} means ignore), got {len(classes)}")
        x = _normalized(images, normalize, who)
        names = [str(i) for i in range(len(x))] if names is None else [str(n) for n in names]
        labels = labels.astype(np.uint8)
        return cls(list(x), list(labels), names, classes)

    @property
    def num_classes(self):
        """K, the number of classes (labels are 0 ... K-1, plus ``IGNORE``)."""
        return len(self.classes)

    @property
    def in_channels(self):
        """C, the number of image channels: 1 (grayscale) or 3 (RGB)."""
        return self.images[0].shape[2]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]

    def __repr__(self):
        return f"Dataset({len(self)} images, {self.in_channels} channels, classes={self.classes})"


def _normalized(images, normalize, who):
    """(N, H, W, C) images of any real dtype -> uint8 (kept for the standard normalization) or float32 network input."""
    if isinstance(normalize, str) and normalize == "none":
        return np.ascontiguousarray(images, dtype=np.float32)
    if images.dtype.kind == "f":
        lo, hi = float(images.min()), float(images.max())
        if lo < 0 or hi > 1:
            raise ValueError(f"{who}: float images must hold values in [0, 1] with normalize={normalize!r}, "
                             f"found [{lo:.3g}, {hi:.3g}]; scale them to [0, 1] (e.g. x / 255), or pass "
                             f"normalize='none' if they are normalized already")
        unit = images.astype(np.float32)
    elif images.dtype == np.uint8:
        if isinstance(normalize, str) and normalize == "auto":
            return np.ascontiguousarray(images)          # batching applies the standard normalization
        unit = images.astype(np.float32) / 255
    else:
        lo, hi = int(images.min()), int(images.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{who}: integer images must hold values in [0, 255], found [{lo}, {hi}]; "
                             f"scale them, or pass normalize='none' to use the values as they are")
        unit = images.astype(np.float32) / 255
    if isinstance(normalize, str):
        if normalize != "auto":
            raise ValueError(f"{who}: normalize must be 'auto', 'none' or (mean, std), got {normalize!r}")
        mean, std = 0.5, 0.25
    else:
        try:
            mean, std = normalize
            mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"{who}: normalize must be 'auto', 'none' or (mean, std), got {normalize!r}") from None
        if mean.size not in (1, images.shape[-1]) or std.size not in (1, images.shape[-1]) or (std <= 0).any():
            raise ValueError(f"{who}: normalize=(mean, std) needs one number or one per channel "
                             f"({images.shape[-1]}) each, and std > 0")
        mean, std = mean.reshape(-1), std.reshape(-1)
    return np.ascontiguousarray((unit - mean) / std, dtype=np.float32)
