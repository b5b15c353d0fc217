"""What the toy-dataset generators share: checked image counts and one random generator per image."""
import numpy as np


def image_rngs(seed, n, split_id):
    """One generator per image, so image i does not depend on how many images are made."""
    return (np.random.default_rng([seed, split_id, i]) for i in range(n))


def check_counts(n_train, n_val):
    """Raise a ValueError naming ``n_train`` or ``n_val`` unless both are ints >= 1."""
    for name, n in (("n_train", n_train), ("n_val", n_val)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"{name} must be an int >= 1, got {n!r}")
