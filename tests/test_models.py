"""FCN-32s/16s/8s: alignment by coordinate maps, any input size, whole-network gradients, the model API."""
import numpy as np
import pytest
from netcheck import (
    TINY,
    VGG16,
    assert_any_size_in_same_size_out,
    crop_offsets,
    randomize,
    whole_network_errors,
)

from tinyfcn import nn
from tinyfcn.networks.coord_map import compose, coord_map, crop_offset, layer_map
from tinyfcn.networks.models import FCN8s, FCN16s, FCN32s
from tinyfcn.networks.surgery import build, grow


def test_reference_crop_offsets_for_the_authors_vgg16():
    assert crop_offsets(FCN32s(21, **VGG16)) == {"score": (19, 19)}
    assert crop_offsets(FCN16s(21, **VGG16)) == {"score_pool4c": (5, 5), "score": (27, 27)}
    assert crop_offsets(FCN8s(21, **VGG16)) == {"score_pool4c": (5, 5), "score_pool3c": (9, 9), "score": (31, 31)}


def test_layer_maps_and_their_algebra():
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=1)
    scale, shift = layer_map(conv)
    np.testing.assert_array_equal(scale, [2, 2])
    np.testing.assert_array_equal(shift, [0, 0])                     # (k-1)/2 - p
    pool = nn.MaxPool2d(2)
    np.testing.assert_array_equal(layer_map(pool)[1], [0.5, 0.5])    # a 2x2 window's centre
    up = nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1)
    s, t = compose(layer_map(conv), layer_map(up))                   # up undoes conv's stride
    np.testing.assert_array_equal(s, [1, 1])
    # x2 bilinear with kernel 4, padding 1 after a stride-2 conv lands half a pixel back
    np.testing.assert_array_equal(t, [-0.5, -0.5])
    np.testing.assert_array_equal(coord_map([conv, up])[1], t)
    assert crop_offset((np.ones(2), np.zeros(2)), (np.ones(2), np.array([3.0, 5.0]))) == (3, 5)
    with pytest.raises(ValueError, match="scales"):
        crop_offset((np.ones(2), np.zeros(2)), (2 * np.ones(2), np.zeros(2)))
    with pytest.raises(ValueError, match="fraction of a pixel"):
        crop_offset((np.ones(2), np.zeros(2)), (np.ones(2), np.full(2, 0.5)))


@pytest.mark.parametrize("cls", [FCN32s, FCN16s, FCN8s])
@pytest.mark.parametrize("config", [TINY, VGG16], ids=["tiny", "vgg16-settings"])
def test_any_input_size_in_same_size_out(cls, config):
    assert_any_size_in_same_size_out(cls(3, **config), [(1, 1), (7, 13), (37, 53), (64, 64), (100, 31)])


def test_default_model_is_the_issue_architecture():
    model = FCN8s(4)
    shapes = {k: v.shape for k, v in model.params.items()}
    assert shapes["conv1_1.weight"] == (16, 3, 3, 3) and shapes["conv5_2.weight"] == (128, 128, 3, 3)
    assert shapes["fc6.weight"] == (256, 128, 3, 3) and shapes["fc7.weight"] == (256, 256, 1, 1)
    assert shapes["score_fr.weight"] == (4, 256, 1, 1)
    assert shapes["upscore2.weight"] == (4, 4, 4, 4) and shapes["upscore8.weight"] == (4, 4, 16, 16)
    assert not any("bias" in k for k in shapes if k.startswith("upscore"))
    assert not model.params["score_fr.weight"].any() and not model.params["score_pool3.weight"].any()
    assert not model.grads                                              # grads appear after backward
    model.backward(np.ones_like(model.forward(np.ones((1, 3, 32, 32), np.float32))))
    frozen = set(model.params) - set(model.grads)
    assert frozen == {"upscore2.weight", "upscore_pool4.weight", "upscore8.weight"}
    learned = FCN8s(4, learn_upsampling=True)
    learned.backward(np.ones_like(learned.forward(np.ones((1, 3, 32, 32), np.float32))))
    assert set(learned.grads) == set(learned.params)


@pytest.mark.parametrize("cls,size", [(FCN8s, (32, 32)), (FCN8s, (35, 29)), (FCN16s, (35, 29)), (FCN32s, (32, 32))])
def test_whole_network_gradient_check(cls, size):
    model = cls(3, **TINY, learn_upsampling=True, dropout=0.3, dtype=np.float64)
    randomize(model, 1)
    worst = whole_network_errors(model, size)
    assert max(worst.values()) < 1e-5, {k: v for k, v in worst.items() if v >= 1e-5}


def test_staged_models_copy_shared_weights_and_start_with_a_silent_skip():
    m32 = FCN32s(3, **TINY, seed=5)
    randomize(m32, 6)
    m16 = grow(m32, "fcn16s")
    assert isinstance(m16, FCN16s) and m16.training
    shared = set(m32.params) & set(m16.params)
    assert {k.split(".")[0] for k in shared} >= {"conv1_1", "conv5_2", "fc6", "fc7", "score_fr"}
    for k in shared:
        np.testing.assert_array_equal(m16.params[k], m32.params[k])
        assert m16.params[k] is not m32.params[k]
    assert not m16.params["score_pool4.weight"].any()
    m8 = grow(m16, "fcn8s")
    assert not m8.params["score_pool3.weight"].any()
    # at step 0 score_pool4 is zero, so FCN-16s is upscore16(upscore2(score_fr)) with nothing added
    x = np.random.default_rng(0).standard_normal((1, 3, 40, 40)).astype(np.float32)
    m16.eval()
    trunk = list(m16.layers)[:list(m16.layers).index("score_fr") + 1]
    h, maps = x, {}
    for name in trunk:
        h = maps[name] = m16.layers[name].forward(h)
    up = m16.layers["upscore2"].forward(h)
    h, w = maps["pool4"].shape[2:]
    without_skip = m16.layers["upscore16"].forward(up[:, :, :h, :w])[:, :, :40, :40]
    np.testing.assert_allclose(m16.forward(x), without_skip, rtol=1e-6, atol=1e-6)
    assert np.abs(m16.forward(x)).max() > 0.1                          # and that is not trivially zero
    with pytest.raises(ValueError, match="an fcn16s cannot become the coarser fcn32s"):
        grow(m16, "fcn32s")
    with pytest.raises(ValueError, match="unknown model 'fcn4s'"):
        grow(m16, "fcn4s")
    m8_from_32 = grow(m32, "fcn8s")                                  # both skips start at zero
    np.testing.assert_array_equal(m8_from_32.params["fc7.weight"], m32.params["fc7.weight"])


def test_state_dict_round_trip_and_clear_mismatch_errors():
    a, b = FCN8s(4, **TINY, seed=0), FCN8s(4, **TINY, seed=1)
    b.load_state_dict(a.state_dict())
    x = np.ones((1, 3, 16, 16), np.float32)
    np.testing.assert_array_equal(a.eval().forward(x), b.eval().forward(x))
    state = a.state_dict()
    state["conv1_1.weight"][...] = 7                                    # a copy: the model is untouched
    assert not (a.params["conv1_1.weight"] == 7).all()
    with pytest.raises(ValueError, match=r"missing key 'upscore_pool4.weight' \(4 missing, 1 unexpected\).*another architecture"):
        b.load_state_dict(FCN16s(4, **TINY).state_dict())
    bad = a.state_dict()
    bad["fc6.weight"] = bad["fc6.weight"][:2]
    with pytest.raises(ValueError, match=r"'fc6.weight' has shape \(2, 4, 3, 3\)"):
        b.load_state_dict(bad)


def test_params_are_the_arrays_the_layers_use():
    model = FCN32s(2, **TINY)
    model.params["score_fr.bias"][...] = [0.0, 5.0]
    assert (model.eval().forward(np.zeros((1, 3, 8, 8), np.float32)).argmax(axis=1) == 1).all()


def test_train_eval_switch_dropout():
    model = FCN32s(2, **TINY, dropout=0.5)
    randomize(model, 0)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    model.eval()
    np.testing.assert_array_equal(model.forward(x), model.forward(x))
    model.train()
    assert not np.array_equal(model.forward(x), model.forward(x))


def test_summary_lists_every_layer(capsys):
    text = FCN8s(4).summary((64, 64))
    assert capsys.readouterr().out.strip() == text.strip()
    lines = text.splitlines()
    assert sum(line.split()[0] in FCN8s(4).layers for line in lines[2:-1]) == len(FCN8s(4).layers)
    pool5 = next(line for line in lines if line.startswith("pool5"))
    assert "(1, 128, 2, 2)" in pool5 and pool5.split()[-3] == "32"     # total stride 32 at pool5
    assert text.splitlines()[-1].startswith("total parameters: 956,060")


def test_bad_input_and_configs():
    model = FCN8s(4, **TINY)
    with pytest.raises(ValueError, match=r"expected an input of shape \(N, 3, H, W\)"):
        model.forward(np.ones((1, 1, 8, 8), np.float32))
    with pytest.raises(TypeError, match="expected float32 input, got float64"):
        model.forward(np.ones((1, 3, 8, 8)))
    with pytest.raises(ValueError, match="one entry per stage"):
        FCN8s(4, widths=(1, 2))
    with pytest.raises(ValueError, match="unknown model 'fcn4s'"):
        build({"arch": "fcn4s", "num_classes": 2})
    assert isinstance(build(FCN16s(3, **TINY).config), FCN16s)


def test_at_once_fcn8s_scales_the_skips():
    model = FCN8s(4, **TINY, at_once=True)
    assert model.layers["scale_pool4"].factor == 0.01 and model.layers["scale_pool3"].factor == 0.0001
    assert model.config["at_once"] is True
    x = np.ones((1, 3, 32, 32), np.float32)
    assert model.forward(x).shape == (1, 4, 32, 32)


def test_checkpoints_of_the_hand_wired_models_still_load(tmp_path):
    """tests/data holds an FCN-8s checkpoint written before networks became graphs (format 1)."""
    from pathlib import Path

    from tinyfcn.training.checkpoint import load_model
    model = load_model(Path(__file__).parent / "data" / "fcn8s-tiny-v0.1.npz")
    fresh = FCN8s(3, **TINY, seed=3)
    rng = np.random.default_rng(0)
    for v in fresh.params.values():                                  # the recipe that made the file
        v[...] = rng.standard_normal(v.shape) * 0.5
    assert model.config == fresh.config
    for k, v in fresh.params.items():
        np.testing.assert_array_equal(model.params[k], v, err_msg=k)
    x = np.random.default_rng(1).standard_normal((1, 3, 11, 13)).astype(np.float32)
    np.testing.assert_array_equal(model.forward(x), fresh.eval().forward(x))
