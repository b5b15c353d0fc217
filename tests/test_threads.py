"""tinyfcn's own threads: identical answers with 1 and 3 threads, errors reach the caller, settings restore."""
import numpy as np
import pytest

from tinyfcn import functional as F
from tinyfcn import threads


def _ops(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((5, 3, 9, 8)).astype(np.float32)
    w, b = rng.standard_normal((4, 3, 3, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    wt = rng.standard_normal((4, 2, 4, 4)).astype(np.float32)
    out, cache = F.conv2d_forward(x, w, b, 1, 1)
    r, rc = F.relu_forward(out)
    p, pc = F.max_pool2d_forward(r, 2, ceil_mode=True)
    u, uc = F.conv_transpose2d_forward(p, wt, None, 2, 1)
    du = rng.standard_normal(u.shape).astype(np.float32)
    dp, dwt, _ = F.conv_transpose2d_backward(du, uc)
    dr = F.relu_backward(F.max_pool2d_backward(dp, pc), rc)
    return (out, r, p, u, dp, dwt, dr, *F.conv2d_backward(dr, cache))


def _training_step(seed):
    from tinyfcn.networks.models import FCN8s
    from tinyfcn.training.optim import SGD
    rng = np.random.default_rng(seed)
    model = FCN8s(3, widths=(4, 4, 8, 8, 8), fc_width=16)
    opt = SGD(model.params, lr=0.1, momentum=0.9, weight_decay=1e-3)
    x = rng.standard_normal((5, 3, 40, 36)).astype(np.float32)
    y = rng.integers(0, 3, (5, 40, 36))
    y[:, :4] = 255
    loss, dscores = F.softmax_cross_entropy(model.forward(x), y)
    model.backward(dscores)
    opt.step(model.grads)
    return (np.array(loss), dscores, *model.params.values(), *opt.velocity.values())


def test_a_training_step_is_the_same_at_any_thread_count():
    with threads.using(1):
        one = _training_step(0)
    with threads.using(3):
        three = _training_step(0)
    for a, b in zip(one, three):                  # loss, gradient, updated weights and momentum, bit for bit
        np.testing.assert_array_equal(a, b)


def test_threads_give_the_same_answers():
    with threads.using(1):
        one = _ops(0)
    with threads.using(3):
        three = _ops(0)
    for a, b in zip(one, three):                  # bit for bit: no sum depends on which thread did what
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("n", [1, 3])
def test_all_finite_on_large_arrays(n):
    with threads.using(n):
        a = np.ones(1 << 20, np.float32)
        assert F.all_finite(a)
        for bad in (np.nan, np.inf, -np.inf):
            a[-1] = bad
            assert not F.all_finite(a)
        a[:] = 3e38                                  # the sums overflow, the values are finite
        assert F.all_finite(a)
        assert F.all_finite(np.ones((3, 1 << 19), np.float32)[:, ::2])


def test_parallel_for_covers_every_item_once_and_raises_errors():
    seen = []
    with threads.using(3):
        threads.parallel_for(50, seen.append)
        assert sorted(seen) == list(range(50))

        def fail(i):
            if i == 7:
                raise RuntimeError("item 7")
        with pytest.raises(RuntimeError, match="item 7"):
            threads.parallel_for(20, fail)


def test_using_restores_and_bad_counts_are_refused():
    before = threads.get_threads()
    with threads.using(2):
        assert threads.get_threads() == 2
    assert threads.get_threads() == before
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(ValueError):
            threads.set_threads(bad)


def test_default_reads_the_environment(monkeypatch):
    monkeypatch.setenv("TINYFCN_THREADS", "3")
    assert threads.default_threads() == 3
    monkeypatch.delenv("TINYFCN_THREADS")
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert threads.default_threads() == 3                           # one thread per core it may use
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert threads.default_threads() == threads.MAX_DEFAULT


def test_the_command_line_takes_threads():
    from tinyfcn.cli import build_parser
    parser = build_parser()
    for command in (["train"], ["eval", "--checkpoint", "c.npz", "--data", "d"], ["predict", "--checkpoint", "c.npz",
                                                                             "--out", "o", "a.png"]):
        assert parser.parse_args(command + ["--threads", "2"]).threads == 2
        assert parser.parse_args(command).threads is None
        with pytest.raises(SystemExit):
            parser.parse_args(command + ["--threads", "0"])


def test_threads_for_leaves_the_cores_other_programs_use():
    quiet = ((0.0, 100.0, 5.0), (1.0, 102.0, 7.0))               # 2 busy core-seconds, all of them ours
    one_taken = ((0.0, 100.0, 5.0), (1.0, 102.0, 6.0))           # another program kept one core busy
    assert threads.threads_for(2, *quiet) == 2
    assert threads.threads_for(2, *one_taken) == 1
    assert threads.threads_for(4, (0.0, 0.0, 0.0), (2.0, 8.0, 0.0)) == 1   # every core taken: still one thread
    assert threads.threads_for(4, (0.0, 0.0, 0.0), (2.0, 2.6, 2.0)) == 4   # 0.3 of a core is not a core


def test_cpu_sample_reads_this_machine():
    sample = threads.cpu_sample(threads._cores())
    if sample is None:
        assert not threads.os.path.exists("/proc/stat")
        return
    wall, busy, own = sample
    assert wall > 0 and busy > 0 and own > 0


def test_the_default_follows_the_machine_and_a_fixed_count_does_not(monkeypatch):
    monkeypatch.delenv("TINYFCN_THREADS", raising=False)
    monkeypatch.setattr(threads, "_cores", lambda: [0, 1])
    clock = {"t": 0.0, "busy": 0.0, "own": 0.0}
    monkeypatch.setattr(threads, "cpu_sample", lambda cpus: (clock["t"], clock["busy"], clock["own"]))
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["t"])

    def a_second(busy, own):                                       # busy, own: cores kept busy (all, this process)
        clock.update(t=clock["t"] + 1.0, busy=clock["busy"] + busy, own=clock["own"] + own)

    with threads.using(None):
        assert threads.get_threads() == 2
        a_second(busy=2.0, own=1.0)                                # one core kept busy by someone else
        assert threads.get_threads() == 1
        a_second(busy=1.0, own=1.0)                                # they stopped
        assert threads.get_threads() == 2
        with threads.using(2):                                     # a fixed count stays fixed
            a_second(busy=2.0, own=1.0)
            assert threads.get_threads() == 2
        a_second(busy=2.0, own=1.0)
        assert threads.get_threads() == 1                          # and the default follows again afterwards
    monkeypatch.setattr(threads, "_cores", lambda: list(range(16)))
    with threads.using(None):
        assert threads.get_threads() == threads.MAX_DEFAULT
        a_second(busy=10.0, own=2.0)                               # 8 of 16 cores taken: 8 are still idle
        assert threads.get_threads() == 8
        a_second(busy=14.0, own=1.0)                               # 13 taken
        assert threads.get_threads() == 3
    monkeypatch.setenv("TINYFCN_THREADS", "2")
    with threads.using(None):                                      # TINYFCN_THREADS fixes it too
        a_second(busy=2.0, own=1.0)
        assert threads.get_threads() == 2
