"""A network as data: named nodes, each a layer and the names of the maps it reads.

This is the shape of the FCN authors' ``net.py``: the network is written down once, as
a list, and everything else -- running it, its gradients, its coordinate maps and crop
offsets, its summary -- is read off that list::

    net = Graph([
        ("conv1", nn.Conv2d(3, 8, 3, padding=1), "input"),
        ("relu1", nn.ReLU(),                     "conv1"),
        ("score", nn.Conv2d(8, 2, 1),            "relu1"),
        ("skip",  nn.Conv2d(3, 2, 1),            "input"),   # "input" fans out
        ("fuse",  nn.Add(),                      "score", "skip"),
    ])
    out = net.forward(x)          # runs the nodes in order
    dx = net.backward(dout)       # runs them in reverse; fills net.grads

Every node's output is a map named after the node; the image is the map ``"input"``
and the last node's map is the output. ``forward`` keeps each map once, until its last
reader has run. ``backward`` hands every node the gradient of its own map and sends
each of the gradients it returns to the map it read. Where a map is read by more than
one node (FCN-8s's pool3 and pool4 feed both the next stage and a skip) those
gradients add -- the one rule of backpropagation over a graph, as in micrograd.

Where a :class:`~tinyfcn.ops.nn.ReLU` is the only reader of a layer that can rectify its own
output (a :class:`~tinyfcn.ops.nn.Conv2d` or :class:`~tinyfcn.ops.nn.BatchNorm2d`: it has a
``relu`` flag), the graph fuses the two
(:meth:`Graph.fuse_relus`): that layer writes ``max(out, 0)`` in its own pass and folds the
ReLU's mask into its backward, and the ReLU node passes the map and its gradient through. The
declaration, the parameters and every result stay the same; one pass over the map is saved in
each direction. For prediction, :meth:`Graph.inference` goes further: a BatchNorm that alone
reads a convolution is folded into it, and no layer keeps a backward cache.

A :class:`Graph` is itself a layer (:class:`~tinyfcn.ops.nn.Layer`): ``forward``,
``backward``, ``params``, ``grads``, ``buffers``, ``train``/``eval``, so the optimizer, the
checkpoints and a bigger graph treat it like any other layer.
"""
import contextlib

import numpy as np

from .. import threads
from ..ops import functional as F
from ..ops import nn
from .coord_map import IDENTITY, compose, crop_offset, layer_map, receptive_field


class ParameterDict(dict):
    """Every parameter of a graph, keyed ``"<node>.<name>"`` (e.g. ``"score_fr.weight"``);
    with ``kind="buffers"``, every buffer (e.g. ``"bn1.running_mean"``).

    The values are the very arrays the layers compute with, so updating one in place
    (as the optimizer does) trains the layer. Assigning a key replaces that layer's
    array, so ``graph.params[k] = v`` always takes effect; the new array must have the
    old one's shape and dtype.
    """

    def __init__(self, layers, kind="params"):
        super().__init__((f"{node}.{name}", value) for node, layer in layers.items()
                         for name, value in getattr(layer, kind).items())
        self._layers, self._kind = layers, kind

    def __setitem__(self, key, value):
        if key not in self:
            noun = "parameter" if self._kind == "params" else "buffer"
            raise KeyError(f"no {noun} {key!r}; the {noun}s are {', '.join(self)}")
        old = self[key]
        if not isinstance(value, np.ndarray) or value.shape != old.shape or value.dtype != old.dtype:
            got = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
            raise ValueError(f"{self._kind}[{key!r}] must be a {old.dtype} array of shape {old.shape}, got {got}")
        node, name = key.split(".", 1)
        getattr(self._layers[node], self._kind)[name] = value   # a Graph inside a Graph: its ParameterDict recurses
        super().__setitem__(key, value)


class Graph(nn.Layer):
    """Layers wired by name, run by one executor.

    Parameters
    ----------
    nodes : list of tuples ``(name, layer, source, ...)``
        In an order where every source comes before its readers. ``source`` names a map:
        ``"input"`` or an earlier node. Names are unique and contain no ``"."``.
        A :class:`~tinyfcn.ops.nn.Crop` declared without an offset reads ``(x, like)`` and gets
        its offsets from the coordinate maps of the two (:func:`tinyfcn.networks.coord_map.crop_offset`).

    Attributes
    ----------
    layers : dict, node name -> layer, in order
    sources : dict, node name -> tuple of the map names it reads
    coords : dict, map name -> ``(scale, shift)``: ``x_in = scale * x + shift`` for the map's pixels
    shapes : dict, map name -> shape of that map in the last forward pass
    params, grads : dicts keyed ``"<node>.<name>"`` (see :class:`ParameterDict`); ``grads``
        is filled by :meth:`backward` and holds nothing for frozen layers.
    buffers : dict keyed ``"<node>.<name>"`` like ``params`` (a :class:`ParameterDict` of kind
        ``"buffers"``): the layers' state that gradients do not train, such as a BatchNorm2d's
        running statistics, the arrays the layers update in place. Empty without such layers.
    folds : dict, node name of a Conv2d -> node name of the BatchNorm2d that alone reads it:
        the pairs :meth:`inference` runs as one convolution.
    """

    def __init__(self, nodes):
        super().__init__()
        self.layers, self.sources, self.coords, self.shapes = {}, {}, {"input": IDENTITY}, {}
        for name, layer, *sources in nodes:
            self._add(name, layer, tuple(sources))
        if not self.layers:
            raise ValueError("Graph: needs at least one node")
        self.output = name
        self.params = ParameterDict(self.layers)
        self.buffers = ParameterDict(self.layers, "buffers")
        self._readers = {m: sum(s.count(m) for s in self.sources.values()) for m in self.coords}
        self.fuse_relus()
        self.folds = {self.sources[name][0]: name for name, layer in self.layers.items()
                      if type(layer) is nn.BatchNorm2d and self._readers[self.sources[name][0]] == 1
                      and isinstance(self.layers.get(self.sources[name][0]), nn.Conv2d)}
        self._folded, self._inferred = None, False           # inside inference(): conv node -> folded (weight, bias)

    def _add(self, name, layer, sources):
        where = f"Graph: node {name!r}"
        if not isinstance(name, str) or "." in name or name in self.coords:
            raise ValueError(f"{where}: names must be unique strings without '.' (and not 'input')")
        if not isinstance(layer, nn.Layer):
            raise TypeError(f"{where}: {type(layer).__name__} is not a tinyfcn.ops.nn.Layer")
        unknown = [s for s in sources if s not in self.coords]
        if not sources or unknown:
            raise ValueError(f"{where} reads {unknown or 'nothing'}; a node reads 'input' or earlier nodes")
        if isinstance(layer, nn.Crop) and layer.offset is None:
            if len(sources) != 2:
                raise ValueError(f"{where}: a Crop reads two maps, (x, like)")
            offset = np.array(crop_offset(self.coords[sources[0]], self.coords[sources[1]]))
            layer.offset, layer.like_offset = tuple(np.maximum(offset, 0).tolist()), tuple(np.maximum(-offset, 0).tolist())
        self.layers[name], self.sources[name] = layer, sources
        self.coords[name] = compose(self.coords[sources[0]], layer_map(layer))

    def fuse_relus(self):
        """Fuse every ReLU node that alone reads a layer with a ``relu`` flag into that layer.

        Sets the layer's ``relu`` and the ReLU's ``fused`` (see :class:`~tinyfcn.ops.nn.ReLU`), once,
        when the graph is built: a layer object belongs to one graph (put into a second graph where
        no ReLU alone reads it, it would still rectify its output). Returns the fused pairs,
        ``[(layer node, ReLU node), ...]``.
        """
        pairs = []
        for name, layer in self.layers.items():
            source = self.sources[name][0]
            producer = self.layers.get(source)
            if isinstance(layer, nn.ReLU) and self._readers[source] == 1 and hasattr(producer, "relu"):
                producer.relu = layer.fused = True
                pairs.append((source, name))
        return pairs

    # -- the executor

    def forward(self, x):
        """Run every node in order on ``x`` (the map ``"input"``); returns the last node's map.

        The whole pass runs inside :func:`tinyfcn.threads.computing`, as does :meth:`backward`:
        numpy's BLAS is set to one thread once per pass, not once per layer. Inside
        :meth:`inference` the pass folds each BatchNorm into its convolution and keeps no
        backward caches.

        The graph scans ``x`` and its output for NaN and inf, its layers run inside
        :func:`tinyfcn.ops.functional.unscanned`: a map is not scanned again by each layer that
        reads it, nor a weight in every pass. A NaN or inf that arises inside is caught where a
        fused ReLU counts it (:func:`~tinyfcn.ops.functional.conv2d_forward`'s ``relu``) or where
        it reaches the output; one that a max-pool, a crop or an unfused ReLU discards on the way
        is not looked for.

        Raises
        ------
        tinyfcn.ops.functional.NonFiniteError
            ``x`` or the output contains NaN or inf, or a fused ReLU met them.
        """
        who = type(self).__name__
        F.scan(who, "the input", x)
        maps, readers = {"input": x}, dict(self._readers)
        self.shapes = {"input": x.shape}
        self._inferred = self._folded is not None
        with threads.computing(), F.unscanned():
            for name, layer in self.layers.items():
                sources = self.sources[name]
                if self._folded is None:
                    maps[name] = layer.forward(*(maps[s] for s in sources))
                else:
                    maps[name] = self._infer(name, layer, [maps[s] for s in sources])
                self.shapes[name] = maps[name].shape
                for s in sources:                          # drop a map once its last reader has run
                    readers[s] -= 1
                    if readers[s] == 0 and s != self.output:
                        del maps[s]
        F.scan(who, "the output", maps[self.output])
        return maps[self.output]

    def _infer(self, name, layer, inputs):
        """One node's map inside :meth:`inference`; the layer keeps no backward cache (a max-pool its switches)."""
        if name in self.folds:                             # the convolution with its BatchNorm folded in
            weight, bias = self._folded[name]
            out = F.conv2d_forward(inputs[0], weight, bias, layer.stride, layer.padding,
                                   self.layers[self.folds[name]].relu, keep_columns=False)[0]
        elif name in self.folds.values():                  # that BatchNorm: its map is the convolution's
            out = inputs[0]
        else:
            out = layer.forward(*inputs)
        if not isinstance(layer, nn.MaxPool2d):            # an unpooling may read a pool's switches
            layer.cache = None
        return out

    def backward(self, dout, input_grad=True):
        """Backpropagate ``dout`` (the gradient of the output map); fills :attr:`grads`, returns d input.

        Each node's ``backward`` gets the sum of the gradients its readers sent back to its map.
        ``input_grad=False`` returns None instead, and a :class:`~tinyfcn.ops.nn.Conv2d` that reads
        only the input skips its input gradient (a training step needs no gradient of the images:
        FCN-8s's conv1_1 then does a third less work); every entry of :attr:`grads` is the same.
        As in :meth:`forward`, ``dout`` is scanned for NaN and inf once and the layers run unscanned:
        a gradient that overflows shows in the weights the optimizer updates with it
        (:func:`~tinyfcn.training.train.train_step` scans them) and in the next forward pass.
        """
        F.scan(type(self).__name__, "dout", dout)
        if self._inferred:
            raise RuntimeError(f"{type(self).__name__}.backward: the last forward pass ran inside inference(), "
                               "which keeps nothing for a backward pass; run forward outside it first")
        grads = {self.output: dout}
        with threads.computing(), F.unscanned():
            for name in reversed(self.layers):
                layer, sources = self.layers[name], self.sources[name]
                if name not in grads:                      # nothing downstream depends on this map
                    continue
                if not input_grad and sources == ("input",) and isinstance(layer, nn.Conv2d):
                    back = layer.backward(grads.pop(name), input_grad=False)
                else:
                    back = layer.backward(grads.pop(name))
                for s, g in zip(sources, back if len(sources) > 1 else (back,)):
                    if g is not None:                      # a Crop's ``like`` only lends its size
                        grads[s] = grads[s] + g if s in grads else g
        self.grads.clear()
        self.grads.update((f"{node}.{k}", g) for node, layer in self.layers.items() for k, g in layer.grads.items())
        return grads.get("input") if input_grad else None

    def train(self, mode=True):
        """Training mode (dropout on) for every node; ``mode=False`` is evaluation mode. Returns self."""
        super().train(mode)
        for layer in self.layers.values():
            layer.train(mode)
        return self

    @contextlib.contextmanager
    def inference(self):
        """``with net.inference(): scores = net.forward(x)``: forward passes for prediction only.

        Inside, the graph runs in evaluation mode, and each :class:`~tinyfcn.ops.nn.BatchNorm2d`
        that alone reads a :class:`~tinyfcn.ops.nn.Conv2d` is folded into it: the convolution runs
        with :meth:`~tinyfcn.ops.nn.BatchNorm2d.fold`'s weight and bias (and the BatchNorm's ReLU),
        the BatchNorm passes that map on -- one pass over each map instead of two, the scores
        :func:`~tinyfcn.networks.surgery.fold_batchnorm`'s network computes, bit for bit, and equal
        to evaluation mode's up to rounding. Every layer but a max-pool (whose switches an unpooling
        may read) drops its backward cache as soon as it has run, so a map is freed after its last
        reader; a ``backward`` after such a pass raises. The folded weights are computed once, on
        entering the block (so every pass of an evaluation shares them): change no parameter inside
        it. The caller's mode comes back on exit. What :meth:`predict` and
        :func:`~tinyfcn.training.train.evaluate` run.
        """
        folded, self._folded = self._folded, {
            conv: self.layers[norm].fold(self.layers[conv].params["weight"], self.layers[conv].params.get("bias"))
            for conv, norm in self.folds.items()}
        try:
            with nn.evaluating(self):
                yield self
        finally:
            self._folded = folded

    def predict(self, x):
        """The arg-max class of :meth:`forward` along the class axis, run inside :meth:`inference`.

        Scores (N, K, H, W) give a label map (N, H, W); a classifier's logits (N, K) one label per image.
        """
        with self.inference():
            return self.forward(x).argmax(axis=1)

    # -- reading the declaration

    def state_dict(self):
        """A copy of every parameter (frozen ones included) and every buffer, keyed like :attr:`params` and :attr:`buffers`."""
        return {k: v.copy() for k, v in {**self.params, **self.buffers}.items()}

    def load_state_dict(self, state):
        """Copy arrays into the parameters and buffers in place. Names and shapes must match exactly.

        Raises
        ------
        ValueError
            Naming the first missing, unexpected or wrongly shaped key.
        """
        who = f"{type(self).__name__}.load_state_dict"
        arrays = {**self.params, **self.buffers}
        missing = [k for k in arrays if k not in state]
        unexpected = [k for k in state if k not in arrays]
        if missing or unexpected:
            raise ValueError(f"{who}: " + (f"missing key {missing[0]!r}" if missing else f"unexpected key {unexpected[0]!r}")
                             + f" ({len(missing)} missing, {len(unexpected)} unexpected); "
                             "is this a checkpoint of another architecture?")
        for k, v in arrays.items():
            if np.shape(state[k]) != v.shape:
                raise ValueError(f"{who}: {k!r} has shape {np.shape(state[k])}, the model expects {v.shape}")
        for k, v in arrays.items():
            v[...] = state[k]

    def table(self):
        """One row per node after a forward pass: name, type, output shape, total stride, receptive field, parameters.

        Total stride is how many input pixels one step on the node's map spans (the scale
        of its coordinate map); the receptive field is the input window one of its pixels
        can see (along h; after a transposed convolution: at most). A Crop's ``like`` only
        lends its size, so it does not widen the field.
        """
        field, rows = {"input": 1.0}, []
        for name, layer in self.layers.items():
            sources = self.sources[name][:1] if isinstance(layer, nn.Crop) else self.sources[name]
            jump = self.coords[sources[0]][0][0]
            field[name] = receptive_field(layer, max(field[s] for s in sources), jump)
            rows.append((name, type(layer).__name__, self.shapes[name], self.coords[name][0][0], field[name],
                         sum(v.size for v in layer.params.values())))
        return rows

    def summary(self, input_shape, title=None):
        """Print (and return) :meth:`table` after one forward pass on zeros of ``input_shape`` (N, C, H, W).

        The pass runs in evaluation mode; the last line counts the parameters (frozen ones included)
        and those that train.
        """
        with nn.evaluating(self):
            self.forward(np.zeros(input_shape, getattr(self, "dtype", np.float32)))
        lines = [title or f"{type(self).__name__} on an input of shape {tuple(input_shape)}",
                 f"{'layer':16s} {'type':17s} {'output shape':>20s} {'stride':>7s} {'field':>6s} {'params':>9s}"]
        for name, kind, shape, stride, field, n in self.table():
            lines.append(f"{name:16s} {kind:17s} {str(shape):>20s} {stride:7.4g} {field:6.0f} {n:9,d}")
        total = sum(v.size for v in self.params.values())
        trainable = sum(v.size for layer in self.layers.values() for v in layer.params.values()
                        if getattr(layer, "trainable", True))
        lines.append(f"total parameters: {total:,d} ({trainable:,d} trainable)")
        text = "\n".join(lines)
        print(text)
        return text


class Sequential(Graph):
    """Layers in a chain: ``Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))``.

    A :class:`Graph` whose nodes are named ``"0"``, ``"1"``, ... each reading the one
    before (the first reads ``"input"``), so its parameters are ``"0.weight"``, ``"2.bias"``, ...
    and it trains with :func:`tinyfcn.training.train.fit` like any model.
    """

    def __init__(self, *layers):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        super().__init__([(str(i), layer, "input" if i == 0 else str(i - 1)) for i, layer in enumerate(layers)])

