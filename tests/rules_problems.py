"""The small models and NumPy penalties the `regularize`/`constrain` tests share."""

import keras
import numpy as np

Dense = keras.layers.Dense


def make_rng(seed=0):
    return np.random.default_rng(seed)


def randomize(model, seed=0):
    """Random non-zero weights, so penalties are not those of the initializer."""
    rng = make_rng(seed)
    for variable in model.weights:
        if variable.trainable:
            variable.assign(rng.normal(size=variable.shape).astype("float32"))


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
