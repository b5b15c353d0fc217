"""How many threads tinyfcn computes with, and how they share the work.

tinyfcn parallelises coarsely: a batch is split into whole images (or a map into
blocks of channels), and each of ``n`` worker threads takes the next unclaimed piece
until none is left (:func:`parallel_for`); kernels that take a range of images or channels
get one range per thread (:func:`parallel_ranges`), and a job too small to repay a second
thread stays on the calling one (:data:`SMALL_JOB_VALUES`). Inside a piece everything is serial --
numba kernels compiled with ``nogil=True`` and matrix products on a one-thread BLAS
(numpy releases the interpreter lock in ``matmul``). So a thread the OS deschedules
delays only the piece it holds: the other threads keep claiming pieces, and nothing
spin-waits for a core it does not have. (A multi-threaded BLAS or OpenMP pool splits
each large product across all its threads and waits at a barrier for the slowest.)

Even so, a layer ends only when its last piece is done, so a thread that shares its core
with another program makes every layer wait for it, and two threads can then be slower
than one. So the default follows the machine: one thread per core this process may run
on (``os.sched_getaffinity``) that other programs leave idle, at least one, at most
:data:`MAX_DEFAULT`, and at most the CPUs a container's CPU quota allows
(:func:`cgroup_cpu_limit`: a 1-CPU container on a 16-core host gets one thread). Every
:data:`RECHECK_SECONDS` it is worked out again from the last interval (Linux: the busy
time of those cores in ``/proc/stat``, less this process's own CPU time). A program
spinning on one core of two gives one thread; when it stops, the next check gives two
again. Results do not depend on the thread count, so the switch changes speed only.
Elsewhere, or when ``/proc/stat`` cannot be read, the default is one thread per core
(within the same limits).

The environment variable ``TINYFCN_THREADS`` fixes the count instead, as do
``--threads N`` on the command line and ``set_threads(n)``: use them when you run
several trainings side by side on purpose, or to measure one core. The count is one
setting for the whole process; a lock keeps it consistent when several Python threads
read and change it.

numpy's BLAS (which the compiled kernels' matrix products call too, or SciPy's) is held at
one thread only while tinyfcn computes: from the start to the end of every
:func:`parallel_for`, in whichever Python thread runs it, and inside
``with computing():`` (for matrix products outside :func:`parallel_for`), with
``threadpoolctl``. Two layers of threads on the same cores would only get in each
other's way, and how a BLAS splits a product across its threads can change the last
bits of the result. When the last running tinyfcn computation ends, the BLAS gets back
the thread count it had, so numpy code outside tinyfcn runs as it would without it.
(That count is process-wide: numpy code in another Python thread that runs while tinyfcn
computes gets one BLAS thread too.) ``set_threads(n)`` and ``with using(n):`` change
tinyfcn's count; leaving the ``with`` block restores the previous one.

    >>> from tinyfcn import threads
    >>> threads.set_threads(2)
    >>> with threads.using(1):
    ...     pass                  # one core, e.g. to time a single thread
"""
import contextlib
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MAX_DEFAULT = 8
"""The default never exceeds this: a batch of 8 has only 8 images to share out."""

RECHECK_SECONDS = 0.25
"""How often (seconds) the default thread count is worked out again from how busy the cores were.

Reading /proc/stat takes tens of microseconds; in a quarter of a second its 10 ms ticks count
each core's busy time to within a few hundredths of a core, and the check is soon enough to react
before a layer-by-layer slowdown adds up."""

_lock = threading.Lock()        # guards _state, _pool and _blas
_state = {"n": None,            # tinyfcn's threads (None: not chosen yet)
          "sample": None}       # the last cpu_sample while n is the default that follows the machine, else None
_pool = {"n": 0, "executor": None}
_blas = {"users": 0,            # tinyfcn computations running now, in any Python thread
         "libraries": None,     # threadpoolctl's controllers of the loaded BLAS libraries (found on first use)
         "saved": None}         # their thread counts from before the running computations
_local = threading.local()      # per-thread scratch buffers


def _env_threads():
    """The count ``TINYFCN_THREADS`` fixes, or None when it is not set."""
    env = os.environ.get("TINYFCN_THREADS", "").strip()
    if not env:
        return None
    n = int(env)
    if n < 1:
        raise ValueError(f"TINYFCN_THREADS must be a positive integer, got {env!r}")
    return n


def cgroup_cpu_limit(root="/"):
    """The CPUs a cgroup CPU quota lets this process use, rounded up: ``ceil(quota / period)``; None without one.

    ``/proc/self/cgroup`` names this process's cgroups. For each one that can hold a CPU
    quota, the quota files of that cgroup and of every cgroup above it are read (a parent's
    quota binds too; inside a container the cgroup named may be the container's own root,
    which the walk up reaches): cgroup v2's ``cpu.max`` under ``/sys/fs/cgroup``
    (``"100000 100000"`` is one CPU, ``"max 100000"`` no quota), cgroup v1's
    ``cpu.cfs_quota_us`` (-1: no quota) and ``cpu.cfs_period_us`` under
    ``/sys/fs/cgroup/<controllers>`` (e.g. ``cpu,cpuacct``). The smallest quota wins.
    Files that are missing or unreadable count as no quota. ``root`` is put before
    every path, so a test can lay out its own tree.
    """
    root = Path(root)
    try:
        lines = (root / "proc" / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        fields = line.split(":", 2)                    # hierarchy id : controllers (v2: none) : path
        if len(fields) != 3 or (fields[1] and "cpu" not in fields[1].split(",")):
            continue
        _, controllers, path = fields
        parts = [part for part in path.split("/") if part]
        for depth in range(len(parts), -1, -1):
            folder = root.joinpath("sys", "fs", "cgroup", controllers, *parts[:depth])
            try:
                if controllers:
                    quota, period = (int((folder / name).read_text()) for name in ("cpu.cfs_quota_us",
                                                                                   "cpu.cfs_period_us"))
                else:
                    quota, period = (int(v) for v in (folder / "cpu.max").read_text().split())
            except (OSError, ValueError):              # no such file, or "max": no quota here
                continue
            if quota > 0 and period > 0:
                limits.append(math.ceil(quota / period))
    return min(limits, default=None)


def _most():
    """The largest default: :data:`MAX_DEFAULT`, or fewer if a CPU quota allows fewer CPUs."""
    quota = cgroup_cpu_limit()
    return MAX_DEFAULT if quota is None else max(1, min(MAX_DEFAULT, quota))


def default_threads():
    """``TINYFCN_THREADS`` if set, else the cores this process may use, within :data:`MAX_DEFAULT` and any CPU quota."""
    env = _env_threads()
    return env if env is not None else max(1, min(len(_cores()), _most()))


def _cores():
    """The CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:                       # macOS, Windows
        return list(range(os.cpu_count() or 1))


def cpu_sample(cpus):
    """``(wall, busy, own)`` seconds now: a clock, the busy time of ``cpus`` since boot, this process's CPU time.

    ``busy`` adds the user, nice, system, irq, softirq and steal columns of each
    ``cpuN`` line of ``/proc/stat``. None where that file cannot be read.
    """
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{i}" for i in cpus}
    ticks = 0
    for line in lines:
        fields = line.split()
        if fields and fields[0] in wanted:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
            ticks += user + nice + system + irq + softirq + steal
    return time.monotonic(), ticks / os.sysconf("SC_CLK_TCK"), time.process_time()


def threads_for(cores, before, after):
    """The default thread count for ``cores`` cores, given two :func:`cpu_sample` results.

    Other programs kept ``(busy - own) / wall`` cores busy between the samples; the
    default leaves those to them: ``cores - round(that)``, at least 1.
    """
    wall = after[0] - before[0]
    others = ((after[1] - before[1]) - (after[2] - before[2])) / wall
    return max(1, min(cores, cores - round(others)))


def _chosen(n):
    """The state for ``set_threads(n)``: ``{"n": count, "sample": a cpu_sample if the count follows the machine}``."""
    follow = n is None and _env_threads() is None
    if n is None:
        n = default_threads()
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    return {"n": n, "sample": cpu_sample(_cores()) if follow else None}


def _follow_the_machine():
    """Re-work the default count if :data:`RECHECK_SECONDS` have passed since the last sample (``_lock`` held)."""
    last = _state["sample"]
    if last is None or time.monotonic() - last[0] < RECHECK_SECONDS:
        return
    cpus = _cores()
    now = cpu_sample(cpus)
    if now is None:
        return
    _state.update(n=min(_most(), threads_for(len(cpus), last, now)), sample=now)


def get_threads():
    """The number of threads tinyfcn computes with (choosing the default on first use)."""
    with _lock:
        if _state["n"] is None:
            _state.update(_chosen(None))
        else:
            _follow_the_machine()
        return _state["n"]


def set_threads(n):
    """Compute with ``n`` threads from now on (None: the default, which follows the machine; see above).

    Returns the previous count (None if it had not been chosen yet).
    """
    with _lock:
        previous = _state["n"]
        _state.update(_chosen(n))
    return previous


@contextlib.contextmanager
def using(n):
    """``with using(n): ...`` computes with ``n`` threads inside the block, then restores the previous setting."""
    with _lock:
        saved = dict(_state)
        _state.update(_chosen(n))
    try:
        yield n
    finally:
        with _lock:
            _state.update(saved)


def _set_blas(counts, had):
    """Set each BLAS library of ``_blas["libraries"]`` from its count in ``had`` to the one in ``counts``.

    threadpoolctl lets only one Python thread at a time set OpenBLAS's process-wide count
    (the first to set it, until it lets go) and ignores the others without a word. tinyfcn
    changes the count from whichever thread starts or ends the computations, one change at a
    time under ``_lock``, so it takes that control for each change and lets go right after.
    """
    for library, count, before in zip(_blas["libraries"], counts, had):
        if count != before:
            release = getattr(library, "clear_controlling_thread", None)   # OpenBLAS, threadpoolctl >= 3.6
            if release is not None:
                release(force=True)
            library.set_num_threads(count)
            if release is not None:
                release(force=True)


def _start_computing():
    """One more tinyfcn computation is running; the first sets the BLAS to one thread, keeping its counts."""
    with _lock:
        if _blas["libraries"] is None:
            import numpy  # noqa: F401 -- loads numpy's BLAS, for threadpoolctl to find
            import scipy.linalg.cython_blas  # noqa: F401 -- and SciPy's, which numba's np.dot in the kernels calls
            try:
                from threadpoolctl import ThreadpoolController
                _blas["libraries"] = ThreadpoolController().select(user_api="blas").lib_controllers
            except ImportError:
                _blas["libraries"] = []
        if _blas["users"] == 0:
            _blas["saved"] = [library.num_threads for library in _blas["libraries"]]
            _set_blas([1] * len(_blas["saved"]), _blas["saved"])
        _blas["users"] += 1


def _stop_computing():
    """One tinyfcn computation less; when none is left, the BLAS gets back the counts it had."""
    with _lock:
        _blas["users"] -= 1
        if _blas["users"] == 0:
            _set_blas(_blas["saved"], [1] * len(_blas["saved"]))


@contextlib.contextmanager
def computing():
    """``with computing(): ...`` runs the block with numpy's BLAS on one thread, then gives the BLAS back its count.

    :func:`parallel_for` runs every call this way. It nests and may run in several Python
    threads at once: the count is set to one when the first running block starts and
    restored when the last one ends. The BLAS libraries are looked up on the first call
    (after loading numpy, and so its BLAS); none found (or no threadpoolctl): nothing is set.
    """
    _start_computing()
    try:
        yield
    finally:
        _stop_computing()


def _executor(n):
    """A pool with room for ``n - 1`` workers beside the calling thread (``n >= 2``; grown, never shrunk).

    Growing puts a larger pool in place without shutting the old one down: another Python
    thread may hold the old one and be about to submit to it (a shut-down pool would refuse).
    The old pool runs what it is given; once nothing refers to it, it is garbage-collected
    and its idle workers end (``ThreadPoolExecutor`` wakes them for that).
    """
    with _lock:
        if _pool["n"] < n:
            _pool["executor"] = ThreadPoolExecutor(n - 1, thread_name_prefix="tinyfcn")
            _pool["n"] = n
        return _pool["executor"]


SMALL_JOB_VALUES = 1 << 16
SMALL_JOB_MACS = 1 << 24
"""A job smaller than both -- its op's output map has fewer than ``SMALL_JOB_VALUES`` values and it
does fewer than ``SMALL_JOB_MACS`` multiply-adds -- runs on the calling thread alone
(:func:`parallel_for`'s ``values`` and ``macs``).

Handing items to a second thread costs the calling thread about 0.1 ms a job (waking the worker,
and the two threads passing the interpreter lock back and forth between their items' Python
parts), as long as the whole of a small layer's work. Measured per op of FCN-8s at batch 8 x 64x64,
two threads against one (quiet, 2 cores, forward + backward): 1x1 convolutions on 2x2 to 8x8 maps
0.4-0.6x (slower), max-pooling to 8x8 and 4x4 maps (32K and 16K values) 0.4-0.8x, the 4x4 and
2x2 transposed convolutions 0.35-0.4x, fc6 (8K values, 9.4M multiply-adds) 1.06x; from 64K values
or 16M multiply-adds on they gain (pool2 1.22x, conv4_1 1.40x, conv5 (16K values, 19M
multiply-adds) 1.21x, the loss 1.31x). Results are the same bits either way."""


def _small(values, macs):
    """True for a job below :data:`SMALL_JOB_VALUES` and :data:`SMALL_JOB_MACS` (``values`` None: not said)."""
    return values is not None and values < SMALL_JOB_VALUES and macs < SMALL_JOB_MACS


def parallel_for(count, body, values=None, macs=0):
    """Run ``body(i)`` for every ``i`` in ``range(count)``, spread over tinyfcn's threads.

    Each thread claims the next unclaimed ``i`` until none is left (so a slow or
    descheduled thread holds up only the item it has). Every ``body(i)`` must write
    only its own part of the output. The calling thread works too, and returns as soon
    as every claimed item is done: a worker that wakes up after the calling thread has
    taken every item finds nothing to claim. The first exception
    raised by any ``body`` is raised here, after every claimed item has finished.
    Everything runs inside :func:`computing` (numpy's BLAS on one thread), at any thread count.

    ``values`` (the size of the op's output map) and ``macs`` (its multiply-adds), when given,
    say how large the job is: below :data:`SMALL_JOB_VALUES` and :data:`SMALL_JOB_MACS` it runs
    on the calling thread alone.
    """
    n = 1 if _small(values, macs) else min(get_threads(), count)
    _start_computing()                           # computing(), without a generator's cost on every call
    try:
        if n <= 1:
            for i in range(count):
                body(i)
        else:
            _share(n, count, body)
    finally:
        _stop_computing()


def _share(n, count, body):
    """:func:`parallel_for` on ``n >= 2`` threads: the calling thread and ``n - 1`` pool workers claim items."""
    state = {"next": 0, "running": 0}
    done = threading.Condition()
    failed = []

    def work():
        while True:
            with done:
                if failed or state["next"] >= count:
                    return
                i = state["next"]
                state["next"] += 1
                state["running"] += 1
            try:
                body(i)
            except BaseException as error:       # stop the others, re-raise in the caller
                failed.append(error)
            finally:
                with done:
                    state["running"] -= 1
                    done.notify_all()

    pool = _executor(n)
    for _ in range(1, n):
        pool.submit(work)
    try:
        work()
    finally:
        with done:
            state["next"] = count                # nothing more is claimed (also after Ctrl-C here)
            done.wait_for(lambda: state["running"] == 0)
    if failed:
        raise failed[0]


def parallel_ranges(count, body, values=None, macs=0):
    """Run ``body(start, stop)`` over ``range(count)`` cut into one contiguous range per thread
    (``values`` and ``macs`` as for :func:`parallel_for`).

    For jobs of many short items that a kernel can take as a range (a convolution's images, whose
    products numpy's ``matmul`` takes as one stacked call, Winograd's steps, pooling, batch norm's
    channels): each item a thread claims costs a hand-over of the interpreter
    lock between the threads, and on a virtual machine, where a thread that waits for it sleeps and
    must be woken, that is about 0.1 ms. Winograd's input transform at batch 8 (0.57 ms on one
    thread) took 0.73 ms on two as 8 one-image items, 0.58 ms as 4 items and 0.34 ms as 2 ranges.
    Each index is computed exactly as alone, so the results are the same bits for any thread count.
    """
    n = 1 if _small(values, macs) else max(1, min(get_threads(), count))
    parallel_for(n, lambda i: body(i * count // n, (i + 1) * count // n))


def parallel_for_blocks(size, block, body, values=None, macs=0):
    """Cut ``range(size)`` into blocks of ``block`` (the last may be shorter) and run
    ``body(b)`` for each ``slice`` b on the threads, as :func:`parallel_for` does (``values``
    and ``macs`` as there).

    The blocks do not depend on the thread count, so neither does any result.
    """
    count = -(-size // block)
    parallel_for(count, lambda i: body(slice(i * block, min(size, (i + 1) * block))), values, macs)


def scratch(name, shape, dtype):
    """A per-thread buffer reused from call to call (large fresh arrays cost page faults every step).

    Its contents are whatever the previous user left: overwrite before reading.
    """
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    key = (name, tuple(shape), dtype)
    buf = buffers.get(key)
    if buf is None:
        import numpy as np
        if len(buffers) > 64:                    # shapes change (another model, image size): forget old ones
            buffers.clear()
        buf = buffers[key] = np.empty(shape, dtype)
    return buf
