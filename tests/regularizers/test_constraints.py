"""Tests for keras_regkit.constraints.MaxNorm.

The `.keras` save/load round trip in a fresh process is shared with the
regularizers: see `test_keras_save_load_in_fresh_process` in
`test_regularizers_serialization.py`.
"""

import json

import keras
import numpy as np
import pytest

from keras_regkit import GroupLasso
from keras_regkit import MaxNorm
from tests import helpers


def np_project(w, max_value, axes):
    """Projection of each vector (over `axes`) onto the ball of radius `max_value`."""
    w = np.asarray(w, dtype="float64")
    norms = np.sqrt((w**2).sum(axis=tuple(axes), keepdims=True))
    return np.where(norms > max_value, w * max_value / np.where(norms > 0, norms, 1), w)


def _kernel(shape, seed=0, scale=1.0):
    """Random kernel whose units alternate outside (x3) and inside (x0.05) a ball of 1."""
    w = np.random.default_rng(seed).normal(size=shape) * scale
    w[..., 1::2] *= 0.05
    w[..., ::2] *= 3.0
    return w.astype("float32")


@pytest.mark.parametrize(
    "shape, fan_in_axes",
    [((6, 4), (0,)), ((3, 3, 2, 4), (0, 1, 2)), ((3, 2, 5), (0, 1))],
)
def test_auto_axis_is_exact_projection(shape, fan_in_axes):
    w = _kernel(shape)
    projected = np.asarray(MaxNorm(1.0)(w))
    np.testing.assert_allclose(projected, np_project(w, 1.0, fan_in_axes), rtol=1e-6)
    norms = np.sqrt((projected.astype("float64") ** 2).sum(axis=fan_in_axes))
    assert np.all(norms <= 1.0 + 1e-6)
    np.testing.assert_allclose(norms[::2], 1.0, rtol=1e-6)  # outside -> on the sphere
    # Units inside the ball are bit-identical.
    np.testing.assert_array_equal(projected[..., 1::2], w[..., 1::2])


def test_inside_ball_is_bit_identical_unlike_keras():
    w = _kernel((3, 3, 2, 4)) * 0.01  # every filter inside the unit ball
    ours = np.asarray(MaxNorm(1.0)(w))
    assert ours.dtype == w.dtype
    np.testing.assert_array_equal(ours, w)
    keras_version = np.asarray(keras.constraints.MaxNorm(1.0, axis=[0, 1, 2])(w))
    assert not np.array_equal(keras_version, w)  # n / (n + epsilon) shrinkage


def test_keras_default_axis_is_wrong_for_conv_kernels():
    w = _kernel((3, 3, 2, 4))
    ours = np.asarray(MaxNorm(1.0)(w))
    theirs = np.asarray(keras.constraints.MaxNorm(1.0, axis=0)(w))
    assert not np.allclose(ours, theirs, atol=1e-3)
    # axis=0 bounds each (col, in, out) slice, not each filter: filter norms
    # can reach sqrt(3 * 2) > 1.
    filter_norms = np.sqrt((theirs.astype("float64") ** 2).sum(axis=(0, 1, 2)))
    assert np.any(filter_norms > 1.5)
    # On a Dense kernel, "auto" and Keras's axis=0 agree (outside the ball).
    dense = _kernel((6, 4))
    np.testing.assert_allclose(
        np.asarray(MaxNorm(1.0)(dense))[..., ::2],
        np.asarray(keras.constraints.MaxNorm(1.0, axis=0)(dense))[..., ::2],
        rtol=1e-5,
    )


@pytest.mark.parametrize(
    "axis, axes",
    [(0, (0,)), (1, (1,)), (-1, (2,)), ([0, 1], (0, 1)), ((0, -1), (0, 2))],
)
def test_explicit_axes(axis, axes):
    w = _kernel((4, 3, 5))
    np.testing.assert_allclose(
        np.asarray(MaxNorm(2.0, axis=axis)(w)), np_project(w, 2.0, axes), rtol=1e-6
    )


def test_max_value_below_one_matches_numpy():
    # Column norms 0.3 (inside), 0.6 and 0.7 (outside, but their squares
    # 0.36 and 0.49 are below 0.5), 2.0 (outside).
    w = np.array([[0.3, 0.6, 0.0, 1.2], [0.0, 0.0, 0.7, 1.6]], dtype="float32")
    projected = np.asarray(MaxNorm(0.5)(w))
    np.testing.assert_allclose(projected, np_project(w, 0.5, (0,)), rtol=1e-6)
    norms = np.sqrt((projected.astype("float64") ** 2).sum(axis=0))
    np.testing.assert_allclose(norms, [0.3, 0.5, 0.5, 0.5], rtol=1e-6)
    # A depthwise kernel with each filter (axes 0, 1) as a unit.
    kernel = _kernel((3, 3, 4, 2), scale=0.2)
    np.testing.assert_allclose(
        np.asarray(MaxNorm(0.5, axis=[0, 1])(kernel)),
        np_project(kernel, 0.5, (0, 1)),
        rtol=1e-6,
    )


def test_explicit_axes_for_transposed_kernels():
    # Conv2DTranspose kernel (rows, cols, out, in): a unit is W[:, :, j, :].
    # (Depthwise filters: above with a random kernel; a kernel of ones with the
    # layer's own unit axes in test_units.py.)
    w = _kernel((3, 3, 4, 2)).transpose(0, 1, 3, 2).copy()  # (3, 3, 2, 4)
    projected = np.asarray(MaxNorm(1.0, axis=[0, 1, 3])(w))
    np.testing.assert_allclose(projected, np_project(w, 1.0, (0, 1, 3)), rtol=1e-6)
    fan_in = np.sqrt((projected.astype("float64") ** 2).sum(axis=(0, 1, 3)))
    assert np.all(fan_in <= 1.0 + 1e-6)


def test_edge_cases():
    # 1-D with "auto": each element its own group, i.e. |w| <= c.
    bias = np.array([-3.0, 0.5, 0.0, 2.0], dtype="float32")
    np.testing.assert_array_equal(np.asarray(MaxNorm(1.0)(bias)), [-1.0, 0.5, 0.0, 1.0])
    assert float(MaxNorm(1.0)(np.float32(-4.0))) == -1.0
    zeros = np.zeros((3, 2), dtype="float32")
    result = np.asarray(MaxNorm(1.0)(zeros))
    assert np.all(np.isfinite(result)) and np.array_equal(result, zeros)
    assert np.asarray(MaxNorm(1.0)(np.zeros((0, 3), "float32"))).shape == (0, 3)


def test_constrained_training_step_is_projection_of_plain_step():
    def step(constraint):
        keras.utils.set_random_seed(1)
        model = keras.Sequential(
            [keras.Input((5,)), keras.layers.Dense(3, kernel_constraint=constraint)]
        )
        model.compile(optimizer=keras.optimizers.SGD(5.0), loss="mse")
        rng = np.random.default_rng(2)
        model.train_on_batch(rng.normal(size=(8, 5)), 10 * rng.normal(size=(8, 3)))
        return np.asarray(model.layers[0].kernel)

    plain = step(None)
    assert np.any(np.sqrt((plain**2).sum(axis=0)) > 0.8)  # the step leaves the ball
    np.testing.assert_allclose(step(MaxNorm(0.8)), np_project(plain, 0.8, (0,)), rtol=1e-5)


def test_axis_out_of_range():
    w = np.ones((3, 2), dtype="float32")
    for axis in (2, -3, [0, 2]):
        message = rf"`axis` is out of range for a weight of rank 2. Received: axis={axis}"
        with pytest.raises(ValueError, match=message.replace("[", r"\[")):
            MaxNorm(1.0, axis=axis)(w)




@pytest.mark.parametrize(
    "value, error, message",
    [
        ("all", ValueError, "Received: axis='all'"),
        (True, TypeError, "Received: axis=True"),
        (1.5, TypeError, "Received: axis=1.5"),
        (None, TypeError, "Received: axis=None"),
        ([], TypeError, r"Received: axis=\[\]"),
        ([0, "1"], TypeError, r"Received: axis=\[0, '1'\]"),
        ([0, False], TypeError, r"Received: axis=\[0, False\]"),
        ((1, 1), ValueError, r"must not repeat an axis. Received: axis=\(1, 1\)"),
    ],
)
@pytest.mark.parametrize("cls", [MaxNorm, GroupLasso])
def test_invalid_axis(cls, value, error, message):
    # MaxNorm and GroupLasso share one validator (`_validation.axis`).
    with pytest.raises(error, match=message):
        cls(axis=value)


@pytest.mark.parametrize(
    "kwargs, config",
    [
        ({}, {"max_value": 3.0, "axis": "auto"}),
        ({"max_value": 2, "axis": 0}, {"max_value": 2.0, "axis": 0}),
        ({"max_value": 0.5, "axis": (0, 1, 2)}, {"max_value": 0.5, "axis": [0, 1, 2]}),
        ({"axis": np.int64(-1)}, {"max_value": 3.0, "axis": -1}),
    ],
)
def test_config_round_trip(kwargs, config):
    constraint = MaxNorm(**kwargs)
    assert constraint.get_config() == config
    assert json.loads(json.dumps(constraint.get_config())) == config
    restored = helpers.config_round_trip(constraint)
    w = _kernel((3, 3, 2, 4))
    np.testing.assert_array_equal(np.asarray(restored(w)), np.asarray(constraint(w)))
