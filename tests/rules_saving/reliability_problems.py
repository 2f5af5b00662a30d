"""Seeded initializers the reliability tests share."""

import keras


def seeded(seed):
    return keras.initializers.GlorotUniform(seed=seed)
