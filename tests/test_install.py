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
    venv = tmp_path / "venv"             # without its own pip and setuptools: it uses this interpreter's
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], cwd=tmp_path)
    python = str(venv / "bin" / "python")
    run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(source)], cwd=tmp_path)
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
