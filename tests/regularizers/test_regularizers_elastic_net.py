"""Tests for ElasticNet/CorrectedElasticNet: the scikit-learn mix and the Zou-Hastie correction."""

import keras
import numpy as np
import pytest

from keras_regkit import CorrectedElasticNet
from keras_regkit import ElasticNet
from keras_regkit import ElasticNetCorrection
from keras_regkit import L2
from keras_regkit import apply_elastic_net_correction
from tests.regularizers.regularizer_problems import random_array as _random


def test_from_mix_matches_scikit_learn_penalty_and_keeps_class():
    alpha, ratio = 0.3, 0.2
    w = _random((6, 2))
    sklearn_penalty = alpha * ratio * np.abs(w).sum() + 0.5 * alpha * (1 - ratio) * (
        w.astype("float64") ** 2
    ).sum()
    for cls in (ElasticNet, CorrectedElasticNet):
        reg = cls.from_mix(alpha, ratio)
        assert type(reg) is cls
        np.testing.assert_allclose(float(reg(w)), sklearn_penalty, rtol=1e-6)
    assert CorrectedElasticNet.from_mix(1.0).correction_applied is False
    reg = ElasticNet.from_mix(0.4)  # l1_ratio defaults to 0.5
    assert (reg.l1, reg.l2) == pytest.approx((0.2, 0.1))


# --- Zou-Hastie correction against scikit-learn ------------------------------


ALPHA, L1_RATIO = 0.2, 0.3
STEPS = 200


def _regression_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6))
    x = (x - x.mean(axis=0)) / x.std(axis=0)  # zero mean, unit variance
    coef = np.array([1.5, -2.0, 1.0, 0.5, -0.8, 1.2])
    y = x @ coef + 0.3 + 0.5 * rng.normal(size=200)
    return x, y


def _sklearn_coef(x, y):
    from sklearn.linear_model import ElasticNet as SkElasticNet

    model = SkElasticNet(alpha=ALPHA, l1_ratio=L1_RATIO, tol=1e-12, max_iter=100000)
    return model.fit(x, y).coef_


def _fit_keras(model, x, y, steps, callbacks=()):
    """`steps` full-batch gradient steps, in one epoch and one compiled call."""
    model.fit(
        np.tile(x, (steps, 1)).astype("float32"),
        np.tile(y[:, None], (steps, 1)).astype("float32"),
        batch_size=len(x),
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=list(callbacks),
    )


def _linear_model():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(
                1,
                kernel_initializer="zeros",
                kernel_regularizer=CorrectedElasticNet.from_mix(2 * ALPHA, L1_RATIO),
            ),
        ]
    )
    # Hessian of mse + penalty is 2 * (correlation + l2 * I); lr 0.4 contracts.
    model.compile(
        optimizer=keras.optimizers.SGD(0.4), loss="mse", steps_per_execution=STEPS
    )
    return model


def _relative_error(a, b):
    return np.linalg.norm(np.ravel(a) - np.ravel(b)) / np.linalg.norm(np.ravel(b))


def test_corrected_elastic_net_matches_scikit_learn(tmp_path):
    x, y = _regression_data()
    sk_coef = _sklearn_coef(x, y)
    assert np.all(np.abs(sk_coef) > 0.1)  # no zero: the comparison is meaningful
    factor = 1 + ALPHA * (1 - L1_RATIO)

    # Naive solution: train without the callback.
    model = _linear_model()
    _fit_keras(model, x, y, STEPS)
    layer = model.layers[0]
    naive = np.asarray(layer.kernel).ravel()
    assert _relative_error(naive, sk_coef) < 1e-3
    assert _relative_error(naive, factor * sk_coef) > 1e-2  # the two are apart

    # Function: rescales once, then is a no-op.
    assert apply_elastic_net_correction(model) == [layer.kernel.path]
    corrected = np.asarray(layer.kernel).ravel()
    assert _relative_error(corrected, factor * sk_coef) < 1e-3
    np.testing.assert_allclose(corrected, factor * naive, rtol=1e-6)
    assert layer.kernel_regularizer is layer.kernel.regularizer
    assert layer.get_config()["kernel_regularizer"]["config"]["correction_applied"]
    bias = np.asarray(layer.bias).copy()
    assert apply_elastic_net_correction(model) == []
    np.testing.assert_array_equal(np.asarray(layer.kernel).ravel(), corrected)
    np.testing.assert_array_equal(np.asarray(layer.bias), bias)  # bias untouched

    # Save/load keeps the flag: applying again still does nothing.
    path = tmp_path / "corrected.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.layers[0].kernel_regularizer.correction_applied is True
    assert apply_elastic_net_correction(loaded) == []
    np.testing.assert_array_equal(np.asarray(loaded.layers[0].kernel).ravel(), corrected)


def test_callback_corrects_at_end_of_each_fit():
    x, y = _regression_data()
    sk_coef = _sklearn_coef(x, y)
    factor = 1 + ALPHA * (1 - L1_RATIO)
    model = _linear_model()
    callback = ElasticNetCorrection()
    _fit_keras(model, x, y, STEPS, [callback])
    kernel = model.layers[0].kernel
    assert model.layers[0].kernel_regularizer.correction_applied is True
    assert _relative_error(np.asarray(kernel), factor * sk_coef) < 1e-3
    # A second fit starts from the naive weights (undo at train begin), so it
    # ends corrected again rather than at the naive solution.
    _fit_keras(model, x, y, 100, [callback])
    assert _relative_error(np.asarray(kernel), factor * sk_coef) < 1e-3


def test_callback_undoes_the_correction_before_each_fit():
    """At learning rate 0 training moves nothing, so only the rescaling shows.

    Each fit must start from the naive weights (1.0) and end corrected once:
    1.0 * (1 + l2) = 1.5, however many fits; never 1.5 * 1.5 = 2.25.
    """
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(
                3,
                use_bias=False,
                kernel_initializer="ones",
                kernel_regularizer=CorrectedElasticNet(l1=0.1, l2=0.5),
            ),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    kernel = model.layers[0].kernel
    at_begin = []
    record = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: at_begin.append(np.array(kernel))
    )
    x, y = np.ones((4, 2), "float32"), np.zeros((4, 3), "float32")
    for _ in range(3):  # the correction runs first: `record` sees its undo
        model.fit(x, y, epochs=1, verbose=0, callbacks=[ElasticNetCorrection(), record])
        np.testing.assert_allclose(np.array(kernel), np.full((2, 3), 1.5), rtol=1e-6)
        assert model.layers[0].kernel_regularizer.correction_applied is True
    for value in at_begin:
        np.testing.assert_allclose(value, np.ones((2, 3)), rtol=1e-6)


def test_apply_correction_nested_shared_and_frozen():
    shared = CorrectedElasticNet(0.01, 0.25)
    inner = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, kernel_regularizer=shared, name="a"),
            keras.layers.Dense(4, kernel_regularizer=shared, name="b"),
        ],
        name="inner",
    )
    frozen = keras.layers.Dense(
        2, kernel_regularizer=CorrectedElasticNet(0.0, 0.5), name="frozen"
    )
    plain = keras.layers.Dense(1, kernel_regularizer=L2(0.1), name="plain")
    inputs = keras.Input((3,))
    outputs = plain(frozen(inner(inputs)))
    model = keras.Model(inputs, outputs)
    frozen.trainable = False
    before = {v.path: np.asarray(v).copy() for v in model.weights}

    paths = apply_elastic_net_correction(model)

    assert paths == ["inner/a/kernel", "inner/b/kernel", "frozen/kernel"]
    scale = {"inner/a/kernel": 1.25, "inner/b/kernel": 1.25, "frozen/kernel": 1.5}
    for v in model.weights:
        np.testing.assert_allclose(
            np.asarray(v), before[v.path] * scale.get(v.path, 1.0), rtol=1e-6
        )
    assert shared.correction_applied and frozen.kernel_regularizer.correction_applied
    assert apply_elastic_net_correction(model) == []


def test_apply_correction_bad_input():
    with pytest.raises(TypeError, match="Received: model="):
        apply_elastic_net_correction(keras.layers.Dense(2))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.warns(UserWarning, match="no variable regularized"):
        assert apply_elastic_net_correction(model) == []


# --- bad input ------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, "yes", None, np.bool_(True)])
def test_invalid_correction_applied(value):
    with pytest.raises(TypeError, match=f"Received: correction_applied={value!r}"):
        CorrectedElasticNet(correction_applied=value)
