"""Test-suite settings.

The suite runs every library single-threaded. On a shared 2-core machine, a BLAS that
spins two threads while a neighbour holds one core can run 10-100x slower than one
thread; timings are not what the tests check, but the suite must finish. These must be
set before numpy is first imported, which is why they live here. Anything already set
in the environment wins. tests/test_threads.py runs tinyfcn's own threads explicitly.
"""
import os

for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "TINYFCN_THREADS"):
    os.environ.setdefault(variable, "1")
