"""Schedules, `ScheduledWeightDecay`, the schedulable dropout layers and `schedulable_dropout`.

The references are NumPy formulas written here from the docstrings (and, for
early/late, from facebookresearch/dropout's `drop_scheduler`), never numbers
copied from the code's output. Training with schedules: `test_schedules_training.py`;
what every layer owes (round trips, seeds, jit, mixed precision, unknown sizes):
`tests/layers/test_layer_checklist.py`.
"""

import math
import re

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import schedules
from keras_regkit.schedules import ConstantSchedule
from keras_regkit.schedules import CosineSchedule
from keras_regkit.schedules import EarlySchedule
from keras_regkit.schedules import LateSchedule
from keras_regkit.schedules import LinearSchedule
from keras_regkit.schedules import RegularizationSchedule
from keras_regkit.schedules import ScheduledDropout
from keras_regkit.schedules import ScheduledSpatialDropout1D
from keras_regkit.schedules import ScheduledSpatialDropout2D
from keras_regkit.schedules import ScheduledSpatialDropout3D
from keras_regkit.schedules import ScheduledWeightDecay
from keras_regkit.schedules import StepSchedule
from keras_regkit.schedules import schedulable_dropout
from tests import helpers
from tests.layers.test_dropblock_dynamic import _unknown_size_step

EPOCHS = [0, 0.5, 1, 2, 2.75, 3, 4, 5, 9]


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


# ---------------------------------------------------------------- the curves

REFERENCES = [
    (ConstantSchedule(0.3), lambda e: 0.3),
    (LinearSchedule(0.0, 2.0, epochs=4), lambda e: 2.0 * min(e / 4, 1)),
    (LinearSchedule(1.0, 0.25, epochs=3), lambda e: 1.0 - 0.75 * min(e / 3, 1)),
    (CosineSchedule(1.0, 10.0, epochs=4),
     lambda e: 1.0 + 9.0 * (1 - math.cos(math.pi * min(e / 4, 1))) / 2),
    (StepSchedule([2, 4], [1.0, 0.5, 0.0]),
     lambda e: 1.0 if e < 2 else (0.5 if e < 4 else 0.0)),
    # facebookresearch/dropout: early constant = [p] * cutoff + [0] * rest.
    (EarlySchedule(3), lambda e: 1.0 if e < 3 else 0.0),
    # early linear = linspace(p, 0, cutoff iterations), then 0.
    (EarlySchedule(4, value=0.5, decay="linear"), lambda e: 0.5 * max(1 - e / 4, 0)),
    # late = [0] * cutoff + [p] * rest.
    (LateSchedule(2, value=0.8), lambda e: 0.0 if e < 2 else 0.8),
]


@pytest.mark.parametrize("schedule, reference", REFERENCES,
                         ids=[type(s).__name__ for s, _ in REFERENCES])
def test_values_follow_the_formula(schedule, reference):
    for epoch in EPOCHS:
        assert schedule(epoch) == pytest.approx(reference(epoch), rel=1e-6, abs=1e-7), epoch
    # In the traced step the same formula runs on tensors.
    values = _np(keras.ops.stack([schedule(keras.ops.convert_to_tensor(float(e)))
                                  for e in EPOCHS]))
    np.testing.assert_allclose(values, [reference(e) for e in EPOCHS], rtol=1e-6, atol=1e-7)
    assert schedule.maximum() == pytest.approx(max(reference(e) for e in range(20)))


@pytest.mark.parametrize("schedule", [s for s, _ in REFERENCES],
                         ids=[type(s).__name__ for s, _ in REFERENCES])
def test_config_round_trip(schedule):
    restored = helpers.config_round_trip(schedule)
    assert [restored(e) for e in EPOCHS] == [schedule(e) for e in EPOCHS]


def test_lists_stay_lists_through_json():
    schedule = StepSchedule((1, 3), (0.0, 1.0, 2.0))
    assert schedule.get_config() == {"boundaries": [1, 3], "values": [0.0, 1.0, 2.0]}


def test_get():
    late = LateSchedule(3)
    assert schedules.get(late) is late
    assert schedules.get(0.25)(5) == 0.25
    by_name = schedules.get({"class_name": "linear",
                             "config": {"start": 0.0, "end": 1.0, "epochs": 2}})
    assert isinstance(by_name, LinearSchedule) and by_name(1) == 0.5
    serialized = keras.saving.serialize_keras_object(CosineSchedule(1.0, 0.0, 3))
    assert isinstance(schedules.get(serialized), CosineSchedule)


@pytest.mark.parametrize("identifier, error, match", [
    ("late", ValueError, "needs its arguments.*Received: schedule='late'"),
    ("cubic", ValueError, "the short names are 'constant'.*Received: schedule='cubic'"),
    ({"class_name": "cubic", "config": {}}, ValueError,
     "names no known schedule.*Received: schedule=\\{'class_name': 'cubic'"),
    ([0.5], TypeError, r"Received: schedule=\[0.5\] of type list"),
    (True, TypeError, "Received: schedule=True"),
    (-0.5, ValueError, "Received: schedule=-0.5"),
    (keras.saving.serialize_keras_object(keras.regularizers.L2(0.1)), TypeError,
     "must be a keras_regkit Schedule"),
])
def test_get_refuses(identifier, error, match):
    with pytest.raises(error, match=match):
        schedules.get(identifier)


@pytest.mark.parametrize("make, error, match", [
    (lambda: LinearSchedule(0.0, 1.0, epochs=-1), ValueError, "Received: epochs=-1"),
    (lambda: LinearSchedule(0.0, 1.0, epochs=0), ValueError, "Received: epochs=0"),
    (lambda: LinearSchedule(0.0, 1.0, epochs=2.5), TypeError, "Received: epochs=2.5"),
    (lambda: LinearSchedule(-1.0, 1.0, epochs=2), ValueError, "Received: start=-1.0"),
    (lambda: CosineSchedule(0.0, float("nan"), epochs=2), ValueError, "Received: end=nan"),
    (lambda: EarlySchedule(-3), ValueError, "Received: epochs=-3"),
    (lambda: EarlySchedule(3, decay="cubic"), ValueError, "Received: decay='cubic'"),
    (lambda: LateSchedule(0), ValueError, "Received: epochs=0"),
    (lambda: LateSchedule(2, value=-0.1), ValueError, "Received: value=-0.1"),
    (lambda: ConstantSchedule("1"), TypeError, "Received: value='1'"),
    (lambda: StepSchedule([3, 2], [1.0, 0.5, 0.0]), ValueError,
     r"strictly increasing. Received: boundaries=\[3, 2\]"),
    (lambda: StepSchedule([0], [1.0, 0.0]), ValueError, "Received: boundaries=0"),
    (lambda: StepSchedule([2], [1.0]), ValueError, "one value more than `boundaries`"),
    (lambda: StepSchedule(2, [1.0, 0.0]), TypeError, "Received: boundaries=2"),
    (lambda: StepSchedule([2], [1.0, -1.0]), ValueError, "Received: values=-1.0"),
    (lambda: LateSchedule(2)(-1), ValueError, "Received: epoch=-1"),
])
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


# ---------------------------------------------------------------- ScheduledWeightDecay


def test_scheduled_weight_decay_turns_steps_into_epochs():
    late = LateSchedule(2, value=3.0)
    decay = ScheduledWeightDecay(0.1, late, steps_per_epoch=4, initial_step=8, initial_epoch=1)
    for step in range(8, 24):
        epoch = 1 + (step - 8) // 4
        assert float(decay(step)) == pytest.approx(0.1 * late(epoch)), step
    ramp = LinearSchedule(0.0, 1.0, epochs=2)
    per_step = ScheduledWeightDecay(0.5, ramp, steps_per_epoch=4, per_step=True)
    for step in range(12):
        assert float(per_step(step)) == pytest.approx(0.5 * min(step / 4 / 2, 1)), step


def test_scheduled_weight_decay_on_a_schedule():
    base = keras.optimizers.schedules.PolynomialDecay(1.0, decay_steps=10, end_learning_rate=0.0)
    decay = ScheduledWeightDecay(base, StepSchedule([1], [1.0, 2.0]), steps_per_epoch=5)
    for step in (0, 4, 5, 9):
        want = (1 - step / 10) * (1.0 if step < 5 else 2.0)
        assert float(decay(step)) == pytest.approx(want), step
    restored = helpers.config_round_trip(decay)
    assert [float(restored(s)) for s in range(10)] == [float(decay(s)) for s in range(10)]
    helpers.config_round_trip(ScheduledWeightDecay(
        0.1, EarlySchedule(2), 3, initial_step=6, initial_epoch=2, per_step=True))


@pytest.mark.parametrize("make, error, match", [
    (lambda: ScheduledWeightDecay(-0.1, LateSchedule(1), 4), ValueError,
     "Received: weight_decay=-0.1"),
    (lambda: ScheduledWeightDecay(0.1, "late", 4), ValueError, "Received: schedule='late'"),
    (lambda: ScheduledWeightDecay(0.1, LateSchedule(1), 0), ValueError,
     "Received: steps_per_epoch=0"),
    (lambda: ScheduledWeightDecay(0.1, LateSchedule(1), 4, initial_epoch=-1), ValueError,
     "Received: initial_epoch=-1"),
    (lambda: ScheduledWeightDecay(0.1, LateSchedule(1), 4, initial_step=1.5), TypeError,
     "Received: initial_step=1.5"),
    (lambda: ScheduledWeightDecay(0.1, LateSchedule(1), 4, per_step=1), TypeError,
     "Received: per_step=1"),
])
def test_scheduled_weight_decay_refuses(make, error, match):
    with pytest.raises(error, match=match):
        make()


# ---------------------------------------------------------------- RegularizationSchedule arguments


def test_callback_config_round_trip():
    callback = RegularizationSchedule(
        dropout=EarlySchedule(3), drop_path=LinearSchedule(0.0, 1.0, 5),
        regularizers=0.5, weight_decay=CosineSchedule(1.0, 0.1, 10),
        layers={"fc*": LateSchedule(2), "head": StepSchedule([1], [0.0, 1.0])},
        per_step=True)
    restored = helpers.config_round_trip(callback)
    assert restored.layers["fc*"](3) == 1.0 and restored.per_step is True
    assert isinstance(restored.regularizers, ConstantSchedule)


@pytest.mark.parametrize("kwargs, error, match", [
    ({}, ValueError, "needs at least one schedule"),
    ({"dropout": "early"}, ValueError, "Received: dropout='early'"),
    ({"drop_path": {"class_name": "cubic", "config": {}}}, ValueError,
     "Received: drop_path=\\{'class_name': 'cubic'"),
    ({"regularizers": -1.0}, ValueError, "Received: regularizers=-1.0"),
    ({"layers": ["fc"]}, TypeError, r"Received: layers=\['fc'\]"),
    ({"layers": {}}, ValueError, "Received: layers=\\{\\}"),
    ({"layers": {keras.layers.Dense: 0.5}}, TypeError, "keys must be non-empty layer-name globs"),
    ({"layers": {"fc": "linear"}}, ValueError, "Received: layers\\['fc'\\]='linear'"),
    ({"dropout": 1.0, "per_step": "yes"}, TypeError, "Received: per_step='yes'"),
])
def test_callback_refuses(kwargs, error, match):
    with pytest.raises(error, match=match):
        RegularizationSchedule(**kwargs)


# ---------------------------------------------------------------- the layers

LAYERS = [
    (ScheduledDropout(0.4, seed=1, name="d"), keras.layers.Dropout, (8, 6, 5)),
    (ScheduledDropout(0.4, noise_shape=(None, 1, 5), seed=1), keras.layers.Dropout, (8, 6, 5)),
    (ScheduledSpatialDropout1D(0.4, seed=2), keras.layers.SpatialDropout1D, (8, 6, 5)),
    (ScheduledSpatialDropout2D(0.4, seed=3), keras.layers.SpatialDropout2D, (8, 4, 4, 5)),
    (ScheduledSpatialDropout2D(0.4, data_format="channels_first", seed=3),
     keras.layers.SpatialDropout2D, (8, 5, 4, 4)),
    (ScheduledSpatialDropout3D(0.4, seed=4), keras.layers.SpatialDropout3D, (8, 3, 3, 3, 5)),
]
LAYER_IDS = ["Dropout", "Dropout-noise_shape", "Spatial1D", "Spatial2D", "Spatial2D-first",
             "Spatial3D"]


def _assert_values_in(array, allowed):
    """Every entry of `array` is one of `allowed` (up to float32 rounding)."""
    distance = np.min(np.abs(array.reshape(-1, 1) - np.array(allowed)), axis=1)
    assert np.all(distance <= 1e-6), np.unique(array)


def _shared_axes(layer, rank):
    """The axes along which one mask value is shared (Keras's layers' rule)."""
    if isinstance(layer, ScheduledDropout):
        shape = layer.noise_shape or (None,) * rank
        return tuple(i for i, s in enumerate(shape) if s == 1)
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return tuple(range(2, rank))
    return tuple(range(1, rank - 1))


@pytest.mark.parametrize("layer, keras_class, shape", LAYERS, ids=LAYER_IDS)
def test_layer_is_the_keras_layer_with_a_factor(layer, keras_class, shape):
    assert isinstance(layer, keras_class)
    x = np.ones(shape, "float32")
    assert np.array_equal(_np(layer(x)), x)  # inference: the identity
    out = _np(layer(x, training=True))
    _assert_values_in(out, [0.0, 1 / (1 - 0.4)])
    shared = _shared_axes(layer, len(shape))
    if shared:  # one mask value along the shared axes
        assert np.all(out == out.take([0], axis=shared[0]))
    layer.rate_factor.assign(0.5)  # rate 0.2: kept entries scaled by 1 / 0.8
    _assert_values_in(_np(layer(x, training=True)), [0.0, 1 / (1 - 0.2)])
    layer.rate_factor.assign(0.0)
    assert np.array_equal(_np(layer(x, training=True)), x)
    # The Keras layer's config keys, so a config converts either way.
    keras_config = keras_class.from_config(
        {k: v for k, v in layer.get_config().items() if k != "name"}).get_config()
    assert set(layer.get_config()) == set(keras_config)
    helpers.config_round_trip(layer)


def test_layer_drop_fraction_and_mean(count=400_000):
    layer = ScheduledDropout(0.6, seed=0)
    x = np.ones((count // 100, 100), "float32")
    layer.build(x.shape)
    for factor in (1.0, 0.5):
        layer.rate_factor.assign(factor)
        out = _np(layer(x, training=True))
        rate = 0.6 * factor
        tolerance = 5 * math.sqrt(rate * (1 - rate) / count)  # 5 standard errors
        assert np.mean(out == 0) == pytest.approx(rate, abs=tolerance)
        assert np.mean(out) == pytest.approx(1.0, abs=5 * math.sqrt(rate / (1 - rate) / count))


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager", "jit"])
def test_layer_traced_once_for_every_size_and_factor(jit_compile):
    layer = ScheduledSpatialDropout2D(0.5, seed=0)
    step = _unknown_size_step(layer, jit_compile)  # (batch, None, None, 3) inputs
    for shape in ((6, 5, 3, 3), (4, 2, 7, 3)):
        out = step(np.ones(shape, "float32"))
        _assert_values_in(out, [0.0, 2.0])
        assert np.all(out == out[:, :1, :1, :])  # whole maps
    layer.rate_factor.assign(0.0)  # the same traced step reads the new factor
    assert np.array_equal(step(np.ones((4, 2, 7, 3), "float32")), np.ones((4, 2, 7, 3)))


@pytest.mark.parametrize("make, error, match", [
    (lambda: ScheduledDropout(1.0), ValueError, r"\[0, 1\). Received: rate=1.0"),
    (lambda: ScheduledDropout("0.1"), TypeError, "Received: rate='0.1'"),
    (lambda: ScheduledDropout(0.1, seed=1.5), TypeError, "Received: seed=1.5"),
    (lambda: ScheduledSpatialDropout1D(-0.1), ValueError, "Received: rate=-0.1"),
    (lambda: ScheduledSpatialDropout2D(0.1, data_format="nhwc"), ValueError,
     "Received: data_format='nhwc'"),
    (lambda: ScheduledSpatialDropout3D(0.1, seed="1"), TypeError, "Received: seed='1'"),
])
def test_layer_refuses(make, error, match):
    with pytest.raises(error, match=match):
        make()


# ---------------------------------------------------------------- schedulable_dropout


def _keras_dropout_model():
    inputs = keras.Input((6, 6, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", kernel_regularizer=keras.regularizers.L2(0.01),
                            name="conv")(inputs)
    x = keras.layers.SpatialDropout2D(0.2, seed=5, name="spatial")(x)
    inner = keras.Sequential([keras.Input((144,)), keras.layers.Dense(8, name="inner_dense"),
                              keras.layers.Dropout(0.3, noise_shape=(None, 8), name="inner_drop")],
                             name="inner")
    x = inner(keras.layers.Flatten()(x))
    x = keras.layers.Dropout(0.5, name="drop")(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs, name="net")
    model.get_layer("conv").trainable = False
    return helpers.randomize(model)


def test_schedulable_dropout_swaps_and_keeps_the_rest():
    model = _keras_dropout_model()
    model.compile("adam", "mse")
    keras_regkit.regularize(model, {"head": keras_regkit.L1(0.02)})
    before = helpers.snapshot(model)
    new = schedulable_dropout(model)
    helpers.assert_unchanged(model, before)
    assert type(new.get_layer("spatial")) is ScheduledSpatialDropout2D
    assert type(new.get_layer("drop")) is ScheduledDropout
    inner_drop = new.get_layer("inner").get_layer("inner_drop")
    assert type(inner_drop) is ScheduledDropout and inner_drop.noise_shape == (None, 8)
    for name in ("spatial", "drop"):
        old, swapped = model.get_layer(name), new.get_layer(name)
        assert (swapped.rate, swapped.seed) == (old.rate, old.seed)
    assert new.get_layer("spatial").data_format == "channels_last"
    assert not new.get_layer("conv").trainable and new.compiled
    x = np.random.default_rng(1).normal(size=(3, 6, 6, 3)).astype("float32")
    np.testing.assert_allclose(_np(new(x)), _np(model(x)), atol=1e-6)
    assert isinstance(new.get_layer("head").kernel.regularizer, keras_regkit.L1)
    np.testing.assert_allclose(sum(float(_np(v)) for v in new.losses),
                               sum(float(_np(v)) for v in model.losses), rtol=1e-6)


def test_schedulable_dropout_on_a_sequential_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="a"),
                              keras.layers.Dropout(0.25, name="drop"), keras.layers.Dense(1)])
    new = schedulable_dropout(model)
    assert isinstance(new, keras.Sequential)
    assert [type(layer).__name__ for layer in new.layers] == ["Dense", "ScheduledDropout", "Dense"]
    assert new.get_layer("drop").rate == 0.25


def test_schedulable_dropout_refusals():
    with pytest.warns(UserWarning, match="has no Keras Dropout"):
        schedulable_dropout(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="subclassed"):
        schedulable_dropout(Sub())

    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.drop = keras.layers.Dropout(0.3, name="hidden_drop")

        def call(self, x):
            return self.drop(x)

    inputs = keras.Input((3,))
    model = keras.Model(inputs, Block(name="block")(inputs))
    before = helpers.snapshot(model)
    with pytest.raises(ValueError, match=re.escape("'block/hidden_drop' (Dropout, rate 0.3)")):
        schedulable_dropout(model)
    helpers.assert_unchanged(model, before)
