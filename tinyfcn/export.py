"""Taking a model elsewhere: a tinyfcn graph as a PyTorch module or an ONNX model, with its weights.

Both exports read one plain description of the graph (:func:`describe`): per node its
name, layer type, sources and the layer's settings as lists, numbers and strings. The
PyTorch side rebuilds it with :mod:`tinyfcn.torch_graph` (a file that imports only torch
and is copied next to a saved export, so PyTorch users need no tinyfcn), the ONNX side
with :mod:`tinyfcn.onnx_graph`. A new layer type needs an entry in :data:`DESCRIBE`,
``torch_graph.LAYERS`` and ``onnx_graph.NODES``.

A max-unpooling node (``nn.MaxUnpool2d(pool)``) is described by the name of the pool node
whose switches it reads, and that pool's settings say ``return_indices=True``: both backends
keep the pool's argmax indices and input size for the unpooling node.

torch (the ``torch`` extra) and onnx (the ``onnx`` extra) are imported only when used.
"""
import importlib
from pathlib import Path

import numpy as np

from . import nn
from .files import atomic_write
from .sizes import pair

EXTRAS = {"torch": "torch", "onnx": "onnx"}
"""Module needed by an export -> the setup.cfg extra that installs it."""


class MissingBackend(ImportError):
    """torch or onnx, needed by the export asked for, is not installed."""


def _conv(layer):
    C_out, C_in, kh, kw = layer.params["weight"].shape
    return dict(in_channels=C_in, out_channels=C_out, kernel_size=[kh, kw], stride=list(layer.stride),
                padding=list(layer.padding), bias="bias" in layer.params)


def _conv_transpose(layer):
    C_in, C_out, kh, kw = layer.params["weight"].shape
    return dict(in_channels=C_in, out_channels=C_out, kernel_size=[kh, kw], stride=list(layer.stride),
                padding=list(layer.padding), bias="bias" in layer.params, trainable=bool(layer.trainable))


def _max_pool(layer):
    kernel = pair(layer.kernel_size, "kernel_size")
    return dict(kernel_size=list(kernel), stride=list(kernel if layer.stride is None else pair(layer.stride, "stride")),
                padding=list(pair(layer.padding, "padding")), ceil_mode=bool(layer.ceil_mode),
                return_indices=False)                          # True when an unpooling reads its switches


def _linear(layer):
    out_features, in_features = layer.params["weight"].shape
    return dict(in_features=in_features, out_features=out_features, bias="bias" in layer.params)


def _max_unpool(layer, graph):
    pools = [name for name, other in graph.layers.items() if other is layer.pool] if layer.pool is not None else []
    if not pools:
        raise ValueError("export: a MaxUnpool2d exports only as MaxUnpool2d(pool) with that pool a node of the "
                         "same graph (its switches are read from that node)")
    return dict(pool=pools[0])


DESCRIBE = {
    nn.Conv2d: _conv,
    nn.ConvTranspose2d: _conv_transpose,
    nn.MaxPool2d: _max_pool,
    nn.ReLU: lambda layer: {},
    nn.Dropout: lambda layer: dict(p=float(layer.p)),
    nn.Scale: lambda layer: dict(factor=float(layer.factor)),
    nn.Crop: lambda layer: dict(offset=list(layer.offset), like_offset=list(layer.like_offset)),
    nn.Add: lambda layer: {},
    nn.Concat: lambda layer: {},
    nn.MaxUnpool2d: _max_unpool,
    nn.Flatten: lambda layer: {},
    nn.Linear: _linear,
}
"""Layer class -> ``f(layer)``, its settings as a dict of plain values (``f(layer, graph)`` for
:data:`NEEDS_GRAPH` types, which name other nodes)."""

NEEDS_GRAPH = {nn.MaxUnpool2d}
"""Layer classes whose description reads the graph: an unpooling names the pool node it reads switches from."""


def describe(graph):
    """The graph as plain data: ``{"nodes": [{"name", "type", "sources", "args"}, ...]}``, in execution order.

    Raises
    ------
    ValueError
        Naming the node and its layer type when :data:`DESCRIBE` does not know the type.
    """
    nodes = []
    for name, layer in graph.layers.items():
        if type(layer) not in DESCRIBE:
            raise ValueError(f"export: node {name!r} is a {type(layer).__name__}, a layer type the export does "
                             f"not support (supported: {', '.join(t.__name__ for t in DESCRIBE)})")
        describe_layer = DESCRIBE[type(layer)]
        args = describe_layer(layer, graph) if type(layer) in NEEDS_GRAPH else describe_layer(layer)
        nodes.append(dict(name=name, type=type(layer).__name__, sources=list(graph.sources[name]), args=args))
    by_name = {node["name"]: node for node in nodes}
    for node in nodes:                                     # the pools an unpooling reads keep their switches
        if node["type"] == "MaxUnpool2d":
            by_name[node["args"]["pool"]]["args"]["return_indices"] = True
    return {"nodes": nodes}


def _backend(module):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingBackend(f"this export needs {module}; install it with "
                             f"python -m pip install -e \".[{EXTRAS[module]}]\"") from None


# ---------------------------------------------------------------- PyTorch


def to_torch(model):
    """An equivalent ``torch.nn.Module`` (a :class:`tinyfcn.torch_graph.GraphModule`) with the model's weights.

    Parameter names are tinyfcn's (``"score_fr.weight"``, ...), the dtype and the training
    mode are the model's, and frozen layers' parameters have ``requires_grad=False``.
    """
    torch = _backend("torch")
    from . import torch_graph
    dtype = getattr(torch, np.dtype(getattr(model, "dtype", np.float32)).name)
    net = torch_graph.GraphModule(describe(model)).to(dtype)
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.params.items()})
    return net.train(model.training)


def save_torch(model, path):
    """Write ``path`` (graph, state_dict, config; read with ``torch.load(weights_only=True)``) and ``<stem>_model.py``.

    ``<stem>_model.py`` is a copy of :mod:`tinyfcn.torch_graph`; its ``load(path)`` rebuilds
    the module without tinyfcn. Both files are written atomically. Returns the two paths.
    """
    torch = _backend("torch")
    from . import torch_graph
    path = Path(path)
    saved = dict(format=torch_graph.FORMAT, graph=describe(model), config=getattr(model, "config", None),
                 state_dict={k: torch.from_numpy(v.copy()) for k, v in model.params.items()})
    module = path.with_name(f"{path.stem}_model.py")
    atomic_write(path, lambda f: torch.save(saved, f))
    atomic_write(module, lambda f: f.write(Path(torch_graph.__file__).read_bytes()))
    return path, module


# ---------------------------------------------------------------- ONNX


def to_onnx(model):
    """The model's inference graph as an ``onnx.ModelProto`` (float32, opset :data:`tinyfcn.onnx_graph.OPSET`).

    Batch, height and width are dynamic; the crops compute their windows from run-time shapes.
    The model is checked with ``onnx.checker.check_model``.
    """
    _backend("onnx")
    from . import onnx_graph
    return onnx_graph.build(describe(model), model.params, name=getattr(model, "config", {}).get("arch", "tinyfcn"))


def save_onnx(model, path):
    """Write :func:`to_onnx`'s model to ``path`` atomically; returns ``(path,)``."""
    proto = to_onnx(model).SerializeToString()
    atomic_write(path, lambda f: f.write(proto))
    return (Path(path),)
