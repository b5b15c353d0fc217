"""Worker: how long from starting ``python`` to the first finished FCN-8s training step.

tinyfcn's kernels are compiled by numba on first use and cached on disk
(``cache=True``). Here every run is a fresh ``python -c ...`` process whose
``NUMBA_CACHE_DIR`` points at a folder of our own:

- cold: the folder is new and empty, so every kernel is compiled;
- warm: the same folder again, so every kernel should be loaded, not compiled.

The child reports its own breakdown (imports, model construction, first forward, first
backward + SGD step, and a second step for comparison) and numba's own count of cache
hits and misses for every kernel: a warm run that recompiles nothing has no misses.
The parent also lists the cache folder's index (``.nbi``) and data (``.nbc``) files
after each run, to show that a warm run writes nothing new.
"""
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _common import log, read_job, threads_from_env, write_result

CHILD = r"""
import json, time
t_start = time.time()
import numpy as np
from tinyfcn.ops import _kernels
from tinyfcn import nn
from tinyfcn.networks.models import FCN8s
from tinyfcn.training.optim import SGD
t_import = time.time()

model = FCN8s(4)
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 3, 64, 64)).astype(np.float32)
y = rng.integers(0, 4, (8, 64, 64))
loss_fn = nn.SoftmaxCrossEntropy()
opt = SGD(model.params, lr=0.01, momentum=0.9, weight_decay=5e-4)
t_build = time.time()

def step():
    loss_fn.forward(model.forward(x), y)
    t = time.time()
    model.backward(loss_fn.backward(), input_grad=False)   # as train_step: no gradient of the images
    opt.step(model.grads)
    return t

t_forward = step()
t_step = time.time()
step()
t_step2 = time.time()

hits = misses = 0
for f in vars(_kernels).values():
    stats = getattr(f, "stats", None)
    if stats is not None and hasattr(stats, "cache_hits"):
        hits += sum(stats.cache_hits.values())
        misses += sum(stats.cache_misses.values())
print(json.dumps(dict(start=t_start, import_s=t_import - t_start, build_s=t_build - t_import,
                      first_forward_s=t_forward - t_build, first_backward_step_s=t_step - t_forward,
                      first_step_done=t_step, second_step_s=t_step2 - t_step,
                      numba_cache_hits=hits, numba_cache_misses=misses)))
"""


def cache_files(folder):
    """``{relative path: mtime}`` of numba's index (.nbi) and data (.nbc) files under ``folder``."""
    root = pathlib.Path(folder)
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.suffix in (".nbi", ".nbc")}


def run_child(cache_dir):
    """Start a fresh python, wait for it; return its report plus the wall time from launch to its first step."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    launched = time.time()
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"start-up child failed:\n{proc.stderr}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    report["launch_to_first_step_s"] = report["first_step_done"] - launched
    report["interpreter_start_s"] = report["start"] - launched
    return report


def main():
    job = read_job()
    cold_runs, warm_runs = (1, 1) if job["quick"] else (2, 2)
    cold, warm, checks = [], [], []
    for r in range(cold_runs):
        folder = tempfile.mkdtemp(prefix="tinyfcn-numba-cache-")
        try:
            log(f"  cold start {r + 1}/{cold_runs} (empty numba cache: {folder})")
            cold.append(run_child(folder))
            after_cold = cache_files(folder)
            for w in range(warm_runs):
                log(f"  warm start {w + 1}/{warm_runs} (same cache)")
                warm.append(run_child(folder))
            after_warm = cache_files(folder)
            checks.append({"index_files": sum(f.endswith(".nbi") for f in after_cold),
                           "data_files": sum(f.endswith(".nbc") for f in after_cold),
                           "files_written_by_warm_runs": sorted(f for f in after_warm
                                                                if after_cold.get(f) != after_warm[f])})
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def median(runs, key):
        return statistics.median(run[key] for run in runs)

    keys = ("launch_to_first_step_s", "interpreter_start_s", "import_s", "build_s", "first_forward_s",
            "first_backward_step_s", "second_step_s", "numba_cache_hits", "numba_cache_misses")
    write_result(job["out"], {"threads": threads_from_env(), "cold_runs": cold, "warm_runs": warm, "cache": checks,
                              "cold": {k: median(cold, k) for k in keys}, "warm": {k: median(warm, k) for k in keys}})


if __name__ == "__main__":
    main()
