"""`RegularizationSchedule` during `fit`: what each epoch drops, penalizes and decays.

Measured, not read back from the code: the fraction of zeros a dropout layer
outputs in each epoch (counted inside the traced step), the logged loss
against `λ * schedule(epoch) * sum(w**2)` in NumPy, the weights after
decoupled decay against NumPy products, and how often the step is traced.
"""

import math
import re

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import schedules
from keras_regkit.schedules import EarlySchedule
from keras_regkit.schedules import LateSchedule
from keras_regkit.schedules import LinearSchedule
from keras_regkit.schedules import RegularizationSchedule
from keras_regkit.schedules import ScheduledDropout
from keras_regkit.schedules import StepSchedule
from tests import helpers


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


class ZeroCounter(keras.layers.Layer):
    """Identity that counts, in training, the zeros it sees; `traces` counts Python calls.

    The counts are variables updated inside the traced step, so they need no
    retrace; `call` runs in Python only when the step is traced.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.traces = 0

    def build(self, input_shape):
        self.zeros = self.add_weight(shape=(), initializer="zeros", trainable=False, name="zeros")
        self.total = self.add_weight(shape=(), initializer="zeros", trainable=False, name="total")

    def call(self, x, training=False):
        self.traces += 1
        if training:
            self.zeros.assign_add(keras.ops.sum(keras.ops.cast(keras.ops.equal(x, 0), "float32")))
            self.total.assign_add(keras.ops.cast(keras.ops.size(x), "float32"))
        return x


class EpochRecorder(keras.callbacks.Callback):
    """Per epoch: the zero fraction the counter saw, its traces, the train function."""

    def __init__(self, counter):
        super().__init__()
        self.counter = counter
        self.fractions, self.traces, self.functions = [], [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.counter.zeros.assign(0.0)
        self.counter.total.assign(0.0)

    def on_epoch_end(self, epoch, logs=None):
        self.fractions.append(float(_np(self.counter.zeros)) / float(_np(self.counter.total)))
        self.traces.append(self.counter.traces)
        self.functions.append(self.model.train_function)


def _dropout_model(layer, width=500):
    inputs = keras.Input((width,))
    counter = ZeroCounter(name="counter")
    outputs = keras.layers.Dense(1, name="head")(counter(layer(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.0), "mse")
    return model, counter


def _fit(model, callbacks, epochs, samples=200, batch_size=50, width=500, **kwargs):
    x = np.ones((samples, width), "float32")
    return model.fit(x, np.zeros((samples, 1), "float32"), batch_size=batch_size,
                     epochs=epochs, verbose=0, callbacks=callbacks, **kwargs)


def _assert_fractions(measured, expected, count):
    """Each measured fraction within 5 standard errors of a Bernoulli(p) mean of `count` draws."""
    for epoch, (got, p) in enumerate(zip(measured, expected)):
        tolerance = 5 * math.sqrt(max(p * (1 - p), 1e-12) / count) + 1e-9
        assert got == pytest.approx(p, abs=tolerance), (epoch, measured, expected)


# ---------------------------------------------------------------- rates


@pytest.mark.parametrize("schedule", [
    LinearSchedule(1.0, 0.0, epochs=4),
    EarlySchedule(2),
    LateSchedule(3),
    StepSchedule([1, 3], [0.5, 1.0, 0.25]),
], ids=["linear", "early", "late", "step"])
def test_drop_fraction_follows_the_schedule_without_retracing(schedule):
    model, counter = _dropout_model(ScheduledDropout(0.6, seed=1))
    recorder = EpochRecorder(counter)
    epochs = 5
    _fit(model, [RegularizationSchedule(dropout=schedule), recorder], epochs)
    expected = [0.6 * schedule(epoch) for epoch in range(epochs)]
    _assert_fractions(recorder.fractions, expected, count=200 * 500)
    # Traced in the first epoch only: the rate changed four times after it.
    assert recorder.traces[1:] == recorder.traces[:1] * (epochs - 1)
    assert all(function is recorder.functions[0] for function in recorder.functions)
    # The layer's own rate is back when fit ends.
    assert float(_np(model.layers[1].rate_factor)) == 1.0


def test_swapped_keras_dropout_and_a_resumed_run():
    inputs = keras.Input((500,))
    counter = ZeroCounter(name="counter")
    outputs = keras.layers.Dense(1)(counter(keras.layers.Dropout(0.5, name="drop")(inputs)))
    model = schedules.schedulable_dropout(keras.Model(inputs, outputs))
    model.compile(keras.optimizers.SGD(0.0), "mse")
    counter = model.get_layer("counter")
    recorder = EpochRecorder(counter)
    schedule = LinearSchedule(0.0, 1.0, epochs=4)
    _fit(model, [RegularizationSchedule(layers={"drop": schedule}), recorder], epochs=5,
         initial_epoch=2)  # resumes: epochs 2, 3, 4
    _assert_fractions(recorder.fractions, [0.5 * schedule(e) for e in (2, 3, 4)], 200 * 500)


def test_per_step_changes_within_an_epoch():
    model, counter = _dropout_model(ScheduledDropout(0.8, seed=2))
    recorder = EpochRecorder(counter)
    schedule = LinearSchedule(1.0, 0.0, epochs=2)
    _fit(model, [RegularizationSchedule(dropout=schedule, per_step=True), recorder], epochs=3)
    steps = 4  # 200 samples / 50
    expected = [np.mean([0.8 * schedule(epoch + batch / steps) for batch in range(steps)])
                for epoch in range(3)]  # 0.8 * (7/8, 3/8, 0)
    _assert_fractions(recorder.fractions, expected, count=200 * 500)
    assert recorder.traces[1:] == recorder.traces[:1] * 2
    assert all(function is recorder.functions[0] for function in recorder.functions)


def test_droppath_keeps_the_per_depth_rule():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(6, name="stem")(inputs)
    for i in (1, 2, 3):
        x = keras.layers.Add(name=f"add{i}")([x, keras.layers.Dense(6, name=f"fc{i}")(x)])
    model = keras_regkit.insert_droppath(keras.Model(inputs, x), max_rate=0.3)
    model.compile(keras.optimizers.SGD(0.0), "mse")
    paths = [layer for layer in model.layers if isinstance(layer, keras_regkit.DropPath)]
    assert [layer.rate for layer in paths] == pytest.approx([0.1, 0.2, 0.3])
    schedule = EarlySchedule(2, decay="linear")
    seen = []
    reader = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(
        [layer.rate * float(_np(layer.rate_factor)) for layer in paths]))
    model.fit(np.ones((8, 6)), np.zeros((8, 6)), epochs=3, verbose=0,
              callbacks=[RegularizationSchedule(drop_path=schedule), reader])
    for epoch, rates in enumerate(seen):
        assert rates == pytest.approx([rate * schedule(epoch) for rate in (0.1, 0.2, 0.3)])


def test_droppath_drop_fraction():
    layer = keras_regkit.DropPath(0.5, seed=3)
    model, counter = _dropout_model(layer, width=4)
    recorder = EpochRecorder(counter)
    schedule = StepSchedule([1], [1.0, 0.4])
    _fit(model, [RegularizationSchedule(drop_path=schedule), recorder], epochs=2,
         samples=20_000, batch_size=5_000, width=4)
    # Whole samples are dropped: the zero fraction is the rate, over 20000 samples.
    _assert_fractions(recorder.fractions, [0.5, 0.2], count=20_000)


def test_dropblock_factor_follows_the_schedule():
    inputs = keras.Input((6, 6, 2))
    x = keras_regkit.DropBlock2D(0.2, block_size=3, name="block")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(x)))
    model.compile("sgd", "mse")
    schedule = LinearSchedule(0.0, 1.0, epochs=2)
    seen = []
    model.fit(np.ones((4, 6, 6, 2)), np.ones((4, 1)), epochs=3, verbose=0, callbacks=[
        RegularizationSchedule(drop_block=schedule),
        keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(
            float(_np(model.get_layer("block").rate_factor))))])
    assert seen == pytest.approx([0.0, 0.5, 1.0])


# ---------------------------------------------------------------- penalties and weight decay


def _penalty_model():
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, kernel_regularizer=keras_regkit.L2(0.1), name="fc1")(inputs)
    x = keras.layers.Dense(2, kernel_regularizer=keras.regularizers.L1(0.05), name="fc2")(x)
    model = helpers.randomize(keras.Model(inputs, x))
    for layer in model.layers[1:]:
        layer.bias.assign(np.zeros(layer.bias.shape))
    model.compile(keras.optimizers.SGD(0.0), "mse")  # weights stay: the loss is the penalty
    return model


def test_penalty_follows_the_schedule():
    model = _penalty_model()
    before = [v.path for v in model.non_trainable_variables]
    w1, w2 = (_np(model.get_layer(name).kernel) for name in ("fc1", "fc2"))
    everything, head = LateSchedule(1, value=2.0), LinearSchedule(1.0, 0.0, epochs=2)
    functions = []
    history = model.fit(np.zeros((8, 3)), np.zeros((8, 2)), batch_size=4, epochs=4, verbose=0,
                        validation_data=(np.zeros((4, 3)), np.zeros((4, 2))),
                        callbacks=[RegularizationSchedule(regularizers=everything,
                                                          layers={"fc2": head}),
                                   keras.callbacks.LambdaCallback(
                                       on_epoch_end=lambda e, logs: functions.append(
                                           model.train_function))])
    for epoch, (loss, val_loss) in enumerate(zip(history.history["loss"],
                                                 history.history["val_loss"])):
        want = (0.1 * everything(epoch) * np.sum(w1 ** 2)
                + 0.05 * head(epoch) * np.sum(np.abs(w2)))
        assert loss == pytest.approx(want, rel=1e-5), epoch
        assert val_loss == pytest.approx(want, rel=1e-5), epoch
    assert all(f is functions[0] for f in functions)
    # Restored: the penalties, the model's variables, the unscheduled loss.
    assert type(model.get_layer("fc1").kernel.regularizer) is keras_regkit.L2
    assert [v.path for v in model.non_trainable_variables] == before
    want = 0.1 * np.sum(w1 ** 2) + 0.05 * np.sum(np.abs(w2))
    assert model.evaluate(np.zeros((4, 3)), np.zeros((4, 2)), verbose=0) == pytest.approx(
        want, rel=1e-5)


def test_penalty_gradient_is_scaled():
    inputs = keras.Input((3,))
    layer = keras.layers.Dense(2, kernel_regularizer=keras_regkit.L2(0.1), name="fc")
    model = helpers.randomize(keras.Model(inputs, layer(inputs)))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    kernel = _np(layer.kernel)
    schedule = StepSchedule([1], [0.0, 2.0])
    kernels = []
    # Zero inputs: the data loss has no gradient on the kernel, only the penalty does.
    model.fit(np.zeros((4, 3)), np.zeros((4, 2)), batch_size=2, epochs=2, verbose=0, callbacks=[
        RegularizationSchedule(regularizers=schedule),
        keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: kernels.append(
            _np(layer.kernel)))])
    for epoch in range(2):
        kernel = kernel * (1 - 0.1 * 2 * 0.1 * schedule(epoch)) ** 2  # 2 steps of SGD
        np.testing.assert_allclose(kernels[epoch], kernel, rtol=1e-5)


def test_scaled_penalty_still_reads_as_the_regularizer():
    model = _penalty_model()
    seen = {}

    def look(epoch, logs):
        regularizer = model.get_layer("fc1").kernel.regularizer
        seen.update(is_l2=isinstance(regularizer, keras_regkit.L2), l2=regularizer.l2,
                    config=regularizer.get_config())

    model.fit(np.zeros((4, 3)), np.zeros((4, 2)), epochs=1, verbose=0, callbacks=[
        RegularizationSchedule(regularizers=0.5),
        keras.callbacks.LambdaCallback(on_epoch_end=look)])
    assert seen == {"is_l2": True, "l2": 0.1, "config": {"l2": 0.1}}


@pytest.mark.parametrize("per_step", [False, True], ids=["per_epoch", "per_step"])
def test_weight_decay_follows_the_schedule(per_step):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(3, kernel_initializer="ones", name="d")(inputs))
    optimizer = keras_regkit.DecoupledWeightDecay(
        keras.optimizers.SGD(0.0), weight_decay=0.1, decay_scaling="none")
    model.compile(optimizer, "mse")
    schedule = StepSchedule([1, 2], [0.0, 1.0, 0.5]) if not per_step else LinearSchedule(0, 1, 2)
    kernels = []
    model.fit(np.ones((6, 2)), np.ones((6, 3)), batch_size=2, epochs=3, verbose=0, callbacks=[
        RegularizationSchedule(weight_decay=schedule, per_step=per_step),
        keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: kernels.append(
            float(_np(model.get_layer("d").kernel)[0, 0])))])
    value, steps = 1.0, 3
    for epoch in range(3):
        for batch in range(steps):
            at = epoch + batch / steps if per_step else epoch
            value *= 1 - 0.1 * schedule(at)  # w <- w - weight_decay_t * w
        assert kernels[epoch] == pytest.approx(value, rel=1e-5), epoch
    assert optimizer.weight_decay == 0.1  # restored


# ---------------------------------------------------------------- undo, refusals


def test_a_fit_that_raises_is_undone_later():
    model = _penalty_model()

    def fail(epoch, logs):
        raise RuntimeError("stop")

    schedule = RegularizationSchedule(regularizers=0.0)
    with pytest.raises(RuntimeError, match="stop"):
        model.fit(np.zeros((4, 3)), np.zeros((4, 2)), epochs=2, verbose=0, callbacks=[
            schedule, keras.callbacks.LambdaCallback(on_epoch_end=fail)])
    assert type(model.get_layer("fc1").kernel.regularizer) is not keras_regkit.L2
    schedule.restore()
    assert type(model.get_layer("fc1").kernel.regularizer) is keras_regkit.L2
    # The next fit with a schedule restores a leftover by itself.
    with pytest.raises(RuntimeError, match="stop"):
        model.fit(np.zeros((4, 3)), np.zeros((4, 2)), epochs=2, verbose=0, callbacks=[
            RegularizationSchedule(regularizers=0.0),
            keras.callbacks.LambdaCallback(on_epoch_end=fail)])
    history = model.fit(np.zeros((4, 3)), np.zeros((4, 2)), epochs=1, verbose=0,
                        callbacks=[RegularizationSchedule(layers={"fc1": 1.0})])
    w1, w2 = (_np(model.get_layer(name).kernel) for name in ("fc1", "fc2"))
    want = 0.1 * np.sum(w1 ** 2) + 0.05 * np.sum(np.abs(w2))
    assert history.history["loss"][0] == pytest.approx(want, rel=1e-5)
    assert type(model.get_layer("fc1").kernel.regularizer) is keras_regkit.L2


def _mixed_model():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, kernel_regularizer=keras_regkit.L2(0.1), name="fc")(inputs)
    x = keras.layers.Dropout(0.5, name="keras_drop")(x)
    x = ScheduledDropout(0.5, name="drop")(x)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(x))
    model.compile(keras_regkit.DecoupledWeightDecay(keras.optimizers.SGD(0.1), 0.0), "mse")
    return model


@pytest.mark.parametrize("kwargs, match", [
    ({"drop_path": 1.0}, "no DropPath layer.*insert_droppath.*Received: drop_path="),
    ({"drop_block": 1.0}, "no DropBlock2D layer"),
    ({"dropout": 2.0}, "layer 'drop' has rate 0.5 and its schedule reaches 2.0"),
    ({"layers": {"nothing*": 1.0}}, "key 'nothing\\*' matches no layer.*Its layers are: .*fc"),
    ({"layers": {"keras_drop": 1.0}}, "is a Keras Dropout.*schedulable_dropout"),
    ({"layers": {"head": 1.0}}, "neither a schedulable rate"),
    ({"weight_decay": 1.0}, "the optimizer's `weight_decay` is 0"),
    ({"dropout": 1.0, "per_step": True}, "needs the number of steps per epoch"),
])
def test_refused_at_the_start_of_fit_and_nothing_changes(kwargs, match):
    model = _mixed_model()
    model.build((None, 4))
    before = helpers.snapshot(model)
    data = np.ones((4, 4), "float32"), np.ones((4, 1), "float32")
    fit_data = {"x": data[0], "y": data[1]}
    if kwargs.get("per_step"):
        fit_data = {"x": (batch for batch in [data] * 3)}  # steps per epoch unknown
    with pytest.raises(ValueError, match=match):
        model.fit(**fit_data, epochs=1, verbose=0, callbacks=[RegularizationSchedule(**kwargs)])
    helpers.assert_unchanged(model, before)
    assert float(_np(model.get_layer("drop").rate_factor)) == 1.0


def test_refusals_for_missing_targets():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dropout(0.3, name="d")(inputs))
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match=re.escape(
            "Its Keras dropout layers (d) fix their rate")):
        model.fit(np.ones((2, 4)), np.ones((2, 4)), verbose=0,
                  callbacks=[RegularizationSchedule(dropout=EarlySchedule(1))])
    with pytest.raises(ValueError, match="no trainable weight of .* has a regularizer"):
        model.fit(np.ones((2, 4)), np.ones((2, 4)), verbose=0,
                  callbacks=[RegularizationSchedule(regularizers=0.5)])
    with pytest.raises(ValueError, match="is compiled with SGD"):
        model.fit(np.ones((2, 4)), np.ones((2, 4)), verbose=0,
                  callbacks=[RegularizationSchedule(weight_decay=0.5)])
    # `dropout` drives the dropout layers only, not DropPath (which shares their rate mixin).
    paths = keras.Model(inputs, keras.layers.Add()([inputs, keras_regkit.DropPath(0.2)(inputs)]))
    paths.compile("sgd", "mse")
    with pytest.raises(ValueError, match="has no ScheduledDropout or ScheduledSpatialDropout"):
        paths.fit(np.ones((2, 4)), np.ones((2, 4)), verbose=0,
                  callbacks=[RegularizationSchedule(dropout=EarlySchedule(1))])
    zero = keras.Model(inputs, ScheduledDropout(0.0)(inputs))
    zero.compile("sgd", "mse")
    with pytest.raises(ValueError, match="has rate 0.*would do nothing"):
        zero.fit(np.ones((2, 4)), np.ones((2, 4)), verbose=0,
                 callbacks=[RegularizationSchedule(dropout=LateSchedule(1))])


# ---------------------------------------------------------------- saving


def test_save_and_load_in_a_fresh_process(tmp_path):
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", kernel_regularizer=keras_regkit.L2(0.01),
                            name="conv")(inputs)
    x = schedules.ScheduledSpatialDropout2D(0.2, seed=1, name="spatial")(x)
    x = keras.layers.Add()([x, keras_regkit.DropPath(0.3, seed=2, name="path")(x)])
    x = ScheduledDropout(0.4, seed=3, name="drop")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    model.compile("sgd", "mse")
    for name, factor in (("spatial", 0.25), ("path", 0.5), ("drop", 0.75)):
        model.get_layer(name).rate_factor.assign(factor)
    # A checkpoint saved while a penalty schedule is on loads as a plain model.
    checkpoint = tmp_path / "during.keras"
    saver = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: model.save(checkpoint))
    model.fit(np.ones((4, 6, 6, 3)), np.ones((4, 2)), epochs=1, verbose=0,
              callbacks=[RegularizationSchedule(regularizers=LateSchedule(1)), saver])
    path = tmp_path / "model.keras"
    model.save(path)
    x = np.random.default_rng(0).normal(size=(3, 6, 6, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    out = helpers.run_python(f"""
        import json, numpy as np, keras
        import keras_regkit, keras_regkit.schedules  # registers the classes
        x = np.load({str(tmp_path / "x.npy")!r})
        result = {{}}
        for key, path in (("final", {str(path)!r}), ("during", {str(checkpoint)!r})):
            model = keras.saving.load_model(path, safe_mode=True)
            result[key] = {{
                "classes": {{name: type(model.get_layer(name)).__name__
                            for name in ("spatial", "path", "drop")}},
                "factors": {{name: float(model.get_layer(name).rate_factor.numpy())
                            for name in ("spatial", "path", "drop")}},
                "predictions": np.asarray(model(x)).tolist(),
                "weights": len(model.weights),
                "losses": [float(v) for v in model.losses],
            }}
        print(json.dumps(result))
    """)
    import json

    result = json.loads(out.strip().splitlines()[-1])
    for key in ("final", "during"):
        loaded = result[key]
        assert loaded["classes"] == {"spatial": "ScheduledSpatialDropout2D",
                                     "path": "DropPath", "drop": "ScheduledDropout"}
        assert loaded["factors"] == {"spatial": 0.25, "path": 0.5, "drop": 0.75}
        assert loaded["weights"] == len(model.weights)
        assert loaded["losses"] == pytest.approx([float(_np(v)) for v in model.losses])
    np.testing.assert_allclose(result["final"]["predictions"], _np(model(x)), atol=1e-5)


def test_old_droppath_files_load_with_factor_one(tmp_path, monkeypatch):
    # A file written before DropPath had `rate_factor`: no variable for the layer.
    monkeypatch.setattr(keras_regkit.DropPath, "build", lambda self, shape: None)
    monkeypatch.setattr(keras_regkit.DropPath, "call", lambda self, x, training=False: x)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, name="fc")(inputs)
    old = keras.Model(inputs, keras.layers.Add()([x, keras_regkit.DropPath(0.2, name="dp")(x)]))
    assert len(old.weights) == 2
    path = tmp_path / "old.keras"
    old.save(path)
    monkeypatch.undo()
    loaded = keras.saving.load_model(path)
    layer = loaded.get_layer("dp")
    assert float(_np(layer.rate_factor)) == 1.0 and layer.rate == 0.2
    np.testing.assert_array_equal(_np(loaded.get_layer("fc").kernel), _np(old.get_layer("fc").kernel))
    out = _np(layer(np.ones((2000, 3), "float32"), training=True))
    assert np.mean(out[:, 0] == 0) == pytest.approx(0.2, abs=5 * math.sqrt(0.16 / 2000))
