"""The small training problems the `DecoupledWeightDecay` tests share.

A quadratic problem driven step by step through `optimizer.apply` (with its
exact gradient, for NumPy references), a small MLP fitted with `model.fit`, a
full-featured optimizer, and the zero-gradient probe of which variables decay.
"""

import keras
import numpy as np

from keras_regkit import DecoupledWeightDecay

schedules = keras.optimizers.schedules
STEPS = 20

# --- a small quadratic problem driven step by step through `optimizer.apply` -----------

RNG = np.random.default_rng(0)
A = RNG.normal(size=(8, 3))
T = RNG.normal(size=(8, 2))
KERNEL0 = RNG.normal(size=(3, 2)).astype("float32")
BIAS0 = RNG.normal(size=(2,)).astype("float32")


def gradients(kernel, bias):
    """Gradient of mean_i 0.5 * ||A_i kernel + bias - T_i||^2 (float64)."""
    residual = A @ kernel + bias - T
    return A.T @ residual / len(A), residual.mean(axis=0)


def trajectory(optimizer, steps=STEPS, dtype="float32"):
    """Applies `steps` steps to (kernel, bias); returns the weights after each.

    `dtype="float64"` for comparisons with float64 NumPy references, so that
    float32 rounding does not hide (or fake) a difference in the formula.
    """
    kernel = keras.Variable(KERNEL0, name="kernel", dtype=dtype)
    bias = keras.Variable(BIAS0, name="bias", dtype=dtype)
    out = []
    for _ in range(steps):
        grads = gradients(np.asarray(kernel, "float64"), np.asarray(bias, "float64"))
        optimizer.apply([g.astype(dtype) for g in grads], [kernel, bias])
        out.append((np.array(kernel), np.array(bias)))
    return out


def assert_same_trajectory(got, expected, atol=1e-6):
    for step, (g, e) in enumerate(zip(got, expected)):
        for name, a, b in zip(("kernel", "bias"), g, e):
            np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=f"{name}, step {step}")


def keras_decaying(optimizer):
    """Keras's own weight decay, with the bias excluded like our default mask."""
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    return optimizer


def cosine(initial=0.05):
    return schedules.CosineDecay(initial, decay_steps=STEPS)


# --- a small MLP fitted with `model.fit` ---------------------------------------------

X = np.random.default_rng(1).normal(size=(32, 5)).astype("float32")
Y = np.random.default_rng(2).normal(size=(32, 3)).astype("float32")


def mlp(regularizer=None, seed=3, name="mlp"):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(4, activation="tanh", kernel_regularizer=regularizer, name="hidden"),
            keras.layers.Dense(3, kernel_regularizer=regularizer, name="out"),
        ],
        name=name,
    )


def fit(optimizer, *, model=None, epochs=3, batch_size=8, **compile_kwargs):
    model = model or mlp()
    model.compile(optimizer=optimizer, loss="mse", **compile_kwargs)
    model.fit(X, Y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return [np.array(w) for w in model.weights], model


def max_difference(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


# --- an optimizer with every feature on, and the probe of which variables decay -------


def full_featured():
    return DecoupledWeightDecay(
        keras.optimizers.Adam(schedules.CosineDecay(0.01, decay_steps=40)),
        weight_decay=schedules.ExponentialDecay(0.2, decay_steps=8, decay_rate=0.5),
        decay_scaling="schedule",
        toward="initial",
        l1=0.3,
        group_l1=0.3,
    )


def net(kernel_regularizer=None):
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, name="dense_a", kernel_regularizer=kernel_regularizer),
            keras.layers.BatchNormalization(name="norm"),
            keras.layers.Dense(2, name="dense_b"),
        ],
        name="net",
    )


def decayed_paths(variables=None, optimizer=None, **kwargs):
    """Paths of the variables one zero-gradient SGD step with decay changes.

    The gradient is zero, so SGD itself moves nothing: each variable either
    keeps its value or is multiplied by exactly `1 - lr * lam = 1 - 0.1 * 0.5`.
    `optimizer`, if given, must be such an SGD(0.1) step with decay 0.5.
    """
    if variables is None:
        variables = net().trainable_variables
    before = [np.array(v) + 1.0 for v in variables]  # away from zero (beta starts at 0)
    for v, value in zip(variables, before):
        v.assign(value)
    if optimizer is None:
        optimizer = DecoupledWeightDecay(keras.optimizers.SGD(0.1), 0.5, **kwargs)
    optimizer.apply([np.zeros(v.shape, "float32") for v in variables], variables)
    changed = []
    for v, value in zip(variables, before):
        if not np.array_equal(np.array(v), value):
            np.testing.assert_allclose(np.array(v), value * (1 - 0.05), rtol=1e-6)
            changed.append(v.path)
    return changed


def attention_model():
    token_ids = keras.Input((4,), dtype="int32")
    x = keras.layers.Embedding(10, 8, name="embed")(token_ids)
    x = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="attention")(x, x)
    x = keras.layers.LayerNormalization(name="norm")(x)
    return keras.Model(token_ids, keras.layers.Dense(3, name="head")(x))
