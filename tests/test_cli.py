"""The `tinyfcn` command line, run for real: in-process through main(), and as a subprocess where the process
itself is the point (the entry points, a traceback, a closed pipe)."""
import inspect
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinyfcn import datasets
from tinyfcn.cli import build_parser, main
from tinyfcn.training.checkpoint import load_checkpoint, load_model
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


# ---------------------------------------------------------------- what a newcomer meets


def _commands():
    return next(a for a in build_parser()._actions if a.dest == "command").choices


def test_a_bug_inside_tinyfcn_shows_its_traceback_not_a_user_error(monkeypatch):
    # a plain ValueError from deep inside is tinyfcn's fault: it must not read as "error:" with status 2
    from tinyfcn.networks.graph import Graph

    def broken(self):
        raise ValueError("a bug in tinyfcn")
    monkeypatch.setattr(Graph, "table", broken)
    with pytest.raises(ValueError, match="a bug in tinyfcn"):
        main(["summary"])
    code = ("import sys; from tinyfcn.networks.graph import Graph\n"
            "def broken(self): raise ValueError('a bug in tinyfcn')\n"
            "Graph.table = broken\nfrom tinyfcn.cli import main\nsys.exit(main(['summary']))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ValueError: a bug in tinyfcn" in result.stderr
    assert "tinyfcn summary: error:" not in result.stderr


def test_every_option_of_every_command_has_a_help_text():
    parser = build_parser()
    for name, sub in [("tinyfcn", parser), *_commands().items()]:
        for action in sub._actions:
            assert action.help and action.help.strip(), f"{name} {'/'.join(action.option_strings) or action.dest}"


def test_the_shared_options_read_the_same_in_every_command():
    shared = ("--threads", "--skip-bad", "--quiet", "--checkpoint", "--downsample", "--upsample", "--fusion",
              "--fc6-kernel")
    seen = {}
    for name, sub in _commands().items():
        for action in sub._actions:
            for flag in set(action.option_strings) & set(shared):
                seen.setdefault(flag, {})[name] = (action.help, action.default, action.type, action.choices,
                                                   action.required)
    assert set(seen["--threads"]) == {"train", "pretrain", "eval", "predict"}
    assert set(seen["--downsample"]) == {"train", "pretrain", "summary"}
    for flag, by_command in seen.items():
        assert len(set(by_command.values())) == 1, f"{flag} differs between {sorted(by_command)}"


def test_version(capsys):
    from tinyfcn import __version__
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out == f"tinyfcn {__version__}\n"


def test_a_reader_that_closed_the_pipe_ends_the_command_quietly():
    # what `tinyfcn summary | head -1` does once head has its line: the pipe has no reader any more
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run([sys.executable, "-m", "tinyfcn", "summary"], stdout=write, stderr=subprocess.PIPE,
                                text=True, timeout=120)
    finally:
        os.close(write)
    assert result.returncode == 1 and result.stderr == ""


def test_the_thread_banner_comes_once_the_inputs_are_checked(shapes, tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "no-such-folder"), "--threads", "1"]) == 2
    captured = capsys.readouterr()
    assert "computing with" not in captured.out + captured.err
    assert main(["train", "--data", str(shapes), "--model", "fcn32s", "--out", str(tmp_path / "run"), *FAST,
                 "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    banner = [i for i, line in enumerate(lines) if line.startswith("tinyfcn: computing with")]
    assert len(banner) == 1 and lines[banner[0]] == "tinyfcn: computing with 1 thread (--threads)"   # --quiet keeps it
    assert lines[banner[0] - 1].startswith("training fcn32s on") and lines[banner[0] + 1].startswith("epoch 1:")


def test_pretrain_takes_threads_and_says_so(shapes, tmp_path, capsys):
    assert main(["pretrain", "--data", str(shapes), "--out", str(tmp_path / "pre"), "--crop-size", "16",
                 "--epochs", "1", "--quiet", "--threads", "1"]) == 0
    assert "tinyfcn: computing with 1 thread (--threads)" in capsys.readouterr().out.splitlines()


def test_ctrl_c_names_the_command_that_continues_the_run(shapes, tmp_path, monkeypatch, error_line):
    import signal

    import tinyfcn.training.train as train
    real_step, steps = train.train_step, []

    def step_then_ctrl_c(*args):
        steps.append(1)
        if len(steps) == 1:
            signal.raise_signal(signal.SIGINT)               # fit turns it into a flag checked after the step
        return real_step(*args)
    monkeypatch.setattr(train, "train_step", step_then_ctrl_c)
    run = tmp_path / "my run"
    argv = ["train", "--data", str(shapes), "--model", "fcn32s", "--out", str(run), "--crop", "24", *FAST]
    assert main(argv) == 130
    err = error_line()
    head, _, command = err.partition("; continue with: ")
    assert head == f"tinyfcn: interrupted at step 1; saved {run / 'last.npz'}" and "resume" not in head
    words = shlex.split(command)
    assert words[:2] == ["tinyfcn", "train"] and words[-3:] == ["--resume", "--out", str(run)]
    again, given = build_parser().parse_args(words[1:]), build_parser().parse_args(argv)
    assert again.resume and {k: v for k, v in vars(again).items() if k != "resume"} == \
        {k: v for k, v in vars(given).items() if k != "resume"}
    monkeypatch.setattr(train, "train_step", real_step)
    assert main(words[1:]) == 0
    assert load_checkpoint(run / "last.npz")["meta"]["epoch"] == 1


def test_counts_of_one_are_singular(shapes, tmp_path, capsys):
    digits = datasets.make_dataset("digits", tmp_path / "digits", 2, 1, 0, size=24)
    assert main(["data", "shapes", "--out", str(tmp_path / "one"), "--n-train", "1", "--n-val", "1",
                 "--size", "16"]) == 0
    assert "(1 train image, 1 val image)" in capsys.readouterr().out
    run = tmp_path / "run"
    assert main(["train", "--data", str(shapes), "--model", "fcn32s", "--out", str(run), *FAST]) == 0
    capsys.readouterr()
    assert main(["train", "--data", str(digits), "--model", "fcn16s", "--init", str(run / "best.npz"),
                 "--out", str(tmp_path / "x"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "trained for 4 classes and 3 channels, but the data has 11 classes and 1 channel" in err
    assert "1 channels" not in err
    assert main(["eval", "--checkpoint", str(run / "best.npz"), "--data", str(tmp_path / "one")]) == 0
    assert f"on {tmp_path / 'one'} [val], 1 image\n" in capsys.readouterr().out


def _save_model(path, in_channels):
    from tinyfcn.networks.models import FCN32s
    from tinyfcn.training.checkpoint import save_checkpoint
    model = FCN32s(3, in_channels=in_channels, widths=(4, 4, 4, 4, 4), fc_width=8, seed=1)
    for k, v in model.params.items():                       # scores that depend on the input
        v[...] = np.random.default_rng(len(k)).standard_normal(v.shape).astype(v.dtype)
    save_checkpoint(path, model)
    return path


def test_predict_converts_between_grayscale_and_rgb_and_says_so(tmp_path, capsys):
    from PIL import Image
    rng = np.random.default_rng(0)
    rgb, grey = rng.integers(0, 256, (20, 24, 3), np.uint8), rng.integers(0, 256, (20, 24, 1), np.uint8)
    datasets.save_image(tmp_path / "rgb.png", rgb)
    datasets.save_image(tmp_path / "grey.png", grey)
    for channels, image, converted, note in [
            (3, "grey.png", np.repeat(grey, 3, axis=2), "is grayscale; the model takes RGB images: its grey "
                                                         "is copied to the 3 channels"),
            (1, "rgb.png", np.asarray(Image.fromarray(rgb).convert("L"))[:, :, None],
             "is RGB; the model takes grayscale images: converted with Pillow's \"L\" rule (L = 0.299 R + "
             "0.587 G + 0.114 B)")]:
        checkpoint = _save_model(tmp_path / f"model{channels}.npz", channels)
        out = tmp_path / f"masks{channels}"
        assert main(["predict", "--checkpoint", str(checkpoint), str(tmp_path / image), "--out", str(out)]) == 0
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"tinyfcn: note: {tmp_path / image} {note}"], err
        model = load_model(checkpoint)
        want = model.predict(datasets.normalize(converted, model.normalization)[None])[0]
        np.testing.assert_array_equal(datasets.read_mask(out / f"{Path(image).stem}.png"), want)


def test_predict_refuses_what_it_cannot_convert(tmp_path, error_line):
    datasets.save_image(tmp_path / "rgb.png", np.zeros((8, 8, 3), np.uint8))
    checkpoint = _save_model(tmp_path / "model.npz", 2)
    out = tmp_path / "masks"
    assert main(["predict", "--checkpoint", str(checkpoint), str(tmp_path / "rgb.png"), "--out", str(out)]) == 2
    assert error_line() == (f"tinyfcn predict: error: {tmp_path / 'rgb.png'} has 3 channels; the model takes "
                            f"2-channel images (tinyfcn converts only between grayscale and RGB)")
    assert not out.exists()


def test_progress_bars_only_on_a_terminal(shapes, tmp_path, monkeypatch, capsys):
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    with open(tmp_path / "log.txt", "w") as log:            # stderr sent to a file: tinyfcn train 2> log.txt
        monkeypatch.setattr(sys, "stderr", log)
        assert main(["train", "--data", str(shapes), "--model", "fcn32s", "--out", str(tmp_path / "a"),
                     "--epochs", "2", "--batch-size", "2"]) == 0
    assert (tmp_path / "log.txt").read_bytes().count(b"\r") == 0        # bytes: text mode reads \r as \n
    assert capsys.readouterr().out.count("\nepoch ") == 2                  # the line per epoch stays
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["train", "--data", str(shapes), "--model", "fcn32s", "--out", str(tmp_path / "b"),
                 "--epochs", "1", "--batch-size", "2"]) == 0
    assert terminal.getvalue().count("\r") >= 4 and "img/s" in terminal.getvalue()


def test_init_says_what_was_loaded_what_starts_fresh_and_the_step_0_agreement(shapes, tmp_path, capsys):
    from tinyfcn.networks.surgery import grow
    assert main(["train", "--data", str(shapes), "--model", "fcn32s", "--out", str(tmp_path / "32s"), *FAST]) == 0
    capsys.readouterr()
    init = tmp_path / "32s" / "best.npz"
    assert main(["train", "--data", str(shapes), "--model", "fcn16s", "--init", str(init),
                 "--out", str(tmp_path / "16s"), *FAST]) == 0
    out = capsys.readouterr().out
    coarse = load_model(init)
    fine = grow(coarse, "fcn16s")
    copied = sum(v.size for k, v in fine.params.items() if k in coarse.params)
    total = sum(v.size for v in fine.params.values())
    assert (f"--init {init}: an fcn32s; {copied:,d} of the fcn16s's {total:,d} parameters copied from it "
            f"(not used: upscore)\n") in out
    assert "new layers: upscore2, upscore16 bilinear; score_pool4 at zero\n" in out
    val = datasets.load_split(shapes, "val")
    same = [(coarse.predict(x) == fine.predict(x)) for x in
            (datasets.normalize(image, coarse.normalization)[None] for image in val.images)]
    share = 100 * sum(s.sum() for s in same) / sum(s.size for s in same)
    assert f"at step 0 the fcn16s agrees with the fcn32s on {share:.1f} % of the pixels of 4 validation images\n" in out
    assert out.index("--init") < out.index("tinyfcn: computing with") < out.index("epoch 1:")


def test_the_run_figures_are_titled_with_the_run(shapes, tmp_path, monkeypatch):
    from tinyfcn import viz
    titles = {}
    for name in ("plot_curves", "plot_predictions"):
        monkeypatch.setattr(viz, name, lambda *a, title=None, _name=name, **k: titles.setdefault(_name, title))
    run = tmp_path / "run"
    assert main(["train", "--data", str(shapes), "--model", "fcn32s", "--out", str(run), "--seed", "3", *FAST]) == 0
    assert titles == {"plot_curves": f"fcn32s on shapes, seed 3 — run {run.name}",
                      "plot_predictions": f"fcn32s on shapes, seed 3 — run {run.name}"}
