"""The one atomic writer (unique temp files, nothing left behind, normal permissions) and the JSON sanitiser."""
import json
import math
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from tinyfcn.files import atomic_write, json_safe


def test_writes_the_file_creating_folders(tmp_path):
    target = tmp_path / "a" / "b" / "out.bin"
    assert atomic_write(target, lambda f: f.write(b"hello")) == target
    assert target.read_bytes() == b"hello"
    assert os.listdir(target.parent) == ["out.bin"]


def test_two_concurrent_saves_to_the_same_name_do_not_collide(tmp_path):
    target, both_writing, errors = tmp_path / "fig.png", threading.Barrier(2, timeout=10), []

    def save(content):
        def write(f):
            f.write(content)
            both_writing.wait()                # both temporary files are written before either is moved
        try:
            atomic_write(target, write)
        except BaseException as e:             # pragma: no cover - the failure this test looks for
            errors.append(e)

    threads = [threading.Thread(target=save, args=(bytes([n]) * 100_000,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert target.read_bytes() in (b"\x01" * 100_000, b"\x02" * 100_000)      # one whole file, not a mix
    assert os.listdir(tmp_path) == ["fig.png"]


@pytest.mark.parametrize("crash", [OSError("disk full"), KeyboardInterrupt()], ids=["OSError", "KeyboardInterrupt"])
def test_a_crash_inside_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, crash):
    target = tmp_path / "history.json"
    target.write_bytes(b"old")

    def write(f):
        f.write(b"half of the new")
        raise crash
    with pytest.raises(type(crash)):
        atomic_write(target, write)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["history.json"]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)], ids=["umask-022", "umask-027"])
def test_written_files_get_the_mode_open_would_give(tmp_path, umask, mode):
    # the umask is read when tinyfcn.files is imported, so set it first, in a fresh interpreter
    code = (f"import os; os.umask({umask:#o}); from tinyfcn.files import atomic_write; "
            f"atomic_write({str(tmp_path / 'out.bin')!r}, lambda f: f.write(b'x'))")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "out.bin").stat().st_mode & 0o777 == mode


def test_json_safe_turns_nan_inf_and_numpy_values_into_json():
    value = {"loss": np.float32(0.5), "iou": [0.5, math.nan, np.float64("inf")], "n": np.int64(3),
             "matrix": np.array([[1, 2], [3, 4]]), "ok": np.bool_(True), "none": None, "name": "fcn8s"}
    safe = json_safe(value)
    assert safe == {"loss": 0.5, "iou": [0.5, None, None], "n": 3, "matrix": [[1, 2], [3, 4]], "ok": True,
                    "none": None, "name": "fcn8s"}
    assert type(safe["n"]) is int and type(safe["loss"]) is float
    json.loads(json.dumps(safe, allow_nan=False))
