"""Instruments that show why a training run works or fails, and the warnings a learner can act on.

Per epoch, for every layer with weights (frozen layers left out):

- **gradient norm** ``||dL/dw||``, the mean over the sampled steps of the epoch: a layer whose
  gradient is orders of magnitude below the others learns nothing (a vanishing gradient);
- **update/weight ratio** ``||w_after - w_before|| / ||w_before||``, the mean over the sampled
  steps: about 1e-3 per step is healthy; below 1e-5 the layer barely moves (raise the
  learning rate), above 1e-1 it is thrown around (lower it). Layers whose weights are all 0
  (FCN's score layers at the start) have no ratio yet;
- **dead ReLUs**: the share of a ReLU layer's channels that output 0 at every pixel of a
  fixed probe batch, in evaluation mode. A dead channel passes no gradient and never recovers;
  half of a layer dead means the learning rate was too high at some point, or the
  initialisation was wrong.

Per epoch, from the validation predictions (:func:`tinyfcn.training.train.evaluate`):

- **predicted-class shares**, the fraction of pixels predicted as each class, against the true
  shares: a run *collapsed to one class* predicts (almost) only the background, the easy way
  to be right on most pixels;
- **per-class IoU**.

Steps are sampled every :data:`EVERY` steps (every step of an epoch shorter than that is not,
but its last is): copying the weights before an update costs a few per cent of a step, sampling
makes it negligible. The first step is never sampled: with FCN's score layers at zero, no
gradient reaches the backbone before the first update.
"""
import numpy as np

from ..ops import nn

EVERY = 10
"""Measure gradient norms and update ratios on every EVERY-th step of a run."""

UPDATE_RATIO = (1e-5, 1e-1)
"""A layer's mean update/weight ratio outside this range earns a warning."""

DEAD = 0.5
"""More than this share of a ReLU layer's channels dead earns a warning."""

COLLAPSE = 0.1
"""Predictions have *collapsed* to their most predicted class c when all other classes together get
less than this share of the pixels they truly cover: ``1 - predicted[c] < COLLAPSE * (1 - true[c])``."""


def _layer(key):
    """'conv1_1.weight' -> 'conv1_1': instruments report per layer, its weight tensor standing for it."""
    return key.rsplit(".", 1)[0]


class Instruments:
    """Collects the per-epoch figures of a run (see the module docstring).

    Parameters
    ----------
    model : a Graph (any layer with ``params``, ``grads`` and, for dead ReLUs, ``layers``)
    probe : ndarray (N, C, H, W), a fixed batch of network input for the dead-ReLU count
    steps_per_epoch : int
        Steps are sampled every ``min(EVERY, steps_per_epoch)``, so every epoch has a sample.
    """

    def __init__(self, model, probe, steps_per_epoch):
        self.model, self.probe, self.every = model, probe, max(1, min(EVERY, steps_per_epoch))
        self.weights = [k for k in model.params if k.endswith(".weight")]
        self.before = None
        self._reset()

    def _reset(self):
        self.grad_norms = {_layer(k): [] for k in self.weights}
        self.ratios = {_layer(k): [] for k in self.weights}

    def before_step(self, step):
        """Call before an optimizer step: on a sampled step, keep a copy of the weights."""
        sampled = (step + 1) % self.every == 0
        self.before = {k: self.model.params[k].copy() for k in self.weights} if sampled else None

    def after_step(self):
        """Call after the optimizer step: on a sampled step, record gradient norms and update ratios."""
        if self.before is None:
            return
        with np.errstate(over="ignore", invalid="ignore"):      # a diverging run is caught by train_step, not here
            self._measure()
        self.before = None

    def _measure(self):
        for k in self.weights:
            if k not in self.model.grads:                                   # frozen
                continue
            self.grad_norms[_layer(k)].append(float(np.linalg.norm(self.model.grads[k])))
            size = np.linalg.norm(self.before[k])
            if size > 0:
                self.ratios[_layer(k)].append(float(np.linalg.norm(self.model.params[k] - self.before[k]) / size))

    def dead_relus(self):
        """Per ReLU node: the share of its channels that are 0 at every pixel of the probe batch (evaluation mode)."""
        layers = getattr(self.model, "layers", {})
        with nn.evaluating(self.model), np.errstate(over="ignore", invalid="ignore"):
            self.model.forward(self.probe)
        dead = {}
        for name, layer in layers.items():
            out = getattr(layer, "cache", None) if isinstance(layer, nn.ReLU) else None
            if out is not None and out.ndim == 4:
                alive = (out > 0).any(axis=(0, 2, 3))
                dead[name] = float(1 - alive.mean())
        return dead

    def epoch(self, confusion=None):
        """The epoch's figures as a dict of plain values (JSON-ready); starts a new epoch's sampling.

        ``confusion`` is the validation confusion matrix (K x K, rows true classes), or None.
        """
        mean = lambda values: float(np.mean(values)) if values else None    # noqa: E731
        record = dict(grad_norm={k: mean(v) for k, v in self.grad_norms.items() if v},
                      update_ratio={k: mean(v) for k, v in self.ratios.items() if v},
                      dead_relu=self.dead_relus())
        if confusion is not None:
            total = max(int(confusion.sum()), 1)
            record["predicted_share"] = (confusion.sum(axis=0) / total).tolist()
            record["true_share"] = (confusion.sum(axis=1) / total).tolist()
        self._reset()
        return record


def collapsed(predicted_share, true_share):
    """The class all predictions collapsed to (see :data:`COLLAPSE`), or None."""
    top = int(np.argmax(predicted_share))
    others_predicted, others_true = 1 - predicted_share[top], 1 - true_share[top]
    return top if others_true > 0 and others_predicted < COLLAPSE * others_true else None


def warnings_for(history, classes=None):
    """``(pattern, one-line warning)`` for each telltale pattern in the last epoch of ``history``; [] when all is well.

    The patterns (``"collapse"``, ``"slow"``, ``"fast"``, ``"dead"``):

    - predictions collapsed to one class in each of the last 2 epochs;
    - a layer's mean update/weight ratio outside :data:`UPDATE_RATIO` (below it only while the learning
      rate is above a tenth of its peak: the end of a decaying schedule makes every step small on purpose);
    - more than :data:`DEAD` of a ReLU layer's channels dead.
    """
    messages = []
    last = history["diagnostics"][-1] if history.get("diagnostics") else None
    if last is None:
        return messages
    recent = [d for d in history["diagnostics"][-2:] if d.get("predicted_share")]
    tops = [collapsed(d["predicted_share"], d["true_share"]) for d in recent]
    if len(tops) == 2 and tops[0] is not None and tops[0] == tops[1]:
        name = classes[tops[0]] if classes else f"class {tops[0]}"
        share = recent[-1]["predicted_share"][tops[0]]
        messages.append(("collapse", f"the predictions have collapsed to {name!r} for 2 epochs ({share:.1%} of the "
                                     f"pixels): the network has found the easy answer; try the default recipe "
                                     f"(AdamW), a lower learning rate, or --norm batch"))
    ratios, dead_share = last["update_ratio"], last["dead_relu"]
    rates = [r for r in history.get("lr", []) if r]
    decayed = bool(rates) and rates[-1] < 0.1 * max(rates)   # the schedule, not the layer, made the steps small
    slow = [] if decayed else [k for k, r in ratios.items() if r < UPDATE_RATIO[0]]
    fast = [k for k, r in ratios.items() if r > UPDATE_RATIO[1]]
    dead = [k for k, share in dead_share.items() if share > DEAD]
    if slow:
        messages.append(("slow", f"updates below {UPDATE_RATIO[0]:.0e} of the weights per step in {_layers(slow)} "
                                 f"(smallest {min(ratios[k] for k in slow):.1e}): they barely learn; raise the "
                                 f"learning rate, or look at their gradient norms in diagnostics.png"))
    if fast:
        messages.append(("fast", f"updates above {UPDATE_RATIO[1]:.0e} of the weights per step in {_layers(fast)} "
                                 f"(largest {max(ratios[k] for k in fast):.1e}): they are thrown around; lower "
                                 f"the learning rate"))
    if dead:
        messages.append(("dead", f"more than {DEAD:.0%} of the channels are dead (zero on every probe image) in "
                                 f"{_layers(dead)} (worst {max(dead_share[k] for k in dead):.0%}): lower the "
                                 f"learning rate, or use --norm batch"))
    return messages


def _layers(names):
    """'layer fc6' or 'layers conv1_1, conv1_2 and fc6'."""
    return f"layer {names[0]}" if len(names) == 1 else f"layers {', '.join(names[:-1])} and {names[-1]}"
