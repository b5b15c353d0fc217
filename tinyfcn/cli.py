"""The ``tinyfcn`` command line: make data, train, evaluate, predict, inspect, check gradients.

Every command has ``--help``. Errors the user can fix (a bad path, a broken dataset, a
checkpoint of another model) print one line and exit with status 2 (1 if training
diverges, 130 after Ctrl-C); they never show a traceback.
"""
import argparse
import json
import sys
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


def _initial_model(args, num_classes, in_channels):
    """A new model, or one grown from a coarser checkpoint (--init) for staged training."""
    from .checkpoint import load_model
    from .models import build, grow
    if args.init is None:
        config = dict(arch=args.model, num_classes=num_classes, in_channels=in_channels)
        return build(config, seed=args.seed)
    model = load_model(args.init).train()
    if model.config["num_classes"] != num_classes or model.config["in_channels"] != in_channels:
        raise UsageError(f"--init {args.init} was trained for {model.config['num_classes']} classes and "
                         f"{model.config['in_channels']} channels, but the data has {num_classes} and {in_channels}")
    if model.config["arch"] == args.model:
        return model
    try:
        return grow(model, args.model)
    except ValueError as e:
        raise UsageError(f"--init {args.init}: {str(e).removeprefix('grow: ')}") from None


def cmd_train(args):
    from . import datasets, viz
    from .train import fit, sanity_check
    if args.data is None:
        args.data = Path("data") / "shapes"
        if not (args.data / "ImageSets").exists():
            print(f"no --data given: making the shapes dataset in {args.data}")
            datasets.make_dataset("shapes", args.data, 2000, 400, 0)
    train_set = datasets.load_split(args.data, "train", skip_bad=args.skip_bad)
    val_set = datasets.load_split(args.data, "val", num_classes=train_set.num_classes, skip_bad=args.skip_bad)
    model = _initial_model(args, train_set.num_classes, train_set.in_channels)
    if args.sanity:
        result = sanity_check(model, train_set, images=4)
        ok = abs(result["initial_loss"] - result["log_k"]) < 1e-3 and result["pixel_accuracy"] > 0.95
        print(f"initial loss {result['initial_loss']:.4f} (log K = {result['log_k']:.4f}); after overfitting 4 images: "
              f"loss {result['final_loss']:.4f}, pixel accuracy {result['pixel_accuracy']:.3f} -> "
              f"{'ok' if ok else 'FAILED'}")
        return 0 if ok else EXIT_DIVERGED
    out = Path(args.out) if args.out else _free_run_folder(args.model)
    if args.resume and not (out / "last.npz").exists():
        raise UsageError(f"--resume: there is no {out / 'last.npz'} to continue from")
    if not args.resume and (out / "last.npz").exists():
        raise UsageError(f"{out} already holds a run; pass --resume to continue it or --out to start another")
    print(f"training {args.model} on {args.data} ({len(train_set)} train / {len(val_set)} val images, "
          f"{train_set.num_classes} classes); run folder {out}")
    shown = [val_set[i] for i in range(min(4, len(val_set)))]

    def plots(history):
        viz.plot_curves(history, out / "curves.png")
        model.eval()
        preds = [model.predict(datasets.normalize(image)[None])[0] for image, _ in shown]
        model.train()
        viz.plot_predictions([i for i, _ in shown], [t for _, t in shown], preds, train_set.classes,
                             out / "predictions.png")

    fit(model, train_set, val_set, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule, augment=args.augment,
        crop=_size(args.crop, "--crop"), seed=args.seed, out=out, resume=args.resume, progress=not args.quiet,
        on_epoch_end=plots)
    print(f"done: {out / 'best.npz'} (best validation mean IoU), {out / 'last.npz'}, history.json, curves.png, "
          "predictions.png")
    return 0


# ---------------------------------------------------------------- eval, predict, summary, gradcheck


def cmd_eval(args):
    from . import datasets
    from .checkpoint import load_model
    from .files import json_safe
    from .train import evaluate
    model = load_model(args.checkpoint)
    dataset = datasets.load_split(args.data, args.split, num_classes=model.config["num_classes"], skip_bad=args.skip_bad)
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
    from .checkpoint import load_model
    model = load_model(args.checkpoint)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in map(Path, args.images):
        image = datasets.read_image(path)
        if image.shape[2] != model.config["in_channels"]:
            raise UsageError(f"{path} has {image.shape[2]} channels; the model takes {model.config['in_channels']}")
        label = model.predict(datasets.normalize(image)[None])[0].astype(np.uint8)
        datasets.save_mask(out / f"{path.stem}.png", label)
        written = [out / f"{path.stem}.png"]
        if args.overlay:
            datasets.save_image(out / f"{path.stem}_overlay.png", viz.overlay(image, label))
            written.append(out / f"{path.stem}_overlay.png")
        print(f"{path} -> {', '.join(map(str, written))}")
    return 0


def cmd_summary(args):
    from .models import build
    build(dict(arch=args.model, num_classes=args.num_classes, in_channels=args.in_channels)).summary(tuple(args.size))
    return 0


def cmd_gradcheck(args):
    from .checks import TOLERANCE, format_table, table
    rows = table()
    print(format_table(rows))
    print(f"\nfloat64, centred differences with h = 1e-5; tolerance {TOLERANCE:.0e}")
    return 0 if all(worst < TOLERANCE for _, _, worst in rows) else EXIT_DIVERGED


# ---------------------------------------------------------------- the parser


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_threads_option(p):
    p.add_argument("--threads", type=_positive, default=None, metavar="N",
                   help="compute with N threads (default: one per core; see tinyfcn.threads)")


def _apply_threads(args):
    """Set tinyfcn's thread count from ``--threads`` (or the default) and say what it is."""
    from . import threads
    threads.set_threads(args.threads)
    if args.command == "train" and not args.quiet:
        n = threads.get_threads()
        how = "--threads" if args.threads else "default: one per core; TINYFCN_THREADS or --threads N to change"
        print(f"tinyfcn: computing with {n} thread{'s' * (n > 1)} ({how})")


def build_parser():
    from .datasets import DATASETS
    from .models import MODELS
    from .optim import SCHEDULES
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
    p.add_argument("--lr", type=float, default=0.03, help="base learning rate (default 0.03)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="L2 weight decay (default 5e-4)")
    p.add_argument("--schedule", choices=list(SCHEDULES), default="poly",
                   help="learning-rate schedule (default poly)")
    p.add_argument("--augment", action="store_true", help="random horizontal flips")
    p.add_argument("--crop", type=_positive, nargs="+", metavar="S", help="train on random S or H W crops")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, shuffling and dropout")
    p.add_argument("--out", type=Path, help="run folder (default runs/<model>, numbered if it exists)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable or invalid files with a warning")
    p.add_argument("--sanity", action="store_true", help="only overfit 4 images and report (check before training)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_threads_option(p)
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("eval", help="the four metrics (and per-class IoU) of a checkpoint on a dataset split")
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
    p.add_argument("--overlay", action="store_true", help="also write <name>_overlay.png")
    _add_threads_option(p)
    p.set_defaults(run=cmd_predict)

    p = sub.add_parser("summary", help="print a model's layers: output shapes, strides, receptive fields, parameters")
    p.add_argument("--model", choices=sorted(MODELS), default="fcn8s")
    p.add_argument("--size", type=_positive, nargs=2, default=[64, 64], metavar=("H", "W"))
    p.add_argument("--num-classes", type=_positive, default=4)
    p.add_argument("--in-channels", type=_positive, default=3)
    p.set_defaults(run=cmd_summary)

    p = sub.add_parser("gradcheck", help="check every backward pass against finite differences and print the table")
    p.set_defaults(run=cmd_gradcheck)
    return parser


def main(argv=None):
    """Run the command line; returns the exit status."""
    from .checkpoint import CheckpointError
    from .datasets import DatasetError
    from .train import TrainingError
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "threads"):
            _apply_threads(args)
        return args.run(args)
    except KeyboardInterrupt as e:
        print(f"\ntinyfcn: {e or 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TrainingError as e:
        print(f"tinyfcn: training stopped: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except (UsageError, DatasetError, CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"tinyfcn {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
