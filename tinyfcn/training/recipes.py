"""Training recipes: named sets of training settings, for ``tinyfcn train --recipe NAME`` and ``fit(recipe=NAME)``.

A recipe fills in every setting the caller leaves out; a setting given explicitly wins.

- ``"paper"``: the FCN paper's optimizer, SGD with momentum 0.9 and weight decay 5e-4, at
  tinyfcn's learning rate for a pixel-mean loss (0.03, poly decay; see the loss-scale lesson in
  :mod:`tinyfcn.training.optim`) and the fixed input normalization. tinyfcn 0.1 trained with it.
- ``"default"``: the recipe chosen by measurement (``docs/recipe.md``): AdamW (lr 1e-3, poly
  decay, weight decay 1e-4), the training split's own channel statistics for the input, a
  BatchNorm after every convolution of the backbone, fc6 and fc7 (and the unpooling decoder),
  and upsampling layers that train from their bilinear start. The FCN authors froze the
  upsampling; on thin structures (the digits' strokes) a frozen x8 bilinear kernel cannot
  draw what the network sees, and training it was the largest single gain measured.

``norm`` and ``learn_upsampling`` are settings of the model (:data:`MODEL_SETTINGS`): the
command line builds a new model with the recipe's; ``fit`` trains the model it is given and
records the model's own.
"""

MODEL_SETTINGS = ("norm", "learn_upsampling")
"""The recipe's settings that belong to the model (``norm="batch"``: a BatchNorm after every convolution of
the backbone, fc6 and fc7; ``learn_upsampling``: train the bilinear-initialised transposed convolutions)."""

NORMALIZATIONS = ("fixed", "dataset")
"""Input normalization by name: tinyfcn's fixed (0.5, 0.25), or the training split's channel mean and std."""

CLASS_WEIGHTS = ("none", "median-frequency")
"""Class weights by name (a recipe or the command line may also give K numbers)."""

RECIPES = {
    "default": dict(optimizer="adamw", lr=1e-3, momentum=0.9, weight_decay=1e-4, schedule="poly", warmup_epochs=0,
                    class_weights="none", normalization="dataset", norm="batch", learn_upsampling=True),
    "paper": dict(optimizer="sgd", lr=0.03, momentum=0.9, weight_decay=5e-4, schedule="poly", warmup_epochs=0,
                  class_weights="none", normalization="fixed", norm="none", learn_upsampling=False),
}
"""Recipe name -> its settings."""


def settings(recipe, **given):
    """The recipe's settings, with every value in ``given`` that is not None put in their place.

    Raises
    ------
    ValueError
        For an unknown recipe name.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
    return {**RECIPES[recipe], **{k: v for k, v in given.items() if v is not None}}
