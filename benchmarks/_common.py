"""What every benchmark worker shares: thread settings, interleaved timing, result files.

The workers (``gemm.py``, ``ops.py``, ``model.py``, ``startup.py``, ``breakdown.py``) are
started by ``run.py`` as separate processes, each with the thread count already in its
environment. This module imports nothing heavy (no numpy, no torch), so importing it
never fixes a thread pool before the environment says how big it should be.
"""
import gc
import json
import os
import statistics
import sys
import time

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
"""Environment variables that size the thread pools of OpenMP, OpenBLAS, MKL and numba."""

NO_TORCH_VAR = "TINYFCN_BENCH_NO_TORCH"
"""Set to 1 to run as if torch were not installed (``run.py --no-torch``)."""


BENCH_THREADS_VAR = "TINYFCN_BENCH_THREADS"
"""The thread count a worker was started with; 0 means each library's own default."""


def thread_env(threads, base=None):
    """A copy of the environment with every thread-pool variable (and tinyfcn's) set to ``threads``.

    ``threads=0`` removes them instead: each library then picks its own default, as it
    does for a user who sets nothing (torch: one thread per core; tinyfcn: see
    ``tinyfcn.threads``).
    """
    env = dict(os.environ if base is None else base)
    for name in THREAD_VARS + ("TINYFCN_THREADS",):
        if threads:
            env[name] = str(threads)
        else:
            env.pop(name, None)
    env[BENCH_THREADS_VAR] = str(threads)
    return env


def threads_from_env():
    """The thread count this process was started with (0: the libraries' defaults)."""
    return int(os.environ.get(BENCH_THREADS_VAR, os.environ.get("OMP_NUM_THREADS", "1")))


def import_torch():
    """torch, set to this process's thread count; None if it is not installed or disabled."""
    if os.environ.get(NO_TORCH_VAR) == "1":
        return None
    try:
        import torch
    except ImportError:
        return None
    if threads_from_env():
        torch.set_num_threads(threads_from_env())
    return torch


def log(*parts):
    """Progress messages go to stderr, so stdout stays free for the tables."""
    print(*parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- timing


def time_calls(fn, number):
    """Seconds per call of ``fn()``, averaged over ``number`` back-to-back calls (garbage collector off)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - start) / number
    finally:
        if enabled:
            gc.enable()


def calls_per_sample(fn, target_seconds):
    """How many calls make one timing sample last about ``target_seconds`` (1 to 1000).

    Very fast ops are called many times per sample so that the timer's resolution and
    the loop overhead do not matter; slow ones once.
    """
    once = time_calls(fn, 1)
    return int(max(1, min(1000, round(target_seconds / max(once, 1e-9)))))


def summarize(samples):
    """Median and quartiles (seconds) of a list of per-call timings."""
    q = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
    return {"median": statistics.median(samples), "q1": q[0], "q3": q[2], "repeats": len(samples)}


def compare(fns, repeats, target_seconds, warmup=2):
    """Time several functions doing the same job, interleaved, and return ``{name: summary}``.

    Each function is first called ``warmup`` times (numba compiles, or loads from its
    cache, on the first call; torch and the BLAS allocate buffers on theirs). Then the
    samples alternate A, B, B, A, A, B, ...: a burst of load from the other programs on
    this shared machine hits both sides alike instead of one of them. Each sample is
    ``number`` calls long (see :func:`calls_per_sample`) and gives the time per call;
    the summary is over the samples, so the median is robust to a few bad ones.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    numbers = {name: calls_per_sample(fns[name], target_seconds) for name in names}
    samples = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else reversed(names)):
            samples[name].append(time_calls(fns[name], numbers[name]))
    return {name: {**summarize(samples[name]), "calls_per_sample": numbers[name]} for name in names}


# ---------------------------------------------------------------- worker I/O


def read_job():
    """The job description a worker was started with: ``argv[1]`` is a JSON string."""
    return json.loads(sys.argv[1])


def write_result(path, result):
    """Write a worker's result where ``run.py`` asked for it."""
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
