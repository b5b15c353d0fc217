"""NumPy's own BLAS, for the matrix products inside numba kernels.

numba's ``np.dot`` calls SciPy's BLAS (``scipy.linalg.cython_blas``): a second OpenBLAS beside
NumPy's, often of another version (SciPy 1.17's wheels carry OpenBLAS 0.3.30, NumPy 2.4's 0.3.31).
:func:`gemm_address` gives the address of NumPy's ``cblas_sgemm`` or ``cblas_dgemm``, which
:func:`tinyfcn.ops._kernels.product` calls instead: the Winograd kernels' products then run on the
BLAS every other product of tinyfcn runs on (``np.matmul``), with its bits. Measured on a 2-core AMD
EPYC (Zen 3, AVX2: both libraries use their Haswell kernels), both held at one thread, the 48
products of a forward + backward pass of FCN-8s's Winograd layers at batch 8 took 17.5 ms on NumPy's
BLAS against 25.0 on SciPy's (conv1_2 4.5 against 7.8, conv4_2 2.5 against 3.0), with the same
bits in every layer; ``python benchmarks/run.py --only breakdown`` compares the two on any machine.

Only the OpenBLAS of NumPy's PyPI wheels is looked for (``scipy-openblas64``: 64-bit integer
arguments, symbols ``scipy_cblas_sgemm64_`` and ``scipy_cblas_dgemm64_``, in a library that
NumPy's package carries). With any other BLAS (a conda NumPy's, Apple's Accelerate) the address is
0, and the kernels call ``np.dot``.
"""
import ctypes
import functools
from pathlib import Path

import numpy as np

SYMBOLS = {np.dtype(np.float32): "scipy_cblas_sgemm64_", np.dtype(np.float64): "scipy_cblas_dgemm64_"}


@functools.cache
def _numpy_blas():
    """NumPy's own BLAS library (a ``ctypes.CDLL``) when it is the wheels' OpenBLAS, else None."""
    from threadpoolctl import threadpool_info
    home = Path(np.__file__).resolve().parent                          # .../numpy; its libraries: numpy.libs or numpy/.dylibs
    for library in threadpool_info():
        path = Path(library["filepath"]).resolve()
        if library["user_api"] != "blas" or not (path.is_relative_to(home) or path.is_relative_to(home.parent / "numpy.libs")):
            continue
        try:
            blas = ctypes.CDLL(str(path))
        except OSError:
            return None
        return blas if all(hasattr(blas, symbol) for symbol in SYMBOLS.values()) else None
    return None


@functools.cache
def gemm_address(dtype):
    """The address of NumPy's ``cblas_?gemm`` for ``dtype`` (float32 or float64; row-major, 64-bit integer
    arguments), or 0 when there is none tinyfcn can call (another BLAS, another dtype)."""
    blas, symbol = _numpy_blas(), SYMBOLS.get(np.dtype(dtype))
    if blas is None or symbol is None:
        return 0
    return ctypes.cast(getattr(blas, symbol), ctypes.c_void_p).value
