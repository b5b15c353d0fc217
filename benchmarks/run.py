"""tinyfcn's benchmark suite against PyTorch: one command, tables on stdout, everything in JSON.

    python benchmarks/run.py                 # full run at 1 thread (about 5-10 minutes)
    python benchmarks/run.py --quick         # smoke run (about a minute)
    python benchmarks/run.py --threads 1 2   # adds a separate 2-thread section
    python benchmarks/run.py --only ops      # a subset: gemm, ops, model, startup, breakdown
    OPENBLAS_CORETYPE=Haswell python benchmarks/run.py   # gemm, ops, model twice: as set, and with it removed
    python benchmarks/run.py --show benchmarks/results/<file>.json   # re-print saved tables

Every measurement group runs in a worker process started with OMP/OpenBLAS/MKL/numba
thread counts already in its environment (a thread pool's size is fixed when the
library loads, so setting it later in the same process does not work). This file
therefore imports neither numpy nor torch. See README.md for what each column means.
"""
import argparse
import atexit
import contextlib
import datetime
import importlib.util
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import report
from _common import NO_TORCH_VAR, log, thread_env

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"
SECTIONS = ("gemm", "ops", "model", "epoch", "startup", "breakdown", "busy")
ONCE = ("epoch", "startup", "breakdown", "busy")
"""Sections measured at the first thread count only (compile time and profiles do not need a second one)."""
MODELS = (("fcn32s", "none"), ("fcn16s", "none"), ("fcn8s", "none"), ("fcn8s", "batch"))
"""(architecture, norm) of the whole-model runs: the three FCNs, and FCN-8s with BatchNorm (tinyfcn's
``FCN8s(K, norm="batch")``, torch's twin with ``BatchNorm2d``) for what BatchNorm costs each library."""
SIZES = ((8, 64), (4, 128))
"""(batch, input size) of the whole-model runs: the default 64x64 batch, and 4x the pixels at half the batch."""


_SPINNERS = set()


def _kill_spinners():
    for p in list(_SPINNERS):
        p.kill()
        p.wait()
        _SPINNERS.discard(p)


atexit.register(_kill_spinners)


@contextlib.contextmanager
def background_load():
    """One other process spinning on a core for the duration of the block (``--busy``).

    The spinner is an ordinary ``python`` busy loop, pinned to nothing: the scheduler
    moves it, as it would a browser tab or a compiler on a laptop. It is killed when
    the block ends, at exit and on Ctrl-C or SIGTERM.
    """
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    _SPINNERS.add(spinner)
    try:
        time.sleep(0.5)                                   # let it reach the scheduler
        yield spinner
    finally:
        spinner.kill()
        spinner.wait()
        _SPINNERS.discard(spinner)


BLAS_VAR = "OPENBLAS_CORETYPE"
"""Forces OpenBLAS's kernels (e.g. ``Haswell``: AVX2 even on an AVX-512 CPU) instead of its own choice for the CPU."""

BLAS_SECTIONS = ("gemm", "ops", "model")
"""The sections measured a second time, with :data:`BLAS_VAR` removed, when the environment sets it."""


def blas_settings(environ):
    """``[(key, title, environment)]``: the environment as given, and, when it sets :data:`BLAS_VAR`,
    the same without it (OpenBLAS choosing its own kernels, what a user's machine does)."""
    if BLAS_VAR not in environ:
        return [("environment", f"{BLAS_VAR} not set: OpenBLAS chooses its own kernels", dict(environ))]
    native = {k: v for k, v in environ.items() if k != BLAS_VAR}
    return [("environment", f"{BLAS_VAR}={environ[BLAS_VAR]} as the environment sets it", dict(environ)),
            ("native", f"{BLAS_VAR} removed: OpenBLAS chooses its own kernels", native)]


def run_worker(script, job, threads, torch_on, busy=False, environ=None):
    """Run ``benchmarks/<script>`` in a fresh process with ``threads`` threads (0: the libraries'
    defaults), under a spinning background process if ``busy``, in ``environ`` (default: this
    process's environment); return its JSON result."""
    with tempfile.TemporaryDirectory() as tmp, (background_load() if busy else contextlib.nullcontext()):
        out = os.path.join(tmp, "result.json")
        env = thread_env(threads, environ)
        env[NO_TORCH_VAR] = "0" if torch_on else "1"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))  # this checkout's tinyfcn
        done = subprocess.run([sys.executable, str(HERE / script), json.dumps({**job, "out": out})], env=env)
        if done.returncode != 0:
            sys.exit(f"benchmarks: {script} failed with exit status {done.returncode} (its error is printed above)")
        with open(out) as f:
            return json.load(f)


def run_models(threads, quick, torch_on, rounds, environ=None):
    """Every (arch, norm, size) x (tinyfcn, torch), each in its own process, ``rounds`` times in alternating order.

    Step times are pooled over the rounds before taking the median; memory is the
    median of the processes' peaks.
    """
    models = [m for m in MODELS if m[0] == "fcn8s"] if quick else MODELS
    libs = ["tinyfcn", "torch"] if torch_on else ["tinyfcn"]
    runs = {}
    for r in range(rounds):
        for arch, norm in models:
            for batch, size in SIZES:
                for lib in (libs if r % 2 == 0 else libs[::-1]):
                    job = {"lib": lib, "arch": arch, "norm": norm, "batch": batch, "size": size, "quick": quick}
                    runs.setdefault((arch, norm, batch, size, lib), []).append(
                        run_worker("model.py", job, threads, torch_on, environ=environ))
    configs = []
    for arch, norm in models:
        for batch, size in SIZES:
            entry = {"arch": arch, "norm": norm, "batch": batch, "size": size}
            for lib in libs:
                entry[lib] = summarize_model_runs(runs[(arch, norm, batch, size, lib)], batch)
            if torch_on:
                for mode in ("train", "infer"):
                    entry[f"{mode}_ratio"] = entry["tinyfcn"][f"{mode}_s"] / entry["torch"][f"{mode}_s"]
                    entry[f"{mode}_ratio_per_round"] = paired_ratios(entry["tinyfcn"], entry["torch"], mode)
            configs.append(entry)
    return {"threads": threads, "rounds": rounds, "configs": configs, "linearity": linearity(configs, libs),
            "batchnorm": batchnorm_cost(configs, libs)}


BUSY_CONFIGS = (("tinyfcn", 0), ("tinyfcn", 1), ("torch", 0), ("torch", 1))
"""(library, threads) of the busy-machine section; 0 is the library's default, what a user gets."""


def run_busy(quick, torch_on, rounds):
    """FCN-8s, batch 8 x 64x64, each library at its default and at one thread, with and
    without one other process spinning on a core; processes alternate, ``rounds`` times."""
    configs = [c for c in BUSY_CONFIGS if torch_on or c[0] == "tinyfcn"]
    runs = {}
    for r in range(rounds):
        for load in ("busy", "quiet"):
            for lib, threads in (configs if r % 2 == 0 else configs[::-1]):
                job = {"lib": lib, "arch": "fcn8s", "batch": 8, "size": 64, "quick": quick}
                res = run_worker("model.py", job, threads, torch_on, busy=load == "busy")
                runs.setdefault((load, lib, threads), []).append(res)
    rows = []
    for (load, lib, threads), res in runs.items():
        rows.append({"load": load, "lib": lib, "threads": threads, "threads_used": res[0]["threads_used"],
                     **summarize_model_runs(res, 8)})
    return {"rounds": rounds, "rows": rows}


def paired_ratios(tiny, torch, mode):
    """tinyfcn's time over PyTorch's, round by round: round r's two processes ran one right after the
    other, so a machine that slows down or speeds up over minutes moves both of a pair alike (the
    spread of these ratios shows how far one run's ratio can be trusted)."""
    return [a / b for a, b in zip(tiny[f"{mode}_s_per_process"], torch[f"{mode}_s_per_process"])]


def summarize_model_runs(runs, batch):
    """Median step time (pooled over processes), images/s and memory for one configuration and library;
    also each process's own median step time, in the order the processes ran."""
    out = {}
    for mode in ("train", "infer"):
        times = [t for run in runs for t in run[f"{mode}_s"]]
        out[f"{mode}_s"] = statistics.median(times)
        out[f"{mode}_s_per_process"] = [statistics.median(run[f"{mode}_s"]) for run in runs]
        out[f"{mode}_steps"] = len(times)
        out[f"{mode}_img_s"] = batch / out[f"{mode}_s"]
    for key in ("peak_rss_mb", "peak_rss_train_mb", "rss_after_import_mb"):
        out[key] = statistics.median(run[key] for run in runs)
    return out


def linearity(configs, libs):
    """Time per image at 128x128 over 64x64: 4 if time grows exactly with the pixel count (goal: within 20 %)."""
    rows = []
    by_key = {(c["arch"], c["norm"], c["size"]): c for c in configs}
    for arch, norm in dict.fromkeys((c["arch"], c["norm"]) for c in configs):
        small, large = by_key[(arch, norm, SIZES[0][1])], by_key[(arch, norm, SIZES[1][1])]
        pixels = (SIZES[1][1] / SIZES[0][1]) ** 2
        for lib in libs:
            for mode in ("train", "infer"):
                a = small[lib][f"{mode}_s"] / small["batch"]
                b = large[lib][f"{mode}_s"] / large["batch"]
                rows.append({"arch": arch, "norm": norm, "lib": lib, "mode": mode, "ms_per_image_small": a * 1e3,
                             "ms_per_image_large": b * 1e3, "ratio": b / a, "per_pixel_ratio": b / a / pixels,
                             "within_20pct": abs(b / a / pixels - 1) <= 0.2})
    return rows


BN_STEP_TARGET = 1.15
"""tinyfcn's FCN-8s training step with BatchNorm should take at most this times its step without."""


def batchnorm_cost(configs, libs):
    """Per batch size: each library's FCN-8s training step with BatchNorm over its step without, and
    the two libraries' BatchNorm steps against each other (tinyfcn's time / torch's)."""
    rows = []
    by_key = {(c["arch"], c["norm"], c["size"]): c for c in configs}
    for batch, size in SIZES:
        plain, batch_norm = by_key.get(("fcn8s", "none", size)), by_key.get(("fcn8s", "batch", size))
        if plain is None or batch_norm is None:
            continue
        row = {"batch": batch, "size": size, "target": BN_STEP_TARGET,
               "bn_train_ratio": batch_norm.get("train_ratio"), "bn_infer_ratio": batch_norm.get("infer_ratio")}
        for lib in libs:
            for mode in ("train", "infer"):
                row[f"{lib}_{mode}_bn_over_plain"] = batch_norm[lib][f"{mode}_s"] / plain[lib][f"{mode}_s"]
        rows.append(row)
    return rows


def git_state():
    """The commit measured and whether tinyfcn/ had uncommitted changes (others may be editing it)."""
    def git(*args):
        try:
            return subprocess.run(["git", "-C", str(HERE.parent), *args], capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""
    return {"commit": git("rev-parse", "HEAD"), "tinyfcn_dirty": bool(git("status", "--porcelain", "tinyfcn"))}


def busy_warning(res, threads, by_threads):
    """A line on how busy the machine was; a warning when other work competed for the cores.

    The 1-minute load average counts runnable processes, ours included. With more runnable
    threads than cores, the thread pools of a multi-threaded run wait for descheduled
    workers at every barrier, and 2-thread timings can come out *slower* than 1-thread ones.
    """
    before, after = res["load_average"]
    line = f"(load average before/after this section: {before:.1f} / {after:.1f} on {os.cpu_count()} cores)"
    gemm = (by_threads.get(str(threads), {}).get("gemm") or {}).get("gemm")
    one = (by_threads.get("1", {}).get("gemm") or {}).get("gemm")
    if threads > 1 and gemm and one and gemm[0]["numpy_gflops"] < one[0]["numpy_gflops"]:
        line += (f"\nWARNING: numpy's GEMM at {threads} threads ({gemm[0]['numpy_gflops']:.0f} GFLOP/s) is slower than "
                 f"at 1 thread ({one[0]['numpy_gflops']:.0f}): other work is using the cores, so this section's "
                 "figures measure contention, not the libraries.")
    elif max(before, after) > os.cpu_count():
        line += "\nWARNING: more runnable processes than cores: expect noisy figures."
    return line


def print_section(name, res, gemm_peak):
    """Print the tables of one section as soon as it is measured."""
    if name == "gemm":
        text = report.gemm_table(res)
    elif name == "ops":
        text = report.ops_table(res, gemm_peak) + "\n\n" + report.sums_table(res)
        if res.get("mirror_check"):
            text += "\n\n" + report.mirror_table(res)
    elif name == "model":
        text = report.models_table(res) + "\n\n" + report.linearity_table(res)
        if res.get("batchnorm"):
            text += "\n\n" + report.batchnorm_table(res)
    elif name == "startup":
        text = report.startup_table(res)
    elif name == "busy":
        text = report.busy_table(res)
    elif name == "epoch":
        text = report.epoch_table(res)
    else:
        text = report.breakdown_tables(res)
    print("\n" + text + "\n", flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short smoke run: fewer repeats, FCN-8s only for whole models")
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="thread counts, each its own section (default 1)")
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="run only these sections")
    p.add_argument("--rounds", type=int, default=None,
                   help="processes per whole-model configuration and library (default 2, --quick 1)")
    p.add_argument("--busy", action="store_true",
                   help="add the busy-machine section: one spinning process on a core during each measurement")
    p.add_argument("--no-torch", action="store_true", help="leave torch out even if it is installed")
    p.add_argument("--out", type=pathlib.Path, default=None, help="JSON file (default results/<timestamp>.json)")
    p.add_argument("--show", type=pathlib.Path, default=None, metavar="JSON",
                   help="print the tables of an earlier run's JSON file and exit (measures nothing)")
    return p.parse_args(argv)


def show(path):
    """Print every table of a saved results file (both BLAS settings, where it has two)."""
    results = json.loads(path.read_text())
    for store in (results, results.get("native")):
        if store is None:
            continue
        for threads, sections in store["by_threads"].items():
            print(f"\n######## {threads} thread(s); {store.get('blas', 'BLAS setting not recorded')} ########")
            peak = (sections.get("gemm") or {}).get("gemm", [{}])[0].get("numpy_gflops")
            for name, res in sections.items():
                print_section(name, res, peak)
                if "load_average" in res:
                    print(busy_warning(res, int(threads), store["by_threads"]))
        scaling = report.scaling_table(store["by_threads"])
        if scaling:
            print("\n" + scaling)


def run_section(name, threads, args, torch_on, environ=None):
    """Measure one section at one thread count (in ``environ``); the result carries the load average around it."""
    log(f"[{threads} thread(s)] {name} ...")
    load_before = os.getloadavg()[0]
    if name == "model":
        res = run_models(threads, args.quick, torch_on, args.rounds or (1 if args.quick else 2), environ)
    elif name == "busy":
        res = run_busy(args.quick, torch_on, args.rounds or (1 if args.quick else 2))
    else:
        res = run_worker(f"{name}.py", {"quick": args.quick}, threads, torch_on, environ=environ)
    res["load_average"] = [load_before, os.getloadavg()[0]]
    return res


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # run the finally blocks: kill the spinner
    if args.busy and "busy" not in args.only:
        args.only.append("busy")
    elif not args.busy and args.only == list(SECTIONS):
        args.only.remove("busy")
    if args.show:
        return show(args.show)
    torch_on = not args.no_torch and importlib.util.find_spec("torch") is not None
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {"started": stamp, "quick": args.quick, "torch": torch_on, "git": git_state(), "by_threads": {}}
    if not torch_on:
        print("torch is not importable (or --no-torch): reporting tinyfcn only; torch columns stay empty.")
    for key, title, environ in blas_settings(os.environ):
        store = results if key == "environment" else results.setdefault(key, {"by_threads": {}})
        store["blas"] = title
        for i, threads in enumerate(args.threads):
            print(f"\n######## {threads} thread(s); {title} ########", flush=True)
            sections = store["by_threads"][str(threads)] = {}
            for name in SECTIONS:
                if (name not in args.only or (name in ONCE and i > 0)
                        or (key != "environment" and name not in BLAS_SECTIONS)):
                    continue
                res = sections[name] = run_section(name, threads, args, torch_on, environ)
                if name == "gemm":
                    store.setdefault("machine", res["machine"])
                peak = (sections.get("gemm") or {}).get("gemm", [{}])[0].get("numpy_gflops")
                print_section(name, res, peak)
                print(busy_warning(res, threads, store["by_threads"]), flush=True)
                out.write_text(json.dumps(results, indent=1))      # after every section: a crash loses little
        scaling = report.scaling_table(store["by_threads"])
        if scaling:
            print("\n" + scaling + "\n", flush=True)
    print(f"results written to {out}")


if __name__ == "__main__":
    main()
