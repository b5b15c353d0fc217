"""The in-memory dataset: :class:`Dataset` (images, label masks, names, classes) and :class:`DatasetError`."""
import numpy as np


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or holds values that cannot be right."""


# ---------------------------------------------------------------- the in-memory dataset


class Dataset:
    """Images and label masks in memory.

    Parameters
    ----------
    images : list of ndarray, each uint8 (H, W, C) with C = 1 or 3, the same C for all
    labels : list of ndarray, each uint8 (H, W) matching its image; values in [0, K) or ``IGNORE`` (255)
    names : list of str, the stems
    classes : list of str, the K class names; label i is ``classes[i]``

    Images may differ in size. ``dataset[i]`` is ``(image, label)``.
    """

    def __init__(self, images, labels, names, classes):
        if not len(images) == len(labels) == len(names):
            raise ValueError(f"Dataset: got {len(images)} images, {len(labels)} labels and {len(names)} names")
        if not images:
            raise ValueError("Dataset: needs at least one image")
        for image, label, name in zip(images, labels, names):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != images[0].shape[2]:
                raise ValueError(f"Dataset: image {name!r} must be uint8 (H, W, {images[0].shape[2]}), "
                                 f"got {image.dtype} {image.shape}")
            if label.dtype != np.uint8 or label.shape != image.shape[:2]:
                raise ValueError(f"Dataset: label {name!r} must be uint8 {image.shape[:2]} like its image, "
                                 f"got {label.dtype} {label.shape}")
        self.images = list(images)
        self.labels = list(labels)
        self.names = list(names)
        self.classes = list(classes)

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
