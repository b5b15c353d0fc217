"""norm="batch": BatchNorm after every backbone, fc and decoder convolution of every network, and what
carries it -- surgery (grow, convolutionalize, from_classifier, fold_batchnorm), checkpoints, gradients."""
import re
from pathlib import Path

import numpy as np
import pytest
from exportcases import perturb, train_a_little
from netcheck import randomize, whole_network_errors

from tinyfcn import functional as F
from tinyfcn import nn
from tinyfcn.networks.models import Classifier, FCN8s, FCN16s, FCN32s, ScoreMap
from tinyfcn.networks.surgery import (
    build,
    convolutionalize,
    fold_batchnorm,
    from_classifier,
    grow,
)
from tinyfcn.ops.gradcheck import rel_error, sparse_gradient_check
from tinyfcn.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    restore_model,
    save_checkpoint,
)
from tinyfcn.training.optim import SGD
from tinyfcn.training.train import evaluate

TINY = dict(widths=(2, 3, 3, 4, 4), fc_width=4)

VARIANTS = {
    "fcn32s": (FCN32s, {}),
    "fcn16s": (FCN16s, {}),
    "fcn8s": (FCN8s, {}),
    "fcn8s-at-once": (FCN8s, dict(at_once=True)),
    "fcn16s-concat": (FCN16s, dict(fusion="concat")),
    "fcn8s-concat": (FCN8s, dict(fusion="concat")),
    "fcn8s-conv": (FCN8s, dict(downsample="conv")),
    "fcn8s-conv-concat": (FCN8s, dict(downsample="conv", fusion="concat")),
    "fcn32s-unpool": (FCN32s, dict(upsample="unpool")),
}
"""Every FCN variant and design switch, built with :data:`TINY` widths."""

BLOCK = re.compile(r"conv\d_\d|pool\d_conv|fc[67]|dec\d|dec_fr")
"""The convolutions (and the classifier's dense fc6, fc7) that a BatchNorm follows."""


def norm_of(conv):
    """The BatchNorm node after ``conv``, by the naming of the models' module docstring."""
    if conv.endswith("_conv"):
        return conv.replace("_conv", "_bn")
    return re.sub(r"^(conv|fc)", "bn", conv) if conv.startswith(("conv", "fc")) else f"bn_{conv}"


def make(variant, norm="batch", num_classes=4, **kwargs):
    """``VARIANTS[variant]`` with 4 classes (the labels :func:`train_a_little` draws)."""
    cls, options = VARIANTS[variant]
    return cls(num_classes, **TINY, **options, norm=norm, **kwargs)


def readers(model, name):
    return [node for node, sources in model.sources.items() if name in sources]


def randomize_with_live_channels(model, seed):
    """:func:`netcheck.randomize`'s weights, but BatchNorm's gamma in [0.5, 1.5] and beta near 0.

    randomize's gamma ~ N(0, 0.25) and beta alike would leave many channels dead after the ReLU, and
    the gradients that reach the layers before them of order 1e-17: their relative errors measure
    rounding, not the gradient.
    """
    randomize(model, seed)
    rng = np.random.default_rng(seed + 100)
    for layer in model.layers.values():
        if isinstance(layer, nn.BatchNorm2d):
            layer.params["weight"][...] = rng.uniform(0.5, 1.5, layer.params["weight"].size)
            layer.params["bias"][...] = 0.1 * rng.standard_normal(layer.params["bias"].size)


def bn_classifier(dtype=np.float32, crop_size=35):
    """A BatchNorm classifier with random weights, trained a little (running statistics not 0/1), in eval mode."""
    return train_a_little(perturb(Classifier(4, **TINY, crop_size=crop_size, norm="batch", dtype=dtype))).eval()


# ---------------------------------------------------------------- where BatchNorm goes


def test_the_node_list_of_a_small_fcn32s_with_strided_convolutions():
    model = FCN32s(3, **TINY, depths=(1, 1, 1, 1, 1), downsample="conv", norm="batch")
    stages = [name for k in range(1, 6) for name in (f"conv{k}_1", f"bn{k}_1", f"relu{k}_1",
                                                     f"pool{k}_conv", f"pool{k}_bn", f"pool{k}")]
    assert list(model.layers) == stages + ["fc6", "bn6", "relu6", "drop6", "fc7", "bn7", "relu7", "drop7",
                                           "score_fr", "upscore", "score"]
    assert list(FCN32s(3, **TINY, norm="batch", upsample="unpool").layers)[-7:] == [
        "relu_dec2", "unpool1", "dec1", "bn_dec1", "relu_dec1", "score_dec", "score"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_batch_norm_follows_every_block_convolution_and_no_score_layer(variant):
    model, plain = make(variant), make(variant, norm="none")
    blocks = [name for name, layer in model.layers.items() if isinstance(layer, nn.Conv2d) and BLOCK.fullmatch(name)]
    norms = [name for name, layer in model.layers.items() if isinstance(layer, nn.BatchNorm2d)]
    assert [norm_of(conv) for conv in blocks] == norms
    c = model.config                                                 # stages, strided downsamplings, fc6, fc7, decoder
    assert len(blocks) == sum(c["depths"]) + 5 * (c["downsample"] == "conv") + 2 + 6 * (c["upsample"] == "unpool")
    for conv in blocks:                                              # conv -> its BatchNorm -> the ReLU
        bn = norm_of(conv)
        assert readers(model, conv) == [bn] and model.layers[bn].params["weight"].shape == (
            model.layers[conv].params["weight"].shape[0],)
        relu, = readers(model, bn)
        assert isinstance(model.layers[relu], nn.ReLU) and plain.sources[relu] == (conv,)
        assert "bias" not in model.layers[conv].params and "bias" in plain.layers[conv].params
    for name, layer in model.layers.items():                         # score layers and upsamplings keep theirs
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)) and not BLOCK.fullmatch(name):
            assert not any(isinstance(model.layers[r], nn.BatchNorm2d) for r in readers(model, name)), name
            assert set(layer.params) == set(plain.layers[name].params), name
    assert [n for n in model.layers if n not in norms] == list(plain.layers)   # otherwise the same graph


@pytest.mark.parametrize("variant", ["fcn8s", "fcn32s-unpool", "fcn8s-conv-concat"])
def test_the_weights_drawn_do_not_depend_on_norm(variant):
    """BatchNorm draws nothing, so the same seed gives the BatchNorm-free model's weights, biases left out."""
    model, plain = make(variant, seed=4), make(variant, norm="none", seed=4)
    for key, value in plain.params.items():
        if key in model.params:
            np.testing.assert_array_equal(model.params[key], value, err_msg=key)
        else:
            assert key.endswith(".bias") and BLOCK.fullmatch(key.split(".")[0]) and not value.any(), key
    assert plain.config == {**model.config, "norm": "none"} and not plain.buffers


def test_the_classifier_normalises_fc6_and_fc7_with_batch_norm_1d():
    clf = Classifier(4, **TINY, crop_size=32, norm="batch")
    assert list(clf.layers)[-11:] == ["pool5", "flatten", "fc6", "bn6", "relu6", "drop6",
                                      "fc7", "bn7", "relu7", "drop7", "score"]
    assert type(clf.layers["bn6"]) is nn.BatchNorm1d and type(clf.layers["bn2_2"]) is nn.BatchNorm2d
    assert "bias" not in clf.layers["fc6"].params and "bias" in clf.layers["score"].params
    assert clf.config["norm"] == "batch" and len(clf.buffers) == 2 * (10 + 2)


@pytest.mark.parametrize("cls", [FCN8s, FCN32s, Classifier])
def test_an_unknown_norm_is_one_line_naming_the_choices(cls):
    with pytest.raises(ValueError, match=r"norm must be one of 'none', 'batch', got 'group'") as info:
        cls(3, **TINY, norm="group")
    assert len(str(info.value).splitlines()) == 1
    with pytest.raises(ValueError, match="norm must be one of"):
        build({**FCN8s(3, **TINY).config, "norm": "group"})


def test_configs_without_norm_build_the_networks_without_batch_norm():
    for model in (FCN8s(3, **TINY, fusion="concat"), Classifier(3, **TINY, crop_size=32)):
        old = {k: v for k, v in model.config.items() if k != "norm"}
        rebuilt = build(old)
        assert rebuilt.config == model.config and rebuilt.config["norm"] == "none" and not rebuilt.buffers


def test_the_summary_shows_the_norm(capsys):
    text = FCN8s(3, **TINY, norm="batch").summary((35, 29))
    assert "(downsample=pool, upsample=transposed, fusion=sum, norm=batch)" in text.splitlines()[0]
    assert any(line.split()[:2] == ["bn3_1", "BatchNorm2d"] for line in text.splitlines())
    capsys.readouterr()


# ---------------------------------------------------------------- running it


def test_eval_mode_predict_leaves_the_buffers_and_the_mode_alone():
    model = train_a_little(perturb(make("fcn8s")))
    before = {k: v.copy() for k, v in model.buffers.items()}
    assert not np.allclose(before["bn2_1.running_mean"], 0)
    x = np.random.default_rng(0).standard_normal((2, 3, 35, 29)).astype(np.float32)
    labels = model.predict(x)
    assert labels.shape == (2, 35, 29) and model.training
    for k, v in model.buffers.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    model.eval().forward(x)
    np.testing.assert_array_equal(model.buffers["bn5_2.running_var"], before["bn5_2.running_var"])
    model.train().forward(x)                                         # a training-mode pass moves them
    assert not np.array_equal(model.buffers["bn5_2.running_var"], before["bn5_2.running_var"])


@pytest.mark.parametrize("variant", ["fcn8s", "fcn32s-unpool", "fcn8s-conv-concat"])
def test_every_size_in_same_size_out(variant):
    model = make(variant)
    for H, W in [(1, 1), (35, 29), (100, 31)]:
        x = np.random.default_rng(0).standard_normal((2, 3, H, W)).astype(np.float32)
        scores = model.forward(x)
        assert scores.shape == (2, 4, H, W) and np.isfinite(scores).all()
        assert model.backward(np.ones_like(scores)).shape == x.shape


def test_a_batch_norm_fcn8s_trains():
    """A few SGD steps on one batch of 8x8 blocks of 3 classes (each class a noisy colour): the loss falls,
    and BatchNorm's gamma and beta learn too."""
    rng = np.random.default_rng(0)
    target = rng.integers(0, 3, (4, 4, 4)).repeat(8, axis=1).repeat(8, axis=2)
    x = (np.eye(3)[target].transpose(0, 3, 1, 2) + 0.3 * rng.standard_normal((4, 3, 32, 32))).astype(np.float32)
    model = FCN8s(3, widths=(8, 8, 16, 16, 16), fc_width=16, norm="batch", dropout=0.0, seed=1)
    loss_fn, optimizer = nn.SoftmaxCrossEntropy(), SGD(model.params, lr=0.1, momentum=0.9)
    losses = []
    for _ in range(15):
        losses.append(loss_fn.forward(model.forward(x), target))
        model.backward(loss_fn.backward())
        assert set(model.grads) == {k for k in model.params if not k.startswith("upscore")}
        optimizer.step(model.grads)
    assert losses[-1] < 0.5 * losses[0] and losses[0] == pytest.approx(np.log(3)), losses
    assert not np.allclose(model.params["bn1_1.weight"], 1) and not np.allclose(model.params["bn6.bias"], 0)


@pytest.mark.parametrize("cls,options,size,seed", [
    (FCN8s, {}, (35, 29), 1),
    (FCN8s, dict(downsample="conv", fusion="concat"), (33, 30), 1),
    (FCN32s, dict(upsample="unpool"), (35, 29), 2),
], ids=["fcn8s", "conv+concat", "unpool"])
def test_whole_network_gradient_check_in_training_mode(cls, options, size, seed):
    """Training mode: BatchNorm uses the batch's statistics, so each image's scores depend on the
    other's and the check covers that coupling. Dropout 0, so every call computes the same function.

    BatchNorm centres every ReLU's input on 0, so many values sit near the kink; for some weights
    a probe of h = 1e-5 crosses one (its one-sided differences disagree, and agree again with the
    analytic value at h = 1e-6). The seeds here keep every probe away from kinks.
    """
    model = cls(3, **TINY, **options, norm="batch", learn_upsampling=True, dropout=0.0, dtype=np.float64)
    randomize_with_live_channels(model, seed)
    worst = whole_network_errors(model, size)
    assert max(worst.values()) < 1e-5, {k: v for k, v in worst.items() if v >= 1e-5}
    assert {"bn1_1.weight", "bn6.bias"} <= set(worst)


def test_classifier_gradient_check_in_training_mode():
    clf = Classifier(3, **TINY, crop_size=40, norm="batch", dropout=0.0, dtype=np.float64)
    randomize_with_live_channels(clf, 1)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((5, 3, 40, 40)), rng.integers(0, 3, (5, 1, 1))

    def loss(_):
        return F.softmax_cross_entropy(clf.forward(x)[:, :, None, None], y)[0]

    _, d = F.softmax_cross_entropy(clf.forward(x)[:, :, None, None], y)
    dx = clf.backward(d[:, :, 0, 0])
    worst = {k: sparse_gradient_check(loss, p, clf.grads[k], num_checks=6, seed=3) for k, p in clf.params.items()}
    worst["input"] = sparse_gradient_check(loss, x, dx, num_checks=10, seed=4)
    assert max(worst.values()) < 1e-5, worst


def test_batch_norm_1d_is_torchs():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    mine = nn.BatchNorm1d(5, momentum=0.3, dtype=np.float64)
    mine.params["weight"][...], mine.params["bias"][...] = rng.standard_normal(5), rng.standard_normal(5)
    theirs = torch.nn.BatchNorm1d(5, momentum=0.3, dtype=torch.float64)
    theirs.load_state_dict({**{k: torch.tensor(v) for k, v in {**mine.params, **mine.buffers}.items()},
                            "num_batches_tracked": torch.tensor(0)})
    for training, rows in ((True, 7), (True, 3), (False, 4)):
        x, dout = rng.standard_normal((rows, 5)) * 3 + 1, rng.standard_normal((rows, 5))
        mine.train(training), theirs.train(training)
        tx = torch.tensor(x, requires_grad=True)
        out = theirs(tx)
        out.backward(torch.tensor(dout))
        assert rel_error(mine.forward(x), out.detach().numpy()) < 1e-9
        assert rel_error(mine.backward(dout), tx.grad.numpy()) < 1e-9
        assert rel_error(mine.grads["weight"], theirs.weight.grad.numpy()) < 1e-9
        theirs.zero_grad()
        for k in ("running_mean", "running_var"):
            assert rel_error(mine.buffers[k], getattr(theirs, k).numpy()) < 1e-9, (training, k)
    with pytest.raises(ValueError, match=r"BatchNorm1d: expected an input of shape \(N, C\), got \(2, 5, 1, 1\)"):
        mine.forward(np.ones((2, 5, 1, 1)))
    assert repr(mine) == "BatchNorm1d(5, momentum=0.3, eps=1e-05)"


# ---------------------------------------------------------------- surgery


def _scores_agree(a, b, relative=1e-5):
    """max |a - b| within ``relative`` of a's score range, and that range not trivially small."""
    spread = np.ptp(a)
    assert spread > 0.01 and np.abs(a - b).max() <= relative * spread, (np.abs(a - b).max(), spread)


FOLD_CASES = ["fcn32s", "fcn16s", "fcn8s", "fcn8s-concat", "fcn8s-conv", "fcn32s-unpool", "fcn8s-at-once"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("variant", FOLD_CASES)
def test_fold_batchnorm_gives_the_eval_scores_without_batch_norm(variant, dtype):
    model = train_a_little(perturb(make(variant, dtype=dtype))).eval()
    buffers = {k: v.copy() for k, v in model.buffers.items()}
    folded = fold_batchnorm(model)
    assert type(folded) is type(model) and not folded.training and folded.dtype == model.dtype
    assert folded.config == {**model.config, "norm": "none"} and not folded.buffers
    assert not any(isinstance(layer, nn.BatchNorm2d) for layer in folded.layers.values())
    assert folded.params["conv2_1.bias"].any() and folded.params["fc7.bias"].any()
    for size in [(35, 29), (17, 48), (1, 1)]:
        x = np.random.default_rng(1).standard_normal((2, 3, *size)).astype(dtype)
        _scores_agree(model.forward(x), folded.forward(x), 1e-5 if dtype == np.float32 else 1e-12)
    for k, v in model.buffers.items():                              # the original is untouched
        np.testing.assert_array_equal(v, buffers[k])


def test_fold_batchnorm_of_the_classifier_and_its_score_map():
    clf = bn_classifier(crop_size=35)
    x = np.random.default_rng(1).standard_normal((3, 3, 35, 35)).astype(np.float32)
    folded = fold_batchnorm(clf)
    assert isinstance(folded, Classifier) and folded.config["norm"] == "none"
    _scores_agree(clf.forward(x), folded.forward(x))
    net = convolutionalize(clf)
    folded_map = fold_batchnorm(net)
    assert isinstance(folded_map, ScoreMap) and not folded_map.buffers
    big = np.random.default_rng(2).standard_normal((1, 3, 77, 70)).astype(np.float32)
    _scores_agree(net.forward(big), folded_map.forward(big))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_a_batch_norms_fold_is_its_evaluation_map_after_the_layer_before(dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 9, 11)).astype(dtype)
    weight = rng.standard_normal((5, 3, 3, 3)).astype(dtype)
    bn = nn.BatchNorm2d(5, eps=1e-3, dtype=dtype).eval()
    for array, (low, high) in zip([bn.params["weight"], bn.params["bias"], bn.buffers["running_mean"],
                                   bn.buffers["running_var"]], [(-2, 2), (-1, 1), (-1, 1), (0.1, 3)]):
        array[...] = rng.uniform(low, high, array.shape)
    for bias in [None, rng.standard_normal(5).astype(dtype)]:
        conv = F.conv2d_forward(x, weight, bias, 1, 1)[0]
        folded_weight, folded_bias = bn.fold(weight, bias)
        assert folded_weight.dtype == folded_bias.dtype == dtype
        np.testing.assert_allclose(F.conv2d_forward(x, folded_weight, folded_bias, 1, 1)[0], bn.forward(conv),
                                   rtol=0, atol=(1e-5 if dtype == np.float32 else 1e-12) * np.ptp(conv))


@pytest.mark.parametrize("variant", ["fcn8s", "fcn32s-unpool", "fcn8s-conv-concat"])
def test_inference_folds_every_batch_norm_and_keeps_no_backward_cache(variant):
    model = train_a_little(perturb(make(variant)))
    assert {model.folds[conv] for conv in model.folds} == {norm_of(conv) for conv in model.folds}
    assert len(model.folds) == sum(isinstance(layer, nn.BatchNorm2d) for layer in model.layers.values())
    x = np.random.default_rng(1).standard_normal((2, 3, 35, 29)).astype(np.float32)
    with nn.evaluating(model):
        scores = model.forward(x)
    with model.inference():
        assert not model.training
        inferred = model.forward(x)
    assert model.training                                            # the caller's mode comes back
    np.testing.assert_array_equal(inferred, fold_batchnorm(model).forward(x))   # the folded network, bit for bit
    _scores_agree(scores, inferred)
    kept = [name for name, layer in model.layers.items()
            if getattr(layer, "cache", None) is not None and not isinstance(layer, nn.MaxPool2d)]
    assert kept == []
    with pytest.raises(RuntimeError, match="inference"):
        model.backward(np.ones_like(inferred))
    model.forward(x)                                                 # a training pass: backward works again
    model.backward(np.ones_like(inferred))


def test_predict_and_evaluate_run_the_folded_network():
    model = train_a_little(perturb(make("fcn8s")))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 3, 24, 20)).astype(np.float32)
    images, labels = rng.random((5, 24, 20, 3)).astype(np.float32), rng.integers(0, 4, (5, 24, 20))
    folded = fold_batchnorm(model)
    np.testing.assert_array_equal(model.predict(x), folded.predict(x))
    mine, theirs = evaluate(model, (images, labels), batch_size=2), evaluate(folded, (images, labels), batch_size=2)
    assert mine["loss"] == theirs["loss"] and model.training
    np.testing.assert_array_equal(mine["confusion"], theirs["confusion"])


def test_a_model_without_batch_norm_folds_into_a_copy():
    model = FCN8s(3, **TINY, seed=2)
    randomize(model, 3)
    folded = fold_batchnorm(model)
    for k, v in model.params.items():
        np.testing.assert_array_equal(folded.params[k], v)
        assert folded.params[k] is not v


def test_convolutionalize_keeps_the_classifiers_batch_norm():
    clf = bn_classifier(crop_size=35)
    net = convolutionalize(clf)
    assert type(net.layers["bn6"]) is nn.BatchNorm2d and type(net.layers["bn3_1"]) is nn.BatchNorm2d
    for k, v in clf.state_dict().items():
        if k.startswith("bn"):                                       # gamma, beta and the running statistics
            np.testing.assert_array_equal(net.state_dict()[k], v, err_msg=k)
    x = np.random.default_rng(1).standard_normal((3, 3, 35, 35)).astype(np.float32)
    logits = clf.forward(x)
    np.testing.assert_allclose(net.forward(x)[:, :, 0, 0], logits, rtol=1e-5, atol=1e-5 * np.abs(logits).max())
    assert np.abs(logits).max() > 0.1


@pytest.mark.parametrize("arch", ["fcn32s", "fcn8s"])
def test_from_classifier_carries_the_norm_its_parameters_and_running_statistics(arch):
    clf = bn_classifier(crop_size=48)
    model = from_classifier(clf, arch).eval()
    assert model.config["norm"] == "batch"
    for key in ("bn6.running_var", "bn7.running_mean", "bn2_1.running_mean"):
        np.testing.assert_array_equal(model.buffers[key], clf.buffers[key])
    np.testing.assert_array_equal(model.params["bn7.weight"], clf.params["bn7.weight"])
    x = np.random.default_rng(4).standard_normal((1, 3, 100, 131)).astype(np.float32)
    coarse = convolutionalize(clf).forward(x)
    h = x
    for name in list(model.layers)[:list(model.layers).index("score_fr") + 1]:
        h = model.layers[name].forward(h)
    # fc6 is padded by 1: the FCN's coarse scores hold the classifier's map with a border
    np.testing.assert_allclose(h[:, :, 1:-1, 1:-1], coarse, rtol=1e-5, atol=1e-5 * np.abs(coarse).max())
    with pytest.raises(ValueError, match="norm comes from the classifier"):
        from_classifier(clf, arch, norm="none")


def test_grow_keeps_the_norm_and_copies_parameters_and_running_statistics():
    m32 = train_a_little(perturb(FCN32s(4, **TINY, norm="batch", seed=5)))
    m16 = grow(m32, "fcn16s")
    assert m16.config["norm"] == "batch" and m16.training
    assert set(m32.buffers) == set(m16.buffers)                      # the skips add no BatchNorm
    shared = {**m16.params, **m16.buffers}
    for k, v in {**m32.params, **m32.buffers}.items():
        if k != "upscore.weight":                                    # FCN-32s's x32, which FCN-16s splits
            np.testing.assert_array_equal(shared[k], v, err_msg=k)
    assert m16.buffers["bn4_2.running_mean"] is not m32.buffers["bn4_2.running_mean"]
    m8 = grow(m16.eval(), "fcn8s")
    np.testing.assert_array_equal(m8.buffers["bn7.running_var"], m32.buffers["bn7.running_var"])
    assert not m8.training


# ---------------------------------------------------------------- checkpoints


def test_a_batch_norm_checkpoint_keeps_the_running_statistics(tmp_path):
    model = train_a_little(perturb(FCN8s(4, **TINY, norm="batch", fusion="concat")))
    save_checkpoint(tmp_path / "bn.npz", model)
    with np.load(tmp_path / "bn.npz") as f:
        assert {"model/bn1_1.running_mean", "model/bn6.running_var", "model/bn6.weight"} <= set(f.files)
    loaded = load_model(tmp_path / "bn.npz")
    assert loaded.config == model.config and loaded.config["norm"] == "batch"
    for k, v in model.buffers.items():
        np.testing.assert_array_equal(loaded.buffers[k], v, err_msg=k)
    x = np.random.default_rng(3).standard_normal((2, 3, 35, 29)).astype(np.float32)
    np.testing.assert_array_equal(loaded.forward(x), model.eval().forward(x))
    checkpoint = load_checkpoint(tmp_path / "bn.npz")
    del checkpoint["model"]["bn3_2.running_var"]
    with pytest.raises(CheckpointError, match="missing key 'bn3_2.running_var'"):
        restore_model(FCN8s(4, **TINY, norm="batch", fusion="concat"), checkpoint)


def test_a_checkpoint_written_before_batch_norm_loads_without_it():
    model = load_model(Path(__file__).parent / "data" / "fcn8s-tiny-v0.1.npz")
    assert "norm" not in load_checkpoint(Path(__file__).parent / "data" / "fcn8s-tiny-v0.1.npz")["meta"]["config"]
    assert model.config["norm"] == "none" and not model.buffers


def test_a_batchnorm_classifier_trains_when_the_last_batch_holds_one_crop():
    from tinyfcn.training.pretrain import train_classifier
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (9, 16, 16, 3), dtype=np.uint8), rng.integers(0, 3, 9)   # 4 + 4 + 1
    model = Classifier(3, crop_size=16, widths=(4, 4, 4, 4, 4), fc_width=8, norm="batch")
    history = train_classifier(model, (images, labels), epochs=2, batch_size=4, log=None)
    assert len(history["train_loss"]) == 2 and all(np.isfinite(history["train_loss"]))
