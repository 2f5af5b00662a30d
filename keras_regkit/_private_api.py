"""Every private Keras or TensorFlow API the package relies on.

Each private attribute or function is read in exactly one small function
below, because no public API gives the same thing. Two more places rely on
how Keras works inside without reading a private API here:

- `_layer_tree.sub_layers` finds the layers a composite layer owns in
  `vars(layer)` (Keras's `Layer.__setattr__` keeps attributes in the instance
  `__dict__`), skipping the attributes that refer to other layers without
  owning them, by their private names `_inbound_nodes`, `_outbound_nodes`
  and `_parent_path`;
- `_rule_store` reaches the `.keras` file only because Keras's saving
  (`saving_lib._save_state`) walks `dir(model)` and calls `save_assets` on
  every `KerasSaveable` it finds, also on the untracked attribute holding
  the `RuleStore`.

Everything else in the package uses public APIs only. Checked against Keras
3.15.1 and TensorFlow 2.21.0. `tests/distribution_backends/test_private_api.py` fails with a
message naming the function (or the reliance above) if one of them
disappears or changes behaviour in a later release.
"""

import keras


def call_count(optimizer):
    """How many times `optimizer.apply` ran: the step a learning-rate schedule sees.

    Private: `Optimizer._iterations`. The public `iterations` counts weight
    updates, `_iterations // gradient_accumulation_steps` with gradient
    accumulation, while Keras evaluates the learning-rate schedule at
    `_iterations` (`_get_current_learning_rate`).
    """
    return optimizer._iterations


def learning_rate_schedule(optimizer):
    """The optimizer's `LearningRateSchedule`, or `None` for a fixed learning rate.

    Private: `Optimizer._learning_rate`. The public `learning_rate` is the
    schedule's value at the current step, not the schedule.
    """
    schedule = getattr(optimizer, "_learning_rate", None)
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return schedule
    return None


def built_variables(optimizer):
    """The trainable variables `optimizer` was built with, in build order.

    Private: `Optimizer._trainable_variables`, what Keras's own `apply` uses
    when called without variables.
    """
    return optimizer._trainable_variables


def variable_index(optimizer, variable):
    """The position of `variable` among the variables `optimizer` was built with.

    Private: `Optimizer._get_variable_index`, how Keras's own optimizers find
    a variable's slots; it raises `KeyError` for an unknown variable. Its key
    (`_var_key`) is `id(variable)`, except on TensorFlow: there it is the
    `tf.Variable` under a `keras.Variable`, or the distributed variable a
    replica's component belongs to, so a mirrored variable is found from any
    replica whichever form `apply` is given.
    """
    return optimizer._get_variable_index(variable)


def check_variables_are_known(optimizer, variables):
    """Raises `ValueError` for a variable `optimizer` was not built with.

    Private: `Optimizer._check_variables_are_known`, Keras's own check in `apply`.
    """
    optimizer._check_variables_are_known(variables)


def distribution_strategy(optimizer):
    """The `tf.distribute.Strategy` `optimizer` was created under (TensorFlow).

    Private: the TensorFlow optimizer's `_distribution_strategy`, the strategy
    Keras's own weight decay updates through; the current strategy when absent.
    """
    import tensorflow as tf

    return getattr(optimizer, "_distribution_strategy", None) or tf.distribute.get_strategy()


def maybe_merge_call(fn, strategy, *args):
    """`fn(strategy, *args)` in the cross-replica context when the strategy needs it.

    Private: `tf.__internal__.distribute.interim.maybe_merge_call`, the call
    Keras's own TensorFlow optimizer updates through. The public
    `tf.distribute.get_replica_context().merge_call` is not the same: TensorFlow
    skips the merge call where a strategy runs without it (XLA-compiled steps
    on GPUs), and `merge_call` cannot run there.
    """
    import tensorflow as tf

    return tf.__internal__.distribute.interim.maybe_merge_call(fn, strategy, *args)


# --- the layer graph (dropout, DropPath and DropBlock placement) ---------------


def keras_history(tensor):
    """`(operation, node_index)` that produced the symbolic `tensor`.

    Private: `KerasTensor._keras_history`, what `keras.models.clone_model` and
    the functional API walk too; no public API exposes a tensor's producer.
    """
    history = tensor._keras_history
    return history[0], history[1]


def inbound_node(operation, node_index):
    """The `keras.Node` of `operation`'s call number `node_index`.

    Private: `Operation._inbound_nodes`. The node's `input_tensors` and
    `output_tensors` (public attributes of the node) give the graph's edges.
    """
    return operation._inbound_nodes[node_index]


# --- the regularization monitor --------------------------------------------------


def set_tracked_attribute(layer, name, value):
    """`setattr(layer, name, value)` with Keras tracking it, even on a built layer.

    Private: `Layer._tracker`. It refuses new state once locked (a subclassed
    model after `build()`), so it is unlocked for this one assignment and
    locked again; metrics set this way appear in `model.metrics`.
    """
    tracker = getattr(layer, "_tracker", None)
    locked = bool(getattr(tracker, "locked", False))
    if locked:
        tracker.unlock()
    try:
        setattr(layer, name, value)
    finally:
        if locked:
            tracker.lock()


def remove_tracked_attribute(layer, name):
    """Deletes `layer.<name>` and untracks what it holds: its metrics leave `model.metrics`.

    Private: `Layer._tracker.untrack`, the counterpart of
    `set_tracked_attribute`; Keras has no public way to remove a metric from
    a model.
    """
    values = vars(layer).get(name)
    if values is None:
        return
    for value in values:
        layer._tracker.untrack(value)
    delattr(layer, name)


def compiled_loss(model):
    """The `CompileLoss` of `model.compile` (the loss without `model.losses`), or `None`.

    Private: `Trainer._compile_loss`, what Keras's own `compute_loss` calls
    before adding the penalties; no public API gives the loss without them.
    """
    return getattr(model, "_compile_loss", None)
