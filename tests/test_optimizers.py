"""Tests for `keras_regkit.DecoupledWeightDecay` and `normalized_weight_decay`.

Every trajectory is checked against an independent reference: Keras's own
`weight_decay` (SGD, AdamW, RMSprop, ...), NumPy implementations of the
update rules written here (the paper's Algorithm 2, the closed-form soft
thresholds), the textbook SGD/L2 identity, or an equivalent run (one device
vs two replicas, a large batch vs accumulated small ones, an uninterrupted
fit vs a saved-and-resumed one).
"""

import json
import math
import warnings

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import DecoupledWeightDecay
from keras_regkit import normalized_weight_decay
from tests.helpers import config_round_trip
from tests.helpers import run_python

schedules = keras.optimizers.schedules
STEPS = 20

# --- a small quadratic problem driven step by step through `optimizer.apply` -----------

_RNG = np.random.default_rng(0)
_A = _RNG.normal(size=(8, 3))
_T = _RNG.normal(size=(8, 2))
_KERNEL0 = _RNG.normal(size=(3, 2)).astype("float32")
_BIAS0 = _RNG.normal(size=(2,)).astype("float32")


def _gradients(kernel, bias):
    """Gradient of mean_i 0.5 * ||A_i kernel + bias - T_i||^2 (float64)."""
    residual = _A @ kernel + bias - _T
    return _A.T @ residual / len(_A), residual.mean(axis=0)


def _trajectory(optimizer, steps=STEPS, dtype="float32"):
    """Applies `steps` steps to (kernel, bias); returns the weights after each.

    `dtype="float64"` for comparisons with float64 NumPy references, so that
    float32 rounding does not hide (or fake) a difference in the formula.
    """
    kernel = keras.Variable(_KERNEL0, name="kernel", dtype=dtype)
    bias = keras.Variable(_BIAS0, name="bias", dtype=dtype)
    out = []
    for _ in range(steps):
        grads = _gradients(np.asarray(kernel, "float64"), np.asarray(bias, "float64"))
        optimizer.apply([g.astype(dtype) for g in grads], [kernel, bias])
        out.append((np.array(kernel), np.array(bias)))
    return out


def _assert_same_trajectory(got, expected, atol=1e-6):
    for step, (g, e) in enumerate(zip(got, expected)):
        for name, a, b in zip(("kernel", "bias"), g, e):
            np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=f"{name}, step {step}")


def _keras_decaying(optimizer):
    """Keras's own weight decay, with the bias excluded like our default mask."""
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    return optimizer


def _cosine(initial=0.05):
    return schedules.CosineDecay(initial, decay_steps=STEPS)


@pytest.mark.parametrize(
    "make_keras, make_inner",
    [
        pytest.param(
            lambda: keras.optimizers.SGD(0.1, weight_decay=0.3),
            lambda: keras.optimizers.SGD(0.1),
            id="sgd",
        ),
        pytest.param(
            lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.3),
            lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
            id="sgd-nesterov",
        ),
        pytest.param(
            lambda: keras.optimizers.AdamW(0.05, weight_decay=0.3),
            lambda: keras.optimizers.Adam(0.05),
            id="adamw",
        ),
        pytest.param(
            lambda: keras.optimizers.AdamW(_cosine(), weight_decay=0.3),
            lambda: keras.optimizers.Adam(_cosine()),
            id="adamw-cosine-lr",
        ),
        pytest.param(
            lambda: keras.optimizers.SGD(_cosine(0.1), momentum=0.5, weight_decay=0.3),
            lambda: keras.optimizers.SGD(_cosine(0.1), momentum=0.5),
            id="sgd-momentum-cosine-lr",
        ),
        pytest.param(
            lambda: keras.optimizers.RMSprop(0.01, weight_decay=0.3),
            lambda: keras.optimizers.RMSprop(0.01),
            id="rmsprop",
        ),
        pytest.param(
            lambda: keras.optimizers.Lion(0.01, weight_decay=0.3),
            lambda: keras.optimizers.Lion(0.01),
            id="lion",
        ),
    ],
)
def test_learning_rate_mode_matches_keras_weight_decay(make_keras, make_inner):
    expected = _trajectory(_keras_decaying(make_keras()))
    got = _trajectory(DecoupledWeightDecay(make_inner(), 0.3))
    _assert_same_trajectory(got, expected)
    # And the decay is really there: without it the kernel ends elsewhere.
    undecayed = _trajectory(make_inner())
    assert np.max(np.abs(undecayed[-1][0] - got[-1][0])) > 1e-3


def test_schedule_mode_matches_algorithm_2_of_the_paper():
    """AdamW with a cosine schedule multiplier eta_t, written from the paper."""
    # Betas exact in float32: Keras computes their powers from float32 casts.
    alpha, beta_1, beta_2, epsilon, lam = 0.0625, 0.875, 1 - 2**-10, 1e-8, 0.3
    optimizer = DecoupledWeightDecay(
        keras.optimizers.Adam(_cosine(alpha), beta_1=beta_1, beta_2=beta_2, epsilon=epsilon),
        weight_decay=lam,
        decay_scaling="schedule",
    )
    got = _trajectory(optimizer, dtype="float64")

    # Loshchilov & Hutter (2019), Algorithm 2, lines 6-12; the bias gets no decay.
    theta = [_KERNEL0.astype("float64"), _BIAS0.astype("float64")]
    m = [np.zeros_like(p) for p in theta]
    v = [np.zeros_like(p) for p in theta]
    expected = []
    for t in range(1, STEPS + 1):
        eta = 0.5 * (1 + math.cos(math.pi * (t - 1) / STEPS))  # SetScheduleMultiplier(t)
        grads = _gradients(*theta)
        for i, g in enumerate(grads):
            m[i] = beta_1 * m[i] + (1 - beta_1) * g
            v[i] = beta_2 * v[i] + (1 - beta_2) * g**2
            m_hat = m[i] / (1 - beta_1**t)
            v_hat = v[i] / (1 - beta_2**t)
            decay = lam * theta[i] if i == 0 else 0.0
            theta[i] = theta[i] - eta * (alpha * m_hat / (np.sqrt(v_hat) + epsilon) + decay)
        expected.append(tuple(p.copy() for p in theta))
    _assert_same_trajectory(got, expected)


def test_none_mode_with_decay_schedule_matches_numpy():
    """w <- w - lam_t * w (no learning rate), lam_t from a schedule; SGD momentum."""
    learning_rate, momentum = 0.05, 0.9
    decay = schedules.ExponentialDecay(0.02, decay_steps=5, decay_rate=0.5)
    optimizer = DecoupledWeightDecay(
        keras.optimizers.SGD(learning_rate, momentum=momentum),
        weight_decay=decay,
        decay_scaling="none",
    )
    got = _trajectory(optimizer, dtype="float64")

    kernel, bias = _KERNEL0.astype("float64"), _BIAS0.astype("float64")
    velocity = [np.zeros_like(kernel), np.zeros_like(bias)]
    expected = []
    for step in range(STEPS):
        g_kernel, g_bias = _gradients(kernel, bias)  # at the weights before decay
        kernel = kernel - 0.02 * 0.5 ** (step / 5) * kernel
        velocity = [momentum * velocity[0] - learning_rate * g_kernel,
                    momentum * velocity[1] - learning_rate * g_bias]
        kernel, bias = kernel + velocity[0], bias + velocity[1]
        expected.append((kernel, bias))
    _assert_same_trajectory(got, expected)


def test_schedule_mode_follows_learning_rate_changes():
    """With a float learning rate, eta_t = lr_t / lr_0 tracks callbacks' changes."""
    inner = keras.optimizers.SGD(0.1)
    optimizer = DecoupledWeightDecay(inner, 0.5, decay_scaling="schedule")
    kernel = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
    optimizer.apply([np.zeros((2, 2), "float32")], [kernel])  # eta = 1
    np.testing.assert_allclose(kernel.numpy(), 1 - 0.5, rtol=1e-6)
    optimizer.learning_rate = 0.025  # eta = 0.25, set through the wrapper
    assert float(np.asarray(inner.learning_rate)) == pytest.approx(0.025)
    optimizer.apply([np.zeros((2, 2), "float32")], [kernel])
    np.testing.assert_allclose(kernel.numpy(), 0.5 * (1 - 0.25 * 0.5), rtol=1e-6)
    assert int(np.asarray(optimizer.iterations)) == 2


# --- decoupled decay vs an L2 penalty in the loss --------------------------------------

_X = np.random.default_rng(1).normal(size=(32, 5)).astype("float32")
_Y = np.random.default_rng(2).normal(size=(32, 3)).astype("float32")


def _mlp(regularizer=None, seed=3, name="mlp"):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(4, activation="tanh", kernel_regularizer=regularizer, name="hidden"),
            keras.layers.Dense(3, kernel_regularizer=regularizer, name="out"),
        ],
        name=name,
    )


def _fit(optimizer, *, model=None, epochs=3, batch_size=8, **compile_kwargs):
    model = model or _mlp()
    model.compile(optimizer=optimizer, loss="mse", **compile_kwargs)
    model.fit(_X, _Y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return [np.array(w) for w in model.weights], model


def _max_difference(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def test_sgd_with_l2_penalty_equals_sgd_with_decoupled_decay_of_twice_it():
    c = 0.05
    penalized, _ = _fit(keras.optimizers.SGD(0.1), model=_mlp(keras_regkit.L2(c)))
    decoupled, _ = _fit(DecoupledWeightDecay(keras.optimizers.SGD(0.1), 2 * c))
    assert _max_difference(penalized, decoupled) < 1e-6
    plain, _ = _fit(keras.optimizers.SGD(0.1))
    assert _max_difference(plain, decoupled) > 1e-3  # the penalty mattered


def _numpy_adam(penalty, decay, learning_rate=0.01, epochs=3, batch_size=8):
    """Adam (Kingma & Ba, Algorithm 1) on mse of a linear layer, written here.

    `penalty`: the L2 coefficient in the loss (its gradient `2 * penalty * W`
    goes through Adam); `decay`: decoupled decay `W <- W - lr * decay * W`
    before each step (at the weights the gradient is taken at). The bias gets
    neither. Keras puts `epsilon` beside `sqrt(v)` rather than `sqrt(v_hat)`
    (the paper's section 2 form); at 1e-7 the difference is far below the tolerance.
    """
    beta_1, beta_2, epsilon = 0.9, 0.999, 1e-7
    x, y = _X.astype("float64"), _Y.astype("float64")
    params = [p.astype("float64") for p in _LINEAR_INIT]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    t = 0
    for _ in range(epochs):
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            kernel, bias = params
            residual = xb @ kernel + bias - yb
            scale = 2.0 / residual.size  # mse: mean over examples and outputs
            grads = [scale * xb.T @ residual + 2 * penalty * kernel,
                     scale * residual.sum(axis=0)]
            params[0] = kernel - learning_rate * decay * kernel
            t += 1
            for i, g in enumerate(grads):
                m[i] = beta_1 * m[i] + (1 - beta_1) * g
                v[i] = beta_2 * v[i] + (1 - beta_2) * g**2
                m_hat, v_hat = m[i] / (1 - beta_1**t), v[i] / (1 - beta_2**t)
                params[i] = params[i] - learning_rate * m_hat / (np.sqrt(v_hat) + epsilon)
    return params


_LINEAR_INIT = [np.random.default_rng(8).normal(size=(5, 3)).astype("float32"),
                np.random.default_rng(9).normal(size=(3,)).astype("float32")]


def _linear(regularizer=None):
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(3, kernel_regularizer=regularizer, name="out")]
    )
    model.set_weights(_LINEAR_INIT)
    return model


def test_adam_with_l2_penalty_and_adam_with_decoupled_decay_match_numpy():
    c = 0.05
    penalized, _ = _fit(keras.optimizers.Adam(0.01), model=_linear(keras.regularizers.L2(c)))
    decoupled, _ = _fit(DecoupledWeightDecay(keras.optimizers.Adam(0.01), 2 * c),
                        model=_linear())
    plain, _ = _fit(keras.optimizers.Adam(0.01), model=_linear())
    for got, expected in [
        (penalized, _numpy_adam(penalty=c, decay=0.0)),
        (decoupled, _numpy_adam(penalty=0.0, decay=2 * c)),
        (plain, _numpy_adam(penalty=0.0, decay=0.0)),
    ]:
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    # Under Adam the two are different rules (with SGD they would coincide).
    assert _max_difference(penalized, decoupled) > 1e-3
    assert _max_difference(plain, decoupled) > 1e-3


# --- proximal steps --------------------------------------------------------------------


def test_proximal_l1_after_decay_and_gradient_matches_closed_form():
    rng = np.random.default_rng(4)
    w = rng.uniform(-1, 1, size=(6, 5)).astype("float32")
    b = rng.uniform(-1, 1, size=(5,)).astype("float32")
    g_w = rng.normal(size=w.shape).astype("float32")
    g_b = rng.normal(size=b.shape).astype("float32")
    lr, lam, l1 = 0.1, 0.5, 2.0
    kernel, bias = keras.Variable(w, name="kernel"), keras.Variable(b, name="bias")
    DecoupledWeightDecay(keras.optimizers.SGD(lr), lam, l1=l1).apply([g_w, g_b], [kernel, bias])

    half = w.astype("float64") * (1 - lr * lam) - lr * g_w
    expected = np.sign(half) * np.maximum(np.abs(half) - lr * l1, 0.0)
    got = kernel.numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert np.all(got[np.abs(half) < lr * l1 - 1e-6] == 0.0)  # exact zeros
    assert 0 < np.sum(got == 0.0) < got.size
    # The bias is outside the default mask: gradient step only.
    np.testing.assert_allclose(bias.numpy(), b - lr * g_b, rtol=0, atol=1e-7)


def test_proximal_threshold_uses_the_learning_rate_of_its_step():
    """With a schedule, step k thresholds at lr_k * l1 (lr read before the step)."""
    learning_rate = schedules.PiecewiseConstantDecay([0], [0.5, 0.1])  # step 0: 0.5
    w = np.array([[1.0, -0.3], [0.45, -2.0]], "float32")
    kernel = keras.Variable(w, name="kernel")
    optimizer = DecoupledWeightDecay(keras.optimizers.SGD(learning_rate), 0.0, l1=1.0)
    expected = w.astype("float64")
    for lr in (0.5, 0.1):
        optimizer.apply([np.zeros_like(w)], [kernel])
        expected = np.sign(expected) * np.maximum(np.abs(expected) - lr, 0.0)
        np.testing.assert_allclose(kernel.numpy(), expected, rtol=0, atol=1e-7)
    assert np.sum(kernel.numpy() == 0.0) == 2


def test_group_l1_zeroes_whole_units_of_a_conv_kernel():
    rng = np.random.default_rng(5)
    w = rng.normal(size=(3, 3, 2, 5)).astype("float32")
    w[..., 0] *= 0.01  # a unit whose fan-in norm is below the threshold
    w[..., 2] = 0.0  # a dead unit: ||w_j|| = 0 must stay finite
    w[..., 4] = 1e-21  # ||w_j||^2 underflows to 0 in float32: still below it
    lr, strength = 0.5, 0.4
    kernel = keras.Variable(w, name="kernel")
    optimizer = DecoupledWeightDecay(keras.optimizers.SGD(lr), 0.0, group_l1=strength)
    optimizer.apply([np.zeros_like(w)], [kernel])

    w64 = w.astype("float64")
    norms = np.sqrt(np.sum(w64**2, axis=(0, 1, 2)))
    scale = np.maximum(0.0, 1 - lr * strength / np.where(norms > 0, norms, 1.0))
    got = kernel.numpy()
    np.testing.assert_allclose(got, w64 * scale, rtol=0, atol=1e-6)
    assert np.all(got[..., [0, 2, 4]] == 0.0)
    assert np.all(got[..., [1, 3]] != 0.0)
    assert np.all(np.isfinite(got))


def test_steps_that_only_accumulate_leave_the_weights_exactly_alone():
    w = np.array([[1e-21, 0.5], [1e-21, -3.0]], "float32")  # unit 0: tiny, not zero
    kernel = keras.Variable(w, name="kernel")
    optimizer = DecoupledWeightDecay(keras.optimizers.SGD(0.1), 0.5, l1=1e-3, group_l1=1.0,
                                     toward="initial", gradient_accumulation_steps=2)
    kernel.assign(w * 2)  # away from the reference, so the decay would move it
    optimizer.apply([np.zeros_like(w)], [kernel])  # accumulates only
    np.testing.assert_array_equal(kernel.numpy(), w * 2)
    optimizer.apply([np.zeros_like(w)], [kernel])  # updates
    assert np.all(kernel.numpy()[:, 0] == 0.0) and np.all(kernel.numpy()[:, 1] != w[:, 1] * 2)


def test_l1_and_group_l1_together_are_the_sparse_group_lasso_prox():
    rng = np.random.default_rng(6)
    w = rng.normal(size=(4, 3)).astype("float32")
    lr, l1, group_l1 = 0.2, 1.0, 2.0
    kernel = keras.Variable(w, name="kernel")
    optimizer = DecoupledWeightDecay(keras.optimizers.SGD(lr), 0.0, l1=l1, group_l1=group_l1)
    optimizer.apply([np.zeros_like(w)], [kernel])
    soft = np.sign(w) * np.maximum(np.abs(w.astype("float64")) - lr * l1, 0)
    norms = np.linalg.norm(soft, axis=0)
    expected = soft * np.maximum(0, 1 - lr * group_l1 / np.where(norms > 0, norms, 1))
    np.testing.assert_allclose(kernel.numpy(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("l1", [0.0, 0.3])
def test_the_constraint_is_applied_again_after_the_proximal_step(l1):
    """UnitNorm columns stay unit-norm: the prox alone would leave them at 0.9."""
    lr, group_l1 = 0.1, 1.0  # group threshold 0.1: a unit column shrinks to norm 0.9
    layer = keras.layers.Dense(3, kernel_constraint=keras.constraints.UnitNorm(axis=0))
    layer.build((None, 4))
    rng = np.random.default_rng(7)
    w = rng.normal(size=(4, 3))
    layer.kernel.assign(w.astype("float32"))
    optimizer = DecoupledWeightDecay(keras.optimizers.SGD(lr), 0.0, l1=l1, group_l1=group_l1)

    def unit_norm(v):  # each column (one unit's fan-in) scaled to norm 1
        return v / np.linalg.norm(v, axis=0, keepdims=True)

    for _ in range(3):
        g = rng.normal(size=w.shape)
        optimizer.apply([g.astype("float32"), np.zeros(3, "float32")],
                        [layer.kernel, layer.bias])
        w = unit_norm(w - lr * g)  # inner step; Keras applies the constraint
        w = np.sign(w) * np.maximum(np.abs(w) - lr * l1, 0.0)  # prox L1
        norms = np.linalg.norm(w, axis=0, keepdims=True)
        w = w * np.maximum(0.0, 1 - lr * group_l1 / norms)  # prox group L1
        assert np.all(np.linalg.norm(w, axis=0) < 1 - 0.05)  # the prox did shrink them
        w = unit_norm(w)  # and the constraint again
        np.testing.assert_allclose(layer.kernel.numpy(), w, rtol=0, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(layer.kernel.numpy(), axis=0), 1.0, atol=1e-6)


def test_training_from_all_zero_weights_stays_finite():
    model = _mlp()
    for w in model.weights:
        w.assign(np.zeros(w.shape, "float32"))
    weights, _ = _fit(
        DecoupledWeightDecay(keras.optimizers.Adam(0.01), 0.1, l1=1e-3, group_l1=1e-2),
        model=model,
        epochs=1,
    )
    assert all(np.all(np.isfinite(w)) for w in weights)


def test_toward_initial_decays_toward_the_weights_at_build():
    w0 = np.array([[1.0, -2.0], [3.0, 0.5]], "float32")
    kernel = keras.Variable(w0, name="kernel")
    optimizer = DecoupledWeightDecay(keras.optimizers.SGD(0.1), 0.5, toward="initial")
    optimizer.build([kernel])
    assert any(v.path.endswith("kernel_decay_reference") for v in optimizer.variables)
    moved = w0 + np.array([[1.0, 1.0], [-2.0, 0.0]], "float32")
    kernel.assign(moved)
    optimizer.apply([np.zeros_like(w0)], [kernel])
    np.testing.assert_allclose(kernel.numpy(), moved - 0.1 * 0.5 * (moved - w0), rtol=1e-6)


def test_every_feature_at_once_matches_numpy():
    """Decay schedule, `"schedule"` scaling, `toward="initial"`, L1 and group-L1 prox.

    The update order of the class docstring, written out for plain SGD: the
    gradient and the decay at the weights before the step, then the SGD
    step, then the L1 and the group-L1 thresholds at the step's learning rate.
    """
    steps, l1, group_l1 = 5, 0.2, 0.5
    optimizer = DecoupledWeightDecay(
        keras.optimizers.SGD(schedules.ExponentialDecay(0.2, decay_steps=2, decay_rate=0.5)),
        weight_decay=schedules.ExponentialDecay(0.4, decay_steps=3, decay_rate=0.5),
        decay_scaling="schedule",
        toward="initial",
        l1=l1,
        group_l1=group_l1,
    )
    got = _trajectory(optimizer, steps=steps, dtype="float64")

    def learning_rate(t):
        return 0.2 * 0.5 ** (t / 2)

    def decay(t):
        return 0.4 * 0.5 ** (t / 3)

    kernel0 = _KERNEL0.astype("float64")
    kernel, bias = kernel0, _BIAS0.astype("float64")
    expected = []
    for t in range(steps):  # t: the step count before the step (0 for the first)
        lr = learning_rate(t)
        g_kernel, g_bias = _gradients(kernel, bias)
        kernel = kernel - lr / learning_rate(0) * decay(t) * (kernel - kernel0)
        kernel, bias = kernel - lr * g_kernel, bias - lr * g_bias  # bias: no decay, no prox
        kernel = np.sign(kernel) * np.maximum(np.abs(kernel) - lr * l1, 0.0)
        norms = np.linalg.norm(kernel, axis=0)  # one norm per output unit (column)
        kernel = kernel * np.maximum(0.0, 1 - lr * group_l1 / np.where(norms > 0, norms, 1.0))
        expected.append((kernel, bias))
    _assert_same_trajectory(got, expected)


# --- which variables decay -------------------------------------------------------------


def _net(kernel_regularizer=None):
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, name="dense_a", kernel_regularizer=kernel_regularizer),
            keras.layers.BatchNormalization(name="norm"),
            keras.layers.Dense(2, name="dense_b"),
        ],
        name="net",
    )


def _decayed_paths(variables=None, optimizer=None, **kwargs):
    """Paths of the variables one zero-gradient SGD step with decay changes.

    The gradient is zero, so SGD itself moves nothing: each variable either
    keeps its value or is multiplied by exactly `1 - lr * lam = 1 - 0.1 * 0.5`.
    `optimizer`, if given, must be such an SGD(0.1) step with decay 0.5.
    """
    if variables is None:
        variables = _net().trainable_variables
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


def test_default_mask_decays_kernels_but_not_biases_or_norm_parameters():
    assert _decayed_paths() == ["net/dense_a/kernel", "net/dense_b/kernel"]


def _attention_model():
    token_ids = keras.Input((4,), dtype="int32")
    x = keras.layers.Embedding(10, 8, name="embed")(token_ids)
    x = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="attention")(x, x)
    x = keras.layers.LayerNormalization(name="norm")(x)
    return keras.Model(token_ids, keras.layers.Dense(3, name="head")(x))


def test_default_mask_leaves_2d_attention_biases_and_norm_parameters_alone():
    model = _attention_model()
    variables = model.trainable_variables
    shapes = {v.path: tuple(v.shape) for v in variables}
    # MultiHeadAttention's query/key/value biases are (heads, head_size): 2-D.
    assert shapes["attention/query/bias"] == (2, 4)
    before = {v.path: np.array(v) + 1.0 for v in variables}
    _decayed_paths(variables)  # adds the same 1.0 first
    decayed = [
        "embed/embeddings",
        "attention/query/kernel",
        "attention/key/kernel",
        "attention/value/kernel",
        "attention/attention_output/kernel",
        "head/kernel",
    ]
    kept = [
        "attention/query/bias",
        "attention/key/bias",
        "attention/value/bias",
        "attention/attention_output/bias",
        "norm/gamma",
        "norm/beta",
        "head/bias",
    ]
    assert sorted(shapes) == sorted(decayed + kept)
    after = {v.path: np.array(v) for v in variables}
    for path in decayed:  # w - lr * lam * w, with lr = 0.1, lam = 0.5
        np.testing.assert_allclose(after[path], before[path] - 0.1 * 0.5 * before[path],
                                   rtol=1e-6, err_msg=path)
    for path in kept:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)


def test_include_and_exclude_still_override_the_role_based_default():
    variables = _attention_model().trainable_variables
    # With `include`, the patterns alone decide: biases and norm parameters too.
    assert _decayed_paths(variables, include=["attention/query/*", "norm/gamma"]) == [
        "attention/query/kernel", "attention/query/bias", "norm/gamma"]
    assert _decayed_paths(variables, exclude=["embed/*", "attention/*"]) == ["head/kernel"]


def test_default_mask_on_a_kerashub_bert_backbone():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=8)
    variables = backbone.trainable_variables
    decayed = set(_decayed_paths(variables))
    blocks = [f"transformer_layer_{i}" for i in range(2)]
    # The kernels and embeddings, and nothing else.
    assert decayed == (
        {"token_embedding/embeddings", "position_embedding/embeddings",
         "segment_embedding/embeddings", "pooled_dense/kernel"}
        | {f"{block}/self_attention_layer/{projection}/kernel" for block in blocks
           for projection in ("query", "key", "value", "attention_output")}
        | {f"{block}/{dense}/kernel" for block in blocks
           for dense in ("feedforward_intermediate_dense", "feedforward_output_dense")}
    )
    by_name = {}
    for v in variables:
        by_name.setdefault(v.path.rsplit("/", 1)[-1], set()).add(v.path)
    assert set(by_name) == {"kernel", "embeddings", "bias", "gamma", "beta"}
    assert by_name["kernel"] | by_name["embeddings"] == decayed
    assert not decayed & (by_name["bias"] | by_name["gamma"] | by_name["beta"])
    # Among them the 2-D attention biases and every LayerNorm parameter.
    assert "transformer_layer_0/self_attention_layer/query/bias" in by_name["bias"]
    assert "embeddings_layer_norm/gamma" in by_name["gamma"]


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"exclude": "dense_b/*"}, ["net/dense_a/kernel"]),
        ({"exclude": ["*kernel"]}, []),
        ({"include": "*/bias"}, ["net/dense_a/bias", "net/dense_b/bias"]),
        ({"include": ["norm/*", "dense_a/*"], "exclude": "*/beta"},
         ["net/dense_a/kernel", "net/dense_a/bias", "net/norm/gamma"]),
        ({"include": "net/dense_b/kernel"}, ["net/dense_b/kernel"]),
    ],
)
def test_include_and_exclude_patterns(kwargs, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the all-excluded case warns
        assert _decayed_paths(**kwargs) == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"include": ["dense_a/*", "conv*/kernel"]}, r"include='conv\*/kernel'"),
        ({"exclude": "nomatch"}, r"exclude='nomatch'"),
        ({"exclude": "*"}, r"no variable is selected"),
    ],
)
def test_patterns_that_match_nothing_warn(kwargs, message):
    with pytest.warns(UserWarning, match=message):
        _decayed_paths(**kwargs)


@pytest.mark.parametrize(
    "regularizer, warns",
    [
        (keras.regularizers.L2(0.01), True),
        (keras.regularizers.L1L2(l1=0.01, l2=0.01), True),
        (keras_regkit.L2(0.01), True),
        (keras_regkit.ElasticNet(0.01, 0.01), True),
        (keras.regularizers.L1(0.01), False),
        (keras.regularizers.L1L2(l1=0.01, l2=0.0), False),
    ],
)
def test_l2_regularizer_on_a_decayed_variable_warns(regularizer, warns):
    model = _net(kernel_regularizer=regularizer)
    optimizer = DecoupledWeightDecay(keras.optimizers.SGD(0.1), 0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer.build(model.trainable_variables)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    doubled = [m for m in messages if "regularized twice" in m]
    assert bool(doubled) == warns, messages
    if warns:
        assert "net/dense_a/kernel" in doubled[0] and "dense_b" not in doubled[0]
    # Excluding the variable silences it.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        DecoupledWeightDecay(keras.optimizers.SGD(0.1), 0.5, exclude="dense_a/*").build(
            model.trainable_variables
        )


# --- training set-ups ------------------------------------------------------------------


def _full_featured():
    return DecoupledWeightDecay(
        keras.optimizers.Adam(schedules.CosineDecay(0.01, decay_steps=40)),
        weight_decay=schedules.ExponentialDecay(0.2, decay_steps=8, decay_rate=0.5),
        decay_scaling="schedule",
        toward="initial",
        l1=0.3,
        group_l1=0.3,
    )


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_matches_keras_adamw_with_and_without_jit(jit_compile):
    expected, _ = _fit(_keras_decaying(keras.optimizers.AdamW(0.01, weight_decay=0.1)),
                       jit_compile=jit_compile)
    got, model = _fit(DecoupledWeightDecay(keras.optimizers.Adam(0.01), 0.1),
                      jit_compile=jit_compile)
    assert _max_difference(got, expected) < 1e-6
    assert int(np.asarray(model.optimizer.iterations)) == 12


def test_fit_with_jit_equals_fit_without_for_every_feature():
    eager, _ = _fit(_full_featured(), jit_compile=False)
    jitted, _ = _fit(_full_featured(), jit_compile=True)
    assert _max_difference(eager, jitted) < 1e-6
    assert any(np.any(w == 0.0) for w in eager)  # the proximal steps did something


def test_gradient_accumulation_matches_keras_adamw():
    expected, _ = _fit(_keras_decaying(
        keras.optimizers.AdamW(0.01, weight_decay=0.1, gradient_accumulation_steps=2)))
    on_wrapper, model = _fit(
        DecoupledWeightDecay(keras.optimizers.Adam(0.01), 0.1, gradient_accumulation_steps=2))
    on_inner, _ = _fit(
        DecoupledWeightDecay(keras.optimizers.Adam(0.01, gradient_accumulation_steps=2), 0.1))
    assert _max_difference(on_wrapper, expected) < 1e-6
    assert _max_difference(on_inner, expected) < 1e-6
    assert model.optimizer.inner_optimizer.gradient_accumulation_steps == 2
    assert int(np.asarray(model.optimizer.iterations)) == 6  # 12 batches / 2


def test_gradient_accumulation_equals_the_large_batch_run_with_prox():
    """Two accumulated batches of 4 = one batch of 8 (plain SGD, MSE mean)."""
    def make(**kwargs):
        return DecoupledWeightDecay(keras.optimizers.SGD(0.2), 0.3, l1=0.05, group_l1=0.05,
                                    toward="initial", **kwargs)

    large, _ = _fit(make(), batch_size=8)
    accumulated, _ = _fit(make(gradient_accumulation_steps=2), batch_size=4)
    assert _max_difference(large, accumulated) < 1e-6


def test_forwarded_ema_matches_keras_adamw_with_ema():
    expected, _ = _fit(_keras_decaying(keras.optimizers.AdamW(0.01, weight_decay=0.1, use_ema=True,
                                                              ema_overwrite_frequency=3)))
    got, _ = _fit(DecoupledWeightDecay(keras.optimizers.Adam(0.01), 0.1, use_ema=True,
                                       ema_overwrite_frequency=3))
    assert _max_difference(got, expected) < 1e-6


def test_mixed_float16_compile_wraps_it_and_matches_keras_adamw():
    keras.mixed_precision.set_global_policy("mixed_float16")
    expected, _ = _fit(_keras_decaying(keras.optimizers.AdamW(0.01, weight_decay=0.1)))
    got, model = _fit(DecoupledWeightDecay(keras.optimizers.Adam(0.01), 0.1))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, DecoupledWeightDecay)
    assert _max_difference(got, expected) < 1e-6


_JAX = keras.backend.backend() == "jax"
_NO_EAGER_LSO = pytest.mark.skipif(
    _JAX, reason="Keras's LossScaleOptimizer.apply is not eager-callable on JAX")


@_NO_EAGER_LSO
def test_mixed_float16_with_a_loss_scale_optimizer_inside():
    """The model's loss scaling turned off; ours wraps the loss scale optimizer."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    expected, _ = _fit(_keras_decaying(keras.optimizers.AdamW(0.01, weight_decay=0.1)))
    inside, model = _fit(
        DecoupledWeightDecay(keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.01)), 0.1),
        auto_scale_loss=False,
    )
    assert isinstance(model.optimizer, DecoupledWeightDecay)
    assert _max_difference(inside, expected) < 1e-6


@_NO_EAGER_LSO
@pytest.mark.parametrize("where", ["outside", "inside"])
def test_a_skipped_non_finite_step_does_not_decay(where):
    kernel = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
    if where == "outside":
        optimizer = keras.optimizers.LossScaleOptimizer(
            DecoupledWeightDecay(keras.optimizers.SGD(0.1), 0.5, l1=0.1))
    else:
        optimizer = DecoupledWeightDecay(
            keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1)), 0.5, l1=0.1)
    optimizer.apply([np.full((2, 2), np.inf, "float32")], [kernel])
    np.testing.assert_array_equal(kernel.numpy(), np.ones((2, 2)))
    optimizer.apply([np.zeros((2, 2), "float32")], [kernel])  # a finite step decays
    np.testing.assert_allclose(kernel.numpy(), 1 - 0.1 * 0.5 - 0.1 * 0.1, rtol=1e-6)


@pytest.mark.tensorflow_only
def test_mirrored_strategy_gives_the_weights_of_one_device():
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
    one_device, _ = _fit(_full_featured())
    with strategy.scope():
        model = _mlp()
        optimizer = _full_featured()
    mirrored, model = _fit(optimizer, model=model)
    assert _max_difference(one_device, mirrored) < 1e-6
    for w in model.weights:  # both replicas hold the same values
        first, second = strategy.experimental_local_results(w.value)
        np.testing.assert_array_equal(np.asarray(first), np.asarray(second))


# --- saving and resuming ---------------------------------------------------------------


def _save_load_optimizers():
    return {
        "full": _full_featured(),
        "patterns": DecoupledWeightDecay(
            keras.optimizers.SGD(0.1, momentum=0.9),
            0.05,
            include=["hidden/*", "out/kernel"],
            exclude="*/bias",
            group_l1=0.02,
            gradient_accumulation_steps=2,
        ),
    }


def test_save_load_in_a_fresh_process_continues_like_an_uninterrupted_run(tmp_path):
    names = list(_save_load_optimizers())
    uninterrupted = {n: _fit(_save_load_optimizers()[n], epochs=4)[0] for n in names}
    for name in names:
        model = _mlp()
        _fit(_save_load_optimizers()[name], model=model, epochs=2)
        model.save(tmp_path / f"{name}.keras")
    np.savez(tmp_path / "data.npz", x=_X, y=_Y)
    run_python(
        f"""
        import json, numpy as np, keras
        import keras_regkit
        path = {str(tmp_path)!r}
        data = np.load(path + "/data.npz")
        out, configs = {{}}, {{}}
        for name in {names!r}:
            model = keras.saving.load_model(f"{{path}}/{{name}}.keras", safe_mode=True)
            assert type(model.optimizer).__name__ == "DecoupledWeightDecay"
            configs[name] = model.optimizer.get_config()
            model.fit(data["x"], data["y"], batch_size=8, epochs=2, shuffle=False, verbose=0)
            for i, w in enumerate(model.weights):
                out[f"{{name}}_{{i}}"] = np.asarray(w)
        np.savez(path + "/resumed.npz", **out)
        with open(path + "/configs.json", "w") as f:
            json.dump(configs, f)
        """
    )
    resumed = np.load(tmp_path / "resumed.npz")
    configs = json.loads((tmp_path / "configs.json").read_text())
    for name in names:
        got = [resumed[f"{name}_{i}"] for i in range(len(uninterrupted[name]))]
        assert _max_difference(got, uninterrupted[name]) < 1e-6, name
    assert configs["patterns"]["include"] == ["hidden/*", "out/kernel"]
    assert configs["patterns"]["exclude"] == ["*/bias"]
    assert configs["patterns"]["optimizer"]["config"]["gradient_accumulation_steps"] == 2
    assert configs["full"]["weight_decay"]["class_name"] == "ExponentialDecay"
    assert configs["full"]["toward"] == "initial"


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_to_the_same_weights(tmp_path):
    expected, _ = _fit(_full_featured(), epochs=4)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path))
    model = _mlp()
    model.compile(_full_featured(), "mse")
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(_X, _Y, batch_size=8, epochs=4, shuffle=False, verbose=0,
                  callbacks=[backup, _Interrupt()])
    model = _mlp(seed=99)  # a restarted job: other initial weights, restored
    model.compile(_full_featured(), "mse")
    model.fit(_X, _Y, batch_size=8, epochs=4, shuffle=False, verbose=0,
              callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path))])
    assert _max_difference([np.array(w) for w in model.weights], expected) < 1e-6


# --- configuration, delegation, bad input ----------------------------------------------


def test_config_round_trip_keeps_every_argument():
    optimizer = DecoupledWeightDecay(
        keras.optimizers.Adam(schedules.CosineDecay(1e-3, 100)),
        weight_decay=schedules.PiecewiseConstantDecay([10], [1e-2, 1e-3]),
        decay_scaling="none",
        exclude="*/bias",
        include=("dense*", "conv*"),
        l1=1e-4,
        group_l1=1e-3,
        toward="initial",
        name="dwd",
        gradient_accumulation_steps=4,
    )
    config = optimizer.get_config()
    json.dumps(config)
    assert config["include"] == ["dense*", "conv*"] and config["exclude"] == ["*/bias"]
    restored = config_round_trip(optimizer)
    assert isinstance(restored.inner_optimizer, keras.optimizers.Adam)
    assert restored.inner_optimizer.gradient_accumulation_steps == 4
    assert isinstance(restored.weight_decay, schedules.PiecewiseConstantDecay)
    assert restored.optimizer is restored.inner_optimizer
    plain = config_round_trip(DecoupledWeightDecay(keras.optimizers.SGD(0.1), 1e-4))
    assert plain.include is None and plain.weight_decay == 1e-4


def test_a_config_saved_before_the_role_based_mask_still_loads():
    # `get_config()` of the version whose default mask was `ndim >= 2`.
    saved = {
        "module": None,
        "class_name": "DecoupledWeightDecay",
        "registered_name": "keras_regkit>DecoupledWeightDecay",
        "config": {
            "name": "decoupled_weight_decay",
            "optimizer": keras.saving.serialize_keras_object(keras.optimizers.SGD(0.1)),
            "weight_decay": 0.5,
            "decay_scaling": "learning_rate",
            "exclude": [],
            "include": None,
            "l1": 0.0,
            "group_l1": 0.0,
            "toward": "zero",
        },
    }
    optimizer = keras.saving.deserialize_keras_object(json.loads(json.dumps(saved)))
    assert isinstance(optimizer, DecoupledWeightDecay)
    config = optimizer.get_config()
    for key, value in saved["config"].items():
        if key != "optimizer":
            assert config[key] == value, key
    # It gets the role-based default mask: kernels and embeddings only.
    assert _decayed_paths(_attention_model().trainable_variables, optimizer) == [
        "embed/embeddings", "attention/query/kernel", "attention/key/kernel",
        "attention/value/kernel", "attention/attention_output/kernel", "head/kernel"]


def test_learning_rate_and_iterations_are_the_inner_optimizers():
    inner = keras.optimizers.Adam(0.01)
    optimizer = DecoupledWeightDecay(inner, 0.1)
    assert float(np.asarray(optimizer.learning_rate)) == pytest.approx(0.01)
    _trajectory(optimizer, steps=3)
    assert int(np.asarray(optimizer.iterations)) == 3 == int(np.asarray(inner.iterations))
    # Loss scaling is the inner optimizer's.
    scaled = DecoupledWeightDecay(keras.optimizers.SGD(0.1, loss_scale_factor=8.0), 0.1)
    assert float(scaled.scale_loss(2.0)) == 16.0


def _sgd():
    return keras.optimizers.SGD(0.1)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: DecoupledWeightDecay(keras.layers.Dense(2), 1e-4), TypeError,
         r"`optimizer`.*Received: optimizer=<Dense"),
        (lambda: DecoupledWeightDecay(None, 1e-4), TypeError, r"Received: optimizer=None"),
        (lambda: DecoupledWeightDecay("adam", 1e-4), TypeError, r"Received: optimizer='adam'"),
        (lambda: DecoupledWeightDecay(keras.optimizers.Adam, 1e-4), TypeError, r"`optimizer`"),
        (lambda: DecoupledWeightDecay(keras.optimizers.AdamW(1e-3), 1e-4), ValueError,
         r"already applies weight decay.*weight_decay=0.004"),
        (lambda: DecoupledWeightDecay(
            keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1, weight_decay=0.01)), 1e-4),
         ValueError, r"weight_decay=0.01"),
        (lambda: DecoupledWeightDecay(DecoupledWeightDecay(_sgd(), 1e-3), 1e-4), ValueError,
         r"weight_decay=0.001"),
        (lambda: DecoupledWeightDecay(_sgd(), -1e-4), ValueError, r"Received: weight_decay=-0.0001"),
        (lambda: DecoupledWeightDecay(_sgd(), float("nan")), ValueError, r"weight_decay=nan"),
        (lambda: DecoupledWeightDecay(_sgd(), float("inf")), ValueError, r"weight_decay=inf"),
        (lambda: DecoupledWeightDecay(_sgd(), True), TypeError, r"weight_decay=True"),
        (lambda: DecoupledWeightDecay(_sgd(), "0.1"), TypeError, r"weight_decay='0.1'"),
        (lambda: DecoupledWeightDecay(_sgd(), None), TypeError, r"weight_decay=None"),
        (lambda: DecoupledWeightDecay(_sgd(), lambda: 0.1), TypeError, r"`weight_decay`"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, decay_scaling="cosine"), ValueError,
         r"`decay_scaling`.*Received: decay_scaling='cosine'"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, toward="ones"), ValueError,
         r"Received: toward='ones'"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, l1=-0.1), ValueError, r"Received: l1=-0.1"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, l1=True), TypeError, r"Received: l1=True"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, group_l1=float("inf")), ValueError,
         r"Received: group_l1=inf"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, exclude=5), TypeError, r"Received: exclude=5"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, exclude=["*/bias", ""]), TypeError,
         r"`exclude`"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, include=[]), ValueError,
         r"Received: include=\[\]"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, learning_rate=0.1), ValueError,
         r"not recognized.*learning_rate=0.1"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, gradient_accumulation_steps=1), ValueError,
         r"Received: gradient_accumulation_steps=1"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, gradient_accumulation_steps=2.0), TypeError,
         r"Received: gradient_accumulation_steps=2.0"),
        (lambda: DecoupledWeightDecay(keras.optimizers.SGD(0.1, gradient_accumulation_steps=3),
                                      1e-4, gradient_accumulation_steps=2),
         ValueError, r"already 3.*Received: gradient_accumulation_steps=2"),
        (lambda: DecoupledWeightDecay(keras.optimizers.SGD(0.1, clipnorm=1.0), 1e-4,
                                      clipvalue=1.0),
         ValueError, r"Only one of.*clipnorm=1.0, clipvalue=1.0"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, use_ema="yes"), TypeError,
         r"Received: use_ema='yes'"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, ema_momentum=2.0), ValueError,
         r"Received: ema_momentum=2.0"),
    ],
)
def test_bad_input_is_refused(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.skipif(not _JAX, reason="only the JAX backend refuses it")
def test_jax_refuses_a_loss_scale_optimizer_inside():
    with pytest.raises(ValueError, match=r"LossScaleOptimizer\(DecoupledWeightDecay"):
        DecoupledWeightDecay(keras.optimizers.LossScaleOptimizer(_sgd()), 1e-4)


def test_keras_exclusion_method_is_refused_not_silently_ignored():
    with pytest.raises(ValueError, match=r"exclude=.*Received: var_list=None, var_names=\['bias'\]"):
        DecoupledWeightDecay(_sgd(), 1e-4).exclude_from_weight_decay(var_names=["bias"])


def test_refused_calls_leave_the_inner_optimizer_unchanged():
    inner = keras.optimizers.SGD(0.1)
    config = inner.get_config()
    bad_calls = [
        ({"weight_decay": -1.0}, r"Received: weight_decay=-1.0"),
        ({"weight_decay": 0.1, "toward": "x"}, r"Received: toward='x'"),
        ({"weight_decay": 0.1, "clipnorm": 1.0, "gradient_accumulation_steps": 1},
         r"Received: gradient_accumulation_steps=1"),
        ({"weight_decay": 0.1, "use_ema": True, "ema_momentum": 5.0},
         r"Received: ema_momentum=5.0"),
    ]
    for kwargs, message in bad_calls:
        with pytest.raises(ValueError, match=message):
            DecoupledWeightDecay(inner, **kwargs)
        assert inner.get_config() == config and not inner.built
    # Forwarding to an optimizer that is built already is refused, too.
    inner.build([keras.Variable(np.ones((2, 2)), name="kernel")])
    with pytest.raises(ValueError, match="not built yet"):
        DecoupledWeightDecay(inner, 0.1, gradient_accumulation_steps=2)
    assert inner.gradient_accumulation_steps is None


def test_schedule_mode_refuses_a_zero_learning_rate_at_step_0_and_builds_nothing():
    warmup = schedules.CosineDecay(0.0, decay_steps=10, warmup_target=0.1, warmup_steps=5)
    inner = keras.optimizers.Adam(warmup)
    optimizer = DecoupledWeightDecay(inner, 0.1, decay_scaling="schedule")
    kernel = keras.Variable(np.ones((2, 2)), name="kernel")
    before = [v.path for v in optimizer.variables]
    with pytest.raises(ValueError, match="learning rate at step 0"):
        optimizer.build([kernel])
    assert not optimizer.built and not inner.built
    assert [v.path for v in optimizer.variables] == before


def test_normalized_weight_decay():
    assert normalized_weight_decay(0.05, 128, 50000, 200) == pytest.approx(
        0.05 * math.sqrt(128 / (50000 * 200)), rel=1e-12)
    assert normalized_weight_decay(0.0, 1, 1, 1) == 0.0
    for args, message in [
        ((-0.05, 128, 50000, 10), r"Received: lambda_norm=-0.05"),
        ((0.05, 0, 50000, 10), r"Received: batch_size=0"),
        ((0.05, 128, 0, 10), r"Received: num_examples=0"),
        ((0.05, 128, 50000, 0), r"Received: epochs=0"),
    ]:
        with pytest.raises(ValueError, match=message):
            normalized_weight_decay(*args)
    with pytest.raises(TypeError, match=r"Received: batch_size=1.5"):
        normalized_weight_decay(0.05, 1.5, 50000, 10)
