"""The notebooks: each runs top to bottom in fast mode, its committed outputs come from its code,
its exercises are unsolved as shipped and solved by ``notebooks/solutions``, and everything it
imports is installed by ``pip install .[notebooks]``.

Every notebook is executed in a fresh kernel with ``TINYFCN_FAST=1`` (small data, few epochs;
outputs are not written back). Separately, the code hash that ``notebooks/build.py`` stores
when it runs a notebook in full mode must match the notebook's code cells, and the stored
outputs must come from one top-to-bottom run: a code cell edited without a rebuild fails here.

Exercises (see ``notebooks/README.md``): a code cell tagged ``exercise`` holds stubs that raise
``NotImplementedError``; the code cell after it, tagged ``check``, prints one line through
``exercises.check``. As committed, every check prints ``✘``; once the functions of
``solutions/NN.py`` are defined (a cell appended after the notebook's last, in the same fast run),
every check, run again, prints ``✔``. The
questions of a notebook (``**Q1.**`` ... in its markdown) are answered in the docstring of
its solutions file (``Q1.`` ... at the start of a line).
"""
import ast
import configparser
import copy
import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))
IDS = [p.name for p in NOTEBOOKS]


def _module(name):
    spec = importlib.util.spec_from_file_location(f"notebooks_{name}", FOLDER / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _module("build")
exercises = _module("exercises")
WITH_EXERCISES = [p for p in NOTEBOOKS if build.tagged(nbformat.read(p, as_version=4), "exercise")]


def _printed(cell):
    """What a code cell printed to stdout."""
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def _assert_checks_print(nb, name, mark):
    """Every check cell of ``nb`` printed exactly one line, beginning with ``mark``."""
    for cell in build.tagged(nb, "check"):
        lines = _printed(cell).splitlines()
        assert len(lines) == 1 and lines[0].startswith(mark), \
            f"{name}: a check printed {lines!r}, expected one line beginning with {mark}"


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 8


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
    _assert_checks_print(nb, path.name, "✘")                      # committed with the exercises unsolved


def _then_solved(nb, path):
    """``nb`` followed by a cell defining the functions of ``solutions/NN.py`` that its exercises ask
    for, then a copy of each of its check cells (tagged ``solved``, not ``check``); and those copies.

    Nothing after an exercise uses the learner's function, so one run shows both: the notebook as
    committed runs to its end (every check ``✘``), and the solutions pass the same checks (``✔``).
    """
    answers = build.functions(build.solutions_file(path).read_text(encoding="utf-8"))
    names = [name for cell in build.tagged(nb, "exercise") for name in build.functions(cell.source)]
    missing = [name for name in names if name not in answers]
    assert not missing, f"{build.solutions_file(path).name} does not define {', '.join(missing)}"
    extended = copy.deepcopy(nb)
    solved = [nbformat.v4.new_code_cell(c.source, metadata={"tags": ["solved"]}) for c in build.tagged(nb, "check")]
    extended.cells += [nbformat.v4.new_code_cell("\n\n\n".join(answers[name] for name in names)), *solved]
    return extended, solved


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_fast_and_its_solutions_pass_the_checks(path):
    nb, solved = nbformat.read(path, as_version=4), []
    if path in WITH_EXERCISES:
        nb, solved = _then_solved(nb, path)
    build.execute(nb, fast=True, timeout=600)      # raises CellExecutionError on a failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    _assert_checks_print(nb, path.name, "✘")
    for cell in solved:
        lines = _printed(cell).splitlines()
        assert len(lines) == 1 and lines[0].startswith("✔"), \
            f"{path.name} with solutions/{build.solutions_file(path).name}: a check printed {lines!r}"


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=[p.name for p in WITH_EXERCISES])
def test_exercises_are_unsolved_stubs_each_followed_by_its_check(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "from exercises import check" in code[0].source, f"{path.name}: the first cell imports the check"
    for cell in build.tagged(nb, "exercise"):
        functions = [n for n in ast.parse(cell.source).body if isinstance(n, ast.FunctionDef)]
        assert functions, f"{path.name}: an exercise cell defines no function"
        for function in functions:
            body = function.body[1:] if ast.get_docstring(function) else function.body
            raises = len(body) == 1 and isinstance(body[0], ast.Raise) and "NotImplementedError" in ast.unparse(body[0])
            assert raises, f"{path.name}: the stub {function.name} must do nothing but raise NotImplementedError"
        following = code[code.index(cell) + 1]
        assert "check" in following.metadata.get("tags", []), f"{path.name}: no check cell after {functions[0].name}"
        for function in functions:
            assert f"check({function.name}," in following.source, f"{path.name}: {function.name} is never checked"


def test_every_notebook_with_exercises_has_solutions_and_answers():
    assert len(WITH_EXERCISES) >= 6
    files = sorted(p.name for p in (FOLDER / "solutions").glob("*.py"))
    assert files == sorted(build.solutions_file(p).name for p in WITH_EXERCISES), \
        "notebooks/solutions/ holds one NN.py for each notebook with exercises, and nothing else"
    for path in WITH_EXERCISES:
        nb = nbformat.read(path, as_version=4)
        source = build.solutions_file(path).read_text(encoding="utf-8")
        answers = build.functions(source)
        for cell in build.tagged(nb, "exercise"):
            for name in build.functions(cell.source):
                assert name in answers, f"{build.solutions_file(path).name} does not solve {name}"
        markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        asked = re.findall(r"\*\*Q(\d+)\.\*\*", markdown)
        answered = re.findall(r"^Q(\d+)\.", ast.get_docstring(ast.parse(source)) or "", flags=re.M)
        assert len(asked) >= 2, f"{path.name}: at least two questions"
        assert asked == answered, f"{path.name} asks {asked}, {build.solutions_file(path).name} answers {answered}"


def _verdict(attempt, answer, cases, outputs=None, capsys=None):
    exercises.check(attempt, answer, cases, outputs)
    return capsys.readouterr().out


def test_check_prints_one_verdict_line(capsys):
    def stub(x):
        raise NotImplementedError

    def buggy(x):
        raise IndexError("index 3 is out of bounds\nfor axis 0")

    cases = {"a ramp": (np.arange(4.0),), "ones": (np.ones(3),)}
    verdicts = {
        "right": _verdict(lambda x: 2 * x, lambda x: 2 * x, cases, capsys=capsys),
        "stub": _verdict(stub, lambda x: 2 * x, cases, capsys=capsys),
        "values": _verdict(lambda x: 2 * x + (x == 3), lambda x: 2 * x, cases, capsys=capsys),
        "shape": _verdict(lambda x: x[:2], lambda x: x, cases, capsys=capsys),
        "none": _verdict(lambda x: None, lambda x: x, cases, capsys=capsys),
        "raises": _verdict(buggy, lambda x: x, cases, capsys=capsys),
        "part": _verdict(lambda x: (x.sum(), x), lambda x: (x.sum(), 2 * x), cases, ("loss", "grad"), capsys),
        "count": _verdict(lambda x: x, lambda x: (x, x), cases, ("loss", "grad"), capsys),
    }
    for kind, text in verdicts.items():
        assert text.count("\n") == 1, f"{kind}: {text!r} is not one line"
        assert text.startswith("✔" if kind == "right" else "✘"), f"{kind}: {text!r}"
    assert verdicts["right"] == "✔ <lambda> matches tinyfcn on all 2 cases\n"
    assert "not implemented yet" in verdicts["stub"]
    assert "case 'a ramp': 1 of 4 values differ, by up to 1 at index (3,)" in verdicts["values"]
    assert "shape (2,), tinyfcn's is (4,)" in verdicts["shape"]
    assert "returned None" in verdicts["none"]
    assert "raised IndexError: index 3 is out of bounds for axis 0" in verdicts["raises"]
    assert "case 'a ramp': grad: 3 of 4 values differ" in verdicts["part"]
    assert "should return 2 values" in verdicts["count"]


def _normalised(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _notebook_extra_and_base():
    """Normalised names of the distributions ``pip install .[notebooks]`` asks for (setup.cfg)."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = (config["options"]["install_requires"].splitlines()
             + config["options.extras_require"]["notebooks"].splitlines())
    return {_normalised(re.match(r"[A-Za-z0-9._-]+", line.strip()).group()) for line in lines if line.strip()}


def _guards(node, module):
    """Whether import ``node``'s statement is optional: under ``if ...find_spec("module")...`` or in a
    ``try`` whose handler catches ImportError (or ModuleNotFoundError)."""
    test = ast.unparse(node.test) if isinstance(node, ast.If) else ""
    if "find_spec" in test and repr(module) in test.replace('"', "'"):
        return True
    if isinstance(node, ast.Try):
        caught = [ast.unparse(h.type) if h.type else "ImportError" for h in node.handlers]
        return any("ImportError" in c or "ModuleNotFoundError" in c for c in caught)
    return False


def _imports(nb):
    """(top-level module, optional?) for every absolute import in the notebook's code cells (magics skipped)."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        tree = ast.parse(source)
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top, above, optional = name.split(".")[0], node, False
                while above in parents and not optional:
                    above = parents[above]
                    optional = _guards(above, top)
                yield top, optional


def test_every_import_is_installed_by_the_notebooks_extra():
    wanted = _notebook_extra_and_base()
    assert {"onnx", "onnxruntime"} <= wanted, "notebook 7 exports to ONNX and runs the model with onnxruntime"
    provides = importlib.metadata.packages_distributions()
    local = {p.stem for p in FOLDER.glob("*.py")} | {"tinyfcn"}      # the notebooks' helpers, the project itself
    for path in NOTEBOOKS:
        for module, optional in _imports(nbformat.read(path, as_version=4)):
            if optional or module in sys.stdlib_module_names or module in local:
                continue
            distributions = provides.get(module)
            assert distributions, f"{path.name} imports {module}, which no installed distribution provides"
            assert any(_normalised(d) in wanted for d in distributions), \
                (f"{path.name} imports {module} (from {', '.join(distributions)}), which neither install_requires "
                 "nor the notebooks extra of setup.cfg installs; add it there, or guard the import")
