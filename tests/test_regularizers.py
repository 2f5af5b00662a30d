"""Tests for keras_regkit.regularizers (and the shared .keras round trip with MaxNorm)."""

import json
import math

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import CorrectedElasticNet
from keras_regkit import ElasticNet
from keras_regkit import ElasticNetCorrection
from keras_regkit import GroupLasso
from keras_regkit import L1
from keras_regkit import L2
from keras_regkit import MaxNorm
from keras_regkit import apply_elastic_net_correction
from tests import helpers

SHAPES = [(), (0,), (5,), (4, 3), (0, 3), (3, 3, 2, 4)]


def _random(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


# NumPy references, written independently of the package.
def np_l1(w, l1):
    return l1 * np.abs(w).sum()


def np_l2(w, l2):
    return l2 * (w.astype("float64") ** 2).sum()


def np_group_lasso(w, factor):
    w = np.asarray(w, dtype="float64")
    if w.ndim < 2:
        return factor * np.abs(w).sum()
    groups = w.reshape(-1, w.shape[-1])  # one column per output unit
    return factor * np.sqrt((groups**2).sum(axis=0)).sum()


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


def test_group_lasso_by_hand():
    w = np.array([[3.0, 0.0, 1.0], [4.0, 0.0, 0.0]], dtype="float32")
    assert float(GroupLasso(0.5)(w)) == pytest.approx(0.5 * (5.0 + 0.0 + 1.0))
    # Conv kernel: a filter is everything but the last axis.
    kernel = np.zeros((2, 2, 1, 2), dtype="float32")
    kernel[..., 0] = 1.0  # norm sqrt(4) = 2
    kernel[0, 0, 0, 1] = -3.0  # norm 3
    assert float(GroupLasso(1.0)(kernel)) == pytest.approx(5.0)
    assert float(GroupLasso(2.0)(np.float32(-1.5))) == pytest.approx(3.0)


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


# --- gradients ----------------------------------------------------------------


def _gradient(reg, w):
    import tensorflow as tf

    w = tf.Variable(w)
    with tf.GradientTape() as tape:
        value = reg(w)
    return tape.gradient(value, w).numpy()


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


@pytest.mark.tensorflow_only
def test_group_lasso_gradient_edge_cases():
    zeros = np.zeros((3, 3, 2, 4), dtype="float32")
    assert np.array_equal(_gradient(GroupLasso(1.0), zeros), zeros)
    bias = np.array([0.0, -2.0, 0.5], dtype="float32")  # 1-D: |w| per element
    np.testing.assert_allclose(_gradient(GroupLasso(0.5), bias), 0.5 * np.sign(bias))
    assert _gradient(GroupLasso(1.0), np.zeros((0, 3), "float32")).shape == (0, 3)


def test_group_lasso_training_step_from_zero_weights_is_finite():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(
                3,
                kernel_initializer="zeros",
                kernel_regularizer=GroupLasso(0.1),
                bias_regularizer=GroupLasso(0.1),
            ),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    loss = model.train_on_batch(_random((8, 4)), _random((8, 3), seed=2))
    assert math.isfinite(loss)
    kernel = np.asarray(model.layers[0].kernel)
    assert np.all(np.isfinite(kernel)) and np.any(kernel != 0)


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


def np_group_lasso_over(w, factor, axes):
    """factor * sum of the norms of the slices over `axes`, one slice at a time."""
    w = np.asarray(w, dtype="float64")
    others = [a for a in range(w.ndim) if a not in axes]
    total = 0.0
    for index in np.ndindex(*[w.shape[a] for a in others]):
        where = [slice(None)] * w.ndim
        for a, i in zip(others, index):
            where[a] = i
        total += np.sqrt(np.sum(w[tuple(where)] ** 2))
    return factor * total


@pytest.mark.parametrize(
    "shape, axis, axes",
    [
        ((3, 3, 5, 4), [0, 1, 3], (0, 1, 3)),  # Conv2DTranspose: per output channel
        ((3, 3, 4, 2), [0, 1], (0, 1)),  # DepthwiseConv2D: per (channel, multiplier)
        ((6, 2, 3), 0, (0,)),  # EinsumDense "abc,cde->abde"
        ((2, 3, 6), (-3, -2), (0, 1)),  # EinsumDense "abcd,cde->abe"
        ((4, 3), "auto", (0,)),
    ],
)
def test_group_lasso_axis_matches_numpy(shape, axis, axes):
    w = _random(shape, seed=4)
    w[..., 0] = 0.0
    np.testing.assert_allclose(
        float(GroupLasso(0.3, axis=axis)(w)), np_group_lasso_over(w, 0.3, axes), rtol=1e-6
    )


def test_group_lasso_axis_by_hand():
    # Conv2DTranspose kernel (1, 1, out=2, in=2): groups are rows W[0, 0, j, :].
    w = np.array([[[[3.0, 4.0], [0.0, 1.0]]]], dtype="float32")
    assert float(GroupLasso(0.5, axis=[0, 1, 3])(w)) == pytest.approx(0.5 * (5 + 1))
    assert float(GroupLasso(0.5)(w)) == pytest.approx(0.5 * (3 + np.sqrt(17)))


@pytest.mark.tensorflow_only
def test_group_lasso_axis_gradient():
    w = _random((3, 3, 4, 2), seed=5)
    w[:, :, 1, 0] = 0.0  # one all-zero group
    norms = np.sqrt((w.astype("float64") ** 2).sum(axis=(0, 1), keepdims=True))
    expected = np.where(norms > 0, 0.3 * w / np.where(norms > 0, norms, 1), 0.0)
    grad = _gradient(GroupLasso(0.3, axis=[0, 1]), w)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)
    assert np.all(grad[:, :, 1, 0] == 0.0)


def test_group_lasso_axis_out_of_range():
    with pytest.raises(ValueError, match=r"rank 2. Received: axis=\[0, 2\]"):
        GroupLasso(0.1, axis=[0, 2])(np.ones((3, 2), "float32"))


def test_group_lasso_config_with_axis_and_old_config():
    assert GroupLasso(0.75).get_config() == {"factor": 0.75, "axis": "auto"}
    reg = GroupLasso(0.5, axis=(0, 1, np.int64(3)))
    assert reg.get_config() == {"factor": 0.5, "axis": [0, 1, 3]}
    restored = helpers.config_round_trip(reg)
    w = _random((3, 3, 5, 4))
    assert float(restored(w)) == float(reg(w))
    # A config saved before `axis` existed loads with axis="auto".
    old = keras.saving.deserialize_keras_object(
        {"module": None, "class_name": "GroupLasso",
         "registered_name": "keras_regkit>GroupLasso", "config": {"factor": 0.75}}
    )
    assert isinstance(old, GroupLasso) and old.axis == "auto"
    assert float(old(w)) == pytest.approx(np_group_lasso(w, 0.75), rel=1e-6)




@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"alpha": 0.1, "l1_ratio": 1.5}, ValueError, r"\[0, 1\]. Received: l1_ratio=1.5"),
        ({"alpha": 0.1, "l1_ratio": -0.1}, ValueError, "Received: l1_ratio=-0.1"),
        ({"alpha": 0.1, "l1_ratio": math.nan}, ValueError, "Received: l1_ratio=nan"),
        ({"alpha": 0.1, "l1_ratio": False}, TypeError, "Received: l1_ratio=False"),
        ({"alpha": 0.1, "l1_ratio": None}, TypeError, "Received: l1_ratio=None"),
    ],
)
def test_invalid_l1_ratio(kwargs, error, message):
    with pytest.raises(error, match=message):
        CorrectedElasticNet.from_mix(**kwargs)


def test_from_textbook_lam_is_deprecated():
    with pytest.warns(DeprecationWarning, match="use `strength=`"):
        reg = L2.from_textbook(lam=3.0, num_examples=60)
    assert reg.l2 == 3.0 / 120
    with pytest.raises(ValueError, match="Received: strength=1.0, lam=2.0"):
        L2.from_textbook(strength=1.0, num_examples=60, lam=2.0)
    with pytest.raises(TypeError, match="Received: strength=None"):
        L2.from_textbook(num_examples=60)


@pytest.mark.parametrize(
    "value, error, message",
    [
        (0, ValueError, "Received: num_examples=0"),
        (-5, ValueError, "Received: num_examples=-5"),
        (2.5, TypeError, "Received: num_examples=2.5"),
        (True, TypeError, "Received: num_examples=True"),
        (None, TypeError, "Received: num_examples=None"),
    ],
)
def test_invalid_num_examples(value, error, message):
    with pytest.raises(error, match=message):
        L2.from_textbook(1.0, value)


@pytest.mark.parametrize("value", [1, "yes", None, np.bool_(True)])
def test_invalid_correction_applied(value):
    with pytest.raises(TypeError, match=f"Received: correction_applied={value!r}"):
        CorrectedElasticNet(correction_applied=value)


# --- serialization ------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        L1(0.25),
        L2(0.125),
        ElasticNet(0.5, 0.25),
        CorrectedElasticNet(0.5, 0.25),
        CorrectedElasticNet(0.5, 0.25, correction_applied=True),
        GroupLasso(0.75),
        GroupLasso(0.75, axis=[0, 1]),
        ElasticNetCorrection(),
    ],
)
def test_config_round_trip(obj):
    restored = helpers.config_round_trip(obj)
    json.dumps(obj.get_config())  # plain JSON values
    if isinstance(obj, keras.regularizers.Regularizer):
        w = _random((3, 2))
        assert float(restored(w)) == float(obj(w))


def test_keras_save_load_in_fresh_process(tmp_path):
    """One subprocess checks every regularizer and MaxNorm after a .keras round trip."""
    keras.utils.set_random_seed(7)
    regularizers = {
        "l1": L1(0.01),
        "l2": L2(0.02),
        "en": ElasticNet.from_mix(0.03, 0.25),
        "cen": CorrectedElasticNet(0.01, 0.2),
        "gl": GroupLasso(0.05, axis=[0, 1]),
    }
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(
        3, 3, name="conv", kernel_regularizer=regularizers["gl"],
        kernel_constraint=MaxNorm(0.5),
    )(inputs)
    h = keras.layers.Flatten()(h)
    for name in ("l1", "l2", "en", "cen"):
        h = keras.layers.Dense(
            4, name=name, kernel_regularizer=regularizers[name],
            kernel_constraint=MaxNorm(1.5, axis=[0]),
        )(h)
    model = keras.Model(inputs, h)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    apply_elastic_net_correction(model)
    x = _random((5, 6, 6, 2), seed=8)
    y = _random((5, 4), seed=9)
    path = tmp_path / "model.keras"
    model.save(path)

    expected_predictions = np.asarray(model(x))
    expected_losses = [float(loss) for loss in model.losses]
    expected_configs = {
        layer.name: [
            keras.saving.serialize_keras_object(layer.kernel_regularizer),
            keras.saving.serialize_keras_object(layer.kernel_constraint),
        ]
        for layer in model.layers
        if hasattr(layer, "kernel")
    }
    model.train_on_batch(x, y)
    expected_weights = [np.asarray(w) for w in model.weights]
    conv_kernel = np.asarray(model.get_layer("conv").kernel)  # projected by MaxNorm
    assert np.all(np.sqrt((conv_kernel**2).sum(axis=(0, 1, 2))) <= 0.5 + 1e-6)

    np.savez(tmp_path / "data.npz", x=x, y=y)
    out = helpers.run_python(
        f"""
        import json, numpy as np, keras
        import keras_regkit
        model = keras.saving.load_model({str(path)!r}, safe_mode=True)
        data = np.load({str(tmp_path / "data.npz")!r})
        result = {{
            "predictions": np.asarray(model(data["x"])).tolist(),
            "losses": [float(loss) for loss in model.losses],
            "configs": {{
                layer.name: [
                    keras.saving.serialize_keras_object(layer.kernel_regularizer),
                    keras.saving.serialize_keras_object(layer.kernel_constraint),
                ]
                for layer in model.layers if hasattr(layer, "kernel")
            }},
            "same_object": all(
                layer.kernel.regularizer is layer.kernel_regularizer
                for layer in model.layers if hasattr(layer, "kernel")
            ),
            "correction": keras_regkit.apply_elastic_net_correction(model),
        }}
        model.train_on_batch(data["x"], data["y"])
        result["weights"] = [np.asarray(w).tolist() for w in model.weights]
        print(json.dumps(result))
        """
    )
    result = json.loads(out.strip().splitlines()[-1])
    np.testing.assert_allclose(result["predictions"], expected_predictions, rtol=1e-6)
    np.testing.assert_allclose(result["losses"], expected_losses, rtol=1e-6)
    assert result["configs"] == json.loads(json.dumps(expected_configs))
    assert result["configs"]["cen"][0]["config"]["correction_applied"] is True
    assert result["configs"]["conv"][1]["registered_name"] == "keras_regkit>MaxNorm"
    assert result["same_object"] is True
    assert result["correction"] == []
    for got, want in zip(result["weights"], expected_weights):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)



@pytest.mark.parametrize(
    "class_name, config",
    [
        ("ElasticNet", {"l1": 0.1, "l2": 0.2}),
        ("CorrectedElasticNet", {"l1": 0.1, "l2": 0.2, "correction_applied": True}),
    ],
)
def test_configs_saved_before_the_elastic_net_module_split_still_load(class_name, config):
    # What `serialize_keras_object` wrote when the classes lived in
    # `keras_regkit.regularizers` (before `_elastic_net.py`).
    old = {"module": "keras_regkit.regularizers", "class_name": class_name,
           "config": config, "registered_name": f"keras_regkit>{class_name}"}
    restored = keras.saving.deserialize_keras_object(old)
    assert type(restored) is getattr(keras_regkit.regularizers, class_name)
    assert restored.get_config() == config
