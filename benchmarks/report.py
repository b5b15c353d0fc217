"""Turn the workers' results into plain-text tables. Formatting only: no measuring, no judging.

Every ratio printed is tinyfcn's time divided by torch's time for the same job (so
2.0x means tinyfcn takes twice as long; below 1 it is faster). The target columns
quote the issue's goals; they are information, not assertions.
"""

TARGETS = {"conv": 1.0, "convT": 2.0, "pool": 2.0}
CONV_LAYER_TARGET = 1.3
"""No single convolution above this ratio (forward + backward)."""
"""The issue's goals for tinyfcn/torch forward+backward time."""


def table(headers, rows, title=None):
    """A fixed-width text table; first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    out = [title, "=" * len(title)] if title else []
    out += [line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]]
    return "\n".join(out)


def ms(v):
    return None if v is None else (f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}")


def x(v):
    return None if v is None else f"{v:.2f}x"


def num(v, digits=1):
    return None if v is None else f"{v:.{digits}f}"


def both(values, digits=1):
    """``"tinyfcn / torch"``, or just tinyfcn's figure when torch was not measured."""
    if not values:
        return None
    if values.get("torch") is None:
        return num(values["tinyfcn"], digits)
    return f"{num(values['tinyfcn'], digits)} / {num(values['torch'], digits)}"


def verdict(ratio, target):
    if ratio is None or target is None:
        return None
    return "ok" if ratio <= target else "NO"


def gemm_table(res):
    rows = [[f"({m}x{k}) @ ({k}x{n})", num(r.get("numpy_gflops")), num(r.get("torch_gflops"))]
            for r in res["gemm"] for m, k, n in [r["shape"]]]
    machine = res.get("machine", {})
    return (table(["float32 matrix product", "numpy GFLOP/s", "torch GFLOP/s"], rows,
                  f"Matrix-multiply peak, {res['threads']} thread(s)")
            + f"\nCPU: {machine.get('cpu')}; vector ISA: {machine.get('vector_isa', 'unknown')}"
              f"\nidle CPUs (cpuidle): {machine.get('cpu_idle', 'unknown')}"
              f"\nnumpy's BLAS: {machine.get('numpy_blas')}, kernels {machine.get('numpy_blas_kernels', 'unknown')}"
              f"\ntorch: CPU capability {machine.get('torch_cpu_capability')}, "
              f"oneDNN ISA {machine.get('torch_onednn_isa')}")


def ops_table(res, peak):
    """One row per distinct op: fwd and fwd+bwd ms, ratios, GFLOP/s, % of numpy's GEMM peak."""
    rows = []
    for e in res["ops"]:
        f, fb = e["fwd_ms"], e["fwdbwd_ms"]
        g = e.get("fwdbwd_gflops") or {}
        gf = e.get("fwd_gflops") or {}
        target = TARGETS.get(e["kind"]) if e["kind"] != "conv" else CONV_LAYER_TARGET
        layers = ",".join(e["uses"].get("fcn8s", [])) or ",".join(f"{a}:{'+'.join(n)}" for a, n in e["uses"].items())
        rows.append([e["label"], layers, ms(f["tinyfcn"]), ms(f.get("torch")), x(e["fwd_ratio"]),
                     ms(fb["tinyfcn"]), ms(fb.get("torch")), x(e["fwdbwd_ratio"]),
                     both(gf), both(g),
                     f"{100 * g['tinyfcn'] / peak:.0f}%" if g and peak else None,
                     verdict(e["fwdbwd_ratio"], target)])
    headers = ["op (batch %d)" % res["batch"], "layers (FCN-8s)", "fwd ms", "torch", "ratio", "f+b ms", "torch",
               "ratio", "fwd GF/s tiny/torch", "f+b GF/s tiny/torch", "f+b %peak", "target met (conv <=1.3x, else <=2x)"]
    return table(headers, rows, f"Per op, float32, medians, {res['threads']} thread(s)  (ratio = tinyfcn time / torch time)")


def sums_table(res):
    """Per architecture and op kind: the summed time of all its uses, tinyfcn vs torch."""
    rows = []
    for arch, kinds in res["sums"].items():
        for kind, modes in kinds.items():
            f, fb = modes["fwd"], modes["fwdbwd"]
            rows.append([arch, kind, ms(f["tinyfcn"]), ms(f.get("torch")), x(f["ratio"]), ms(fb["tinyfcn"]),
                         ms(fb.get("torch")), x(fb["ratio"]),
                         f"<= {TARGETS[kind]}x" if kind in TARGETS else None, verdict(fb["ratio"], TARGETS.get(kind))])
    return table(["model", "op kind", "fwd ms", "torch", "ratio", "f+b ms", "torch", "ratio", "target (f+b)", "met"],
                 rows, f"Sum over each model's uses of each op, {res['threads']} thread(s)")


def mirror_table(res):
    rows = [[k, f"{v['max_abs_diff']:.2e}", f"{v['max_abs_output']:.3g}"] for k, v in res["mirror_check"].items()]
    return table(["model, input", "max |tinyfcn - torch|", "max |output|"], rows,
                 "Check: torch_fcn.TorchFCN computes the same function as tinyfcn (same weights, eval mode)")


def model_name(m):
    """``fcn8s``, or ``fcn8s +BN`` for a model with BatchNorm (results saved before BatchNorm rows: no norm)."""
    return m["arch"] + (" +BN" if m.get("norm", "none") == "batch" else "")


def spread(values):
    """``"lo-hi"`` of a list of ratios (one per round), or None."""
    return f"{min(values):.2f}-{max(values):.2f}" if values else None


def model_rows(models):
    rows = []
    for m in models["configs"]:
        t, r = m["tinyfcn"], m.get("torch") or {}
        rows.append([model_name(m), f"{m['batch']} x {m['size']}x{m['size']}",
                     num(t["train_img_s"]), num(r.get("train_img_s")), x(m.get("train_ratio")),
                     spread(m.get("train_ratio_per_round")),
                     num(t["infer_img_s"]), num(r.get("infer_img_s")), x(m.get("infer_ratio")),
                     spread(m.get("infer_ratio_per_round")),
                     num(t["peak_rss_mb"], 0), num(r.get("peak_rss_mb"), 0),
                     both({"tinyfcn": t["rss_after_import_mb"], "torch": r.get("rss_after_import_mb")}, 0)])
    return rows


def models_table(models):
    headers = ["model", "batch x input", "train img/s", "torch", "ratio", "per round", "infer img/s", "torch",
               "ratio", "per round", "peak RSS MB", "torch", "after import MB tiny/torch"]
    return table(headers, model_rows(models),
                 f"Whole model, {models['threads']} thread(s), medians over {models['rounds']} process(es) each "
                 "(ratio = tinyfcn time / torch time; per round = lowest-highest ratio of one round's two "
                 "processes, run one after the other)")


def scaling_table(by_threads):
    """Each library's training and inference speed-up from 1 thread to each larger count, per model and size.

    ``by_threads`` maps a thread count (str) to that section's results; only counts whose
    whole-model section ran are used.
    """
    models = {int(n): sec["model"] for n, sec in by_threads.items() if sec.get("model")}
    if 1 not in models or len(models) < 2:
        return None
    base = {(model_name(m), m["batch"], m["size"]): m for m in models[1]["configs"]}
    rows = []
    for n in sorted(models):
        for m in models[n]["configs"] if n > 1 else []:
            one = base.get((model_name(m), m["batch"], m["size"]))
            if one is None:
                continue
            cells = [model_name(m), f"{m['batch']} x {m['size']}x{m['size']}", str(n)]
            for mode in ("train_img_s", "infer_img_s"):
                for lib in ("tinyfcn", "torch"):
                    a, b = (one.get(lib) or {}).get(mode), (m.get(lib) or {}).get(mode)
                    cells.append(f"{b / a:.2f}x" if a and b else "")
            rows.append(cells)
    return table(["model", "batch x input", "threads", "train speed-up", "torch", "infer speed-up", "torch"], rows,
                 "Thread scaling: images/s at n threads over images/s at 1 thread, from the whole-model sections "
                 "(target for tinyfcn's training at 2 threads: >= 1.6x)")


def linearity_table(models):
    rows = [[model_name(l), l["lib"], l["mode"], ms(l["ms_per_image_small"]), ms(l["ms_per_image_large"]),
             f"{l['ratio']:.2f}", f"{l['per_pixel_ratio']:.2f}", "yes" if l["within_20pct"] else "no"]
            for l in models["linearity"]]
    return table(["model", "lib", "mode", "ms/img 64x64", "ms/img 128x128", "ratio (ideal 4)", "per pixel",
                  "within 20%"], rows, "Linearity: time per image grows with the pixel count")


def batchnorm_table(models):
    """What BatchNorm costs each library: FCN-8s with BatchNorm against FCN-8s without, and tinyfcn's
    BatchNorm network against torch's."""
    rows = []
    for b in models["batchnorm"]:
        rows.append([f"{b['batch']} x {b['size']}x{b['size']}",
                     x(b["tinyfcn_train_bn_over_plain"]), x(b.get("torch_train_bn_over_plain")),
                     verdict(b["tinyfcn_train_bn_over_plain"], b["target"]), x(b.get("bn_train_ratio")),
                     x(b["tinyfcn_infer_bn_over_plain"]), x(b.get("torch_infer_bn_over_plain")),
                     x(b.get("bn_infer_ratio"))])
    return table(["batch x input", "train BN/plain tinyfcn", "torch", f"tinyfcn <= {models['batchnorm'][0]['target']}x",
                  "train +BN tiny/torch", "infer BN/plain tinyfcn", "torch", "infer +BN tiny/torch"], rows,
                 f"BatchNorm's cost, FCN-8s, {models['threads']} thread(s) (time with BatchNorm / time without; "
                 "tiny/torch = tinyfcn's time / torch's, both with BatchNorm)")


def startup_table(res):
    keys = [("launch_to_first_step_s", "launch -> first step done"), ("interpreter_start_s", "python start-up"),
            ("import_s", "import numpy, numba, tinyfcn"), ("build_s", "build FCN-8s + batch"),
            ("first_forward_s", "first forward + loss"), ("first_backward_step_s", "first backward + SGD"),
            ("second_step_s", "second step (for scale)"), ("numba_cache_hits", "numba cache hits"),
            ("numba_cache_misses", "numba cache misses (compiles)")]
    rows = [[label, f"{res['cold'][k]:.2f}" if k.endswith("_s") else f"{res['cold'][k]:.0f}",
             f"{res['warm'][k]:.2f}" if k.endswith("_s") else f"{res['warm'][k]:.0f}"] for k, label in keys]
    rows.append(["target (launch -> first step)", "<= 15 s", "<= 1.5 s"])
    rows.append(["met", verdict(res["cold"]["launch_to_first_step_s"], 15),
                 verdict(res["warm"]["launch_to_first_step_s"], 1.5)])
    text = table(["FCN-8s, batch 8, 64x64 (seconds)", f"cold (n={len(res['cold_runs'])})",
                  f"warm (n={len(res['warm_runs'])})"], rows,
                 f"Start-up: fresh process to first finished training step, {res['threads']} thread(s), medians")
    for c in res["cache"]:
        text += (f"\nnumba cache after the cold run: {c['index_files']} index (.nbi) + {c['data_files']} data (.nbc) "
                 f"files; files (re)written by the warm runs: {len(c['files_written_by_warm_runs'])}")
    return text


def epoch_table(res):
    """A whole fit() epoch against steps x the bare step time."""
    rows = [[f"{res['images']} images + {res['val_images']} val, batch {res['batch']}", str(res["threads_used"]),
             f"{res['epoch_s']:.2f}", str(res["steps"]), ms(res["step_s"] * 1e3), f"{res['steps'] * res['step_s']:.2f}",
             f"{res['ratio']:.2f}", "yes" if res["ratio"] <= 1.15 else "no"]]
    return table(["FCN-8s epoch (shapes 64x64)", "threads", "epoch s", "steps", "step ms", "steps x step s",
                  "ratio", "within 15%"], rows,
                 "Whole epoch (data, augmentation, collate, validation, checkpoint, progress bar) vs steps x step time")


def busy_table(res):
    """Default vs one thread, each library, with and without a spinning process on one core."""
    rows_by = {(r["load"], r["lib"], r["threads"]): r for r in res["rows"]}
    rows = []
    for load in ("quiet", "busy"):
        tiny1 = rows_by.get((load, "tinyfcn", 1))
        torch_default = rows_by.get((load, "torch", 0))
        for (lib, threads) in (("tinyfcn", 0), ("tinyfcn", 1), ("torch", 0), ("torch", 1)):
            r = rows_by.get((load, lib, threads))
            if r is None:
                continue
            vs1 = r["train_img_s"] / tiny1["train_img_s"] if lib == "tinyfcn" and tiny1 else None
            vst = r["train_img_s"] / torch_default["train_img_s"] if lib == "tinyfcn" and torch_default else None
            rows.append([load, lib, f"default ({r['threads_used']})" if threads == 0 else str(threads),
                         f"{r['train_img_s']:.0f}", f"{r['infer_img_s']:.0f}",
                         f"{vs1:.2f}x" if vs1 else "", f"{vst:.2f}x" if vst else ""])
    return table(["machine", "lib", "threads", "train img/s", "infer img/s", "train vs tinyfcn 1 thr",
                  "train vs torch default"], rows,
                 f"Busy machine: FCN-8s batch 8 x 64x64; 'busy' = one other process spinning on a core during "
                 f"the measurement; medians over {res['rounds']} process(es) each. Targets under load: tinyfcn "
                 "default >= 1.00x its 1 thread, >= 1.2x torch default")


def breakdown_tables(res):
    """Conv pieces (ms), transposed-conv pieces (ms) and the training-step profile."""
    out = []
    if res.get("ops"):
        for kind, title in (("conv", "Inside tinyfcn's conv2d forward+backward"),
                            ("convT", "Inside tinyfcn's conv_transpose2d forward+backward")):
            rows_in = [r for r in res["ops"] if r["label"].startswith(kind + " ")]
            if not rows_in:
                continue
            pieces = list(dict.fromkeys(k for r in rows_in for k in r["pieces"]))   # each path has its own pieces
            rows = []
            for r in rows_in:
                p = r["pieces"]
                gemms = "/".join(num(v["gflops"], 0) for v in p.values() if v["gflops"])
                rows.append([r["label"], r["uses"]] + [ms(p[k]["ms"]) if k in p else "" for k in pieces]
                            + [ms(sum(v["ms"] for v in p.values())), ms(r["real_ms"]), gemms])
            headers = (["op", "layers"] + [k.split(": ")[1] if k.count(":") else k for k in pieces]
                       + ["sum", "real f+b", "GEMM GF/s"])
            out.append(table(headers, rows, f"{title} (ms per call, medians; `real f+b` = the public functions, "
                                            f"timed alongside), {res['threads']} thread(s)"))
    elif res.get("ops_skipped"):
        out.append(f"conv breakdown skipped: {res['ops_skipped']}")
    if res.get("winograd_blas"):
        rows = [[r["label"], r["uses"], ms(r["numpy_ms"]), ms(r["scipy_ms"]), num(r["scipy_ms"] / r["numpy_ms"], 2) + "x",
                 "yes" if r["same_bits"] else "no"] for r in res["winograd_blas"]]
        out.append(table(["op", "layers", "NumPy's BLAS ms", "SciPy's ms", "SciPy/NumPy", "same bits"], rows,
                         "Winograd's forward + backward kernels (batch 8), the products on NumPy's own BLAS (as "
                         "tinyfcn runs them) and on SciPy's (numba's np.dot); one thread, medians"))
    elif res.get("winograd_blas") == []:
        out.append("Winograd's products: NumPy's BLAS is not one tinyfcn calls here; every product is numba's np.dot")
    elif res.get("winograd_blas_skipped"):
        out.append(f"Winograd BLAS comparison skipped: {res['winograd_blas_skipped']}")
    if res.get("train_step"):
        prof = res["train_step"]
        total = prof["step total"]
        rows = [[k, ms(v * 1e3), f"{100 * v / total:.1f}%"]
                for k, v in sorted(prof.items(), key=lambda kv: -kv[1]) if k != "step total"]
        rows.append(["step total", ms(total * 1e3), "100%"])
        out.append(table(["FCN-8s train step (batch 8, 64x64)", "ms", "share"], rows,
                         f"Where a tinyfcn training step goes (per-layer stopwatches, medians), "
                         f"{res['threads']} thread(s)"))
    elif res.get("train_step_skipped"):
        out.append(f"training-step profile skipped: {res['train_step_skipped']}")
    if res.get("two_threads"):
        out.append(two_threads_table(res["two_threads"]))
    elif res.get("two_threads_skipped"):
        out.append(f"two threads against one skipped: {res['two_threads_skipped']}")
    elif "two_threads" in res:
        out.append("two threads against one: not measured, this process may run on one core only")
    return "\n\n".join(out)


def two_threads_table(res):
    """FCN-8s's training step at one and two threads: the shared jobs, the rest, and what two threads lose."""
    rows = []
    for norm, name in (("none", "FCN-8s"), ("batch", "FCN-8s + BN")):
        one, two, ceiling = res[norm]["1"], res[norm]["2"], res[norm]["ceiling"]
        rest = {n: s["step"] - s["shared jobs"] for n, s in ((1, one), (2, two))}
        busy = two["caller busy"] + two["worker busy"]
        rows.append([name, ms(one["step"] * 1e3), ms(two["step"] * 1e3), num(res[norm]["speed_up"], 2) + "x",
                     f"{two['jobs']:.0f}", ms(one["shared jobs"] * 1e3), ms(two["shared jobs"] * 1e3),
                     ms(rest[1] * 1e3), ms(rest[2] * 1e3), ms(two["caller busy"] * 1e3), ms(two["worker busy"] * 1e3),
                     num(busy / one["shared jobs"], 2) + "x", ms(two["worker start delay"] * 1e3),
                     ms(two["after the last piece"] * 1e3),
                     num(one["step"] / (rest[1] + one["shared jobs"] / ceiling["products"]), 2) + "x",
                     num(ceiling["products"], 2) + "x", num(ceiling["memory"], 2) + "x"])
    return table(["batch 8 x 64x64", "step 1 thr", "2 thr", "speed-up", "shared jobs", "in them 1 thr", "2 thr",
                  "rest 1 thr", "2 thr", "busy: caller", "worker", "busy 2 thr / 1", "worker start delay",
                  "after last piece", "bound", "machine: products", "memory"], rows,
                 "Two threads against one: training steps at 1 and 2 tinyfcn threads alternating in one process "
                 "(ms per step, medians; speed-up: median of the pairs). `shared jobs`: those two threads share; "
                 "`rest`: all else, on one thread; `busy`: time inside the jobs' pieces, per thread; `machine`: two threads against "
                 "one on work that shares nothing, sampled between the pairs of steps (one-thread matrix products; "
                 "an addition over three 32 MB arrays); `bound`: the speed-up if the shared jobs ran as "
                 "much faster as those products and the rest did not slow down")
