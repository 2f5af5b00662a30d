"""NumPy references and helpers the regularizer tests share.

A seeded random array, the group-lasso penalty written independently of the
package, and the gradient of a penalty by `tf.GradientTape`.
"""

import numpy as np


def random_array(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def np_group_lasso(w, factor):
    w = np.asarray(w, dtype="float64")
    if w.ndim < 2:
        return factor * np.abs(w).sum()
    groups = w.reshape(-1, w.shape[-1])  # one column per output unit
    return factor * np.sqrt((groups**2).sum(axis=0)).sum()


def gradient(reg, w):
    import tensorflow as tf

    w = tf.Variable(w)
    with tf.GradientTape() as tape:
        value = reg(w)
    return tape.gradient(value, w).numpy()
