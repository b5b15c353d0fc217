"""Adam and AdamW: PyTorch's update rules (torch as the oracle), per-parameter step counts, state round trips,
one-line errors, checkpoints. SGD's own tests are in test_train.py."""
from pathlib import Path

import numpy as np
import pytest

from tinyfcn import threads
from tinyfcn.networks.models import FCN32s
from tinyfcn.ops.gradcheck import rel_error
from tinyfcn.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    restore_model,
    restore_optimizer,
    save_checkpoint,
)
from tinyfcn.training.optim import OPTIMIZERS, SGD, Adam, AdamW

SHAPES = {"conv.weight": (4, 3, 3, 3), "conv.bias": (4,), "score.weight": (2, 4, 1, 1), "up.weight": (2, 2, 4, 4)}
SCALES = {"conv.weight": 1.0, "conv.bias": 1e-3, "score.weight": 100.0, "up.weight": 0.1}
"""Gradients of very different sizes: Adam's step should not care."""

SETTINGS = dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(shape) for k, shape in SHAPES.items()}


def make_grads(steps, seed=1, skip=()):
    """One gradient dict per step; a (step, name) pair in ``skip`` has no gradient in that step."""
    rng = np.random.default_rng(seed)
    return [{k: SCALES[k] * rng.standard_normal(shape) for k, shape in SHAPES.items() if (t, k) not in skip}
            for t in range(steps)]


def run_torch(cls, params, grads, lr_at=None):
    """Run ``torch.optim.<cls>`` on copies of ``params``; ``lr_at = (step, lr)`` changes lr before that step."""
    torch = pytest.importorskip("torch")
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt = getattr(torch.optim, cls)(tparams.values(), **SETTINGS)
    for t, g in enumerate(grads):
        if lr_at and t == lr_at[0]:
            for group in opt.param_groups:
                group["lr"] = lr_at[1]
        for k, p in tparams.items():
            p.grad = torch.from_numpy(g[k].copy()) if k in g else None
        opt.step()
    return {k: p.detach().numpy() for k, p in tparams.items()}, {k: opt.state[p] for k, p in tparams.items()}


def run_mine(cls, params, grads, lr_at=None):
    opt = OPTIMIZERS[cls.lower()](params, **SETTINGS)
    for t, g in enumerate(grads):
        if lr_at and t == lr_at[0]:
            opt.lr = lr_at[1]
        opt.step(g)
    return opt


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_adam_and_adamw_match_torch(cls):
    params, grads = make_params(), make_grads(20)
    theirs, state = run_torch(cls, params, grads, lr_at=(10, 0.003))
    opt = run_mine(cls, params, grads, lr_at=(10, 0.003))
    for k in SHAPES:
        assert rel_error(params[k], theirs[k]) <= 1e-10, k
        assert rel_error(opt.exp_avg[k], state[k]["exp_avg"].numpy()) <= 1e-10, k
        assert rel_error(opt.exp_avg_sq[k], state[k]["exp_avg_sq"].numpy()) <= 1e-10, k
        assert opt.steps[k] == state[k]["step"].item() == 20
    assert not np.array_equal(params["conv.weight"], make_params()["conv.weight"])


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_a_parameter_without_a_gradient_is_untouched_and_keeps_its_count(cls):
    skip = {(t, "conv.bias") for t in (1, 2, 3)} | {(t, "score.weight") for t in range(4)}
    params, grads = make_params(), make_grads(6, skip=skip)
    before = {k: v.copy() for k, v in params.items()}
    opt = run_mine(cls, params, grads[:4])
    np.testing.assert_array_equal(params["score.weight"], before["score.weight"])     # no gradient yet, no decay either
    np.testing.assert_array_equal(opt.exp_avg["score.weight"], 0)
    assert {k: int(v) for k, v in opt.steps.items()} == {"conv.weight": 4, "conv.bias": 1, "score.weight": 0,
                                                         "up.weight": 4}
    for g in grads[4:]:
        opt.step(g)
    assert {k: int(v) for k, v in opt.steps.items()} == {"conv.weight": 6, "conv.bias": 3, "score.weight": 2,
                                                         "up.weight": 6}
    theirs, _ = run_torch(cls, before, grads)                        # None gradients in torch: the same skips
    for k in SHAPES:
        assert rel_error(params[k], theirs[k]) <= 1e-10, k


def test_adam_steps_are_lr_whatever_the_gradient_scale():
    """With a steady gradient and no decay, each weight moves by lr per step (less eps), for gradients of any size."""
    w = np.zeros(4)
    opt = Adam({"w": w}, lr=0.01, eps=1e-12)
    for _ in range(3):
        opt.step({"w": np.array([1e-6, -1.0, 1e3, -1e6])})
    np.testing.assert_allclose(w, [-0.03, 0.03, -0.03, 0.03], rtol=1e-5)


def test_adamw_decays_the_weights_directly():
    """A zero gradient leaves the moments at 0, so only the decay moves the weight: w * (1 - lr * wd) per step."""
    w = np.array([2.0, -1.0])
    opt = AdamW({"w": w}, lr=0.1, weight_decay=0.5)
    for _ in range(3):
        opt.step({"w": np.zeros(2)})
    np.testing.assert_allclose(w, np.array([2.0, -1.0]) * 0.95 ** 3, rtol=1e-14)
    adam = Adam({"w": np.array([2.0, -1.0])}, lr=0.1, weight_decay=0.5)
    adam.step({"w": np.zeros(2)})                                    # L2: the decay is a gradient, so a step of lr
    np.testing.assert_allclose(adam.params["w"], [1.9, -0.9], rtol=1e-6)


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_the_thread_count_changes_nothing(cls):
    results = []
    for n in (1, 2):
        params = make_params()
        with threads.using(n):
            run_mine(cls, params, make_grads(3))
        results.append(params)
    for k in SHAPES:
        np.testing.assert_array_equal(results[0][k], results[1][k], err_msg=k)


# ---------------------------------------------------------------- state


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_state_dict_round_trip_continues_bit_identically(cls):
    params, grads = make_params(), make_grads(10, skip={(2, "conv.bias")})
    opt = run_mine(cls, params, grads[:5])
    state, saved_params = opt.state_dict(), {k: v.copy() for k, v in params.items()}
    assert set(state) == {f"{kind}/{k}" for kind in ("exp_avg", "exp_avg_sq", "step") for k in SHAPES}
    assert state["step/conv.bias"].shape == () and state["step/conv.bias"].dtype == np.int64
    assert int(state["step/conv.bias"]) == 4 and int(state["step/conv.weight"]) == 5
    for g in grads[5:]:
        opt.step(g)
    assert int(state["step/conv.weight"]) == 5                      # a copy, not the live state

    fresh = OPTIMIZERS[cls.lower()](saved_params, **SETTINGS)
    fresh.load_state_dict(state)
    for g in grads[5:]:
        fresh.step(g)
    for k in SHAPES:
        np.testing.assert_array_equal(saved_params[k], params[k], err_msg=k)
    for k, v in opt.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[k], v, err_msg=k)


def one_line(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("state_from,load_into,origin", [(SGD, Adam, "SGD"), (AdamW, SGD, "Adam or AdamW"),
                                                         (Adam, AdamW, None)])
def test_a_state_of_another_optimizer_is_refused_by_name(state_from, load_into, origin):
    source = state_from(make_params(), lr=0.1)
    source.step(make_grads(1)[0])
    target = load_into(make_params(), lr=0.1)
    if origin is None:                                   # Adam and AdamW keep the same state: it loads
        target.load_state_dict(source.state_dict())
        return
    before = target.state_dict()
    with pytest.raises(ValueError) as excinfo:
        target.load_state_dict(source.state_dict())
    assert one_line(excinfo).startswith(f"{load_into.__name__}.load_state_dict: this is the state of {origin}, "
                                        f"not of {load_into.__name__}")
    for k, v in target.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("change,message", [
    (lambda s: s.pop("exp_avg_sq/conv.bias"), "missing key 'exp_avg_sq/conv.bias'"),
    (lambda s: s.update({"exp_avg/other": np.zeros(2)}), "unexpected key 'exp_avg/other'"),
    (lambda s: s.update({"exp_avg/conv.bias": np.zeros(3)}),
     "'exp_avg/conv.bias' is float64 (3,), expected float64 (4,)"),
    (lambda s: s.update({"step/conv.bias": np.float64(2.5)}), "'step/conv.bias' is float64 (), expected int64 ()"),
])
def test_a_bad_state_is_one_line_and_changes_nothing(change, message):
    source = Adam(make_params(), lr=0.1)
    source.step(make_grads(1)[0])
    state = source.state_dict()
    change(state)
    target = Adam(make_params(), lr=0.1)
    with pytest.raises(ValueError) as excinfo:
        target.load_state_dict(state)
    assert message in one_line(excinfo)
    assert all(int(v) == 0 for v in target.steps.values()) and not target.exp_avg["conv.weight"].any()


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("cls", [Adam, AdamW])
@pytest.mark.parametrize("settings", [dict(lr=0), dict(lr=-1e-3), dict(lr=float("nan")), dict(betas=(1.0, 0.999)),
                                      dict(betas=(0.9, -0.1)), dict(betas=(0.9,)), dict(betas=0.9), dict(eps=0),
                                      dict(weight_decay=-1e-4)])
def test_bad_hyper_parameters_are_one_line(cls, settings):
    with pytest.raises(ValueError) as excinfo:
        cls(make_params(), **settings)
    assert one_line(excinfo).startswith(f"{cls.__name__}: ")


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
@pytest.mark.parametrize("bad,error,message", [
    (np.zeros((4, 1)), ValueError, "gradient of 'conv.bias' is float64 (4, 1), the parameter is float64 (4,)"),
    (np.zeros(4, np.float32), ValueError, "gradient of 'conv.bias' is float32 (4,), the parameter is float64 (4,)"),
    ([0.0] * 4, TypeError, "gradient of 'conv.bias' must be a numpy array, got list"),
])
def test_a_bad_gradient_is_one_line_and_nothing_is_updated(cls, bad, error, message):
    params = make_params()
    before = {k: v.copy() for k, v in params.items()}
    opt = cls(params, lr=0.1)
    state = opt.state_dict()
    grads = make_grads(1)[0]
    grads["conv.bias"] = bad                            # the second of four: the first is checked and fine
    with pytest.raises(error) as excinfo:
        opt.step(grads)
    assert one_line(excinfo) == f"{cls.__name__}.step: {message}"
    for k in SHAPES:
        np.testing.assert_array_equal(params[k], before[k], err_msg=k)
    for k, v in opt.state_dict().items():
        np.testing.assert_array_equal(v, state[k], err_msg=k)
    with pytest.raises(ValueError, match=r"^\w+\.step: a gradient for 'nope', which is not one of"):
        opt.step({"nope": np.zeros(1)})


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_parameters_must_be_writeable_contiguous_arrays(cls):
    with pytest.raises(ValueError, match=rf"^{cls.__name__}: parameter 'w' must be a writeable C-contiguous array"):
        cls({"w": np.zeros((3, 4))[:, ::2]}, lr=0.1)


def test_the_registry_names_are_the_checkpoint_names():
    assert OPTIMIZERS == {"sgd": SGD, "adam": Adam, "adamw": AdamW}
    for name, cls in OPTIMIZERS.items():
        assert cls.__name__.lower() == name


# ---------------------------------------------------------------- checkpoints


TINY = dict(widths=(2, 2, 2, 2, 2), fc_width=4)


def tiny_run(cls, steps, seed=0):
    """A tiny FCN-32s and an optimizer after ``steps`` steps with random gradients."""
    model = FCN32s(2, **TINY, seed=seed)
    opt = cls(model.params, lr=0.01)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        opt.step({k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in model.params.items()})
    return model, opt


def test_an_adamw_checkpoint_round_trips_through_a_file(tmp_path):
    model, opt = tiny_run(AdamW, 3)
    save_checkpoint(tmp_path / "c.npz", model, opt, epoch=1)
    checkpoint = load_checkpoint(tmp_path / "c.npz")
    assert checkpoint["meta"]["optimizer"] == "adamw" and checkpoint["meta"]["epoch"] == 1
    state = opt.state_dict()
    assert checkpoint["optim"].keys() == state.keys()
    for k, v in state.items():
        assert checkpoint["optim"][k].dtype == v.dtype
        np.testing.assert_array_equal(checkpoint["optim"][k], v, err_msg=k)

    resumed, resumed_opt = tiny_run(AdamW, 0, seed=5)
    restore_model(resumed, checkpoint)
    restore_optimizer(resumed_opt, checkpoint)
    grads = {k: np.full_like(v, 0.5) for k, v in model.params.items()}
    opt.step(grads)
    resumed_opt.step(grads)
    for k, v in model.params.items():
        np.testing.assert_array_equal(resumed.params[k], v, err_msg=k)

    for other in (SGD, Adam):
        _, other_opt = tiny_run(other, 0)
        with pytest.raises(CheckpointError) as excinfo:
            restore_optimizer(other_opt, checkpoint)
        assert one_line(excinfo) == (f"the checkpoint was trained with the adamw optimizer, not "
                                     f"{other.__name__.lower()}: continue it with adamw")


def test_an_sgd_checkpoint_keeps_its_layout(tmp_path):
    model, opt = tiny_run(SGD, 2)
    save_checkpoint(tmp_path / "s.npz", model, opt)
    checkpoint = load_checkpoint(tmp_path / "s.npz")
    assert checkpoint["meta"]["optimizer"] == "sgd" and checkpoint["optim"].keys() == model.params.keys()
    _, fresh = tiny_run(SGD, 0)
    restore_optimizer(fresh, checkpoint)
    for k, v in opt.velocity.items():
        np.testing.assert_array_equal(fresh.velocity[k], v, err_msg=k)


def test_a_checkpoint_from_before_adam_is_sgds():
    """tests/data/fcn8s-tiny-v0.1.npz names no optimizer: a run resumed from it must be SGD's."""
    checkpoint = load_checkpoint(Path(__file__).parent / "data" / "fcn8s-tiny-v0.1.npz")
    assert "optimizer" not in checkpoint["meta"] and checkpoint["optim"] == {}
    with pytest.raises(CheckpointError, match="trained with the sgd optimizer, not adam: continue it with sgd"):
        restore_optimizer(Adam({"w": np.zeros(1)}), checkpoint)
