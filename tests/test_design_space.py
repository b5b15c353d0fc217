"""The design space of the FCN text: downsampling, upsampling and fusion switches, and convolutionalization."""
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

from tinyfcn import functional as F
from tinyfcn import nn
from tinyfcn.datasets import collate, load_split, make_shapes
from tinyfcn.networks.models import (
    Classifier,
    FCN8s,
    FCN16s,
    FCN32s,
    last_map_size,
)
from tinyfcn.networks.surgery import build, convolutionalize, from_classifier, grow
from tinyfcn.ops.gradcheck import sparse_gradient_check
from tinyfcn.training.metrics import confusion_matrix
from tinyfcn.training.optim import AdamW
from tinyfcn.training.train import train_step

SIZES = [(1, 1), (35, 29), (100, 31)]

# every option away from FCN's defaults, with the variants it applies to
OPTIONS = {
    "conv": ([FCN32s, FCN16s, FCN8s], dict(downsample="conv")),
    "unpool": ([FCN32s], dict(upsample="unpool")),
    "concat": ([FCN16s, FCN8s], dict(fusion="concat")),
    "conv+concat": ([FCN8s], dict(downsample="conv", fusion="concat")),
    "fc6-2x2": ([FCN32s, FCN8s], dict(fc6_kernel=2, fc6_padding=1)),
}
CASES = [(name, cls) for name, (classes, _) in OPTIONS.items() for cls in classes]


def _vgg16(options):
    config = {**VGG16, **options}
    if options.get("upsample") == "unpool":
        config["fc6_padding"] = 3                                    # the decoder needs fc6 to keep pool5's size
    return config


# the VGG16 settings fix fc6 at 7x7, so the fc6 option runs with the tiny settings only
SIZE_CASES = [(name, cls, vgg) for name, cls in CASES for vgg in (False, True)
              if not (vgg and "fc6_kernel" in OPTIONS[name][1])]


@pytest.mark.parametrize("name,cls,vgg", SIZE_CASES,
                         ids=[f"{'vgg16-settings' if v else 'tiny'}-{n}-{c.__name__}" for n, c, v in SIZE_CASES])
def test_every_option_takes_any_input_size(name, cls, vgg):
    options = OPTIONS[name][1]
    assert_any_size_in_same_size_out(cls(3, **(_vgg16(options) if vgg else {**TINY, **options})), SIZES)


def test_crop_offsets_come_from_the_coordinate_maps():
    # stride-2 convolutions sample at even pixels: the (2s-1)-tap upsampling lands s - 1 pixels early
    assert crop_offsets(FCN8s(3, **TINY, downsample="conv")) == {"upscore2c": (1, 1), "upscore_pool4c": (1, 1),
                                                            "score": (7, 7)}
    assert crop_offsets(FCN8s(3, **VGG16, fusion="concat")) == {"pool4c": (5, 5), "pool3c": (9, 9), "score": (31, 31)}
    assert crop_offsets(FCN32s(3, **_vgg16(dict(upsample="unpool")))) == {"score": (99, 99)}   # conv1_1's padding
    conv = FCN32s(3, **TINY, downsample="conv")
    assert conv.layers["upscore"].params["weight"].shape[2:] == (63, 63)
    assert isinstance(conv.layers["pool3_conv"], nn.Conv2d) and conv.layers["pool3_conv"].stride == (2, 2)


@pytest.mark.parametrize("cls,options,size", [
    (FCN8s, dict(downsample="conv"), (35, 29)),
    (FCN32s, dict(upsample="unpool"), (35, 29)),
    (FCN8s, dict(fusion="concat"), (35, 29)),
    (FCN16s, dict(downsample="conv", fusion="concat"), (33, 30)),
    (FCN8s, dict(fc6_kernel=2, fc6_padding=1), (35, 29)),
], ids=["conv", "unpool", "concat", "conv+concat-16s", "fc6-2x2"])
def test_whole_network_gradient_check(cls, options, size):
    model = cls(3, **TINY, **options, learn_upsampling=True, dropout=0.3, dtype=np.float64)
    randomize(model, 1)
    worst = whole_network_errors(model, size)
    assert max(worst.values()) < 1e-5, {k: v for k, v in worst.items() if v >= 1e-5}


def _run_without(model, x, skipped, rewire):
    """Run ``model``'s nodes on x, leaving out ``skipped`` and reading ``rewire[node]`` maps instead."""
    maps = {"input": x}
    for name, layer in model.layers.items():
        if name not in skipped:
            maps[name] = layer.forward(*(maps[s] for s in rewire.get(name, model.sources[name])))
    return maps[model.output]


def test_grown_concat_fusion_starts_as_the_coarser_network():
    x = np.random.default_rng(0).standard_normal((1, 3, 40, 37)).astype(np.float32)
    m32 = FCN32s(3, **TINY, fusion="concat", seed=5)
    randomize(m32, 6)
    m16 = grow(m32, "fcn16s").eval()
    K, C4 = 3, TINY["widths"][3]
    w = m16.params["fuse_pool4.weight"][:, :, 0, 0]
    np.testing.assert_array_equal(w[:, :K], np.eye(K))                  # identity on the upsampled scores
    assert not w[:, K:].any() and w.shape == (K, K + C4)                 # zero on pool4's features
    # FCN-16s at step 0: upscore16(upscore2(score_fr)), with pool4 read by nothing
    coarse = _run_without(m16, x, {"pool4c", "cat_pool4", "fuse_pool4"}, {"upscore16": ("upscore2c",)})
    np.testing.assert_allclose(m16.forward(x), coarse, rtol=1e-6, atol=1e-6)
    assert np.abs(coarse).max() > 0.1
    randomize(m16, 7)                                                  # a trained FCN-16s, fusion no longer the identity
    m8 = grow(m16, "fcn8s").eval()
    np.testing.assert_array_equal(m8.params["fuse_pool4.weight"], m16.params["fuse_pool4.weight"])
    coarse = _run_without(m8, x, {"pool3c", "cat_pool3", "fuse_pool3"}, {"upscore8": ("upscore_pool4c",)})
    np.testing.assert_allclose(m8.forward(x), coarse, rtol=1e-5, atol=1e-5)
    assert np.abs(coarse).max() > 0.1


@pytest.mark.parametrize("options", [dict(downsample="conv"), dict(upsample="unpool", arch=FCN32s),
                                     dict(fusion="concat"), dict(downsample="conv", fusion="concat"),
                                     dict(upsample="unpool", norm="batch", arch=FCN32s)],
                         ids=["conv", "unpool", "concat", "conv+concat", "unpool+batch-norm"])
def test_options_round_trip_through_checkpoints(options, tmp_path):
    from tinyfcn.training.checkpoint import load_model, save_checkpoint
    options = dict(options)
    cls = options.pop("arch", FCN8s)
    model = cls(3, **TINY, **options, seed=1)
    randomize(model, 2)
    save_checkpoint(tmp_path / "m.npz", model)
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.config == model.config and all(loaded.config[k] == v for k, v in options.items())
    x = np.random.default_rng(3).standard_normal((1, 3, 35, 29)).astype(np.float32)
    np.testing.assert_array_equal(loaded.forward(x), model.eval().forward(x))
    assert isinstance(build(model.config), cls)


def test_a_checkpoint_config_without_the_switches_is_fcns_design():
    config = FCN8s(3, **TINY).config
    old = {k: v for k, v in config.items() if k not in ("downsample", "upsample", "fusion", "norm")}
    assert build(old).config == config


@pytest.mark.parametrize("cls,options,message", [
    (FCN32s, dict(downsample="conv", upsample="unpool"), "upsample='unpool' needs downsample='pool'"),
    (FCN8s, dict(upsample="unpool"), "upsample='unpool' is a decoder of its own .* fcn32s option"),
    (FCN32s, dict(upsample="unpool", fc6_kernel=7, fc6_padding=0), "fc6 must keep pool5's size"),
    (FCN8s, dict(downsample="conv", upsample_padding=True), "needs upsample_padding=False"),
    (FCN8s, dict(fusion="product"), "fusion must be one of 'sum', 'concat', got 'product'"),
    (FCN16s, dict(downsample="stride"), "downsample must be one of 'pool', 'conv'"),
    (FCN8s, dict(upsample="bilinear"), "upsample must be one of 'transposed', 'unpool'"),
    (FCN8s, dict(norm="group"), "norm must be one of 'none', 'batch', got 'group'"),
])
def test_bad_combinations_are_one_clear_sentence(cls, options, message):
    with pytest.raises(ValueError, match=message) as info:
        cls(3, **TINY, **options)
    assert len(str(info.value).splitlines()) == 1


# ---------------------------------------------------------------- convolutionalization


def _classifier(dtype=np.float32, crop_size=48, **kwargs):
    model = Classifier(4, **TINY, crop_size=crop_size, dtype=dtype, **kwargs)
    randomize(model, 0)
    return model.eval()


def test_linear_and_flatten():
    layer = nn.Linear(6, 2, dtype=np.float64, rng=np.random.default_rng(0))
    assert layer.params["weight"].shape == (2, 6) and layer.params["bias"].shape == (2,)
    x = np.random.default_rng(1).standard_normal((3, 6))
    np.testing.assert_allclose(layer.forward(x), x @ layer.params["weight"].T)
    with pytest.raises(ValueError, match=r"expected an input of shape \(N, 6\)"):
        layer.forward(np.ones((3, 5)))
    flat = nn.Flatten()
    y = np.arange(24.0).reshape(2, 3, 2, 2)
    assert flat.forward(y).shape == (2, 12) and flat.backward(flat.forward(y)).shape == y.shape


@pytest.mark.parametrize("downsample", ["pool", "conv"])
@pytest.mark.parametrize("crop_size", [32, 48, 80])
def test_convolutionalized_classifier_gives_the_logits_on_a_crop_and_a_map_elsewhere(downsample, crop_size):
    clf = _classifier(crop_size=crop_size, downsample=downsample)
    k = last_map_size(crop_size)
    net = convolutionalize(clf)
    assert net.params["fc6.weight"].shape == (TINY["fc_width"], TINY["widths"][-1], k, k)
    assert net.params["score.weight"].shape == (4, TINY["fc_width"], 1, 1)
    x = np.random.default_rng(1).standard_normal((3, 3, crop_size, crop_size)).astype(np.float32)
    logits = clf.forward(x)
    scores = net.forward(x)
    assert scores.shape == (3, 4, 1, 1)
    np.testing.assert_allclose(scores[:, :, 0, 0], logits, rtol=1e-5, atol=1e-5 * np.abs(logits).max())
    assert np.abs(logits).max() > 0.1
    big = net.forward(np.zeros((1, 3, 150, 101), np.float32))
    assert big.shape == (1, 4, last_map_size(150) - k + 1, last_map_size(101) - k + 1)
    with pytest.raises(ValueError, match="convolutionalize"):
        clf.forward(np.zeros((1, 3, crop_size + 1, crop_size), np.float32))


def test_classifier_gradient_check_and_checkpoint_round_trip(tmp_path):
    from tinyfcn.training.checkpoint import load_model, save_checkpoint
    clf = Classifier(3, **TINY, crop_size=40, dropout=0.3, dtype=np.float64).train()
    randomize(clf, 1)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((3, 3, 40, 40)), rng.integers(0, 3, (3, 1, 1))
    state = clf.rng.bit_generator.state

    def loss(_):
        clf.rng.bit_generator.state = state
        return F.softmax_cross_entropy(clf.forward(x)[:, :, None, None], y)[0]

    clf.rng.bit_generator.state = state
    _, d = F.softmax_cross_entropy(clf.forward(x)[:, :, None, None], y)
    dx = clf.backward(d[:, :, 0, 0])
    assert set(clf.grads) == set(clf.params)
    worst = {k: sparse_gradient_check(loss, p, clf.grads[k], num_checks=6, seed=3) for k, p in clf.params.items()}
    worst["input"] = sparse_gradient_check(loss, x, dx, num_checks=10, seed=4)
    assert max(worst.values()) < 1e-5, worst
    clf32 = _classifier(crop_size=40)
    save_checkpoint(tmp_path / "c.npz", clf32)
    loaded = load_model(tmp_path / "c.npz")
    assert isinstance(loaded, Classifier) and loaded.config == clf32.config
    crops = rng.standard_normal((2, 3, 40, 40)).astype(np.float32)
    np.testing.assert_array_equal(loaded.forward(crops), clf32.forward(crops))


@pytest.mark.parametrize("arch", ["fcn32s", "fcn8s"])
def test_an_fcn_started_from_the_classifier_computes_its_score_map(arch):
    clf = _classifier(crop_size=48)                                     # pool5 is 2x2: fc6 becomes 2x2, padded by 1
    model = from_classifier(clf, arch).eval()
    assert model.config["fc6_kernel"] == 2 and model.config["fc6_padding"] == 1
    np.testing.assert_array_equal(model.params["conv3_2.weight"], clf.params["conv3_2.weight"])
    np.testing.assert_array_equal(model.params["score_fr.weight"][:, :, 0, 0], clf.params["score.weight"])
    x = np.random.default_rng(4).standard_normal((1, 3, 100, 131)).astype(np.float32)
    coarse = convolutionalize(clf).forward(x)
    trunk = list(model.layers)[:list(model.layers).index("score_fr") + 1]
    h = x
    for name in trunk:
        h = model.layers[name].forward(h)
    # the FCN's fc6 is padded by 1, so its score map holds the classifier's map with a border
    np.testing.assert_allclose(h[:, :, 1:-1, 1:-1], coarse, rtol=1e-5, atol=1e-5)
    assert model.forward(x).shape == (1, 4, 100, 131)
    with pytest.raises(ValueError, match="downsample comes from the classifier"):
        from_classifier(clf, arch, downsample="conv")


def test_heatmap_figure(tmp_path):
    from tinyfcn import viz
    clf = _classifier(crop_size=32)
    net = convolutionalize(clf)
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    from tinyfcn.datasets import normalize
    scores = net.forward(normalize(image)[None])[0]
    assert scores.shape == (4, 3, 4)
    np.testing.assert_array_equal(net.coords["score"][0], [32, 32])   # one score per 32 input pixels
    viz.plot_heatmap(image, scores, net.coords["score"], ["bg", "a", "b", "c"], tmp_path / "heat.png")
    assert (tmp_path / "heat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def tiny_digits(tmp_path_factory):
    from tinyfcn import datasets
    return datasets.make_dataset("digits", tmp_path_factory.mktemp("design") / "digits", 6, 3, 0, size=(40, 48))


def test_cli_model_options_are_stored_and_shown(tiny_digits, tmp_path, capsys):
    from tinyfcn.cli import main
    from tinyfcn.training.checkpoint import load_checkpoint
    fast = ["--epochs", "1", "--batch-size", "3", "--quiet"]
    assert main(["train", "--data", str(tiny_digits), "--model", "fcn8s", "--downsample", "conv", "--fusion", "concat",
                 "--out", str(tmp_path / "a"), *fast]) == 0
    config = load_checkpoint(tmp_path / "a" / "best.npz")["meta"]["config"]
    assert (config["downsample"], config["upsample"], config["fusion"]) == ("conv", "transposed", "concat")
    assert main(["train", "--data", str(tiny_digits), "--model", "fcn32s", "--upsample", "unpool",
                 "--out", str(tmp_path / "b"), *fast]) == 0
    assert load_checkpoint(tmp_path / "b" / "last.npz")["meta"]["config"]["upsample"] == "unpool"
    capsys.readouterr()
    assert main(["summary", "--model", "fcn8s", "--downsample", "conv", "--fusion", "concat", "--size", "35", "29"]) == 0
    out = capsys.readouterr().out
    assert "(downsample=conv, upsample=transposed, fusion=concat, norm=none)" in out and "cat_pool3" in out
    assert "pool4_conv" in out and "(1, 4, 35, 29)" in out


@pytest.mark.parametrize("argv,message", [
    (["summary", "--model", "fcn8s", "--upsample", "unpool"], "fcn32s option"),
    (["summary", "--model", "fcn32s", "--upsample", "unpool", "--downsample", "conv"], "needs downsample='pool'"),
    (["summary", "--model", "fcn32s", "--upsample", "unpool", "--fc6-kernel", "2"], "fc6 must keep pool5's size"),
    (["train", "--model", "fcn16s", "--upsample", "unpool"], "fcn32s option"),
])
def test_cli_bad_combinations_give_one_line_and_status_2(argv, message, tiny_digits, error_line):
    from tinyfcn.cli import main
    if argv[0] == "train":
        argv = [*argv, "--data", str(tiny_digits)]
    assert main(argv) == 2
    assert message in error_line()


def test_cli_pretrain_then_train_from_the_classifier(tiny_digits, tmp_path, capsys):
    from tinyfcn.cli import main
    from tinyfcn.training.checkpoint import load_checkpoint, load_model
    run = tmp_path / "pre"
    assert main(["pretrain", "--data", str(tiny_digits), "--out", str(run), "--crop-size", "32", "--epochs", "1",
                 "--quiet"]) == 0
    for name in ("classifier.npz", "history.json", "heatmap.png"):
        assert (run / name).stat().st_size > 0, name
    clf = load_model(run / "classifier.npz")
    assert isinstance(clf, Classifier) and clf.config["crop_size"] == 32 and clf.config["num_classes"] == 11
    assert main(["train", "--data", str(tiny_digits), "--model", "fcn8s", "--init", str(run / "classifier.npz"),
                 "--out", str(tmp_path / "ft"), "--epochs", "1", "--batch-size", "3", "--quiet"]) == 0
    config = load_checkpoint(tmp_path / "ft" / "last.npz")["meta"]["config"]
    assert config["arch"] == "fcn8s" and config["fc6_kernel"] == 1 and config["fc6_padding"] == 0
    assert config["learn_upsampling"] and config["norm"] == "none"        # the recipe's upsampling, the classifier's norm
    capsys.readouterr()
    assert main(["train", "--data", str(tiny_digits), "--model", "fcn8s", "--init", str(run / "classifier.npz"),
                 "--downsample", "conv", "--out", str(tmp_path / "x"), "--epochs", "1", "--quiet"]) == 2
    assert "downsample comes from the classifier" in capsys.readouterr().err
    assert main(["train", "--data", str(tiny_digits), "--model", "fcn8s", "--init", str(tmp_path / "ft" / "last.npz"),
                 "--fusion", "concat", "--out", str(tmp_path / "y"), "--epochs", "1", "--quiet"]) == 2
    assert "--fusion concat would change it" in capsys.readouterr().err


def test_the_unpooling_decoder_keeps_the_scale_of_its_signal():
    """He's rule counts a fan-in that is 3/4 zeros after unpooling; the decoder's gain of 2 makes up for it."""
    model = FCN32s(3, upsample="unpool").eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    maps = {"input": x}
    for name, layer in model.layers.items():
        maps[name] = layer.forward(*(maps[s] for s in model.sources[name]))
    rms = {k: np.sqrt((maps[k] ** 2).mean()) for k in ("relu_dec_fr", "relu_dec1")}
    assert 0.5 < rms["relu_dec1"] / rms["relu_dec_fr"] < 2, rms


def test_the_unpooling_decoder_learns_which_object_is_where(tmp_path):
    """The decoder fits eight shapes images, naming each object's class, not only finding it.

    With score_dec at zero, as FCN's score layers start, it finds the objects but labels them all one
    class (after these 400 steps too; notebook 5 shows both): its gradient is score_dec's weight
    (transposed) times the score gradient, so equal rows for the object classes ask the decoder to
    carry "object here", not which object. 400 steps at lr 5e-3 (1000 at 1e-3 before: 2.5x the time)
    pass with the model seeded 0 to 4 (every object class given, trace 0.999-1.000); with score_dec
    at zero, 0.63 and one class unused.
    """
    split = load_split(make_shapes(tmp_path / "shapes", n_train=8, n_val=1, seed=0), "train")
    x, y = collate([split[i] for i in range(len(split))])
    model = FCN32s(4, upsample="unpool", norm="batch", dropout=0.0, seed=0, widths=(8, 16, 32, 64, 64), fc_width=128)
    optimizer = AdamW(model.params, lr=5e-3, weight_decay=1e-4)
    for _ in range(400):
        train_step(model, nn.SoftmaxCrossEntropy(), optimizer, x, y)
    objects = confusion_matrix(y, model.predict(x), 4)[1:, 1:]        # true object class x predicted object class
    assert np.trace(objects) / objects.sum() > 0.9, objects              # each found object given its own class
    assert (objects.sum(axis=0) / objects.sum()).min() > 0.1, objects    # all three classes in use
