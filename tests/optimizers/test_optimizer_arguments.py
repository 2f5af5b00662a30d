"""`DecoupledWeightDecay`'s arguments: delegation to the wrapped optimizer, and
every invalid argument refused with a message that names it.
"""

import math
import re

import keras
import numpy as np
import pytest

from keras_regkit import DecoupledWeightDecay
from keras_regkit import _wrapping
from keras_regkit import normalized_weight_decay
from tests.optimizers.optimizer_problems import schedules
from tests.optimizers.optimizer_problems import trajectory as _trajectory

_JAX = keras.backend.backend() == "jax"


def test_learning_rate_and_iterations_are_the_inner_optimizers():
    inner = keras.optimizers.Adam(0.01)
    optimizer = DecoupledWeightDecay(inner, 0.1)
    assert float(np.asarray(optimizer.learning_rate)) == pytest.approx(0.01)
    _trajectory(optimizer, steps=3)
    assert int(np.asarray(optimizer.iterations)) == 3 == int(np.asarray(inner.iterations))
    # Loss scaling is the inner optimizer's.
    scaled = DecoupledWeightDecay(keras.optimizers.SGD(0.1, loss_scale_factor=8.0), 0.1)
    assert float(scaled.scale_loss(2.0)) == 16.0
    # The variables are both optimizers' (Adam's moments too), as in LossScaleOptimizer.
    paths = {v.path for v in optimizer.variables}
    assert {v.path for v in inner.variables} <= paths
    assert any("momentum" in path for path in paths)
    optimizer.learning_rate = 0.5
    assert float(np.asarray(inner.learning_rate)) == 0.5


def _sgd():
    return keras.optimizers.SGD(0.1)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: DecoupledWeightDecay(keras.layers.Dense(2), 1e-4), TypeError,
         r"`optimizer`.*Received: optimizer=<Dense"),
        (lambda: DecoupledWeightDecay(None, 1e-4), TypeError, r"Received: optimizer=None"),
        (lambda: DecoupledWeightDecay("adam", 1e-4), TypeError, r"Received: optimizer='adam'"),
        (lambda: DecoupledWeightDecay(keras.optimizers.Adam, 1e-4), TypeError, r"`optimizer`"),
        (lambda: DecoupledWeightDecay(keras.optimizers.AdamW(1e-3), 1e-4), ValueError,
         r"already applies weight decay.*weight_decay=0.004"),
        (lambda: DecoupledWeightDecay(
            keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1, weight_decay=0.01)), 1e-4),
         ValueError, r"weight_decay=0.01"),
        (lambda: DecoupledWeightDecay(DecoupledWeightDecay(_sgd(), 1e-3), 1e-4), ValueError,
         r"weight_decay=0.001"),
        (lambda: DecoupledWeightDecay(_sgd(), -1e-4), ValueError, r"Received: weight_decay=-0.0001"),
        (lambda: DecoupledWeightDecay(_sgd(), float("nan")), ValueError, r"weight_decay=nan"),
        (lambda: DecoupledWeightDecay(_sgd(), float("inf")), ValueError, r"weight_decay=inf"),
        (lambda: DecoupledWeightDecay(_sgd(), True), TypeError, r"weight_decay=True"),
        (lambda: DecoupledWeightDecay(_sgd(), "0.1"), TypeError, r"weight_decay='0.1'"),
        (lambda: DecoupledWeightDecay(_sgd(), None), TypeError, r"weight_decay=None"),
        (lambda: DecoupledWeightDecay(_sgd(), lambda: 0.1), TypeError, r"`weight_decay`"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, decay_scaling="cosine"), ValueError,
         r"`decay_scaling`.*Received: decay_scaling='cosine'"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, toward="ones"), ValueError,
         r"Received: toward='ones'"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, l1=-0.1), ValueError, r"Received: l1=-0.1"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, l1=True), TypeError, r"Received: l1=True"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, group_l1=float("inf")), ValueError,
         r"Received: group_l1=inf"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, exclude=5), TypeError, r"Received: exclude=5"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, exclude=["*/bias", ""]), TypeError,
         r"`exclude`"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, include=[]), ValueError,
         r"Received: include=\[\]"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, learning_rate=0.1), ValueError,
         r"not recognized.*learning_rate=0.1"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, gradient_accumulation_steps=1), ValueError,
         r"Received: gradient_accumulation_steps=1"),
        # Values Keras's constructor would take silently (it checks only how they combine).
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, gradient_accumulation_steps=2.0), TypeError,
         r"Received: gradient_accumulation_steps=2.0"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, gradient_accumulation_steps=0), ValueError,
         r"Received: gradient_accumulation_steps=0"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, use_ema="yes"), TypeError,
         r"`use_ema` must be True or False. Received: use_ema='yes'"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, ema_momentum=2.0), ValueError,
         r"Received: ema_momentum=2.0"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, clipnorm=-1), ValueError,
         r"`clipnorm` must be > 0. Received: clipnorm=-1.0"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, clipnorm="a"), TypeError,
         r"Received: clipnorm='a'"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, clipnorm=float("nan")), ValueError,
         r"Received: clipnorm=nan"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, loss_scale_factor=0), ValueError,
         r"Received: loss_scale_factor=0.0"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, use_ema=True, ema_overwrite_frequency=0),
         ValueError, r"Received: ema_overwrite_frequency=0"),
        (lambda: DecoupledWeightDecay(_sgd(), 1e-4, use_ema=True, ema_overwrite_frequency=1.5),
         TypeError, r"Received: ema_overwrite_frequency=1.5"),
        (lambda: DecoupledWeightDecay(keras.optimizers.SGD(0.1, gradient_accumulation_steps=3),
                                      1e-4, gradient_accumulation_steps=2),
         ValueError, r"already 3.*Received: gradient_accumulation_steps=2"),
        (lambda: DecoupledWeightDecay(keras.optimizers.SGD(0.1, clipnorm=1.0), 1e-4,
                                      clipvalue=1.0),
         ValueError, r"Only one of.*clipnorm=1.0, clipvalue=1.0"),
    ],
)
def test_bad_input_is_refused(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize(
    "arguments, refused",
    [
        ({"gradient_accumulation_steps": 1}, True),  # Keras wants >= 2
        ({"clipnorm": 1.0, "global_clipnorm": 1.0}, True),  # one clip at a time
        ({"clipvalue": 0.5, "use_ema": True, "ema_momentum": 0.9}, False),
    ],
    ids=lambda value: (",".join(f"{k}={v!r}" for k, v in value.items())
                       if isinstance(value, dict) else ("refused" if value else "accepted")),
)
def test_forwarded_arguments_are_checked_by_keras_as_on_the_wrapped_optimizer(
        arguments, refused):
    """How forwarded arguments combine is Keras's rule, not a copy of it: the wrapper
    refuses a combination the wrapped optimizer's constructor refuses, with Keras's
    message, and sets accepted ones on it."""
    if refused:
        with pytest.raises(ValueError) as keras_error:
            keras.optimizers.SGD(0.1, **arguments)
        with pytest.raises(ValueError, match=re.escape(str(keras_error.value))):
            DecoupledWeightDecay(_sgd(), 1e-4, **arguments)
        return
    expected = keras.optimizers.SGD(0.1, **arguments).get_config()
    inner = DecoupledWeightDecay(_sgd(), 1e-4, **arguments).inner_optimizer
    assert {**inner.get_config(), "name": None} == {**expected, "name": None}


def test_forwarded_argument_defaults_are_those_of_keras_base_optimizer():
    # `_wrapping` reads them from a Keras signature, to tell "already set" apart.
    optimizer = keras.optimizers.Optimizer(learning_rate=0.0)
    assert _wrapping._keras_defaults() == {
        key: getattr(optimizer, key) for key in _wrapping.FORWARDED}


@pytest.mark.skipif(not _JAX, reason="only the JAX backend refuses it")
def test_jax_refuses_a_loss_scale_optimizer_inside():
    with pytest.raises(ValueError, match=r"LossScaleOptimizer\(DecoupledWeightDecay"):
        DecoupledWeightDecay(keras.optimizers.LossScaleOptimizer(_sgd()), 1e-4)


def test_keras_exclusion_method_is_refused_not_silently_ignored():
    with pytest.raises(ValueError, match=r"exclude=.*Received: var_list=None, var_names=\['bias'\]"):
        DecoupledWeightDecay(_sgd(), 1e-4).exclude_from_weight_decay(var_names=["bias"])


def test_refused_calls_leave_the_inner_optimizer_unchanged():
    inner = keras.optimizers.SGD(0.1)
    config = inner.get_config()
    bad_calls = [
        ({"weight_decay": -1.0}, r"Received: weight_decay=-1.0"),
        ({"weight_decay": 0.1, "toward": "x"}, r"Received: toward='x'"),
        ({"weight_decay": 0.1, "clipnorm": 1.0, "gradient_accumulation_steps": 1},
         r"Received: gradient_accumulation_steps=1"),
        ({"weight_decay": 0.1, "use_ema": True, "ema_momentum": 5.0},
         r"Received: ema_momentum=5.0"),
    ]
    for kwargs, message in bad_calls:
        with pytest.raises(ValueError, match=message):
            DecoupledWeightDecay(inner, **kwargs)
        assert inner.get_config() == config and not inner.built
    # Forwarding to an optimizer that is built already is refused, too.
    inner.build([keras.Variable(np.ones((2, 2)), name="kernel")])
    with pytest.raises(ValueError, match="not built yet"):
        DecoupledWeightDecay(inner, 0.1, gradient_accumulation_steps=2)
    assert inner.gradient_accumulation_steps is None


def test_schedule_mode_refuses_a_zero_learning_rate_at_step_0_and_builds_nothing():
    warmup = schedules.CosineDecay(0.0, decay_steps=10, warmup_target=0.1, warmup_steps=5)
    inner = keras.optimizers.Adam(warmup)
    optimizer = DecoupledWeightDecay(inner, 0.1, decay_scaling="schedule")
    kernel = keras.Variable(np.ones((2, 2)), name="kernel")
    before = [v.path for v in optimizer.variables]
    with pytest.raises(ValueError, match="learning rate at step 0"):
        optimizer.build([kernel])
    assert not optimizer.built and not inner.built
    assert [v.path for v in optimizer.variables] == before


def test_normalized_weight_decay():
    assert normalized_weight_decay(0.05, 128, 50000, 200) == pytest.approx(
        0.05 * math.sqrt(128 / (50000 * 200)), rel=1e-12)
    assert normalized_weight_decay(0.0, 1, 1, 1) == 0.0
    for args, message in [
        ((-0.05, 128, 50000, 10), r"Received: lambda_norm=-0.05"),
        ((0.05, 0, 50000, 10), r"Received: batch_size=0"),
        ((0.05, 128, 0, 10), r"Received: num_examples=0"),
        ((0.05, 128, 50000, 0), r"Received: epochs=0"),
    ]:
        with pytest.raises(ValueError, match=message):
            normalized_weight_decay(*args)
    with pytest.raises(TypeError, match=r"Received: batch_size=1.5"):
        normalized_weight_decay(0.05, 1.5, 50000, 10)
