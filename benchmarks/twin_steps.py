"""Train any tinyfcn network and its PyTorch export side by side, step by step, on one fixed batch.

    python benchmarks/twin_steps.py [--model fcn32s --upsample unpool --norm batch --steps 300 --images 8]

Both start from the same weights (``tinyfcn.export.to_torch`` of the freshly built model, whose
score layer is given small random weights first so that every layer gets a gradient at step 0),
see the same ``--images`` images of a generated ``shapes`` set (full batch, no dropout, fixed input
normalization, upsampling learned) and take AdamW steps (lr 1e-3, weight decay 1e-4) with their own library's code.
Prints the two losses every tenth of the run. Where they part, tinyfcn computes something else;
where they agree and the loss stays high, the network itself learns slowly (this is how
``docs/recipe.md`` tells the unpooling decoder's slow training from a bug).
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from tinyfcn import datasets, nn
from tinyfcn.export import to_torch
from tinyfcn.labels import IGNORE
from tinyfcn.networks.models import MODELS
from tinyfcn.training.optim import AdamW
from tinyfcn.training.train import train_step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="fcn32s", choices=sorted(MODELS))
    p.add_argument("--upsample", default="unpool", choices=("transposed", "unpool"))
    p.add_argument("--norm", default="batch", choices=("none", "batch"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--images", type=int, default=8)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    root = datasets.make_shapes(Path(tempfile.mkdtemp()) / "shapes", n_train=args.images, n_val=1, seed=0)
    split = datasets.load_split(root, "train")
    x, y = datasets.collate([split[i] for i in range(len(split))])
    model = MODELS[args.model](4, upsample=args.upsample, norm=args.norm, learn_upsampling=True, dropout=0.0,
                               seed=0, widths=(8, 16, 32, 64, 64), fc_width=128)
    score = "score_dec.weight" if args.upsample == "unpool" else "score_fr.weight"
    model.params[score][...] = 0.1 * np.random.default_rng(1).standard_normal(model.params[score].shape)
    twin = to_torch(model).train()
    mine = AdamW(model.params, lr=1e-3, weight_decay=1e-4)
    theirs = torch.optim.AdamW([w for w in twin.parameters() if w.requires_grad], lr=1e-3, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    for step in range(args.steps):
        loss = train_step(model, nn.SoftmaxCrossEntropy(), mine, x, y)[0]
        theirs.zero_grad()
        twin_loss = torch.nn.functional.cross_entropy(twin(xt), yt, ignore_index=IGNORE)
        twin_loss.backward()
        theirs.step()
        if step % max(1, args.steps // 10) == 0 or step == args.steps - 1:
            print(f"step {step:4d}: loss tinyfcn {loss:.4f}, PyTorch {twin_loss.item():.4f}", flush=True)


if __name__ == "__main__":
    main()
