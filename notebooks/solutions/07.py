"""Notebook 7, your own data: the exercises solved, and the answers to the questions.

Q1. The all-background answer predicts class 0 everywhere. Its background IoU is
    (background pixels) / (all pixels) = b: every pixel is predicted background, and the
    background pixels are the hits. Every other class present has no hits, so IoU 0. With
    c classes present (background included) the mean IoU is b / c: 0.955 / 11 = 0.087 on
    these scenes. Pixel accuracy is b itself, above 0.95, because it counts pixels and the
    background owns almost all of them; mean IoU gives each class the same weight, so a
    network only scores by finding the digits.

Q2. Those values are neither a class nor 255: tinyfcn would read them as class indices 16,
    48, 143 ..., far beyond the 2 classes of the mask (a label out of range, or, with that
    many classes, pixels of classes that do not exist), and the object's edge would be
    taught as a ring of nonsense classes. Nearest-neighbour copies an existing value to
    every new pixel, so a mask keeps only its class indices; an image is a measurement of
    brightness, where a value between two neighbours is a fair estimate, so it may be
    interpolated.

Q3. The network learned its weights for inputs with the training statistics: mean 0 and
    standard deviation 1 per channel. Other numbers shift and scale every input, so every
    first-layer activation is off by a constant and a factor, BatchNorm's running
    statistics no longer match, and the predictions degrade or collapse, with no error
    message. tinyfcn keeps the (mean, std) a model was trained with in model.normalization
    (set by fit) and in every checkpoint (load_model restores it; evaluate uses it, and
    datasets.normalize(image, model.normalization) prepares an image for predict). The
    ONNX and PyTorch exports take input that is normalised already: apply the same numbers
    before calling them.
"""
import numpy as np

from tinyfcn.labels import IGNORE, voc_palette


def my_mean_iou(confusion):
    """confusion (K, K) counts, rows = true class -> mean IoU over the classes present in target or prediction."""
    C = np.asarray(confusion, dtype=np.float64)
    hits = np.diag(C)
    union = C.sum(axis=1) + C.sum(axis=0) - hits        # true + predicted - both
    present = union > 0                                  # 0 / 0 for a class in neither: left out
    return float(np.mean(hits[present] / union[present]))


def my_labels_from_colours(rgb, num_classes):
    """rgb (H, W, 3) uint8 in VOC colours -> (H, W) uint8 class indices, 255 for the ignore colour."""
    palette = voc_palette()
    labels = np.full(rgb.shape[:2], IGNORE, np.uint8)
    for k in range(num_classes):
        labels[(rgb == palette[k]).all(axis=-1)] = k
    return labels
