"""Checkpoints: one ``.npz`` file of plain arrays, written atomically, read without pickle.

Layout of the file::

    model/<key>     the model's state_dict: every parameter, e.g. model/score_fr.weight, and
                    every buffer, e.g. model/bn1_1.running_mean (a BatchNorm's running statistics;
                    none in checkpoints written before BatchNorm, whose models have none)
    optim/<key>     the optimizer's state_dict (when an optimizer is saved): SGD's momentum
                    buffers as optim/<param>; Adam's and AdamW's moments and step counts as
                    optim/exp_avg/<param>, optim/exp_avg_sq/<param>, optim/step/<param>
    order           the current epoch's shuffled image order (when saved mid-run)
    meta            one JSON string: format tag, model config, optimizer name ("sgd", "adam"
                    or "adamw"; absent in checkpoints written before Adam, which are SGD's),
                    the input normalization (mean, std; absent before 0.2: the fixed 0.5, 0.25),
                    epoch, step, position in the epoch, the run's settings, RNG states, history

Everything is an array of numbers or a string, so ``np.load(..., allow_pickle=False)``
reads it; the file is written with :func:`tinyfcn.files.atomic_write`, so a crash or
Ctrl-C never leaves a half-written checkpoint behind.
"""
import json
import zipfile
from pathlib import Path

import numpy as np

from ..datasets.batching import FIXED
from ..files import atomic_write
from ..networks.surgery import build

FORMAT = "tinyfcn-checkpoint-1"


class CheckpointError(ValueError):
    """A file that is not a readable tinyfcn checkpoint, or one that does not fit the model."""


def save_checkpoint(path, model, optimizer=None, order=None, **meta):
    """Write ``model`` (and optionally the optimizer's state and the epoch's image order) to ``path``.

    Parameters
    ----------
    path : str or Path
    model : FCN32s, FCN16s or FCN8s
    optimizer : SGD, Adam or AdamW, optional
        Its :meth:`state_dict` is stored, and its name (a key of ``OPTIMIZERS``) in the meta.
    order : int ndarray, optional
        The current epoch's shuffled order, so a resumed run continues mid-epoch exactly.
    **meta
        JSON-serialisable values stored in the ``meta`` string (epoch, step, history, ...).
        The model's config and dropout RNG state are added automatically.
    """
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    meta = dict(format=FORMAT, config=model.config, model_rng=model.rng.bit_generator.state, **meta)
    if optimizer is not None:
        arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
        meta["optimizer"] = _name(optimizer)
    if order is not None:
        arrays["order"] = np.asarray(order, dtype=np.int64)
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path):
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns
    -------
    dict with ``meta`` (the JSON dict), ``model`` (name -> array), ``optim`` (the optimizer's
    state_dict, key -> array; empty when none was saved) and ``order`` (or None).

    Raises
    ------
    CheckpointError
        Missing, truncated or corrupt file, or an ``.npz`` that is not a tinyfcn checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.npz"), key=lambda p: (p.name not in ("best.npz", "last.npz"), p.name))
        raise CheckpointError(f"{path} is a folder; give one checkpoint file in it: {', '.join(map(str, found))}"
                              if found else f"{path} is a folder with no .npz checkpoint in it; give a checkpoint "
                              f"file, e.g. RUN/best.npz of a training run")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a tinyfcn checkpoint: it is not an .npz file (truncated or corrupt, "
                              f"or another kind of file); checkpoints are the best.npz and last.npz a run writes")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "meta" not in f.files:
                raise CheckpointError(f"{path} is an .npz file but not a tinyfcn checkpoint (no 'meta' entry)")
            meta = json.loads(str(f["meta"]))
            arrays = {k: f[k] for k in f.files if k != "meta"}
    except CheckpointError:
        raise
    except ValueError as e:
        if "pickle" in str(e):                  # numpy's advice to load it unsafely is not for our users
            raise CheckpointError(f"{path} is not a tinyfcn checkpoint: it holds pickled Python objects, which "
                                  f"tinyfcn never writes and never loads") from None
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {e}") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {e}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {meta.get('format')!r}, expected {FORMAT!r}")
    return {
        "meta": meta,
        "model": {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")},
        "optim": {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")},
        "order": arrays.get("order"),
    }


def restore_model(model, checkpoint):
    """Load a checkpoint's weights, buffers and dropout RNG state into ``model``; a mismatch raises CheckpointError."""
    saved = checkpoint["meta"]["config"]
    if saved["arch"] != model.config["arch"]:
        raise CheckpointError(f"the checkpoint holds an {saved['arch']} model, not an {model.config['arch']}")
    try:
        model.load_state_dict(checkpoint["model"])
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    model.rng.bit_generator.state = checkpoint["meta"]["model_rng"]


def _name(optimizer):
    """The optimizer's name in ``OPTIMIZERS`` and in a checkpoint's meta: its class name in lower case."""
    return type(optimizer).__name__.lower()


def restore_optimizer(optimizer, checkpoint):
    """Load a checkpoint's optimizer state into ``optimizer``; another optimizer's state raises CheckpointError.

    Checkpoints written before Adam existed name no optimizer: they hold SGD's momentum.
    """
    saved = checkpoint["meta"].get("optimizer", "sgd")
    if saved != _name(optimizer):
        raise CheckpointError(f"the checkpoint was trained with the {saved} optimizer, not {_name(optimizer)}: "
                              f"continue it with {saved}")
    try:
        optimizer.load_state_dict(checkpoint["optim"])
    except ValueError as e:
        raise CheckpointError(str(e)) from None


def load_model(path, dtype=np.float32):
    """Build the model a checkpoint describes and load its weights and buffers (in evaluation mode).

    A config written before a model option existed builds with that option's default
    (``norm="none"`` for checkpoints without BatchNorm). ``model.normalization`` is the input
    normalization (mean, std) it was trained with (checkpoints written before it was stored:
    the fixed (0.5, 0.25)), which evaluation and prediction apply.
    """
    checkpoint = load_checkpoint(path)
    try:
        model = build(checkpoint["meta"]["config"], dtype=dtype)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: the stored model configuration is not valid: {e}") from None
    restore_model(model, checkpoint)
    model.normalization = checkpoint["meta"].get("normalization", list(FIXED))
    return model.eval()
