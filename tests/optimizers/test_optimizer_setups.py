"""`DecoupledWeightDecay` in training set-ups: XLA, gradient accumulation, EMA,
mixed precision and loss scaling, `tf.distribute`.

Each run is compared with an equivalent one: Keras's own `AdamW`, a large batch
vs accumulated small ones, one device vs two replicas.
"""

import keras
import numpy as np
import pytest

from keras_regkit import DecoupledWeightDecay
from tests.optimizers.optimizer_problems import fit as _fit
from tests.optimizers.optimizer_problems import full_featured as _full_featured
from tests.optimizers.optimizer_problems import keras_decaying as _keras_decaying
from tests.optimizers.optimizer_problems import max_difference as _max_difference
from tests.optimizers.optimizer_problems import mlp as _mlp


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_matches_keras_adamw_with_and_without_jit(jit_compile):
    expected, _ = _fit(_keras_decaying(keras.optimizers.AdamW(0.01, weight_decay=0.1)),
                       jit_compile=jit_compile)
    got, model = _fit(DecoupledWeightDecay(keras.optimizers.Adam(0.01), 0.1),
                      jit_compile=jit_compile)
    assert _max_difference(got, expected) < 1e-6
    assert int(np.asarray(model.optimizer.iterations)) == 12


def test_fit_with_jit_equals_fit_without_for_every_feature():
    eager, _ = _fit(_full_featured(), jit_compile=False)
    jitted, _ = _fit(_full_featured(), jit_compile=True)
    assert _max_difference(eager, jitted) < 1e-6
    assert any(np.any(w == 0.0) for w in eager)  # the proximal steps did something


def test_gradient_accumulation_matches_keras_adamw():
    expected, _ = _fit(_keras_decaying(
        keras.optimizers.AdamW(0.01, weight_decay=0.1, gradient_accumulation_steps=2)))
    on_wrapper, model = _fit(
        DecoupledWeightDecay(keras.optimizers.Adam(0.01), 0.1, gradient_accumulation_steps=2))
    on_inner, _ = _fit(
        DecoupledWeightDecay(keras.optimizers.Adam(0.01, gradient_accumulation_steps=2), 0.1))
    assert _max_difference(on_wrapper, expected) < 1e-6
    assert _max_difference(on_inner, expected) < 1e-6
    assert model.optimizer.inner_optimizer.gradient_accumulation_steps == 2
    assert int(np.asarray(model.optimizer.iterations)) == 6  # 12 batches / 2


def test_gradient_accumulation_equals_the_large_batch_run_with_prox():
    """Two accumulated batches of 4 = one batch of 8 (plain SGD, MSE mean)."""
    def make(**kwargs):
        return DecoupledWeightDecay(keras.optimizers.SGD(0.2), 0.3, l1=0.05, group_l1=0.05,
                                    toward="initial", **kwargs)

    large, _ = _fit(make(), batch_size=8)
    accumulated, _ = _fit(make(gradient_accumulation_steps=2), batch_size=4)
    assert _max_difference(large, accumulated) < 1e-6


def test_forwarded_ema_matches_keras_adamw_with_ema():
    expected, _ = _fit(_keras_decaying(keras.optimizers.AdamW(0.01, weight_decay=0.1, use_ema=True,
                                                              ema_overwrite_frequency=3)))
    got, _ = _fit(DecoupledWeightDecay(keras.optimizers.Adam(0.01), 0.1, use_ema=True,
                                       ema_overwrite_frequency=3))
    assert _max_difference(got, expected) < 1e-6


def test_mixed_float16_compile_wraps_it_and_matches_keras_adamw():
    keras.mixed_precision.set_global_policy("mixed_float16")
    expected, _ = _fit(_keras_decaying(keras.optimizers.AdamW(0.01, weight_decay=0.1)))
    got, model = _fit(DecoupledWeightDecay(keras.optimizers.Adam(0.01), 0.1))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, DecoupledWeightDecay)
    assert _max_difference(got, expected) < 1e-6


_JAX = keras.backend.backend() == "jax"
_NO_EAGER_LSO = pytest.mark.skipif(
    _JAX, reason="Keras's LossScaleOptimizer.apply is not eager-callable on JAX")


@_NO_EAGER_LSO
def test_mixed_float16_with_a_loss_scale_optimizer_inside():
    """The model's loss scaling turned off; ours wraps the loss scale optimizer."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    expected, _ = _fit(_keras_decaying(keras.optimizers.AdamW(0.01, weight_decay=0.1)))
    inside, model = _fit(
        DecoupledWeightDecay(keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.01)), 0.1),
        auto_scale_loss=False,
    )
    assert isinstance(model.optimizer, DecoupledWeightDecay)
    assert _max_difference(inside, expected) < 1e-6


@_NO_EAGER_LSO
@pytest.mark.parametrize("where", ["outside", "inside"])
def test_a_skipped_non_finite_step_does_not_decay(where):
    kernel = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
    if where == "outside":
        optimizer = keras.optimizers.LossScaleOptimizer(
            DecoupledWeightDecay(keras.optimizers.SGD(0.1), 0.5, l1=0.1))
    else:
        optimizer = DecoupledWeightDecay(
            keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1)), 0.5, l1=0.1)
    optimizer.apply([np.full((2, 2), np.inf, "float32")], [kernel])
    np.testing.assert_array_equal(kernel.numpy(), np.ones((2, 2)))
    optimizer.apply([np.zeros((2, 2), "float32")], [kernel])  # a finite step decays
    np.testing.assert_allclose(kernel.numpy(), 1 - 0.1 * 0.5 - 0.1 * 0.1, rtol=1e-6)


@pytest.mark.tensorflow_only
def test_mirrored_strategy_gives_the_weights_of_one_device():
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
    one_device, _ = _fit(_full_featured())
    with strategy.scope():
        model = _mlp()
        optimizer = _full_featured()
    mirrored, model = _fit(optimizer, model=model)
    assert _max_difference(one_device, mirrored) < 1e-6
    for w in model.weights:  # both replicas hold the same values
        first, second = strategy.experimental_local_results(w.value)
        np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
