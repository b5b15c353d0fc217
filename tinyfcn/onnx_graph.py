"""A graph description (:func:`tinyfcn.export.describe`) as an ONNX inference model, built with ``onnx.helper``.

Opset 17: every operator used here (Conv, ConvTranspose, MaxPool with ``ceil_mode``,
Shape with ``start``/``end``, Slice, Min) has its current meaning there, and runtimes
from onnxruntime 1.13 on run it. The model is float32 with the input ``input``
(batch, channels, height, width) and one output named after the last node; batch,
height and width are dynamic. Dropout is left out (inference). Each Crop computes its
window from the shapes it meets at run time, ``end = min(H_x, H_like - lh + oh)``, so
any input size runs with the same offsets as in tinyfcn. ONNX's MaxPool ``ceil_mode``
follows the same rule as PyTorch and tinyfcn (a last window starting in the right
padding is dropped).
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class _Builder:
    """Collects the nodes and initializers (weights and constants) of one graph."""

    def __init__(self, params):
        self.params, self.nodes, self.initializers = params, [], []

    def node(self, op, inputs, output, **attributes):
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def constant(self, name, value, dtype):
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def weights(self, node, names):
        """The initializer names of a node's parameters ``<node>.<name>`` that exist, in order."""
        keys = [f"{node}.{n}" for n in names if f"{node}.{n}" in self.params]
        return [self.constant(k, self.params[k], np.float32) for k in keys]


def _conv(b, name, inputs, a, op="Conv"):
    return b.node(op, [*inputs, *b.weights(name, ("weight", "bias"))], name, kernel_shape=a["kernel_size"],
                  strides=a["stride"], pads=a["padding"] * 2)


def _max_pool(b, name, inputs, a):
    return b.node("MaxPool", inputs, name, kernel_shape=a["kernel_size"], strides=a["stride"], pads=a["padding"] * 2,
                  ceil_mode=int(a["ceil_mode"]))


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
    "Dropout": lambda b, name, inputs, a: b.node("Identity", inputs, name),
    "Scale": lambda b, name, inputs, a: b.node("Mul", [*inputs, b.constant(f"{name}/factor", a["factor"], np.float32)],
                                               name),
    "Crop": _crop,
    "Add": lambda b, name, inputs, a: b.node("Add", inputs, name),
    "Concat": lambda b, name, inputs, a: b.node("Concat", inputs, name, axis=1),
}
"""Layer type name -> ``f(builder, name, inputs, args)``, which adds the node(s) computing the map ``name``."""


def build(graph, params, name="tinyfcn"):
    """The ONNX model of a graph description and its parameters (``"<node>.<name>"`` -> array).

    Raises
    ------
    ValueError
        Naming the node and its layer type when :data:`NODES` has no translation for it.
    """
    b = _Builder(params)
    for node in graph["nodes"]:
        if node["type"] not in NODES:
            raise ValueError(f"node {node['name']!r}: layer type {node['type']} has no ONNX translation "
                             f"(supported: {', '.join(NODES)})")
        NODES[node["type"]](b, node["name"], node["sources"], node["args"])
    output = graph["nodes"][-1]["name"]
    onnx_graph = helper.make_graph(
        b.nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "channels", "height", "width"])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", "classes", "out_height", "out_width"])],
        b.initializers)
    opsets = [helper.make_opsetid("", OPSET)]
    model = helper.make_model(onnx_graph, opset_imports=opsets, producer_name="tinyfcn",
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model, full_check=True)
    return model
