"""The ONNX export passes onnx's checker and, in onnxruntime, gives tinyfcn's scores at any size.

Tolerance: float32, as in ``test_export_torch.py``: onnxruntime and tinyfcn add the same
terms in different orders, a few float32 epsilons per layer, about 1e-6 of the largest
score after ~20 layers; scores must agree to 1e-5 of the largest score. A crop computed
from the wrong shapes or a ceil-mode pooling that keeps or drops a different window shows
up as an error of order 1 (or a different output shape).
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from exportcases import (
    CASES,
    MIXED_SIZES,
    inputs,
    mixed_graph,
    random_model,
    sizes,
    worst,
)
from onnx import numpy_helper

from tinyfcn import nn
from tinyfcn.export import describe, save_onnx, to_onnx
from tinyfcn.export.onnx import OPSET
from tinyfcn.networks.graph import Graph


def session(proto):
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("case", CASES)
def test_scores_match_tinyfcn_at_every_size(case):
    model = random_model(case)
    run = session(to_onnx(model))
    for size in sizes(case):
        x = inputs(size)
        scores, = run.run(None, {"input": x})
        diff, tolerance = worst(scores, model.forward(x))
        assert diff <= tolerance, f"{case} at {size}: max |difference| {diff:.2e} > {tolerance:.2e}"


def test_a_non_fcn_graph_matches_including_ceil_mode_dropping_a_window():
    graph = mixed_graph()
    run = session(to_onnx(graph))
    for size in MIXED_SIZES:
        x = inputs(size)
        scores, = run.run(None, {"input": x})
        expected = graph.forward(x)
        assert scores.shape == expected.shape
        diff, tolerance = worst(scores, expected)
        assert diff <= tolerance, f"{size}: {diff:.2e}"


def test_the_file_is_a_checked_dynamic_model_of_the_stated_opset(tmp_path):
    model = random_model("fcn8s-vgg16")
    path, = save_onnx(model, tmp_path / "fcn8s.onnx")
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    assert [o.version for o in proto.opset_import] == [OPSET]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "channels", "height", "width"]
    assert {i.name for i in proto.graph.initializer} >= set(model.params)
    assert "Dropout" not in {n.op_type for n in proto.graph.node}
    scores, = session(proto).run(None, {"input": inputs((35, 29), batch=3)})
    assert scores.shape == (3, 4, 35, 29)
    assert list(tmp_path.iterdir()) == [path]                  # no temporary file left behind


def test_the_docstring_names_every_layer_and_operator_the_export_uses():
    """The module docstring's list ``- Layer: Op, Op; Layer: Op`` against NODES and the operators of every case."""
    import re

    from tinyfcn.export import onnx as module
    listed = module.__doc__.split("\n- ", 1)[1].split("\n\n", 1)[0]
    listed = re.sub(r"\([^)]*\)", "", " ".join(listed.split()).replace(" - ", " "))   # one line, no remarks
    layers = dict(part.split(":", 1) for part in re.split(r"[;.]", listed) if ":" in part)
    named = {op.strip() for ops in layers.values() for op in ops.split(",")}
    used = set()
    for case in CASES:
        used |= {n.op_type for n in to_onnx(random_model(case)).graph.node}
    used |= {n.op_type for n in to_onnx(mixed_graph()).graph.node}
    assert {layer.strip() for layer in layers} == set(module.NODES)
    assert named == used


class Mystery(nn.Layer):
    def forward(self, x):
        return x


def test_an_unsupported_layer_type_is_named():
    graph = Graph([("relu", nn.ReLU(), "input"), ("odd", Mystery(), "relu")])
    with pytest.raises(ValueError, match="node 'odd' is a Mystery, a layer type the export does not support"):
        describe(graph)


def test_an_unpooling_is_described_by_the_pool_node_it_reads():
    nodes = {n["name"]: n for n in describe(random_model("fcn32s-unpool"))["nodes"]}
    assert nodes["unpool3"]["args"] == {"pool": "pool3"}
    assert all(nodes[f"pool{k}"]["args"]["return_indices"] for k in range(1, 6))
    assert not {n["name"]: n for n in describe(random_model("fcn8s"))["nodes"]}["pool1"]["args"]["return_indices"]


def test_an_unpooling_without_its_pool_in_the_graph_is_refused():
    graph = Graph([("relu", nn.ReLU(), "input"), ("unpool", nn.MaxUnpool2d(nn.MaxPool2d(2)), "relu")])
    with pytest.raises(ValueError, match="MaxUnpool2d exports only as MaxUnpool2d\\(pool\\)"):
        describe(graph)


def test_a_classifier_has_a_batch_by_classes_output():
    proto = to_onnx(random_model("classifier"))
    dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "classes"]
    assert {"Flatten", "Gemm"} <= {n.op_type for n in proto.graph.node}


def test_batch_norm_is_an_inference_batch_normalization_with_the_running_statistics():
    model = random_model("fcn8s-conv-bn")
    proto = to_onnx(model)
    norms = [n for n in proto.graph.node if n.op_type == "BatchNormalization"]
    assert [n.name for n in norms] == [name for name, l in model.layers.items() if isinstance(l, nn.BatchNorm2d)]
    assert len(norms) == 3 * 5 + 2                             # two convolutions and pool<k>_conv per stage, fc6, fc7
    assert list(norms[0].input) == ["conv1_1", "bn1_1.weight", "bn1_1.bias", "bn1_1.running_mean", "bn1_1.running_var"]
    assert all(a.name != "training_mode" or a.i == 0 for n in norms for a in n.attribute)
    initializers = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for key, value in model.buffers.items():
        np.testing.assert_array_equal(initializers[key], value, err_msg=key)
    assert not np.allclose(initializers["bn2_1.running_mean"], 0)          # trained a little: not the initial 0
