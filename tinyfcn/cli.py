"""The ``tinyfcn`` command line: make data, train, pretrain a classifier, evaluate, predict, inspect,
check gradients, export.

Every command has ``--help``. Errors the user can fix (a bad path, a broken dataset, a
checkpoint of another model) print one line and exit with status 2 (1 if training
diverges, 130 after Ctrl-C); they never show a traceback.
"""
import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

EXIT_ERROR, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 1, 130


class UsageError(Exception):
    """A problem with the command's arguments or files, reported in one line."""


# ---------------------------------------------------------------- data


def _size(values, flag):
    """A list of 1 or 2 positive ints from the command line -> S or (H, W); None stays None."""
    if values is None:
        return None
    if len(values) > 2:
        raise UsageError(f"{flag} takes S or H W, got {len(values)} numbers")
    return values[0] if len(values) == 1 else tuple(values)


def cmd_data(args):
    from .datasets import make_dataset
    root = make_dataset(args.name, args.out, args.n_train, args.n_val, args.seed, _size(args.size, "--size"))
    print(f"wrote the {args.name} dataset ({args.n_train} train, {args.n_val} val images) to {root}")
    return 0


# ---------------------------------------------------------------- train


def _free_run_folder(model):
    """runs/<model>, or runs/<model>-2, -3, ... : never an existing run."""
    base = Path("runs") / model
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{model}-{n}")
    return candidate


MODEL_OPTIONS = ("downsample", "upsample", "fusion", "fc6_kernel", "norm")
"""The design switches of an FCN, as ``--downsample``, ``--upsample``, ``--fusion``, ``--fc6-kernel``, ``--norm``."""


def _model_options(args):
    """The design switches given on the command line (the ones left out keep the model's default).

    ``--fc6-kernel k`` also sets fc6's padding to k // 2 (what :func:`~tinyfcn.networks.surgery.from_classifier` uses).
    """
    options = {k: getattr(args, k) for k in MODEL_OPTIONS if getattr(args, k, None) is not None}
    if "fc6_kernel" in options:
        options["fc6_padding"] = options["fc6_kernel"] // 2
    return options


def _build(config, seed=0):
    """build(config), with a bad combination of options reported in one line."""
    from .networks.surgery import build
    try:
        return build(config, seed=seed)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _initial_model(args, num_classes, in_channels):
    """A new model, one grown from a coarser checkpoint (--init) for staged training, or one started
    from a classifier checkpoint (--init CLASSIFIER.npz, written by ``tinyfcn pretrain``)."""
    from .networks.surgery import from_classifier, grow
    from .training.checkpoint import load_model
    from .training.recipes import RECIPES
    options = _model_options(args)
    if args.init is None:
        options.setdefault("norm", RECIPES[args.recipe]["norm"])            # a new model takes the recipe's
        config = dict(arch=args.model, num_classes=num_classes, in_channels=in_channels, **options)
        return _build(config, seed=args.seed)
    model = load_model(args.init).train()
    if model.config["num_classes"] != num_classes or model.config["in_channels"] != in_channels:
        raise UsageError(f"--init {args.init} was trained for {model.config['num_classes']} classes and "
                         f"{model.config['in_channels']} channels, but the data has {num_classes} and {in_channels}")
    if model.config["arch"] == "classifier":
        try:
            return from_classifier(model, args.model, **options).train()
        except ValueError as e:
            raise UsageError(f"--init {args.init}: {str(e).removeprefix('from_classifier: ')}") from None
    changed = [f"--{k.replace('_', '-')} {v}" for k, v in options.items() if model.config.get(k) != v]
    if changed:
        raise UsageError(f"--init {args.init} is a {', '.join(f'{k}={model.config.get(k)}' for k in options)} "
                         f"model; {' '.join(changed)} would change it (leave the option out)")
    if model.config["arch"] == args.model:
        return model
    try:
        return grow(model, args.model)
    except ValueError as e:
        raise UsageError(f"--init {args.init}: {str(e).removeprefix('grow: ')}") from None


def _check_settings(args):
    """The numeric training settings given on the command line, checked before any data is loaded."""
    import math
    checks = [("--lr", args.lr, lambda v: v > 0, "a positive number, e.g. 0.001"),
              ("--momentum", args.momentum, lambda v: 0 <= v < 1, "in [0, 1), e.g. 0.9"),
              ("--weight-decay", args.weight_decay, lambda v: v >= 0, "0 or more, e.g. 1e-4"),
              ("--warmup-epochs", args.warmup_epochs, lambda v: v >= 0, "0 or more, e.g. 1")]
    for flag, value, ok, want in checks:
        if value is not None and not (math.isfinite(value) and ok(value)):
            raise UsageError(f"{flag} {value}: must be {want}")
    _size(args.crop, "--crop")


def _class_weights(args, num_classes):
    """``--class-weights``: none, median-frequency, or a file of K weights (read and checked here)."""
    from .training.recipes import CLASS_WEIGHTS
    if args.class_weights is None or args.class_weights in CLASS_WEIGHTS:
        return args.class_weights
    from .datasets.statistics import read_class_weights
    if not Path(args.class_weights).is_file():
        raise UsageError(f"--class-weights {args.class_weights}: no such file; give none, median-frequency, "
                         f"or a file with one weight per class ({num_classes} lines)")
    return read_class_weights(args.class_weights, num_classes)


SANITY_FOREGROUND = 0.5
"""``--sanity`` passes when the loss starts at log K, falls below a tenth of it, and the overfitted
images' foreground pixels (label > 0) are labelled right at least this often. An all-background
answer scores 0 there, however much of the image the background covers. (Thin strokes, as in
digits, cannot be overfitted exactly through FCN-8s's stride-8 scores: 4 digits images reach
about 0.6 foreground accuracy and a loss near 0.06.)"""


def cmd_train(args):
    from . import datasets, viz
    from .training.train import fit, sanity_check
    _check_settings(args)
    if args.data is None:
        args.data = Path("data") / "shapes"
        lists = args.data / "ImageSets" / "Segmentation"
        if not ((lists / "train.txt").is_file() and (lists / "val.txt").is_file()):
            why = "it has no split lists (an interrupted run?)" if args.data.exists() else "no --data given"
            print(f"{why}: making the shapes dataset in {args.data}")
            datasets.make_dataset("shapes", args.data, 2000, 400, 0)
    train_set = datasets.load_split(args.data, "train", skip_bad=args.skip_bad)
    val_set = datasets.load_split(args.data, "val", num_classes=train_set.num_classes, skip_bad=args.skip_bad,
                                  num_classes_from="the train split")
    model = _initial_model(args, train_set.num_classes, train_set.in_channels)
    class_weights = _class_weights(args, train_set.num_classes)
    if args.sanity:
        result = sanity_check(model, train_set, images=4, steps=300, lr=0.05)
        ok = (abs(result["initial_loss"] - result["log_k"]) < 1e-3 and result["final_loss"] < 0.1 * result["log_k"]
              and result["foreground_accuracy"] > SANITY_FOREGROUND)
        print(f"initial loss {result['initial_loss']:.4f} (log K = {result['log_k']:.4f}); after overfitting 4 images: "
              f"loss {result['final_loss']:.4f} (pass: < {0.1 * result['log_k']:.4f}), foreground accuracy "
              f"{result['foreground_accuracy']:.3f} (pass: > {SANITY_FOREGROUND}), mean IoU {result['mean_iou']:.3f}, "
              f"pixel accuracy {result['pixel_accuracy']:.3f} -> {'ok' if ok else 'FAILED'}")
        return 0 if ok else EXIT_DIVERGED
    out = Path(args.out) if args.out else _free_run_folder(args.model)
    if args.resume and not (out / "last.npz").exists():
        raise UsageError(f"--resume: there is no {out / 'last.npz'} to continue from")
    if not args.resume and (out / "last.npz").exists():
        raise UsageError(f"{out} already holds a run; pass --resume to continue it or --out to start another")
    print(f"training {args.model} on {args.data} ({len(train_set)} train / {len(val_set)} val images, "
          f"{train_set.num_classes} classes); run folder {out}")
    shown = [val_set[i] for i in viz.pick_examples(val_set.labels, 4)]

    def plots(history):
        viz.plot_curves(history, out / "curves.png")
        preds = [model.predict(datasets.normalize(image, model.normalization)[None])[0] for image, _ in shown]
        viz.plot_predictions([i for i, _ in shown], [t for _, t in shown], preds, train_set.classes,
                             out / "predictions.png")
        viz.plot_diagnostics(history, train_set.classes, out / "diagnostics.png")

    fit(model, train_set, val_set, epochs=args.epochs, batch_size=args.batch_size, recipe=args.recipe,
        optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum,
        schedule=args.schedule, warmup_epochs=args.warmup_epochs, class_weights=class_weights,
        normalization=args.normalization, augment=args.augment, crop=_size(args.crop, "--crop"), seed=args.seed,
        out=out, resume=args.resume, progress=not args.quiet, on_epoch_end=plots)
    print(f"done: {out / 'best.npz'} (best validation mean IoU), {out / 'last.npz'}, history.json, config.json, "
          "curves.png, predictions.png, diagnostics.png")
    return 0


# ---------------------------------------------------------------- eval, predict, summary, gradcheck


def cmd_eval(args):
    from . import datasets
    from .files import json_safe
    from .training.checkpoint import load_model
    from .training.train import evaluate
    model = load_model(args.checkpoint)
    k = model.config["num_classes"]
    classes_file = Path(args.data) / "classes.txt"
    if classes_file.is_file():
        listed = len(datasets.voc._read_classes(classes_file))
        if listed != k:
            raise UsageError(f"--checkpoint {args.checkpoint} was trained for {k} classes, but {classes_file} lists "
                             f"{listed}: evaluate it on the dataset it was trained on, or pick a checkpoint of this one")
    dataset = datasets.load_split(args.data, args.split, num_classes=k, skip_bad=args.skip_bad,
                                  num_classes_from=f"the checkpoint {args.checkpoint}")
    if dataset.in_channels != model.config["in_channels"]:
        raise UsageError(f"the model takes {model.config['in_channels']}-channel images, the data has "
                         f"{dataset.in_channels}")
    result = evaluate(model, dataset, args.batch_size)
    if args.confusion is not None:
        from .viz import plot_confusion
        plot_confusion(result["confusion"], dataset.classes, args.confusion)
    keys = ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou", "boundary_accuracy", "per_class_iou")
    if args.json:
        print(json.dumps(json_safe({k: result[k] for k in keys})))
        return 0
    print(f"{args.checkpoint} on {args.data} [{args.split}], {len(dataset)} images")
    for k in keys[:5]:
        print(f"  {k:18s} {result[k]:.4f}")
    print("  per-class IoU:")
    for name, iou in zip(dataset.classes, result["per_class_iou"]):
        print(f"    {name:16s} {iou:.4f}")
    return 0


def cmd_predict(args):
    from . import datasets, viz
    from .training.checkpoint import load_checkpoint, load_model
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; --out is a folder for the masks (one <name>.png per image)")
    if not out.exists() and out.suffix.lower() in datasets.voc.IMAGE_SUFFIXES:
        raise UsageError(f"--out {out}: --out is a folder for the masks (one <name>.png per image), not a file "
                         f"name; give a folder, e.g. --out {out.with_suffix('')}")
    paths = list(dict.fromkeys(map(Path, args.images)))        # the same file twice is predicted once
    by_stem = {}
    for path in paths:
        if path.stem in by_stem:
            raise UsageError(f"{by_stem[path.stem]} and {path} would both be written as {out / (path.stem + '.png')}; "
                             f"predict them into separate --out folders, or rename one")
        by_stem[path.stem] = path
    model = load_model(args.checkpoint)
    classes = load_checkpoint(args.checkpoint)["meta"].get("classes") if args.overlay else None
    images = []                                                  # every image is read before anything is written
    for path in paths:
        image = datasets.read_image(path)
        if image.shape[2] != model.config["in_channels"]:
            raise UsageError(f"{path} has {image.shape[2]} channels; the model takes {model.config['in_channels']}")
        images.append(image)
    out.mkdir(parents=True, exist_ok=True)
    for path, image in zip(paths, images):
        label = model.predict(datasets.normalize(image, model.normalization)[None])[0].astype(np.uint8)
        datasets.save_mask(out / f"{path.stem}.png", label)
        written = [out / f"{path.stem}.png"]
        if args.overlay:
            viz.plot_overlay(image, label, classes or [f"class {i}" for i in range(model.config["num_classes"])],
                             path=out / f"{path.stem}_overlay.png")
            written.append(out / f"{path.stem}_overlay.png")
        print(f"{path} -> {', '.join(map(str, written))}")
    return 0


def cmd_summary(args):
    config = dict(arch=args.model, num_classes=args.num_classes, in_channels=args.in_channels, **_model_options(args))
    _build(config).summary(tuple(args.size))
    return 0


def cmd_pretrain(args):
    from . import datasets, viz
    from .files import atomic_write
    from .networks.models import Classifier
    from .networks.surgery import convolutionalize
    from .training.checkpoint import save_checkpoint
    from .training.pretrain import accuracy, make_crops, train_classifier
    train_set = datasets.load_split(args.data, "train", skip_bad=args.skip_bad)
    val_set = datasets.load_split(args.data, "val", num_classes=train_set.num_classes, skip_bad=args.skip_bad,
                                  num_classes_from="the train split")
    out = Path(args.out)
    if (out / "classifier.npz").exists():
        raise UsageError(f"{out} already holds a classifier; pass another --out")
    train_crops = make_crops(train_set, args.crop_size, seed=args.seed)
    val_crops = make_crops(val_set, args.crop_size, seed=args.seed + 1)
    model = Classifier(train_set.num_classes, in_channels=train_set.in_channels, crop_size=args.crop_size,
                       downsample=args.downsample or "pool", norm=args.norm or "none", seed=args.seed)
    print(f"training a classifier of {args.crop_size}x{args.crop_size} crops on {args.data} "
          f"({len(train_crops[1])} train / {len(val_crops[1])} val crops, {train_set.num_classes} classes); "
          f"run folder {out}")
    history = train_classifier(model, train_crops, val_crops, epochs=args.epochs, batch_size=args.batch_size,
                               lr=args.lr, seed=args.seed, log=None if args.quiet else print)
    save_checkpoint(out / "classifier.npz", model, history=history)
    atomic_write(out / "history.json", lambda f: f.write(json.dumps(history, indent=1).encode()))
    # a 2x2 mosaic of validation images: larger than a crop, so the convolutionalized classifier gives a map
    tiles = [val_set[i] for i in range(min(4, len(val_set)))]
    tiles += tiles[:1] * (4 - len(tiles))
    h, w = min(t[0].shape[0] for t in tiles), min(t[0].shape[1] for t in tiles)
    t = [image[:h, :w] for image, _ in tiles]
    image = np.concatenate([np.concatenate(t[:2], axis=1), np.concatenate(t[2:], axis=1)], axis=0)
    net = convolutionalize(model)
    scores = net.forward(datasets.normalize(image)[None])[0]
    viz.plot_heatmap(image, scores, net.coords["score"], train_set.classes, out / "heatmap.png")
    print(f"validation crop accuracy {accuracy(model, *val_crops):.3f}; done: {out / 'classifier.npz'}, "
          f"history.json, heatmap.png ({scores.shape[1]}x{scores.shape[2]} score map of a "
          f"{image.shape[0]}x{image.shape[1]} mosaic)")
    return 0


def cmd_gradcheck(args):
    from .ops.check_table import TOLERANCE, format_table, table
    rows = table()
    print(format_table(rows))
    print(f"\nfloat64, centred differences with h = 1e-5; tolerance {TOLERANCE:.0e}")
    return 0 if all(worst < TOLERANCE for _, _, worst in rows) else EXIT_DIVERGED


# ---------------------------------------------------------------- export


def cmd_export(args):
    from .export import MissingBackend, save_onnx, save_torch
    from .training.checkpoint import load_model
    savers = {"torch": save_torch, "onnx": save_onnx}
    if args.to not in savers:
        raise UsageError(f"--to {args.to!r}: choose {' or '.join(savers)}")
    if not args.out.parent.is_dir():
        raise UsageError(f"the output folder {args.out.parent} does not exist")
    model = load_model(args.checkpoint)
    try:
        written = savers[args.to](model, args.out)
    except MissingBackend as e:
        raise UsageError(str(e)) from None
    print(f"wrote {', '.join(map(str, written))}")
    return 0


# ---------------------------------------------------------------- the parser


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_model_options(p):
    from .networks.models import DOWNSAMPLE, FUSION, NORM, UPSAMPLE
    p.add_argument("--downsample", choices=DOWNSAMPLE, help="pool (2x2 max-pools, default) or conv (3x3 stride 2)")
    p.add_argument("--upsample", choices=UPSAMPLE,
                   help="transposed (bilinear transposed convolutions, default) or unpool (fcn32s only)")
    p.add_argument("--fusion", choices=FUSION, help="skip fusion: sum (default) or concat")
    p.add_argument("--fc6-kernel", type=_positive, metavar="K", help="fc6 is K x K, padded by K // 2 (default 3)")
    p.add_argument("--norm", choices=NORM, help="none, or batch: a BatchNorm after every convolution of the "
                                                "backbone, fc6 and fc7 (default: the recipe's)")


def _add_threads_option(p):
    p.add_argument("--threads", type=_positive, default=None, metavar="N",
                   help="compute with N threads (default: one per core that other programs leave idle, "
                        "re-checked 4 times a second; see tinyfcn.threads)")


def _apply_threads(args):
    """Set tinyfcn's thread count from ``--threads`` (or the default) and say what it is."""
    from . import threads
    threads.set_threads(args.threads)
    if args.command == "train" and not args.quiet:
        n = threads.get_threads()
        how = ("--threads" if args.threads else
               "default: one per core that other programs leave idle, re-checked 4 times a second; "
               "TINYFCN_THREADS or --threads N to fix it")
        print(f"tinyfcn: computing with {n} thread{'s' * (n > 1)} ({how})")


def build_parser():
    from .datasets import DATASETS
    from .networks.models import DOWNSAMPLE, MODELS, NORM
    from .training.optim import OPTIMIZERS, SCHEDULES
    from .training.recipes import NORMALIZATIONS, RECIPES
    parser = argparse.ArgumentParser(prog="tinyfcn", description="Fully Convolutional Networks from scratch in NumPy.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="generate a toy dataset in the Pascal VOC layout")
    p.add_argument("name", choices=sorted(DATASETS), help="which dataset")
    p.add_argument("--out", type=Path, required=True, help="folder to write (created)")
    p.add_argument("--n-train", type=_positive, default=2000, help="training images (default 2000)")
    p.add_argument("--n-val", type=_positive, default=400, help="validation images (default 400)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files")
    p.add_argument("--size", type=_positive, nargs="+", metavar="S", help="image size: S, or H W")
    p.set_defaults(run=cmd_data)

    p = sub.add_parser("train", help="train an FCN; with no arguments, FCN-8s on the built-in shapes dataset")
    p.add_argument("--data", type=Path, help="dataset folder in the VOC layout (default: make data/shapes)")
    p.add_argument("--model", choices=sorted(MODELS), default="fcn8s", help="variant (default fcn8s)")
    p.add_argument("--init", type=Path, help="start from this checkpoint (a coarser variant for staged training)")
    p.add_argument("--epochs", type=_positive, default=16, help="epochs (default 16)")
    p.add_argument("--batch-size", type=_positive, default=8, help="images per step (default 8)")
    p.add_argument("--recipe", choices=list(RECIPES), default="default",
                   help="the settings every option below left out takes: default (chosen by measurement, "
                        "docs/recipe.md) or paper (the FCN paper's SGD with momentum)")
    p.add_argument("--optimizer", choices=list(OPTIMIZERS), help="sgd, adam or adamw (default: the recipe's)")
    p.add_argument("--lr", type=float, help="base learning rate (default: the recipe's)")
    p.add_argument("--momentum", type=float, help="SGD momentum (default: the recipe's, 0.9)")
    p.add_argument("--weight-decay", type=float, help="weight decay (default: the recipe's)")
    p.add_argument("--schedule", choices=list(SCHEDULES), help="learning-rate schedule (default: the recipe's)")
    p.add_argument("--warmup-epochs", type=float, metavar="E",
                   help="raise the learning rate linearly over the first E epochs (default: the recipe's)")
    p.add_argument("--class-weights", metavar="W",
                   help="weigh the loss by class: none, median-frequency (SegNet's), or a file of K weights, "
                        "one per line (default: the recipe's)")
    p.add_argument("--normalization", choices=NORMALIZATIONS,
                   help="input normalization: fixed (x/255 - 0.5) / 0.25, or the training split's channel "
                        "mean and std (default: the recipe's)")
    p.add_argument("--augment", action="store_true", help="random horizontal flips")
    p.add_argument("--crop", type=_positive, nargs="+", metavar="S", help="train on random S or H W crops")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, shuffling and dropout")
    p.add_argument("--out", type=Path, help="run folder (default runs/<model>, numbered if it exists)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable or invalid files with a warning")
    p.add_argument("--sanity", action="store_true", help="only overfit 4 images and report (check before training)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (the one line per epoch stays)")
    _add_model_options(p)
    _add_threads_option(p)
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("pretrain", help="train a classifier of fixed-size crops (for train --init CLASSIFIER.npz)")
    p.add_argument("--data", type=Path, required=True, help="segmentation dataset folder in the VOC layout")
    p.add_argument("--out", type=Path, required=True, help="run folder: classifier.npz, history.json, heatmap.png")
    p.add_argument("--crop-size", type=_positive, default=48, help="side of the square crops (default 48)")
    p.add_argument("--epochs", type=_positive, default=8, help="epochs (default 8)")
    p.add_argument("--batch-size", type=_positive, default=32, help="crops per step (default 32)")
    p.add_argument("--lr", type=float, default=0.01, help="base learning rate, poly schedule (default 0.01)")
    p.add_argument("--seed", type=int, default=0, help="seed for the crops, initialisation and shuffling")
    p.add_argument("--downsample", choices=DOWNSAMPLE, help="pool (default) or conv")
    p.add_argument("--norm", choices=NORM, help="none (default) or batch: BatchNorm after every convolution and fc")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable or invalid files with a warning")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.set_defaults(run=cmd_pretrain)

    p = sub.add_parser("eval", help="pixel accuracy, mean accuracy, mean IoU, frequency-weighted IoU, boundary "
                                    "accuracy and per-class IoU of a checkpoint on a dataset split")
    p.add_argument("--checkpoint", type=Path, required=True, help="a .npz checkpoint")
    p.add_argument("--data", type=Path, required=True, help="dataset folder in the VOC layout")
    p.add_argument("--split", default="val", help="split name (default val)")
    p.add_argument("--batch-size", type=_positive, default=8)
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable or invalid files with a warning")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--confusion", type=Path, metavar="PNG", help="also save the confusion matrix as a figure")
    _add_threads_option(p)
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("predict", help="write label masks (palette PNGs) for images")
    p.add_argument("--checkpoint", type=Path, required=True, help="a .npz checkpoint")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--out", type=Path, required=True, help="folder for the masks")
    p.add_argument("--overlay", action="store_true",
                   help="also write <name>_overlay.png: the image with the predicted classes and a legend")
    _add_threads_option(p)
    p.set_defaults(run=cmd_predict)

    p = sub.add_parser("summary", help="print a model's layers: output shapes, strides, receptive fields, parameters")
    p.add_argument("--model", choices=sorted(MODELS), default="fcn8s")
    p.add_argument("--size", type=_positive, nargs=2, default=[64, 64], metavar=("H", "W"))
    p.add_argument("--num-classes", type=_positive, default=4)
    p.add_argument("--in-channels", type=_positive, default=3)
    _add_model_options(p)
    p.set_defaults(run=cmd_summary)

    p = sub.add_parser("gradcheck", help="check every backward pass against finite differences and print the table")
    p.set_defaults(run=cmd_gradcheck)

    p = sub.add_parser("export", help="write a checkpoint's model for PyTorch (OUT.pt and OUT_model.py) or ONNX")
    p.add_argument("--checkpoint", type=Path, required=True, help="a .npz checkpoint")
    p.add_argument("--to", required=True, metavar="FORMAT", help="torch or onnx")
    p.add_argument("out", type=Path, metavar="OUT", help="file to write; its folder must exist")
    p.set_defaults(run=cmd_export)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as plain ``tinyfcn: warning: ...`` lines (no source file, line number or code)."""
    print(f"tinyfcn: warning: {message}", file=sys.stderr if file is None else file)


def main(argv=None):
    """Run the command line; returns the exit status."""
    from .datasets import DatasetError
    from .training.checkpoint import CheckpointError
    from .training.train import TrainingError
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "threads"):
            _apply_threads(args)
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            return args.run(args)
    except KeyboardInterrupt as e:
        print(f"\ntinyfcn: {str(e) or 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TrainingError as e:
        print(f"tinyfcn: training stopped: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except (UsageError, DatasetError, CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"tinyfcn {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
