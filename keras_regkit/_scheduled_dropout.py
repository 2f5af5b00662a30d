"""Dropout layers whose rate a schedule changes during training.

Their public home is `keras_regkit.schedules` (saved configs name it).

Keras's `Dropout` reads its `rate` as a Python float when the training step
is traced, and one built with rate 0 has no random generator: setting
`layer.rate` later changes nothing (keras-team/keras#3424, #8826, #17242).
These layers drop `rate * rate_factor`, with `rate_factor` a non-trainable
weight that the traced step reads like any other, so one traced step serves
every value. `schedulable_dropout` swaps Keras's dropout layers in a built
model for them.
"""

import warnings

import keras
from keras import ops

from keras_regkit import _graph
from keras_regkit import _validation
from keras_regkit.layers import _ScheduledRate


def _channels(inputs, data_format):
    """`(batch, 1, ..., 1, channels)` (or channels first) for spatial dropout."""
    shape = ops.shape(inputs)
    ones = (1,) * (len(inputs.shape) - 2)
    if data_format == "channels_first":
        return (shape[0], shape[1]) + ones
    return (shape[0],) + ones + (shape[-1],)


class _ScheduledMaps(_ScheduledRate):
    """What `ScheduledSpatialDropout2D/3D` share: `data_format`, and whole maps dropped."""

    def __init__(self, rate, data_format=None, seed=None, name=None, dtype=None):
        rate = _validation.rate(rate, "rate")
        seed = _validation.seed(seed, "seed")
        if data_format is not None:
            _validation.one_of(data_format, "data_format", ("channels_last", "channels_first"))
        super().__init__(rate, data_format=data_format, seed=seed, name=name, dtype=dtype)

    def _noise_shape(self, inputs):
        return _channels(inputs, self.data_format)


@keras.saving.register_keras_serializable(package="keras_regkit")
class ScheduledDropout(_ScheduledRate, keras.layers.Dropout):
    r"""`keras.layers.Dropout` whose rate a schedule can change during training.

    The same layer as `keras.layers.Dropout` (same arguments and config, and
    an instance of it), except that it drops `rate * rate_factor`, with
    `rate_factor` a non-trainable weight (`1.0` unless
    `keras_regkit.RegularizationSchedule` sets it). In training, with
    `r = rate * rate_factor`:

        output = inputs * keep / (1 - r),  keep ~ Bernoulli(1 - r)

    (broadcast along the axes where `noise_shape` is 1). In inference, and
    with `rate=0`, it is the identity. `rate_factor` is saved with the model.

    Args:
        rate: Float in `[0, 1)`, the rate at `rate_factor = 1`.
        noise_shape: As in `keras.layers.Dropout`: `None`, or a tuple with
            1 on the axes along which the mask is shared (`None` entries take
            the input's size).
        seed: Int or `None`, the seed of the layer's `SeedGenerator`.
        **kwargs: Base layer arguments (`name`, `dtype`).

    Example:

    >>> import numpy as np, keras_regkit
    >>> layer = keras_regkit.ScheduledDropout(0.5, seed=1)
    >>> x = np.ones((4, 1000), "float32")
    >>> out = np.asarray(layer(x, training=True))
    >>> sorted(set(out.ravel().tolist()))  # 0 or 1 / (1 - 0.5)
    [0.0, 2.0]
    >>> _ = layer.rate_factor.assign(0.0)  # what an early-dropout schedule does later
    >>> bool(np.all(np.asarray(layer(x, training=True)) == x))
    True
    """

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        rate = _validation.rate(rate, "rate")
        seed = _validation.seed(seed, "seed")
        super().__init__(rate, noise_shape=noise_shape, seed=seed, **kwargs)

    def _noise_shape(self, inputs):
        if self.noise_shape is None:
            return ops.shape(inputs)
        shape = ops.shape(inputs)
        return tuple(shape[i] if size is None else size
                     for i, size in enumerate(self.noise_shape))


@keras.saving.register_keras_serializable(package="keras_regkit")
class ScheduledSpatialDropout1D(_ScheduledRate, keras.layers.SpatialDropout1D):
    """`keras.layers.SpatialDropout1D` whose rate a schedule can change.

    Drops whole channels of `(batch, steps, channels)` inputs with rate
    `rate * rate_factor`, see `ScheduledDropout`.

    Args:
        rate: Float in `[0, 1)`, the rate at `rate_factor = 1`.
        seed: Int or `None`.
        name: Optional layer name.
        dtype: Optional dtype policy.
    """

    def __init__(self, rate, seed=None, name=None, dtype=None):
        rate = _validation.rate(rate, "rate")
        seed = _validation.seed(seed, "seed")
        super().__init__(rate, seed=seed, name=name, dtype=dtype)

    def _noise_shape(self, inputs):
        return _channels(inputs, "channels_last")


@keras.saving.register_keras_serializable(package="keras_regkit")
class ScheduledSpatialDropout2D(_ScheduledMaps, keras.layers.SpatialDropout2D):
    """`keras.layers.SpatialDropout2D` whose rate a schedule can change.

    Drops whole feature maps with rate `rate * rate_factor`, see
    `ScheduledDropout`.

    Args:
        rate: Float in `[0, 1)`, the rate at `rate_factor = 1`.
        data_format: `"channels_last"` or `"channels_first"`. Defaults to
            `keras.config.image_data_format()`.
        seed: Int or `None`.
        name: Optional layer name.
        dtype: Optional dtype policy.
    """


@keras.saving.register_keras_serializable(package="keras_regkit")
class ScheduledSpatialDropout3D(_ScheduledMaps, keras.layers.SpatialDropout3D):
    """`keras.layers.SpatialDropout3D` whose rate a schedule can change.

    Drops whole 3D feature maps with rate `rate * rate_factor`, see
    `ScheduledDropout`.

    Args:
        rate: Float in `[0, 1)`, the rate at `rate_factor = 1`.
        data_format: `"channels_last"` or `"channels_first"`. Defaults to
            `keras.config.image_data_format()`.
        seed: Int or `None`.
        name: Optional layer name.
        dtype: Optional dtype policy.
    """


# Keras's layer class -> ours (exact classes: a user's subclass is not swapped).
SWAPS = {
    keras.layers.Dropout: ScheduledDropout,
    keras.layers.SpatialDropout1D: ScheduledSpatialDropout1D,
    keras.layers.SpatialDropout2D: ScheduledSpatialDropout2D,
    keras.layers.SpatialDropout3D: ScheduledSpatialDropout3D,
}
SCHEDULED_DROPOUT = tuple(SWAPS.values())


def schedulable_dropout(model):
    """Returns a copy of `model` with its Keras dropout layers made schedulable.

    Each `keras.layers.Dropout` and `SpatialDropout1D/2D/3D` (those classes
    exactly) becomes the matching `ScheduledDropout` /
    `ScheduledSpatialDropout1D/2D/3D`, with the same config (rate, seed,
    `noise_shape`, `data_format`, name), so `RegularizationSchedule` can
    change its rate during training. Every other layer is copied with its
    weights and trainable flag, as `insert_dropout` copies them; the layers of
    nested Sequential/functional models too; every rule of the model
    (regularizers, constraints, their records) comes along. In inference the
    copy computes what the original does. If `model` was compiled, the copy
    is compiled from the same compile config (with a fresh optimizer).
    `model` is never modified.

    A Keras dropout layer with a non-zero rate inside a composite layer (a
    KerasHub block, a subclassed layer) is not in the layer graph, so it
    cannot be swapped: the call is refused, naming it. Warns if there is
    nothing to swap.

    Args:
        model: A built Sequential or functional `keras.Model`.

    Returns:
        A new model (Sequential stays Sequential).

    Raises:
        TypeError: `model` is not a Sequential/functional model.
        ValueError: an unbuilt model, or Keras dropout inside composite layers.

    Example:

    >>> import keras, keras_regkit
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...     keras.layers.Dropout(0.3, name="drop"), keras.layers.Dense(2)])
    >>> new = keras_regkit.schedulable_dropout(model)
    >>> layer = new.get_layer("drop")
    >>> type(layer).__name__, layer.rate, float(layer.rate_factor.numpy())
    ('ScheduledDropout', 0.3, 1.0)
    """
    levels = _graph.levels(model)
    hidden = [h for h in _graph.hidden_layers(levels)
              if type(h.layer) in SWAPS and h.layer.rate != 0]
    if hidden:
        raise ValueError(
            f"schedulable_dropout: {len(hidden)} Keras dropout layer(s) of "
            f"'{model.name}' sit inside composite layers: "
            f"{_graph.describe_hidden(hidden, rates=True)}. {_graph.HIDDEN_WHY} "
            "Nothing was changed. Build the owning layer with "
            "`keras_regkit.ScheduledDropout` in place of `keras.layers.Dropout`, "
            f"or with dropout 0. Received: model={model!r}")
    if not any(type(layer) in SWAPS for level in levels for layer in level.layers):
        warnings.warn(
            f"schedulable_dropout: '{model.name}' has no Keras Dropout or "
            "SpatialDropout1D/2D/3D layer; returning an unchanged copy.",
            UserWarning, stacklevel=2)
    return _graph.rebuild_model(levels, {}, _graph.remove_nothing, replace=_swap)


def _swap(layer):
    """The schedulable layer for a Keras dropout layer (`SWAPS`), else `None`."""
    new_class = SWAPS.get(type(layer))
    return None if new_class is None else new_class.from_config(layer.get_config())
