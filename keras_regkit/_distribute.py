"""Running `DecoupledWeightDecay`'s updates once per training step, on any backend.

Under `tf.distribute` an update written in a replica's step would run once per
replica; these helpers take the path Keras takes for its own `weight_decay`
instead. On other backends, and without a strategy, they simply run it.
"""

import contextlib

import keras
from keras import ops

from keras_regkit import _private_api


def outside_functions():
    """`tf.init_scope()` on TensorFlow (leave any `tf.function` being traced)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.init_scope()
    return contextlib.nullcontext()


def update_variables(optimizer, updates, scalars):
    """Runs `fn(variable, *scalars)` for each `(variable, fn)` in `updates`.

    On the TensorFlow backend this is the path Keras takes for its own
    `weight_decay` (`TFOptimizer._apply_weight_decay`): in a replica context it
    merges into the cross-replica context and updates every mirrored copy with
    `strategy.extended.update`, so the update happens once per step, not once
    per replica. The scalars (learning rate, decay strength, gates) are the
    same on every replica; the first replica's values are used, as
    `keras.optimizers.LossScaleOptimizer` does for its finite check.
    """
    if not updates:
        return
    scalars = tuple(ops.convert_to_tensor(s, "float32") for s in scalars)
    if keras.backend.backend() != "tensorflow":
        for variable, fn in updates:
            fn(variable, *scalars)
        return

    def merged(distribution, scalars):
        scalars = tuple(distribution.experimental_local_results(s)[0] for s in scalars)
        for variable, fn in updates:
            if isinstance(variable, keras.Variable):
                variable = variable.value  # the tf.Variable (or mirrored one)
            distribution.extended.update(variable, fn, args=scalars, group=False)

    strategy = _private_api.distribution_strategy(optimizer)
    _private_api.maybe_merge_call(merged, strategy, scalars)


def unscaled_replica_loss(loss):
    """`loss` times the replicas in sync of the current `tf.distribute` strategy.

    Under a strategy, Keras's `compute_loss` scales each replica's loss by
    `1 / num_replicas_in_sync` (so that the summed gradients are those of the
    global batch) and feeds its `loss` metric the unscaled value; this undoes
    the scaling the same way. Without a strategy, or on another backend,
    `loss` is returned as it is.
    """
    if keras.backend.backend() != "tensorflow":
        return loss
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas == 1:
        return loss
    return ops.multiply(loss, ops.cast(replicas, loss.dtype))
