"""The package layout is the architecture: no module imports from a layer above its own, and the
short public paths (``from tinyfcn import functional, nn, ...``) lead to the modules they name."""
import ast
import importlib
from pathlib import Path

import pytest

import tinyfcn

PACKAGE = Path(tinyfcn.__file__).resolve().parent
LAYERS = {"labels": 0, "files": 0, "threads": 0, "ops": 1, "networks": 2, "datasets": 2, "training": 3,
          "export": 3, "viz": 4, "cli": 5, "__main__": 6, "__init__": 6}
"""Top-level module or folder of tinyfcn -> its layer; a module may import only from lower layers
or from its own folder."""


def _unit(module):
    """'tinyfcn.ops.nn' -> 'ops'; 'tinyfcn.viz' -> 'viz'; 'tinyfcn' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path):
    """The tinyfcn modules ``path`` imports, as absolute names (relative imports resolved)."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = list(rel[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if not module.startswith("tinyfcn"):
                continue
            names = [module + "." + a.name for a in node.names] if node.module is None else [module]
            found += names
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("tinyfcn")]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_no_import_runs_upward(path):
    own = _unit("tinyfcn." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    for module in _imports(path):
        other = _unit(module)
        assert other == own or LAYERS[other] < LAYERS[own], \
            f"{path.relative_to(PACKAGE)} (layer {LAYERS[own]}) imports {module} (layer {LAYERS[other]})"


def test_every_folder_and_module_has_a_layer():
    units = {p.name if p.is_dir() else p.stem for p in PACKAGE.iterdir()
             if (p.is_dir() and (p / "__init__.py").is_file()) or p.suffix == ".py"}
    assert units == set(LAYERS)


@pytest.mark.parametrize("name", sorted(tinyfcn.SHORT_PATHS))
def test_short_paths_name_the_modules(name):
    assert getattr(tinyfcn, name) is importlib.import_module(f"tinyfcn.{tinyfcn.SHORT_PATHS[name]}")


def test_the_public_import_line_works():
    from tinyfcn import (  # noqa: F401
        checkpoint,
        datasets,
        export,
        functional,
        metrics,
        models,
        nn,
        optim,
    )
    assert models.FCN8s and optim.SGD and export.to_torch and functional.conv2d_forward


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tinyfcn.nope  # noqa: B018
