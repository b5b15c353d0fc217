"""tinyfcn: Fully Convolutional Networks (FCN-32s/16s/8s) from scratch in NumPy, with numba kernels.

The folders are the layers of the design; data flows up through them, and no module
imports from a folder above its own::

    ops/        the layers a learner studies: sizes, reference (NumPy twins), _kernels
                (numba), functional, nn, init, gradcheck, check_table
    networks/   graph (the executor), coord_map, models (declarations), surgery
    datasets/   VOC folders, batching, the toy datasets
    training/   optim, train, metrics, checkpoint, instruments, pretrain
    export/     describe, torch, onnx
    cli, viz    the command line and the figures
    threads, files, labels   what every layer shares

The short paths are the API, as ``torch.nn.functional`` is PyTorch's:
``from tinyfcn import functional, nn, optim, models, datasets, metrics, checkpoint, export``.
Each is imported the first time it is asked for, so ``import tinyfcn`` (and the
command line's ``--help``) does not wait for numba.
"""
import importlib

__version__ = "0.2.0"

SHORT_PATHS = {
    "sizes": "ops.sizes", "reference": "ops.reference", "functional": "ops.functional", "nn": "ops.nn",
    "init": "ops.init", "gradcheck": "ops.gradcheck", "check_table": "ops.check_table",
    "graph": "networks.graph", "coord_map": "networks.coord_map", "models": "networks.models",
    "surgery": "networks.surgery",
    "optim": "training.optim", "train": "training.train", "metrics": "training.metrics",
    "checkpoint": "training.checkpoint", "pretrain": "training.pretrain",
}
"""``tinyfcn.<name>`` -> the module it names, relative to the package."""


def __getattr__(name):
    """``tinyfcn.ops.functional`` and the other short paths of :data:`SHORT_PATHS`, imported on first use."""
    if name in SHORT_PATHS:
        return importlib.import_module(f".{SHORT_PATHS[name]}", __name__)
    raise AttributeError(f"module 'tinyfcn' has no attribute {name!r}")
