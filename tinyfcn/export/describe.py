"""A tinyfcn graph as plain data: per node its name, layer type, sources and settings.

Both exports (:mod:`tinyfcn.export.torch`, :mod:`tinyfcn.export.onnx`) read this one
description, made only of lists, numbers and strings. A new layer type needs an entry in
:data:`DESCRIBE` here, in ``torch.LAYERS`` and in ``onnx.NODES``.

A max-unpooling node (``nn.MaxUnpool2d(pool)``) is described by the name of the pool node
whose switches it reads, and that pool's settings say ``return_indices=True``: both backends
keep the pool's argmax indices and input size for the unpooling node.
"""
from ..ops import nn
from ..ops.sizes import pair


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


def _batch_norm(layer):
    return dict(num_features=layer.params["weight"].size, eps=float(layer.eps), momentum=float(layer.momentum))


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
    nn.BatchNorm2d: _batch_norm,
    nn.BatchNorm1d: _batch_norm,
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
