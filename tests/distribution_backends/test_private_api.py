"""The private Keras/TensorFlow APIs in `keras_regkit._private_api` still behave.

Each test checks the behaviour the package relies on, not only that the name
exists, and fails with a message naming the function to update. Written
against Keras 3.15.1 and TensorFlow 2.21.0.
"""

import os

import keras
import numpy as np
import pytest

from keras_regkit import _private_api


def _changed(function, what):
    return (
        f"keras_regkit._private_api.{function}: {what} (Keras {keras.__version__}). "
        "The private API it reads changed; find the new way and update that function."
    )


def test_call_count_is_the_step_the_learning_rate_schedule_sees():
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([0], [1.0, 0.5])
    optimizer = keras.optimizers.SGD(schedule, gradient_accumulation_steps=2)
    kernel = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
    for calls in (1, 2, 3):
        optimizer.apply([np.zeros((2, 2), "float32")], [kernel])
        try:
            count = int(np.asarray(_private_api.call_count(optimizer)))
        except AttributeError as error:
            pytest.fail(_changed("call_count", f"`Optimizer._iterations` is gone ({error})"))
        assert count == calls, _changed("call_count", f"{count} after {calls} calls")
        # The public count is of weight updates, the schedule's is of calls.
        assert int(np.asarray(optimizer.iterations)) == calls // 2
        assert float(np.asarray(optimizer.learning_rate)) == 0.5, _changed(
            "call_count", "the learning-rate schedule no longer sees the call count")


def test_learning_rate_schedule_is_the_schedule_object():
    schedule = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=10)
    assert _private_api.learning_rate_schedule(keras.optimizers.Adam(schedule)) is schedule, (
        _changed("learning_rate_schedule", "`Optimizer._learning_rate` is not the schedule"))
    assert _private_api.learning_rate_schedule(keras.optimizers.Adam(0.1)) is None


def test_built_variables_and_the_known_variable_check():
    known = keras.Variable(np.ones((2, 2), "float32"), name="known")
    unknown = keras.Variable(np.ones((2, 2), "float32"), name="unknown")
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build([known])
    variables = _private_api.built_variables(optimizer)
    assert [id(v) for v in variables] == [id(known)], _changed(
        "built_variables", f"`Optimizer._trainable_variables` is {variables!r}")
    _private_api.check_variables_are_known(optimizer, [known])
    with pytest.raises(ValueError, match="unknown"):
        _private_api.check_variables_are_known(optimizer, [unknown])


def test_variable_index_is_the_build_position_and_refuses_unknown_variables():
    first = keras.Variable(np.ones((2, 2), "float32"), name="first")
    second = keras.Variable(np.ones((2,), "float32"), name="second")
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build([first, second])
    try:
        indices = [_private_api.variable_index(optimizer, v) for v in (first, second)]
    except AttributeError as error:
        pytest.fail(_changed("variable_index", f"`_get_variable_index` is gone ({error})"))
    assert indices == [0, 1], _changed("variable_index", f"build positions gave {indices}")
    with pytest.raises(KeyError):
        _private_api.variable_index(optimizer, keras.Variable(1.0, name="unknown"))


@pytest.mark.tensorflow_only
def test_variable_index_finds_a_mirrored_variable_from_every_replica():
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        first = keras.Variable(np.ones((2, 2), "float32"), name="first")
        second = keras.Variable(np.ones((2,), "float32"), name="second")
        optimizer = keras.optimizers.SGD(0.1)
        optimizer.build([first, second])
    forms = [second, second.value, *strategy.experimental_local_results(second.value)]
    indices = [_private_api.variable_index(optimizer, form) for form in forms]
    assert indices == [1] * len(forms), _changed(
        "variable_index", f"the forms of a mirrored variable gave {indices}")


def test_model_save_writes_the_assets_of_an_untracked_saveable_attribute(tmp_path):
    # What `_rule_store` relies on: Keras's saving walks `dir(model)` and calls
    # `save_assets` on every `KerasSaveable` it finds, tracked or not.
    import zipfile

    class Probe(keras.layers.Layer):
        def save_assets(self, dir_path):
            with open(os.path.join(dir_path, "probe.txt"), "w") as file:
                file.write("written")

    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    object.__setattr__(model, "_untracked_probe", Probe())  # as `_rule_store.store_of`
    assert not any(isinstance(layer, Probe) for layer in model.layers)
    path = tmp_path / "model.keras"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert "assets/_untracked_probe/probe.txt" in names, (
            "keras_regkit._rule_store: `model.save` no longer writes the assets of an "
            f"untracked `KerasSaveable` attribute (Keras {keras.__version__}); the "
            f"rules would be lost from `.keras` files. Archive: {names}")
        assert archive.read("assets/_untracked_probe/probe.txt") == b"written"


@pytest.mark.tensorflow_only
def test_distribution_strategy_is_the_one_the_optimizer_was_created_under():
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        optimizer = keras.optimizers.SGD(0.1)
    assert _private_api.distribution_strategy(optimizer) is strategy, _changed(
        "distribution_strategy", "`_distribution_strategy` is not the creation strategy")
    assert _private_api.distribution_strategy(keras.optimizers.SGD(0.1)) is (
        tf.distribute.get_strategy())


@pytest.mark.tensorflow_only
def test_maybe_merge_call_updates_a_mirrored_variable_once_per_step():
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
    with strategy.scope():
        counter = tf.Variable(0.0)

    def merged(distribution, increment):
        increment = distribution.experimental_local_results(increment)[0]
        distribution.extended.update(
            counter, lambda v, x: v.assign_add(x), args=(increment,), group=False)

    @tf.function
    def step():
        strategy.run(lambda: _private_api.maybe_merge_call(merged, strategy, tf.constant(1.0)))

    try:
        step()
        step()
    except AttributeError as error:
        pytest.fail(_changed("maybe_merge_call", f"the TensorFlow function is gone ({error})"))
    values = [float(v) for v in strategy.experimental_local_results(counter)]
    assert values == [2.0, 2.0], _changed(
        "maybe_merge_call", f"two steps on two replicas gave {values}, not once per step")
    # Without a strategy it simply calls `fn` with the default strategy.
    seen = []
    _private_api.maybe_merge_call(lambda s, x: seen.append((s, x)), tf.distribute.get_strategy(), 3)
    assert seen == [(tf.distribute.get_strategy(), 3)]


def test_keras_history_and_inbound_node_give_the_graph_edges():
    inputs = keras.Input((3,), name="x")
    dense = keras.layers.Dense(3, name="dense")
    first = dense(inputs)
    second = dense(first * 2.0 + first)  # the same layer called twice
    try:
        op, index = _private_api.keras_history(second)
        node = _private_api.inbound_node(op, index)
    except (AttributeError, IndexError, TypeError) as error:
        pytest.fail(_changed("keras_history/inbound_node", f"no longer readable ({error})"))
    assert op is dense and index == 1, _changed("keras_history", f"got ({op!r}, {index})")
    assert node.output_tensors[0] is second, _changed("inbound_node", "wrong output tensor")
    (parent,) = node.input_tensors
    producer, _ = _private_api.keras_history(parent)
    assert not isinstance(producer, keras.layers.Dense), _changed(
        "keras_history", "the parent of the second call should be the `+` operation")
    first_op, first_index = _private_api.keras_history(first)
    assert (first_op, first_index) == (dense, 0)
    assert _private_api.inbound_node(dense, 0).input_tensors[0] is inputs


def test_set_tracked_attribute_tracks_metrics_on_a_built_subclassed_model():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x)

    model = Net()
    model(np.zeros((1, 2), "float32"))  # built: Keras locks its tracker
    metric = keras.metrics.Mean(name="extra")
    try:
        _private_api.set_tracked_attribute(model, "extra_trackers", [metric])
    except (AttributeError, ValueError) as error:
        pytest.fail(_changed("set_tracked_attribute", f"the tracker refused ({error})"))
    assert model.extra_trackers == [metric]
    assert any(m is metric for m in model.metrics), _changed(
        "set_tracked_attribute", "the metric is not in `model.metrics`")
    # Still locked afterwards, as Keras left it, with Keras's message.
    with pytest.raises(ValueError, match="cannot add new elements of state"):
        model.late = keras.layers.Dense(1)


def test_compiled_loss_is_the_loss_without_the_penalties():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
        1, kernel_initializer="ones", kernel_regularizer=keras.regularizers.L2(0.5))])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((4, 2), "float32"), np.zeros((4, 1), "float32")
    y_pred = model(x)
    compiled = _private_api.compiled_loss(model)
    assert compiled is not None, (
        "keras_regkit._private_api.compiled_loss: `model._compile_loss` is gone; "
        "RegularizationMonitor's data_loss needs another way to the compiled loss.")
    total = float(model.compute_loss(x=x, y=y, y_pred=y_pred))
    data = float(compiled(y, y_pred, None))
    assert data == pytest.approx(4.0)  # (1 + 1)^2, the MSE alone
    assert total == pytest.approx(data + 0.5 * 2), (
        "keras_regkit._private_api.compiled_loss: compute_loss is no longer the "
        "compiled loss plus model.losses.")


def test_remove_tracked_attribute_takes_metrics_out_of_model_metrics():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    probe = keras.metrics.Mean(name="probe")
    _private_api.set_tracked_attribute(model, "_probe_metrics", [probe])
    assert "probe" in [m.name for m in model.metrics]
    _private_api.remove_tracked_attribute(model, "_probe_metrics")
    assert "probe" not in [m.name for m in model.metrics], (
        "keras_regkit._private_api.remove_tracked_attribute: `Layer._tracker.untrack` "
        "no longer takes a metric out of model.metrics (RegularizationMonitor's clean-up).")
    assert not hasattr(model, "_probe_metrics")
