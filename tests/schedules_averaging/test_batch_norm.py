"""`recalibrate_batch_norm`: the statistics against a NumPy forward pass, data forms, refusals."""

import keras
import numpy as np
import pytest

from keras_regkit.batch_norm import recalibrate_batch_norm
from tests import helpers

EPSILON = 1e-3  # Keras's BatchNormalization default


@keras.saving.register_keras_serializable(package="keras_regkit_tests")
class DenseNorm(keras.layers.Layer):
    """A composite layer holding a `BatchNormalization`: `bn(dense(x))`."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense = keras.layers.Dense(units, name="dense")
        self.norm = keras.layers.BatchNormalization(momentum=0.9, name="norm")

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.norm.build((*input_shape[:-1], self.units))

    def call(self, x, training=None):
        return self.norm(self.dense(x), training=training)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _model():
    """Dense, BN, nested Sequential (Dense, frozen BN), composite (Dense, BN), Dropout."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="d1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, name="d2"),
                              keras.layers.BatchNormalization(name="bn2")], name="inner")
    inner.get_layer("bn2").trainable = False
    x = DenseNorm(2, name="block")(inner(x))
    outputs = keras.layers.Dropout(0.5, seed=1, name="drop")(x)
    return helpers.randomize(keras.Model(inputs, outputs, name="net"))


def _layers(model):
    inner, block = model.get_layer("inner"), model.get_layer("block")
    return {"d1": model.get_layer("d1"), "bn1": model.get_layer("bn1"),
            "d2": inner.get_layer("d2"), "bn2": inner.get_layer("bn2"),
            "d3": block.dense, "bn3": block.norm}


def _reference(model, batches):
    """Per BN layer: the batch-size-weighted means of its training-mode batch statistics.

    An independent NumPy forward pass, every BN normalizing by its batch's
    mean and biased variance.
    """
    w = {name: [np.asarray(v, "float64") for v in layer.weights]
         for name, layer in _layers(model).items()}
    sums = {name: [0.0, 0.0] for name in ("bn1", "bn2", "bn3")}
    total = 0
    for x in batches:
        h = np.asarray(x, "float64")
        for dense, bn in (("d1", "bn1"), ("d2", "bn2"), ("d3", "bn3")):
            kernel, bias = w[dense]
            h = h @ kernel + bias
            mean, variance = h.mean(axis=0), h.var(axis=0)
            sums[bn][0] = sums[bn][0] + len(h) * mean
            sums[bn][1] = sums[bn][1] + len(h) * variance
            gamma, beta = w[bn][:2]
            h = (h - mean) / np.sqrt(variance + EPSILON) * gamma + beta
        total += len(x)
    return {name: (s[0] / total, s[1] / total) for name, s in sums.items()}


def _data(n=10):
    return np.random.default_rng(3).normal(1.0, 2.0, (n, 4)).astype("float32")


def _assert_statistics(model, expected):
    for name, layer in _layers(model).items():
        if name in expected:
            np.testing.assert_allclose(layer.moving_mean, expected[name][0], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(layer.moving_variance, expected[name][1],
                                       rtol=1e-5, atol=1e-5)


def test_statistics_equal_numpy_for_frozen_and_nested_layers_and_settings_are_restored():
    model = _model()
    x = _data(10)  # batches of 4, 4 and 2: weighted by size
    layers = _layers(model)
    before = {v.path: np.array(v) for v in model.weights
              if "moving" not in v.path}
    state = {v.path: np.array(v) for v in model.non_trainable_variables
             if "moving" not in v.path}
    assert any("seed" in path for path in state)  # the dropout's seed state is among them
    flags = {v.path: v.trainable for v in model.weights}

    assert recalibrate_batch_norm(model, x, batch_size=4) == 3

    _assert_statistics(model, _reference(model, [x[:4], x[4:8], x[8:]]))
    # The first layer's input does not depend on the batching: its mean is the data's.
    d1_kernel, d1_bias = (np.asarray(v, "float64") for v in layers["d1"].weights)
    np.testing.assert_allclose(layers["bn1"].moving_mean,
                               (x.astype("float64") @ d1_kernel + d1_bias).mean(axis=0),
                               rtol=1e-5, atol=1e-5)
    # Everything else is as it was: momentum, trainable flags, weights, seed states.
    assert [layers[n].momentum for n in ("bn1", "bn2", "bn3")] == [0.99, 0.99, 0.9]
    assert [layers[n].trainable for n in ("bn1", "bn2", "bn3")] == [True, False, True]
    assert {v.path: v.trainable for v in model.weights} == flags
    assert len(model.trainable_variables) == 10  # bn2's gamma and beta stay frozen
    for v in model.weights:
        if v.path in before:
            np.testing.assert_array_equal(v, before[v.path])
    for v in model.non_trainable_variables:
        if v.path in state:
            np.testing.assert_array_equal(v, state[v.path])


def _python_dataset(x, batch_size):
    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return -(-len(x) // batch_size)

        def __getitem__(self, index):
            return x[index * batch_size:(index + 1) * batch_size], None

    return Batches()


@pytest.mark.parametrize("form", ["tuple", "list", "generator", "dataset", "pydataset"])
def test_every_data_form_gives_the_same_statistics(form):
    import tensorflow as tf

    x = _data(10)
    y = np.zeros((10, 2), "float32")
    batches = [x[:4], x[4:8], x[8:]]
    data = {
        "tuple": lambda: (x, y),
        "list": lambda: [(b, y[: len(b)]) for b in batches],
        "generator": lambda: (b for b in batches),
        "dataset": lambda: tf.data.Dataset.from_tensor_slices((x, y)).batch(4),
        "pydataset": lambda: _python_dataset(x, 4),
    }[form]()
    model = _model()
    assert recalibrate_batch_norm(model, data, batch_size=4) == 3
    _assert_statistics(model, _reference(model, batches))


def test_steps_limits_the_batches_also_of_an_infinite_dataset():
    import tensorflow as tf

    x = _data(12)
    model = _model()
    assert recalibrate_batch_norm(model, x, steps=2, batch_size=4) == 2
    _assert_statistics(model, _reference(model, [x[:4], x[4:8]]))
    forever = tf.data.Dataset.from_tensor_slices(x).batch(4).repeat()
    assert recalibrate_batch_norm(model, forever, steps=5) == 5
    _assert_statistics(model, _reference(model, [x[:4], x[4:8], x[8:], x[:4], x[4:8]]))


def test_a_layer_that_moved_is_reset_not_blended():
    # Statistics far from the data's, even NaN, are not part of the result.
    model = _model()
    bn1 = model.get_layer("bn1")
    bn1.moving_mean.assign(np.full(3, np.nan, "float32"))
    bn1.moving_variance.assign(np.full(3, 1e6, "float32"))
    x = _data(8)
    recalibrate_batch_norm(model, x, batch_size=8)
    _assert_statistics(model, _reference(model, [x]))


def _infinite():
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(_data(4)).batch(2).repeat()


@pytest.mark.parametrize("arguments, error, match", [
    ({"data": np.zeros((0, 4), "float32")}, ValueError, "yields no batch"),
    ({"data": []}, ValueError, "yields no batch"),
    ({"data": [np.zeros((0, 4), "float32")]}, ValueError, "only empty batches"),
    ({"data": 3}, TypeError, "Received: data=3"),
    ({"data": "abc"}, TypeError, "Received: data='abc'"),
    ({"data": [3.0]}, ValueError, "rank >= 1"),
    ({"steps": 0}, ValueError, "Received: steps=0"),
    ({"steps": 1.5}, TypeError, "Received: steps=1.5"),
    ({"batch_size": 0}, ValueError, "Received: batch_size=0"),
    ({"data": "infinite"}, ValueError, "infinite tf.data.Dataset"),
])
def test_bad_arguments_are_refused_and_nothing_changes(arguments, error, match):
    model = _model()
    before = helpers.snapshot(model)
    arguments = {"data": _data(4), **arguments}
    if isinstance(arguments["data"], str) and arguments["data"] == "infinite":
        arguments["data"] = _infinite()
    with pytest.raises(error, match=match):
        recalibrate_batch_norm(model, **arguments)
    helpers.assert_unchanged(model, before)


def test_a_batch_that_fails_midway_restores_everything():
    model = _model()
    before = helpers.snapshot(model)
    momenta = [layer.momentum for layer in keras.tree.flatten(_layers(model))
               if isinstance(layer, keras.layers.BatchNormalization)]
    with pytest.raises(Exception):  # a shape error from Keras, whatever its class
        recalibrate_batch_norm(model, [_data(4), np.zeros((4, 7), "float32")])
    helpers.assert_unchanged(model, before)
    assert [layer.momentum for layer in keras.tree.flatten(_layers(model))
            if isinstance(layer, keras.layers.BatchNormalization)] == momenta
    assert not model.get_layer("inner").get_layer("bn2").trainable


def test_models_it_cannot_recalibrate_are_refused():
    dense_only = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="plain")
    with pytest.raises(ValueError, match="'plain' has no keras.layers.BatchNormalization"):
        recalibrate_batch_norm(dense_only, _data(4))
    unbuilt = keras.Sequential([keras.layers.BatchNormalization(name="late")])
    with pytest.raises(ValueError, match="'late' is not built"):
        recalibrate_batch_norm(unbuilt, _data(4))
    renorm = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(renorm=True)])
    before = helpers.snapshot(renorm)
    with pytest.raises(ValueError, match="Received: renorm=True"):
        recalibrate_batch_norm(renorm, _data(4))
    helpers.assert_unchanged(renorm, before)
    with pytest.raises(TypeError, match="Received: model='net'"):
        recalibrate_batch_norm("net", _data(4))


def test_convolutional_statistics_are_per_channel():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((3, 3, 2)), keras.layers.BatchNormalization()])
    x = np.random.default_rng(0).normal(0, 1, (6, 3, 3, 2)).astype("float32")
    recalibrate_batch_norm(model, x, batch_size=3)
    halves = [x[:3], x[3:]]
    layer = model.layers[0]
    np.testing.assert_allclose(layer.moving_mean, np.mean([h.mean(axis=(0, 1, 2)) for h in halves],
                                                          axis=0), atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance,
                               np.mean([h.var(axis=(0, 1, 2)) for h in halves], axis=0),
                               rtol=1e-5)
