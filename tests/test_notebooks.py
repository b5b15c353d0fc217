"""The notebooks: each runs top to bottom in fast mode, and its committed outputs come from its code.

Every notebook is executed in a fresh kernel with ``TINYFCN_FAST=1`` (small data, few epochs;
outputs are not written back). Separately, the code hash that ``notebooks/build.py`` stores
when it runs a notebook in full mode must match the notebook's code cells, and the stored
outputs must come from one top-to-bottom run: a code cell edited without a rebuild fails here.
"""
import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

FOLDER = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))
IDS = [p.name for p in NOTEBOOKS]


def _build_module():
    spec = importlib.util.spec_from_file_location("notebooks_build", FOLDER / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _build_module()


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 6


def test_one_numbered_path():
    numbers = [p.name.split("_")[0] for p in NOTEBOOKS]
    assert numbers == [f"{i:02d}" for i in range(1, len(NOTEBOOKS) + 1)], "numbered 01, 02, ... without gaps or twins"
    readme = (FOLDER / "README.md").read_text()
    for p in NOTEBOOKS:
        assert p.name in readme, f"{p.name} is not listed in notebooks/README.md"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_outputs_come_from_the_code(path):
    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("tinyfcn", {})
    assert meta.get("mode") == "full", f"{path.name}: not built by notebooks/build.py"
    assert meta.get("code_sha256") == build.code_hash(nb), build.check(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), \
        f"{path.name}: the outputs are not those of one top-to-bottom run"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_fast(path):
    nb = nbformat.read(path, as_version=4)
    build.execute(nb, fast=True, timeout=600)      # raises CellExecutionError on a failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
