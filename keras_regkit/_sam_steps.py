"""One `SharpnessAwareMinimization` training step per backend.

`for_backend` picks the step once, when the model is constructed; each step is
a plain function of the model and what Keras's trainer passes to `train_step`.
The update rule is stated in `keras_regkit.SharpnessAwareMinimization`'s
docstring; the shared math is in `_sam_math`.
"""

import keras
from keras import ops

from keras_regkit import _layer_tree
from keras_regkit import _sam_math


def for_backend(backend):
    """The step for `backend`: `step(model, data)` or, on JAX, `step(model, state, data)`."""
    steps = {"tensorflow": tf_train_step, "jax": jax_train_step}
    if backend not in steps:
        raise ValueError(
            "`SharpnessAwareMinimization` needs the TensorFlow or JAX backend "
            "(set KERAS_BACKEND). "
            f"Received: keras.backend.backend()={backend!r}"
        )
    return steps[backend]


def build_network(model, x):
    """Builds `model.model` on symbolic inputs shaped as `x` (batch size unknown).

    As `fit` does on JAX or under a `tf.distribute` strategy; TensorFlow's
    plain `fit` waits for the step's first call, too late for the variables
    and state read before it. `ValueError`, before any update, if it fails.
    """
    network = model.model
    if network.built and all(layer.built for layer in _layer_tree.iter_layers(network)):
        model.built = True
        return

    def spec(tensor):
        if tensor is None:
            return None
        shape = (None,) + tuple(tensor.shape)[1:]
        return keras.KerasTensor(shape, keras.backend.standardize_dtype(tensor.dtype))

    inputs = keras.tree.map_structure(spec, x)
    was_built = network.built
    try:
        network(inputs, training=False)
    except Exception as error:
        network.built = was_built  # Keras marks it built after a failed attempt
        shapes = keras.tree.map_structure(lambda t: None if t is None else t.shape, inputs)
        raise ValueError(
            "`model` is not built, and could not be built on symbolic inputs "
            f"shaped as the first batch, {shapes} ({type(error).__name__} above). "
            "Build it before training: start a Sequential model with `keras.Input`, "
            "or call the model on a batch (`model(x[:1])`). "
            f"Received: model={network!r}"
        ) from error
    model.built = True


def _assert_divides_when_run(first, num_batch_splits):
    """TensorFlow graph with an unknown batch size: checked when run."""
    import tensorflow as tf

    tf.debugging.Assert(
        tf.equal(tf.math.floormod(tf.shape(first)[0], num_batch_splits), 0),
        [_sam_math.divides_message(num_batch_splits), tf.shape(first)[0]],
    )


def tf_train_step(model, data):
    import tensorflow as tf

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    build_network(model, x)
    variables = model.trainable_variables
    replica_context = tf.distribute.get_replica_context()
    all_reduce = (
        model.num_batch_splits is None
        and replica_context is not None
        and replica_context.num_replicas_in_sync > 1
    )
    summed, predictions, losses = None, [], []
    splits = _sam_math.batch_splits(
        x, y, sample_weight, model.num_batch_splits, _assert_divides_when_run
    )
    for xs, ys, ws in splits:
        # Snapshots (on TensorFlow, converting a variable does not copy it).
        state = [ops.copy(v) for v in model.non_trainable_variables]
        with tf.GradientTape() as tape:
            y_pred = model(xs, training=True)
            loss = model.compute_loss(
                x=xs, y=ys, y_pred=y_pred, sample_weight=ws, training=True
            )
            scaled = model.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        predictions.append(y_pred)
        losses.append(loss)
        if all_reduce:
            present = [g for g in grads if g is not None]
            reduced = iter(replica_context.all_reduce(tf.distribute.ReduceOp.SUM, present))
            grads = [None if g is None else next(reduced) for g in grads]
        weights = [ops.copy(v) for v in variables]
        perturbations = _sam_math.perturbations(
            grads, weights, model.rho, model.adaptive, model.eta
        )
        perturbed = [
            w if e is None else ops.add(w, e) for w, e in zip(weights, perturbations)
        ]
        mapping = list(zip(variables, perturbed))
        mapping += list(zip(model.non_trainable_variables, state))
        with tf.GradientTape() as tape:
            tape.watch(perturbed)
            with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
                y_pred_sam = model(xs, training=True)
                loss_sam = model.compute_loss(
                    x=xs, y=ys, y_pred=y_pred_sam, sample_weight=ws, training=True
                )
                scaled_sam = model.optimizer.scale_loss(loss_sam)
        summed = _sam_math.add_gradients(summed, tape.gradient(scaled_sam, perturbed))
    model.optimizer.apply(_sam_math.mean_gradients(summed, len(losses)), variables)
    _sam_math.record_loss(model, losses, x)
    return model.compute_metrics(x, y, _sam_math.concat(predictions), sample_weight)


def jax_train_step(model, state, data):
    import jax

    trainable, non_trainable, optimizer_values, metric_values = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    stateful = list(model.non_trainable_variables) + list(model.metrics_variables)
    num_non_trainable = len(model.non_trainable_variables)

    def loss_fn(trainable_values, stateful_values, xs, ys, ws):
        mapping = list(zip(model.trainable_variables, trainable_values))
        mapping += list(zip(stateful, stateful_values))
        mapping += list(zip(model.optimizer.variables, optimizer_values))
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            y_pred = model(xs, training=True)
            loss = model.compute_loss(
                x=xs, y=ys, y_pred=y_pred, sample_weight=ws, training=True
            )
            scaled = model.optimizer.scale_loss(loss)
        updated = []
        for variable, old in zip(stateful, stateful_values):
            new = scope.get_current_value(variable)
            updated.append(old if new is None else new)
        return scaled, (loss, y_pred, updated)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    current = list(non_trainable) + list(metric_values)
    summed, predictions, losses = None, [], []
    for xs, ys, ws in _sam_math.batch_splits(x, y, sample_weight, model.num_batch_splits):
        (_, (loss, y_pred, updated)), grads = grad_fn(trainable, current, xs, ys, ws)
        perturbations = _sam_math.perturbations(
            grads, trainable, model.rho, model.adaptive, model.eta
        )
        perturbed = [ops.add(w, e) for w, e in zip(trainable, perturbations)]
        # The second pass starts from the first pass's state; its updates are dropped.
        _, grads = grad_fn(perturbed, current, xs, ys, ws)
        current = updated
        predictions.append(y_pred)
        losses.append(loss)
        summed = _sam_math.add_gradients(summed, grads)
    trainable, optimizer_values = model.optimizer.stateless_apply(
        optimizer_values, _sam_math.mean_gradients(summed, len(losses)), trainable
    )
    non_trainable = current[:num_non_trainable]
    metric_values = current[num_non_trainable:]
    mapping = list(zip(model.metrics_variables, metric_values))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        _sam_math.record_loss(model, losses, x)
        logs = model.compute_metrics(x, y, _sam_math.concat(predictions), sample_weight)
    metric_values = [
        old if scope.get_current_value(v) is None else scope.get_current_value(v)
        for v, old in zip(model.metrics_variables, metric_values)
    ]
    return logs, (trainable, non_trainable, optimizer_values, metric_values)
