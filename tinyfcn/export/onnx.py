"""A graph description (:func:`tinyfcn.export.describe.describe`) as an ONNX inference model, built with ``onnx.helper``.

Opset 17: every operator used here has its current meaning there; the tests run the
models in onnxruntime. Each layer type becomes these operators (:data:`NODES`):

- Conv2d: Conv; ConvTranspose2d: ConvTranspose; MaxPool2d: MaxPool (with ``ceil_mode``,
  and its ``Indices`` output when an unpooling reads them); ReLU: Relu; Dropout: Identity
  (inference); Scale: Mul; Add: Add; Concat: Concat; Flatten: Flatten; Linear: Gemm;
  BatchNorm2d: BatchNormalization; BatchNorm1d: BatchNormalization (inference: the running statistics);
  Crop: Shape (with ``start``/``end``), Add, Min, Slice; MaxUnpool2d: Shape, ReduceProd,
  ConstantOfShape, Reshape, ScatterElements.

The model is float32 with the input ``input`` (batch, channels, height, width) and one
output named after the last node; batch, height and width are dynamic. Each Crop computes
its window from the shapes it meets at run time, ``end = min(H_x, H_like - lh + oh)``, so
any input size runs with the same offsets as in tinyfcn. ONNX's MaxPool ``ceil_mode``
follows the same rule as PyTorch and tinyfcn (a last window starting in the right
padding is dropped).

A pool whose switches an unpooling reads (``return_indices``) gives MaxPool's second output
``<pool>/indices``; ONNX flattens those over the whole N x C x H x W tensor (tinyfcn and
PyTorch count per channel). The unpooling scatters into the flattened pool input
(ScatterElements, then Reshape to the Shape of the pool's input), which restores odd sizes
and ceil-mode rows. ONNX's MaxUnpool would be the natural operator, but onnxruntime refuses
an ``output_shape`` below ``(H_out - 1) * stride + kernel``, which is what a ceil-mode pool
of an odd size gives. Flatten is ``Flatten(axis=1)`` and Linear ``Gemm(transB=1)`` (tinyfcn's
weight is (out, in), as PyTorch's); a model ending in them has a (batch, classes) output.

BatchNorm2d and BatchNorm1d are BatchNormalization in inference mode (``training_mode=0``): it
normalises with the running mean and variance, which are initializers like the weights
(``<node>.running_mean``, ``<node>.running_var``); ``momentum`` plays no part in inference.
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class _Builder:
    """Collects the nodes and initializers (weights, running statistics and constants) of one graph."""

    def __init__(self, state, graph):
        self.state, self.nodes, self.initializers = state, [], []
        self.graph = {node["name"]: node for node in graph["nodes"]}    # an unpooling reads its pool's node

    def node(self, op, inputs, output, extra_outputs=(), **attributes):
        self.nodes.append(helper.make_node(op, inputs, [output, *extra_outputs], name=output, **attributes))
        return output

    def constant(self, name, value, dtype):
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def weights(self, node, names):
        """The initializer names of a node's parameters or buffers ``<node>.<name>`` that exist, in order."""
        keys = [f"{node}.{n}" for n in names if f"{node}.{n}" in self.state]
        return [self.constant(k, self.state[k], np.float32) for k in keys]


def _conv(b, name, inputs, a, op="Conv"):
    return b.node(op, [*inputs, *b.weights(name, ("weight", "bias"))], name, kernel_shape=a["kernel_size"],
                  strides=a["stride"], pads=a["padding"] * 2)


def _batch_norm(b, name, inputs, a):
    stats = b.weights(name, ("weight", "bias", "running_mean", "running_var"))     # scale, B, input_mean, input_var
    return b.node("BatchNormalization", [*inputs, *stats], name, epsilon=a["eps"])


def _max_pool(b, name, inputs, a):
    indices = [f"{name}/indices"] if a.get("return_indices", False) else []
    return b.node("MaxPool", inputs, name, extra_outputs=indices, kernel_shape=a["kernel_size"], strides=a["stride"],
                  pads=a["padding"] * 2, ceil_mode=int(a["ceil_mode"]))


def _max_unpool(b, name, inputs, a):
    """``out.flat[indices] += x`` over the pool's whole input, as tinyfcn defines unpooling.

    Not ONNX's MaxUnpool: onnxruntime refuses an ``output_shape`` smaller than
    ``(H_out - 1) * stride + kernel``, which is what a ceil-mode pool of an odd size needs.
    ONNX's flat indices (over N x C x H x W) address the flattened input directly. Windows that
    do not overlap (FCN's 2x2 pools) never share a position, so the plain scatter suffices and
    ``reduction="add"`` (which fewer runtimes implement) is used only for overlapping windows.
    """
    pool = b.graph[a["pool"]]
    shape = b.node("Shape", [pool["sources"][0]], f"{name}/shape")               # the pool's input: N, C, H, W
    size = b.node("ReduceProd", [shape], f"{name}/size", keepdims=1)
    zeros = b.node("ConstantOfShape", [size], f"{name}/zeros",
                   value=numpy_helper.from_array(np.zeros(1, np.float32)))
    flat = b.constant(f"{name}/flat", [-1], np.int64)
    values = b.node("Reshape", [inputs[0], flat], f"{name}/values")
    indices = b.node("Reshape", [f"{pool['name']}/indices", flat], f"{name}/indices")
    p = pool["args"]
    overlapping = any(k > s for k, s in zip(p["kernel_size"], p["stride"]))     # only then can two maxima coincide
    scattered = b.node("ScatterElements", [zeros, indices, values], f"{name}/scattered", axis=0,
                       **({"reduction": "add"} if overlapping else {}))
    return b.node("Reshape", [scattered, shape], name)


def _crop(b, name, inputs, a):
    x, like = inputs
    (oh, ow), (lh, lw) = a["offset"], a["like_offset"]
    size_x = b.node("Shape", [x], f"{name}/size_x", start=2, end=4)
    size_like = b.node("Shape", [like], f"{name}/size_like", start=2, end=4)
    shifted = b.node("Add", [size_like, b.constant(f"{name}/shift", [oh - lh, ow - lw], np.int64)], f"{name}/shifted")
    ends = b.node("Min", [size_x, shifted], f"{name}/ends")
    return b.node("Slice", [x, b.constant(f"{name}/starts", [oh, ow], np.int64), ends,
                            b.constant(f"{name}/axes", [2, 3], np.int64)], name)


NODES = {
    "Conv2d": _conv,
    "ConvTranspose2d": lambda b, name, inputs, a: _conv(b, name, inputs, a, op="ConvTranspose"),
    "MaxPool2d": _max_pool,
    "ReLU": lambda b, name, inputs, a: b.node("Relu", inputs, name),
    "BatchNorm2d": _batch_norm,
    "BatchNorm1d": _batch_norm,
    "Dropout": lambda b, name, inputs, a: b.node("Identity", inputs, name),
    "Scale": lambda b, name, inputs, a: b.node("Mul", [*inputs, b.constant(f"{name}/factor", a["factor"], np.float32)],
                                               name),
    "Crop": _crop,
    "Add": lambda b, name, inputs, a: b.node("Add", inputs, name),
    "Concat": lambda b, name, inputs, a: b.node("Concat", inputs, name, axis=1),
    "MaxUnpool2d": _max_unpool,
    "Flatten": lambda b, name, inputs, a: b.node("Flatten", inputs, name, axis=1),
    "Linear": lambda b, name, inputs, a: b.node("Gemm", [*inputs, *b.weights(name, ("weight", "bias"))], name,
                                                transB=1),
}
"""Layer type name -> ``f(builder, name, inputs, args)``, which adds the node(s) computing the map ``name``."""


def build(graph, state, name="tinyfcn"):
    """The ONNX model of a graph description and its state_dict (parameters and buffers, ``"<node>.<name>"`` -> array).

    Raises
    ------
    ValueError
        Naming the node and its layer type when :data:`NODES` has no translation for it.
    """
    b = _Builder(state, graph)
    for node in graph["nodes"]:
        if node["type"] not in NODES:
            raise ValueError(f"node {node['name']!r}: layer type {node['type']} has no ONNX translation "
                             f"(supported: {', '.join(NODES)})")
        NODES[node["type"]](b, node["name"], node["sources"], node["args"])
    output = graph["nodes"][-1]["name"]
    flat = any(node["type"] == "Flatten" for node in graph["nodes"])          # a classifier: (batch, classes)
    output_dims = ["batch", "classes"] if flat else ["batch", "classes", "out_height", "out_width"]
    onnx_graph = helper.make_graph(
        b.nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "channels", "height", "width"])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_dims)],
        b.initializers)
    opsets = [helper.make_opsetid("", OPSET)]
    model = helper.make_model(onnx_graph, opset_imports=opsets, producer_name="tinyfcn",
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model, full_check=True)
    return model
