"""How many threads tinyfcn computes with, and how they share the work.

tinyfcn parallelises coarsely: a batch is split into whole images (or a map into
blocks of channels), and each of ``n`` worker threads takes the next unclaimed piece
until none is left. Inside a piece everything is serial -- numba kernels compiled
with ``nogil=True`` and matrix products on a one-thread BLAS (numpy releases the
interpreter lock in ``matmul``). Two consequences:

- on a quiet machine ``n`` threads run about ``n`` images at once;
- on a busy one, a thread the OS deschedules delays only the piece it holds: the
  other threads keep claiming pieces, and nothing spin-waits for a core it does not
  have. (A BLAS or OpenMP pool splits *every* product across all its threads and
  waits at a barrier for the slowest; with a core taken by another program, each
  product then waits for a scheduler time slice, which is how a 2-thread BLAS can
  run 5-15x slower than one thread.)

Even so, a layer ends only when its last image is done, so a thread that shares its
core with another program makes every layer wait for it: with one core of two taken,
two threads ran slower than one (153 against 160 images/s for an FCN-8s step,
measured before this default). So the default follows the machine: one thread per
core this process may run on (``os.sched_getaffinity``) that other programs leave
idle, at least one and at most :data:`MAX_DEFAULT`. Every :data:`RECHECK_SECONDS`
it is worked out again from the last interval (Linux: the busy time of those cores
in ``/proc/stat``, less this process's own CPU time). A program spinning on one core of two gives one
thread; when it stops, the next check gives two again. Results do not depend on the
thread count, so the switch changes speed only. Elsewhere, or when
``/proc/stat`` cannot be read, the default is one thread per core.

The environment variable ``TINYFCN_THREADS`` fixes the count instead, as do
``--threads N`` on the command line and ``set_threads(n)``: use them when you run
several trainings side by side on purpose, or to measure one core.

While tinyfcn has threads of its own it sets numpy's BLAS to one thread (with
``threadpoolctl``, for the whole process): two layers of threads on the same cores
would only get in each other's way. ``set_threads(n)`` and ``with using(n):`` change
both; leaving the ``with`` block restores the previous settings, BLAS included.

    >>> from tinyfcn import threads
    >>> threads.set_threads(2)
    >>> with threads.using(1):
    ...     pass                  # one core, e.g. to time a single thread
"""
import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

MAX_DEFAULT = 8
"""The default never exceeds this: a batch of 8 has only 8 images to share out."""

RECHECK_SECONDS = 0.25
"""How often (seconds) the default thread count is worked out again from how busy the cores were.

Reading /proc/stat takes some 30 microseconds; a quarter of a second is long enough for its
10 ms ticks to count cores to within a tenth, and short enough to react before a layer-by-layer
slowdown adds up."""

_state = {"n": None, "blas": None,   # n: tinyfcn's threads (None: not chosen yet); blas: the BLAS limit we set
          "sample": None}   # the last cpu_sample while n is the default that follows the machine, else None
_pool = {"n": 0, "executor": None}
_local = threading.local()      # per-thread scratch buffers
_lock = threading.Lock()


def _env_threads():
    """The count ``TINYFCN_THREADS`` fixes, or None when it is not set."""
    env = os.environ.get("TINYFCN_THREADS", "").strip()
    if not env:
        return None
    n = int(env)
    if n < 1:
        raise ValueError(f"TINYFCN_THREADS must be a positive integer, got {env!r}")
    return n


def default_threads():
    """``TINYFCN_THREADS`` if set, else the cores this process may use (at most :data:`MAX_DEFAULT`)."""
    env = _env_threads()
    return env if env is not None else max(1, min(len(_cores()), MAX_DEFAULT))


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


def _follow_the_machine():
    """Re-work the default count if :data:`RECHECK_SECONDS` have passed since the last sample."""
    with _lock:
        last = _state["sample"]
        if last is None or time.monotonic() - last[0] < RECHECK_SECONDS:
            return
        cpus = _cores()
        now = cpu_sample(cpus)
        if now is None:
            return
        _state["n"] = min(MAX_DEFAULT, threads_for(len(cpus), last, now))
        _state["sample"] = now


def _blas_limits(n):
    """Set the BLAS thread count to ``n`` with threadpoolctl; return the previous counts (None without it)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=n, user_api="blas")


def get_threads():
    """The number of threads tinyfcn computes with (choosing the default on first use)."""
    if _state["n"] is None:
        set_threads(None)
    if _state["sample"] is not None:
        _follow_the_machine()
    return _state["n"]


def set_threads(n):
    """Compute with ``n`` threads from now on (None: the default, which follows the machine; see above).

    Also sets numpy's BLAS to one thread, so that only tinyfcn's threads run.
    Returns the previous count (None if it had not been chosen yet).
    """
    follow = n is None and _env_threads() is None
    if n is None:
        n = default_threads()
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    previous = _state["n"]
    sample = cpu_sample(_cores()) if follow else None
    _state.update(n=n, sample=sample)
    if _state["blas"] is None:
        _state["blas"] = _blas_limits(1)       # kept: ``restore_blas`` undoes it
    return previous


def restore_blas():
    """Give the BLAS back the thread count it had before tinyfcn set it to one."""
    if _state["blas"] is not None:
        _state["blas"].restore_original_limits()
        _state["blas"] = None


@contextlib.contextmanager
def using(n):
    """``with using(n): ...`` computes with ``n`` threads inside the block, then restores the previous settings."""
    had_blas = _state["blas"] is not None
    saved = {key: _state[key] for key in ("n", "sample")}
    set_threads(n)
    try:
        yield n
    finally:
        _state.update(saved)
        if not had_blas:
            restore_blas()


def _executor(n):
    """A pool with room for ``n - 1`` workers beside the calling thread (grown, never shrunk)."""
    with _lock:
        if _pool["n"] < n:
            if _pool["executor"] is not None:
                _pool["executor"].shutdown(wait=True)
            _pool["executor"] = ThreadPoolExecutor(n - 1, thread_name_prefix="tinyfcn") if n > 1 else None
            _pool["n"] = n
        return _pool["executor"]


def parallel_for(count, body):
    """Run ``body(i)`` for every ``i`` in ``range(count)``, spread over tinyfcn's threads.

    Each thread claims the next unclaimed ``i`` until none is left (so a slow or
    descheduled thread holds up only the item it has). Every ``body(i)`` must write
    only its own part of the output. The calling thread works too, and returns as soon
    as every claimed item is done: a worker that wakes up after the calling thread has
    taken every item finds nothing to claim and costs nothing (waking a thread takes
    tens of microseconds, as long as a small layer's whole work). The first exception
    raised by any ``body`` is raised here, after every claimed item has finished.
    """
    n = min(get_threads(), count)
    if n <= 1:
        for i in range(count):
            body(i)
        return
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


def parallel_for_blocks(size, block, body):
    """Cut ``range(size)`` into blocks of ``block`` (the last may be shorter) and run
    ``body(b)`` for each ``slice`` b on the threads, as :func:`parallel_for` does.

    The blocks do not depend on the thread count, so neither does any result.
    """
    count = -(-size // block)
    parallel_for(count, lambda i: body(slice(i * block, min(size, (i + 1) * block))))


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
