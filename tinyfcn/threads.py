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

The default is one thread per core this process may run on
(``os.sched_getaffinity``), at most :data:`MAX_DEFAULT`; the environment variable
``TINYFCN_THREADS`` overrides it. Pass ``--threads 1`` on the command line, or call
``set_threads(1)``, when you run several trainings side by side on purpose, or
to measure one core.

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
from concurrent.futures import ThreadPoolExecutor

MAX_DEFAULT = 8
"""The default never exceeds this: a batch of 8 has only 8 images to share out."""

_state = {"n": None, "blas": None}   # n: tinyfcn's threads (None: not chosen yet); blas: the BLAS limit we set
_pool = {"n": 0, "executor": None}
_local = threading.local()      # per-thread scratch buffers
_lock = threading.Lock()


def default_threads():
    """``TINYFCN_THREADS`` if set, else the cores this process may use (at most :data:`MAX_DEFAULT`)."""
    env = os.environ.get("TINYFCN_THREADS", "").strip()
    if env:
        n = int(env)
        if n < 1:
            raise ValueError(f"TINYFCN_THREADS must be a positive integer, got {env!r}")
        return n
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:                       # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT))


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
    return _state["n"]


def set_threads(n):
    """Compute with ``n`` threads from now on (None: the default, see :func:`default_threads`).

    Also sets numpy's BLAS to one thread, so that only tinyfcn's threads run.
    Returns the previous count (None if it had not been chosen yet).
    """
    if n is None:
        n = default_threads()
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    previous = _state["n"]
    _state["n"] = n
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
    previous = set_threads(n)
    try:
        yield n
    finally:
        _state["n"] = previous
        if not had_blas:
            restore_blas()


def _executor(n):
    with _lock:
        if _pool["n"] != n:
            if _pool["executor"] is not None:
                _pool["executor"].shutdown(wait=True)
            _pool["executor"] = ThreadPoolExecutor(n - 1, thread_name_prefix="tinyfcn") if n > 1 else None
            _pool["n"] = n
        return _pool["executor"]


def parallel_for(count, body):
    """Run ``body(i)`` for every ``i`` in ``range(count)``, spread over tinyfcn's threads.

    Each thread claims the next unclaimed ``i`` until none is left (so a slow or
    descheduled thread holds up only the item it has). Every ``body(i)`` must write
    only its own part of the output. The calling thread works too. The first
    exception raised by any ``body`` is raised here, after every thread has stopped.
    """
    n = min(get_threads(), count)
    if n <= 1:
        for i in range(count):
            body(i)
        return
    items = iter(range(count))
    claim = threading.Lock()
    failed = []

    def work():
        while not failed:
            with claim:
                i = next(items, None)
            if i is None:
                return
            try:
                body(i)
            except BaseException as error:       # stop the others, re-raise in the caller
                failed.append(error)
                return

    futures = [_executor(get_threads()).submit(work) for _ in range(1, n)]
    try:
        work()
    finally:
        for f in futures:
            f.result()
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
