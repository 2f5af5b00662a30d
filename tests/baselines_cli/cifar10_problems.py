"""Layer look-ups the CIFAR-10 baseline tests share."""

import keras


def convs(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def denses(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
