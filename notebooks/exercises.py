"""The check behind every exercise of the notebooks: run the learner's function, compare, print one line.

An exercise is two code cells. The first (tagged ``exercise``) holds a stub whose body
raises ``NotImplementedError``; the learner replaces the body. The second (tagged ``check``)
calls :func:`check`, which runs the learner's function and tinyfcn's answer on the same
named cases and prints exactly one line:

- ``✔ my_im2col matches tinyfcn on all 3 cases``, or
- ``✘ my_im2col: not implemented yet ...`` / ``✘ my_im2col, case '...': ...`` naming the
  first case that differs and how (wrong shape, the largest difference, an exception).

It never raises, so a notebook still runs top to bottom with its exercises unsolved (later
cells use tinyfcn's own functions, not the learner's). The notebooks import it as
``from exercises import check``: a kernel started in this folder (as Jupyter starts one)
has the folder on its import path, and ``build.py`` puts it there for the kernels it starts.
"""
import copy

import numpy as np

RTOL, ATOL = 1e-6, 1e-9
"""How close a float answer must be: ``|mine - tinyfcn's| <= ATOL + RTOL * |tinyfcn's|`` element by element."""


def _differs(mine, theirs):
    """None if ``mine`` matches ``theirs`` (same shape, values within RTOL/ATOL), else what is wrong, in words."""
    if mine is None:
        return "returned None (is the return statement missing?)"
    try:
        mine = np.asarray(mine)
    except ValueError:                                     # a ragged list, say
        return f"returned a {type(mine).__name__} that is not an array"
    theirs = np.asarray(theirs)
    if mine.shape != theirs.shape:
        return f"shape {mine.shape}, tinyfcn's is {theirs.shape}"
    if mine.dtype.kind not in "biuf":
        return f"returned values of dtype {mine.dtype}, not numbers"
    if not np.all(np.isfinite(mine)):
        return f"{np.count_nonzero(~np.isfinite(mine))} of {mine.size} values are inf or NaN"
    close = np.isclose(mine, theirs, rtol=RTOL, atol=ATOL)
    if close.all():
        return None
    gap = np.abs(mine.astype(np.float64) - theirs)
    where = np.unravel_index(np.argmax(np.where(close, -1.0, gap)), gap.shape) if gap.ndim else ()
    at = f" at index {tuple(int(i) for i in where)}" if where else ""
    return (f"{np.count_nonzero(~close)} of {close.size} values differ, by up to {gap.max():.3g}{at} "
            f"(yours {mine[where]:.6g}, tinyfcn's {theirs[where]:.6g})")


def check(attempt, answer, cases, outputs=None):
    """Run ``attempt`` and ``answer`` on every case and print one line: ``✔ ...`` if all agree, else ``✘ ...``.

    Parameters
    ----------
    attempt : callable
        The learner's function.
    answer : callable
        tinyfcn's answer, called with the same arguments.
    cases : dict of str -> tuple
        A description of each case (printed when it fails) -> the positional arguments. Both
        functions get their own deep copy, so an attempt that writes into its inputs spoils nothing.
    outputs : tuple of str, optional
        Names of the parts when both functions return a tuple, e.g. ``("loss", "dscores")``;
        each part is compared on its own and a mismatch names the part.

    Nothing is returned (the line is the verdict), so a check as a cell's last line shows only that line.
    """
    print(_verdict(getattr(attempt, "__name__", "your function"), attempt, answer, cases, outputs))


def _verdict(name, attempt, answer, cases, outputs):
    """The one line :func:`check` prints."""
    for description, args in cases.items():
        try:
            mine = attempt(*copy.deepcopy(args))
        except NotImplementedError:
            return (f"✘ {name}: not implemented yet (its body raises NotImplementedError); "
                    "write it in the cell above, run that cell, then this one")
        except Exception as error:                          # any bug of the learner's is a verdict, not a crash
            return f"✘ {name}, case {description!r}: raised {type(error).__name__}: {' '.join(str(error).split())}"
        theirs = answer(*copy.deepcopy(args))
        parts = [(None, mine, theirs)]
        if outputs is not None:
            if not isinstance(mine, tuple) or len(mine) != len(outputs):
                return f"✘ {name}, case {description!r}: should return {len(outputs)} values: {', '.join(outputs)}"
            parts = list(zip(outputs, mine, theirs))
        for part, m, t in parts:
            problem = _differs(m, t)
            if problem:
                return f"✘ {name}, case {description!r}: {'' if part is None else part + ': '}{problem}"
    return f"✔ {name} matches tinyfcn on " + (f"all {len(cases)} cases" if len(cases) > 1 else "its one case")
