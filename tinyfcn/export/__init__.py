"""Taking a model elsewhere: a tinyfcn graph as a PyTorch module or an ONNX model, with its weights.

Both exports read one plain description of the graph (:func:`~tinyfcn.export.describe.describe`).
The PyTorch side rebuilds it with :mod:`tinyfcn.export.torch` (a file that imports only torch
and is copied next to a saved export, so PyTorch users need no tinyfcn), the ONNX side with
:mod:`tinyfcn.export.onnx`. torch (the ``torch`` extra) and onnx (the ``onnx`` extra) are
imported only when used.
"""
import importlib
import json
from pathlib import Path

import numpy as np

from ..datasets.batching import FIXED
from ..files import atomic_write
from .describe import describe

EXTRAS = {"torch": "torch", "onnx": "onnx"}
"""Module needed by an export -> the setup.cfg extra that installs it."""


class MissingBackend(ImportError):
    """torch or onnx, needed by the export asked for, is not installed."""


def _backend(module):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingBackend(f"this export needs {module}; install it with "
                             f"python -m pip install -e \".[{EXTRAS[module]}]\"") from None


def input_normalization(model):
    """The input normalization the model was trained with, as plain lists: ``{"mean": [...], "std": [...]}``.

    The network takes ``(image / 255 - mean) / std`` per channel (one number, or one per channel, in
    units of the 0 ... 1 pixel values): the training split's own statistics with the default recipe,
    the fixed (0.5, 0.25) otherwise and for a model that does not say.
    """
    mean, std = getattr(model, "normalization", None) or FIXED
    return {"mean": np.ravel(np.asarray(mean, float)).tolist(), "std": np.ravel(np.asarray(std, float)).tolist()}


# ---------------------------------------------------------------- PyTorch


def _torch_state(torch, model, graph):
    """The model's state_dict as tensors, plus the ``num_batches_tracked`` (0-d int64) each torch BatchNorm keeps.

    tinyfcn does not count batches (the count matters to torch only with ``momentum=None``), so it is 0.
    """
    state = {k: torch.from_numpy(v) for k, v in model.state_dict().items()}
    for node in graph["nodes"]:
        if node["type"] in ("BatchNorm2d", "BatchNorm1d"):
            state[f"{node['name']}.num_batches_tracked"] = torch.tensor(0, dtype=torch.int64)
    return state


def to_torch(model):
    """An equivalent ``torch.nn.Module`` (a :class:`tinyfcn.export.torch.GraphModule`) with the model's weights.

    Parameter and buffer names are tinyfcn's (``"score_fr.weight"``, ``"bn1_1.running_mean"``, ...),
    the dtype and the training mode are the model's, and frozen layers' parameters have
    ``requires_grad=False``. ``net.normalization`` is :func:`input_normalization`'s.
    """
    torch = _backend("torch")
    from . import torch as torch_graph
    dtype = getattr(torch, np.dtype(getattr(model, "dtype", np.float32)).name)
    graph = describe(model)
    net = torch_graph.GraphModule(graph).to(dtype)
    net.load_state_dict(_torch_state(torch, model, graph))
    net.normalization = input_normalization(model)
    return net.train(model.training)


def save_torch(model, path):
    """Write ``path`` (graph, state_dict, config, normalization; read with ``torch.load(weights_only=True)``) and
    ``<stem>_model.py``.

    ``<stem>_model.py`` is a copy of :mod:`tinyfcn.export.torch`; its ``load(path)`` rebuilds
    the module without tinyfcn. Both files are written atomically. Returns the two paths.
    """
    torch = _backend("torch")
    from . import torch as torch_graph
    path, graph = Path(path), describe(model)
    saved = dict(format=torch_graph.FORMAT, graph=graph, config=getattr(model, "config", None),
                 normalization=input_normalization(model), state_dict=_torch_state(torch, model, graph))
    module = path.with_name(f"{path.stem}_model.py")
    atomic_write(path, lambda f: torch.save(saved, f))
    atomic_write(module, lambda f: f.write(Path(torch_graph.__file__).read_bytes()))
    return path, module


# ---------------------------------------------------------------- ONNX


def to_onnx(model):
    """The model's inference graph as an ``onnx.ModelProto`` (float32, opset :data:`tinyfcn.export.onnx.OPSET`).

    Batch, height and width are dynamic; the crops compute their windows from run-time shapes.
    The model is checked with ``onnx.checker.check_model``. Its metadata property ``normalization``
    is :func:`input_normalization`'s, as JSON.
    """
    onnx = _backend("onnx")
    from . import onnx as onnx_graph
    name = getattr(model, "config", {}).get("arch", "tinyfcn")
    proto = onnx_graph.build(describe(model), model.state_dict(), name=name)
    onnx.helper.set_model_props(proto, {"normalization": json.dumps(input_normalization(model))})
    return proto


def save_onnx(model, path):
    """Write :func:`to_onnx`'s model to ``path`` atomically; returns ``(path,)``."""
    proto = to_onnx(model).SerializeToString()
    atomic_write(path, lambda f: f.write(proto))
    return (Path(path),)
