"""A layer followed by a ReLU, fused into one pass: the gradients, and a Graph that fuses without changing a bit."""
import numpy as np
import pytest

from tinyfcn import functional as F
from tinyfcn import nn
from tinyfcn.networks.graph import Graph, Sequential
from tinyfcn.networks.models import Classifier, FCN8s
from tinyfcn.ops.gradcheck import numerical_gradient, rel_error

KINK = 1e-3
"""Every pre-activation of a gradient check lies at least this far from 0 (h = 1e-5 never crosses the kink)."""


def _away_from_kinks(pre_activation):
    assert np.abs(pre_activation).min() > KINK, "choose another seed: a value sits on the ReLU's kink"


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape,seed", [((2, 3, 5, 4), 0), ((3, 2, 1, 1), 1), ((1, 4, 3, 5), 2)])
def test_batch_norm2d_with_relu_gradients(shape, seed, training):
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = rng.standard_normal(shape) * 1.5 + 0.5
    gamma, beta = rng.uniform(0.5, 2.0, C), rng.standard_normal(C) * 0.3
    running = rng.standard_normal(C), rng.uniform(0.5, 2.0, C)

    def f(x, gamma, beta, relu=True):            # fresh running statistics each call: training updates them
        return F.batch_norm2d_forward(x, gamma, beta, running[0].copy(), running[1].copy(), training, relu=relu)

    _away_from_kinks(f(x, gamma, beta, relu=False)[0])
    out, cache = f(x, gamma, beta)
    assert (out == 0).any() and (out > 0).any()                       # both sides of the ReLU are checked
    dout = rng.standard_normal(out.shape)
    dx, dgamma, dbeta = F.batch_norm2d_backward(dout, cache)
    assert rel_error(dx, numerical_gradient(lambda v: f(v, gamma, beta)[0], x, dout)) < 1e-7
    assert rel_error(dgamma, numerical_gradient(lambda v: f(x, v, beta)[0], gamma, dout)) < 1e-7
    assert rel_error(dbeta, numerical_gradient(lambda v: f(x, gamma, v)[0], beta, dout)) < 1e-7


@pytest.mark.parametrize("size,stride,padding,seed", [((7, 6), 1, 1, 0), ((13, 12), 1, 0, 3), ((9, 8), 2, 1, 2)])
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_with_relu_gradients(size, stride, padding, seed, bias):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((2, 3, *size)), rng.standard_normal((4, 3, 3, 3)) * 0.5
    b = rng.standard_normal(4) * 0.3 if bias else None

    def f(x, w, b, relu=True):
        return F.conv2d_forward(x, w, b, stride, padding, relu)

    _away_from_kinks(f(x, w, b, relu=False)[0])
    out, cache = f(x, w, b)
    assert (out == 0).any() and (out > 0).any()
    dout = rng.standard_normal(out.shape)
    dx, dw, db = F.conv2d_backward(dout, cache)
    assert rel_error(dx, numerical_gradient(lambda v: f(v, w, b)[0], x, dout)) < 1e-7
    assert rel_error(dw, numerical_gradient(lambda v: f(x, v, b)[0], w, dout)) < 1e-7
    if bias:
        assert rel_error(db, numerical_gradient(lambda v: f(x, w, v)[0], b, dout)) < 1e-7


def _unfused(graph):
    """Turn every fusion of ``graph`` off again: each layer and each ReLU runs on its own."""
    for producer, relu in graph.fuse_relus():
        graph.layers[producer].relu = graph.layers[relu].fused = False


def _step(model, x, dout):
    out = model.forward(x)
    dx = model.backward(dout)
    return [out, dx, *model.grads.values(), *model.buffers.values()]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("norm", ["none", "batch"])
def test_a_fused_graph_computes_the_same_bits(norm, training):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 20, 20)).astype(np.float32)
    fused, plain = (FCN8s(3, norm=norm, seed=1).train(training) for _ in range(2))
    _unfused(plain)
    for model in (fused, plain):                       # drop-out off: the same masks are not the point here
        for layer in model.layers.values():
            if isinstance(layer, nn.Dropout):
                layer.p = 0
    dout = rng.standard_normal((2, 3, 20, 20)).astype(np.float32)        # the scores: K = 3 at the input size
    for a, b in zip(_step(fused, x, dout), _step(plain, x, dout)):
        np.testing.assert_array_equal(a, b)


def test_which_relus_a_graph_fuses():
    fcn = FCN8s(3, norm="batch")
    pairs = fcn.fuse_relus()
    assert ("bn1_1", "relu1_1") in pairs and ("bn7", "relu7") in pairs and len(pairs) == 12
    assert all(fcn.layers[bn].relu and fcn.layers[relu].fused for bn, relu in pairs)
    assert not any(layer.relu for layer in fcn.layers.values() if isinstance(layer, nn.Conv2d))   # BatchNorm reads them
    plain = FCN8s(3).fuse_relus()
    assert ("conv1_1", "relu1_1") in plain and ("fc7", "relu7") in plain and len(plain) == 12
    assert Classifier(3, norm="batch").fuse_relus()[-2:] == [("bn6", "relu6"), ("bn7", "relu7")]   # BatchNorm1d too
    assert Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).fuse_relus() == [("1", "2")]
    shared = Graph([("bn", nn.BatchNorm2d(3), "input"), ("relu", nn.ReLU(), "bn"), ("skip", nn.Add(), "bn", "relu")])
    assert shared.fuse_relus() == []                   # the BatchNorm's map has another reader: it must stay as it is
    assert not shared.layers["bn"].relu and not shared.layers["relu"].fused


def test_a_fused_relu_keeps_its_output_as_before():
    model = Sequential(nn.BatchNorm2d(3), nn.ReLU())
    out = model.forward(np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32))
    assert model.layers["1"].cache is out and (out >= 0).all() and (out == 0).any()


@pytest.mark.parametrize("op", ["conv2d", "batch_norm2d"])
def test_a_fused_relu_refuses_nan_and_inf_as_the_relu_would(op):
    """A fused ReLU would turn NaN and -inf into 0: the op raises instead, as the next ReLU's check did."""
    x = np.ones((2, 3, 4, 4), np.float32)
    if op == "conv2d":
        huge = np.full((3, 3, 1, 1), 3e38, np.float32)                # 3 * 3e38 overflows float32: inf
        call = lambda relu: F.conv2d_forward(x, huge, None, 1, 0, relu)                        # noqa: E731
    else:
        x[0, 0, 0, 0] = -3e38                                          # its deviation from the mean overflows
        call = lambda relu: F.batch_norm2d_forward(x, np.full(3, 3e38, np.float32), np.zeros(3, np.float32),  # noqa: E731
                                                   np.zeros(3, np.float32), np.ones(3, np.float32), relu=relu)
    with np.errstate(over="ignore", invalid="ignore"):
        out, _ = call(False)
        assert not np.isfinite(out).all()                              # unfused: the ReLU's input check catches it
        with pytest.raises(F.NonFiniteError, match=f"{op}: the output contains NaN or inf"):
            call(True)
