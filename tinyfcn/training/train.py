"""Training and evaluation loops.

One training step is the whole story of the library in four lines (:func:`train_step`)::

    scores = model.forward(x)                              # (N, K, H, W)
    loss = loss_fn.forward(scores, y)                      # pixel-mean cross-entropy, 255 ignored
    model.backward(loss_fn.backward(), input_grad=False)   # fills model.grads (the images need no gradient)
    optimizer.step(model.grads)                            # updates model.params in place

:func:`train_epoch` runs it over a batch iterator with a learning-rate schedule; every
training loop of tinyfcn is that pair: :func:`fit` (seeded shuffling, validation,
checkpoints that resume a run exactly, a guard against NaN, Ctrl-C handling),
:func:`sanity_check` and the crop classifier's training in :mod:`tinyfcn.training.pretrain`.
"""
import contextlib
import functools
import json
import math
import signal
import threading
import time
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import datasets
from .. import threads as _threads
from ..datasets.batching import FIXED
from ..datasets.statistics import channel_mean_std, median_frequency_weights
from ..files import atomic_write, json_safe
from ..labels import IGNORE
from ..ops import functional as F
from ..ops import nn
from . import recipes
from .checkpoint import (
    load_checkpoint,
    restore_model,
    restore_optimizer,
    save_checkpoint,
)
from .instruments import Instruments, warnings_for
from .metrics import BoundaryAccuracy, ConfusionMatrix
from .optim import OPTIMIZERS, SCHEDULES, SGD, build_optimizer, warmed_up


class TrainingError(RuntimeError):
    """Training cannot go on (the loss or the weights stopped being finite)."""


class TrainingWarning(UserWarning):
    """A telltale pattern in a run's instruments (collapse to one class, a layer that barely moves, dead ReLUs)."""


def evaluate(model, dataset, batch_size=8, boundary_width=3, normalization=None, class_weights=None):
    """Run ``model`` over ``dataset`` in evaluation mode and score it with one dataset-wide confusion matrix.

    The passes run inside ``model.inference()`` (:meth:`~tinyfcn.networks.graph.Graph.inference`):
    each BatchNorm folded into the convolution before it, no backward caches kept.

    ``dataset`` is a :class:`~tinyfcn.datasets.Dataset` or a pair of arrays ``(images, labels)``
    (see :meth:`~tinyfcn.datasets.Dataset.from_arrays`). K is ``model.config["num_classes"]``
    for the FCN models, else the dataset's. ``normalization`` is the input's (mean, std); by default
    the one the model was trained with (``model.normalization``, set by :func:`fit` and
    :func:`~tinyfcn.training.checkpoint.load_model`), else the fixed (0.5, 0.25).
    ``class_weights`` (K,) weigh the loss as in training.

    Returns
    -------
    dict
        ``loss`` (pixel-mean cross-entropy, the weighted mean with ``class_weights``), ``pixel_accuracy``,
        ``mean_accuracy``, ``mean_iou``, ``fw_iou``, ``per_class_iou``, ``boundary_accuracy`` (pixel
        accuracy within ``boundary_width`` px of a ground-truth boundary) and ``confusion`` (K x K array).
    """
    dataset = _as_dataset(dataset, "evaluate", "dataset")
    normalization = getattr(model, "normalization", FIXED) if normalization is None else normalization
    K = getattr(model, "config", {}).get("num_classes", dataset.num_classes)
    confusion = ConfusionMatrix(K, IGNORE)
    boundary = BoundaryAccuracy(boundary_width, IGNORE)
    class_weights = None if class_weights is None else np.asarray(class_weights, np.float64)
    weights = np.ones(K) if class_weights is None else class_weights
    total, counted = 0.0, 0.0
    with model.inference():
        for first, (x, y) in zip(range(0, len(dataset), batch_size),
                                 datasets.batches(dataset, batch_size, normalization=normalization)):
            with np.errstate(over="ignore", invalid="ignore"):    # overflow is caught as NonFiniteError
                scores = model.forward(x)
            total += F.softmax_cross_entropy(scores, y, IGNORE, "sum", class_weights)[0]
            labelled = y[y != IGNORE]
            counted += float(np.bincount(labelled, minlength=K)[:K] @ weights) if class_weights is not None \
                else labelled.size
            pred = scores.argmax(axis=1)
            confusion.update(y, pred)
            for n in range(len(y)):             # each image at its own size: the padding is no object's edge
                h, w = dataset[first + n][1].shape
                boundary.update(y[n, :h, :w], pred[n, :h, :w])
    return dict(loss=total / counted if counted else 0.0, **confusion.scores(), boundary_accuracy=boundary.value(),
                confusion=confusion.matrix)


def _as_dataset(data, who, name):
    """A pair of arrays ``(images, labels)`` through Dataset.from_arrays; a Dataset (or look-alike) as it is."""
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(a, np.ndarray) for a in data):
        return datasets.Dataset.from_arrays(*data)
    if isinstance(data, np.ndarray):
        raise TypeError(f"{who}: {name} is a bare array; pass images and labels together as a pair, "
                        f"{who}(model, (images, labels), ...), or a Dataset.from_arrays(images, labels)")
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")) or isinstance(data, (tuple, list, str)):
        raise TypeError(f"{who}: {name} must be a tinyfcn.datasets.Dataset or a pair of arrays (images, labels), "
                        f"got {type(data).__name__}")
    return data                                # a Dataset, or anything indexed like one


def _existing(path):
    """``path`` if that file exists, else None (a message names only files that are there)."""
    return path if path is not None and path.is_file() else None


@contextlib.contextmanager
def _deferred_interrupt():
    """Turn Ctrl-C into a flag that the loop checks between steps, so a step is never half done."""
    flag = {"set": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["set"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


HISTORY_KEYS = ("epoch", "lr", "train_loss", "train_pixel_accuracy", "val_loss", "val_pixel_accuracy",
                "val_mean_accuracy", "val_mean_iou", "val_fw_iou", "val_boundary_accuracy", "val_per_class_iou",
                "seconds", "images_per_second", "diagnostics")
"""What ``history`` records per epoch; ``diagnostics`` holds the instruments' figures
(:mod:`tinyfcn.training.instruments`)."""


def train_step(model, loss_fn, optimizer, x, y):
    """One step of gradient descent: forward, loss, backward, update. Returns ``(loss, scores)``.

    Raises :class:`~tinyfcn.ops.functional.NonFiniteError` when the activations, the loss or the
    updated weights stop being finite (the caller says where and what was kept).
    """
    with np.errstate(over="ignore", invalid="ignore"):     # overflow is caught as NonFiniteError
        scores = model.forward(x)
        loss = loss_fn.forward(scores, y)
        if not np.isfinite(loss):
            raise F.NonFiniteError(f"the loss is {loss}")
        model.backward(loss_fn.backward(), input_grad=False)       # no gradient of the images
        optimizer.step(model.grads)
    if not all(F.all_finite(w) for w in model.params.values()):
        raise F.NonFiniteError("the weights contain NaN or inf")
    return loss, scores


class Tally:
    """The running figures of an epoch: images seen, mean loss per image, accuracy over labelled pixels.

    Works for score maps (N, K, H, W) with labels (N, H, W) and for logits (N, K) with labels (N,).
    """

    def __init__(self):
        self.images, self.loss_sum, self.correct, self.counted = 0, 0.0, 0, 0

    def add(self, loss, scores, y):
        valid = y != IGNORE
        self.images += len(y)
        self.loss_sum += loss * len(y)
        self.correct += int(np.count_nonzero((scores.argmax(axis=1) == y) & valid))
        self.counted += int(np.count_nonzero(valid))

    @property
    def loss(self):
        return self.loss_sum / max(self.images, 1)

    @property
    def accuracy(self):
        return self.correct / max(self.counted, 1)


def train_epoch(model, loss_fn, optimizer, batches, lr_at, step=0, after_step=None, instruments=None):
    """A :func:`train_step` on every ``(x, y)`` of ``batches``, the learning rate set to ``lr_at(step)`` first.

    ``step`` counts steps over the whole run (for the schedule); ``after_step(step, x, tally)``,
    if given, runs after each step with the new count (to show progress, or to stop);
    ``instruments`` (:class:`~tinyfcn.training.instruments.Instruments`) watch the updates.
    Returns the epoch's :class:`Tally`.
    """
    tally = Tally()
    for x, y in batches:
        optimizer.lr = lr_at(step)
        if instruments is not None:
            instruments.before_step(step)
        loss, scores = train_step(model, loss_fn, optimizer, x, y)
        if instruments is not None:
            instruments.after_step()
        step += 1
        tally.add(loss, scores, y)
        if after_step is not None:
            after_step(step, x, tally)
    return tally


class Run:
    """Where a run stands: epoch, step, the epoch's image order and position, best score, history, data RNG.

    It is what a checkpoint stores besides the weights and the optimizer, so a resumed run
    continues exactly. ``settings`` are the run's resolved training settings (written to
    ``config.json`` and into every checkpoint).
    """

    def __init__(self, seed, settings):
        self.epoch, self.step, self.order, self.position, self.best = 0, 0, None, 0, -1.0
        self.history = {k: [] for k in HISTORY_KEYS}
        self.rng = np.random.default_rng(seed)
        self.settings, self.warned = settings, []

    def save(self, path, model, optimizer, classes):
        save_checkpoint(path, model, optimizer, order=self.order, epoch=self.epoch, step=self.step,
                        position=self.position, best=self.best, history=self.history,
                        data_rng=self.rng.bit_generator.state, classes=classes, settings=self.settings,
                        normalization=self.settings["normalization"], warned=self.warned)

    def restore(self, path, model, optimizer):
        checkpoint = load_checkpoint(path)
        restore_model(model, checkpoint)
        restore_optimizer(optimizer, checkpoint)
        meta = checkpoint["meta"]
        self.rng.bit_generator.state = meta["data_rng"]
        self.epoch, self.step, self.position, self.best = meta["epoch"], meta["step"], meta["position"], meta["best"]
        self.history, self.order, self.warned = meta["history"], checkpoint["order"], meta.get("warned", [])
        self.history.setdefault("diagnostics", [None] * len(self.history["epoch"]))
        self.history.setdefault("val_per_class_iou", [None] * len(self.history["epoch"]))


def fit(model, train_set, val_set=None, epochs=12, batch_size=8, recipe="default", optimizer=None, lr=None,
        weight_decay=None, momentum=None, nesterov=False, schedule=None, warmup_epochs=None, class_weights=None,
        normalization=None, augment=False, crop=None, seed=0, out=None, resume=False, progress=True,
        on_epoch_end=None, verbose=True, threads=None):
    """Train ``model`` on ``train_set``, validating on ``val_set`` after every epoch.

    Parameters
    ----------
    model : FCN32s, FCN16s or FCN8s, or any layer with params/grads (e.g. a tinyfcn.networks.graph.Sequential)
    train_set, val_set : tinyfcn.datasets.Dataset, or a pair of arrays ``(images, labels)``
        Arrays go through :meth:`~tinyfcn.datasets.Dataset.from_arrays` with its defaults:
        ``fit(model, (X, Y))``, ``fit(model, (X, Y), (X_val, Y_val))``.
    epochs : int
        Total epochs of the run (a resumed run continues up to this number).
    batch_size : int
        Images per step; images of different sizes are padded (labels with 255, which the loss ignores).
    recipe : str
        A name in :data:`tinyfcn.training.recipes.RECIPES` ("default", "paper"): it fills in every
        setting below left at None.
    optimizer : {"sgd", "adam", "adamw"}
    lr, weight_decay : the optimizer's base learning rate (the schedule's start) and weight decay
    momentum, nesterov : SGD's
    schedule : {"constant", "step", "poly"}
    warmup_epochs : float
        Raise the learning rate linearly from ~0 over this many epochs (composes with the schedule).
    class_weights : "none", "median-frequency", or a sequence of K weights
        Weigh each pixel's loss by its class (the weighted mean, PyTorch's ``weight``);
        "median-frequency" computes SegNet's weights from ``train_set``.
    normalization : "fixed", "dataset", or (mean, std)
        How uint8 images become network input: tinyfcn's fixed (0.5, 0.25), the training
        split's own channel statistics, or the given values (0 ... 1 units). The model remembers
        it (``model.normalization``, for :func:`evaluate` and ``predict``) and checkpoints store it.
        Float images (``Dataset.from_arrays`` of floats) are network input already: they are used as
        they are, and "dataset" records the fixed (0.5, 0.25) that ``from_arrays`` applied.
    augment : bool
        Random horizontal flips.
    crop : int or (h, w), optional
        Train on random crops of this size (smaller images are padded, labels with 255).
    seed : int
        Seeds the shuffling and augmentation. The same seed and model give an identical run (a
        model's starting weights come from its own seed, or from the ``rng`` its layers were given:
        layers built without one start differently every time).
    out : str or Path, optional
        Run folder: ``last.npz`` every epoch, ``best.npz`` (best validation mean IoU),
        ``history.json``, ``config.json`` (the settings). Needed for ``resume`` and for Ctrl-C to save anything.
    resume : bool
        Continue from ``out/last.npz`` exactly where it stopped (even mid-epoch).
    progress, verbose : bool
        Show a progress bar per epoch; print one line of figures (and any warning) after each epoch.
    on_epoch_end : callable, optional
        Called as ``on_epoch_end(history)`` after each epoch (e.g. to draw plots).
    threads : int, optional
        Compute with this many threads from now on (``tinyfcn.threads.set_threads``);
        None keeps the current setting (by default one per core that other programs leave idle).

    Returns
    -------
    history : dict of lists, one entry per epoch (keys in ``HISTORY_KEYS``)

    Raises
    ------
    TrainingError
        If the loss, the weights or the activations (in training or in validation) become
        NaN or inf; the message names the step and the last good checkpoint in ``out``, if
        one was saved, which is left as it was.
    KeyboardInterrupt
        After Ctrl-C: the current step finishes and ``out/last.npz`` is saved first.
    """
    train_set, val_set, out = _check_fit(model, train_set, val_set, epochs, batch_size, out, threads)
    run = Run(seed, _settings(model, train_set, recipe, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                              momentum=momentum, nesterov=nesterov, schedule=schedule, warmup_epochs=warmup_epochs,
                              class_weights=class_weights, normalization=normalization))
    opt, loss_fn, lr_at = _optimizer_and_loss(model, run.settings, epochs, math.ceil(len(train_set) / batch_size))
    if resume:
        run.restore(out / "last.npz", model, opt)
    norm = model.normalization = run.settings["normalization"]          # what eval and predict will feed it
    augment_fn = (functools.partial(datasets.augment, rng=run.rng, flip=augment, crop=crop)
                  if augment or crop is not None else None)
    instruments = Instruments(model, _probe(val_set or train_set, norm), math.ceil(len(train_set) / batch_size))
    model.train()
    with _deferred_interrupt() as interrupted:
        while run.epoch < epochs:
            if run.order is None:
                run.order, run.position = run.rng.permutation(len(train_set)), 0
            start = time.perf_counter()
            bar = tqdm(total=len(run.order), initial=run.position, desc=f"epoch {run.epoch + 1}/{epochs}",
                       unit="img", disable=not progress, leave=True)

            def after_step(step, x, tally):
                run.step, run.position = step, run.position + len(x)
                bar.update(len(x))
                bar.set_postfix(loss=f"{tally.loss:.4f}", acc=f"{tally.accuracy:.3f}")
                if interrupted["set"]:
                    bar.close()
                    raise _interrupt(run, out, model, opt, train_set)

            batches = datasets.batches(train_set, batch_size, augment_fn=augment_fn, order=run.order,
                                       start=run.position, normalization=norm)
            try:
                tally = train_epoch(model, loss_fn, opt, batches, lr_at, run.step, after_step, instruments)
            except F.NonFiniteError as e:
                raise _diverged(f"at step {run.step} (epoch {run.epoch + 1})", e, out) from None
            bar.close()
            seconds = time.perf_counter() - start
            run.epoch, run.order, run.position = run.epoch + 1, None, 0
            record = dict(epoch=run.epoch, lr=opt.lr, train_loss=tally.loss, train_pixel_accuracy=tally.accuracy,
                          seconds=seconds, images_per_second=tally.images / seconds)
            record.update(_validate(model, val_set, batch_size, run, out, instruments))
            _end_epoch(run, record, out, model, opt, train_set, verbose)
            if on_epoch_end is not None:
                on_epoch_end(run.history)
    return run.history


def _check_fit(model, train_set, val_set, epochs, batch_size, out, threads):
    """fit's arguments, checked: the datasets as Datasets and the run folder as a Path."""
    if threads is not None:
        _threads.set_threads(threads)
    if batch_size < 1 or epochs < 0:
        raise ValueError(f"fit: need batch_size >= 1 and epochs >= 0, got {batch_size} and {epochs}")
    train_set = _as_dataset(train_set, "fit", "train_set")
    val_set = None if val_set is None else _as_dataset(val_set, "fit", "val_set")
    if len(train_set) == 0:
        raise ValueError("fit: the training set is empty")
    out = Path(out) if out is not None else None
    if out is not None and not hasattr(model, "config"):
        raise TypeError(f"fit: out= saves checkpoints, which hold a tinyfcn.models model (one with .config); "
                        f"{type(model).__name__} has none: leave out=None and save its params yourself")
    return train_set, val_set, out


def _settings(model, train_set, recipe, **given):
    """The run's training settings: the recipe's, overridden by ``given``; class weights and normalization
    resolved to numbers and the model's own settings (``norm``, ``learn_upsampling``) read off its config, so
    that the run's config records what was used; everything checked."""
    chosen = recipes.settings(recipe, **given)
    chosen["recipe"] = recipe
    for key in recipes.MODEL_SETTINGS:
        chosen[key] = getattr(model, "config", {}).get(key)
    if chosen["schedule"] not in SCHEDULES:
        raise ValueError(f"fit: unknown schedule {chosen['schedule']!r}; choose one of {', '.join(SCHEDULES)}")
    if chosen["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"fit: unknown optimizer {chosen['optimizer']!r}; choose one of {', '.join(OPTIMIZERS)}")
    if not (chosen["warmup_epochs"] >= 0):
        raise ValueError(f"fit: warmup_epochs must be >= 0, got {chosen['warmup_epochs']}")
    weights = chosen["class_weights"]
    if isinstance(weights, str):
        if weights not in recipes.CLASS_WEIGHTS:
            raise ValueError(f"fit: class_weights must be 'none', 'median-frequency' or K numbers, got {weights!r}")
        weights = None if weights == "none" else median_frequency_weights(train_set)
    chosen["class_weights"] = None if weights is None else [float(w) for w in weights]
    norm = chosen["normalization"]
    if isinstance(norm, str):
        if norm not in recipes.NORMALIZATIONS:
            raise ValueError(f"fit: normalization must be 'fixed', 'dataset' or (mean, std), got {norm!r}")
        raw = train_set[0][0].dtype == np.uint8                             # float images are network input
        norm = channel_mean_std(train_set) if norm == "dataset" and raw else datasets.FIXED
    chosen["normalization"] = [np.asarray(v, np.float64).round(6).tolist() for v in norm]
    return chosen


def _optimizer_and_loss(model, settings, epochs, steps_per_epoch):
    """The run's optimizer, its loss and its learning rate per step ``lr_at(step)``."""
    s = settings
    opt = build_optimizer(s["optimizer"], model.params, s["lr"], s["weight_decay"], s["momentum"], s["nesterov"])
    weights = None if s["class_weights"] is None else np.asarray(s["class_weights"])
    loss_fn = nn.SoftmaxCrossEntropy(ignore_index=IGNORE, class_weights=weights)
    rate = warmed_up(SCHEDULES[s["schedule"]], round(s["warmup_epochs"] * steps_per_epoch))
    return opt, loss_fn, lambda step: rate(s["lr"], step, epochs * steps_per_epoch)


def _probe(dataset, normalization, images=8):
    """The instruments' fixed probe batch: the first images of ``dataset``, as network input."""
    return datasets.collate([dataset[i] for i in range(min(images, len(dataset)))], normalization)[0]


def _interrupt(run, out, model, optimizer, train_set):
    """The KeyboardInterrupt that ends a run after Ctrl-C, once ``last.npz`` is saved (when there is a run folder)."""
    if out is None:
        return KeyboardInterrupt(f"interrupted at step {run.step}")
    run.save(out / "last.npz", model, optimizer, getattr(train_set, "classes", None))
    return KeyboardInterrupt(f"interrupted at step {run.step}; saved {out / 'last.npz'}, continue with resume")


def _validate(model, val_set, batch_size, run, out, instruments):
    """The ``val_*`` figures of an epoch (none without a validation set), and the instruments' ``diagnostics``."""
    if val_set is None or not len(val_set):
        return dict(diagnostics=instruments.epoch())
    try:
        scores = evaluate(model, val_set, batch_size, normalization=run.settings["normalization"],
                          class_weights=run.settings["class_weights"])
    except F.NonFiniteError as e:
        raise _diverged(f"in the validation after epoch {run.epoch} (step {run.step})", e, out) from None
    record = {f"val_{k}": scores[k] for k in ("loss", "pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou",
                                                "boundary_accuracy", "per_class_iou")}
    return dict(record, diagnostics=instruments.epoch(scores["confusion"]))


def _end_epoch(run, record, out, model, optimizer, train_set, verbose):
    """Add the epoch to the history, print its line and any new warning, save config.json (the run's resolved
    settings), last.npz (and best.npz when it is the best) and history.json."""
    for k in HISTORY_KEYS:
        run.history[k].append(json_safe(record.get(k)))
    if verbose:
        print(_epoch_line(record))
    classes = getattr(train_set, "classes", None)
    for kind, message in warnings_for(run.history, classes):
        if kind not in run.warned:                         # each pattern is told once a run
            run.warned.append(kind)
            warnings.warn(message, TrainingWarning, stacklevel=3)
    if out is None:
        return
    atomic_write(out / "config.json", lambda f: f.write(json.dumps(run.settings, indent=1).encode()))
    run.save(out / "last.npz", model, optimizer, classes)
    current = record.get("val_mean_iou", -record["train_loss"])
    if current is not None and current > run.best:
        run.best = current
        run.save(out / "best.npz", model, optimizer, classes)
    atomic_write(out / "history.json", lambda f: f.write(json.dumps(run.history, indent=1).encode()))


def _diverged(where, error, out):
    """The TrainingError of a run that diverged ``where``; it names last.npz only if that file exists."""
    last = _existing(out / "last.npz" if out is not None else None)
    kept = (f"{last} holds the last good state" if last else
            "no checkpoint was saved (checkpoints are written at the end of each epoch)" if out is not None else
            "nothing was saved")
    error = str(error) if str(error).startswith("the ") else f"the activations overflowed ({error})"
    return TrainingError(f"diverged {where}: {error}; lower the learning rate; {kept}")


def _epoch_line(record):
    line = (f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, "
            f"pixel acc {record['train_pixel_accuracy']:.3f}, {record['images_per_second']:.0f} img/s")
    if "val_mean_iou" in record:
        line += (f" | val loss {record['val_loss']:.4f}, pixel acc {record['val_pixel_accuracy']:.3f}, "
                 f"mean IoU {record['val_mean_iou']:.3f}, boundary acc {record['val_boundary_accuracy']:.3f}")
    return line


def sanity_check(model, dataset, images=4, steps=200, lr=0.02):
    """Overfit a handful of images: the check to run before a long training.

    With the score layers at zero the first loss must be exactly log K; after ``steps``
    full-batch steps (dropout off) the network should label those images almost perfectly:
    judge that on ``mean_iou`` (over the classes in those images) or ``foreground_accuracy``,
    not on pixel accuracy, which an all-background answer makes high when the background
    covers most pixels (95 % on digits).

    The model is trained in evaluation mode (no dropout) and left in the mode it was in.

    Returns
    -------
    dict with ``initial_loss``, ``log_k``, ``final_loss``, and on those images ``pixel_accuracy``,
    ``mean_iou`` (the mean over the classes present in their labels) and ``foreground_accuracy``
    (pixel accuracy over the pixels not labelled 0; NaN if there are none).
    """
    x, y = datasets.collate([dataset[i] for i in range(min(images, len(dataset)))],
                            getattr(model, "normalization", FIXED))
    optimizer = SGD(model.params, lr, momentum=0.9, weight_decay=0)
    loss_fn = nn.SoftmaxCrossEntropy(ignore_index=IGNORE)
    with nn.evaluating(model):
        try:
            losses = [train_step(model, loss_fn, optimizer, x, y)[0] for _ in range(steps)]
        except F.NonFiniteError as e:
            raise TrainingError(f"the sanity check diverged ({e}); lower its learning rate") from None
        scores = model.forward(x)
    final = loss_fn.forward(scores, y)
    valid = y != IGNORE
    pred = scores.argmax(axis=1)
    confusion = ConfusionMatrix(scores.shape[1], IGNORE)
    confusion.update(y, pred)
    present = confusion.matrix.sum(axis=1) > 0
    iou = np.asarray(confusion.scores()["per_class_iou"])
    foreground = valid & (y != 0)
    return dict(initial_loss=losses[0], log_k=math.log(scores.shape[1]), final_loss=final,
                pixel_accuracy=float(np.mean(pred[valid] == y[valid])), mean_iou=float(np.mean(iou[present])),
                foreground_accuracy=float(np.mean(pred[foreground] == y[foreground])) if foreground.any()
                else float("nan"))
