"""Recipes and what they set: the optimizer by name, warm-up, class weights, input normalization, the run's
config, and the instruments (gradient norms, update ratios, dead ReLUs, collapse) with their warnings."""
import json

import numpy as np
import pytest
from interrupting import InterruptAt

from tinyfcn import datasets, nn, viz
from tinyfcn.cli import main
from tinyfcn.datasets.statistics import channel_mean_std, median_frequency_weights
from tinyfcn.networks.graph import Sequential
from tinyfcn.networks.models import FCN8s
from tinyfcn.training import instruments
from tinyfcn.training.checkpoint import load_checkpoint, load_model
from tinyfcn.training.optim import AdamW, constant, poly, warmed_up
from tinyfcn.training.recipes import RECIPES, settings
from tinyfcn.training.train import TrainingWarning, evaluate, fit

SMALL = dict(widths=(4, 4, 8, 8, 8), fc_width=8)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = datasets.make_shapes(tmp_path_factory.mktemp("shapes"), n_train=12, n_val=4, seed=0, size=32, level="easy")
    return root, datasets.load_split(root, "train"), datasets.load_split(root, "val")


def test_a_recipe_fills_in_what_is_left_out():
    assert settings("paper")["optimizer"] == "sgd" and settings("paper", lr=0.5)["lr"] == 0.5
    assert settings("paper", lr=None)["lr"] == RECIPES["paper"]["lr"]
    with pytest.raises(ValueError, match="unknown recipe 'cake': choose one of default, paper"):
        settings("cake")


def test_warm_up_is_linear_and_composes_with_any_schedule():
    rate = warmed_up(constant, 4)
    assert [rate(1.0, s, 100) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    rate = warmed_up(poly, 2)
    assert rate(1.0, 0, 10) == pytest.approx(0.5) and rate(1.0, 5, 10) == pytest.approx(poly(1.0, 5, 10))
    assert warmed_up(poly, 0) is poly


def test_fit_with_adamw_records_its_settings_and_resumes_exactly(shapes, tmp_path):
    _, train, val = shapes
    options = dict(epochs=2, batch_size=4, optimizer="adamw", lr=2e-3, weight_decay=1e-4, warmup_epochs=0.5,
                   schedule="constant",                                 # the same rates in a 1- and a 2-epoch run
                   class_weights="median-frequency", normalization="dataset", progress=False, verbose=False)
    straight = FCN8s(4, **SMALL, seed=1)
    history = fit(straight, train, val, **options)
    assert history["train_loss"][-1] < history["train_loss"][0]
    once = FCN8s(4, **SMALL, seed=1)
    fit(once, train, val, **{**options, "epochs": 1}, out=tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["optimizer"] == "adamw" and config["warmup_epochs"] == 0.5
    np.testing.assert_allclose(config["class_weights"], median_frequency_weights(train))
    np.testing.assert_allclose(config["normalization"], channel_mean_std(train), atol=1e-6)
    assert load_checkpoint(tmp_path / "last.npz")["meta"]["optimizer"] == "adamw"
    resumed = FCN8s(4, **SMALL, seed=1)
    fit(resumed, train, val, **options, out=tmp_path, resume=True)
    for k, v in straight.params.items():
        np.testing.assert_array_equal(v, resumed.params[k], err_msg=k)


def test_the_model_remembers_its_normalization(shapes, tmp_path):
    _, train, val = shapes
    model = FCN8s(4, **SMALL, seed=0)
    history = fit(model, train, val, epochs=1, batch_size=4, normalization="dataset", out=tmp_path, progress=False,
                  verbose=False)
    np.testing.assert_allclose(model.normalization, channel_mean_std(train), atol=1e-6)
    loaded = load_model(tmp_path / "last.npz")
    assert loaded.normalization == model.normalization
    assert evaluate(loaded, val)["mean_iou"] == pytest.approx(history["val_mean_iou"][-1], abs=1e-12)
    fixed = evaluate(loaded, val, normalization=datasets.FIXED)            # fed the wrong way, it scores otherwise
    assert fixed["loss"] != pytest.approx(history["val_loss"][-1])


def test_bad_settings_are_one_line_errors(shapes):
    _, train, _ = shapes
    model = FCN8s(4, **SMALL)
    for options, message in [(dict(optimizer="rmsprop"), "unknown optimizer 'rmsprop'"),
                             (dict(class_weights="inverse"), "class_weights must be 'none', 'median-frequency'"),
                             (dict(normalization="imagenet"), "normalization must be 'fixed', 'dataset'"),
                             (dict(warmup_epochs=-1), "warmup_epochs must be >= 0"),
                             (dict(schedule="cosine"), "unknown schedule 'cosine'")]:
        with pytest.raises(ValueError, match=message):
            fit(model, train, epochs=1, progress=False, verbose=False, **options)


def _cli_train(root, out, *extra):
    return main(["train", "--data", str(root), "--epochs", "1", "--out", str(out), "--quiet", "--model", "fcn32s",
                 *extra])


@pytest.mark.parametrize("text,message", [
    ("1\n2\n", "the file needs one weight per class, K = 4 lines"),
    ("1\n2\n-3\n4\n", "line 3"),
])
def test_a_bad_class_weights_file_is_one_line_and_writes_nothing(shapes, tmp_path, capsys, text, message):
    root = shapes[0]
    weights = tmp_path / "weights.txt"
    weights.write_text(text)
    assert _cli_train(root, tmp_path / "run", "--class-weights", str(weights)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("tinyfcn train: error:") and message in err
    assert not (tmp_path / "run").exists()


def test_a_class_weights_file_is_used_and_recorded(shapes, tmp_path):
    weights = tmp_path / "weights.txt"
    weights.write_text("# background counts less\n0.5\n1\n1\n2\n")
    assert _cli_train(shapes[0], tmp_path / "run", "--class-weights", str(weights)) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["class_weights"] == [0.5, 1.0, 1.0, 2.0]
    assert (tmp_path / "run" / "diagnostics.png").is_file()


# ---------------------------------------------------------------- instruments


def test_instruments_measure_norms_ratios_and_dead_channels():
    rng = np.random.default_rng(0)
    alive, dead = nn.Conv2d(1, 2, 1, rng=rng, dtype=np.float64), nn.Conv2d(2, 2, 1, rng=rng, dtype=np.float64)
    dead.params["bias"][:] = [-100.0, 0.5]              # channel 0 is negative everywhere: dead
    dead.params["weight"][0] = 0.0
    model = Sequential(alive, nn.ReLU(), dead, nn.ReLU())
    x = rng.standard_normal((3, 1, 4, 4))
    watch = instruments.Instruments(model, x, steps_per_epoch=1)
    w_before = {k: v.copy() for k, v in model.params.items()}
    watch.before_step(0)
    out = model.forward(x)
    model.backward(np.ones_like(out))
    optimizer = AdamW(model.params, lr=0.01, weight_decay=0.0)
    optimizer.step(model.grads)
    watch.after_step()
    record = watch.epoch()
    assert record["grad_norm"]["0"] == pytest.approx(np.linalg.norm(model.grads["0.weight"]))
    expected = np.linalg.norm(model.params["2.weight"] - w_before["2.weight"]) / np.linalg.norm(w_before["2.weight"])
    assert record["update_ratio"]["2"] == pytest.approx(expected)
    assert record["dead_relu"]["3"] == 0.5 and "predicted_share" not in record


def test_instruments_watch_filters_not_batchnorm_scales():
    """BatchNorm's scales start at 1 and move by millionths per step in a healthy run: no 'barely learns' for them."""
    model = FCN8s(4, **SMALL, norm="batch", seed=0)
    watch = instruments.Instruments(model, np.zeros((2, 3, 32, 32), np.float32), steps_per_epoch=1)
    layers = {k.rsplit(".", 1)[0] for k in watch.weights}
    assert {"conv1_1", "fc6", "score_fr"} <= layers and not any(name.startswith("bn") for name in layers)


def test_collapse_is_judged_against_the_true_shares():
    assert instruments.collapsed([0.999, 0.001], [0.95, 0.05]) == 0         # 0.1 % of the 5 % foreground
    assert instruments.collapsed([0.97, 0.03], [0.95, 0.05]) is None
    assert instruments.collapsed([1.0, 0.0], [1.0, 0.0]) is None            # nothing else to find


def test_warnings_name_the_pattern_once_per_run(shapes, tmp_path):
    _, train, val = shapes
    history = {"diagnostics": [
        dict(update_ratio={"conv1_1": 1e-7, "fc6": 0.5}, dead_relu={"relu6": 0.75},
             predicted_share=[1.0, 0, 0, 0], true_share=[0.7, 0.1, 0.1, 0.1])] * 2}
    kinds = dict(instruments.warnings_for(history, ["background", "disk", "triangle", "square"]))
    assert set(kinds) == {"collapse", "slow", "fast", "dead"}
    decayed = dict(history, lr=[1e-3, 1e-3, 5e-5])         # a schedule's last steps are small on purpose
    assert "slow" not in dict(instruments.warnings_for(decayed))
    assert "collapsed to 'background' for 2 epochs" in kinds["collapse"] and "layer conv1_1 (" in kinds["slow"]
    assert "layer fc6" in kinds["fast"] and "relu6" in kinds["dead"]
    model = FCN8s(4, **SMALL, seed=0)
    with pytest.warns(TrainingWarning) as caught:                          # a rate that moves nothing
        fit(model, train, val, epochs=3, batch_size=4, optimizer="sgd", lr=1e-9, progress=False, verbose=False)
    told = [str(w.message) for w in caught]
    assert sum("barely learn" in m for m in told) == 1                   # three slow epochs, one warning
    assert sum("collapsed" in m for m in told) <= 1


def test_the_diagnostics_figure_draws_a_run(shapes, tmp_path):
    _, train, val = shapes
    history = fit(FCN8s(4, **SMALL, seed=0), train, val, epochs=2, batch_size=4, progress=False, verbose=False)
    assert len(history["diagnostics"]) == 2 and history["diagnostics"][0]["grad_norm"]
    fig = viz.plot_diagnostics(history, train.classes, tmp_path / "d.png", title="fcn8s on shapes")
    assert (tmp_path / "d.png").stat().st_size > 10_000 and len(fig.axes) == 6
    assert fig.get_suptitle() == "fcn8s on shapes: diagnostics, 2 epochs"


def test_batch_norm_on_one_value_per_channel_is_one_line_and_writes_nothing(tmp_path, capsys):
    root = datasets.make_shapes(tmp_path / "d", n_train=4, n_val=2, seed=0, size=16)      # fc6 sees 1 x 1 maps
    assert main(["train", "--data", str(root), "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet",
                 "--norm", "batch", "--batch-size", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "needs more than one value per channel" in err and "batch larger than 1" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv,message", [
    (["train", "--norm", "group"], "tinyfcn train: error: argument --norm: invalid choice: 'group' (choose from "
                                   "'none', 'batch'); see tinyfcn train --help"),
    (["train", "--optimizer", "rmsprop"], "tinyfcn train: error: argument --optimizer: invalid choice: 'rmsprop'"),
    (["frobnicate"], "tinyfcn: error: argument COMMAND: invalid choice: 'frobnicate'"),
])
def test_a_mistyped_option_is_one_line_and_status_2(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith(message)


def test_a_batchnorm_fcn8s_resumed_after_a_kill_ends_with_the_weights_of_a_straight_run(shapes, tmp_path):
    """The default recipe's networks: BatchNorm's running statistics and AdamW's moments are part of
    the state a checkpoint holds, so a run stopped mid-epoch and resumed ends bit for bit where a
    straight run does (weights and running statistics)."""
    _, train, val = shapes
    settings = dict(epochs=2, batch_size=4, progress=False, verbose=False, seed=5)   # the default recipe
    straight = FCN8s(4, **SMALL, norm="batch", learn_upsampling=True, seed=2)
    fit(straight, train, val, **settings)
    stopped = FCN8s(4, **SMALL, norm="batch", learn_upsampling=True, seed=2)
    with pytest.raises(KeyboardInterrupt):
        fit(stopped, InterruptAt(train, 30), val, out=tmp_path, **settings)   # reads: 12 for the statistics, 12, then 6
    assert load_checkpoint(tmp_path / "last.npz")["meta"]["epoch"] == 1
    resumed = FCN8s(4, **SMALL, norm="batch", learn_upsampling=True, seed=2)
    fit(resumed, train, val, out=tmp_path, resume=True, **settings)
    assert straight.buffers and set(straight.state_dict()) == set(resumed.state_dict())
    for k, v in straight.state_dict().items():
        np.testing.assert_array_equal(v, resumed.state_dict()[k], err_msg=k)
