"""Worker: every op of the default FCNs, forward and forward+backward, tinyfcn against torch.

For each distinct conv, transposed conv and max-pool shape of FCN-32s/16s/8s (found by
:func:`fcn_layers.fcn_ops`, not typed in) and for the loss, two jobs are timed:

- ``fwd``: the forward pass as training runs it. tinyfcn's forward always keeps a cache
  for the backward pass, so torch's is timed with autograd recording (inputs and
  weights ``requires_grad``), which keeps what its backward needs (max-pool indices...).
- ``fwdbwd``: forward, then the gradients with respect to input, weight and bias
  (tinyfcn: ``*_backward``; torch: ``torch.autograd.grad`` with a fixed random dout).
  For the loss, tinyfcn computes loss and gradient in one call, so its ``fwd`` and
  ``fwdbwd`` do the same work (the latter through ``nn.SoftmaxCrossEntropy``, as training does).

tinyfcn is called through :mod:`tinyfcn.ops.functional`, input checks included: that is
what the layers call. The two libraries are timed interleaved (see ``_common.compare``).
The result also holds the per-model sums (each op counted as often as the model uses
it) and a check that ``torch_fcn.TorchFCN`` computes the same function as tinyfcn's models.
"""
import fcn_layers
import numpy as np
from _common import compare, import_torch, log, read_job, threads_from_env, write_result

from tinyfcn import functional as F
from tinyfcn import nn
from tinyfcn.labels import IGNORE
from tinyfcn.networks.models import MODELS

BATCH, SIZE = 8, 64


def _randn(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def conv_jobs(op, rng, torch):
    """``{(lib, mode): fn}`` for a convolution or transposed convolution entry."""
    conv = op["kind"] == "conv"
    fwd, bwd = (F.conv2d_forward, F.conv2d_backward) if conv else (F.conv_transpose2d_forward,
                                                                    F.conv_transpose2d_backward)
    c_out = op["w_shape"][0] if conv else op["w_shape"][1]
    x = _randn(rng, op["x_shape"])
    w = _randn(rng, op["w_shape"], 0.1)
    b = _randn(rng, (c_out,)) if op["bias"] else None
    s, p = op["stride"], op["padding"]
    dout = _randn(rng, fwd(x, w, b, s, p)[0].shape)
    jobs = {("tinyfcn", "fwd"): lambda: fwd(x, w, b, s, p),
            ("tinyfcn", "fwdbwd"): lambda: bwd(dout, fwd(x, w, b, s, p)[1])}
    if torch is not None:
        tfn = torch.nn.functional.conv2d if conv else torch.nn.functional.conv_transpose2d
        tx, tw = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
        tb = torch.from_numpy(b).requires_grad_() if b is not None else None
        wrt = (tx, tw) if tb is None else (tx, tw, tb)
        tdout = torch.from_numpy(dout)
        jobs[("torch", "fwd")] = lambda: tfn(tx, tw, tb, s, p)
        jobs[("torch", "fwdbwd")] = lambda: torch.autograd.grad(tfn(tx, tw, tb, s, p), wrt, tdout)
    return jobs


def pool_jobs(op, rng, torch):
    """``{(lib, mode): fn}`` for a max-pool entry (ceil mode, as the FCNs use it)."""
    x = _randn(rng, op["x_shape"])
    k, s, p, ceil = op["kernel"], op["stride"], op["padding"], op["ceil_mode"]
    dout = _randn(rng, F.max_pool2d_forward(x, k, s, p, ceil)[0].shape)
    jobs = {("tinyfcn", "fwd"): lambda: F.max_pool2d_forward(x, k, s, p, ceil),
            ("tinyfcn", "fwdbwd"): lambda: F.max_pool2d_backward(dout, F.max_pool2d_forward(x, k, s, p, ceil)[1])}
    if torch is not None:
        pool = torch.nn.functional.max_pool2d
        tx, tdout = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dout)
        jobs[("torch", "fwd")] = lambda: pool(tx, k, s, p, ceil_mode=ceil)
        jobs[("torch", "fwdbwd")] = lambda: torch.autograd.grad(pool(tx, k, s, p, ceil_mode=ceil), tx, tdout)
    return jobs


def loss_jobs(shape, rng, torch):
    """``{(lib, mode): fn}`` for pixel-mean softmax cross-entropy, ~10 % of the pixels labelled 255."""
    N, K, H, W = shape
    scores = _randn(rng, shape, 3.0)
    target = rng.integers(0, K, (N, H, W))
    target[rng.random((N, H, W)) < 0.1] = IGNORE
    layer = nn.SoftmaxCrossEntropy(IGNORE)

    def tiny_fwdbwd():
        layer.forward(scores, target)
        return layer.backward()

    jobs = {("tinyfcn", "fwd"): lambda: F.softmax_cross_entropy(scores, target, IGNORE),
            ("tinyfcn", "fwdbwd"): tiny_fwdbwd}
    if torch is not None:
        ce = torch.nn.functional.cross_entropy
        ts, tt = torch.from_numpy(scores).requires_grad_(), torch.from_numpy(target)
        jobs[("torch", "fwd")] = lambda: ce(ts, tt, ignore_index=IGNORE)
        jobs[("torch", "fwdbwd")] = lambda: torch.autograd.grad(ce(ts, tt, ignore_index=IGNORE), ts)
    return jobs


def measure(jobs, repeats, target):
    """Time each mode with the libraries interleaved; ``{mode: {lib: summary}}``."""
    result = {}
    for mode in ("fwd", "fwdbwd"):
        fns = {lib: fn for (lib, m), fn in jobs.items() if m == mode}
        result[mode] = compare(fns, repeats, target)
    return result


def derived(entry):
    """Add medians in ms, tinyfcn/torch ratios and GFLOP/s to an entry with ``times`` and ``flops``."""
    for mode, factor in (("fwd", 1), ("fwdbwd", 3)):
        times = entry["times"][mode]
        entry[f"{mode}_ms"] = {lib: t["median"] * 1e3 for lib, t in times.items()}
        entry[f"{mode}_ratio"] = (times["tinyfcn"]["median"] / times["torch"]["median"]) if "torch" in times else None
        if entry.get("flops"):
            entry[f"{mode}_gflops"] = {lib: factor * entry["flops"] / t["median"] / 1e9 for lib, t in times.items()}
    return entry


def model_sums(entries):
    """Per architecture and op kind: the summed median time of every use of every op (each use counted).

    ``sums[arch][kind][mode][lib]`` in ms, plus ``ratio`` (tinyfcn / torch).
    """
    sums = {}
    for arch in fcn_layers.ARCHS:
        for kind in ("conv", "convT", "pool", "loss"):
            for mode in ("fwd", "fwdbwd"):
                total = {}
                for e in entries:
                    n = len(e["uses"].get(arch, [])) if kind != "loss" else 1
                    if e["kind"] == kind and n:
                        for lib, ms in e[f"{mode}_ms"].items():
                            total[lib] = total.get(lib, 0.0) + n * ms
                if total:
                    ratio = total["tinyfcn"] / total["torch"] if "torch" in total else None
                    sums.setdefault(arch, {}).setdefault(kind, {})[mode] = {**total, "ratio": ratio}
    return sums


MIRRORED = [(arch, "none") for arch in fcn_layers.ARCHS] + [("fcn8s", "batch")]
"""(architecture, norm) pairs whose torch twin is checked: the three FCNs, and FCN-8s with BatchNorm."""


def mirror_check(torch):
    """Max |tinyfcn - torch| of eval-mode outputs, per architecture (and norm) and input size, with identical weights.

    The score layers start at zero in both libraries, so they are randomised first:
    otherwise every output would be 0 and the check would prove nothing. So are BatchNorm's
    scale, shift and running statistics (else each BatchNorm would be the identity in eval mode).
    """
    from torch_fcn import TorchFCN, copy_from_tinyfcn
    rng = np.random.default_rng(1)
    report = {}
    for arch, norm in MIRRORED:
        model = MODELS[arch](fcn_layers.NUM_CLASSES, norm=norm).eval()
        for name, w in {**model.params, **model.buffers}.items():
            if name.startswith("score"):
                w[...] = _randn(rng, w.shape, 0.1)
            elif name.startswith("bn"):
                w[...] = 0.5 + rng.random(w.shape) if name.endswith(("weight", "running_var")) else _randn(rng, w.shape, 0.1)
        net = TorchFCN(arch, fcn_layers.NUM_CLASSES, norm=norm).eval()
        copy_from_tinyfcn(net, model)
        for size in ((64, 64), (45, 70)):
            x = _randn(rng, (2, 3, *size))
            mine = model.forward(x)
            with torch.no_grad():
                theirs = net(torch.from_numpy(x)).numpy()
            diff = float(np.abs(mine - theirs).max()) if mine.shape == theirs.shape else float("inf")
            label = arch + (" +BN" if norm == "batch" else "")
            report[f"{label} {size[0]}x{size[1]}"] = {"max_abs_diff": diff, "max_abs_output": float(np.abs(mine).max())}
    return report


def main():
    job = read_job()
    torch = import_torch()
    repeats, target = (3, 0.02) if job["quick"] else (9, 0.06)
    rng = np.random.default_rng(0)
    entries = []
    for op in fcn_layers.fcn_ops(BATCH, SIZE):
        name = fcn_layers.label(op)
        log(f"  {name}  ({fcn_layers.uses_text(op)})")
        jobs = pool_jobs(op, rng, torch) if op["kind"] == "pool" else conv_jobs(op, rng, torch)
        entries.append(derived({**op, "label": name, "flops": fcn_layers.conv_flops(op),
                                "times": measure(jobs, repeats, target)}))
    shape = fcn_layers.loss_shape(BATCH, SIZE)
    log(f"  loss {shape}")
    entries.append(derived({"kind": "loss", "label": f"softmax CE (ignore 255) {shape[1]}cl @{shape[2]}x{shape[3]}",
                            "x_shape": shape, "uses": {a: ["loss"] for a in fcn_layers.ARCHS}, "flops": None,
                            "times": measure(loss_jobs(shape, rng, torch), repeats, target)}))
    result = {"threads": threads_from_env(), "batch": BATCH, "size": SIZE, "ops": entries,
              "sums": model_sums(entries), "torch": torch is not None}
    if torch is not None:
        log("  checking that torch_fcn.TorchFCN matches tinyfcn's models")
        result["mirror_check"] = mirror_check(torch)
    write_result(job["out"], result)


if __name__ == "__main__":
    main()
