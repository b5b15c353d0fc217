"""Inference costs less than training: no unfolded columns kept in evaluation mode, the BLAS set once per pass."""
import numpy as np
import pytest

from tinyfcn import nn, threads
from tinyfcn.networks.graph import Sequential
from tinyfcn.networks.models import FCN8s


@pytest.mark.parametrize("size", [20, 6])                              # image by image, and one product (small map)
def test_a_conv2d_in_evaluation_mode_keeps_no_columns_and_the_same_results(size):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    layer = nn.Conv2d(3, 8, 3, padding=1, rng=rng)
    dout = rng.standard_normal((2, 8, size, size)).astype(np.float32)
    results = {}
    for training in (True, False):
        out = layer.train(training).forward(x)
        assert (layer.cache[5] is None) == (not training)             # the columns, the largest array
        results[training] = (out, layer.backward(dout), *layer.grads.values())   # a backward still works
    for a, b in zip(results[True], results[False]):
        np.testing.assert_array_equal(a, b)


def test_evaluation_keeps_the_models_scores():
    x = np.random.default_rng(0).standard_normal((2, 3, 40, 40)).astype(np.float32)
    model = FCN8s(3, norm="batch").eval()
    scores = model.forward(x)
    for layer in model.layers.values():                               # convolutions as in training, the rest in eval
        if isinstance(layer, nn.Conv2d):
            layer.training = True
    np.testing.assert_array_equal(model.forward(x), scores)


def test_a_graph_sets_the_blas_once_per_pass(monkeypatch):
    pytest.importorskip("threadpoolctl")
    changes = []
    real = threads._set_blas
    monkeypatch.setattr(threads, "_set_blas", lambda counts, had: (changes.append(counts), real(counts, had)))
    model = Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.MaxPool2d(2))
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    from threadpoolctl import threadpool_limits
    with threadpool_limits(2, user_api="blas"), threads.using(1):
        out = model.forward(x)
        assert len(changes) == 2                                      # to one thread and back, not per layer
        model.backward(np.ones_like(out))
        assert len(changes) == 4
