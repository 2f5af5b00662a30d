"""`RegularizationMonitor` at the edges: huge penalties, own train steps, missing extras, bad folders."""

import sys
import warnings

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import L2
from tests.monitor_tuning.test_monitor import _data
from tests.monitor_tuning.test_monitor import _model


def _huge_penalty_model(factor):
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(
        2, kernel_regularizer=L2(factor), kernel_initializer="ones", name="d")], name="net")


@pytest.mark.parametrize("factor", [1e12, 1e30])
def test_data_loss_is_exact_beside_a_huge_penalty(factor):
    x, y = _data(8)
    model = _huge_penalty_model(factor)
    model.compile(keras.optimizers.SGD(0.0), "mse")  # the weights stay put
    w, b = (np.asarray(v, "float64") for v in model.weights)
    data_loss = np.mean((x @ w + b - y) ** 2)  # written here, at the weights before the step
    assert data_loss < 10 and factor * np.sum(w ** 2) > 1e6 * data_loss
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0, validation_data=(x, y),
                        callbacks=[keras_regkit.RegularizationMonitor(per_variable=False)])
    for prefix in ("", "val_"):
        np.testing.assert_allclose(history.history[prefix + "data_loss"][0], data_loss, rtol=1e-5)
        np.testing.assert_allclose(history.history[prefix + "penalty"][0],
                                   factor * np.sum(w ** 2), rtol=1e-5)


def test_per_output_loss_metrics_are_counted_once():
    # The data loss is the compiled loss computed a second time: its per-output
    # loss metrics must not advance twice.
    x, y = _data(8)

    def two_outputs():
        keras.utils.set_random_seed(2)
        inputs = keras.Input((3,))
        hidden = keras.layers.Dense(4, kernel_regularizer=L2(0.1))(inputs)
        model = keras.Model(inputs, {"a": keras.layers.Dense(2, name="a")(hidden),
                                     "b": keras.layers.Dense(1, name="b")(hidden)})
        model.compile(keras.optimizers.SGD(0.05), {"a": "mse", "b": "mae"},
                      loss_weights={"a": 1.0, "b": 0.5})
        return model

    targets = {"a": y, "b": y[:, :1]}
    histories = []
    for callbacks in ([], [keras_regkit.RegularizationMonitor(per_variable=False)]):
        model = two_outputs()
        histories.append(model.fit(x, targets, batch_size=4, epochs=2, verbose=0,
                                   callbacks=callbacks).history)
        # a mean of repeated values hides a double update; its count does not
        (metric,) = [m for m in model.metrics if m.name == "a_loss"]
        (count,) = [v for v in metric.variables if "count" in v.name]
        assert float(count) == len(x)  # the last epoch's samples, once each
    for key in histories[0]:
        np.testing.assert_allclose(histories[1][key], histories[0][key], rtol=1e-6)
    np.testing.assert_allclose(
        histories[1]["data_loss"], np.array(histories[1]["a_loss"])
        + 0.5 * np.array(histories[1]["b_loss"]), rtol=1e-5)


# ---------------------------------------------------------------- own train_step


class OwnStep(keras.Sequential):
    """Computes its loss itself, without `compute_loss` (TensorFlow)."""

    def train_step(self, data):
        import tensorflow as tf

        x, y = data
        with tf.GradientTape() as tape:
            loss = keras.ops.mean(keras.ops.square(self(x, training=True) - y))
            loss = loss + keras.ops.sum(self.losses)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return {"loss": loss}


class OwnStepWithComputeLoss(keras.Sequential):
    """The Keras guide's custom step: through `compute_loss` (TensorFlow)."""

    def train_step(self, data):
        import tensorflow as tf

        x, y = data
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return self.compute_metrics(x, y, y_pred)


def _monitor_warnings(model, fits=1):
    x, y = _data(12)
    model.compile("sgd", "mse")
    monitor = keras_regkit.RegularizationMonitor(per_variable=False)
    counts, histories = [], []
    for _ in range(fits):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            histories.append(model.fit(x, y, batch_size=4, epochs=3, verbose=0,
                                       callbacks=[monitor]).history)
        counts.append([str(w.message) for w in caught
                       if issubclass(w.category, UserWarning) and "RegularizationMonitor" in str(w.message)])
    return counts, histories


def _layers():
    return [keras.Input((3,)), keras.layers.Dense(2, kernel_regularizer=L2(0.1))]


@pytest.mark.tensorflow_only
def test_an_own_train_step_without_compute_loss_warns_once_per_fit():
    counts, histories = _monitor_warnings(OwnStep(_layers(), name="own_step"), fits=2)
    assert [len(c) for c in counts] == [1, 1]
    assert "'own_step'" in counts[0][0] and "OwnStep" in counts[0][0]
    assert "compute_loss" in counts[0][0] and "penalty" in counts[0][0]
    assert "penalty" not in histories[0]


@pytest.mark.parametrize("kind", ["sequential", "sam", "own_step_with_compute_loss"])
def test_no_warning_where_the_split_is_logged(kind):
    if kind == "sequential":
        model = keras.Sequential(_layers())
    elif kind == "sam":
        model = keras_regkit.SharpnessAwareMinimization(keras.Sequential(_layers()))
    else:
        if keras.backend.backend() != "tensorflow":
            pytest.skip("the custom step uses tf.GradientTape")
        model = OwnStepWithComputeLoss(_layers())
    counts, histories = _monitor_warnings(model, fits=2)
    assert counts == [[], []]
    assert all(p > 0 for p in histories[1]["penalty"])


# ---------------------------------------------------------------- extras and folders


class _StepCounter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.batches += 1


def _fit_with(monitor):
    x, y = _data(8)
    model = _model()
    model.compile(keras.optimizers.SGD(0.1), "mse")
    before = [np.array(w) for w in model.get_weights()]
    counter = _StepCounter()
    try:
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[monitor, counter])
    finally:
        assert counter.batches == 0  # raised before the first step
        for got, expected in zip(model.get_weights(), before):
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("module, kwargs", [
    ("matplotlib", {"log_dir": "run"}),
    ("tensorboard", {"tensorboard_dir": "tb"}),
])
def test_a_missing_extra_is_named_before_training(tmp_path, monkeypatch, module, kwargs):
    kwargs = {key: str(tmp_path / value) for key, value in kwargs.items()}
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    (argument, path), = kwargs.items()
    with pytest.raises(ImportError, match=rf"(?s){module}.*pip install keras_regkit\[monitor\]"
                                          rf".*Received: {argument}="):
        _fit_with(keras_regkit.RegularizationMonitor(**kwargs))
    assert not (tmp_path / "run").exists() and not (tmp_path / "tb").exists()


def test_matplotlib_is_not_needed_without_the_plot(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    x, y = _data(8)
    model = _model()
    model.compile("sgd", "mse")
    monitor = keras_regkit.RegularizationMonitor(log_dir=tmp_path / "run", per_variable=False)
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[monitor])
    assert "penalty" in history.history


@pytest.mark.parametrize("argument", ["log_dir", "tensorboard_dir"])
def test_a_folder_that_cannot_be_made_is_named_before_training(tmp_path, argument):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    path = str(blocker / "run")  # a folder under a regular file: even root cannot make it
    with pytest.raises(ValueError, match=rf"`{argument}`.*Received: {argument}='{path}'"):
        _fit_with(keras_regkit.RegularizationMonitor(**{argument: path}))
