"""Seeded initializers and small seeded models the reliability tests share."""

import keras


def seeded(seed):
    return keras.initializers.GlorotUniform(seed=seed)


def dense_stack(inputs, layers, name, *, seed):
    """A Sequential of `Dense` layers `[(name, units, activation)]`, seeded from `seed` up."""
    return keras.Sequential(
        [keras.Input((inputs,))]
        + [keras.layers.Dense(units, activation=activation, name=layer_name,
                              kernel_initializer=seeded(seed + i))
           for i, (layer_name, units, activation) in enumerate(layers)],
        name=name,
    )
