"""The README's Python examples run, and the one that trains gives the same figure every time."""
import re
import subprocess
import sys
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def _run(code):
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_ten_lines_run():
    block = next(b for b in BLOCKS if "models.FCN8s" in b)
    _run(block + "\nimport numpy as np\nassert abs(loss - np.log(4)) < 1e-5\n")


def test_your_own_arrays_gives_the_figure_it_says_every_time():
    block = next(b for b in BLOCKS if "Sequential" in b)
    stated = float(re.search(r'\["mean_iou"\]\s+# ([0-9.]+)', block).group(1))
    code = block.replace('evaluate(model, Dataset.from_arrays(X, Y))["mean_iou"]',
                         'print(evaluate(model, Dataset.from_arrays(X, Y))["mean_iou"])')
    first, second = (float(_run(code).split()[-1]) for _ in range(2))
    assert first == second and round(first, 3) == stated
