"""`SharpnessAwareMinimization` around a network that `fit` has to build first."""

import keras
import numpy as np
import pytest

import keras_regkit
from tests.optimizers.test_sam import LR
from tests.optimizers.test_sam import _NumpySGD
from tests.optimizers.test_sam import _assert_weights
from tests.optimizers.test_sam import _data
from tests.optimizers.test_sam import _initial_params
from tests.optimizers.test_sam import _mlp
from tests.optimizers.test_sam import _sam_gradient

SAM = keras_regkit.SharpnessAwareMinimization


def _fixed(value):
    """An initializer giving `value` (so an unbuilt network starts at known weights)."""
    return lambda shape, dtype=None: keras.ops.cast(np.reshape(value, shape), dtype or "float32")


def _layers(l2):
    w1, b1, w2, b2 = _initial_params()
    penalty = keras_regkit.L2(l2) if l2 else None
    return [
        keras.layers.Dense(4, activation="tanh", kernel_regularizer=penalty,
                           kernel_initializer=_fixed(w1), bias_initializer=_fixed(b1),
                           name="hidden"),
        keras.layers.Dense(2, kernel_regularizer=penalty,
                           kernel_initializer=_fixed(w2), bias_initializer=_fixed(b2),
                           name="out"),
    ]


class TwoDense(keras.Model):
    def __init__(self, l2, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.out = _layers(l2)

    def call(self, inputs):
        return self.out(self.hidden(inputs))


def _unbuilt(kind, l2):
    if kind == "sequential":
        return keras.Sequential(_layers(l2))  # no keras.Input
    return TwoDense(l2)


@pytest.mark.parametrize("entry", ["fit", "train_on_batch"])
@pytest.mark.parametrize("kind", ["sequential", "subclassed"])
def test_an_unbuilt_network_with_a_penalty_trains_as_a_built_one(kind, entry):
    x, y = _data()
    l2 = 0.05
    unbuilt, built = _unbuilt(kind, l2), _mlp(l2=l2)
    assert not unbuilt.built
    models = [SAM(net, rho=0.3) for net in (unbuilt, built)]
    for model in models:
        model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
        for _ in range(2):
            if entry == "fit":
                model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
            else:
                model.train_on_batch(x, y)
    assert unbuilt.built and len(unbuilt.trainable_variables) == 4
    for got, expected in zip(unbuilt.get_weights(), built.get_weights()):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    params = _initial_params()
    for _ in range(2):
        params = _NumpySGD(LR).step(params, _sam_gradient(params, x, y, rho=0.3, l2=l2))
    _assert_weights(unbuilt, params)


def test_an_unbuilt_network_without_a_penalty_is_trained_too():
    x, y = _data()
    net = _unbuilt("sequential", 0.0)
    model = SAM(net, rho=0.3)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    model.train_on_batch(x, y)
    _assert_weights(net, _NumpySGD(LR).step(
        _initial_params(), _sam_gradient(_initial_params(), x, y, rho=0.3)))


def test_unbuilt_batch_norm_state_advances_as_a_built_one():
    # the non-trainable state must be snapshotted after it exists
    x, y = _data()

    def net(with_input):
        keras.utils.set_random_seed(3)
        return keras.Sequential(([keras.Input((3,))] if with_input else []) + [
            keras.layers.Dense(4, name="hidden", kernel_regularizer=keras_regkit.L2(0.1)),
            keras.layers.BatchNormalization(momentum=0.5, name="bn"),
            keras.layers.Dropout(0.5, seed=7, name="drop"),
            keras.layers.Dense(2, name="out"),
        ])

    nets = [net(False), net(True)]
    nets[0].build((None, 3))
    nets[0].set_weights(nets[1].get_weights())
    fresh = net(False)  # same seed: unbuilt, and the same weights once built
    for model in (SAM(fresh, rho=0.5, num_batch_splits=2), SAM(nets[1], rho=0.5,
                                                                num_batch_splits=2)):
        model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
        model.train_on_batch(x, y)
    for got, expected in zip(fresh.get_weights(), nets[1].get_weights()):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


class _NeedsKnownBatch(keras.Model):
    """Cannot be built from shapes alone: its `call` needs the batch size."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(2, kernel_regularizer=keras_regkit.L2(0.1))

    def call(self, inputs):
        if inputs.shape[0] is None:
            raise TypeError("this network needs a known batch size")
        return self.dense(inputs)


@pytest.mark.skipif(keras.backend.backend() == "jax",
                    reason="JAX's fit builds the network on the first real batch itself")
def test_a_network_that_cannot_be_built_raises_before_any_update():
    x, y = _data()
    net = _NeedsKnownBatch(name="needs_batch")
    model = SAM(net)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    with pytest.raises(ValueError, match=r"(?s)could not be built.*model\(x\[:1\]\).*"
                                         r"Received: model=<_NeedsKnownBatch name=needs_batch"):
        model.train_on_batch(x, y)
    assert int(model.optimizer.iterations) == 0
    assert not model.built and not net.built and not net.weights
    net(x[:1])  # what the message says to do
    model.train_on_batch(x, y)
    assert int(model.optimizer.iterations) == 1
