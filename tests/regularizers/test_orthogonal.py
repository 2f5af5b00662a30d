"""keras_regkit.Orthogonal against a NumPy reference written here (issue 23, item 4)."""

import math

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit._orthogonal import Orthogonal
from tests import helpers


def _reference(w, factor, mode="auto", off_diagonal=False):
    """penalty and its gradient, in float64, from the definition."""
    matrix = w.reshape(-1, w.shape[-1]).astype("float64")
    fan_in, units = matrix.shape
    columns = mode == "columns" or (mode == "auto" and units <= fan_in)
    gram = matrix.T @ matrix if columns else matrix @ matrix.T
    mask = 1 - np.eye(len(gram)) if off_diagonal else np.ones_like(gram)
    difference = (gram - (0 if off_diagonal else np.eye(len(gram)))) * mask
    penalty = factor * np.sum(difference ** 2)
    # d/dW sum(D^2), D = G - I (masked), G = W^T W: 4 W D; for G = W W^T: 4 D W.
    grad = 4 * factor * (matrix @ difference if columns else difference @ matrix)
    return penalty, grad.reshape(w.shape)


def _gradient(regularizer, w):
    """The backend's own gradient of `regularizer` at `w`."""
    if keras.backend.backend() == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: regularizer(v))(w))
    import tensorflow as tf

    variable = tf.Variable(w)
    with tf.GradientTape() as tape:
        value = regularizer(variable)
    return tape.gradient(value, variable).numpy()


SHAPES = [(5, 3), (3, 5), (3, 3, 2, 4), (2, 2, 2, 16), (4, 3, 2), (1, 1, 1, 1, 6)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["auto", "columns", "rows"])
@pytest.mark.parametrize("off_diagonal", [False, True])
def test_penalty_and_gradient_match_numpy(shape, mode, off_diagonal):
    w = np.random.default_rng(sum(shape)).normal(size=shape).astype("float32")
    regularizer = Orthogonal(0.05, mode=mode, off_diagonal=off_diagonal)
    penalty, grad = _reference(w, 0.05, mode, off_diagonal)
    np.testing.assert_allclose(float(regularizer(w)), penalty, rtol=1e-5)
    np.testing.assert_allclose(_gradient(regularizer, w), grad, rtol=1e-4, atol=1e-5)


def test_auto_takes_the_smaller_gram_matrix():
    # 2 inputs, 8 units: 8 columns cannot be orthonormal in 2 dimensions.
    w = np.random.default_rng(0).normal(size=(2, 8)).astype("float32")
    assert float(Orthogonal(1.0)(w)) == pytest.approx(_reference(w, 1.0, "rows")[0], rel=1e-5)
    q = np.linalg.qr(np.random.default_rng(1).normal(size=(8, 8)))[0][:, :2].T  # 2 x 8
    assert float(Orthogonal(1.0)(q.astype("float32"))) == pytest.approx(0.0, abs=1e-10)
    # "columns" on the same matrix cannot reach 0: rank 2 against an 8 x 8 identity.
    assert float(Orthogonal(1.0, mode="columns")(q.astype("float32"))) == pytest.approx(6.0, rel=1e-5)


def test_orthonormal_kernels_have_no_penalty_and_off_diagonal_ignores_norms():
    q = np.linalg.qr(np.random.default_rng(2).normal(size=(18, 18)))[0][:, :4]
    kernel = q.reshape(3, 3, 2, 4).astype("float32")
    assert float(Orthogonal(1.0)(kernel)) == pytest.approx(0.0, abs=1e-9)
    scaled = kernel * np.array([1.0, 2.0, 3.0, 4.0], "float32")
    assert float(Orthogonal(1.0, off_diagonal=True)(scaled)) == pytest.approx(0.0, abs=1e-8)
    assert float(Orthogonal(1.0)(scaled)) == pytest.approx(
        sum((s * s - 1) ** 2 for s in (1, 2, 3, 4)), rel=1e-5)


def test_zero_factor_and_zero_kernel():
    assert float(Orthogonal(0.0)(np.ones((3, 2), "float32"))) == 0.0
    # W = 0: penalty = units (the identity's diagonal), gradient 0, finite.
    zeros = np.zeros((3, 3, 2, 4), "float32")
    assert float(Orthogonal(1.0)(zeros)) == pytest.approx(4.0)
    assert np.all(np.isfinite(_gradient(Orthogonal(1.0), zeros)))


def test_a_conv_net_trains_with_it_and_the_loss_holds_the_penalty():
    regularizer = Orthogonal(1e-3)
    model = keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(4, 3, kernel_regularizer=regularizer, name="conv"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(1, kernel_regularizer=regularizer, name="out"),
    ])
    kernel = model.get_layer("conv").kernel
    expected = _reference(np.asarray(kernel), 1e-3)[0] + _reference(
        np.asarray(model.get_layer("out").kernel), 1e-3)[0]
    assert sum(float(loss) for loss in model.losses) == pytest.approx(expected, rel=1e-5)
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).normal(size=(8, 6, 6, 2)).astype("float32")
    history = model.fit(x, np.zeros((8, 1), "float32"), epochs=2, verbose=0)
    assert all(math.isfinite(v) for v in history.history["loss"])


def test_regularize_puts_it_on_a_built_model_and_it_saves(tmp_path):
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(
        2, 3, name="conv")], name="net")
    keras_regkit.regularize(model, {"conv": Orthogonal(0.1, mode="rows")})
    path = tmp_path / "orthogonal.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("conv").kernel_regularizer, Orthogonal)
    np.testing.assert_allclose(float(loaded.losses[0]), float(model.losses[0]), rtol=1e-6)
    restored = helpers.config_round_trip(Orthogonal(0.5, mode="columns", off_diagonal=True))
    assert restored.get_config() == {"factor": 0.5, "mode": "columns", "off_diagonal": True}


@pytest.mark.parametrize("kwargs, error, match", [
    ({"factor": -1}, ValueError, "Received: factor=-1"),
    ({"factor": float("nan")}, ValueError, "factor"),
    ({"mode": "diagonal"}, ValueError, "Received: mode='diagonal'"),
    ({"off_diagonal": 1}, TypeError, "Received: off_diagonal=1"),
])
def test_bad_arguments_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        Orthogonal(**kwargs)


def test_a_bias_is_refused_before_anything_changes():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    before = helpers.snapshot(model)
    with pytest.raises(ValueError, match=r"rank >= 2.*shape \(2,\)"):
        keras_regkit.regularize(model, {"dense": Orthogonal()}, target="bias")
    helpers.assert_unchanged(model, before)
