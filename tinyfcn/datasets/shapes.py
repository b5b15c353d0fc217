"""The shapes dataset: disks, triangles and squares on a shaded background (:func:`make_shapes`).

Generated with NumPy from a seed and written in the VOC layout, so it goes through
exactly the code a real dataset does. See data/README.md for its design.
"""
import numpy as np

from ..ops.sizes import pair
from .toy import check_counts, image_rngs
from .voc import write_dataset

SHAPES_CLASSES = ["background", "disk", "triangle", "square"]

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
    check_counts(n_train, n_val)
    size = pair(size, "size")
    if min(size) < 16:
        raise ValueError(f"make_shapes: size must be at least 16x16, got {size}")
    if level not in SHAPES_LEVELS:
        raise ValueError(f"make_shapes: level must be one of {sorted(SHAPES_LEVELS)}, got {level!r}")
    if channels not in (1, 3):
        raise ValueError(f"make_shapes: channels must be 1 or 3, got {channels!r}")
    splits = {split: (_shapes_scene(rng, size, level, channels) for rng in image_rngs(seed, n, k))
              for k, (split, n) in enumerate((("train", n_train), ("val", n_val)))}
    return write_dataset(out, SHAPES_CLASSES, splits)
