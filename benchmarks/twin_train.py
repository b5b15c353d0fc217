"""Train the PyTorch twin of a tinyfcn FCN with the same start, the same batches and the same schedule.

    python benchmarks/twin_train.py --data DIR [--model fcn8s --optimizer adamw --lr 1e-3 --weight-decay 1e-4
                                               --epochs 12 --seed 0 --normalization fixed|dataset
                                               --learn-upsampling]

The twin (:class:`torch_fcn.TorchFCN`) starts from a copy of the weights ``tinyfcn`` initialises
with the same seed, reads the same batches in the same order (``fit``'s shuffling, no
augmentation) and follows the same poly schedule; only dropout draws its own masks. Each
epoch it is scored on the validation split with tinyfcn's confusion matrix, as ``fit`` does.
So where the two libraries part ways on a recipe, the difference is the arithmetic, not the
recipe: this is how ``docs/recipe.md`` checks that tinyfcn trains like PyTorch.
Prints one line per epoch and the last epoch's mean IoU.
"""
import argparse
import math

import numpy as np
import torch
from torch_fcn import TorchFCN, copy_from_tinyfcn

from tinyfcn import datasets
from tinyfcn.datasets.statistics import channel_mean_std
from tinyfcn.labels import IGNORE
from tinyfcn.networks.models import MODELS
from tinyfcn.training.metrics import ConfusionMatrix
from tinyfcn.training.optim import poly


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--model", default="fcn8s", choices=sorted(MODELS))
    p.add_argument("--optimizer", default="adamw", choices=("sgd", "adamw"))
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--normalization", default="fixed", choices=("fixed", "dataset"))
    p.add_argument("--learn-upsampling", action="store_true", help="train the upsampling (PyTorch's default)")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    train, val = datasets.load_split(args.data, "train"), datasets.load_split(args.data, "val")
    norm = datasets.FIXED if args.normalization == "fixed" else channel_mean_std(train)
    model = MODELS[args.model](train.num_classes, in_channels=train.in_channels, seed=args.seed)
    net = TorchFCN(args.model, train.num_classes, in_channels=train.in_channels)
    copy_from_tinyfcn(net, model)
    for up in net.ups:
        up.weight.requires_grad_(args.learn_upsampling)
    params = [q for q in net.parameters() if q.requires_grad]
    opt = (torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay) if args.optimizer == "adamw"
           else torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=args.weight_decay))
    rng = np.random.default_rng(args.seed)
    total = args.epochs * math.ceil(len(train) / args.batch_size)
    step = 0
    for epoch in range(args.epochs):
        net.train()
        order = rng.permutation(len(train))
        for x, y in datasets.batches(train, args.batch_size, order=order, normalization=norm):
            for group in opt.param_groups:
                group["lr"] = poly(args.lr, step, total)
            loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y),
                                                     ignore_index=IGNORE)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        net.eval()
        confusion = ConfusionMatrix(train.num_classes, IGNORE)
        with torch.no_grad():
            for x, y in datasets.batches(val, args.batch_size, normalization=norm):
                confusion.update(y, net(torch.from_numpy(x)).argmax(1).numpy())
        miou = confusion.scores()["mean_iou"]
        print(f"epoch {epoch + 1}: train loss {loss.item():.4f}, val mean IoU {miou:.3f}", flush=True)
    print(f"last epoch mean IoU {miou:.3f}")


if __name__ == "__main__":
    main()
