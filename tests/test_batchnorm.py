"""BatchNorm2d: PyTorch's semantics (the oracle, float64), running statistics as buffers, graphs and threads."""
import numpy as np
import pytest

from tinyfcn import functional as F
from tinyfcn import nn, threads
from tinyfcn.networks.graph import Graph, Sequential
from tinyfcn.ops.gradcheck import rel_error
from tinyfcn.training.optim import SGD

torch = pytest.importorskip("torch")

LIMIT = 1e-9
"""Largest relative error against PyTorch (float64)."""

SHAPES = [(2, 3, 7, 6), (1, 4, 5, 3), (5, 2, 1, 1), (3, 1, 9, 11)]


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def t(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def stats(C, seed):
    """Running statistics that are not PyTorch's defaults, so evaluation mode depends on them."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(C), rng.uniform(0.5, 2.0, C)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("momentum,eps", [(0.1, 1e-5), (0.7, 1e-3)])
def test_functional_matches_torch(shape, training, momentum, eps):
    C = shape[1]
    x = rand(*shape) * 2 + 3
    gamma, beta = rand(C, seed=1), rand(C, seed=2)
    running_mean, running_var = stats(C, 3)
    t_mean, t_var = t(running_mean), t(running_var)
    out, cache = F.batch_norm2d_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps)
    tx, tgamma, tbeta = t(x, True), t(gamma, True), t(beta, True)
    tout = torch.nn.functional.batch_norm(tx, t_mean, t_var, tgamma, tbeta, training, momentum, eps)
    assert rel_error(out, tout.detach().numpy()) < LIMIT
    assert rel_error(running_mean, t_mean.numpy()) < LIMIT        # updated alike in training, untouched in eval
    assert rel_error(running_var, t_var.numpy()) < LIMIT
    dout = rand(*shape, seed=4)
    tout.backward(t(dout))
    for name, mine, theirs in zip(("dx", "dgamma", "dbeta"), F.batch_norm2d_backward(dout, cache), (tx, tgamma, tbeta)):
        assert rel_error(mine, theirs.grad.numpy()) < LIMIT, name


@pytest.mark.parametrize("momentum", [0.1, 0.35])
def test_running_statistics_after_several_steps_match_torch(momentum):
    """Batches of different sizes (m changes the unbiased correction), then evaluation with what was learned."""
    mine = nn.BatchNorm2d(3, momentum=momentum, dtype=np.float64)
    theirs = torch.nn.BatchNorm2d(3, momentum=momentum, dtype=torch.float64)
    for step, shape in enumerate([(4, 3, 5, 6), (2, 3, 8, 3), (1, 3, 4, 4), (6, 3, 2, 1)]):
        x = rand(*shape, seed=step) * (step + 1) - step
        tx = t(x, True)
        out, tout = mine.forward(x), theirs(tx)
        assert rel_error(out, tout.detach().numpy()) < LIMIT
        dout = rand(*shape, seed=10 + step)
        dx = mine.backward(dout)
        theirs.zero_grad()
        tout.backward(t(dout))
        assert rel_error(dx, tx.grad.numpy()) < LIMIT
        assert rel_error(mine.grads["weight"], theirs.weight.grad.numpy()) < LIMIT
        assert rel_error(mine.grads["bias"], theirs.bias.grad.numpy()) < LIMIT
        assert rel_error(mine.buffers["running_mean"], theirs.running_mean.numpy()) < LIMIT
        assert rel_error(mine.buffers["running_var"], theirs.running_var.numpy()) < LIMIT
    x = rand(2, 3, 5, 5, seed=20)
    assert rel_error(mine.eval().forward(x), theirs.eval()(t(x)).detach().numpy()) < LIMIT


def test_one_value_per_channel_is_refused_in_training_as_torch_does():
    x = rand(1, 3, 1, 1)
    message = (r"batch_norm2d: BatchNorm2d in training needs more than one value per channel; "
               r"got input of shape \(1, 3, 1, 1\); use a batch larger than 1 or eval mode")
    with pytest.raises(ValueError, match=message):
        F.batch_norm2d_forward(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3))
    layer = nn.BatchNorm2d(3, dtype=np.float64)
    with pytest.raises(ValueError, match=message):
        layer.forward(x)
    assert not layer.buffers["running_mean"].any() and (layer.buffers["running_var"] == 1).all()   # left as they were
    with pytest.raises(ValueError):
        torch.nn.BatchNorm2d(3, dtype=torch.float64)(t(x))
    theirs = torch.nn.BatchNorm2d(3, dtype=torch.float64).eval()
    assert rel_error(layer.eval().forward(x), theirs(t(x)).detach().numpy()) < LIMIT     # evaluation takes it
    F.batch_norm2d_forward(rand(1, 3, 2, 1), np.ones(3), np.zeros(3), np.zeros(3), np.ones(3))   # two values: fine


def test_float32_sums_in_float64_keep_the_variance_of_values_far_from_zero():
    """Values 1e4 +- 1: in float32 arithmetic, sum(x^2)/m - mean^2 would lose every digit of the variance."""
    x = (1e4 + rand(4, 2, 16, 16)).astype(np.float32)
    running_mean, running_var = np.zeros(2, np.float32), np.ones(2, np.float32)
    out, _ = F.batch_norm2d_forward(x, np.ones(2, np.float32), np.zeros(2, np.float32), running_mean, running_var,
                                    momentum=1.0)
    exact = x.astype(np.float64)
    np.testing.assert_allclose(running_var, exact.var(axis=(0, 2, 3), ddof=1), rtol=1e-6)
    np.testing.assert_allclose(running_mean, exact.mean(axis=(0, 2, 3)), rtol=1e-7)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3), dtype=np.float64), 1.0, rtol=1e-4)


def test_buffers_are_state_not_parameters():
    layer = nn.BatchNorm2d(4)
    assert set(layer.params) == {"weight", "bias"} and set(layer.buffers) == {"running_mean", "running_var"}
    assert (layer.params["weight"] == 1).all() and not layer.params["bias"].any()
    assert not layer.buffers["running_mean"].any() and (layer.buffers["running_var"] == 1).all()
    assert all(a.dtype == np.float32 and a.shape == (4,) for a in (*layer.params.values(), *layer.buffers.values()))
    x = rand(2, 4, 5, 5).astype(np.float32)
    y = layer.forward(x)
    dout = rand(*y.shape, seed=1).astype(np.float32)
    before = dout.copy()
    layer.backward(dout)
    np.testing.assert_array_equal(dout, before)                       # backward never modifies dout
    assert set(layer.grads) == {"weight", "bias"}
    assert nn.Layer().buffers == {} and nn.Conv2d(2, 2, 1).buffers == {}
    assert repr(layer) == "BatchNorm2d(4, momentum=0.1, eps=1e-05)"


def bn_net(dtype=np.float64):
    rng = np.random.default_rng(0)
    return Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=rng, dtype=dtype), nn.BatchNorm2d(3, momentum=0.2, dtype=dtype),
                      nn.ReLU(), nn.Conv2d(3, 2, 1, rng=rng, dtype=dtype))


def test_a_graph_with_batch_norm_trains_and_only_forward_passes_move_the_buffers():
    net = bn_net()
    assert set(net.buffers) == {"1.running_mean", "1.running_var"}
    assert net.buffers["1.running_mean"] is net.layers["1"].buffers["running_mean"]
    assert not set(net.buffers) & set(net.params)
    opt = SGD(net.params, lr=0.1, momentum=0.9, weight_decay=1e-2)
    x, target = rand(3, 2, 6, 5) + 1, np.random.default_rng(1).integers(0, 2, (3, 6, 5))
    buffers = {k: v.copy() for k, v in net.buffers.items()}
    loss, dscores = F.softmax_cross_entropy(net.forward(x), target)
    for k, v in net.buffers.items():                                  # a training forward pass moved them
        assert not np.allclose(v, buffers[k]), k
    net.backward(dscores)
    assert {"1.weight", "1.bias"} <= set(net.grads) and not set(net.buffers) & set(net.grads)
    params = {k: v.copy() for k, v in net.params.items()}
    buffers = {k: v.copy() for k, v in net.buffers.items()}
    opt.step(net.grads)
    assert not set(opt.velocity) & set(net.buffers)
    for k in ("1.weight", "1.bias"):
        assert not np.array_equal(net.params[k], params[k]), k
    for k, v in net.buffers.items():                                  # the optimizer's step leaves them alone
        np.testing.assert_array_equal(v, buffers[k])
    with nn.evaluating(net):
        first = net.forward(x)
        np.testing.assert_array_equal(net.forward(x), first)         # evaluation reads them and leaves them
    for k, v in net.buffers.items():
        np.testing.assert_array_equal(v, buffers[k])
    assert net.training and net.layers["1"].training
    assert F.softmax_cross_entropy(net.forward(x), target)[0] < loss   # the step helped


def test_state_dict_round_trip_includes_the_buffers():
    net = bn_net()
    x = rand(2, 2, 4, 4)
    for seed in range(3):
        net.forward(rand(2, 2, 4, 4, seed=seed) * 3)
    state = net.state_dict()
    assert set(state) == set(net.params) | set(net.buffers)
    assert state["1.running_mean"] is not net.buffers["1.running_mean"]       # copies
    other = bn_net()
    other.load_state_dict(state)
    for k in net.buffers:
        np.testing.assert_array_equal(other.buffers[k], net.buffers[k])
    np.testing.assert_array_equal(other.eval().forward(x), net.eval().forward(x))
    state["1.running_var"][...] = 7                                   # the loaded model owns its arrays
    assert not (other.buffers["1.running_var"] == 7).any()
    params_only = {k: v for k, v in state.items() if k in net.params}
    with pytest.raises(ValueError, match=r"missing key '1.running_mean' \(2 missing, 0 unexpected\)"):
        other.load_state_dict(params_only)
    with pytest.raises(ValueError, match=r"'1.running_var' has shape \(4,\), the model expects \(3,\)"):
        other.load_state_dict({**state, "1.running_var": np.ones(4)})


def test_a_graph_without_batch_norm_has_no_buffers_and_old_state_dicts_load():
    plain = Sequential(nn.Conv2d(2, 3, 3, dtype=np.float64), nn.ReLU())
    assert plain.buffers == {}
    old = {k: v.copy() + 1 for k, v in plain.params.items()}          # a state dict from before buffers existed
    Sequential(nn.Conv2d(2, 3, 3, dtype=np.float64), nn.ReLU()).load_state_dict(old)
    assert set(plain.state_dict()) == set(plain.params)
    with pytest.raises(ValueError, match="unexpected key 'x.running_mean'"):
        plain.load_state_dict({**old, "x.running_mean": np.zeros(3)})


def test_nested_graphs_expose_buffers_like_params():
    inner = bn_net()
    outer = Graph([("body", inner, "input"), ("relu", nn.ReLU(), "body")])
    assert set(outer.buffers) == {"body.1.running_mean", "body.1.running_var"}
    assert outer.buffers["body.1.running_var"] is inner.layers["1"].buffers["running_var"]
    new = np.full(3, 4.0)
    outer.buffers["body.1.running_var"] = new                        # reaches the layer through the inner graph
    assert inner.layers["1"].buffers["running_var"] is new and inner.buffers["1.running_var"] is new
    with pytest.raises(ValueError, match=r"buffers\['body.1.running_var'\] must be a float64 array of shape \(3,\)"):
        outer.buffers["body.1.running_var"] = np.ones(2)
    with pytest.raises(KeyError, match="no buffer 'body.1.running_vra'"):
        outer.buffers["body.1.running_vra"] = new
    outer.eval().forward(rand(1, 2, 4, 4))
    assert not inner.layers["1"].training
    state = outer.state_dict()
    assert "body.1.running_var" in state and (state["body.1.running_var"] == 4).all()


@pytest.mark.parametrize("shape", [(5, 6, 40, 36), (3, 40, 64, 64), (1, 9, 3, 2)])
def test_the_same_bits_for_any_thread_count_and_range(shape, monkeypatch, every_job_shared):
    def run():
        rng = np.random.default_rng(0)
        C = shape[1]
        x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
        gamma, beta = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
        running = np.zeros(C, np.float32), np.ones(C, np.float32)
        results = []
        for training in (True, False):
            out, cache = F.batch_norm2d_forward(x, gamma, beta, *running, training)
            results += [out, *running, *F.batch_norm2d_backward(rng.standard_normal(shape).astype(np.float32), cache)]
        return results

    with threads.using(1):
        one = run()
    with threads.using(3):
        for share in (F.BN_SHARE, 0):                                 # on one thread, or one range of channels each
            monkeypatch.setattr(F, "BN_SHARE", share)
            for a, b in zip(one, run()):
                np.testing.assert_array_equal(a, b)


x32 = np.ones((2, 3, 4, 4), np.float32)
c3 = np.ones(3, np.float32)


def with_nan(a):
    a = a.copy()
    a.flat[1] = np.nan
    return a


@pytest.mark.parametrize("args,error,message", [
    ((x32[0], c3, c3, c3, c3), ValueError, r"batch_norm2d: x must be 4-D \(N, C, H, W\), got shape \(3, 4, 4\)"),
    ((x32.astype(np.int32), c3, c3, c3, c3), TypeError, "batch_norm2d: x must be float32 or float64, got int32"),
    ((with_nan(x32), c3, c3, c3, c3), ValueError, "batch_norm2d: x contains NaN or inf"),
    ((x32, np.ones(4, np.float32), c3, c3, c3), ValueError,
     r"batch_norm2d: gamma must have shape \(3,\), one value per channel of x, got \(4,\)"),
    ((x32, c3, np.ones((3, 1), np.float32), c3, c3), ValueError, r"batch_norm2d: beta must be 1-D \(C\)"),
    ((x32, c3, c3, c3.astype(np.float64), c3), TypeError, "batch_norm2d: running_mean is float64 but the input is float32"),
    ((x32, c3, c3, c3, with_nan(c3)), ValueError, "batch_norm2d: running_var contains NaN or inf"),
    ((x32, c3, c3, c3, -c3), ValueError, "batch_norm2d: running_var must not be negative"),
    ((x32, c3, c3, c3, c3, True, 1.5), ValueError, "batch_norm2d: need 0 <= momentum <= 1 and eps > 0"),
    ((x32, c3, c3, c3, c3, True, 0.1, 0.0), ValueError, "batch_norm2d: need 0 <= momentum <= 1 and eps > 0"),
])
def test_clear_errors(args, error, message):
    with pytest.raises(error, match=message):
        F.batch_norm2d_forward(*args)


def test_running_statistics_must_be_writeable_in_training_only():
    frozen = c3.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="batch_norm2d: running_mean and running_var are updated in place"):
        F.batch_norm2d_forward(x32, c3, c3, frozen, c3.copy())
    F.batch_norm2d_forward(x32, c3, c3, frozen, frozen, training=False)


def test_backward_checks_dout():
    out, cache = F.batch_norm2d_forward(x32, c3, c3, c3.copy(), c3.copy())
    with pytest.raises(ValueError, match=r"batch_norm2d_backward: dout must have the forward output's shape \(2, 3, 4, 4\)"):
        F.batch_norm2d_backward(out[:1], cache)
    with pytest.raises(TypeError, match="batch_norm2d_backward: dout is float64 but the input is float32"):
        F.batch_norm2d_backward(out.astype(np.float64), cache)
    assert all(g.dtype == np.float32 for g in F.batch_norm2d_backward(out, cache))
