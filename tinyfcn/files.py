"""Writing files safely: :func:`atomic_write` for every file tinyfcn writes, :func:`json_safe` for JSON.

Checkpoints, dataset images and masks, split lists, figures and ``history.json`` all go
through :func:`atomic_write`, so a reader sees the old file or the complete new one, never
half a file, and two processes or threads saving the same name at once do not collide.
"""
import math
import os
import tempfile
from pathlib import Path

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
"""The permissions of written files: what ``open()`` would give (the umask is read once, at import)."""
DIR_MODE = 0o777 & ~_UMASK
"""The permissions of created folders: what ``os.mkdir()`` would give."""


def atomic_write(path, write):
    """Call ``write(f)`` on a new temporary file beside ``path``, then move it over ``path`` with ``os.replace``.

    The temporary file has a unique name (:func:`tempfile.mkstemp`), so concurrent writers
    never share one. Its data is flushed and fsync'ed before the move. If anything fails,
    Ctrl-C included, the temporary file is removed and ``path`` is left as it was. Missing
    parent folders are created; the file gets the mode ``0o666 & ~umask``, like ``open()``.

    Parameters
    ----------
    path : str or Path
    write : callable
        ``write(f)`` writes the contents to ``f``, a file opened for binary writing. A writer
        that only takes a file name (e.g. one that opens the file itself) may write to
        the file named ``f.name`` instead.

    Returns
    -------
    Path, the written file
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.close(fd)                      # reopened by name, so that f.name is the temporary file
        os.chmod(tmp, FILE_MODE)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def json_safe(value):
    """``value`` with NaN and inf as None and NumPy scalars and arrays as Python numbers and lists.

    Dicts, lists and tuples are converted item by item, so the result is valid JSON for
    ``json.dumps`` (which would otherwise write NaN, an invalid token, or fail on arrays).
    """
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
