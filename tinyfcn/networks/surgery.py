"""Network surgery: new networks made from trained ones, and a model from its stored config.

- :func:`grow`: staged training, FCN-32s -> FCN-16s -> FCN-8s, every shared weight copied and
  each new skip starting silent (the authors' ``surgery.transplant`` and their zero-initialised
  score layers);
- :func:`convolutionalize`: a classifier's dense layers reshaped into convolutions (the paper's
  section 3.1; the authors' ``surgery.transplant`` of VGG16's fc6/fc7);
- :func:`from_classifier`: an FCN whose backbone and top start from a trained classifier;
- :func:`fold_batchnorm`: a network with BatchNorm (``norm="batch"``) as the BatchNorm-free
  network that computes its evaluation-mode scores, each BatchNorm folded into the convolution before it;
- :func:`build`: the model a checkpoint's ``config`` describes.

Every copy here copies parameters and buffers (BatchNorm's running statistics) alike.

The declarations themselves live in :mod:`tinyfcn.networks.models`.
"""
import numpy as np

from ..ops import nn
from .models import MODELS, Classifier, ScoreMap, last_map_size


def _arrays(graph):
    """Every parameter and buffer of ``graph`` by its state_dict key: the arrays its layers compute with."""
    return {**graph.params, **graph.buffers}


def convolutionalize(classifier):
    """The classifier's weights as a fully convolutional network (:class:`ScoreMap`), in evaluation mode.

    Each dense weight (out, in) becomes a convolution weight: fc6's (out, C5 * k * k) is
    reshaped to (out, C5, k, k) -- Flatten reads C, H, W in the order a convolution weight
    is laid out -- and fc7's and score's to (out, in, 1, 1). The convolutions are copies.
    With ``norm="batch"`` the BatchNorm1d of fc6's and fc7's features become BatchNorm2d of the
    same channels, parameters and running statistics: in evaluation mode both are the same
    per-channel affine map, so the logits stay exactly the classifier's.
    """
    net = ScoreMap(classifier.config, dtype=classifier.dtype)
    arrays = _arrays(net)
    for key, value in _arrays(classifier).items():
        arrays[key][...] = value.reshape(arrays[key].shape)
    return net.eval()


def from_classifier(classifier, arch="fcn8s", **options):
    """An FCN whose backbone, fc6, fc7 and score_fr start from a trained :class:`Classifier`.

    The FCN gets the classifier's widths, depths, fc_width, downsampling and norm, and
    ``fc6_kernel = k`` (pool5's size on a crop) with ``fc6_padding = k // 2`` so fc6 still
    sees every pool5 pixel; fc6, fc7 and score_fr are :func:`convolutionalize`'s weights
    (the classes are the same, so the classifier's scores are FCN-32s's coarse scores), with
    BatchNorm parameters and running statistics.
    ``options`` are further FCN options (``upsample``, ``fusion``, ``dropout``, ...).
    """
    c = classifier.config
    if arch not in MODELS:
        raise ValueError(f"unknown model {arch!r}: choose one of {', '.join(MODELS)}")
    for key in ("downsample", "norm", "widths", "depths", "fc_width", "fc6_kernel", "fc6_padding"):
        if key in options and options[key] != c.get(key, options[key]):
            raise ValueError(f"from_classifier: {key} comes from the classifier ({c[key]!r}), got {options[key]!r}")
        options.pop(key, None)
    k = last_map_size(c["crop_size"])
    model = MODELS[arch](c["num_classes"], in_channels=c["in_channels"], widths=c["widths"], fc_width=c["fc_width"],
                         depths=c["depths"], downsample=c["downsample"], norm=c["norm"], fc6_kernel=k,
                         fc6_padding=k // 2, **options, dtype=classifier.dtype)
    arrays = _arrays(model)
    for key, value in _arrays(convolutionalize(classifier)).items():
        target = "score_fr" + key[len("score"):] if key.startswith("score.") else key
        if target in arrays:                                # the unpooling decoder has no score_fr
            arrays[target][...] = value
    return model


def build(config, dtype=np.float32, seed=0):
    """A model from its ``config`` dict (as stored in checkpoints): ``config["arch"]`` picks the class."""
    config = dict(config)
    arch = config.pop("arch", None)
    if arch == Classifier.arch:
        config.pop("ceil_mode", None)
        return Classifier(**config, dtype=dtype, seed=seed)
    if arch not in MODELS:
        raise ValueError(f"unknown model {arch!r}: choose one of {', '.join(MODELS)}")
    return MODELS[arch](**config, dtype=dtype, seed=seed)


def grow(model, arch):
    """Staged training: a finer FCN with every parameter it shares (by name) with ``model``, copied.

    FCN-32s grows into FCN-16s, FCN-16s into FCN-8s (FCN-32s straight into FCN-8s too);
    the new skips' score layers start at zero (with ``fusion="concat"``: the new fusion
    convolution starts as the identity on the upsampled scores and zero on the skip's
    features), so at first they add nothing and the grown network's scores are the coarser
    network's (up to how the upsampling is split).
    The new model keeps ``model``'s configuration (``norm`` included: BatchNorm parameters and
    running statistics are copied too), dtype and training mode. Growing into the same variant
    returns a copy.

    Raises
    ------
    ValueError
        For an unknown variant, or one coarser than ``model``.
    """
    if arch not in MODELS:
        raise ValueError(f"grow: unknown model {arch!r}: choose one of {', '.join(MODELS)}")
    order = list(MODELS)
    if order.index(arch) < order.index(model.config["arch"]):
        raise ValueError(f"grow: an {model.config['arch']} cannot become the coarser {arch}")
    config = {k: v for k, v in model.config.items() if k not in ("arch", "at_once")}
    if arch == model.config["arch"] == "fcn8s":
        config["at_once"] = model.config["at_once"]
    new = MODELS[arch](**config, dtype=model.dtype)
    arrays = _arrays(new)
    for k, v in _arrays(model).items():
        if k in arrays and arrays[k].shape == v.shape:
            arrays[k][...] = v
    return new.train(model.training)


def fold_batchnorm(model):
    """The BatchNorm-free network that computes ``model``'s evaluation-mode scores, in evaluation mode.

    In evaluation a BatchNorm is a per-channel affine map of the convolution (or dense layer)
    before it, ``gamma * (conv(x) - mean) / sqrt(var + eps) + beta`` with the running mean and
    variance, so it folds into that layer's weight and bias (:meth:`~tinyfcn.ops.nn.BatchNorm2d.fold`:
    with ``s = gamma / sqrt(var + eps)`` per output channel, ``w' = s * w`` and
    ``b' = (b - mean) * s + beta``; b = 0: a convolution before BatchNorm has no bias). The result
    is the model's config with ``norm="none"``, built afresh (:func:`build`, or :class:`ScoreMap`
    for a convolutionalized classifier), holding the folded weights and a copy of every other
    parameter; the scores differ by rounding only. :meth:`~tinyfcn.networks.graph.Graph.inference`
    (what ``predict`` and ``evaluate`` run) folds the same weights, so its scores are
    this network's, bit for bit. A model without BatchNorm gives a copy.
    """
    config = dict(model.config, norm="none")
    new = ScoreMap(config, dtype=model.dtype) if isinstance(model, ScoreMap) else build(config, dtype=model.dtype)
    norms = {model.sources[name][0]: layer for name, layer in model.layers.items()
             if isinstance(layer, nn.BatchNorm2d)}                   # the layer before -> its BatchNorm (1d or 2d)
    for key, target in new.params.items():
        node, name = key.split(".", 1)
        if node not in norms:
            target[...] = model.params[key]
        elif name == "weight":
            target[...], new.params[f"{node}.bias"][...] = norms[node].fold(model.params[key], model.params.get(f"{node}.bias"))
    return new.eval()
