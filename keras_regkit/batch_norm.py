"""Batch-norm statistics recomputed for the weights a model holds now.

Averaged weights (`SWA`, `EMA`) were never trained with their own batch-norm
statistics: `recalibrate_batch_norm` measures them again in one pass over the
data, as PyTorch's `torch.optim.swa_utils.update_bn` does.
"""

import itertools

import keras
import numpy as np
from keras import ops

from keras_regkit import _layer_tree
from keras_regkit import _validation


def _batch_norm_layers(model):
    """Every `keras.layers.BatchNormalization` under `model`, nested ones included."""
    return [layer for layer in _layer_tree.iter_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization)]


def _is_array(value):
    return isinstance(value, np.ndarray) or (
        hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, type))


def _is_dataset(data):
    return type(data).__module__.startswith("tensorflow") and hasattr(data, "cardinality")


def _is_array_data(data):
    """NumPy arrays (or tensors), and `(x, y)` tuples or dicts of them: cut into batches."""
    if isinstance(data, (tuple, dict)):
        leaves = keras.tree.flatten(data)
        return bool(leaves) and all(_is_array(leaf) for leaf in leaves)
    return _is_array(data)


def _check_data(data, name="data", reiterable=False):
    """Raises `TypeError` for `data` that `recalibrate_batch_norm` cannot read.

    With `reiterable=True` (data a callback uses once per epoch), an iterator
    such as a generator, which one pass uses up, is refused too.
    """
    if _is_dataset(data) or isinstance(data, keras.utils.PyDataset) or _is_array_data(data):
        return data
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError(
            f"`{name}` must be a tf.data.Dataset, a keras.utils.PyDataset, a NumPy "
            "array, a tuple `(x, y)` of arrays, or an iterable of batches. "
            f"Received: {name}={data!r} of type {type(data).__name__}")
    if reiterable and iter(data) is data:
        raise TypeError(
            f"`{name}` is an iterator ({type(data).__name__}), which the first pass "
            "would use up: pass a list of batches, a tf.data.Dataset or arrays. "
            f"Received: {name}={data!r}")
    return data


def _batches(data, batch_size, steps, name):
    """An iterator over the batches of `data`."""
    _check_data(data, name)
    if _is_dataset(data):
        import tensorflow as tf

        if steps is None and int(data.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
            raise ValueError(
                f"`{name}` is an infinite tf.data.Dataset (it repeats): pass `steps`, "
                f"the number of batches to use. Received: {name}={data!r}, steps=None")
        return iter(data) if keras.backend.backend() == "tensorflow" else data.as_numpy_iterator()
    if isinstance(data, keras.utils.PyDataset):
        count = data.num_batches
        if count is None and steps is None:
            raise ValueError(
                f"`{name}` is a PyDataset without a length: pass `steps`. "
                f"Received: {name}={data!r}, steps=None")
        indices = itertools.count() if count is None else range(count)
        return (data[i] for i in indices)
    if _is_array_data(data):
        size = int(keras.tree.flatten(data)[0].shape[0])
        return (keras.tree.map_structure(lambda a: a[start:start + batch_size], data)
                for start in range(0, size, batch_size))
    return iter(data)


def _batch_size(x):
    leaves = [leaf for leaf in keras.tree.flatten(x) if leaf is not None]
    if not leaves or not _is_array(leaves[0]) or len(leaves[0].shape) == 0:
        raise ValueError(
            "Each batch must be `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)` with "
            f"`x` an array (or a structure of arrays) of rank >= 1. Received: x={x!r}")
    return int(leaves[0].shape[0])


def recalibrate_batch_norm(model, data, steps=None, batch_size=32):
    """Recomputes the moving statistics of every batch-norm layer over `data`.

    After weight averaging (`SWA`, `EMA`), a `BatchNormalization` layer's
    `moving_mean` and `moving_variance` belong to none of the weights the
    model holds. This function measures them again for the current weights:
    it resets them, then runs the model on each batch `b = 1, 2, ..., B` of
    `data` in training mode and sets

        moving_mean     = sum_b n_b * mean_b     / sum_b n_b
        moving_variance = sum_b n_b * variance_b / sum_b n_b

    where `mean_b` and `variance_b` are the statistics the layer normalizes
    batch `b` with in training (per channel over all other axes; the
    variance is the biased one, as Keras's own moving variance) and `n_b` is
    the number of examples in batch `b`. With equal batches this is PyTorch's
    `update_bn` (a cumulative mean of the batch statistics, `momentum=None`),
    and `moving_mean` is exactly the mean of the layer's input over the data;
    `moving_variance` is the mean within-batch variance, not the variance over
    the whole data set. It is done by setting each layer's `momentum` to
    `seen / (seen + n_b)` before batch `b`: Keras's own update then computes
    the running mean above. The passes run eagerly, with the other layers in
    training mode too (dropout on, as during training).

    Every `BatchNormalization` under `model` is recalibrated: those in nested
    models and composite layers, and frozen ones (`trainable=False`, made
    trainable for the pass). Everything else is restored: each layer's
    `momentum` and `trainable`, its variables' `trainable` flags, and every
    other non-trainable variable of the model (random-seed states included,
    so the call does not shift a later dropout mask). If a batch raises,
    the moving statistics are restored too. A layer called more than once
    per forward pass (shared) gets the mean over all its calls; a layer that
    no batch reaches keeps its statistics reset to 0 and 1.

    Args:
        model: A built `keras.Model`.
        data: A `tf.data.Dataset` or a `keras.utils.PyDataset` of batches; a
            NumPy array `x`, a dict of arrays, or a tuple `(x,)`, `(x, y)` or
            `(x, y, sample_weight)` of arrays (cut into batches of
            `batch_size`); or any other iterable of batches (a list, a
            generator). Each batch is `x`, `(x,)`, `(x, y)` or
            `(x, y, sample_weight)`; only `x` is used.
        steps: The number of batches to use, or `None` (the default) for all.
            Required for an infinite (repeated) dataset.
        batch_size: The batch size for array data. Defaults to `32`.

    Returns:
        The number of batches used.

    Raises:
        ValueError: if `model` has no `BatchNormalization` layer, one that is
            not built or uses `renorm`, or `data` yields no batch. Nothing is
            changed then.

    Example:

    >>> import numpy as np, keras, keras_regkit
    >>> model = keras.Sequential([keras.Input((1,)), keras.layers.BatchNormalization()])
    >>> keras_regkit.recalibrate_batch_norm(model, np.array([[1.0], [3.0], [5.0], [7.0]]),
    ...                                     batch_size=2)
    2
    >>> layer = model.layers[0]  # batches [1, 3] and [5, 7]: means 2 and 6, variances 1 and 1
    >>> float(layer.moving_mean[0]), float(layer.moving_variance[0])
    (4.0, 1.0)

    Reference: Izmailov et al. (2018), Section 3.2; PyTorch
    `torch.optim.swa_utils.update_bn`.
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            f"`model` must be a keras.Model (or layer). Received: model={model!r} "
            f"of type {type(model).__name__}")
    steps = _validation.optional_positive_int(steps, "steps")
    batch_size = _validation.positive_int(batch_size, "batch_size")
    layers = _batch_norm_layers(model)
    _check_layers(model, layers)
    batches = _batches(data, batch_size, steps, "data")
    if steps is not None:
        batches = itertools.islice(batches, steps)
    try:
        first = next(batches)
    except StopIteration:
        raise ValueError(
            f"`data` yields no batch: there is nothing to measure the statistics on. "
            f"Received: data={data!r}") from None
    return _recalibrate(model, layers, itertools.chain([first], batches))


def _check_layers(model, layers):
    """Raises `ValueError` unless `layers` (the model's batch-norm layers) can be recalibrated."""
    if not layers:
        raise ValueError(
            f"Model '{model.name}' has no keras.layers.BatchNormalization layer: there "
            "are no batch-norm statistics to recalibrate.")
    for layer in layers:
        if not layer.built:
            raise ValueError(
                f"BatchNormalization layer '{layer.name}' is not built: build or call "
                "the model before recalibrating it.")
        if layer.renorm:
            raise ValueError(
                f"BatchNormalization layer '{layer.name}' uses `renorm=True`, whose "
                "moving statistics are kept as a standard deviation: it cannot be "
                "recalibrated. Received: renorm=True")


def _recalibrate(model, layers, batches):
    statistics = {id(v) for layer in layers for v in (layer.moving_mean, layer.moving_variance)}
    saved_state = [(v, ops.copy(v.value)) for v in model.non_trainable_variables]
    settings = [(layer, layer.momentum, layer.trainable, [(v, v.trainable) for v in layer.weights])
                for layer in layers]
    succeeded = False
    count = 0
    try:
        for layer in layers:
            layer.trainable = True
            mean, variance = layer.moving_mean, layer.moving_variance
            mean.assign(ops.zeros(mean.shape, mean.dtype))
            variance.assign(ops.ones(variance.shape, variance.dtype))
        seen = 0
        for batch in batches:
            x, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
            size = _batch_size(x)
            if size == 0:
                continue
            for layer in layers:
                layer.momentum = seen / (seen + size)
            model(x, training=True)
            seen += size
            count += 1
        if not count:
            raise ValueError("`data` yields only empty batches: there is nothing to "
                             "measure the statistics on.")
        succeeded = True
    finally:
        for layer, momentum, trainable, flags in settings:
            layer.momentum = momentum
            layer.trainable = trainable
            for variable, flag in flags:
                variable.trainable = flag
        for variable, value in saved_state:
            if not succeeded or id(variable) not in statistics:
                variable.assign(value)
    return count

