"""The proximal L1 and group-L1 steps of `DecoupledWeightDecay` vs closed forms."""

import keras
import numpy as np
import pytest

from keras_regkit import DecoupledWeightDecay
from tests.optimizers.optimizer_problems import fit as _fit
from tests.optimizers.optimizer_problems import mlp as _mlp
from tests.optimizers.optimizer_problems import schedules


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
