"""The Pascal VOC colour palette, shared by label PNGs (data) and label plots (viz)."""
import numpy as np


def voc_palette(n=256):
    """The VOC colour map: an (n, 3) uint8 array; colour i is label i, 255 (ignore) is near-white.

    Bits 0, 1, 2 of the label go to the high bits of red, green and blue, then bits 3-5,
    and so on, so neighbouring labels get clearly different colours
    (0 black, 1 dark red, 2 dark green, 3 olive, 4 dark blue, ...).
    """
    colours = np.zeros((n, 3), dtype=np.uint8)
    for label in range(n):
        c, r, g, b = label, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours[label] = (r, g, b)
    return colours
