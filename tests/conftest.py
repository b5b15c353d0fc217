"""Test-suite settings, and the fixtures several test files share.

The suite runs every library single-threaded. On a shared 2-core machine, a BLAS that
spins two threads while a neighbour holds one core can run 10-100x slower than one
thread; timings are not what the tests check, but the suite must finish. These must be
set before numpy is first imported, which is why they live here. Anything already set
in the environment wins. tests/test_threads.py runs tinyfcn's own threads explicitly.
"""
import os

import pytest

for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "TINYFCN_THREADS"):
    os.environ.setdefault(variable, "1")


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    """A small shapes dataset folder (8 train / 4 val images of 32 x 32, seed 0), shared: read it, never write to it."""
    from tinyfcn import datasets
    return datasets.make_dataset("shapes", tmp_path_factory.mktemp("shared") / "shapes", 8, 4, 0, 32)


@pytest.fixture
def error_line(capsys):
    """``error_line()``: what was written to stderr since the last read, which must be one line and no traceback
    (every mistake on the command line is reported so); returns that line."""
    def read():
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        return lines[0]
    return read


@pytest.fixture
def every_job_shared(monkeypatch):
    """Share every job between tinyfcn's threads, however small (:data:`tinyfcn.threads.SMALL_JOB_VALUES`):
    the tests' maps are small, and a test of the thread count must see the threads split the work."""
    from tinyfcn import threads
    monkeypatch.setattr(threads, "SMALL_JOB_VALUES", 0)
    monkeypatch.setattr(threads, "SMALL_JOB_MACS", 0)
