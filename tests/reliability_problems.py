"""Seeded random numbers and initializers the reliability tests share."""

import keras
import numpy as np


def rng(seed):
    return np.random.default_rng(seed)


def seeded(seed):
    return keras.initializers.GlorotUniform(seed=seed)
