"""Tests for keras_regkit.regularizers: penalty values, gradients and the L2/weight-decay identity."""

import keras
import numpy as np
import pytest

from keras_regkit import CorrectedElasticNet
from keras_regkit import ElasticNet
from keras_regkit import GroupLasso
from keras_regkit import L1
from keras_regkit import L2
from tests.regularizers.regularizer_problems import gradient as _gradient
from tests.regularizers.regularizer_problems import np_group_lasso
from tests.regularizers.regularizer_problems import random_array as _random

SHAPES = [(), (0,), (5,), (4, 3), (0, 3), (3, 3, 2, 4)]


# NumPy references, written independently of the package.
def np_l1(w, l1):
    return l1 * np.abs(w).sum()


def np_l2(w, l2):
    return l2 * (w.astype("float64") ** 2).sum()


# --- values -----------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_values_match_numpy(shape):
    w = _random(shape)
    rtol = 1e-6
    np.testing.assert_allclose(float(L1(0.3)(w)), np_l1(w, 0.3), rtol=rtol)
    np.testing.assert_allclose(float(L2(0.3)(w)), np_l2(w, 0.3), rtol=rtol)
    np.testing.assert_allclose(
        float(ElasticNet(0.2, 0.7)(w)), np_l1(w, 0.2) + np_l2(w, 0.7), rtol=rtol
    )
    np.testing.assert_allclose(
        float(CorrectedElasticNet(0.2, 0.7)(w)),
        np_l1(w, 0.2) + np_l2(w, 0.7),
        rtol=rtol,
    )
    np.testing.assert_allclose(
        float(GroupLasso(0.3)(w)), np_group_lasso(w, 0.3), rtol=rtol
    )


@pytest.mark.parametrize("shape", [(7,), (4, 3), (3, 3, 2, 4)])
def test_drop_in_for_keras_l1_l2(shape):
    w = _random(shape, seed=1)
    for ours, theirs in [
        (L1(0.37), keras.regularizers.L1(0.37)),
        (L2(0.37), keras.regularizers.L2(0.37)),
        (ElasticNet(0.1, 0.2), keras.regularizers.L1L2(0.1, 0.2)),
    ]:
        np.testing.assert_allclose(
            np.asarray(ours(w)), np.asarray(theirs(w)), rtol=1e-7, atol=0
        )


def test_zero_weights_and_zero_factor():
    w = _random((4, 3))
    zeros = np.zeros((4, 3), dtype="float32")
    for reg in [L1(0.5), L2(0.5), ElasticNet(0.5, 0.5), GroupLasso(0.5)]:
        assert float(reg(zeros)) == 0.0
    for reg in [L1(0), L2(0), ElasticNet(0, 0), GroupLasso(0)]:
        assert float(reg(w)) == 0.0


def test_penalty_reaches_model_losses():
    layer = keras.layers.Dense(3, kernel_regularizer=GroupLasso(0.2))
    model = keras.Sequential([keras.Input((4,)), layer])
    kernel = np.asarray(layer.kernel)
    (loss,) = model.losses
    np.testing.assert_allclose(float(loss), np_group_lasso(kernel, 0.2), rtol=1e-6)


def test_from_textbook():
    reg = L2.from_textbook(strength=3.0, num_examples=60)
    assert type(reg) is L2 and reg.l2 == 3.0 / 120
    w = _random((5, 2))
    # J = 1/m sum L + lam/(2m) ||W||_F^2: the penalty part.
    np.testing.assert_allclose(
        float(reg(w)), 3.0 / (2 * 60) * (w.astype("float64") ** 2).sum(), rtol=1e-6
    )


# --- gradients ----------------------------------------------------------------


@pytest.mark.tensorflow_only
def test_gradients_match_analytic():
    w = _random((4, 3))
    w[0, 0] = 0.0
    np.testing.assert_allclose(_gradient(L2(0.3), w), 2 * 0.3 * w, rtol=1e-6)
    np.testing.assert_allclose(_gradient(L1(0.3), w), 0.3 * np.sign(w), rtol=1e-6)
    np.testing.assert_allclose(
        _gradient(ElasticNet(0.2, 0.3), w),
        0.2 * np.sign(w) + 2 * 0.3 * w,
        rtol=1e-6,
    )
    # Group lasso: factor * w_j / ||w_j|| per column; 0 for an all-zero column.
    w[:, 1] = 0.0
    norms = np.sqrt((w.astype("float64") ** 2).sum(axis=0, keepdims=True))
    expected = np.where(norms > 0, 0.3 * w / np.where(norms > 0, norms, 1), 0.0)
    grad = _gradient(GroupLasso(0.3), w)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-7)
    assert np.all(grad[:, 1] == 0.0)


# --- L2 coefficient vs SGD weight decay ---------------------------------------


def _sgd_run(regularizer, weight_decay, steps=10):
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(3, use_bias=False, kernel_regularizer=regularizer),
        ]
    )
    model.layers[0].kernel.assign(_random((5, 3), seed=4))
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1, weight_decay=weight_decay),
        loss="mse",
    )
    rng = np.random.default_rng(5)
    for _ in range(steps):
        x = rng.normal(size=(16, 5)).astype("float32")
        y = rng.normal(size=(16, 3)).astype("float32")
        model.train_on_batch(x, y)
    return np.asarray(model.layers[0].kernel)


def test_l2_equals_sgd_weight_decay_of_twice_l2():
    l2 = 0.05
    penalized = _sgd_run(L2(l2), None)
    decayed = _sgd_run(None, 2 * l2)
    np.testing.assert_allclose(penalized, decayed, atol=1e-6, rtol=0)
    # The check can fail: without decay, or with weight_decay = l2, it differs.
    assert not np.allclose(penalized, _sgd_run(None, None), atol=1e-3)
    assert not np.allclose(penalized, _sgd_run(None, l2), atol=1e-3)


# --- bad input ------------------------------------------------------------------


def test_from_textbook_lam_is_deprecated():
    with pytest.warns(DeprecationWarning,
                      match=r"`L2.from_textbook\(lam=\.\.\.\)` is deprecated; use `strength=`"):
        reg = L2.from_textbook(lam=3.0, num_examples=60)
    assert reg.l2 == 3.0 / 120
    # Worded as every renamed keyword of the package (`keras_regkit._deprecation`).
    both = r"`lam` is the deprecated name of `strength`: pass `strength` only. " \
           r"Received: strength=1.0, lam=2.0"
    with pytest.raises(ValueError, match=both):
        L2.from_textbook(strength=1.0, num_examples=60, lam=2.0)
    with pytest.raises(ValueError, match=both):
        L2.from_textbook(1.0, 60, lam=2.0)  # `strength` given by position
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'strength'"):
        L2.from_textbook(num_examples=60)
