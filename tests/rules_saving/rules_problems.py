"""The small models and NumPy penalties the `regularize`/`constrain` tests share."""

import keras
import numpy as np

from tests.helpers import randomize

Dense = keras.layers.Dense


def mlp(name="net", use_bias=True):
    model = keras.Sequential(
        [
            keras.Input((4,)),
            Dense(5, name="hidden_1", use_bias=use_bias),
            Dense(3, name="hidden_2", use_bias=use_bias),
            Dense(2, name="out", use_bias=use_bias),
        ],
        name=name,
    )
    randomize(model)
    return model


def kernels(model):
    """The variables of `model` named `kernel` (inner layers' included)."""
    return [v for v in model.weights if v.name == "kernel"]


def l2(w, factor):
    return factor * np.sum(np.square(np.asarray(w, dtype="float64")))


def l1(w, factor):
    return factor * np.sum(np.abs(np.asarray(w, dtype="float64")))


def nested_model():
    block = keras.Sequential(
        [keras.Input((4,)), Dense(3, name="inner_dense"), Dense(3, name="inner_out")],
        name="block",
    )
    inputs = keras.Input((4,))
    outputs = Dense(2, name="head")(block(inputs))
    model = keras.Model(inputs, outputs, name="outer")
    randomize(model)
    return model
