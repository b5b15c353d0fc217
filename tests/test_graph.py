"""The network as data: one executor for every graph, and the model as a layer."""
import numpy as np
import pytest
from netcheck import TINY

from tinyfcn import functional as F
from tinyfcn import nn
from tinyfcn.networks.graph import Graph
from tinyfcn.networks.models import FCN8s, FCN16s, FCN32s
from tinyfcn.ops.gradcheck import numerical_gradient, rel_error


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def small_graph():
    """input fans out to a conv branch and a skip; the two are cropped to their overlap and added."""
    return Graph([
        ("conv", nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64, rng=np.random.default_rng(0)), "input"),
        ("relu", nn.ReLU(), "conv"),
        ("pool", nn.MaxPool2d(2, ceil_mode=True), "relu"),
        ("up", nn.ConvTranspose2d(3, 3, 4, stride=2, padding=1, init="bilinear", dtype=np.float64), "pool"),
        ("skip", nn.Conv2d(2, 3, 1, dtype=np.float64, rng=np.random.default_rng(1)), "input"),
        ("upc", nn.Crop(), "up", "skip"),
        ("skipc", nn.Crop(), "skip", "up"),
        ("fuse", nn.Add(), "upc", "skipc"),
    ])


def test_fan_out_gradients_add_and_every_parameter_is_checked():
    net = small_graph()
    x = rand(2, 2, 7, 5)
    dout = rand(2, 3, 7, 5, seed=1)
    y = net.forward(x)
    assert y.shape == (2, 3, 7, 5)
    dx = net.backward(dout)
    assert set(net.grads) == {"conv.weight", "conv.bias", "up.weight", "up.bias", "skip.weight", "skip.bias"}
    assert rel_error(dx, numerical_gradient(lambda v: small_graph().forward(v), x, dout)) < 1e-7
    for key, p in net.params.items():
        def f(v, key=key):
            other = small_graph()
            other.load_state_dict({**net.state_dict(), key: v})
            return other.forward(x)
        assert rel_error(net.grads[key], numerical_gradient(f, p.copy(), dout)) < 1e-7, key


def test_declaration_errors_name_the_node():
    with pytest.raises(ValueError, match="node 'b' reads \\['nope'\\]"):
        Graph([("a", nn.ReLU(), "input"), ("b", nn.ReLU(), "nope")])
    with pytest.raises(ValueError, match="node 'a'.*unique"):
        Graph([("a", nn.ReLU(), "input"), ("a", nn.ReLU(), "a")])
    with pytest.raises(ValueError, match="without '.'"):
        Graph([("a.b", nn.ReLU(), "input")])
    with pytest.raises(TypeError, match="node 'a': ufunc is not a tinyfcn.ops.nn.Layer"):
        Graph([("a", np.maximum, "input")])
    with pytest.raises(ValueError, match="a Crop reads two maps"):
        Graph([("a", nn.Crop(), "input")])


def test_a_model_is_a_layer_inside_a_bigger_graph():
    inner = FCN32s(2, **TINY, dtype=np.float64)
    outer = Graph([("fcn", inner, "input"), ("relu", nn.ReLU(), "fcn")])
    assert "fcn.score_fr.weight" in outer.params
    outer.params["fcn.score_fr.bias"] = np.array([0.0, 3.0])          # reaches the inner layer
    assert inner.layers["score_fr"].params["bias"][1] == 3.0
    x = rand(1, 3, 9, 9)
    y = outer.eval().forward(x)
    assert not inner.training
    assert (y[:, 1] > 0.5).all() and not y[:, 0].any()               # bilinear x32 of a constant 3 bias
    outer.backward(np.ones_like(y))
    assert "fcn.fc7.weight" in outer.grads


def test_params_are_one_real_dict_and_assignment_takes_effect():
    model = FCN32s(2, **TINY)
    assert isinstance(model.params, dict) and model.params is model.params
    model.params["score_fr.bias"] = np.array([0.0, 5.0], np.float32)   # silently ignored before
    assert model.layers["score_fr"].params["bias"] is model.params["score_fr.bias"]
    assert (model.predict(np.zeros((1, 3, 8, 8), np.float32)) == 1).all()
    with pytest.raises(ValueError, match=r"params\['score_fr.bias'\] must be a float32 array of shape \(2,\)"):
        model.params["score_fr.bias"] = np.zeros(3, np.float32)
    with pytest.raises(KeyError, match="no parameter 'score_fr.bais'"):
        model.params["score_fr.bais"] = np.zeros(2, np.float32)
    grads = model.grads
    model.backward(np.ones_like(model.forward(np.zeros((1, 3, 8, 8), np.float32))))
    assert model.grads is grads and "fc6.weight" in grads


@pytest.mark.parametrize("cls", [FCN32s, FCN16s, FCN8s])
def test_unknown_keywords_are_refused(cls):
    with pytest.raises(TypeError, match="dropuot"):
        cls(4, dropuot=0.3)


def test_predict_runs_in_evaluation_mode_and_restores_the_callers_mode():
    model = FCN32s(2, **TINY, dropout=0.5)
    rng = np.random.default_rng(0)
    for v in model.params.values():
        v[...] = rng.standard_normal(v.shape)
    x = rand(1, 3, 32, 32).astype(np.float32)
    assert model.training
    first = model.predict(x)
    assert model.training                                           # still training afterwards
    np.testing.assert_array_equal(first, model.predict(x))          # no dropout: deterministic
    np.testing.assert_array_equal(first, model.eval().forward(x).argmax(axis=1))
    assert not model.training
    model.predict(x)
    assert not model.training


def fcn8s_by_hand(model, x, dscores):
    """FCN-8s forward and backward chained by hand, layer by layer: what the executor does for any graph."""
    L = model.layers
    trunk = list(L)[:list(L).index("score_fr") + 1]                   # conv1_1 ... score_fr, in order
    h, taps = x, {}
    for name in trunk:
        h = L[name].forward(h)
        if name in ("pool3", "pool4"):
            taps[name] = h
    up2 = L["upscore2"].forward(h)
    s4 = L["score_pool4"].forward(taps["pool4"])
    fuse4 = L["fuse_pool4"].forward(L["upscore2c"].forward(up2, s4), L["score_pool4c"].forward(s4, up2))
    up4 = L["upscore_pool4"].forward(fuse4)
    s3 = L["score_pool3"].forward(taps["pool3"])
    fuse3 = L["fuse_pool3"].forward(L["upscore_pool4c"].forward(up4, s3), L["score_pool3c"].forward(s3, up4))
    scores = L["score"].forward(L["upscore8"].forward(fuse3), x)
    # backward: the same layers in reverse; a Crop returns (dx, None), Add one gradient per input
    d = L["upscore8"].backward(L["score"].backward(dscores)[0])
    dup4, ds3 = L["fuse_pool3"].backward(d)
    dpool3 = L["score_pool3"].backward(L["score_pool3c"].backward(ds3)[0])
    d = L["upscore_pool4"].backward(L["upscore_pool4c"].backward(dup4)[0])
    dup2, ds4 = L["fuse_pool4"].backward(d)
    dpool4 = L["score_pool4"].backward(L["score_pool4c"].backward(ds4)[0])
    d = L["upscore2"].backward(L["upscore2c"].backward(dup2)[0])
    for name in reversed(trunk):
        if name == "pool4":                       # pool4 and pool3 fan out: their gradients add
            d = d + dpool4
        if name == "pool3":
            d = d + dpool3
        d = L[name].backward(d)
    grads = {f"{n}.{k}": g for n, layer in L.items() for k, g in layer.grads.items()}
    return scores, d, grads


def test_the_executor_equals_fcn8s_chained_by_hand():
    model = FCN8s(3, **TINY, dtype=np.float64, learn_upsampling=True).eval()
    rng = np.random.default_rng(0)
    for v in model.params.values():
        v[...] = rng.standard_normal(v.shape) * 0.5
    x = rng.standard_normal((2, 3, 35, 29))
    target = rng.integers(0, 3, (2, 35, 29))
    scores = model.forward(x)
    dscores = F.softmax_cross_entropy(scores, target)[1]
    dx = model.backward(dscores)
    grads = {k: g.copy() for k, g in model.grads.items()}
    hand_scores, hand_dx, hand_grads = fcn8s_by_hand(model, x, dscores)
    np.testing.assert_array_equal(scores, hand_scores)
    np.testing.assert_array_equal(dx, hand_dx)
    assert set(grads) == set(hand_grads) == set(model.params)
    for k in grads:
        np.testing.assert_array_equal(grads[k], hand_grads[k], err_msg=k)


def test_summary_and_coordinate_maps_read_the_same_graph():
    model = FCN16s(4, **TINY)
    assert model.sources["fuse_pool4"] == ("upscore2c", "score_pool4c")
    assert model.sources["score"] == ("upscore16", "input")
    np.testing.assert_array_equal(model.coords["pool4"][0], [16, 16])
    model.summary((32, 32))
    rows = {row[0]: row for row in model.table()}
    assert list(rows) == list(model.layers)
    assert rows["score"][2] == (1, 4, 32, 32) and rows["pool4"][3] == 16


def test_backward_without_the_input_gradient_fills_the_same_grads(monkeypatch):
    net, x, dout = small_graph(), rand(2, 2, 7, 5), rand(2, 3, 7, 5, seed=1)
    net.forward(x)
    assert net.backward(dout) is not None
    grads = {k: g.copy() for k, g in net.grads.items()}
    asked = []                                   # input_grad of every convolution's backward
    real = F.conv2d_backward
    monkeypatch.setattr(F, "conv2d_backward", lambda d, c, input_grad=True: asked.append(input_grad) or real(d, c, input_grad))
    net.forward(x)
    assert net.backward(dout, input_grad=False) is None
    assert sorted(asked) == [False, False]       # "conv" and "skip" read the input
    assert net.grads.keys() == grads.keys()
    for key, g in grads.items():
        np.testing.assert_array_equal(net.grads[key], g, err_msg=key)


def test_a_graph_scans_its_input_and_output_once_and_its_layers_not_at_all(monkeypatch):
    """Two scans for NaN and inf per pass (the input and the output), not one per map and weight each layer reads."""
    net, x = small_graph(), rand(2, 2, 7, 9)
    scanned = []
    all_finite = F.all_finite
    monkeypatch.setattr(F, "all_finite", lambda a: scanned.append(a.shape) or all_finite(a))
    out = net.forward(x)
    assert scanned == [x.shape, out.shape]
    scanned.clear()
    net.backward(np.ones_like(out))
    assert scanned == [out.shape]
    scanned.clear()
    F.conv2d_forward(x, net.params["conv.weight"])                      # an op on its own scans what it is given
    assert scanned == [x.shape, net.params["conv.weight"].shape]


def test_a_graph_names_nan_and_inf_at_its_input_its_output_and_a_fused_relu():
    net, x = small_graph(), rand(2, 2, 7, 9)
    out = net.forward(x)
    bad = x.copy()
    bad[1, 0, 3, 3] = np.nan
    with pytest.raises(F.NonFiniteError, match="^Graph: the input contains NaN or inf$"):
        net.forward(bad)
    with pytest.raises(F.NonFiniteError, match="^Graph: dout contains NaN or inf$"):
        net.backward(np.full_like(out, np.inf))
    net.params["skip.weight"][0, 0] = np.inf                           # the skip has no ReLU: the output shows it
    with pytest.raises(F.NonFiniteError, match="^Graph: the output contains NaN or inf$"), np.errstate(invalid="ignore"):
        net.forward(x)
    net.params["skip.weight"][0, 0] = 0
    net.params["conv.weight"][0, 0, 0, 0] = np.nan                     # conv's fused ReLU counts it
    with pytest.raises(F.NonFiniteError, match="conv2d: the output contains NaN or inf .before its ReLU.$"):
        net.forward(x)


def test_unscanned_skips_only_the_scan_and_nests():
    x, w = rand(1, 2, 5, 5), rand(3, 2, 3, 3)
    x[0, 0, 0, 0] = np.nan
    with F.unscanned(), np.errstate(invalid="ignore"):
        assert np.isnan(F.conv2d_forward(x, w)[0]).any()              # NaN in, NaN out: nothing looked for it
        with pytest.raises(ValueError, match="conv2d: x has 2 channels"):
            F.conv2d_forward(x, w[:, :1])                                 # every other check stays
        with F.unscanned():
            pass
        F.conv2d_forward(x, w)                                         # the inner block left it unscanned
    with pytest.raises(F.NonFiniteError, match="conv2d: x contains NaN or inf"):
        F.conv2d_forward(x, w)
