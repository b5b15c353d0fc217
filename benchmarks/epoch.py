"""Worker: a whole training epoch as ``tinyfcn train`` runs it, against steps x step time.

Generates the shapes dataset (64x64 images, validation a fifth of training, as in the
default 2,000 / 400) in a temporary folder and calls
``tinyfcn.training.train.fit`` -- the function behind ``tinyfcn train`` -- for two epochs with
augmentation, validation, checkpoints and the progress bar on. The second epoch's
wall time (between the two ``on_epoch_end`` calls: loading, augmenting and collating
batches, the steps, validation, writing ``last.npz``/``best.npz``/``history.json``)
is compared with its number of steps times the median time of one bare training step
(forward, loss, backward, SGD) on a batch from the same data, measured in the same
process right after. tinyfcn only; torch is not involved.
"""
import math
import tempfile
import time

import numpy as np
from _common import log, read_job, threads_from_env, write_result

N_TRAIN, BATCH = 160, 8
"""Validation images are a fifth of the training images, as in the default dataset (2,000 / 400)."""


def main():
    job = read_job()
    from tinyfcn import datasets, nn, threads
    from tinyfcn.networks.models import FCN8s
    from tinyfcn.training.optim import SGD
    from tinyfcn.training.train import fit
    n_train = 64 if job["quick"] else N_TRAIN
    with tempfile.TemporaryDirectory() as tmp:
        n_val = n_train // 5
        root = datasets.make_dataset("shapes", f"{tmp}/data", n_train, n_val, 0)
        train_set = datasets.load_split(root, "train")
        val_set = datasets.load_split(root, "val", num_classes=train_set.num_classes)
        model = FCN8s(train_set.num_classes)
        marks = []
        log(f"  epoch: fit() 2 epochs of {n_train} images, batch {BATCH}, {threads.get_threads()} thread(s)")
        fit(model, train_set, val_set, epochs=2, batch_size=BATCH, augment=True, out=f"{tmp}/run",
            progress=True, on_epoch_end=lambda history: marks.append(time.perf_counter()))
        epoch_s = marks[1] - marks[0]
        x, y = next(datasets.batches(train_set, BATCH, order=np.arange(BATCH)))
        loss_fn, opt = nn.SoftmaxCrossEntropy(), SGD(model.params, 0.01, 0.9, 5e-4)

        def step():
            loss_fn.forward(model.forward(x), y)
            model.backward(loss_fn.backward(), input_grad=False)   # as train_step: no gradient of the images
            opt.step(model.grads)
        for _ in range(2):
            step()
        times = []
        for _ in range(10 if job["quick"] else 30):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    steps = math.ceil(n_train / BATCH)
    step_s = float(np.median(times))
    write_result(job["out"], {"threads": threads_from_env(), "threads_used": threads.get_threads(),
                              "images": n_train, "val_images": n_val, "batch": BATCH, "steps": steps,
                              "epoch_s": epoch_s, "step_s": step_s, "ratio": epoch_s / (steps * step_s)})


if __name__ == "__main__":
    main()
