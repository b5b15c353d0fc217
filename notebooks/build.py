"""Execute the notebooks in full mode and write their outputs back.

    python notebooks/build.py                 # every notebook in this folder
    python notebooks/build.py 03_transposed_convolution.ipynb ...
    python notebooks/build.py --check         # only verify the stored code hashes (runs nothing)

The ``.ipynb`` files are the source: edit a notebook, then run this script so that the
committed outputs are those of the committed code. For each notebook it runs every cell
top to bottom in a fresh kernel with ``TINYFCN_FAST=0`` and stores in the notebook's
metadata, under ``"tinyfcn"``, the SHA-256 of its code cells (``code_sha256``), the mode
and the run time. ``tests/test_notebooks.py`` recomputes the hash, so a code cell changed
without a rebuild fails the suite.

Exercises: a code cell tagged ``exercise`` defines the learner's functions, each a stub that
raises ``NotImplementedError``; the code cell after it, tagged ``check``, calls
``exercises.check`` and prints one line, ``✘ ...`` or ``✔ ...``. The solutions are the
functions of the same names in ``solutions/NN.py`` (NN: the notebook's number).
:func:`solve` returns a notebook with each exercise cell's source replaced by those
functions' source, which the test suite runs to see every check print ``✔``.
"""
import argparse
import ast
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
SOLUTIONS = HERE / "solutions"


def code_hash(nb):
    """SHA-256 of the notebook's code cells, in order (the sources only; outputs and markdown excluded)."""
    h = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
            h.update(source.encode("utf-8"))
            h.update(b"\0")                 # cell boundary: moving a line between cells changes the hash
    return h.hexdigest()


def notebooks(names=()):
    """The notebooks to build: the given file names, or every ``*.ipynb`` in this folder, in order."""
    if names:
        return [HERE / Path(n).name for n in names]
    return sorted(HERE.glob("*.ipynb"))


def execute(nb, fast, timeout=1800):
    """Run ``nb`` in place in a fresh kernel, in an empty temporary folder; returns the seconds taken.

    The kernel inherits the environment: ``TINYFCN_FAST`` set to 1 or 0, and this folder put
    first on ``PYTHONPATH``, so that ``from exercises import check`` works as it does in a
    kernel that Jupyter starts here.
    """
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    settings = {"TINYFCN_FAST": "1" if fast else "0", "PYTHONPATH": path}
    old = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            NotebookClient(nb, timeout=timeout, kernel_name="python3",
                           resources={"metadata": {"path": folder}}).execute()
            return time.perf_counter() - start
    finally:
        for key, value in old.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value


def tagged(nb, tag):
    """The code cells of ``nb`` whose metadata tags include ``tag`` (``"exercise"``, ``"check"``), in order."""
    return [c for c in nb.cells if c.cell_type == "code" and tag in c.metadata.get("tags", [])]


def solutions_file(path):
    """``solutions/NN.py`` for the notebook ``NN_name.ipynb``."""
    return SOLUTIONS / f"{Path(path).name.split('_')[0]}.py"


def functions(source):
    """Name -> source text of every function that ``source`` defines at its top level, in order."""
    return {node.name: ast.get_source_segment(source, node)
            for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)}


def build(path):
    nb = nbformat.read(path, as_version=4)
    seconds = execute(nb, fast=False)
    nb.metadata["tinyfcn"] = {"code_sha256": code_hash(nb), "mode": "full", "seconds": round(seconds, 1)}
    nbformat.write(nb, path)
    return seconds


def check(path):
    """None when the stored hash matches the code cells, else a message."""
    nb = nbformat.read(path, as_version=4)
    stored = nb.metadata.get("tinyfcn", {}).get("code_sha256")
    if stored != code_hash(nb):
        return f"{path.name}: code cells changed since the last build; run python notebooks/build.py {path.name}"
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook file names (default: all)")
    parser.add_argument("--check", action="store_true", help="only verify the stored code hashes")
    args = parser.parse_args(argv)
    if args.check:
        problems = [p for p in map(check, notebooks(args.names)) if p]
        print("\n".join(problems) or "every notebook's outputs come from its code")
        return 1 if problems else 0
    for path in notebooks(args.names):
        print(f"{path.name}: {build(path):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
