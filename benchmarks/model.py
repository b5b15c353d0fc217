"""Worker: one whole model, one library, one input size -- training and inference speed, peak memory.

The job names the architecture and its ``norm`` ("none", or "batch": BatchNorm after every
backbone and fc convolution, in both libraries).

Each configuration runs in a process of its own so that ``ru_maxrss`` (the peak resident
memory of this process) belongs to that configuration alone: a torch process never
imports numba or tinyfcn, a tinyfcn process never imports torch.

- training step: forward, pixel-mean cross-entropy (ignore 255), backward, SGD with
  momentum 0.9 and weight decay 5e-4 at lr 0.01 -- tinyfcn exactly as ``tinyfcn.training.train``
  does it, torch with ``torch.optim.SGD`` over the trainable parameters only;
- inference: evaluation-mode forward (torch under ``inference_mode``).

Two warm-up steps come first (numba's first call, torch's first-call allocation). Then
each step is timed on its own, for at least ``min_steps`` steps and ``seconds`` seconds;
the result keeps every step time so that ``run.py`` can pool several processes.
"""
import resource
import time

import numpy as np
from _common import import_torch, log, read_job, threads_from_env, write_result

NUM_CLASSES = 4
IGNORE = 255
SGD_SETTINGS = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)


def peak_rss_mb():
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def batch(n, size, rng):
    """Random images (n, 3, size, size) float32 and labels (n, size, size) with ~10 % ignored pixels."""
    x = rng.standard_normal((n, 3, size, size)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, (n, size, size))
    y[rng.random(y.shape) < 0.1] = IGNORE
    return x, y


def tinyfcn_steps(arch, norm, x, y):
    """(train_step, infer_step) closures for tinyfcn's ``arch`` with ``norm``."""
    from tinyfcn import nn
    from tinyfcn.networks.models import MODELS
    from tinyfcn.training.optim import SGD
    model = MODELS[arch](NUM_CLASSES, norm=norm)
    loss_fn = nn.SoftmaxCrossEntropy(IGNORE)
    opt = SGD(model.params, **SGD_SETTINGS)

    def train():
        model.train()
        loss_fn.forward(model.forward(x), y)
        model.backward(loss_fn.backward(), input_grad=False)   # as train_step: no gradient of the images
        opt.step(model.grads)

    def infer():
        with model.inference():        # as predict and evaluate: BatchNorm folded, no backward caches
            model.forward(x)

    return train, infer


def torch_steps(torch, arch, norm, x, y):
    """(train_step, infer_step) closures for the torch twin of ``arch`` with ``norm`` (see ``torch_fcn.py``)."""
    from torch_fcn import TorchFCN
    net = TorchFCN(arch, NUM_CLASSES, norm=norm)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], **SGD_SETTINGS)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def train():
        net.train()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(tx), ty, ignore_index=IGNORE).backward()
        opt.step()

    def infer():
        net.eval()
        with torch.inference_mode():
            net(tx)

    return train, infer


def time_steps(fn, min_steps, seconds, warmup=2):
    """Per-call times of ``fn`` after ``warmup`` calls: at least ``min_steps`` calls and ``seconds`` seconds."""
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < min_steps or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main():
    job = read_job()
    lib, arch, norm, n, size = job["lib"], job["arch"], job.get("norm", "none"), job["batch"], job["size"]
    x, y = batch(n, size, np.random.default_rng(0))
    if lib == "torch":
        torch = import_torch()
        if torch is None:
            raise SystemExit("model.py: torch requested but not importable")
        import_mb = peak_rss_mb()
        train, infer = torch_steps(torch, arch, norm, x, y)
        used = torch.get_num_threads()
    else:
        import tinyfcn.networks.models  # noqa: F401  (count the import in the baseline, as for torch)
        from tinyfcn import threads
        import_mb = peak_rss_mb()
        train, infer = tinyfcn_steps(arch, norm, x, y)
        used = threads.get_threads()
        log(f"  (tinyfcn from {tinyfcn.__file__}, {used} thread(s))")
    quick = job["quick"]
    log(f"  {lib:8s} {arch}{' +BN' if norm == 'batch' else ''} batch {n} x {size}x{size}")
    train_times = time_steps(train, 3 if quick else 5, 0.6 if quick else 2.0)
    if lib != "torch":
        used = threads.get_threads()      # tinyfcn's default follows the machine: report where it ended up
    train_mb = peak_rss_mb()
    infer_times = time_steps(infer, 3 if quick else 5, 0.3 if quick else 1.0)
    write_result(job["out"], {**job, "threads": threads_from_env(), "threads_used": used, "train_s": train_times, "infer_s": infer_times,
                              "rss_after_import_mb": import_mb, "peak_rss_train_mb": train_mb,
                              "peak_rss_mb": peak_rss_mb()})


if __name__ == "__main__":
    main()
