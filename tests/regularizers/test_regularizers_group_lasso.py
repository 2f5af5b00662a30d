"""Tests for GroupLasso: groups by hand, gradients at zero, and the `axis` argument."""

import math

import keras
import numpy as np
import pytest

from keras_regkit import GroupLasso
from tests import helpers
from tests.regularizers.regularizer_problems import gradient as _gradient
from tests.regularizers.regularizer_problems import np_group_lasso
from tests.regularizers.regularizer_problems import random_array as _random


def test_group_lasso_by_hand():
    w = np.array([[3.0, 0.0, 1.0], [4.0, 0.0, 0.0]], dtype="float32")
    assert float(GroupLasso(0.5)(w)) == pytest.approx(0.5 * (5.0 + 0.0 + 1.0))
    # Conv kernel: a filter is everything but the last axis.
    kernel = np.zeros((2, 2, 1, 2), dtype="float32")
    kernel[..., 0] = 1.0  # norm sqrt(4) = 2
    kernel[0, 0, 0, 1] = -3.0  # norm 3
    assert float(GroupLasso(1.0)(kernel)) == pytest.approx(5.0)
    assert float(GroupLasso(2.0)(np.float32(-1.5))) == pytest.approx(3.0)


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


# --- the `axis` argument -------------------------------------------------------


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
