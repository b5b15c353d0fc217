"""SGD, schedules, fit (determinism, exact resume, Ctrl-C, NaN guard), checkpoints, evaluation, sanity check."""
import json
import os
import signal

import numpy as np
import pytest
from interrupting import InterruptAt

from tinyfcn import datasets
from tinyfcn.cli import SANITY_FOREGROUND
from tinyfcn.networks.models import FCN8s, FCN16s, FCN32s
from tinyfcn.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from tinyfcn.training.metrics import ConfusionMatrix
from tinyfcn.training.optim import SGD, poly, step_decay
from tinyfcn.training.train import TrainingError, evaluate, fit, sanity_check

SMALL = dict(widths=(4, 4, 8, 8, 8), fc_width=8)
PAPER_OPTIMIZER = {"recipe": "paper"}
"""fit's options that select the FCN paper's SGD (tinyfcn 0.1 trained with nothing else)."""


@pytest.fixture(scope="module")
def easy_splits(tmp_path_factory):
    """The train and val splits of an easy shapes dataset (10 / 4 images of 32 x 32), loaded."""
    root = datasets.make_shapes(tmp_path_factory.mktemp("shapes"), n_train=10, n_val=4, seed=0, size=32, level="easy")
    return datasets.load_split(root, "train"), datasets.load_split(root, "val")


def weights(model):
    return {k: v.copy() for k, v in model.params.items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ---------------------------------------------------------------- optimizer


def test_sgd_follows_the_update_rule_in_place():
    w = np.array([1.0, -2.0])
    frozen = np.array([3.0])
    opt = SGD({"w": w, "frozen": frozen}, lr=0.1, momentum=0.9, weight_decay=0.01)
    g1, g2 = np.array([0.5, 0.5]), np.array([-1.0, 2.0])
    opt.step({"w": g1})
    v = g1 + 0.01 * np.array([1.0, -2.0])
    expected = np.array([1.0, -2.0]) - 0.1 * v
    np.testing.assert_allclose(w, expected)
    opt.step({"w": g2})
    v = 0.9 * v + g2 + 0.01 * expected
    np.testing.assert_allclose(w, expected - 0.1 * v)
    assert frozen[0] == 3.0                                           # no gradient, no update
    nesterov = SGD({"w": np.array([1.0])}, lr=0.1, momentum=0.5, weight_decay=0, nesterov=True)
    nesterov.step({"w": np.array([1.0])})
    np.testing.assert_allclose(nesterov.params["w"], [1.0 - 0.1 * (1.0 + 0.5 * 1.0)])
    with pytest.raises(ValueError, match="momentum"):
        SGD({"w": w}, lr=0.1, momentum=1.0)


def test_caffe_bias_rule_doubles_lr_and_skips_decay_for_biases_only():
    w, b = np.array([1.0]), np.array([1.0])
    opt = SGD({"conv.weight": w, "conv.bias": b}, lr=0.1, momentum=0, weight_decay=0.5, bias_lr_mult=2,
              bias_decay_mult=0)
    opt.step({"conv.weight": np.array([1.0]), "conv.bias": np.array([1.0])})
    np.testing.assert_allclose(w, [1.0 - 0.1 * (1.0 + 0.5 * 1.0)])
    np.testing.assert_allclose(b, [1.0 - 0.2 * 1.0])
    with pytest.raises(ValueError, match="bias_lr_mult=-1"):
        SGD({"w": w}, lr=0.1, bias_lr_mult=-1)


def test_the_loss_scale_lesson_states_the_right_factors():
    """Every row of the table in tinyfcn.training.optim: effective step = lr * P / (1 - beta) (sum) or lr / (1 - beta) (mean)."""
    import tinyfcn.training.optim
    rows = [line.split() for line in tinyfcn.training.optim.__doc__.splitlines() if " sum " in line or " mean " in line]
    assert len(rows) == 5
    reference = 1e-10 * 187_500 / (1 - 0.99)
    for row in rows:
        loss = "sum" if "sum" in row else "mean"
        lr, beta = float(row[row.index(loss) + 1]), float(row[row.index(loss) + 2])
        step = lr * (187_500 if loss == "sum" else 1) / (1 - beta)
        assert step == pytest.approx(float(row[-2]), rel=0.03), row
        assert step / reference == pytest.approx(float(row[-1].rstrip("x")), rel=0.02), row


def test_sgd_state_round_trip():
    params = {"w": np.ones(3)}
    opt = SGD(params, lr=0.1)
    opt.step({"w": np.ones(3)})
    other = SGD({"w": np.ones(3)}, lr=0.1)
    other.load_state_dict(opt.state_dict())
    np.testing.assert_array_equal(other.velocity["w"], opt.velocity["w"])
    with pytest.raises(ValueError, match="'w'"):
        other.load_state_dict({"w": np.ones(2)})


def test_schedules():
    assert poly(0.1, 0, 100) == 0.1 and poly(0.1, 100, 100) == 0.0
    assert poly(0.1, 50, 100) == pytest.approx(0.1 * 0.5 ** 0.9)
    assert step_decay(1.0, 29, 90) == 1.0 and step_decay(1.0, 30, 90) == pytest.approx(0.1)
    assert step_decay(1.0, 65, 90) == pytest.approx(0.01)


# ---------------------------------------------------------------- fit


def test_same_seed_same_run_and_a_different_seed_differs(easy_splits):
    train, val = easy_splits
    runs = []
    for seed in (0, 0, 1):
        model = FCN8s(4, **SMALL, seed=0)
        history = fit(model, train, val, epochs=2, batch_size=4, lr=0.05, seed=seed, augment=True, progress=False)
        runs.append((weights(model), history))
    assert_same_weights(runs[0][0], runs[1][0])
    assert runs[0][1]["train_loss"] == runs[1][1]["train_loss"]
    assert not np.array_equal(runs[0][0]["conv1_1.weight"], runs[2][0]["conv1_1.weight"])
    history = runs[0][1]
    assert history["epoch"] == [1, 2] and len(history["val_mean_iou"]) == 2
    assert all(0 <= v <= 1 for v in history["val_pixel_accuracy"])


def test_resume_continues_exactly(easy_splits, tmp_path):
    train, val = easy_splits
    # constant lr: a poly or step schedule depends on the total length, so "1 epoch" would differ
    settings = dict(batch_size=3, lr=0.05, seed=3, augment=True, schedule="constant", progress=False)
    straight = FCN16s(4, **SMALL, seed=1)
    fit(straight, train, val, epochs=2, out=tmp_path / "a", **settings)
    stopped = FCN16s(4, **SMALL, seed=1)
    fit(stopped, train, val, epochs=1, out=tmp_path / "b", **settings)
    resumed = FCN16s(4, **SMALL, seed=99)                            # the checkpoint overrides everything
    history = fit(resumed, train, val, epochs=2, out=tmp_path / "b", resume=True, **settings)
    assert_same_weights(weights(straight), weights(resumed))
    assert history["epoch"] == [1, 2]
    saved = json.loads((tmp_path / "b" / "history.json").read_text())
    assert saved["epoch"] == [1, 2] and (tmp_path / "b" / "best.npz").exists()


def test_ctrl_c_saves_mid_epoch_and_resume_is_exact(easy_splits, tmp_path):
    train, val = easy_splits
    settings = dict(batch_size=3, lr=0.05, seed=4, progress=False, recipe="paper")
    straight = FCN8s(4, **SMALL, seed=2)
    fit(straight, train, val, epochs=2, **settings)
    interrupted = FCN8s(4, **SMALL, seed=2)
    with pytest.raises(KeyboardInterrupt, match="interrupted at step"):
        fit(interrupted, InterruptAt(train, 15), val, epochs=2, out=tmp_path, **settings)   # mid epoch 2
    meta = load_checkpoint(tmp_path / "last.npz")["meta"]
    assert meta["epoch"] == 1 and 0 < meta["position"] < len(train)
    resumed = FCN8s(4, **SMALL, seed=2)
    fit(resumed, train, val, epochs=2, out=tmp_path, resume=True, **settings)
    assert_same_weights(weights(straight), weights(resumed))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # the handler is put back


@pytest.mark.filterwarnings("ignore::RuntimeWarning")      # numpy's overflow warnings on the way to inf
def test_nan_stops_training_and_keeps_the_last_good_checkpoint(easy_splits, tmp_path):
    train, val = easy_splits
    model = FCN8s(4, **SMALL, seed=0)
    fit(model, train, val, epochs=1, batch_size=5, lr=0.01, out=tmp_path, progress=False)
    good = (tmp_path / "last.npz").read_bytes()
    with pytest.raises(TrainingError, match=r"diverged at step \d+ \(epoch 2\).*last good state"):
        fit(model, train, val, epochs=3, batch_size=5, lr=1e12, out=tmp_path, resume=True, progress=False)
    assert (tmp_path / "last.npz").read_bytes() == good


def test_sanity_check_overfits_a_few_images(tmp_path):
    root = datasets.make_shapes(tmp_path, n_train=2, n_val=1, seed=0, size=64)
    model = FCN8s(4, widths=(8, 8, 16, 16, 16), fc_width=32, seed=0)
    # lr 0.05 sat at the edge of stability: float32 rounding (e.g. the order of a matrix
    # product's sums) decided whether the run diverged. At 0.02-0.04 every variant converges.
    result = sanity_check(model, datasets.load_split(root, "train"), images=2, steps=300, lr=0.03)
    assert result["initial_loss"] == pytest.approx(np.log(4), rel=1e-6)   # zero score layers: uniform softmax
    assert result["pixel_accuracy"] > 0.95 and result["final_loss"] < 0.1 * result["initial_loss"]
    assert result["foreground_accuracy"] > SANITY_FOREGROUND             # so `train --sanity` would pass it too
    assert model.training                                               # left in the caller's mode
    sanity_check(model.eval(), datasets.load_split(root, "train"), images=1, steps=1)
    assert not model.training


def test_evaluate_matches_a_hand_accumulated_confusion_matrix(easy_splits):
    _, val = easy_splits
    model = FCN32s(4, **SMALL, seed=0)
    model.params["score_fr.bias"][...] = [0.0, 1.0, 0.0, 0.0]         # predicts class 1 everywhere
    result = evaluate(model, val, batch_size=3)
    cm = ConfusionMatrix(4)
    for image, label in val:
        cm.update(label, np.ones_like(label))
    np.testing.assert_array_equal(result["confusion"], cm.matrix)
    assert result["mean_iou"] == pytest.approx(cm.scores()["mean_iou"])
    assert model.training                                              # evaluate restores the mode


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_and_no_temp_files(tmp_path):
    model = FCN16s(3, **SMALL, seed=0)
    opt = SGD(model.params, lr=0.1)
    opt.velocity["fc6.weight"][...] = 0.5
    save_checkpoint(tmp_path / "m.npz", model, opt, epoch=3, note="hi")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]
    loaded = load_checkpoint(tmp_path / "m.npz")
    assert loaded["meta"]["epoch"] == 3 and loaded["meta"]["config"]["arch"] == "fcn16s"
    assert (loaded["optim"]["fc6.weight"] == 0.5).all()
    restored = load_model(tmp_path / "m.npz")
    assert isinstance(restored, FCN16s) and not restored.training
    assert_same_weights(weights(model), weights(restored))


def test_bad_checkpoints_give_clear_errors(tmp_path):
    model = FCN8s(4, **SMALL)
    save_checkpoint(tmp_path / "good.npz", model)
    raw = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "garbage.npz").write_bytes(b"not a checkpoint at all")
    np.savez(tmp_path / "foreign.npz", weights=np.ones(3))
    np.savez(tmp_path / "pickled.npz", meta=np.array([{"a": 1}], dtype=object))
    cases = {"missing.npz": "does not exist", "truncated.npz": "truncated or corrupt", "garbage.npz": "truncated or corrupt",
             "foreign.npz": "not a tinyfcn checkpoint", "pickled.npz": "not a tinyfcn checkpoint: it holds pickled"}
    for name, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            load_model(tmp_path / name)
    (tmp_path / "last.npz").write_bytes(raw)
    tiny = datasets.Dataset([np.zeros((8, 8, 3), np.uint8)], [np.zeros((8, 8), np.uint8)], ["a"], list("abcd"))
    with pytest.raises(CheckpointError, match="holds an fcn8s model, not an fcn32s"):
        fit(FCN32s(4, **SMALL), tiny, tiny, epochs=1, out=tmp_path, resume=True, progress=False)


# ---------------------------------------------------------------- the same training, release to release


def _blas_architecture():
    from threadpoolctl import threadpool_info
    return next(i.get("architecture") for i in threadpool_info() if i["user_api"] == "blas")


def test_the_paper_recipe_trains_to_the_same_weights_as_version_0_1(tmp_path):
    """tests/data/sgd-run-v0.1.npz holds the weights of this run made by tinyfcn 0.1 (before the
    one-step refactor): SGD 0.03 poly, momentum 0.9, weight decay 5e-4, flips and crops, 2 epochs.
    Refactoring must not move a bit of them. A BLAS running other kernels (AVX2 against AVX-512)
    sums the matrix products in another order, so there the weights agree to float32 rounding only."""
    reference = np.load(os.path.join(os.path.dirname(__file__), "data", "sgd-run-v0.1.npz"))
    root = datasets.make_shapes(tmp_path, n_train=12, n_val=4, seed=0, size=32, level="easy")
    train, val = datasets.load_split(root, "train"), datasets.load_split(root, "val")
    model = FCN8s(4, widths=(4, 4, 8, 8, 8), fc_width=8, seed=0)
    fit(model, train, val, epochs=2, batch_size=4, lr=0.03, momentum=0.9, weight_decay=5e-4, schedule="poly",
        augment=True, crop=28, seed=0, progress=False, verbose=False, **PAPER_OPTIMIZER)
    same_kernels = str(reference["blas_architecture"]) == _blas_architecture()
    for k, v in model.params.items():
        if same_kernels:
            np.testing.assert_array_equal(v, reference[f"model/{k}"], err_msg=k)
        else:
            np.testing.assert_allclose(v, reference[f"model/{k}"], rtol=1e-4, atol=1e-6, err_msg=k)


def test_boundary_accuracy_does_not_depend_on_the_batching(tmp_path):
    """Batches pad smaller images with the ignore label; the band must not see that padding as an edge."""
    big = datasets.load_split(datasets.make_shapes(tmp_path / "a", n_train=5, n_val=1, seed=0, size=48), "train")
    small = datasets.load_split(datasets.make_shapes(tmp_path / "b", n_train=5, n_val=1, seed=1, size=(40, 32)),
                                "train")
    mixed = datasets.Dataset(big.images + small.images, big.labels + small.labels,
                             [f"{i}" for i in range(10)], big.classes)
    order = [0, 5, 1, 6, 2, 7, 3, 8, 4, 9]                             # two sizes in every batch
    mixed = datasets.Dataset([mixed.images[i] for i in order], [mixed.labels[i] for i in order],
                             [mixed.names[i] for i in order], mixed.classes)
    model = FCN8s(4, **SMALL, seed=3)
    one, eight = evaluate(model, mixed, batch_size=1), evaluate(model, mixed, batch_size=8)
    assert one["boundary_accuracy"] == eight["boundary_accuracy"]
    assert one["mean_iou"] == pytest.approx(eight["mean_iou"]) and one["loss"] == pytest.approx(eight["loss"])
