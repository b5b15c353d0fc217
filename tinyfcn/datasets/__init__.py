"""Segmentation data: Pascal VOC folders, two toy datasets written in that layout, batching.

One module per concern:

- :mod:`~tinyfcn.datasets.dataset`: the in-memory :class:`Dataset` and :class:`DatasetError`;
- :mod:`~tinyfcn.datasets.voc`: reading and checking VOC folders (:func:`load_split`,
  :func:`read_image`, :func:`read_mask`) and writing them (:func:`save_image`, :func:`save_mask`);
- :mod:`~tinyfcn.datasets.batching`: :func:`normalize`, :func:`augment`, :func:`collate`, :func:`batches`;
- :mod:`~tinyfcn.datasets.shapes`, :mod:`~tinyfcn.datasets.digits`: the toy datasets, generated
  with NumPy from a seed and written in the VOC layout, so they go through exactly the code a
  real dataset does.

This package holds the registry of toy datasets by name (:data:`DATASETS`,
:func:`make_dataset`) and re-exports the names above, e.g. ``datasets.load_split(root, "val")``.
"""
from .batching import FIXED, augment, batches, collate, normalize
from .dataset import Dataset, DatasetError, DatasetWarning
from .digits import DIGITS_CLASSES, load_digits, make_digits
from .shapes import SHAPES_CLASSES, make_shapes
from .voc import load_split, read_image, read_mask, save_image, save_mask

__all__ = ["FIXED", "augment", "batches", "collate", "normalize", "Dataset", "DatasetError", "DatasetWarning",
           "DIGITS_CLASSES", "load_digits", "make_digits", "SHAPES_CLASSES", "make_shapes", "load_split",
           "read_image", "read_mask", "save_image", "save_mask", "DATASETS", "DEFAULT_SIZES", "make_dataset"]

DATASETS = {
    "shapes": lambda out, n_train, n_val, seed, size: make_shapes(out, n_train, n_val, seed, size),
    "shapes-easy": lambda out, n_train, n_val, seed, size: make_shapes(out, n_train, n_val, seed, size, level="easy"),
    "digits": lambda out, n_train, n_val, seed, size: make_digits(out, n_train, n_val, seed, size),
}
DEFAULT_SIZES = {"shapes": 64, "shapes-easy": 64, "digits": (64, 84)}


def make_dataset(name, out, n_train, n_val, seed, size=None):
    """Generate the toy dataset called ``name`` ("shapes", "shapes-easy" or "digits") into ``out``.

    ``size`` (int or (H, W)) defaults to the dataset's own (64 for shapes, (64, 84) for digits).
    Returns the dataset folder.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; the toy datasets are: {', '.join(DATASETS)}")
    return DATASETS[name](out, n_train, n_val, seed, DEFAULT_SIZES[name] if size is None else size)
