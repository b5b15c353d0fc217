"""Pascal VOC folders: reading and checking them (:func:`load_split`), and writing them.

The one on-disk format is the Pascal VOC layout::

    root/
      JPEGImages/<stem>.jpg or .png         the images (8-bit RGB or grayscale)
      SegmentationClass/<stem>.png          one label mask per image, same stem and size
      ImageSets/Segmentation/train.txt      stems, one per line
      ImageSets/Segmentation/val.txt
      classes.txt                           optional: line i is the name of label i

A mask holds one class index per pixel: a palette ("P") PNG, read as its indices (the
colours are only for viewing), or an 8-bit grayscale ("L") PNG. ``IGNORE`` (255) marks
pixels that count neither in the loss nor in the metrics.

Everything is read into memory (:class:`~tinyfcn.datasets.Dataset`) and checked on the
way in; a bad file raises a :class:`~tinyfcn.datasets.DatasetError` naming the file and
the problem. Every file is written atomically (:func:`tinyfcn.files.atomic_write`).
"""
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ..files import DIR_MODE, atomic_write
from ..labels import IGNORE, voc_palette
from .dataset import Dataset, DatasetError, DatasetWarning

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


# ---------------------------------------------------------------- reading


def _open(path, what):
    """Open and fully decode an image file with Pillow, or raise a DatasetError naming it.

    A file whose header claims more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (Pillow's guard
    against decompression bombs: it raises above twice that and warns above it) is refused
    before anything is decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: {what} not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                copy = img.copy()
                copy.format = img.format    # the real file format (a copy would forget it), whatever the suffix
                return copy
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DatasetError(f"{path}: refused: {str(err).rstrip('.')} (Pillow's limit, PIL.Image.MAX_IMAGE_PIXELS); "
                           f"if it is a real {what}, shrink it first") from None
    except (OSError, SyntaxError, ValueError) as err:   # Pillow's errors for unknown, broken and truncated files
        raise DatasetError(f"{path}: cannot read this {what} ({err}); the file is truncated or not an image") from err


def read_image(path):
    """Read an 8-bit image as uint8 (H, W, C): C = 1 for grayscale, 3 for anything in colour.

    Palette and alpha images become RGB (the alpha is dropped); 1-bit images become grayscale.

    Raises
    ------
    DatasetError
        If the file is missing, unreadable, truncated, claims more pixels than Pillow's
        decompression-bomb limit, or has 16-bit or float pixels.
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
        If the file is missing, unreadable or truncated, claims more pixels than Pillow's
        decompression-bomb limit, is not really a PNG (e.g. a JPEG renamed to .png), or is a
        colour (RGB) mask or another mode that does not hold indices.
    """
    img = _open(path, "mask")
    if img.format != "PNG":
        lossy = " JPEG compression changes label values near every edge," if img.format == "JPEG" else ""
        raise DatasetError(f"{path}: this mask is a {img.format} file under a .png name;{lossy} masks must be real "
                           f"PNG files: save the original label arrays again with tinyfcn.datasets.save_mask "
                           f"(renaming the file does not change its format)")
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
                           f"colours, colour i of tinyfcn.labels.voc_palette() is class i) and save the index "
                           f"array with tinyfcn.datasets.save_mask")
    raise DatasetError(f"{path}: mask has mode {img.mode}; masks must be palette ('P') or grayscale ('L') PNGs "
                       f"holding one class index per pixel")


def _find_image(root, name):
    """The image file of stem ``name``: JPEGImages/<name>.jpg, .jpeg or .png."""
    for suffix in IMAGE_SUFFIXES:
        path = root / "JPEGImages" / (name + suffix)
        if path.is_file():
            return path
    shown = name if name.isprintable() else f"{name!r} (the name holds an invisible character)"
    raise DatasetError(f"{root / 'JPEGImages'}/{shown}.jpg: image not found (also tried .jpeg and .png)")


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


def _interior(mask):
    """The pixels of a boolean (H, W) mask whose 8 neighbours are all in the mask too (a 3x3 erosion)."""
    padded = np.pad(mask, 1)
    H, W = mask.shape
    out = mask.copy()
    for dy in range(3):
        for dx in range(3):
            out &= padded[dy:dy + H, dx:dx + W]
    return out


def _resized_binary(label):
    """True for a 0/255 mask that was resized with smoothing: a solid 0 and a solid 255 region and, between
    them, a thin band (at most a pixel or two wide) of at least two in-between values."""
    between = (label > 0) & (label < IGNORE)
    white = label == IGNORE
    if not between.any() or not (label == 0).any() or len(np.unique(label[between])) < 2:
        return False
    return _interior(white).sum() >= 0.25 * white.sum() > 0 and _interior(between).sum() <= 0.1 * between.sum()


RESIZED_HINT = ("these look like 0/255 binary masks that were resized with smoothing (bilinear or anti-aliased), "
                "which blends the two values into a band of in-between values along every edge. Threshold them "
                "(label = (mask >= 128).astype(np.uint8), which also maps the object to 1, as 255 means 'ignore') "
                "and resize masks only with nearest-neighbour (Image.NEAREST)")


def _check_range(path, label, num_classes, source):
    bad = np.unique(label[(label >= num_classes) & (label != IGNORE)])
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if bad.size > 8 else "")
        hint = f"; {RESIZED_HINT}" if _resized_binary(label) else ""
        raise DatasetError(f"{path}: label values {shown} are >= num_classes = {num_classes} ({source}) "
                           f"and are not {IGNORE} (ignore){hint}")


RARE = 0.001
"""An inferred class covering less than this fraction of a split's labelled pixels gets a warning."""

RAMPS = 0.5
"""When K is inferred, masks are refused if more than this fraction of their edge pixels sit on a ramp.

Class indices change in steps: where two classes meet, one region ends and the next begins,
so a pixel whose neighbours on two opposite sides hold one a smaller and one a larger value
than its own is rare in them (a one-pixel sliver of a class between two others). Smoothing
(bilinear or anti-aliased resizing, blurring) turns every edge into a ramp of in-between
values, and most edge pixels sit on it. Measured when this rule was set: under 0.1 % of the
edge pixels of the shapes and digits masks, 60-90 % after resizing their 0/255 versions
with smoothing (:func:`_edges_and_ramps`).
"""


def _edges_and_ramps(label):
    """``(edge, ramp)``: how many pixels of an (H, W) mask lie on an edge, and how many of those on a ramp.

    A pixel (not on the border) is on an edge when one of its 4 neighbours holds another
    value, and on a ramp when its two neighbours along its row, or along its column, hold one
    a smaller and one a larger value than its own (the order counts 255 as a value).
    """
    v = label.astype(np.int16)
    c, left, right, up, down = v[1:-1, 1:-1], v[1:-1, :-2], v[1:-1, 2:], v[:-2, 1:-1], v[2:, 1:-1]
    edge = (left != c) | (right != c) | (up != c) | (down != c)
    ramp = (((left < c) & (c < right)) | ((left > c) & (c > right))
            | ((up < c) & (c < down)) | ((up > c) & (c > down)))
    return int(edge.sum()), int(ramp.sum())


def _check_inferred_classes(root, split, kept, labels, found):
    """Refuse or warn when K is inferred from labels that do not look like K real classes.

    Refuses (DatasetError) resized binary masks (half the masks hold a thin band of other
    values between solid 0 and 255), masks that change value gradually across their edges
    (more than :data:`RAMPS` of the edge pixels on a ramp: smoothed masks, however wide the
    band), and labels with gaps (K would count classes no mask uses); warns
    (DatasetWarning) about classes with almost no pixels (under :data:`RARE` of them).
    """
    resized = [name for name, label in zip(kept, labels) if _resized_binary(label)]
    if len(resized) * 2 >= len(kept):
        raise DatasetError(f"{_mask_path(root, resized[0])}: {len(resized)} of the {len(kept)} masks of split "
                           f"{split!r} hold mostly 0 and 255 with a thin band of other values at the edges; "
                           + RESIZED_HINT)
    used = found[found != IGNORE]
    k = int(used.max()) + 1
    counts = np.array([_edges_and_ramps(label) for label in labels])     # (masks, 2): edge and ramp pixels
    edges, ramps = counts.sum(axis=0)
    if ramps > RAMPS * edges:
        worst = kept[int(np.argmax(counts[:, 1] / np.maximum(counts[:, 0], 1)))]
        raise DatasetError(f"{_mask_path(root, worst)}: the masks of split {split!r} change value gradually across "
                           f"edges ({ramps / edges:.0%} of their edge pixels lie between a smaller and a larger "
                           f"value), as masks resized or blurred with smoothing do and class indices never do; K "
                           f"would be inferred as {k}. Fix the masks: threshold 0/255 ones (label = (mask >= 128)"
                           f".astype(np.uint8)) and resize masks only with nearest-neighbour (Image.NEAREST); or, if "
                           f"these values really are {k} classes, name them in classes.txt (line i names label i)")
    missing = sorted(set(range(k)) - set(used.tolist()))
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (", ..." if len(missing) > 8 else "")
        raise DatasetError(f"{root}: the masks of split {split!r} use labels up to {k - 1} but never {shown}, so "
                           f"the number of classes cannot be inferred (it would be {k}, with {len(missing)} unused); "
                           f"refusing to guess: if those classes are real, name all {k} in classes.txt (line i "
                           f"names label i), otherwise fix the masks' stray values")
    pixels = np.zeros(k, np.int64)
    for label in labels:
        pixels += np.bincount(label[label != IGNORE].ravel(), minlength=k)[:k]
    rare = np.flatnonzero(pixels < RARE * pixels.sum())
    if rare.size:
        shown = ", ".join(map(str, rare[:8])) + (", ..." if rare.size > 8 else "")
        warnings.warn(DatasetWarning(
            f"{root}: labels {shown} cover only {pixels[rare].sum() / pixels.sum():.3%} of the labelled pixels of "
            f"split {split!r}, yet each counts as a class (K inferred as {k}); if they are not real classes, the "
            f"masks hold stray values (lossy compression or smooth resizing); classes.txt makes K explicit"),
            stacklevel=3)


def _read_lines(path):
    """The non-blank lines of a text file, stripped; a UTF-8 byte-order mark and CRLF line ends are fine."""
    return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]


def _stem(root, name):
    """A split list's entry as a stem: ``train_001.jpg`` is read as ``train_001`` unless that name exists as is."""
    suffix = Path(name).suffix.lower()
    if suffix in IMAGE_SUFFIXES and not any((root / "JPEGImages" / (name + s)).is_file() for s in IMAGE_SUFFIXES):
        return name[: -len(suffix)]
    return name


def _read_classes(path):
    """The class names in classes.txt, line i naming label i (so no blank line may come before the last name)."""
    names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names or "" in names:
        where = f"line {names.index('') + 1} is blank" if names else "it is empty"
        raise DatasetError(f"{path}: {where}; line i must name label i")
    return names


def load_split(root, split="train", num_classes=None, skip_bad=False, num_classes_from=None):
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
    num_classes_from : str, optional
        Where ``num_classes`` came from, for the messages (e.g. "the train split").
    skip_bad : bool
        If True, a missing, unreadable or wrong file is reported with ``warnings.warn``
        (a :class:`DatasetWarning`) and skipped instead of raising.

    The lists may have a UTF-8 byte-order mark and CRLF line ends, and may name images with
    their extension (``train_001.jpg`` is read as the stem ``train_001``).

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        For a missing folder or split list, an empty split, a missing or unreadable image
        or mask, a size mismatch, a colour mask, labels >= K other than 255, and a split
        whose masks hold only 0 and 255 (binary masks with 255 for the object; this is
        raised even with ``skip_bad``, as no file in particular is at fault). When K is
        inferred, also for masks that are not K classes: smoothed (resized) masks and labels
        with gaps (see :func:`_check_inferred_classes`).
    """
    root = Path(root)
    for sub in ("JPEGImages", "SegmentationClass"):
        if not (root / sub).is_dir():
            raise DatasetError(f"{root}: no {sub}/ folder; expected the Pascal VOC layout (see tinyfcn.datasets.voc)")
    list_path = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not list_path.is_file():
        raise DatasetError(f"{list_path}: split list not found")
    names = [_stem(root, name) for name in _read_lines(list_path)]
    if not names:
        raise DatasetError(f"{list_path}: the split is empty (it lists no image stems)")

    classes, source = None, None
    if (root / "classes.txt").is_file():
        classes, source = _read_classes(root / "classes.txt"), "from classes.txt"
        if num_classes is not None and num_classes != len(classes):
            raise DatasetError(f"{root / 'classes.txt'}: lists {len(classes)} classes but "
                               + (f"{num_classes_from} has {num_classes}" if num_classes_from
                                  else f"num_classes={num_classes}"))
    elif num_classes is not None:
        classes, source = [f"class {i}" for i in range(num_classes)], f"from {num_classes_from or 'the num_classes argument'}"

    images, labels, kept = [], [], []
    for name in names:
        try:
            image, label = _read_pair(root, name)
            if classes is not None:
                _check_range(_mask_path(root, name), label, len(classes), source)
        except DatasetError as err:
            if not skip_bad:
                raise
            warnings.warn(DatasetWarning(f"skipping {name!r}: {err}"), stacklevel=2)
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
        _check_inferred_classes(root, split, kept, labels, found)
        classes = [f"class {i}" for i in range(int(found[found != IGNORE].max()) + 1)]

    if len({image.shape[2] for image in images}) > 1:   # a few grayscale images in a colour dataset
        images = [np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image for image in images]
    return Dataset(images, labels, kept, classes)


# ---------------------------------------------------------------- writing


def _save_pillow(path, img):
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported suffix {Path(path).suffix!r}; use .png, .jpg or .jpeg")
    atomic_write(path, lambda f: img.save(f, format=fmt, **({"quality": 95} if fmt == "JPEG" else {})))


def _save_text(path, lines):
    atomic_write(path, lambda f: f.write("".join(line + "\n" for line in lines).encode()))


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


def write_dataset(out, classes, splits):
    """Write generated splits in the VOC layout, all or nothing.

    ``splits`` maps a split name to an iterable of ``(image, label)``; item i of split s
    gets the stem ``f"{s}_{i:05d}"``. Everything is written into a hidden temporary folder
    beside ``out`` (``.<name>.<random>.partial``), which becomes ``out`` at the end with one
    rename; if ``out`` already exists, the new files are moved into it, its old split lists
    first removed and the new ones moved last. If anything fails, Ctrl-C included, the
    temporary folder is removed and ``out`` is left as it was, so no half-written dataset
    ever looks complete. (A temporary folder left by a killed process is ignored.)

    Raises
    ------
    ValueError
        If ``out``, or a folder on the way to it, is an existing file: nothing is written.
    """
    out = Path(out)
    there = next(path for path in (out, *out.parents) if path.exists())   # "." or "/" at the latest
    if not there.is_dir():
        raise ValueError(f"cannot write the dataset to {out}: {there} is a file (a dataset is a folder of "
                         f"JPEGImages/, SegmentationClass/, ...); give a folder name")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    moving = False
    try:
        os.chmod(tmp, DIR_MODE)                 # mkdtemp makes it private; the dataset gets the usual mode
        lists = tmp / "ImageSets" / "Segmentation"
        for sub in (tmp / "JPEGImages", tmp / "SegmentationClass", lists):
            sub.mkdir(parents=True, exist_ok=True)
        _save_text(tmp / "classes.txt", classes)
        stems = {}
        for split, items in splits.items():
            stems[split] = []
            for i, (image, label) in enumerate(items):
                stem = f"{split}_{i:05d}"
                save_image(tmp / "JPEGImages" / f"{stem}.png", image)
                save_mask(tmp / "SegmentationClass" / f"{stem}.png", label)
                stems[split].append(stem)
        for split, names in stems.items():
            _save_text(lists / f"{split}.txt", names)
        moving = True
        _move_into(tmp, out, [Path("ImageSets") / "Segmentation" / f"{split}.txt" for split in stems])
    except KeyboardInterrupt:
        shutil.rmtree(tmp, ignore_errors=True)
        if moving:
            raise KeyboardInterrupt(f"interrupted while moving the new dataset into {out}; its split lists are "
                                    f"not all there, so make it again") from None
        raise KeyboardInterrupt(f"interrupted while making the dataset; nothing was written to {out}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _move_into(tmp, out, lists):
    """Make the finished folder ``tmp`` be ``out``: one rename if ``out`` is new (or empty), else a merge."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.rename(tmp, out)
        return
    for name in lists:                          # an interrupted merge never looks complete
        (out / name).unlink(missing_ok=True)
    for path in sorted(tmp.rglob("*")):
        if path.is_file() and path.relative_to(tmp) not in lists:
            target = out / path.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    for name in lists:
        os.replace(tmp / name, out / name)
    shutil.rmtree(tmp, ignore_errors=True)
