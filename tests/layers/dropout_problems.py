"""The small model and the comparisons the dropout tests share."""

import keras
import numpy as np
from keras import layers as L

from tests.helpers import randomize


def classes_and_rates(model):
    return [(layer.__class__.__name__, getattr(layer, "rate", None))
            for layer in model.layers]


def assert_same_outputs(original, new, x):
    expected = keras.tree.flatten(original(x, training=False))
    got = keras.tree.flatten(new(x, training=False))
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(np.asarray(e), np.asarray(g))


def vgg_like(input_shape=(16, 16, 3)):
    return randomize(keras.Sequential([
        keras.Input(input_shape),
        L.Conv2D(4, 3, padding="same", activation="relu"),
        L.Conv2D(4, 3, padding="same", activation="relu"),
        L.MaxPooling2D(),
        L.Conv2D(8, 3, padding="same", activation="relu"),
        L.Conv2D(8, 3, padding="same", activation="relu"),
        L.MaxPooling2D(),
        L.Flatten(),
        L.Dense(16, activation="relu"),
        L.Dense(10, activation="softmax"),
    ], name="vgg"))
