"""The PyTorch export gives tinyfcn's scores and takes tinyfcn's training step.

Tolerance: float32 throughout. tinyfcn (im2col + BLAS) and PyTorch (its own kernels) add
the same terms in different orders, so each layer differs by a few float32 epsilons
(6e-8) relative to its values and ~20 layers compound that to about 1e-6 of the largest
score (measured: under 1e-6). Scores must agree to 1e-5 of the largest score; a wrong
crop offset, a lost ceil-mode row or a transposed weight shows up as an error of order 1.
Skipped when torch is not installed (``python -m pip install -e ".[torch]"``).
"""
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from exportcases import (
    CASES,
    MIXED_SIZES,
    inputs,
    mixed_graph,
    random_model,
    sizes,
    worst,
)

from tinyfcn import nn
from tinyfcn.export import save_torch, to_torch
from tinyfcn.training.optim import SGD

torch = pytest.importorskip("torch", reason='the PyTorch export needs torch: python -m pip install -e ".[torch]"')


def torch_scores(net, x):
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("case", CASES)
def test_scores_match_tinyfcn_at_every_size(case):
    model = random_model(case)
    net = to_torch(model)
    assert not net.training
    for size in sizes(case):
        x = inputs(size)
        diff, tolerance = worst(torch_scores(net, x), model.forward(x))
        assert diff <= tolerance, f"{case} at {size}: max |difference| {diff:.2e} > {tolerance:.2e}"


def test_a_non_fcn_graph_matches_too():
    graph = mixed_graph()
    net = to_torch(graph)
    for size in MIXED_SIZES:
        x = inputs(size)
        diff, tolerance = worst(torch_scores(net, x), graph.forward(x))
        assert diff <= tolerance, f"{size}: {diff:.2e}"


@pytest.mark.parametrize("learn", [False, True])
def test_parameters_keep_their_names_and_frozen_layers_their_freeze(learn):
    model = random_model("fcn8s", learn_upsampling=learn)
    net = to_torch(model)
    assert set(net.state_dict()) == set(model.params)
    for name, p in net.named_parameters():
        assert p.requires_grad == (learn or not name.startswith("upscore")), name
        np.testing.assert_array_equal(p.detach().numpy(), model.params[name])


def test_batch_norm_buffers_are_in_the_state_dict_with_the_count_torch_keeps():
    model = random_model("fcn8s-bn")
    state = to_torch(model).state_dict()
    counts = {f"{name}.num_batches_tracked" for name, l in model.layers.items() if isinstance(l, nn.BatchNorm2d)}
    assert len(counts) == 2 * 5 + 2 and set(state) == set(model.params) | set(model.buffers) | counts
    for key in counts:
        assert state[key].dtype == torch.int64 and state[key].shape == ()
    assert "bn3_2.running_var" in model.buffers and not np.allclose(model.buffers["bn3_2.running_var"], 1)
    for key, value in model.buffers.items():
        np.testing.assert_array_equal(state[key].numpy(), value, err_msg=key)
    net = to_torch(model)
    assert isinstance(net.bn6, torch.nn.BatchNorm2d) and net.bn6.eps == 1e-5 and net.bn6.momentum == 0.1
    assert isinstance(to_torch(random_model("classifier-bn")).bn7, torch.nn.BatchNorm1d)
    assert net.conv1_1.bias is None and net.score_fr.bias is not None     # a convolution before BatchNorm: no bias


@pytest.mark.parametrize("case", ["fcn8s", "fcn8s-learned-upsampling", "fcn16s-vgg16", "fcn8s-at-once", "fcn8s-conv",
                                  "fcn8s-concat", "fcn8s-conv-concat", "fcn32s-unpool", "fcn8s-from-classifier",
                                  "fcn32s-bn", "fcn8s-bn", "fcn8s-conv-bn", "fcn8s-concat-bn", "fcn32s-unpool-bn",
                                  "classifier-bn"])
def test_two_sgd_steps_in_torch_equal_tinyfcn_steps(case):
    """Pixel-mean cross-entropy (ignore 255), SGD with momentum 0.9 and weight decay: same losses, same weights.

    Two steps, so the momentum buffers take part. Dropout is 0: the two libraries draw different
    masks. BatchNorm runs in training mode: batch statistics in both, and the running statistics (the
    buffers) move alike in both. In float64, where the libraries agree to about 1e-15: updated weights
    must agree to 1e-12 of each tensor's largest value. (In float32 the two libraries' rounding, about
    1e-6 of the values, leaves the odd pre-activation within rounding of 0: one ReLU then passes a gradient
    element the other blocks, and that difference reaches every layer below it. Over a network's hundreds of
    thousands of activations that happens in some steps and not others, whatever the convolution paths.)
    """
    model = random_model(case, np.float64, dropout=0.0).train()
    net = to_torch(model).double()
    rng = np.random.default_rng(2)
    batches, classifier = [], case.startswith("classifier")
    for size in [(35, 35), (35, 35)] if classifier else [(35, 29), (24, 40)]:
        if classifier:              # a label per crop; 6 crops, as BatchNorm1d of 2 values is ill-conditioned
            batches.append((inputs(size, batch=6, dtype=np.float64), rng.integers(0, 4, 6)))
            continue
        target = rng.integers(0, 4, (2, *size))
        target[0, :5] = 255
        batches.append((inputs(size, dtype=np.float64), target))

    loss_fn, opt = nn.SoftmaxCrossEntropy(ignore_index=255), SGD(model.params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    mine = []
    for x, target in batches:
        mine.append(loss_fn.forward(model.forward(x), target))
        model.backward(loss_fn.backward())
        opt.step(model.grads)

    topt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9, weight_decay=5e-4)
    theirs = []
    for x, target in batches:
        topt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(target), ignore_index=255)
        loss.backward()
        topt.step()
        theirs.append(loss.item())

    np.testing.assert_allclose(mine, theirs, rtol=1e-12)
    for name, p in net.named_parameters():
        diff, tolerance = worst(p.detach().numpy(), model.params[name], 1e-12)
        assert diff <= tolerance, f"{name}: {diff:.2e}"
    for name in model.buffers:
        diff, tolerance = worst(net.get_buffer(name).numpy(), model.buffers[name], 1e-12)
        assert diff <= tolerance, f"{name}: {diff:.2e}"



@pytest.mark.parametrize("case", ["fcn8s", "fcn32s-unpool", "fcn8s-bn"])
def test_saved_files_load_without_tinyfcn(case, tmp_path):
    """fcn8s.pt + fcn8s_model.py run in a fresh Python where tinyfcn cannot be imported."""
    model = random_model(case)
    pt, module = save_torch(model, tmp_path / "fcn8s.pt")
    assert module == tmp_path / "fcn8s_model.py"
    x = inputs((35, 29))
    np.save(tmp_path / "x.npy", x)
    # -I -S: no PYTHONPATH, no current folder and no .pth files (so no editable tinyfcn); only the
    # folder holding torch and numpy, and the export's folder.
    site = sorted({str(Path(m.__file__).parents[1]) for m in (torch, np)})
    script = textwrap.dedent("""
        import sys
        sys.path[:0] = [sys.argv[1], *sys.argv[2:]]
        try:
            import tinyfcn
            sys.exit("tinyfcn is importable")
        except ImportError:
            pass
        import numpy as np, torch
        from fcn8s_model import load
        torch.set_num_threads(1)
        net = load("fcn8s.pt")
        with torch.no_grad():
            np.save("scores.npy", net(torch.from_numpy(np.load("x.npy"))).numpy())
        """)
    run = subprocess.run([sys.executable, "-I", "-S", "-c", script, str(tmp_path), *site], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    diff, tolerance = worst(np.load(tmp_path / "scores.npy"), model.forward(x))
    assert diff <= tolerance


@pytest.mark.parametrize("case", ["fcn16s", "fcn32s-bn"])
def test_the_pt_file_is_plain_data(case, tmp_path):
    model = random_model(case)
    pt, _ = save_torch(model, tmp_path / "net.pt")
    saved = torch.load(pt, weights_only=True)
    assert saved["config"] == model.config
    assert [n["name"] for n in saved["graph"]["nodes"]] == list(model.layers)
    assert set(saved["state_dict"]) == set(to_torch(model).state_dict()) >= set(model.params) | set(model.buffers)
