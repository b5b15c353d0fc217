"""A regular (non-editable) ``pip install`` ships everything tinyfcn needs, the digits file included."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(args, cwd):
    """Run ``args`` in ``cwd`` without PYTHONPATH, so only what is installed can be imported."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}{done.stderr}"
    return done


def test_a_non_editable_install_makes_the_digits_dataset_from_any_folder(tmp_path):
    # install from a copy of the source, so the build leaves nothing in the checkout
    source = tmp_path / "source"
    shutil.copytree(ROOT / "tinyfcn", source / "tinyfcn", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source)
    # A venv of its own, which sees the packages of the environment running the tests (numba,
    # Pillow, ...) through a .pth file -- a --system-site-packages venv would see the base
    # interpreter's instead, which in a virtualenv lack them.
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = str(venv / "bin" / "python")
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path)
    ours = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    (Path(purelib.stdout.strip()) / "outer.pth").write_text("\n".join(ours) + "\n")
    # this environment's pip installs into that venv, building in an isolated environment
    # (setuptools as pyproject.toml asks), so nothing of this environment's build tools is needed
    run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", str(source)], cwd=tmp_path)
    shutil.rmtree(source)                     # the installed copy must not need the source

    where = run([python, "-c", "import tinyfcn; print(tinyfcn.__file__)"], cwd=tmp_path).stdout.strip()
    assert Path(where).is_relative_to(venv), f"the test imported tinyfcn from {where}, not from the install"
    run([python, "-m", "tinyfcn", "data", "digits", "--out", "d", "--n-train", "4", "--n-val", "2"], cwd=tmp_path)
    for split, n in (("train", 4), ("val", 2)):
        stems = (tmp_path / "d" / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        assert len(stems) == n
        for stem in stems:
            assert (tmp_path / "d" / "JPEGImages" / f"{stem}.png").is_file()
            assert (tmp_path / "d" / "SegmentationClass" / f"{stem}.png").is_file()


def test_the_test_extra_pins_the_torch_oracle_and_the_torch_extra_takes_a_range():
    """``pip install -e ".[test]"`` brings the torch the suite is proven against; ``.[torch]`` downgrades no newer
    proven torch a learner has. The suite, run under a torch, proves that torch: it must lie in the range."""
    import configparser

    from packaging.requirements import Requirement
    from packaging.version import Version

    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "setup.cfg")
    extras = {name: [Requirement(line) for line in value.split("\n") if line.strip()]
              for name, value in config["options.extras_require"].items()}
    (pin,) = [r.specifier for r in extras["test"] if r.name == "torch"]
    (tested,) = [Version(s.version) for s in pin if s.operator == "=="]
    (allowed,) = [r.specifier for r in extras["torch"] if r.name == "torch"]
    assert tested in allowed and not any(s.operator == "==" for s in allowed)
    assert {s.operator for s in allowed} == {">=", "<"}                        # a range, closed above
    try:
        import torch
    except ImportError:
        return
    assert Version(torch.__version__.split("+")[0]) in allowed, f"torch {torch.__version__} is outside {allowed}"
