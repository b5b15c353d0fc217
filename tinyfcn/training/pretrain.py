"""Fixed-size crops of a segmentation dataset, and training a :class:`~tinyfcn.networks.models.Classifier` on them.

FCN starts from a classifier trained on fixed-size images (VGG16 on ImageNet). The toy
version: from every image of a segmentation dataset, one square crop centred on each
object class it contains (labelled with that class) and ``background`` crops placed at
random where at most ``max_foreground`` of the pixels belong to an object (labelled 0).
A classifier trained on these crops is :func:`~tinyfcn.networks.surgery.convolutionalize`-d into a
coarse segmenter, and starts an FCN (:func:`~tinyfcn.networks.surgery.from_classifier`).
"""
import time

import numpy as np

from ..datasets import normalize
from ..labels import IGNORE
from ..ops import functional as F
from ..ops import nn
from .optim import SGD, poly
from .train import TrainingError, train_epoch


def make_crops(dataset, size, background=1, max_foreground=0.02, seed=0):
    """Square ``size`` x ``size`` crops of ``dataset`` with one class label each.

    Parameters
    ----------
    dataset : tinyfcn.datasets.Dataset
    size : int
        Images are padded by repeating their edge, so a crop may reach past the border.
    background : int
        Background crops tried per image (one is kept when a random place has at most
        ``max_foreground`` of its labelled pixels on objects; 20 places are tried).
    seed : int

    Returns
    -------
    images : uint8 (N, size, size, C)
    labels : int64 (N,), the class of each crop (0 = background)
    """
    rng = np.random.default_rng(seed)
    half, images, labels = size // 2, [], []
    for image, label in dataset:
        padded = np.pad(image, ((half, size), (half, size), (0, 0)), mode="edge")
        mask = np.pad(label, ((half, size), (half, size)), constant_values=IGNORE)
        for c in np.unique(label):
            if c in (0, IGNORE):
                continue
            ys, xs = np.nonzero(label == c)
            top, left = int(round(ys.mean())), int(round(xs.mean()))      # the centre, in padded coordinates
            images.append(padded[top:top + size, left:left + size])
            labels.append(int(c))
        for _ in range(background):
            for _attempt in range(20):
                top, left = rng.integers(half, half + label.shape[0]), rng.integers(half, half + label.shape[1])
                window = mask[top - half:top - half + size, left - half:left - half + size]
                known = window[window != IGNORE]
                if known.size and (known > 0).mean() <= max_foreground:
                    images.append(padded[top - half:top - half + size, left - half:left - half + size])
                    labels.append(0)
                    break
    return np.stack(images), np.array(labels, np.int64)


def accuracy(model, images, labels, batch_size=64):
    """The fraction of crops the classifier labels right (evaluation mode)."""
    right = sum(int((model.predict(normalize(images[i:i + batch_size])) == labels[i:i + batch_size]).sum())
                for i in range(0, len(labels), batch_size))
    return right / len(labels)


def train_classifier(model, train, val=None, epochs=8, batch_size=32, lr=0.01, momentum=0.9, weight_decay=5e-4,
                     seed=0, log=print):
    """SGD with the poly schedule on crops ``train = (images, labels)``; returns the history (a dict of lists).

    The loss is the segmentation loss on logits (N, K) and labels (N,): one "pixel" per crop.
    With BatchNorm (``norm="batch"``) an epoch's last batch is left out when it holds one crop.
    Each epoch is a :func:`~tinyfcn.training.train.train_epoch`, the loop :func:`~tinyfcn.training.train.fit` runs.
    """
    images, labels = train
    optimizer = SGD(model.params, lr, momentum, weight_decay)
    loss_fn = nn.SoftmaxCrossEntropy()
    rng = np.random.default_rng(seed)
    steps_per_epoch = -(-len(labels) // batch_size)
    history = {k: [] for k in ("epoch", "train_loss", "train_accuracy", "val_accuracy", "images_per_second")}
    model.train()
    for epoch in range(epochs):
        order, start = rng.permutation(len(labels)), time.perf_counter()
        chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        if model.buffers and len(chunks[-1]) == 1:      # BatchNorm has no statistics of one crop: leave it out
            chunks.pop()
        batches = ((normalize(images[b]), labels[b]) for b in chunks)
        try:
            tally = train_epoch(model, loss_fn, optimizer, batches,
                                lambda step: poly(lr, step, epochs * steps_per_epoch), epoch * steps_per_epoch)
        except F.NonFiniteError as e:
            raise TrainingError(f"the classifier diverged in epoch {epoch + 1} ({e}); lower its learning rate") from None
        seconds = time.perf_counter() - start
        history["epoch"].append(epoch + 1)
        history["train_loss"].append(tally.loss)
        history["train_accuracy"].append(tally.accuracy)
        history["val_accuracy"].append(None if val is None else accuracy(model, *val))
        history["images_per_second"].append(len(labels) / seconds)
        if log:
            shown = "" if val is None else f", val accuracy {history['val_accuracy'][-1]:.3f}"
            log(f"epoch {epoch + 1}/{epochs}: loss {history['train_loss'][-1]:.4f}, train accuracy "
                f"{history['train_accuracy'][-1]:.3f}{shown}, {history['images_per_second'][-1]:.0f} crops/s")
    return history
