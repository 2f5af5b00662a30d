"""Tests for the CIFAR-10 baseline's distribution strategies: the penalty counted once, TF_CONFIG checks."""

import keras
import numpy as np
import pytest

from keras_regkit.baselines import cifar10
from tests.baselines_cli.cifar10_problems import convs as _convs

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_datasets")


# ---------------------------------------------------------------- distribution


@pytest.mark.tensorflow_only
def test_mirrored_strategy_counts_the_penalty_once():
    strategy = cifar10.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2  # conftest's two logical CPUs
    rng = np.random.default_rng(0)
    x = rng.random((8, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, size=8)

    def build():
        model = cifar10.build_vgg_like(l2=0.05, dropout=False, blocks=1)
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss="sparse_categorical_crossentropy")
        return model

    single = build()
    with strategy.scope():
        mirrored = build()
    mirrored.set_weights(single.get_weights())
    probs = single.predict(x, verbose=0).astype(np.float64)
    cross_entropy = -np.mean(np.log(probs[np.arange(8), y]))
    penalty = 0.05 * sum(np.sum(layer.kernel.numpy().astype(np.float64) ** 2)
                         for layer in _convs(single))
    assert penalty > 0.1 * cross_entropy  # large enough to be seen twice

    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    losses = [model.fit(data, epochs=1, shuffle=False, verbose=0).history["loss"][0]
              for model in (single, mirrored)]
    np.testing.assert_allclose(losses, cross_entropy + penalty, rtol=1e-4)
    for a, b in zip(single.get_weights(), mirrored.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_multiworker_strategy_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        cifar10.make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}, '
                                    '"task": {"type": "worker", "index": 3}}')
    with pytest.raises(ValueError, match="Received: TF_CONFIG="):
        cifar10.make_strategy("multiworker")
    with pytest.raises(ValueError, match="Received: strategy='tpu'"):
        cifar10.make_strategy("tpu")
