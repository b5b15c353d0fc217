"""``tinyfcn export``: writes files the other runtimes run; every mistake is one line and exit status 2.

Where OUT may go (missing folders created, a file in the way refused) is tested with every other output in
test_failures.py."""
import sys

import numpy as np
import pytest
from exportcases import inputs, random_model, worst

from tinyfcn.cli import main
from tinyfcn.training.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "best.npz"
    model = random_model("fcn8s-vgg16")
    save_checkpoint(path, model)
    return path, model


def test_export_to_onnx_runs_in_onnxruntime(checkpoint, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    path, model = checkpoint
    assert main(["export", "--checkpoint", str(path), "--to", "onnx", str(tmp_path / "fcn8s.onnx")]) == 0
    assert str(tmp_path / "fcn8s.onnx") in capsys.readouterr().out
    x = inputs((35, 29))
    scores, = ort.InferenceSession(str(tmp_path / "fcn8s.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})
    diff, tolerance = worst(scores, model.forward(x))        # tolerance: see test_export_onnx.py
    assert diff <= tolerance


def test_export_to_torch_writes_the_weights_and_the_module_file(checkpoint, tmp_path):
    torch = pytest.importorskip("torch", reason='the PyTorch export needs torch: python -m pip install -e ".[torch]"')
    path, model = checkpoint
    assert main(["export", "--checkpoint", str(path), "--to", "torch", str(tmp_path / "fcn8s.pt")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fcn8s.pt", "fcn8s_model.py"]
    saved = torch.load(tmp_path / "fcn8s.pt", weights_only=True)
    for k, v in model.params.items():
        np.testing.assert_array_equal(saved["state_dict"][k].numpy(), v)


def test_a_missing_torch_is_one_line_saying_what_to_install(checkpoint, tmp_path, error_line, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)          # makes "import torch" fail
    assert main(["export", "--checkpoint", str(checkpoint[0]), "--to", "torch", str(tmp_path / "m.pt")]) == 2
    assert 'python -m pip install -e ".[torch]"' in error_line()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("problem", ["missing checkpoint", "bad checkpoint", "unknown format"])
def test_mistakes_are_one_line_and_status_2(problem, checkpoint, tmp_path, error_line):
    path, to, out = checkpoint[0], "onnx", tmp_path / "m.onnx"
    if problem == "missing checkpoint":
        path = tmp_path / "nothing.npz"
    elif problem == "bad checkpoint":
        path = tmp_path / "bad.npz"
        path.write_bytes(b"not a zip file")
    else:
        to = "tensorflow"
    assert main(["export", "--checkpoint", str(path), "--to", to, str(out)]) == 2
    message = error_line()
    assert message.startswith("tinyfcn export: error:")
    assert {"missing checkpoint": "does not exist", "bad checkpoint": "not a tinyfcn checkpoint",
            "unknown format": "choose torch or onnx"}[problem] in message
    assert not out.exists()


def test_a_batchnorm_checkpoint_exports_to_torch_and_onnx_with_its_eval_scores(tmp_path):
    """The default recipe's networks have BatchNorm: through the command line, both exports reproduce
    the evaluation-mode scores (running statistics that are not 0 and 1) at odd sizes."""
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    model = random_model("fcn8s-bn")                           # trained a few steps: real running statistics
    save_checkpoint(tmp_path / "bn.npz", model)
    assert main(["export", "--checkpoint", str(tmp_path / "bn.npz"), "--to", "torch", str(tmp_path / "bn.pt")]) == 0
    assert main(["export", "--checkpoint", str(tmp_path / "bn.npz"), "--to", "onnx", str(tmp_path / "bn.onnx")]) == 0
    sys.path.insert(0, str(tmp_path))
    try:
        from bn_model import load
    finally:
        sys.path.remove(str(tmp_path))
    net = load(tmp_path / "bn.pt")
    session = ort.InferenceSession(str(tmp_path / "bn.onnx"), providers=["CPUExecutionProvider"])
    model.eval()
    for size in ((35, 29), (64, 64)):
        x = inputs(size)
        ours = model.forward(x)
        with torch.no_grad():
            diff, tolerance = worst(net(torch.from_numpy(x)).numpy(), ours)
        assert diff <= 1e-4 * np.ptp(ours) and diff <= tolerance
        diff, tolerance = worst(session.run(None, {"input": x})[0], ours)
        assert diff <= 1e-4 * np.ptp(ours) and diff <= tolerance


def test_both_exports_carry_the_input_normalization_the_model_trained_with(tmp_path):
    """A default-recipe model takes its training split's statistics, not the fixed (0.5, 0.25): an export
    that dropped them would be fed the wrong input. The .pt file and load() carry them, the ONNX file as
    its metadata property 'normalization'; a model without one says the fixed statistics."""
    import json
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    model = random_model("fcn8s")
    save_checkpoint(tmp_path / "m.npz", model, normalization=[[0.25, 0.5, 0.75], [0.125, 0.25, 0.5]])
    for to, out in (("torch", "m.pt"), ("onnx", "m.onnx")):
        assert main(["export", "--checkpoint", str(tmp_path / "m.npz"), "--to", to, str(tmp_path / out)]) == 0
    expected = {"mean": [0.25, 0.5, 0.75], "std": [0.125, 0.25, 0.5]}
    sys.path.insert(0, str(tmp_path))
    try:
        from m_model import load
    finally:
        sys.path.remove(str(tmp_path))
    assert load(tmp_path / "m.pt").normalization == expected
    assert torch.load(tmp_path / "m.pt", weights_only=True)["normalization"] == expected
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(props["normalization"]) == expected
    from tinyfcn.export import input_normalization, to_torch
    assert input_normalization(model) == {"mean": [0.5], "std": [0.25]} == to_torch(model).normalization
