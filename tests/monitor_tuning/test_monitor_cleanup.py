"""`RegularizationMonitor` leaves the model as it found it: after `fit`, after a raise, and around a user's own `compute_loss`."""

import keras
import numpy as np
import pytest

import keras_regkit
from tests.monitor_tuning.test_monitor import _assert_split_is_exact
from tests.monitor_tuning.test_monitor import _data
from tests.monitor_tuning.test_monitor import _model


def _compiled_model():
    model = _model()
    model.compile(keras.optimizers.SGD(0.05), "mse")
    return model


def _fit(model, callbacks=(), epochs=1):
    x, y = _data(8)
    return model.fit(x, y, batch_size=4, epochs=epochs, verbose=0, validation_data=(x, y),
                     callbacks=list(callbacks)).history


def _assert_clean(model, metric_names):
    assert "compute_loss" not in vars(model)
    assert [m.name for m in model.metrics] == metric_names
    assert model.train_function is None and model.test_function is None  # they retrace


class _RaiseAtBatch(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        raise RuntimeError("stopped by the test")


def test_after_fit_the_model_is_as_before_and_a_later_fit_logs_no_penalty():
    model = _compiled_model()
    _fit(model)  # builds the metrics Keras adds itself
    names = [m.name for m in model.metrics]
    history = _fit(model, [keras_regkit.RegularizationMonitor(per_variable=False)], epochs=2)
    _assert_split_is_exact(history, ("", "val_"))
    _assert_clean(model, names)
    later = _fit(model)
    assert not {"penalty", "data_loss", "val_penalty", "val_data_loss"} & set(later)
    assert "penalty" not in model.evaluate(*_data(8), verbose=0, return_dict=True)


def test_a_fit_that_raises_is_undone_by_the_next_monitor():
    model = _compiled_model()
    with pytest.raises(RuntimeError, match="stopped by the test"):
        _fit(model, [keras_regkit.RegularizationMonitor(per_variable=False), _RaiseAtBatch()])
    assert "compute_loss" in vars(model)  # Keras skipped on_train_end: the split is left
    history = _fit(model, [keras_regkit.RegularizationMonitor(per_variable=False)], epochs=2)
    _assert_split_is_exact(history, ("", "val_"))
    assert all(p > 0 for p in history["penalty"])
    _assert_clean(model, ["loss"])
    assert "penalty" not in _fit(model)


def test_restore_undoes_a_fit_that_raised():
    model = _compiled_model()
    monitor = keras_regkit.RegularizationMonitor(per_variable=False)
    with pytest.raises(RuntimeError):
        _fit(model, [monitor, _RaiseAtBatch()])
    monitor.restore()
    _assert_clean(model, ["loss"])
    monitor.restore()  # nothing installed: nothing happens
    assert "penalty" not in _fit(model)


def test_a_users_own_instance_compute_loss_survives():
    model = _compiled_model()
    calls = []
    class_compute_loss = model.compute_loss

    def own_compute_loss(x=None, y=None, y_pred=None, sample_weight=None, training=True):
        calls.append(training)
        return class_compute_loss(x, y, y_pred, sample_weight, training=training)

    model.compute_loss = own_compute_loss
    history = _fit(model, [keras_regkit.RegularizationMonitor(per_variable=False)])
    _assert_split_is_exact(history, ("", "val_"))
    assert calls  # the split wrapped the user's function
    assert vars(model)["compute_loss"] is own_compute_loss
    assert "penalty" not in _fit(model)
    # After a raise, the next monitor's fit puts the user's function back too.
    with pytest.raises(RuntimeError):
        _fit(model, [keras_regkit.RegularizationMonitor(per_variable=False), _RaiseAtBatch()])
    _fit(model, [keras_regkit.RegularizationMonitor(per_variable=False)])
    assert vars(model)["compute_loss"] is own_compute_loss


def test_evaluate_given_the_monitor_splits_and_cleans_up():
    model = _compiled_model()
    x, y = _data(8)
    logs = model.evaluate(x, y, verbose=0, return_dict=True,
                          callbacks=[keras_regkit.RegularizationMonitor(per_variable=False)])
    np.testing.assert_allclose(logs["data_loss"] + logs["penalty"], logs["loss"], rtol=1e-5)
    assert logs["penalty"] > 0
    assert "compute_loss" not in vars(model)
    assert "penalty" not in model.evaluate(x, y, verbose=0, return_dict=True)
