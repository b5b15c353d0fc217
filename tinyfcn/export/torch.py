"""A network exported from tinyfcn, rebuilt as a ``torch.nn.Module``. This file imports only torch.

``tinyfcn export --checkpoint RUN/best.npz --to torch fcn8s.pt`` writes ``fcn8s.pt`` and a
copy of this file, ``fcn8s_model.py``, beside it. ``fcn8s.pt`` is a dict of plain values
that ``torch.load(path, weights_only=True)`` reads: ``format``, ``graph`` (the nodes, see
:class:`GraphModule`), ``state_dict`` (tinyfcn's parameter and buffer names, e.g. ``score_fr.weight``,
``bn1_1.running_mean``), ``config`` (the tinyfcn model configuration) and ``normalization``
(``{"mean": [...], "std": [...]}``: the network takes ``(image / 255 - mean) / std`` per channel,
the input normalization it was trained with). Without tinyfcn installed::

    from fcn8s_model import load
    net = load("fcn8s.pt")                 # in evaluation mode; net.train() to continue training
    mean, std = (torch.tensor(net.normalization[k]).view(-1, 1, 1) for k in ("mean", "std"))
    scores = net((images / 255 - mean) / std)   # (N, K, H, W) for float32 images (N, C, H, W) in 0 ... 255

Frozen layers (FCN's bilinear upsampling unless it was learned) have ``requires_grad=False``,
so an optimizer over ``[p for p in net.parameters() if p.requires_grad]`` trains what tinyfcn trains.
BatchNorm layers are ``nn.BatchNorm2d`` (``nn.BatchNorm1d`` in a dense classifier) with tinyfcn's
running statistics; ``net.train()`` updates them as tinyfcn does, ``net.eval()`` normalises with them.
"""
import torch
from torch import nn
from torch.nn import functional as F

FORMAT = "tinyfcn-torch-1"


class Crop(nn.Module):
    """The window of ``x`` that overlaps ``like``: rows ``[oh, oh + h)``, ``h = min(H_x - oh, H_like - lh)``."""

    def __init__(self, offset, like_offset):
        super().__init__()
        self.offset, self.like_offset = tuple(offset), tuple(like_offset)

    def forward(self, x, like):
        (oh, ow), (lh, lw) = self.offset, self.like_offset
        h, w = min(x.shape[2] - oh, like.shape[2] - lh), min(x.shape[3] - ow, like.shape[3] - lw)
        return x[:, :, oh:oh + h, ow:ow + w]


class Scale(nn.Module):
    """Multiply by a fixed factor."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


class Add(nn.Module):
    """Element-wise sum of two maps."""

    def forward(self, a, b):
        return a + b


class Concat(nn.Module):
    """Concatenate maps along the channel axis."""

    def forward(self, *maps):
        return torch.cat(maps, dim=1)


class SwitchMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that keeps its switches for a :class:`MaxUnpool2d` node.

    Returns the pooled map like ``nn.MaxPool2d``; after each call ``switches`` holds
    ``(indices, input_size)``: where each maximum came from (``return_indices=True``) and
    the (H, W) of the input, which the unpooling restores (odd sizes and ceil mode included).
    """

    def __init__(self, kernel_size, stride, padding, ceil_mode):
        super().__init__(kernel_size, stride, padding, ceil_mode=ceil_mode, return_indices=True)
        self.switches = None

    def forward(self, x):
        out, indices = super().forward(x)
        self.switches = (indices, tuple(x.shape[2:]))
        return out


class MaxUnpool2d(nn.Module):
    """Every value back where the pool node ``pool`` found its maximum, zeros elsewhere, at that pool's input size.

    ``pool`` is the name of a :class:`SwitchMaxPool2d` node; :class:`GraphModule` passes that
    module as the second argument, and its last ``switches`` are unpooled with its geometry.
    """

    def __init__(self, pool):
        super().__init__()
        self.pool = pool

    def forward(self, x, pool):
        indices, input_size = pool.switches
        return F.max_unpool2d(x, indices, pool.kernel_size, pool.stride, pool.padding, output_size=input_size)

    def extra_repr(self):
        return f"pool={self.pool!r}"


def _max_pool(a):
    if a.get("return_indices", False):
        return SwitchMaxPool2d(a["kernel_size"], a["stride"], a["padding"], a["ceil_mode"])
    return nn.MaxPool2d(a["kernel_size"], a["stride"], a["padding"], ceil_mode=a["ceil_mode"])


def _conv_transpose(args):
    layer = nn.ConvTranspose2d(args["in_channels"], args["out_channels"], args["kernel_size"], args["stride"],
                               args["padding"], bias=args["bias"])
    return layer.requires_grad_(args["trainable"])


LAYERS = {
    "Conv2d": lambda a: nn.Conv2d(a["in_channels"], a["out_channels"], a["kernel_size"], a["stride"], a["padding"],
                                  bias=a["bias"]),
    "ConvTranspose2d": _conv_transpose,
    "MaxPool2d": _max_pool,
    "ReLU": lambda a: nn.ReLU(),
    "BatchNorm2d": lambda a: nn.BatchNorm2d(a["num_features"], eps=a["eps"], momentum=a["momentum"]),
    "BatchNorm1d": lambda a: nn.BatchNorm1d(a["num_features"], eps=a["eps"], momentum=a["momentum"]),
    "Dropout": lambda a: nn.Dropout(a["p"]),
    "Scale": lambda a: Scale(a["factor"]),
    "Crop": lambda a: Crop(a["offset"], a["like_offset"]),
    "Add": lambda a: Add(),
    "Concat": lambda a: Concat(),
    "MaxUnpool2d": lambda a: MaxUnpool2d(a["pool"]),
    "Flatten": lambda a: nn.Flatten(),
    "Linear": lambda a: nn.Linear(a["in_features"], a["out_features"], bias=a["bias"]),
}
"""Layer type name -> ``f(args)``, the torch module for a node."""


class GraphModule(nn.Module):
    """Named nodes run in order, each reading the maps named in its ``sources``; the last node is the output.

    Parameters
    ----------
    graph : dict
        ``{"nodes": [{"name", "type", "sources", "args"}, ...]}``: ``type`` is a key of
        :data:`LAYERS`, ``sources`` names ``"input"`` (the image) or earlier nodes. Each node
        becomes a submodule of its name, so the parameters are named ``"<node>.weight"``.
        A :class:`MaxUnpool2d` node also gets the pool module it names (its switches).
    """

    def __init__(self, graph):
        super().__init__()
        self.sources = {}
        for node in graph["nodes"]:
            if node["type"] not in LAYERS:
                raise ValueError(f"node {node['name']!r}: layer type {node['type']} is not supported "
                                 f"(supported: {', '.join(LAYERS)})")
            self.add_module(node["name"], LAYERS[node["type"]](node["args"]))
            self.sources[node["name"]] = tuple(node["sources"])
        self.output = node["name"]
        self.readers = {}
        for sources in self.sources.values():
            for s in sources:
                self.readers[s] = self.readers.get(s, 0) + 1

    def forward(self, x):
        maps, readers = {"input": x}, dict(self.readers)
        for name, sources in self.sources.items():
            layer, inputs = self.get_submodule(name), [maps[s] for s in sources]
            if isinstance(layer, MaxUnpool2d):
                inputs.append(self.get_submodule(layer.pool))
            maps[name] = layer(*inputs)
            for s in sources:                              # drop a map once its last reader has run
                readers[s] -= 1
                if readers[s] == 0:
                    del maps[s]
        return maps[self.output]


def load(path, map_location="cpu"):
    """The module saved at ``path`` by ``tinyfcn export --to torch``, weights loaded, in evaluation mode.

    ``net.normalization`` is the input normalization it was trained with (see the module docstring).
    """
    saved = torch.load(path, map_location=map_location, weights_only=True)
    if saved.get("format") != FORMAT:
        raise ValueError(f"{path}: not a tinyfcn export (format {saved.get('format')!r}, expected {FORMAT!r})")
    net = GraphModule(saved["graph"])
    net.load_state_dict(saved["state_dict"])
    net.normalization = saved.get("normalization", {"mean": [0.5], "std": [0.25]})   # exports before 0.2: fixed
    return net.eval()
