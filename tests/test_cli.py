"""The `tinyfcn` command line, run for real (in-process through main(), and once as a subprocess)."""
import inspect
import json
import subprocess
import sys

import pytest

from tinyfcn import datasets
from tinyfcn.cli import build_parser, main
from tinyfcn.training.checkpoint import load_checkpoint
from tinyfcn.training.train import fit

FAST = ["--epochs", "1", "--batch-size", "4", "--quiet"]


def test_data_command_writes_a_loadable_dataset(shapes, tmp_path):
    root = tmp_path / "shapes"
    assert main(["data", "shapes", "--out", str(root), "--n-train", "8", "--n-val", "4", "--size", "32"]) == 0
    train = datasets.load_split(root, "train")
    assert len(train) == 8 and train.images[0].shape == (32, 32, 3) and train.num_classes == 4
    assert len(datasets.load_split(root, "val")) == 4
    same = datasets.load_split(shapes, "train")                 # the shared folder: make_dataset with these settings
    assert all((a == b).all() for a, b in zip(train.images + train.labels, same.images + same.labels))


def test_train_eval_predict_end_to_end(shapes, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(shapes), "--model", "fcn32s", "--out", str(run), *FAST]) == 0
    for name in ("best.npz", "last.npz", "history.json", "curves.png", "predictions.png"):
        assert (run / name).stat().st_size > 0, name
    history = json.loads((run / "history.json").read_text())
    capsys.readouterr()

    assert main(["eval", "--checkpoint", str(run / "best.npz"), "--data", str(shapes), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou", "per_class_iou"}
    assert result["mean_iou"] == pytest.approx(history["val_mean_iou"][-1])       # eval reproduces training's number
    assert main(["eval", "--checkpoint", str(run / "best.npz"), "--data", str(shapes), "--confusion",
                 str(tmp_path / "confusion.png")]) == 0
    assert "mean_iou" in capsys.readouterr().out
    assert (tmp_path / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    images = sorted((shapes / "JPEGImages").iterdir())[:2]
    assert main(["predict", "--checkpoint", str(run / "best.npz"), *map(str, images), "--out", str(tmp_path / "masks"),
                 "--overlay"]) == 0
    mask = datasets.read_mask(tmp_path / "masks" / f"{images[0].stem}.png")
    assert mask.shape == (32, 32) and mask.max() < 4
    assert (tmp_path / "masks" / f"{images[0].stem}_overlay.png").exists()


def test_staged_training_from_the_command_line(shapes, tmp_path):
    assert main(["train", "--data", str(shapes), "--model", "fcn32s", "--out", str(tmp_path / "32s"), *FAST]) == 0
    assert main(["train", "--data", str(shapes), "--model", "fcn16s", "--init", str(tmp_path / "32s" / "best.npz"),
                 "--out", str(tmp_path / "16s"), *FAST]) == 0
    assert main(["train", "--data", str(shapes), "--model", "fcn8s", "--init", str(tmp_path / "16s" / "best.npz"),
                 "--out", str(tmp_path / "8s"), *FAST]) == 0
    c32 = load_checkpoint(tmp_path / "32s" / "best.npz")
    c8 = load_checkpoint(tmp_path / "8s" / "last.npz")
    assert c8["meta"]["config"]["arch"] == "fcn8s"
    assert set(c32["model"]) - set(c8["model"]) == {"upscore.weight"}     # everything else carried over


def test_resume_and_refusing_to_overwrite_a_run(shapes, tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--data", str(shapes), "--model", "fcn32s", "--out", run, "--augment", "--crop", "24",
                 *FAST]) == 0
    capsys.readouterr()
    assert main(["train", "--data", str(shapes), "--model", "fcn32s", "--out", run, *FAST]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--data", str(shapes), "--model", "fcn32s", "--out", run, "--resume", "--epochs", "2",
                 "--batch-size", "4", "--quiet"]) == 0
    assert load_checkpoint(tmp_path / "run" / "last.npz")["meta"]["epoch"] == 2


def test_sanity_mode(shapes, capsys):
    code = main(["train", "--data", str(shapes), "--model", "fcn8s", "--sanity"])
    out = capsys.readouterr().out
    assert "initial loss 1.3863 (log K = 1.3863)" in out and code in (0, 1)


def test_train_command_and_fit_share_their_defaults():
    # the recipe measured in the README; the command line and the Python API must not drift apart
    args = build_parser().parse_args(["train"])
    defaults = inspect.signature(fit).parameters
    for name in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule", "seed"):
        assert getattr(args, name) == defaults[name].default, name


def test_summary_and_gradcheck(capsys):
    assert main(["summary", "--model", "fcn16s", "--size", "37", "53"]) == 0
    out = capsys.readouterr().out
    assert "FCN16s on a 37x53 input" in out and "score_pool4" in out and "(1, 4, 37, 53)" in out


@pytest.mark.parametrize("argv,message", [
    (["train", "--data", "no/such/folder"], "no/such/folder"),
    (["eval", "--checkpoint", "missing.npz", "--data", "."], "does not exist"),
    (["data", "shapes", "--out", "x", "--size", "1", "2", "3"], "--size takes S or H W"),
])
def test_bad_arguments_give_one_line_and_status_2(argv, message, error_line, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in error_line()


def test_wrong_checkpoint_for_the_data(shapes, tmp_path, capsys):
    digits = datasets.make_dataset("digits", tmp_path / "digits", 4, 2, 0)
    run = tmp_path / "run"
    assert main(["train", "--data", str(shapes), "--model", "fcn32s", "--out", str(run), *FAST]) == 0
    capsys.readouterr()
    assert main(["train", "--data", str(digits), "--model", "fcn16s", "--init", str(run / "best.npz"),
                 "--out", str(tmp_path / "x"), *FAST]) == 2
    assert "trained for 4 classes" in capsys.readouterr().err


def test_console_script_and_module_entry_points():
    for command in (["tinyfcn", "--help"], [sys.executable, "-m", "tinyfcn", "train", "--help"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "usage:" in result.stdout
    result = subprocess.run([sys.executable, "-m", "tinyfcn", "frobnicate"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_name_choices_come_from_the_registries():
    from tinyfcn.datasets import DATASETS
    from tinyfcn.networks.models import DOWNSAMPLE, FUSION, MODELS, NORM, UPSAMPLE
    from tinyfcn.training.optim import OPTIMIZERS, SCHEDULES
    from tinyfcn.training.recipes import NORMALIZATIONS, RECIPES
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    choices = {(command, a.dest): set(a.choices) for command, p in commands.items() for a in p._actions if a.choices}
    options = {(command, name): set(values) for command in ("train", "summary")
               for name, values in (("downsample", DOWNSAMPLE), ("upsample", UPSAMPLE), ("fusion", FUSION),
                                    ("norm", NORM))}
    assert choices == {("data", "name"): set(DATASETS), ("train", "model"): set(MODELS),
                       ("train", "schedule"): set(SCHEDULES), ("summary", "model"): set(MODELS),
                       ("train", "optimizer"): set(OPTIMIZERS), ("train", "recipe"): set(RECIPES),
                       ("train", "normalization"): set(NORMALIZATIONS),
                       ("pretrain", "downsample"): set(DOWNSAMPLE), ("pretrain", "norm"): set(NORM), **options}
