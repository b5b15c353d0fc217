"""Worker: the machine's measured float32 matrix-multiply speed (GFLOP/s), numpy and torch.

Every convolution in tinyfcn ends in a numpy matrix product, so numpy's GEMM speed at
this thread count is the ceiling for the convolutions: read each conv's GFLOP/s as a
fraction of it. Shapes: a large square product (close to the BLAS's best case) and a
convolution-like one, (128, 1152) @ (1152, 512) -- conv4_2's weight (C_out, C_in*9)
times a slice of its im2col columns.

Run by ``run.py``; by hand: ``python benchmarks/gemm.py '{"out": "g.json", "quick": true}'``.
"""
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
from _common import compare, import_torch, log, read_job, threads_from_env, write_result

SHAPES = ((1024, 1024, 1024), (128, 1152, 512))
"""(M, K, N): an (M, K) @ (K, N) product, 2*M*K*N flops."""


def blas_name():
    """Which BLAS numpy uses (e.g. ``scipy-openblas 0.3.x``), if numpy says."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:                       # older numpy: no dict mode
        return "unknown"


def blas_kernels():
    """The kernels numpy's BLAS picked for this CPU (threadpoolctl's "architecture"), and why.

    OpenBLAS chooses them when it loads, from the CPU -- unless ``OPENBLAS_CORETYPE`` is set,
    which forces a choice (e.g. ``Haswell``: AVX2 kernels, even on a CPU with AVX-512).
    """
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    found = [i.get("architecture") or i.get("internal_api") for i in threadpool_info() if i.get("user_api") == "blas"]
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return ", ".join(map(str, found)) + (f" (OPENBLAS_CORETYPE={forced} is set)" if forced else " (detected)")


def cpu_info():
    """``(model name, widest vector ISA)`` from ``/proc/cpuinfo``: "AVX-512", "AVX2", "AVX" or "SSE only"."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return "unknown", "unknown"

    def field(key):
        return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(key)), "")

    flags = set(field("flags").split())
    isa = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")) if flag in flags),
               "SSE only" if flags else "unknown")
    return field("model name") or "unknown", isa


def cpu_idle(root="/"):
    """How an idle CPU waits for work, from sysfs: the cpuidle driver and governor and, with the
    ``haltpoll`` driver of a virtual machine, how long it polls before it halts
    (``guest_halt_poll_ns``). At 0 an idle CPU halts at once, and waking a thread on it goes through
    the hypervisor: docs/speed.md ("Two threads") measures what that costs a hand-over between
    tinyfcn's threads. ``root`` is put before every path (a test lays out its own tree)."""
    found = {}                                           # label -> value, the first file that says
    for label, path in (("driver", "sys/devices/system/cpu/cpuidle/current_driver"),
                        ("governor", "sys/devices/system/cpu/cpuidle/current_governor"),
                        ("governor", "sys/devices/system/cpu/cpuidle/current_governor_ro"),
                        ("guest_halt_poll_ns", "sys/module/haltpoll/parameters/guest_halt_poll_ns")):
        try:
            value = (Path(root) / path).read_text().strip()
        except OSError:
            continue
        if value:
            found.setdefault(label, value)
    return ", ".join(f"{label} {value}" for label, value in found.items()) or "unknown"


ONEDNN_PROBE = """
import torch
x = torch.zeros(8, 16, 32, 32)
with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
    torch.nn.functional.conv2d(x, torch.zeros(16, 16, 3, 3), padding=1)
"""
"""One convolution with oneDNN's verbose mode on (a fresh process: oneDNN prints its ISA line once per process)."""


def onednn_isa():
    """The instruction set oneDNN dispatches to (its ``cpu,isa:`` line), as PyTorch's convolutions run it.

    oneDNN picks the widest the CPU offers unless ``ONEDNN_MAX_CPU_ISA`` caps it. The line is read
    from one small convolution in a fresh ``python`` with the same environment.
    """
    try:
        done = subprocess.run([sys.executable, "-c", ONEDNN_PROBE], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    isa = [line.split("isa:", 1)[1] for line in done.stdout.splitlines() if ",cpu,isa:" in line]
    return isa[0] if isa else "unknown (no oneDNN ISA line)"


def machine_info(torch):
    """Versions and hardware, stored with the results: the CPU's vector ISA, numpy's BLAS and the
    kernels it chose, and the ISA PyTorch's own kernels and its oneDNN convolutions use."""
    cpu, isa = cpu_info()
    import numba
    info = {"cpu": cpu, "vector_isa": isa, "cpu_idle": cpu_idle(), "python": platform.python_version(),
            "numpy": np.__version__,
            "numpy_blas": blas_name(), "numpy_blas_kernels": blas_kernels(),
            "numba": numba.__version__, "torch": torch.__version__ if torch else None}
    if torch is not None:
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["torch_onednn_isa"] = onednn_isa() if torch.backends.mkldnn.is_available() else "oneDNN not built in"
    return info


def main():
    job = read_job()
    torch = import_torch()
    rng = np.random.default_rng(0)
    rows = []
    for M, K, N in SHAPES:
        a = rng.standard_normal((M, K), dtype=np.float32)
        b = rng.standard_normal((K, N), dtype=np.float32)
        fns = {"numpy": lambda: a @ b}
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            fns["torch"] = lambda: ta @ tb
        log(f"  gemm {M}x{K} @ {K}x{N}")
        times = compare(fns, repeats=5 if job["quick"] else 11, target_seconds=0.05 if job["quick"] else 0.15)
        flops = 2 * M * K * N
        rows.append({"shape": [M, K, N], "flops": flops,
                     **{f"{lib}_s": t for lib, t in times.items()},
                     **{f"{lib}_gflops": flops / t["median"] / 1e9 for lib, t in times.items()}})
    write_result(job["out"], {"threads": threads_from_env(), "machine": machine_info(torch), "gemm": rows})


if __name__ == "__main__":
    main()
