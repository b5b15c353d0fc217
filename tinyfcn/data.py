"""Segmentation data: Pascal VOC folders, two toy datasets written in that layout, batching.

The one on-disk format is the Pascal VOC layout::

    root/
      JPEGImages/<stem>.jpg or .png         the images (8-bit RGB or grayscale)
      SegmentationClass/<stem>.png          one label mask per image, same stem and size
      ImageSets/Segmentation/train.txt      stems, one per line
      ImageSets/Segmentation/val.txt
      classes.txt                           optional: line i is the name of label i

A mask holds one class index per pixel: a palette ("P") PNG, read as its indices (the
colours are only for viewing), or an 8-bit grayscale ("L") PNG. 255 means "ignore": those
pixels count neither in the loss nor in the metrics.

Everything is read into memory (:class:`Dataset`) and checked on the way in; a bad file
raises a :class:`DatasetError` naming the file and the problem. :func:`batches` turns a
dataset into normalized NCHW float32 batches with int64 labels, padding images of
different sizes to a common size.

The toy datasets (:func:`make_shapes`, :func:`make_digits`) are generated with NumPy
from a seed and written in the same layout, so they go through exactly the code a real
dataset does.
"""
import gzip
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from .palette import voc_palette
from .sizes import pair

IGNORE = 255
"""The label of pixels that count neither in the loss nor in the metrics."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DIGITS_CSV = Path(__file__).resolve().parent.parent / "data" / "digits.csv.gz"
DIGITS_N_TRAIN = 1440
"""Rows [0, 1440) of the digits file make the training scenes, rows [1440, 1797) the validation scenes."""

SHAPES_CLASSES = ["background", "disk", "triangle", "square"]
DIGITS_CLASSES = ["background"] + [str(d) for d in range(10)]


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or holds values that cannot be right."""


# ---------------------------------------------------------------- the in-memory dataset


class Dataset:
    """Images and label masks in memory.

    Parameters
    ----------
    images : list of ndarray, each uint8 (H, W, C) with C = 1 or 3, the same C for all
    labels : list of ndarray, each uint8 (H, W) matching its image; values in [0, K) or 255
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
        """K, the number of classes (labels are 0 ... K-1, plus 255 for ignore)."""
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


# ---------------------------------------------------------------- reading files


def _open(path, what):
    """Open and fully decode an image file with Pillow, or raise a DatasetError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: {what} not found")
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (OSError, SyntaxError, ValueError) as err:   # Pillow's errors for unknown, broken and truncated files
        raise DatasetError(f"{path}: cannot read this {what} ({err}); the file is truncated or not an image") from err


def read_image(path):
    """Read an 8-bit image as uint8 (H, W, C): C = 1 for grayscale, 3 for anything in colour.

    Palette and alpha images become RGB (the alpha is dropped); 1-bit images become grayscale.

    Raises
    ------
    DatasetError
        If the file is missing, unreadable, truncated, or has 16-bit or float pixels.
    """
    img = _open(path, "image")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        raise DatasetError(f"{path}: image has {img.mode} pixels; tinyfcn reads 8-bit images, "
                           f"convert it to 8-bit RGB or grayscale first")
    if img.mode in ("1", "L", "LA"):
        return np.asarray(img.convert("L"))[:, :, None].copy()
    return np.asarray(img.convert("RGB")).copy()


def read_mask(path):
    """Read a label mask as uint8 (H, W) class indices.

    Palette ("P") PNGs give their indices, grayscale ("L") PNGs their values, 1-bit PNGs
    0 and 1, and 16-bit grayscale PNGs their values if all are at most 255.

    Raises
    ------
    DatasetError
        If the file is missing, unreadable or truncated, or is a colour (RGB) mask or
        another mode that does not hold indices.
    """
    img = _open(path, "mask")
    if img.mode in ("P", "L", "1"):
        return np.asarray(img, dtype=np.uint8).copy()
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):
        values = np.asarray(img)
        if values.max() > 255:
            raise DatasetError(f"{path}: 16-bit mask has values up to {values.max()}; labels must be at most 255")
        return values.astype(np.uint8)
    if img.mode in ("RGB", "RGBA"):
        rgb = np.asarray(img.convert("RGB"))
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            raise DatasetError(f"{path}: mask is a grayscale picture saved as {img.mode}; masks must hold one class "
                               f"index per pixel: save it as grayscale, e.g. Image.open(path).convert('L').save(path)")
        raise DatasetError(f"{path}: mask is an {img.mode} colour image, but masks must hold one class index per pixel "
                           f"(a palette 'P' or grayscale 'L' PNG). Map each colour to its class index (for VOC "
                           f"colours, colour i of tinyfcn.palette.voc_palette() is class i) and save the index "
                           f"array with tinyfcn.data.save_mask")
    raise DatasetError(f"{path}: mask has mode {img.mode}; masks must be palette ('P') or grayscale ('L') PNGs "
                       f"holding one class index per pixel")


def _find_image(root, name):
    """The image file of stem ``name``: JPEGImages/<name>.jpg, .jpeg or .png."""
    for suffix in IMAGE_SUFFIXES:
        path = root / "JPEGImages" / (name + suffix)
        if path.is_file():
            return path
    raise DatasetError(f"{root / 'JPEGImages' / name}.jpg: image not found (also tried .jpeg and .png)")


def _mask_path(root, name):
    path = root / "SegmentationClass" / (name + ".png")
    if not path.is_file():
        lossy = [p.name for p in path.parent.glob(name + ".jp*g")]
        hint = f"; found {lossy[0]}, but masks must be PNG (JPEG compression changes label values)" if lossy else ""
        raise DatasetError(f"{path}: mask not found{hint}")
    return path


def _read_pair(root, name):
    """Image (H, W, C) and mask (H, W) of stem ``name``, checked to have the same size."""
    image_path, mask_path = _find_image(root, name), _mask_path(root, name)
    image, label = read_image(image_path), read_mask(mask_path)
    if image.shape[:2] != label.shape:
        raise DatasetError(f"{mask_path}: mask is {label.shape[1]}x{label.shape[0]} (WxH) but its image "
                           f"{image_path.name} is {image.shape[1]}x{image.shape[0]}; they must match pixel for pixel")
    return image, label


def _check_range(path, label, num_classes, source):
    bad = np.unique(label[(label >= num_classes) & (label != IGNORE)])
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if bad.size > 8 else "")
        raise DatasetError(f"{path}: label values {shown} are >= num_classes = {num_classes} ({source}) "
                           f"and are not {IGNORE} (ignore)")


def _read_lines(path):
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _read_classes(path):
    """The class names in classes.txt, line i naming label i (so no blank line may come before the last name)."""
    names = [line.strip() for line in path.read_text().splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names or "" in names:
        where = f"line {names.index('') + 1} is blank" if names else "it is empty"
        raise DatasetError(f"{path}: {where}; line i must name label i")
    return names


def load_split(root, split="train", num_classes=None, skip_bad=False):
    """Load one split of a VOC-layout folder into memory, checking every file.

    The number of classes K comes from ``classes.txt`` if the folder has one (then
    ``num_classes``, if given, must agree), else from ``num_classes``, else it is inferred
    as the largest label in this split + 1 (so a val split that lacks the last class
    would get a smaller K: pass ``num_classes`` or write ``classes.txt`` to avoid that).
    Without ``classes.txt`` the classes are named ``"class 0"``, ``"class 1"``, ...
    Grayscale images in a split that also has colour images are repeated to 3 channels.

    Parameters
    ----------
    root : str or Path, the dataset folder
    split : str, the name of a list in ``ImageSets/Segmentation/`` (e.g. "train", "val")
    num_classes : int, optional
    skip_bad : bool
        If True, a missing, unreadable or wrong file is reported with ``warnings.warn``
        and skipped instead of raising.

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        For a missing folder or split list, an empty split, a missing or unreadable image
        or mask, a size mismatch, a colour mask, labels >= K other than 255, and a split
        whose masks hold only 0 and 255 (binary masks with 255 for the object; this is
        raised even with ``skip_bad``, as no file in particular is at fault).
    """
    root = Path(root)
    for sub in ("JPEGImages", "SegmentationClass"):
        if not (root / sub).is_dir():
            raise DatasetError(f"{root}: no {sub}/ folder; expected the Pascal VOC layout (see tinyfcn.data)")
    list_path = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not list_path.is_file():
        raise DatasetError(f"{list_path}: split list not found")
    names = _read_lines(list_path)
    if not names:
        raise DatasetError(f"{list_path}: the split is empty (it lists no image stems)")

    classes, source = None, None
    if (root / "classes.txt").is_file():
        classes, source = _read_classes(root / "classes.txt"), "from classes.txt"
        if num_classes is not None and num_classes != len(classes):
            raise DatasetError(f"{root / 'classes.txt'}: lists {len(classes)} classes but num_classes={num_classes}")
    elif num_classes is not None:
        classes, source = [f"class {i}" for i in range(num_classes)], "from the num_classes argument"

    images, labels, kept = [], [], []
    for name in names:
        try:
            image, label = _read_pair(root, name)
            if classes is not None:
                _check_range(_mask_path(root, name), label, len(classes), source)
        except DatasetError as err:
            if not skip_bad:
                raise
            warnings.warn(f"skipping {name!r}: {err}", stacklevel=2)
            continue
        images.append(image)
        labels.append(label)
        kept.append(name)
    if not images:
        raise DatasetError(f"{list_path}: the split is empty: all {len(names)} listed images were skipped as bad")

    found = np.unique(np.concatenate([np.unique(label) for label in labels]))
    if IGNORE in found and not ((found > 0) & (found < IGNORE)).any():
        example = _mask_path(root, kept[[IGNORE in label for label in labels].index(True)])
        raise DatasetError(f"{example}: every mask of split {split!r} holds only 0 and 255. This looks like a binary "
                           f"mask with 255 for the object, but 255 means 'ignore' here, so the object would never "
                           f"be learned: map 255 -> 1 (label[label == 255] = 1) and save the masks again")
    if classes is None:
        classes = [f"class {i}" for i in range(int(found[found != IGNORE].max()) + 1)]

    if len({image.shape[2] for image in images}) > 1:   # a few grayscale images in a colour dataset
        images = [np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image for image in images]
    return Dataset(images, labels, kept, classes)


# ---------------------------------------------------------------- writing files


def _atomic_write(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, then move it into place with ``os.replace``.

    Readers see the old file or the complete new one, never half a file; on an error the
    temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _save_pillow(path, img):
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported suffix {Path(path).suffix!r}; use .png, .jpg or .jpeg")
    _atomic_write(path, lambda f: img.save(f, format=fmt, **({"quality": 95} if fmt == "JPEG" else {})))


def _save_text(path, lines):
    _atomic_write(path, lambda f: f.write("".join(line + "\n" for line in lines).encode()))


def save_image(path, image):
    """Write an image atomically (never a half-written file); the suffix picks PNG or JPEG (quality 95).

    Parameters
    ----------
    path : str or Path ending in .png, .jpg or .jpeg
    image : ndarray, uint8 (H, W), (H, W, 1) or (H, W, 3)
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
        raise ValueError(f"save_image: image must be uint8 (H, W), (H, W, 1) or (H, W, 3), "
                         f"got {image.dtype} {image.shape}")
    _save_pillow(path, Image.fromarray(image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image))


def save_mask(path, label):
    """Write a label mask atomically as a palette PNG with the VOC colours (index i shows as colour i).

    Parameters
    ----------
    path : str or Path ending in .png
    label : ndarray, integer (H, W), values in [0, 255]
    """
    label = np.asarray(label)
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"save_mask: {path} must be a .png; JPEG compression would change label values")
    if label.ndim != 2 or label.dtype.kind not in "iu" or (label.size and (label.min() < 0 or label.max() > 255)):
        raise ValueError(f"save_mask: label must be an integer (H, W) array with values in [0, 255], "
                         f"got {label.dtype} {label.shape}")
    img = Image.fromarray(label.astype(np.uint8))
    img.putpalette(voc_palette().tobytes())      # turns the "L" image into a "P" image with these colours
    _save_pillow(path, img)


# ---------------------------------------------------------------- normalization, augmentation, batches


def normalize(images):
    """uint8 images to float32 network input: ``(x / 255 - 0.5) / 0.25``, channels first.

    Pixel values 0 ... 255 map to -2 ... 2; 0.0 is the middle grey 127.5.

    Parameters
    ----------
    images : ndarray, uint8 (N, H, W, C) or (H, W, C)

    Returns
    -------
    ndarray, float32 (N, C, H, W) or (C, H, W)
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"normalize: images must be uint8 (N, H, W, C) or (H, W, C), "
                         f"got {images.dtype} {images.shape}")
    x = (images.astype(np.float32) / 255 - 0.5) / 0.25
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


def collate(pairs):
    """Stack (image, label) pairs into one batch of network input and integer targets.

    Images of different sizes are padded at the bottom/right to the largest H and W:
    the normalized image with 0.0, the label with 255 (ignore), so padding adds no loss.
    Labels are only ever copied, never interpolated.

    Parameters
    ----------
    pairs : sequence of (image uint8 (H, W, C), label uint8 (H, W))

    Returns
    -------
    x : ndarray, float32 (N, C, H, W), normalized by :func:`normalize`
    y : ndarray, int64 (N, H, W), labels in [0, K) or 255
    """
    H = max(label.shape[0] for _, label in pairs)
    W = max(label.shape[1] for _, label in pairs)
    x = np.zeros((len(pairs), pairs[0][0].shape[2], H, W), np.float32)
    y = np.full((len(pairs), H, W), IGNORE, np.int64)
    for n, (image, label) in enumerate(pairs):
        h, w = label.shape
        x[n, :, :h, :w] = normalize(image)
        y[n, :h, :w] = label
    return x, y


def batches(dataset, batch_size, rng=None, augment_fn=None):
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

    Yields
    ------
    x : ndarray, float32 (N, C, H, W)
    y : ndarray, int64 (N, H, W)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batches: batch_size must be an int >= 1, got {batch_size!r}")
    order = np.arange(len(dataset)) if rng is None else rng.permutation(len(dataset))
    for start in range(0, len(order), batch_size):
        pairs = [dataset[i] for i in order[start:start + batch_size]]
        if augment_fn is not None:
            pairs = [augment_fn(image, label) for image, label in pairs]
        yield collate(pairs)


# ---------------------------------------------------------------- writing a generated dataset


def _write_dataset(out, classes, splits):
    """Write generated splits in the VOC layout; the split lists are written last.

    ``splits`` maps a split name to an iterable of ``(image, label)``; item i of split s
    gets the stem ``f"{s}_{i:05d}"``. Old split lists in ``out`` are removed first, so an
    interrupted run never leaves a folder that looks complete.
    """
    out = Path(out)
    lists = out / "ImageSets" / "Segmentation"
    for sub in (out / "JPEGImages", out / "SegmentationClass", lists):
        sub.mkdir(parents=True, exist_ok=True)
    for split in splits:
        (lists / f"{split}.txt").unlink(missing_ok=True)
    _save_text(out / "classes.txt", classes)
    stems = {}
    for split, items in splits.items():
        stems[split] = []
        for i, (image, label) in enumerate(items):
            stem = f"{split}_{i:05d}"
            save_image(out / "JPEGImages" / f"{stem}.png", image)
            save_mask(out / "SegmentationClass" / f"{stem}.png", label)
            stems[split].append(stem)
    for split, names in stems.items():
        _save_text(lists / f"{split}.txt", names)
    return out


def _image_rngs(seed, n, split_id):
    """One generator per image, so image i does not depend on how many images are made."""
    return (np.random.default_rng([seed, split_id, i]) for i in range(n))


def _check_counts(n_train, n_val):
    for name, n in (("n_train", n_train), ("n_val", n_val)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"{name} must be an int >= 1, got {n!r}")


# ---------------------------------------------------------------- the shapes dataset

# Object "radius" (half its size) in pixels at 64x64, scaled with the image; how many objects,
# how far apart (centre distance >= gap * (r1 + r2)), how far inside the image (centre >= margin * r
# from the border), and how visible. "easy" is for smoke tests: 1-2 big separate objects, clean images.
SHAPES_LEVELS = {
    "easy": dict(objects=(1, 2), radius=(11.0, 16.0), gap=1.0, margin=1.0,
                 contrast=(0.3, 0.45), gradient=0.15, noise=0.02),
    "normal": dict(objects=(1, 4), radius=(8.0, 16.0), gap=0.8, margin=0.7,
                   contrast=(0.25, 0.45), gradient=0.4, noise=0.03),
}


def _shape_distance(cls, yy, xx, cy, cx, r, rng):
    """Signed distance in pixels to the outline of a shape centred at (cy, cx): positive inside.

    1 disk: radius r. 2 triangle: near-equilateral (each corner jittered by up to 11 degrees),
    corners 1.35 r from the centre. 3 square: half-side 0.85 r. Triangles and squares are
    rotated at random. Their areas are close: 3.1 r^2, 2.4 r^2 and 2.9 r^2.
    Outside a corner the distance is only approximate, which is fine for 1 px of anti-aliasing.
    """
    dy, dx = yy - cy, xx - cx
    if cls == 1:
        return r - np.hypot(dy, dx)
    angle = rng.uniform(0, 2 * np.pi)
    if cls == 3:
        u, v = dy * np.cos(angle) + dx * np.sin(angle), dx * np.cos(angle) - dy * np.sin(angle)
        return 0.85 * r - np.maximum(np.abs(u), np.abs(v))
    angles = angle + np.array([0, 2, 4]) * np.pi / 3 + rng.uniform(-0.2, 0.2, 3)
    corners = np.stack([1.35 * r * np.sin(angles), 1.35 * r * np.cos(angles)], axis=1)
    inside = np.inf
    for a, b in zip(corners, np.roll(corners, -1, axis=0)):
        normal = np.array([b[1] - a[1], a[0] - b[0]]) / np.hypot(*(b - a))   # perpendicular to the edge a -> b
        if normal @ (corners.mean(axis=0) - a) < 0:
            normal = -normal                                                   # make it point inwards
        inside = np.minimum(inside, (dy - a[0]) * normal[0] + (dx - a[1]) * normal[1])
    return inside


def _shapes_scene(rng, size, level, channels):
    """One shapes image and its label; see :func:`make_shapes`.

    Returns
    -------
    image : ndarray, uint8 (H, W, channels)
    label : ndarray, uint8 (H, W), values 0 (background), 1 (disk), 2 (triangle), 3 (square)
    """
    p = SHAPES_LEVELS[level]
    H, W = size
    scale = min(H, W) / 64
    yy, xx = np.mgrid[0:H, 0:W] + 0.5

    # background: a linear ramp in a random direction and colour, around a mid-grey base
    theta = rng.uniform(0, 2 * np.pi)
    ramp = ((yy - H / 2) * np.sin(theta) + (xx - W / 2) * np.cos(theta)) / max(H, W)
    base = rng.uniform(0.3, 0.7) + rng.uniform(-0.08, 0.08, channels)
    canvas = base + ramp[:, :, None] * rng.uniform(-p["gradient"], p["gradient"], channels)

    label = np.zeros((H, W), np.uint8)
    owner = np.full((H, W), -1)          # which object is on top at each pixel
    colours, placed = [], []
    for _ in range(rng.integers(p["objects"][0], p["objects"][1] + 1)):
        for _attempt in range(50):        # find a centre that keeps earlier objects mostly visible
            r = rng.uniform(*p["radius"]) * scale
            m = p["margin"] * r
            cy, cx = rng.uniform(m, H - m), rng.uniform(m, W - m)
            if all(np.hypot(cy - y, cx - x) >= p["gap"] * (r + q) for y, x, q in placed):
                break
        else:
            continue
        placed.append((cy, cx, r))
        cls = rng.integers(1, 4)
        distance = _shape_distance(cls, yy, xx, cy, cx, r, rng)
        coverage = np.clip(distance + 0.5, 0, 1)            # about 1 px of anti-aliasing

        # brighter or darker than the background at its centre, by a random contrast; the sign
        # that differs more from the objects it covers wins, so no edge disappears
        local = canvas[min(int(cy), H - 1), min(int(cx), W - 1)]
        step = rng.uniform(*p["contrast"]) + rng.normal(0, 0.04, channels)
        candidates = [np.clip(local + sign * step, 0, 1) for sign in rng.permutation([-1, 1])]
        below = [colours[k] for k in np.unique(owner[coverage > 0]) if k >= 0]
        colour = max(candidates, key=lambda c: min((np.abs(c - b).mean() for b in below), default=1.0))

        canvas = canvas * (1 - coverage[:, :, None]) + colour * coverage[:, :, None]
        inside = distance > 0
        label[inside] = cls
        owner[inside] = len(colours)
        colours.append(colour)

    canvas += rng.normal(0, p["noise"], canvas.shape)
    return np.round(np.clip(canvas, 0, 1) * 255).astype(np.uint8), label


def make_shapes(out, n_train=2000, n_val=400, seed=0, size=64, level="normal", channels=3):
    """Generate the shapes dataset in the VOC layout: disks, triangles and squares on a shaded background.

    4 classes: 0 background, 1 disk, 2 triangle, 3 square. Each image (``"normal"``) has
    1-4 objects 16-32 px across at 64x64 (scaled with the image) that may partly occlude
    each other. An object is brighter or darker than the background at its centre (random
    sign, contrast and tint), over a colour ramp in a random direction with pixel noise,
    so neither colour nor a threshold tells the classes apart: only the outline does
    (round, three corners or four). Labels follow the exact outline; the image is
    anti-aliased over about 1 px. ``level="easy"`` makes 1-2 bigger (22-32 px) separate
    objects with stronger contrast and less noise. See data/README.md for why these shapes.

    Parameters
    ----------
    out : str or Path, the folder to write (created; old split lists are replaced)
    n_train, n_val : int >= 1, number of images in each split
    seed : int; the same seed writes the same files
    size : int or (H, W), at least 16
    level : {"normal", "easy"}
    channels : {3, 1}, RGB or grayscale images

    Returns
    -------
    Path, the dataset folder
    """
    _check_counts(n_train, n_val)
    size = pair(size, "size")
    if min(size) < 16:
        raise ValueError(f"make_shapes: size must be at least 16x16, got {size}")
    if level not in SHAPES_LEVELS:
        raise ValueError(f"make_shapes: level must be one of {sorted(SHAPES_LEVELS)}, got {level!r}")
    if channels not in (1, 3):
        raise ValueError(f"make_shapes: channels must be 1 or 3, got {channels!r}")
    splits = {split: (_shapes_scene(rng, size, level, channels) for rng in _image_rngs(seed, n, k))
              for k, (split, n) in enumerate((("train", n_train), ("val", n_val)))}
    return _write_dataset(out, SHAPES_CLASSES, splits)


# ---------------------------------------------------------------- the digits dataset


def load_digits(split=None):
    """The 1797 handwritten digits of UCI's optical-digits set, vendored as ``data/digits.csv.gz``.

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
        raise FileNotFoundError(f"{DIGITS_CSV}: the vendored digits are missing; they ship with the source "
                                f"checkout of tinyfcn (install it with pip install -e .)")
    with gzip.open(DIGITS_CSV, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    rows = {None: slice(None), "train": slice(0, DIGITS_N_TRAIN), "val": slice(DIGITS_N_TRAIN, None)}
    if split not in rows:
        raise ValueError(f"load_digits: split must be None, 'train' or 'val', got {split!r}")
    table = table[rows[split]]
    return table[:, :64].reshape(-1, 8, 8).astype(np.uint8), table[:, 64]


def _resize_bilinear(a, h, w):
    """Bilinear resize of a 2-D array to (h, w), sampling pixel centres (align_corners=False)."""
    def taps(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.minimum(src.astype(int), n_in - 2)
        return lo, src - lo
    y0, fy = taps(a.shape[0], h)
    x0, fx = taps(a.shape[1], w)
    rows = a[y0] * (1 - fy[:, None]) + a[y0 + 1] * fy[:, None]
    return rows[:, x0] * (1 - fx) + rows[:, x0 + 1] * fx


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
    _check_counts(n_train, n_val)
    size = pair(size, "size")
    if min(size) < 20:
        raise ValueError(f"make_digits: size must be at least 20x20, got {size}")
    splits = {}
    for k, (split, n) in enumerate((("train", n_train), ("val", n_val))):
        pixels, digits = load_digits(split)
        splits[split] = (_digits_scene(rng, pixels, digits, size) for rng in _image_rngs(seed, n, k))
    return _write_dataset(out, DIGITS_CLASSES, splits)


# ---------------------------------------------------------------- by name

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
