"""The decay rule of `DecoupledWeightDecay` against independent references.

Keras's own `weight_decay` (SGD, AdamW, RMSprop, Lion), NumPy implementations
written here (the paper's Algorithm 2, Adam with an L2 penalty or decoupled
decay, every feature at once) and the textbook SGD/L2 identity.
"""

import math

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import DecoupledWeightDecay
from tests.optimizers.optimizer_problems import BIAS0 as _BIAS0
from tests.optimizers.optimizer_problems import KERNEL0 as _KERNEL0
from tests.optimizers.optimizer_problems import STEPS
from tests.optimizers.optimizer_problems import X as _X
from tests.optimizers.optimizer_problems import Y as _Y
from tests.optimizers.optimizer_problems import assert_same_trajectory as _assert_same_trajectory
from tests.optimizers.optimizer_problems import cosine as _cosine
from tests.optimizers.optimizer_problems import fit as _fit
from tests.optimizers.optimizer_problems import gradients as _gradients
from tests.optimizers.optimizer_problems import keras_decaying as _keras_decaying
from tests.optimizers.optimizer_problems import max_difference as _max_difference
from tests.optimizers.optimizer_problems import mlp as _mlp
from tests.optimizers.optimizer_problems import schedules
from tests.optimizers.optimizer_problems import trajectory as _trajectory


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
