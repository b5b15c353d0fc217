"""tinyfcn's own threads: identical answers with 1 and 3 threads, errors reach the caller, settings restore,
several Python threads at once, numpy's BLAS given back, and a container's CPU quota."""
import ast
import gc
import os
import subprocess
import sys
import threading
import time

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


def test_a_training_step_is_the_same_at_any_thread_count(every_job_shared):
    with threads.using(1):
        one = _training_step(0)
    with threads.using(3):
        three = _training_step(0)
    for a, b in zip(one, three):                  # loss, gradient, updated weights and momentum, bit for bit
        np.testing.assert_array_equal(a, b)


def test_threads_give_the_same_answers(every_job_shared):
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


# ---------------------------------------------------------------- several Python threads


def test_growing_the_pool_leaves_the_old_one_working_for_whoever_holds_it(monkeypatch):
    monkeypatch.setitem(threads._pool, "n", 0)
    monkeypatch.setitem(threads._pool, "executor", None)
    old = threads._executor(2)                                     # one thread took the pool ...
    worker = old.submit(threading.current_thread).result(timeout=10)
    new = threads._executor(4)                                     # ... another grew it ...
    assert new is not old and threads._executor(3) is new
    assert old.submit(lambda: 7).result(timeout=10) == 7           # ... and the first still submits to its pool
    del old
    gc.collect()
    worker.join(timeout=10)                                        # a pool nobody holds lets its workers go
    assert not worker.is_alive()


@pytest.mark.parametrize("moment", ["first use", "re-check"])
def test_a_count_set_while_another_thread_works_out_the_default_is_kept(moment, monkeypatch):
    monkeypatch.delenv("TINYFCN_THREADS", raising=False)
    monkeypatch.setattr(threads, "_cores", lambda: [0, 1])
    monkeypatch.setitem(threads._state, "n", None)
    monkeypatch.setitem(threads._state, "sample", None)
    clock = {"t": 0.0}
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["t"])
    other = []

    def cpu_sample(cpus):                    # in the middle of working out the default, another thread sets 3
        if not other and (moment == "first use" or clock["t"] > 0):
            other.append(threading.Thread(target=threads.set_threads, args=(3,)))
            other[0].start()
            other[0].join(timeout=0.3)       # without a lock it is done by now; with one it waits for this thread
        return clock["t"], 0.0, 0.0
    monkeypatch.setattr(threads, "cpu_sample", cpu_sample)

    if moment == "re-check":
        threads.set_threads(None)            # the default, following the machine from t = 0
        clock["t"] = 1.0                     # the next get_threads works it out again
    threads.get_threads()
    other[0].join()
    assert threads.get_threads() == 3 and threads._state["sample"] is None   # the later, fixed count stands


# ---------------------------------------------------------------- numpy's BLAS


def _blas_threads():
    from threadpoolctl import ThreadpoolController
    return {lib["num_threads"] for lib in ThreadpoolController().select(user_api="blas").info()}


def test_blas_has_one_thread_only_while_tinyfcn_computes():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 8)).astype(np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):     # the user's numpy setting
        assert _blas_threads() == {2}
        for n in (1, 2):
            with threads.using(n):
                threads.set_threads(n)
                inside = []
                threads.parallel_for(3, lambda i: inside.append(_blas_threads()))
                assert inside == [{1}] * 3
                F.conv2d_forward(x, w, None, 1, 1)
                assert _blas_threads() == {2}                    # numpy outside tinyfcn has its threads back
        with threads.computing():                                # for products outside parallel_for; it nests
            with threads.computing():
                threads.parallel_for(2, lambda i: None)
                assert _blas_threads() == {1}
            assert _blas_threads() == {1}
        assert _blas_threads() == {2}


def test_scipys_blas_has_one_thread_too():
    """Winograd's products run on SciPy's BLAS (numba's np.dot), which numba loads only when a kernel first
    calls one, after tinyfcn's first computation found the BLAS libraries: held at one thread all the same,
    in a fresh process whose BLAS libraries start with three."""
    pytest.importorskip("threadpoolctl")
    code = """if True:
        import sys
        import numpy as np
        from threadpoolctl import ThreadpoolController
        from tinyfcn import functional as F, threads
        x, w = np.ones((2, 16, 8, 8), np.float32), np.ones((16, 16, 3, 3), np.float32)
        threads.set_threads(2)
        threads.parallel_for(2, lambda i: None)                                  # no kernel, no SciPy yet
        F.conv2d_backward(x, F.conv2d_forward(x, w, None, 1, 1)[1])              # Winograd
        seen = []
        threads.parallel_for(2, lambda i: seen.append([lib["num_threads"] for lib in
                                                       ThreadpoolController().select(user_api="blas").info()]))
        print("scipy.linalg.cython_blas" in sys.modules, seen)
    """
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "3"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    loaded, seen = result.stdout.split(" ", 1)
    counts = [n for libraries in ast.literal_eval(seen) for n in libraries]
    assert loaded == "True" and counts and set(counts) == {1}


def test_the_blas_count_comes_back_when_the_last_of_two_python_threads_stops():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    b_inside, a_inside, b_left, finish = (threading.Event() for _ in range(4))
    seen = {}

    def b():                                                   # starts first, stops first, outlives A's work
        def body(i):
            b_inside.set()
            a_inside.wait(10)
        threads.parallel_for(1, body)
        b_left.set()
        finish.wait(10)

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        other = threading.Thread(target=b)
        other.start()
        b_inside.wait(10)

        def body(i):
            a_inside.set()
            b_left.wait(10)
            seen["A, after B stopped"] = _blas_threads()
        threads.parallel_for(1, body)
        seen["after both"] = _blas_threads()
        finish.set()
        other.join()
    assert seen == {"A, after B stopped": {1}, "after both": {2}}


# ---------------------------------------------------------------- a container's CPU quota


def _tree(root, cgroup, files):
    """A fake /proc/self/cgroup and /sys/fs/cgroup under ``root``."""
    (root / "proc" / "self").mkdir(parents=True)
    (root / "proc" / "self" / "cgroup").write_text(cgroup)
    for path, text in files.items():
        (root / "sys" / "fs" / "cgroup" / path).parent.mkdir(parents=True, exist_ok=True)
        (root / "sys" / "fs" / "cgroup" / path).write_text(text)
    return root


@pytest.mark.parametrize("cgroup,files,cpus", [
    ("0::/\n", {"cpu.max": "100000 100000\n"}, 1),                            # v2, one CPU
    ("0::/\n", {"cpu.max": "max 100000\n"}, None),                            # v2, no quota
    ("0::/\n", {"cpu.max": "150000 100000\n"}, 2),                            # 1.5 CPUs: rounded up
    ("0::/\n", {}, None),                                                     # no cpu.max at all
    ("0::/docker/abc\n", {"cpu.max": "200000 100000\n"}, 2),                  # the container's own root, walked up to
    ("0::/a/b\n", {"a/cpu.max": "100000 100000\n", "a/b/cpu.max": "max 100000\n"}, 1),   # a parent's quota binds
    ("0::/a/b\n", {"a/cpu.max": "400000 100000\n", "a/b/cpu.max": "300000 100000\n"}, 3),  # the smallest wins
    ("12:pids:/\n4:cpu,cpuacct:/\n1:name=systemd:/\n",                        # v1, cpu mounted with cpuacct
     {"cpu,cpuacct/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 1),
    ("4:cpu,cpuacct:/job\n", {"cpu,cpuacct/job/cpu.cfs_quota_us": "-1\n",
                              "cpu,cpuacct/job/cpu.cfs_period_us": "100000\n"}, None),   # v1, no quota
    ("4:memory:/\n", {"memory/cpu.cfs_quota_us": "100000\n", "memory/cpu.cfs_period_us": "100000\n"}, None),
    ("garbage\n0::/\n", {"cpu.max": "broken\n"}, None),                       # unreadable lines and files: no quota
])
def test_cgroup_cpu_limit_reads_v1_and_v2(cgroup, files, cpus, tmp_path):
    assert threads.cgroup_cpu_limit(_tree(tmp_path, cgroup, files)) == cpus


def test_no_cgroup_files_means_no_quota(tmp_path):
    assert threads.cgroup_cpu_limit(tmp_path) is None
    here = threads.cgroup_cpu_limit()                                       # this machine's answer, whatever it is
    assert here is None or (isinstance(here, int) and here >= 1)


def test_the_default_keeps_within_a_cpu_quota(tmp_path, monkeypatch):
    one_cpu = _tree(tmp_path, "0::/\n", {"cpu.max": "100000 100000\n"})
    real = threads.cgroup_cpu_limit
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda root=one_cpu: real(root))
    monkeypatch.delenv("TINYFCN_THREADS", raising=False)
    monkeypatch.setattr(threads, "_cores", lambda: list(range(16)))           # a 16-core host, one CPU of quota
    assert threads.default_threads() == 1
    clock = {"t": 0.0}
    monkeypatch.setattr(threads, "cpu_sample", lambda cpus: (clock["t"], 0.0, 0.0))
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["t"])
    with threads.using(None):
        assert threads.get_threads() == 1
        clock["t"] = 1.0                                                    # 16 idle cores at the re-check
        assert threads.get_threads() == 1
    monkeypatch.setenv("TINYFCN_THREADS", "4")                              # a fixed count is the user's call
    assert threads.default_threads() == 4


def test_a_small_job_stays_on_the_calling_thread_and_a_large_one_is_offered_to_all():
    def who(job):
        seen = set()
        threads.parallel_for(64, lambda i: seen.add(threading.get_ident()) or time.sleep(0.001), **job)
        return seen
    with threads.using(2):
        assert who(dict(values=threads.SMALL_JOB_VALUES - 1, macs=threads.SMALL_JOB_MACS - 1)) == {threading.get_ident()}
        assert len(who(dict(values=threads.SMALL_JOB_VALUES))) == 2          # 64 sleeps: the worker takes some
        assert len(who(dict(values=0, macs=threads.SMALL_JOB_MACS))) == 2
        assert len(who({})) == 2                                            # no size given: always offered


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("count", [0, 1, 2, 7, 16])
def test_parallel_ranges_cover_every_index_once_in_at_most_one_range_a_thread(n, count, every_job_shared):
    ranges = []
    with threads.using(n):
        threads.parallel_ranges(count, lambda start, stop: ranges.append((start, stop)))
    assert len(ranges) == max(1, min(n, count))
    assert sorted(i for start, stop in ranges for i in range(start, stop)) == list(range(count))
