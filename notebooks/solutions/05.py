"""Notebook 5, from classifier to FCN-32s: the exercises solved, and the answers to the questions.

Q1. Rows: (112 - 48) / 32 + 1 = 3; columns: (176 - 48) / 32 + 1 = 5; 15 score pixels. Score
    pixel (i, j) classifies the 48-pixel crop that starts at (32 i, 32 j): for (1, 2), rows
    32 ... 79 and columns 64 ... 111, centred on (55.5, 87.5). The coordinate map gives
    32 i + 31.5 because fc6 reads a 2 x 2 block of pool5, 64 pixels from 32 i on; but on a
    48-pixel crop pool5's second cell (ceil mode) saw only the crop's last 16 pixels, so the
    classifier learned its classes from objects centred at 23.5 of its window, not at 31.5.

Q2. A digit is 20-30 pixels tall with strokes 2-4 pixels wide, and digits cover about 4 % of
    the pixels: in nearly every 32 x 32 block most pixels are background, so the best label
    per block is background almost everywhere, which is the all-background answer. The shapes
    are filled disks, triangles and squares 16-32 pixels across covering about a quarter of
    the pixels, so many 32-pixel blocks are mostly object and the block answer beats
    all-background. To segment digits, score finer maps first: skips from pool4 and pool3
    (FCN-16s and FCN-8s, an output stride of 8, where the ceiling is far higher), before any
    change to the optimizer.

Q3. No. Eight images are few enough to memorise: the learned x32 upsampling alone holds
    K x K x 64 x 64 weights, which can paint each training picture's labels from its 2 x 2
    coarse scores. A sanity check proves that the pieces are wired right (the loss starts
    at log K, gradients reach every layer, the optimizer and the loss agree) and that the
    network can represent and reach the answer on a few images; it proves nothing about new
    images. Failing it, as the decoder with a zero score layer does, is informative: the network or its training is
    wrong before any question of data or generalisation arises.
"""
import numpy as np

from tinyfcn.networks.coord_map import layer_map


def my_fc6_as_conv(weight, channels, k):
    """weight (out, channels * k * k) -> (out, channels, k, k)."""
    return weight.reshape(len(weight), channels, k, k)           # Flatten's order (C, H, W) is the kernel's


def my_coord_map(layers):
    """layers, first first -> (scale, shift): x_in = scale * x_out + shift, each an array of 2 (height, width)."""
    scale, shift = np.ones(2), np.zeros(2)                       # the input's own coordinates
    for layer in layers:
        a, b = layer_map(layer)
        scale, shift = scale * a, scale * b + shift              # x_prev = a x + b, then the map so far
    return scale, shift
