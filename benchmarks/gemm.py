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


def machine_info(torch):
    """Versions and hardware, stored with the results."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import numba
    return {"cpu": cpu, "python": platform.python_version(), "numpy": np.__version__, "numpy_blas": blas_name(),
            "numpy_blas_kernels": blas_kernels(),
            "numba": numba.__version__, "torch": torch.__version__ if torch else None}


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
