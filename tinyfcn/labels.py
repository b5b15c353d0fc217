"""What label values mean: ``IGNORE`` (255), and the Pascal VOC colours that show labels.

A label map holds one class index per pixel, 0 ... K-1, or ``IGNORE`` where a pixel counts
in neither the loss nor the metrics (VOC marks object borders and unclear regions so).
Label PNGs (:mod:`tinyfcn.datasets`) and label plots (:mod:`tinyfcn.viz`) use the same colours.
"""
import numpy as np

IGNORE = 255
"""The label of pixels that count in neither the loss nor the metrics."""


def voc_palette(n=256):
    """The VOC colour map: an (n, 3) uint8 array; colour i is label i, ``IGNORE`` (255) is near-white.

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
