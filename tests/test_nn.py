"""The layer objects: parameters and gradients, modes, and the contract every backward keeps."""
import numpy as np
import pytest

from tinyfcn import functional as F
from tinyfcn import nn
from tinyfcn.ops.gradcheck import numerical_gradient, rel_error


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_conv2d_params_grads_and_in_place_training():
    layer = nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=1, rng=np.random.default_rng(0))
    assert set(layer.params) == {"weight", "bias"}
    assert layer.params["weight"].shape == (5, 3, 3, 2) and layer.params["weight"].dtype == np.float32
    assert not layer.params["bias"].any()
    std = layer.params["weight"].std()
    assert 0.6 * np.sqrt(2 / 18) < std < 1.4 * np.sqrt(2 / 18)         # He: var = 2 / fan_in
    x = rand(2, 3, 9, 8)
    y = layer.forward(x)
    assert y.shape == (2, 5, 5, 9)
    dx = layer.backward(np.ones_like(y))
    assert dx.shape == x.shape
    assert {k: v.shape for k, v in layer.grads.items()} == {k: v.shape for k, v in layer.params.items()}
    layer.params["weight"] -= 0.1 * layer.grads["weight"]             # updating the dict's array updates the layer
    assert not np.allclose(layer.forward(x), y)


def test_conv2d_without_bias_and_zero_init():
    layer = nn.Conv2d(3, 2, 1, bias=False, init="zeros")
    assert set(layer.params) == {"weight"} and not layer.params["weight"].any()
    layer.forward(rand(1, 3, 4, 4))
    layer.backward(rand(1, 2, 4, 4))
    assert set(layer.grads) == {"weight"}
    with pytest.raises(ValueError, match="unknown init"):
        nn.Conv2d(3, 2, 1, init="xavier")


def test_frozen_bilinear_upsampling_has_no_grads():
    up = nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1, bias=False, init="bilinear", trainable=False)
    y = up.forward(rand(2, 4, 5, 3))
    assert y.shape == (2, 4, 10, 6)
    dx = up.backward(np.ones_like(y))
    assert dx.shape == (2, 4, 5, 3) and up.grads == {}
    learned = nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1, bias=False, init="bilinear")
    learned.forward(rand(2, 4, 5, 3))
    learned.backward(np.ones_like(y))
    assert set(learned.grads) == {"weight"}


def test_float64_layers_for_gradient_checks():
    layer = nn.Conv2d(2, 2, 3, dtype=np.float64)
    assert layer.forward(rand(1, 2, 5, 5).astype(np.float64)).dtype == np.float64
    with pytest.raises(TypeError, match="weight is float64 but the input is float32"):
        layer.forward(rand(1, 2, 5, 5))


def test_dropout_is_inverted_and_off_in_eval():
    drop = nn.Dropout(0.25, rng=np.random.default_rng(0))
    x = np.ones((4, 8, 32, 32), np.float32)
    y = drop.forward(x)
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
    assert y.mean() == pytest.approx(1.0, abs=0.02)                   # the expectation is kept
    np.testing.assert_array_equal(drop.backward(x), y)                # same mask routes the gradient
    drop.eval()
    assert drop.forward(x) is x and drop.backward(x) is x
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\)"):
        nn.Dropout(1.0)


def test_maxpool_and_unpool_layers_round_trip():
    x = rand(1, 2, 6, 6)
    pool, unpool = nn.MaxPool2d(2), nn.MaxUnpool2d()
    y = pool.forward(x)
    z = unpool.forward(y, pool.indices, x.shape[2:])
    assert z.shape == x.shape and np.count_nonzero(z) == y.size
    np.testing.assert_array_equal(z.max(axis=(2, 3)), x.max(axis=(2, 3)))
    np.testing.assert_array_equal(unpool.backward(z), y)              # gather reads the values back


def test_loss_layer():
    loss = nn.SoftmaxCrossEntropy(ignore_index=255)
    scores = np.zeros((1, 4, 3, 3), np.float32)
    value = loss.forward(scores, np.zeros((1, 3, 3), np.int64))
    assert value == pytest.approx(np.log(4))                           # uniform scores: log K
    np.testing.assert_allclose(loss.backward(2.0), 2 * F.softmax_cross_entropy(scores, np.zeros((1, 3, 3), np.int64))[1])


def test_crop_add_concat():
    x = rand(2, 3, 7, 6)
    crop = nn.Crop((1, 2))
    y = crop.forward(x, np.zeros((5, 5, 4, 3)))
    np.testing.assert_array_equal(y, x[:, :, 1:5, 2:5])
    dx, dlike = crop.backward(np.ones_like(y))
    assert dx.shape == x.shape and dx.sum() == y.size and dx[:, :, 1:5, 2:5].all() and dlike is None
    # the window is where the two maps overlap: here like's own window starts at (2, 0)
    np.testing.assert_array_equal(nn.Crop((1, 2), like_offset=(2, 0)).forward(x, (4, 3)), x[:, :, 1:3, 2:5])
    with pytest.raises(ValueError, match="does not overlap"):
        nn.Crop((7, 0)).forward(x, (4, 3))
    with pytest.raises(ValueError, match="no offset"):
        nn.Crop().forward(x, (4, 3))
    add = nn.Add()
    with pytest.raises(ValueError, match="same shape"):
        add.forward(x, x[:, :2])
    cat = nn.Concat()
    z = cat.forward(x, x[:, :1])
    assert z.shape == (2, 4, 7, 6)
    a, b = cat.backward(z)
    np.testing.assert_array_equal(a, x)
    np.testing.assert_array_equal(b, x[:, :1])
    with pytest.raises(ValueError, match="agree on N, H and W"):
        cat.forward(x, x[:, :, :3])


@pytest.mark.parametrize("kwargs,message", [
    (dict(offset=(-10, -10)), r"Crop: offset must be >= 0 \(where the window starts in x\), got \(-10, -10\)"),
    (dict(offset=(0, -1)), r"offset must be >= 0 .*got \(0, -1\)"),
    (dict(offset=-2), r"offset must be >= 0 .*got \(-2, -2\)"),
    (dict(offset=(1, 1), like_offset=(-3, 0)), r"Crop: like_offset must be >= 0 .*got \(-3, 0\)"),
])
def test_crop_refuses_negative_offsets_at_construction(kwargs, message):
    # Python would read x[:, :, -10:-6] -- a window counted from the far end -- without a word
    with pytest.raises(ValueError, match=message) as caught:
        nn.Crop(**kwargs)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("make,args", [
    (lambda: nn.Conv2d(3, 4, 3, padding=1), ()),
    (lambda: nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1), ()),
    (lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True), ()),
    (lambda: nn.ReLU(), ()),
    (lambda: nn.Dropout(0.5, rng=np.random.default_rng(0)), ()),
    (lambda: nn.Crop(1), ((4, 4),)),
    (lambda: nn.Add(), (rand(2, 3, 7, 6, seed=1),)),
])
def test_backward_never_modifies_dout(make, args):
    layer = make()
    y = layer.forward(rand(2, 3, 7, 6), *args)
    dout = rand(*y.shape, seed=2)
    before = dout.copy()
    layer.backward(dout)
    np.testing.assert_array_equal(dout, before)


def test_fan_out_gradients_add():
    # y = relu(x) + conv(x): x feeds two layers, so its gradient is the sum of both
    x = rand(1, 2, 5, 5).astype(np.float64)
    relu, conv, add = nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1, dtype=np.float64), nn.Add()
    y = add.forward(relu.forward(x), conv.forward(x))
    da, db = add.backward(np.ones_like(y))
    dx = relu.backward(da) + conv.backward(db)
    num = numerical_gradient(lambda v: nn.ReLU().forward(v) + F.conv2d_forward(v, conv.params["weight"], conv.params["bias"], 1, 1)[0],
                             x, np.ones_like(y))
    assert rel_error(dx, num) < 1e-7
