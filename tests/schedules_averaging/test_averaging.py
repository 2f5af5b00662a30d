"""`SWA` and `EMA`: the averages against NumPy references, what the model holds, refusals."""

import warnings

import keras
import numpy as np
import pytest

from keras_regkit.averaging import EMA
from keras_regkit.averaging import SWA
from keras_regkit.batch_norm import recalibrate_batch_norm
from tests import helpers


def _data(n=8):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (n, 3)).astype("float32")
    return x, (x @ np.array([[1.0], [-2.0], [0.5]], "float32") + 0.3)


def _model(batch_norm=False, optimizer=None, seed=0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((3,)), keras.layers.Dense(4, name="hidden")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(name="bn"))
    layers.append(keras.layers.Dense(1, name="out"))
    model = keras.Sequential(layers, name="net")
    model.compile(optimizer or keras.optimizers.SGD(0.05), "mse")
    return model


class Recorder(keras.callbacks.Callback):
    """Copies of the model's weights after every batch and at every epoch end."""

    def __init__(self):
        super().__init__()
        self.batches, self.epochs, self.rates = [], [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.rates.append(float(np.asarray(self.model.optimizer.learning_rate)))

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append([np.array(v, "float64") for v in self.model.weights])

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append([np.array(v, "float64") for v in self.model.weights])


def _close(got, want, rtol=1e-5):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=1e-6)


# --- SWA ---------------------------------------------------------------------------------

def test_swa_is_the_mean_of_the_weights_at_the_averaged_epochs():
    x, y = _data()
    model = _model()
    recorder, swa = Recorder(), SWA(start_epoch=1, frequency=2)
    model.fit(x, y, batch_size=4, epochs=6, shuffle=False, verbose=0, callbacks=[recorder, swa])
    snapshots = [recorder.epochs[e] for e in (1, 3, 5)]
    mean = [np.mean(group, axis=0) for group in zip(*snapshots)]
    assert swa.averaged_count == 3
    _close(model.get_weights(), mean)
    _close(swa.average_weights, mean)
    _close(swa.last_weights, recorder.epochs[5])  # what the average replaced
    with swa.swap():  # the training weights, for the block
        _close(model.get_weights(), recorder.epochs[5])
    _close(model.get_weights(), mean)


def test_swa_learning_rate_is_set_from_start_epoch_and_put_back():
    x, y = _data()
    model = _model()
    recorder = Recorder()  # after the callback: sees the rate it set
    model.fit(x, y, batch_size=4, epochs=4, verbose=0,
              callbacks=[SWA(start_epoch=2, swa_learning_rate=0.01), recorder])
    np.testing.assert_allclose(recorder.rates, [0.05, 0.05, 0.01, 0.01])
    np.testing.assert_allclose(float(np.asarray(model.optimizer.learning_rate)), 0.05)


def _failing_batches(x, y, good):
    for i in range(good):
        yield x[i * 4:(i + 1) * 4], y[i * 4:(i + 1) * 4]
    raise RuntimeError("the data broke")


def test_swa_learning_rate_is_put_back_when_training_raises():
    x, y = _data(16)
    model = _model()
    callback = SWA(start_epoch=0, swa_learning_rate=0.01)
    with pytest.raises(Exception, match="the data broke"):
        model.fit(_failing_batches(x, y, 2), epochs=1, steps_per_epoch=4, shuffle=False, verbose=0,
                  callbacks=[callback])
    np.testing.assert_allclose(float(np.asarray(model.optimizer.learning_rate)), 0.05)
    assert model.train_function is None or "guarded" not in model.train_function.__name__


def test_swa_learning_rate_is_put_back_at_the_next_fit_after_another_callback_raised():
    x, y = _data()
    model = _model()
    callback = SWA(start_epoch=0, swa_learning_rate=0.01)

    def fail(epoch, logs):
        raise RuntimeError("another callback broke")

    with pytest.raises(RuntimeError, match="another callback broke"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[callback, keras.callbacks.LambdaCallback(on_epoch_end=fail)])
    recorder = Recorder()
    model.fit(x, y, epochs=1, verbose=0, callbacks=[recorder, callback])
    assert recorder.rates == [pytest.approx(0.05)]  # put back before the new fit's first epoch
    np.testing.assert_allclose(float(np.asarray(model.optimizer.learning_rate)), 0.05)


def test_swa_learning_rate_needs_a_plain_rate():
    x, y = _data()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.05, 10, 0.5)
    model = _model(optimizer=keras.optimizers.SGD(schedule))
    model.fit(x, y, epochs=1, verbose=0)  # built
    before = helpers.snapshot(model)
    with pytest.raises(ValueError, match="Received: swa_learning_rate=0.01"):
        model.fit(x, y, epochs=2, verbose=0,
                  callbacks=[SWA(start_epoch=1, swa_learning_rate=0.01)])
    helpers.assert_unchanged(model, before)


def test_swa_recalibrates_batch_norm_and_evaluates_the_average():
    x, y = _data()
    model = _model(batch_norm=True)
    recorder = Recorder()
    swa = SWA(start_epoch=1, recalibrate_data=(x, y), validation_data=(x, y))
    history = model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0,
                        callbacks=[swa, recorder])
    mean = [np.mean(group, axis=0) for group in zip(recorder.epochs[1], recorder.epochs[2])]
    trainable = [i for i, v in enumerate(model.weights) if v.trainable]
    _close([model.get_weights()[i] for i in trainable], [mean[i] for i in trainable])
    statistics = [np.array(v) for v in model.weights if "moving" in v.path]
    recalibrate_batch_norm(model, (x, y))  # the same data at the same weights: no change
    _close([np.array(v) for v in model.weights if "moving" in v.path], statistics)
    # val_swa_loss: the average's loss, logged at epochs 1 and 2 (after the swap back,
    # the recorder saw the training weights).
    assert "val_swa_loss" in history.history and len(history.history["val_swa_loss"]) == 2
    np.testing.assert_allclose(history.history["val_swa_loss"][-1],
                               model.evaluate(x, y, verbose=0), rtol=1e-5)
    _close(swa.last_weights[:len(model.weights)], recorder.epochs[2])


def test_swa_warns_when_nothing_was_averaged_or_batch_norm_is_stale():
    x, y = _data()
    model = _model()
    with pytest.warns(UserWarning, match="nothing was averaged"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[swa := SWA(start_epoch=3)])
    assert swa.average_weights is None and swa.last_weights is None
    with pytest.warns(UserWarning, match="recalibrate_batch_norm"):
        _model(batch_norm=True).fit(x, y, epochs=1, verbose=0, callbacks=[SWA(start_epoch=0)])


def test_swa_final_weights_last_keeps_the_training_weights():
    x, y = _data()
    model = _model()
    recorder, swa = Recorder(), SWA(start_epoch=0, final_weights="last")
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[recorder, swa])
    _close(model.get_weights(), recorder.epochs[-1])
    assert swa.last_weights is None
    with swa.swap():
        _close(model.get_weights(), [np.mean(g, axis=0) for g in zip(*recorder.epochs)])
    _close(model.get_weights(), recorder.epochs[-1])


def test_swa_over_two_fits_equals_one_fit():
    x, y = _data()
    runs = []
    for splits in ([(0, 5)], [(0, 2), (2, 5)]):
        model, swa = _model(), SWA(start_epoch=1)
        for initial, epochs in splits:
            model.fit(x, y, batch_size=4, epochs=epochs, initial_epoch=initial, shuffle=False,
                      verbose=0, callbacks=[swa])
        runs.append((model.get_weights(), swa.last_weights, swa.averaged_count))
    _close(runs[0][0], runs[1][0])
    _close(runs[0][1], runs[1][1])
    assert runs[0][2] == runs[1][2] == 4


@pytest.mark.parametrize("arguments, error, match", [
    ({"start_epoch": -1}, ValueError, "Received: start_epoch=-1"),
    ({"start_epoch": 1.5}, TypeError, "Received: start_epoch=1.5"),
    ({"start_epoch": True}, TypeError, "Received: start_epoch=True"),
    ({"frequency": 0}, ValueError, "Received: frequency=0"),
    ({"swa_learning_rate": 0}, ValueError, "Received: swa_learning_rate=0"),
    ({"swa_learning_rate": "0.1"}, TypeError, "Received: swa_learning_rate='0.1'"),
    ({"final_weights": "best"}, ValueError, "Received: final_weights='best'"),
    ({"recalibrate_steps": 0}, ValueError, "Received: recalibrate_steps=0"),
    ({"recalibrate_data": 3}, TypeError, "Received: recalibrate_data=3"),
    ({"recalibrate_data": iter([np.zeros((2, 3))])}, TypeError, "use up"),
    ({"validation_data": [np.zeros((2, 3))]}, TypeError, "Received: validation_data="),
])
def test_swa_refuses_bad_arguments(arguments, error, match):
    with pytest.raises(error, match=match):
        SWA(**{"start_epoch": 0, **arguments})


def test_swa_and_ema_configs_round_trip():
    for callback in (SWA(3, frequency=2, swa_learning_rate=0.01, recalibrate_steps=5,
                         final_weights="last"),
                     EMA(0.99, warmup_power=None, warmup_gamma=2.0, update_after_step=10,
                         batch_norm="recalibrate", recalibrate_steps=2)):
        restored = helpers.config_round_trip(callback)
        assert restored.recalibrate_data is None and restored.validation_data is None


def test_swap_before_fit_is_refused():
    with pytest.raises(ValueError, match="no average yet"):
        with EMA().swap():
            pass


# --- EMA ---------------------------------------------------------------------------------

def _numpy_ema(snapshots, decay, power, gamma, after):
    """timm's ModelEmaV3 warmup, written out: one snapshot per batch k = 1, 2, ..."""
    average = None
    for k, weights in enumerate(snapshots, start=1):
        t = max(0, k - after - 1)
        if t <= 0:
            d = 0.0
        elif power is None:
            d = decay
        else:
            d = min(decay, 1 - (1 + t / gamma) ** -power)
        average = [np.array(w) for w in weights] if average is None else [
            d * a + (1 - d) * w for a, w in zip(average, weights)]
    return average


@pytest.mark.parametrize("power", [0.75, None])
def test_ema_equals_a_numpy_loop_with_the_warmup(power):
    x, y = _data(24)
    model = _model(batch_norm=True)  # batch_norm="average": the moving statistics too
    recorder = Recorder()
    ema = EMA(decay=0.6, warmup_power=power, warmup_gamma=2.0, update_after_step=2)
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[recorder, ema])
    assert ema.updates == len(recorder.batches) == 12
    expected = _numpy_ema(recorder.batches, 0.6, power, 2.0, 2)
    _close(model.get_weights(), expected)
    _close(ema.last_weights, recorder.batches[-1])


def test_ema_evaluates_the_average_each_epoch():
    x, y = _data()
    model = _model()
    ema = EMA(decay=0.9, validation_data=(x, y))
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, validation_data=(x, y),
                        callbacks=[ema])
    assert len(history.history["val_ema_loss"]) == 2
    np.testing.assert_allclose(history.history["val_ema_loss"][-1],
                               model.evaluate(x, y, verbose=0), rtol=1e-5)
    with ema.swap():  # the training weights: their loss is fit's own val_loss
        np.testing.assert_allclose(model.evaluate(x, y, verbose=0),
                                   history.history["val_loss"][-1], rtol=1e-5)


def test_ema_recalibrate_policy():
    x, y = _data()
    model = _model(batch_norm=True)
    before = helpers.snapshot(model)
    with pytest.raises(ValueError, match="Received: recalibrate_data=None"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[EMA(batch_norm="recalibrate")])
    helpers.assert_unchanged(model, before)
    with pytest.raises(ValueError, match="no keras.layers.BatchNormalization"):
        _model().fit(x, y, epochs=1, verbose=0,
                     callbacks=[EMA(batch_norm="recalibrate", recalibrate_data=x)])
    recorder = Recorder()
    ema = EMA(decay=0.5, warmup_power=None, batch_norm="recalibrate", recalibrate_data=x)
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[recorder, ema])
    trainable = [i for i, v in enumerate(model.weights) if v.trainable]
    expected = _numpy_ema(recorder.batches, 0.5, None, 1.0, 0)
    _close([model.get_weights()[i] for i in trainable], [expected[i] for i in trainable])
    statistics = [np.array(v) for v in model.weights if "moving" in v.path]
    recalibrate_batch_norm(model, x)
    _close([np.array(v) for v in model.weights if "moving" in v.path], statistics)


@pytest.mark.skipif(not hasattr(keras.optimizers, "ScheduleFreeAdamW"),
                    reason="this Keras has no ScheduleFreeAdamW")
def test_ema_with_schedule_free_adamw():
    x, y = _data()
    model = _model(optimizer=keras.optimizers.ScheduleFreeAdamW(0.01))
    recorder, ema = Recorder(), EMA(decay=0.7)
    model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0, callbacks=[recorder, ema])
    _close(model.get_weights(), _numpy_ema(recorder.batches, 0.7, 2 / 3, 1.0, 0))


@pytest.mark.parametrize("arguments, error, match", [
    ({"decay": 1.0}, ValueError, "Received: decay=1.0"),
    ({"decay": -0.1}, ValueError, "Received: decay=-0.1"),
    ({"decay": "0.9"}, TypeError, "Received: decay='0.9'"),
    ({"warmup_power": 0}, ValueError, "Received: warmup_power=0"),
    ({"warmup_gamma": -1}, ValueError, "Received: warmup_gamma=-1"),
    ({"update_after_step": -1}, ValueError, "Received: update_after_step=-1"),
    ({"batch_norm": "freeze"}, ValueError, "Received: batch_norm='freeze'"),
    ({"final_weights": None}, ValueError, "Received: final_weights=None"),
])
def test_ema_refuses_bad_arguments(arguments, error, match):
    with pytest.raises(error, match=match):
        EMA(**arguments)


def test_ema_saved_mid_run_and_resumed_in_a_fresh_process_equals_one_run(tmp_path):
    x, y = _data()
    np.savez(tmp_path / "data.npz", x=x, y=y)

    def fit(model, ema, initial, epochs):
        model.fit(x, y, batch_size=4, epochs=epochs, initial_epoch=initial, shuffle=False,
                  verbose=0, callbacks=[ema])

    model, ema = _model(batch_norm=True, optimizer=keras.optimizers.Adam(0.01)), EMA(0.8)
    fit(model, ema, 0, 4)
    model_part = _model(batch_norm=True, optimizer=keras.optimizers.Adam(0.01))
    ema_part = EMA(0.8)
    fit(model_part, ema_part, 0, 2)  # ends holding the average: the state keeps the rest
    model_part.save(tmp_path / "part.keras")
    ema_part.save_state(tmp_path / "ema.npz")
    warnings.simplefilter("ignore")
    helpers.run_python(f"""
        import numpy as np, keras
        from keras_regkit.averaging import EMA
        data = np.load({str(tmp_path / "data.npz")!r})
        model = keras.saving.load_model({str(tmp_path / "part.keras")!r})
        ema = EMA(0.8).load_state({str(tmp_path / "ema.npz")!r})
        model.fit(data["x"], data["y"], batch_size=4, epochs=4, initial_epoch=2,
                  shuffle=False, verbose=0, callbacks=[ema])
        np.savez({str(tmp_path / "out.npz")!r}, *model.get_weights(), ema.updates,
                 *ema.last_weights)
    """)
    out = np.load(tmp_path / "out.npz")
    arrays = [out[f"arr_{i}"] for i in range(len(out.files))]
    count = len(model.weights)
    _close(arrays[:count], model.get_weights())
    assert int(arrays[count]) == ema.updates == 8
    _close(arrays[count + 1:], ema.last_weights)


def test_swa_and_ema_together_leave_no_guard_on_the_model():
    x, y = _data()
    model = _model()
    original = model.make_train_function() or model.train_function
    swa, ema = SWA(start_epoch=0, swa_learning_rate=0.01), EMA(decay=0.5)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[swa, ema])
    assert model.train_function is original
    assert swa.averaged_count == 2 and ema.updates == 2
