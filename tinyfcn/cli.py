"""The ``tinyfcn`` command line: make data, train, pretrain a classifier, evaluate, predict, inspect,
check gradients, export.

Every command has ``--help``. Errors the user can fix (a bad option, a missing or broken file, a
checkpoint of another model, a file in the way of an output) print one line and exit with status 2
(1 if training diverges, 130 after Ctrl-C); they never show a traceback. Only those are caught:
any other exception is a bug in tinyfcn and shows its traceback (status 1). A reader that closes
the pipe early (``tinyfcn summary | head -1``) ends the command quietly, with status 1.

One rule holds for every option that names something to write (``--out``, ``--confusion``,
export's ``OUT``): missing folders on the way are created; a file where a folder must be, or a
folder where the output file must be, is an error before anything is written.
"""
import argparse
import json
import os
import shlex
import sys
import warnings
from pathlib import Path

import numpy as np

EXIT_ERROR, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_CLOSED_PIPE = 2, 1, 130, 1


class UsageError(Exception):
    """A problem with the command's arguments or files, reported in one line."""


def _count(n, noun):
    """``n`` and ``noun``, plural unless n is 1: "1 channel", "3 channels", "1 class", "4 classes"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}{'es' if noun.endswith('s') else 's'}"


def _output(path, flag, what, folder):
    """``path`` as a Path, checked by the rule of every output: the missing folders on the way are created when it
    is written, so only an existing file in their way, or a file where the output folder must be (``folder``) or a
    folder where the output file must be, is wrong: a UsageError naming ``flag``, which names ``what``."""
    path = Path(path)
    there = next(p for p in (path, *path.parents) if p.exists())   # "." or "/" at the latest
    if there == path and path.is_dir() != folder:
        raise UsageError(f"{flag} {path} is a {'file' if folder else 'folder'}; {flag} is {what}")
    if there != path and not there.is_dir():
        raise UsageError(f"{flag} {path}: {there} is a file, not a folder")
    return path


# ---------------------------------------------------------------- data


def _size(values, flag):
    """A list of 1 or 2 positive ints from the command line -> S or (H, W); None stays None."""
    if values is None:
        return None
    if len(values) > 2:
        raise UsageError(f"{flag} takes S or H W, got {len(values)} numbers")
    return values[0] if len(values) == 1 else tuple(values)


def _make_dataset(name, out, n_train, n_val, seed, size=None):
    """:func:`~tinyfcn.datasets.make_dataset`, its argument checks reported in one line.

    Its ValueErrors are those checks (a size below the dataset's smallest, a file in the way of
    ``out``), made before anything is generated.
    """
    from . import datasets
    try:
        return datasets.make_dataset(name, out, n_train, n_val, seed, size)
    except ValueError as e:
        raise UsageError(str(e)) from None


def cmd_data(args):
    root = _make_dataset(args.name, args.out, args.n_train, args.n_val, args.seed, _size(args.size, "--size"))
    print(f"wrote the {args.name} dataset ({_count(args.n_train, 'train image')}, {_count(args.n_val, 'val image')}) "
          f"to {root}")
    return 0


# ---------------------------------------------------------------- train


RUN_FOLDER = "the run folder (checkpoints, history.json, config.json, figures)"
"""What ``tinyfcn train --out`` names, for messages."""


def _free_run_folder(model):
    """runs/<model>, or runs/<model>-2, -3, ... : never an existing run."""
    base = Path("runs") / model
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{model}-{n}")
    return candidate


def _run_folder(args):
    """The run folder: ``--out`` (or a new runs/<model>), checked by the output rule and against ``--resume``."""
    out = _output(args.out or _free_run_folder(args.model), "--out", RUN_FOLDER, folder=True)
    if args.resume and not (out / "last.npz").exists():
        raise UsageError(f"--resume: there is no {out / 'last.npz'} to continue from")
    if not args.resume and (out / "last.npz").exists():
        raise UsageError(f"{out} already holds a run; pass --resume to continue it or --out to start another")
    return out


def _default_dataset():
    """data/shapes, made first if its split lists are not both there (a first run, or an interrupted one)."""
    root = Path("data") / "shapes"
    lists = root / "ImageSets" / "Segmentation"
    if not ((lists / "train.txt").is_file() and (lists / "val.txt").is_file()):
        why = "it has no split lists (an interrupted run?)" if root.exists() else "no --data given"
        print(f"{why}: making the shapes dataset in {root}")
        _make_dataset("shapes", root, 2000, 400, 0)
    return root


MODEL_OPTIONS = ("downsample", "upsample", "fusion", "fc6_kernel", "norm", "learn_upsampling")
"""The design switches of an FCN, as ``--downsample``, ``--upsample``, ``--fusion``, ``--fc6-kernel``, ``--norm``,
``--learn-upsampling``."""


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
    from a classifier checkpoint (--init CLASSIFIER.npz, written by ``tinyfcn pretrain``).

    Returns ``(model, source)``: ``source`` is the checkpoint's model (None for a new model).
    """
    from .networks.surgery import from_classifier, grow
    from .training.checkpoint import load_model
    from .training.recipes import RECIPES
    options = _model_options(args)
    if args.init is None:
        for key in ("norm", "learn_upsampling"):                           # a new model takes the recipe's
            options.setdefault(key, RECIPES[args.recipe][key])
        config = dict(arch=args.model, num_classes=num_classes, in_channels=in_channels, **options)
        return _build(config, seed=args.seed), None
    source = load_model(args.init).train()
    c = source.config
    if c["num_classes"] != num_classes or c["in_channels"] != in_channels:
        raise UsageError(f"--init {args.init} was trained for {_count(c['num_classes'], 'class')} and "
                         f"{_count(c['in_channels'], 'channel')}, but the data has {_count(num_classes, 'class')} "
                         f"and {_count(in_channels, 'channel')}")
    if c["arch"] == "classifier":                   # a new FCN: the recipe's upsampling, the classifier's norm
        options.setdefault("learn_upsampling", RECIPES[args.recipe]["learn_upsampling"])
        try:
            return from_classifier(source, args.model, **options).train(), source
        except ValueError as e:
            raise UsageError(f"--init {args.init}: {str(e).removeprefix('from_classifier: ')}") from None
    changed = [f"--{k.replace('_', '-')} {v}" for k, v in options.items() if c.get(k) != v]
    if changed:
        raise UsageError(f"--init {args.init} is a {', '.join(f'{k}={c.get(k)}' for k in options)} "
                         f"model; {' '.join(changed)} would change it (leave the option out)")
    if c["arch"] == args.model:
        return source, source
    try:
        return grow(source, args.model), source
    except ValueError as e:
        raise UsageError(f"--init {args.init}: {str(e).removeprefix('grow: ')}") from None


def _carried(source, model):
    """``{name in model: name in source}`` of the parameters ``model`` got from ``source``: what
    :func:`~tinyfcn.networks.surgery.grow` copies (the same name and shape) or, from a classifier, what
    :func:`~tinyfcn.networks.surgery.from_classifier` copies (its convolutionalized layers, ``score`` as
    ``score_fr``)."""
    if source.config["arch"] == "classifier":
        names = {("score_fr" + k[len("score"):] if k.startswith("score.") else k): k for k in source.params}
    else:
        names = {k: k for k in source.params}
    return {k: s for k, s in names.items() if k in model.params and model.params[k].size == source.params[s].size}


def _fresh_layers(model, carried):
    """``model``'s layers with a parameter that did not come from the checkpoint, as ``(name, how it starts)``."""
    from .ops.nn import ConvTranspose2d
    fresh = []
    for name, layer in model.layers.items():
        if any(f"{name}.{k}" not in carried for k in layer.params):
            how = ("at zero" if not any(v.any() for v in layer.params.values()) else
                   "bilinear" if isinstance(layer, ConvTranspose2d) else
                   f"initialised as in a new {model.config['arch']}")
            fresh.append((name, how))
    return fresh


AGREEMENT_IMAGES = 8
"""The step-0 agreement of a grown network with the coarser one is measured on this many validation images."""


def _say_init(init, source, model, val_set):
    """For a run started from a checkpoint, one line each: what ``init`` is and how many parameters it gave, which
    layers start fresh and how, and for a grown FCN the step-0 agreement: the share of pixels of a few validation
    images on which its predicted class is the coarser network's (the new skips add zero; the upsampling is split
    differently)."""
    from . import datasets
    if source is None:
        return
    c, arch = source.config, model.config["arch"]
    carried = _carried(source, model)
    unused = sorted({s.split(".")[0] for s in source.params} - {s.split(".")[0] for s in carried.values()})
    copied = sum(model.params[k].size for k in carried)
    total = sum(v.size for v in model.params.values())
    what = (f"a classifier of {c['crop_size']}x{c['crop_size']} crops" if c["arch"] == "classifier" else
            f"an {c['arch']}")
    print(f"--init {init}: {what}; {copied:,d} of the {arch}'s {total:,d} parameters copied from it"
          + (f" (not used: {', '.join(unused)})" if unused else ""))
    fresh = _fresh_layers(model, carried)
    groups = {how: [name for name, h in fresh if h == how] for _, how in fresh}
    print("new layers: " + ("; ".join(f"{', '.join(names)} {how}" for how, names in groups.items()) or "none"))
    if c["arch"] == "classifier" or c["arch"] == arch or val_set is None or not len(val_set):
        return
    images = val_set.images[:AGREEMENT_IMAGES]
    same = [source.predict(x) == model.predict(x)
            for x in (datasets.normalize(image, source.normalization)[None] for image in images)]
    share = 100 * sum(int(s.sum()) for s in same) / sum(s.size for s in same)
    print(f"at step 0 the {arch} agrees with the {c['arch']} on {share:.1f} % of the pixels of "
          f"{_count(len(images), 'validation image')}")


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


def _class_weights(args, train_set):
    """``--class-weights`` (or the recipe's): a file of K weights and median-frequency's weights are worked out
    here, where a bad file or a split with no labelled pixel is the user's to fix; anything else goes to fit as it is.
    """
    from .datasets.statistics import median_frequency_weights, read_class_weights
    from .training.recipes import CLASS_WEIGHTS, settings
    chosen = settings(args.recipe, class_weights=args.class_weights)["class_weights"]
    if chosen == "median-frequency":
        try:
            return median_frequency_weights(train_set)
        except ValueError as e:
            raise UsageError(f"--class-weights median-frequency: {e}") from None
    if args.class_weights is None or args.class_weights in CLASS_WEIGHTS:
        return args.class_weights
    if not Path(args.class_weights).is_file():
        raise UsageError(f"--class-weights {args.class_weights}: no such file; give none, median-frequency, "
                         f"or a file with one weight per class ({train_set.num_classes} lines)")
    try:
        return read_class_weights(args.class_weights, train_set.num_classes)
    except (OSError, ValueError) as e:
        raise UsageError(f"--class-weights {e}") from None


def _resume_command(args, out):
    """The command that continues this run: ``tinyfcn train``, every option given (those left at their default
    left out), then ``--resume --out RUN``."""
    train = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    words = ["tinyfcn", "train"]
    for action in train._actions:
        value = getattr(args, action.dest, None)
        if not action.option_strings or action.dest in ("help", "resume", "out") or value == action.default:
            continue
        words += [action.option_strings[0]] if action.nargs == 0 else \
            [action.option_strings[0], *map(str, value if isinstance(value, list) else [value])]
    return shlex.join([*words, "--resume", "--out", str(out)])


SANITY_FOREGROUND = 0.5
"""``--sanity`` passes when the loss starts at log K, falls below a tenth of it, and the overfitted
images' foreground pixels (label > 0) are labelled right at least this often. An all-background
answer scores 0 there, however much of the image the background covers. (Thin strokes, as in
digits, cannot be overfitted exactly through FCN-8s's stride-8 scores: 4 digits images reach
about 0.6 foreground accuracy and a loss near 0.06.)"""


def cmd_train(args):
    from . import datasets, viz
    from .ops.functional import BatchStatisticsError
    from .training.train import fit, sanity_check
    _check_settings(args)
    out = None if args.sanity else _run_folder(args)
    data = args.data if args.data is not None else _default_dataset()
    train_set = datasets.load_split(data, "train", skip_bad=args.skip_bad)
    val_set = datasets.load_split(data, "val", num_classes=train_set.num_classes, skip_bad=args.skip_bad,
                                  num_classes_from="the train split")
    model, source = _initial_model(args, train_set.num_classes, train_set.in_channels)
    class_weights = _class_weights(args, train_set)
    if args.sanity:
        _say_init(args.init, source, model, val_set)
        _say_threads(args)
        images = min(4, len(train_set))
        result = sanity_check(model, train_set, images=images, steps=300, lr=0.02)   # 0.05 diverged on the defaults
        ok = (abs(result["initial_loss"] - result["log_k"]) < 1e-3 and result["final_loss"] < 0.1 * result["log_k"]
              and result["foreground_accuracy"] > SANITY_FOREGROUND)
        print(f"initial loss {result['initial_loss']:.4f} (log K = {result['log_k']:.4f}); after overfitting "
              f"{_count(images, 'image')}: loss {result['final_loss']:.4f} (pass: < {0.1 * result['log_k']:.4f}), "
              f"foreground accuracy {result['foreground_accuracy']:.3f} (pass: > {SANITY_FOREGROUND}), mean IoU "
              f"{result['mean_iou']:.3f}, pixel accuracy {result['pixel_accuracy']:.3f} -> {'ok' if ok else 'FAILED'}")
        return 0 if ok else EXIT_DIVERGED
    print(f"training {args.model} on {data} ({len(train_set)} train / {_count(len(val_set), 'val image')}, "
          f"{_count(train_set.num_classes, 'class')}); run folder {out}")
    _say_init(args.init, source, model, val_set)
    shown = [val_set[i] for i in viz.pick_examples(val_set.labels, 4)]
    title = f"{args.model} on {data.resolve().name}, seed {args.seed} — run {out.name}"

    def plots(history):
        viz.plot_curves(history, out / "curves.png", title=title)
        preds = [model.predict(datasets.normalize(image, model.normalization)[None])[0] for image, _ in shown]
        viz.plot_predictions([i for i, _ in shown], [t for _, t in shown], preds, train_set.classes,
                             out / "predictions.png", title=title)
        viz.plot_diagnostics(history, train_set.classes, out / "diagnostics.png", title=title)

    _say_threads(args)
    try:
        fit(model, train_set, val_set, epochs=args.epochs, batch_size=args.batch_size, recipe=args.recipe,
            optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum,
            schedule=args.schedule, warmup_epochs=args.warmup_epochs, class_weights=class_weights,
            normalization=args.normalization, augment=args.augment, crop=_size(args.crop, "--crop"), seed=args.seed,
            out=out, resume=args.resume, progress=not args.quiet and sys.stderr.isatty(), on_epoch_end=plots)
    except BatchStatisticsError as e:              # BatchNorm on a batch of one 1x1 map: the settings' fault
        raise UsageError(f"--batch-size {args.batch_size} with --norm batch: {str(e).split(': ', 1)[1]}") from None
    except KeyboardInterrupt as e:                 # fit saved last.npz: say how to go on from it
        if not (out / "last.npz").is_file():
            raise
        said = str(e).partition(", continue with")[0] or "interrupted"
        raise KeyboardInterrupt(f"{said}; continue with: {_resume_command(args, out)}") from None
    print(f"done: {out / 'best.npz'} (best validation mean IoU), {out / 'last.npz'}, history.json, config.json, "
          "curves.png, predictions.png, diagnostics.png")
    return 0


# ---------------------------------------------------------------- eval, predict, summary, gradcheck


def cmd_eval(args):
    from . import datasets
    from .files import json_safe
    from .training.checkpoint import load_model
    from .training.train import evaluate
    if args.confusion is not None:
        _output(args.confusion, "--confusion", "the confusion matrix figure (a PNG file)", folder=False)
    model = load_model(args.checkpoint)
    k = model.config["num_classes"]
    classes_file = Path(args.data) / "classes.txt"
    if classes_file.is_file():
        listed = len(datasets.voc._read_classes(classes_file))
        if listed != k:
            raise UsageError(f"--checkpoint {args.checkpoint} was trained for {_count(k, 'class')}, but {classes_file} "
                             f"lists {listed}: evaluate it on the dataset it was trained on, or pick a checkpoint of "
                             f"this one")
    dataset = datasets.load_split(args.data, args.split, num_classes=k, skip_bad=args.skip_bad,
                                  num_classes_from=f"the checkpoint {args.checkpoint}")
    if dataset.in_channels != model.config["in_channels"]:
        raise UsageError(f"the model takes {model.config['in_channels']}-channel images, the data has "
                         f"{_count(dataset.in_channels, 'channel')}")
    result = evaluate(model, dataset, args.batch_size)
    if args.confusion is not None:
        from .viz import plot_confusion
        plot_confusion(result["confusion"], dataset.classes, args.confusion)
    keys = ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou", "boundary_accuracy", "per_class_iou")
    if args.json:
        print(json.dumps(json_safe({k: result[k] for k in keys})))
        return 0
    print(f"{args.checkpoint} on {args.data} [{args.split}], {_count(len(dataset), 'image')}")
    for k in keys[:5]:
        print(f"  {k:18s} {result[k]:.4f}")
    print("  per-class IoU:")
    for name, iou in zip(dataset.classes, result["per_class_iou"]):
        print(f"    {name:16s} {iou:.4f}")
    return 0


def _for_the_model(image, path, channels, notes):
    """``image`` (H, W, 1 or 3, as :func:`~tinyfcn.datasets.read_image` gives) for a model of ``channels`` input
    channels: grey copied to RGB's 3 channels, or RGB made grey by Pillow's "L" rule, each with a note added to
    ``notes``; any other pair is a UsageError."""
    have = image.shape[2]
    if have == channels:
        return image
    if (have, channels) == (1, 3):
        notes.append(f"{path} is grayscale; the model takes RGB images: its grey is copied to the 3 channels")
        return np.repeat(image, 3, axis=2)
    if (have, channels) == (3, 1):
        from PIL import Image
        notes.append(f"{path} is RGB; the model takes grayscale images: converted with Pillow's \"L\" rule "
                     f"(L = 0.299 R + 0.587 G + 0.114 B)")
        return np.asarray(Image.fromarray(image).convert("L"))[:, :, None]
    raise UsageError(f"{path} has {_count(have, 'channel')}; the model takes {channels}-channel images "
                     f"(tinyfcn converts only between grayscale and RGB)")


def cmd_predict(args):
    from . import datasets, viz
    from .training.checkpoint import load_checkpoint, load_model
    out = _output(args.out, "--out", "a folder for the masks (one <name>.png per image)", folder=True)
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
    images, inputs, notes = [], [], []                           # every image is read before anything is written
    for path in paths:
        images.append(datasets.read_image(path))
        inputs.append(_for_the_model(images[-1], path, model.config["in_channels"], notes))
    for note in notes:
        print(f"tinyfcn: note: {note}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    for path, image, x in zip(paths, images, inputs):
        label = model.predict(datasets.normalize(x, model.normalization)[None])[0].astype(np.uint8)
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
    out = _output(args.out, "--out", "the run folder (classifier.npz, history.json, heatmap.png)", folder=True)
    if (out / "classifier.npz").exists():
        raise UsageError(f"{out} already holds a classifier; pass another --out")
    train_set = datasets.load_split(args.data, "train", skip_bad=args.skip_bad)
    val_set = datasets.load_split(args.data, "val", num_classes=train_set.num_classes, skip_bad=args.skip_bad,
                                  num_classes_from="the train split")
    train_crops = make_crops(train_set, args.crop_size, seed=args.seed)
    val_crops = make_crops(val_set, args.crop_size, seed=args.seed + 1)
    model = Classifier(train_set.num_classes, in_channels=train_set.in_channels, crop_size=args.crop_size,
                       downsample=args.downsample or "pool", norm=args.norm or "none", seed=args.seed)
    print(f"training a classifier of {args.crop_size}x{args.crop_size} crops on {args.data} "
          f"({len(train_crops[1])} train / {_count(len(val_crops[1]), 'val crop')}, "
          f"{_count(train_set.num_classes, 'class')}); run folder {out}")
    _say_threads(args)
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
    viz.plot_heatmap(image, scores, net.coords["score"], train_set.classes, out / "heatmap.png",
                     title=f"classifier of {args.crop_size}x{args.crop_size} crops of {Path(args.data).name}, "
                           f"seed {args.seed} — run {out.name}")
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
    _output(args.out, "OUT", "the file to write (for torch also OUT_model.py beside it)", folder=False)
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


def _shared_options():
    """The options several commands share, one parent parser each, so that a flag reads the same everywhere.

    Each command's ``--help`` lists its own options first, then these under "model design" and "shared options"
    (``--checkpoint`` stays among the command's own).
    """
    from .networks.models import DOWNSAMPLE, FUSION, NORM, UPSAMPLE

    def parent(title, *options):
        """A parent parser of ``options`` (``(flags, settings)`` pairs), under the help heading ``title``."""
        p = argparse.ArgumentParser(add_help=False)
        group = p.add_argument_group(title) if title else p
        for flags, settings in options:
            group.add_argument(*flags, **settings)
        return p

    design, shared = "model design (left out: the model's default)", "shared options"
    return dict(
        downsample=parent(design, (["--downsample"], dict(
            choices=DOWNSAMPLE, help="pool (2x2 max-pools, default) or conv (3x3 stride 2)")),
            (["--norm"], dict(choices=NORM, help="none, or batch: a BatchNorm after every convolution of the backbone, "
                                                 "fc6 and fc7 (train: the recipe's; pretrain, summary: none)"))),
        decoder=parent(design, (["--upsample"], dict(
            choices=UPSAMPLE, help="transposed (bilinear transposed convolutions, default) or unpool (fcn32s only)")),
            (["--fusion"], dict(choices=FUSION, help="skip fusion: sum (default) or concat")),
            (["--fc6-kernel"], dict(type=_positive, metavar="K", help="fc6 is K x K, padded by K // 2 (default 3)")),
            (["--learn-upsampling"], dict(action=argparse.BooleanOptionalAction, default=None,
                                          help="train the bilinear-initialised upsampling layers, or keep them "
                                               "frozen as the FCN authors did (train: the recipe's; summary: "
                                               "frozen)"))),
        checkpoint=parent(None, (["--checkpoint"], dict(
            type=Path, required=True, help="a .npz checkpoint, e.g. RUN/best.npz of a training run"))),
        skip_bad=parent(shared, (["--skip-bad"], dict(
            action="store_true", help="skip unreadable or invalid files with a warning"))),
        quiet=parent(shared, (["--quiet"], dict(
            action="store_true", help="print less: train shows no progress bars (they show only on a terminal; "
                                      "its line per epoch stays), pretrain no line per epoch"))),
        threads=parent(shared, (["--threads"], dict(
            type=_positive, default=None, metavar="N",
            help="compute with N threads (default: one per core that other programs leave idle, re-checked 4 "
                 "times a second; see tinyfcn.threads)"))))


def _set_threads(n):
    """Set tinyfcn's thread count from ``--threads`` (None: the default, or ``TINYFCN_THREADS``)."""
    from . import threads
    try:
        threads.set_threads(n)
    except ValueError as e:                      # a bad TINYFCN_THREADS
        raise UsageError(str(e)) from None


def _say_threads(args):
    """Say how many threads the work starts with: called once the command's inputs are checked, just before it."""
    from . import threads
    how = ("--threads" if args.threads else "TINYFCN_THREADS" if os.environ.get("TINYFCN_THREADS", "").strip() else
           "default: one per core that other programs leave idle, re-checked 4 times a second; "
           "TINYFCN_THREADS or --threads N to fix it")
    print(f"tinyfcn: computing with {_count(threads.get_threads(), 'thread')} ({how})")


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose mistakes are one line and status 2, as every other error of the command line:
    ``tinyfcn train: error: argument --norm: invalid choice: 'group' (choose from 'none', 'batch')``.
    ``--help`` still prints the whole usage."""

    def error(self, message):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def build_parser():
    from .datasets import DATASETS
    from .networks.models import MODELS
    from .training.optim import OPTIMIZERS, SCHEDULES
    from .training.recipes import NORMALIZATIONS, RECIPES
    shared = _shared_options()
    parser = OneLineParser(prog="tinyfcn", description="Fully Convolutional Networks from scratch in NumPy.")
    version = sys.modules[__package__].__version__      # the package, imported before any module of it
    parser.add_argument("--version", action="version", version=f"tinyfcn {version}", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser,
                                help="what to do; tinyfcn COMMAND --help tells more")

    p = sub.add_parser("data", help="generate a toy dataset in the Pascal VOC layout")
    p.add_argument("name", choices=sorted(DATASETS), help="which dataset")
    p.add_argument("--out", type=Path, required=True, help="folder to write (created)")
    p.add_argument("--n-train", type=_positive, default=2000, help="training images (default 2000)")
    p.add_argument("--n-val", type=_positive, default=400, help="validation images (default 400)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files")
    p.add_argument("--size", type=_positive, nargs="+", metavar="S", help="image size: S, or H W")
    p.set_defaults(run=cmd_data)

    p = sub.add_parser("train", help="train an FCN; with no arguments, FCN-8s on the built-in shapes dataset",
                       parents=[shared[k] for k in ("downsample", "decoder", "skip_bad", "quiet", "threads")])
    p.add_argument("--data", type=Path, help="dataset folder in the VOC layout (default: make data/shapes)")
    p.add_argument("--model", choices=sorted(MODELS), default="fcn8s", help="variant (default fcn8s)")
    p.add_argument("--init", type=Path, help="start from this checkpoint (a coarser variant for staged training, "
                                             "or a classifier from tinyfcn pretrain)")
    p.add_argument("--epochs", type=_positive, default=12, help="epochs (default 12, what docs/recipe.md measured)")
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
    p.add_argument("--sanity", action="store_true", help="only overfit 4 images and report (check before training)")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("pretrain", help="train a classifier of fixed-size crops (for train --init CLASSIFIER.npz)",
                       parents=[shared[k] for k in ("downsample", "skip_bad", "quiet", "threads")])
    p.add_argument("--data", type=Path, required=True, help="segmentation dataset folder in the VOC layout")
    p.add_argument("--out", type=Path, required=True, help="run folder: classifier.npz, history.json, heatmap.png")
    p.add_argument("--crop-size", type=_positive, default=48, help="side of the square crops (default 48)")
    p.add_argument("--epochs", type=_positive, default=8, help="epochs (default 8)")
    p.add_argument("--batch-size", type=_positive, default=32, help="crops per step (default 32)")
    p.add_argument("--lr", type=float, default=0.01, help="base learning rate, poly schedule (default 0.01)")
    p.add_argument("--seed", type=int, default=0, help="seed for the crops, initialisation and shuffling")
    p.set_defaults(run=cmd_pretrain)

    p = sub.add_parser("eval", help="pixel accuracy, mean accuracy, mean IoU, frequency-weighted IoU, boundary "
                                    "accuracy and per-class IoU of a checkpoint on a dataset split",
                       parents=[shared[k] for k in ("checkpoint", "skip_bad", "threads")])
    p.add_argument("--data", type=Path, required=True, help="dataset folder in the VOC layout")
    p.add_argument("--split", default="val", help="split name (default val)")
    p.add_argument("--batch-size", type=_positive, default=8, help="images per forward pass (default 8)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--confusion", type=Path, metavar="PNG",
                   help="also save the confusion matrix as a figure (missing folders are created)")
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("predict", help="write label masks (palette PNGs) for images",
                       parents=[shared[k] for k in ("checkpoint", "threads")])
    p.add_argument("images", nargs="+", help="image files (grayscale and RGB are converted to what the model takes)")
    p.add_argument("--out", type=Path, required=True, help="folder for the masks")
    p.add_argument("--overlay", action="store_true",
                   help="also write <name>_overlay.png: the image with the predicted classes and a legend")
    p.set_defaults(run=cmd_predict)

    p = sub.add_parser("summary", help="print a model's layers: output shapes, strides, receptive fields, parameters",
                       parents=[shared[k] for k in ("downsample", "decoder")])
    p.add_argument("--model", choices=sorted(MODELS), default="fcn8s", help="variant (default fcn8s)")
    p.add_argument("--size", type=_positive, nargs=2, default=[64, 64], metavar=("H", "W"),
                   help="input height and width (default 64 64)")
    p.add_argument("--num-classes", type=_positive, default=4, help="K, the classes it scores (default 4)")
    p.add_argument("--in-channels", type=_positive, default=3, help="input channels: 3 RGB, 1 grayscale (default 3)")
    p.set_defaults(run=cmd_summary)

    p = sub.add_parser("gradcheck", help="check every backward pass against finite differences and print the table")
    p.set_defaults(run=cmd_gradcheck)

    p = sub.add_parser("export", help="write a checkpoint's model for PyTorch (OUT.pt and OUT_model.py) or ONNX",
                       parents=[shared["checkpoint"]])
    p.add_argument("--to", required=True, metavar="FORMAT", help="torch or onnx")
    p.add_argument("out", type=Path, metavar="OUT", help="file to write (missing folders are created)")
    p.set_defaults(run=cmd_export)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as plain ``tinyfcn: warning: ...`` lines (no source file, line number or code)."""
    print(f"tinyfcn: warning: {message}", file=sys.stderr if file is None else file)


def _run(args):
    """Run the parsed command; the user's errors become one line and an exit status, anything else propagates."""
    from .datasets import DatasetError
    from .training.checkpoint import CheckpointError
    from .training.train import TrainingError
    try:
        if hasattr(args, "threads"):
            _set_threads(args.threads)
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
    except (UsageError, DatasetError, CheckpointError) as e:
        print(f"tinyfcn {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR


def main(argv=None):
    """Run the command line; returns the exit status."""
    try:
        try:
            return _run(build_parser().parse_args(argv))
        finally:
            sys.stdout.flush()            # a reader that closed the pipe shows here, not at the interpreter's exit
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # the interpreter's last flush goes nowhere
        return EXIT_CLOSED_PIPE


if __name__ == "__main__":
    sys.exit(main())
