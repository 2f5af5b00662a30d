"""`RegularizationMonitor`: the penalty beside the loss, and per-variable statistics.

Expected values are computed here with NumPy at the weights before each step.
"""

import csv
import json

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import L1
from keras_regkit import L2
from keras_regkit import MaxNorm
from tests.helpers import config_round_trip


def _data(n=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)).astype("float32"), rng.normal(size=(n, 2)).astype("float32")


def _model(seed=1):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(4, activation="tanh", name="hidden",
                           kernel_regularizer=L2(0.05), bias_regularizer=L1(0.02),
                           activity_regularizer=keras.regularizers.L2(0.01)),
        keras.layers.Dense(2, name="out", kernel_regularizer=L1(0.03)),
    ], name="net")


def _assert_split_is_exact(history, prefixes=("",)):
    for prefix in prefixes:
        loss = np.array(history[prefix + "loss"])
        parts = np.array(history[prefix + "data_loss"]) + np.array(history[prefix + "penalty"])
        np.testing.assert_allclose(parts, loss, rtol=1e-5)


def test_loss_is_data_loss_plus_penalty_every_epoch_with_an_uneven_last_batch():
    x, y = _data(10)
    model = _model()
    model.compile(keras.optimizers.Adam(0.05), "mse")
    history = model.fit(x, y, batch_size=4, epochs=3, verbose=0, validation_data=(x[:6], y[:6]),
                        callbacks=[keras_regkit.RegularizationMonitor(per_variable=False)])
    _assert_split_is_exact(history.history, ("", "val_"))
    assert all(p > 0 for p in history.history["penalty"])


def test_one_batch_epoch_against_numpy_at_the_weights_before_the_step():
    x, y = _data(8)
    model = _model()
    model.compile(keras.optimizers.SGD(0.1), "mse")
    w1, b1, w2, b2 = (np.asarray(v, "float64") for v in model.weights)
    hidden = np.tanh(x @ w1 + b1)
    data_loss = np.mean((hidden @ w2 + b2 - y) ** 2)
    activity = 0.01 * np.sum(hidden ** 2) / len(x)  # Keras averages it over the batch
    penalty = 0.05 * np.sum(w1 ** 2) + 0.02 * np.sum(np.abs(b1)) + 0.03 * np.sum(np.abs(w2)) + activity
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0,
                        callbacks=[keras_regkit.RegularizationMonitor(per_variable=False)])
    np.testing.assert_allclose(history.history["data_loss"][0], data_loss, rtol=1e-5)
    np.testing.assert_allclose(history.history["penalty"][0], penalty, rtol=1e-5)


def test_csv_logger_json_lines_png_and_tensorboard_see_the_split(tmp_path):
    x, y = _data(10)
    model = _model()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    csv_path = tmp_path / "log.csv"
    model.fit(x, y, batch_size=5, epochs=2, verbose=1, callbacks=[
        keras.callbacks.CSVLogger(str(csv_path)),  # before the monitor in the list
        keras_regkit.RegularizationMonitor(log_dir=tmp_path / "run", tensorboard_dir=tmp_path / "tb"),
        keras.callbacks.TensorBoard(str(tmp_path / "keras_tb")),
    ])
    with open(csv_path) as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2
    for row in rows:
        np.testing.assert_allclose(
            float(row["data_loss"]) + float(row["penalty"]), float(row["loss"]), rtol=1e-5)
    lines = (tmp_path / "run" / "regularization.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 3  # 2 epochs x (hidden kernel, hidden bias, out kernel)
    assert json.loads(lines[0])["variable"] == "net/hidden/kernel"
    assert (tmp_path / "run" / "regularization.png").stat().st_size > 0
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert list((tmp_path / "keras_tb" / "train").glob("events.out.tfevents.*"))


def test_progress_bar_shows_both_numbers(capsys):
    x, y = _data(10)
    model = _model()
    model.compile("adam", "mse")
    model.fit(x, y, batch_size=5, epochs=1, verbose=1,
              callbacks=[keras_regkit.RegularizationMonitor(per_variable=False)])
    out = capsys.readouterr().out
    assert "data_loss:" in out and "penalty:" in out


def test_a_model_without_penalties_logs_zero():
    x, y = _data(6)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[keras_regkit.RegularizationMonitor()])
    assert history.history["penalty"] == [0.0, 0.0]
    np.testing.assert_allclose(history.history["data_loss"], history.history["loss"], rtol=1e-6)


def test_subclassed_and_nested_models():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.inner = keras.Sequential([keras.layers.Dense(3, kernel_regularizer=L2(0.1))])
            self.out = keras.layers.Dense(2, kernel_regularizer=L1(0.1))

        def call(self, x):
            return self.out(self.inner(x))

    x, y = _data(10)
    model = Net()
    model.build((None, 3))  # built before the monitor comes: its state is locked
    model.compile("adam", "mse")
    history = model.fit(x, y, batch_size=3, epochs=2, verbose=0,
                        callbacks=[keras_regkit.RegularizationMonitor()])
    _assert_split_is_exact(history.history)
    assert all(p > 0 for p in history.history["penalty"])


@pytest.mark.tensorflow_only
def test_two_replicas_split_exactly_and_agree_with_one_device():
    import tensorflow as tf

    x, y = _data(16)
    results = []
    for strategy in (
        tf.distribute.OneDeviceStrategy("/cpu:0"),
        tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"],
                                       cross_device_ops=tf.distribute.ReductionToOneDevice()),
    ):
        with strategy.scope():
            model = _model()
            model.compile(keras.optimizers.SGD(0.05), "mse")
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False,
                            callbacks=[keras_regkit.RegularizationMonitor(per_variable=False)])
        _assert_split_is_exact(history.history)
        results.append(history.history)
    for key in ("loss", "data_loss", "penalty"):
        np.testing.assert_allclose(results[1][key], results[0][key], rtol=1e-4)


def test_decoupled_decay_is_not_in_the_penalty_and_its_share_is_logged():
    x, y = _data(8)
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")], name="net")
    weight_decay, learning_rate = 0.1, 0.01
    model.compile(keras_regkit.DecoupledWeightDecay(
        keras.optimizers.SGD(learning_rate), weight_decay=weight_decay), "mse")
    monitor = keras_regkit.RegularizationMonitor()
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[monitor])
    assert history.history["penalty"] == [0.0, 0.0]
    assert history.history["decay_share"] == [1.0, 1.0]
    (row,) = [r for r in monitor.rows if r["epoch"] == 1]
    assert row["variable"] == "net/d/kernel" and row["decayed"]  # the bias does not decay
    kernel = np.asarray(model.get_layer("d").kernel, "float64")
    # c = lr * weight_decay, so the decay stands for (weight_decay / 2) * ||w||^2.
    np.testing.assert_allclose(row["decay_penalty"], weight_decay / 2 * np.sum(kernel ** 2), rtol=1e-5)


def test_decay_share_against_both_sides():
    x, y = _data(8)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(
        2, name="d", kernel_regularizer=L1(0.05), kernel_initializer="ones",
        use_bias=False)], name="net")
    model.compile(keras_regkit.DecoupledWeightDecay(
        keras.optimizers.SGD(0.1), weight_decay=0.2), "mse")
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[keras_regkit.RegularizationMonitor()])
    # Measured at the end of the epoch, on the kernel after its step.
    kernel = np.asarray(model.get_layer("d").kernel, "float64")
    decay = 0.2 / 2 * np.sum(kernel ** 2)
    penalty = 0.05 * np.sum(np.abs(kernel))
    np.testing.assert_allclose(history.history["decay_share"][0], decay / (decay + penalty), rtol=1e-5)


def test_per_variable_numbers_against_numpy():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(
        2, name="d", kernel_regularizer=L2(0.5), kernel_constraint=MaxNorm(5.0))], name="net")
    kernel = np.array([[3.0, 0.0], [4.0, 0.0], [0.0, 1.0]], "float32")  # column norms 5 and 1
    model.get_layer("d").kernel.assign(kernel)
    (row,) = keras_regkit.monitor.variable_statistics(model, epoch=0)
    assert row["variable"] == "net/d/kernel" and row["layer"] == "d"
    np.testing.assert_allclose(row["penalty"], 0.5 * 26.0, rtol=1e-6)
    np.testing.assert_allclose(row["norm"], np.sqrt(26.0), rtol=1e-6)
    assert row["zero_fraction"] == pytest.approx(3 / 6)
    assert row["saturation"] == pytest.approx(1 / 2)  # the first unit is on the ball
    assert row["decayed"] is False and row["decay_penalty"] is None


def test_the_monitor_serializes_and_refuses_bad_arguments(tmp_path):
    monitor = keras_regkit.RegularizationMonitor(log_dir=tmp_path, per_variable=False)
    assert monitor.get_config() == {"log_dir": str(tmp_path), "tensorboard_dir": None,
                                    "per_variable": False}
    restored = config_round_trip(monitor)
    assert (restored.log_dir, restored.per_variable) == (str(tmp_path), False)
    with pytest.raises(TypeError, match="Received: log_dir=3"):
        keras_regkit.RegularizationMonitor(log_dir=3)
    with pytest.raises(TypeError, match="Received: log_dir=''"):  # fit would fail late
        keras_regkit.RegularizationMonitor(log_dir="")
    with pytest.raises(TypeError, match="Received: tensorboard_dir=''"):
        keras_regkit.RegularizationMonitor(tensorboard_dir="")
    with pytest.raises(TypeError, match="Received: per_variable='yes'"):
        keras_regkit.RegularizationMonitor(per_variable="yes")


def test_sharpness_aware_minimization_logs_the_first_pass_split():
    # SAM computes the loss twice a step; the second pass runs in a stateless
    # scope whose metric updates are dropped, so the split is the logged loss's.
    x, y = _data(20)
    model = keras_regkit.SharpnessAwareMinimization(_model(), rho=0.05)
    model.compile("adam", "mse")
    history = model.fit(x, y, batch_size=6, epochs=2, verbose=0,
                        callbacks=[keras_regkit.RegularizationMonitor(per_variable=False)])
    _assert_split_is_exact(history.history)
    assert all(p > 0 for p in history.history["penalty"])


def test_a_compute_loss_override_without_the_training_argument():
    class Old(keras.Sequential):  # a Keras 3.0-style override
        def compute_loss(self, x, y, y_pred, sample_weight):
            return keras.ops.mean(keras.ops.square(y_pred - y)) + keras.ops.sum(
                keras.ops.stack(self.losses))

    x, y = _data(8)
    model = Old([keras.Input((3,)), keras.layers.Dense(2, kernel_regularizer=L2(0.1))])
    model.compile("sgd")
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0,
                        callbacks=[keras_regkit.RegularizationMonitor(per_variable=False)])
    _assert_split_is_exact(history.history)
