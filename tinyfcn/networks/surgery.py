"""Network surgery: new networks made from trained ones, and a model from its stored config.

- :func:`grow`: staged training, FCN-32s -> FCN-16s -> FCN-8s, every shared weight copied and
  each new skip starting silent (the authors' ``surgery.transplant`` and their zero-initialised
  score layers);
- :func:`convolutionalize`: a classifier's dense layers reshaped into convolutions (the paper's
  section 3.1; the authors' ``surgery.transplant`` of VGG16's fc6/fc7);
- :func:`from_classifier`: an FCN whose backbone and top start from a trained classifier;
- :func:`build`: the model a checkpoint's ``config`` describes.

The declarations themselves live in :mod:`tinyfcn.networks.models`.
"""
import numpy as np

from .models import MODELS, Classifier, ScoreMap, last_map_size


def convolutionalize(classifier):
    """The classifier's weights as a fully convolutional network (:class:`ScoreMap`), in evaluation mode.

    Each dense weight (out, in) becomes a convolution weight: fc6's (out, C5 * k * k) is
    reshaped to (out, C5, k, k) -- Flatten reads C, H, W in the order a convolution weight
    is laid out -- and fc7's and score's to (out, in, 1, 1). The convolutions are copies.
    """
    net = ScoreMap(classifier.config, dtype=classifier.dtype)
    for key, value in classifier.params.items():
        net.params[key][...] = value.reshape(net.params[key].shape)
    return net.eval()


def from_classifier(classifier, arch="fcn8s", **options):
    """An FCN whose backbone, fc6, fc7 and score_fr start from a trained :class:`Classifier`.

    The FCN gets the classifier's widths, depths, fc_width and downsampling, and
    ``fc6_kernel = k`` (pool5's size on a crop) with ``fc6_padding = k // 2`` so fc6 still
    sees every pool5 pixel; fc6, fc7 and score_fr are :func:`convolutionalize`'s weights
    (the classes are the same, so the classifier's scores are FCN-32s's coarse scores).
    ``options`` are further FCN options (``upsample``, ``fusion``, ``dropout``, ...).
    """
    c = classifier.config
    if arch not in MODELS:
        raise ValueError(f"unknown model {arch!r}: choose one of {', '.join(MODELS)}")
    for key in ("downsample", "widths", "depths", "fc_width", "fc6_kernel", "fc6_padding"):
        if key in options and options[key] != c.get(key, options[key]):
            raise ValueError(f"from_classifier: {key} comes from the classifier ({c[key]!r}), got {options[key]!r}")
        options.pop(key, None)
    k = last_map_size(c["crop_size"])
    model = MODELS[arch](c["num_classes"], in_channels=c["in_channels"], widths=c["widths"], fc_width=c["fc_width"],
                         depths=c["depths"], downsample=c["downsample"], fc6_kernel=k, fc6_padding=k // 2,
                         **options, dtype=classifier.dtype)
    for key, value in convolutionalize(classifier).params.items():
        target = "score_fr" + key[len("score"):] if key.startswith("score.") else key
        if target in model.params:                          # the unpooling decoder has no score_fr
            model.params[target][...] = value
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
    The new model keeps ``model``'s configuration, dtype and training mode. Growing into
    the same variant returns a copy.

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
    for k, v in model.params.items():
        if k in new.params and new.params[k].shape == v.shape:
            new.params[k][...] = v
    return new.train(model.training)
