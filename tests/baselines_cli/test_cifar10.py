"""Tests for keras_regkit.baselines.cifar10's VGG-like model: layout, parameters, penalties, constraints."""

import keras
import numpy as np
import pytest

from keras_regkit import constraints
from keras_regkit import regularizers
from keras_regkit.baselines import cifar10
from tests.baselines_cli.cifar10_problems import convs as _convs
from tests.baselines_cli.cifar10_problems import denses as _denses

pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_datasets")


def _layout(model):
    """(class name, key attributes) of each layer, for comparing with the recipe."""
    rows = []
    for layer in model.layers:
        name = type(layer).__name__
        if isinstance(layer, keras.layers.Conv2D):
            rows.append((name, layer.filters, tuple(layer.kernel_size), layer.padding,
                         layer.activation.__name__))
        elif isinstance(layer, keras.layers.Dense):
            rows.append((name, layer.units, layer.activation.__name__))
        elif isinstance(layer, keras.layers.Dropout):
            rows.append((name, layer.rate))
        elif isinstance(layer, keras.layers.MaxPooling2D):
            rows.append((name, tuple(layer.pool_size)))
        else:
            rows.append((name,))
    return rows


def _block(filters, batch_norm=False, dropout=True):
    conv = ("Conv2D", filters, (3, 3), "same", "relu")
    rows = [conv, ("BatchNormalization",)] * 2 if batch_norm else [conv, conv]
    rows.append(("MaxPooling2D", (2, 2)))
    if dropout:
        rows.append(("Dropout", 0.25))
    return rows


def _head(dropout=True):
    rows = [("Flatten",), ("Dense", 256, "relu")]
    if dropout:
        rows.append(("Dropout", 0.5))
    return rows + [("Dense", 10, "softmax")]


def _expected_params(filters, fc=256, classes=10, batch_norm=False):
    """Parameter count from the layer formulas (3x3 convs, 2x2 pools, 32x32x3 input)."""
    total, channels, side = 0, 3, 32
    for f in filters:
        for _ in range(2):
            total += 3 * 3 * channels * f + f
            if batch_norm:
                total += 4 * f
            channels = f
        side //= 2
    total += side * side * channels * fc + fc
    return total + fc * classes + classes


# ---------------------------------------------------------------- the model


def test_two_block_layout_is_the_classic_recipe():
    model = cifar10.build_vgg_like()
    expected = [("InputLayer",)] + _block(32) + _block(64) + _head()
    assert _layout(model) == expected
    assert model.output_shape == (None, 10)
    assert model.count_params() == _expected_params([32, 64])
    for conv in _convs(model):
        assert type(conv.kernel_regularizer) is regularizers.L2
        assert conv.kernel_regularizer.l2 == pytest.approx(1e-4)
        assert conv.kernel_constraint is None
    for dense in _denses(model):
        assert dense.kernel_regularizer is None and dense.kernel_constraint is None


def test_three_blocks_batch_norm_max_norm():
    model = cifar10.build_vgg_like(
        l2=5e-4, blocks=3, batch_norm=True, max_norm=2.5
    )
    expected = (
        [("InputLayer",)]
        + _block(32, batch_norm=True)
        + _block(64, batch_norm=True)
        + _block(128, batch_norm=True)
        + _head()
    )
    assert _layout(model) == expected
    assert model.get_layer("flatten").output.shape[-1] == 4 * 4 * 128
    assert model.count_params() == _expected_params([32, 64, 128], batch_norm=True)
    kernels = _convs(model) + _denses(model)
    assert len(kernels) == 8
    for layer in kernels:
        assert type(layer.kernel_constraint) is constraints.MaxNorm
        assert layer.kernel_constraint.max_value == pytest.approx(2.5)
    for conv in _convs(model):
        assert conv.kernel_regularizer.l2 == pytest.approx(5e-4)


@pytest.mark.parametrize(
    "l2, l1, expected",
    [
        (0.0, 0.0, None),
        (None, 0.0, None),
        (0.0, 1e-5, ("L1", {"l1": 1e-5})),
        (1e-4, 1e-5, ("ElasticNet", {"l1": 1e-5, "l2": 1e-4})),
    ],
)
def test_penalty_choice(l2, l1, expected):
    model = cifar10.build_vgg_like(l2=l2, l1=l1, dropout=False)
    assert [type(layer).__name__ for layer in model.layers].count("Dropout") == 0
    for conv in _convs(model):
        if expected is None:
            assert conv.kernel_regularizer is None
        else:
            assert type(conv.kernel_regularizer).__name__ == expected[0]
            assert conv.kernel_regularizer.get_config() == pytest.approx(expected[1])
    if expected is None:
        assert model.losses == []


def test_penalty_in_loss_matches_numpy():
    model = cifar10.build_vgg_like(l2=3e-3, dropout=False, regularize_dense=True)
    kernels = [layer.kernel.numpy() for layer in _convs(model)]
    kernels.append(model.get_layer("fc").kernel.numpy())
    expected = 3e-3 * sum(float(np.sum(k.astype(np.float64) ** 2)) for k in kernels)
    assert len(model.losses) == 5
    assert float(keras.ops.sum(model.losses)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"blocks": 0}, "Received: blocks=0"),
        ({"blocks": 6}, "Received: blocks=6"),
        ({"l2": -1.0}, "Received: l2=-1"),
        ({"max_norm": 0.0}, "Received: max_norm=0"),
        ({"l1": -0.5}, "Received: l1=-0.5"),
    ],
)
def test_invalid_model_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cifar10.build_vgg_like(**kwargs)


def test_the_deprecated_weight_decay_keyword_is_validated_as_l2():
    with pytest.warns(DeprecationWarning, match="use `l2=`"):
        with pytest.raises(ValueError, match=r"`l2` must be >= 0. Received: l2=-1.0"):
            cifar10.build_vgg_like(weight_decay=-1.0)
