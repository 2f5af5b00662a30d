"""Regularization layers of our own: `DropPath` and `DropBlock2D`.

`DropPath` is stochastic depth (Huang et al., 2016): it zeroes a whole
residual branch for some samples of a batch. `DropBlock2D` is DropBlock
(Ghiasi et al., 2018): it zeroes contiguous blocks of feature maps.
`DropBlockSchedule` ramps DropBlock's rate up linearly during training, as
the paper does. Both layers are identities in inference and draw their
randomness from a `keras.random.SeedGenerator`, so a `seed` makes them
reproducible; the math is `keras.ops`, so they run on every Keras backend.

To put them into a built residual network (ResNet, MobileNetV2,
EfficientNet, ConvNeXt, your own), see `keras_regkit.residual`.

Reference: Huang et al., "Deep networks with stochastic depth", ECCV 2016;
Ghiasi et al., "DropBlock: a regularization method for convolutional
networks", NeurIPS 2018.
"""

import numbers

import keras
from keras import ops

from keras_regkit import _layer_tree
from keras_regkit import _validation

__all__ = ["DropBlock2D", "DropBlockSchedule", "DropPath"]

DATA_FORMATS = ("channels_last", "channels_first")


class _ScheduledRate:
    """A rate a schedule can scale: what `DropPath` and the scheduled dropout layers share.

    Goes before the Keras class in the MRO; the layer defines `_noise_shape`.

    In training, each entry of a noise tensor (of `_noise_shape(inputs)`,
    broadcast over the input) is kept with probability `1 - r`, where
    `r = rate * rate_factor`, and the kept entries are scaled by `1 / (1 - r)`:

        output = inputs * keep / (1 - r),  keep ~ Bernoulli(1 - r)

    With `rate_factor = 1` this is the Keras layer's rule; with
    `rate_factor = 0` the output is exactly the input. `r` must stay below
    1 (`RegularizationSchedule` checks it).
    """

    def build(self, input_shape):
        self.rate_factor = self.add_weight(
            shape=(), initializer="ones", trainable=False, autocast=False,
            name="rate_factor")

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        rate = self.rate * ops.convert_to_tensor(self.rate_factor, "float32")
        noise = keras.random.uniform(self._noise_shape(inputs), seed=self.seed_generator)
        keep = ops.cast(ops.greater_equal(noise, rate), "float32") / (1.0 - rate)
        return inputs * ops.cast(keep, inputs.dtype)


@keras.saving.register_keras_serializable(package="keras_regkit")
class DropPath(_ScheduledRate, keras.layers.Layer):
    r"""Stochastic depth: drops a residual branch for whole samples.

    Put it on the residual branch of a block, just before the branch is added
    to the shortcut (`x + DropPath(rate)(branch(x))`). In training, each
    sample's input is zeroed with probability `rate`, independently of the
    other samples, and the samples kept are scaled by `1 / (1 - rate)`, so the
    expected output equals the input:

        output[i] = inputs[i] * keep[i] * (1 / (1 - rate)),  keep[i] ~ Bernoulli(1 - rate)

    The rate actually used is `rate * rate_factor`, where `rate_factor` is a
    non-trainable weight, `1.0` unless `keras_regkit.RegularizationSchedule`
    changes it during training (early or late stochastic depth, a ramp): the
    schedule scales each layer's own rate, so the per-depth rates of
    `insert_droppath` keep their ratios. A `.keras` file saved before the
    layer had this weight loads with `rate_factor = 1`.

    In inference (and with `rate=0`) it returns its input unchanged. This is
    timm's `DropPath` and the "per sample" stochastic depth of later work;
    Huang et al. dropped a block for the whole mini-batch, which for a batch
    of one is the same thing. `keras_regkit.insert_droppath` puts these layers
    into a built network with rates rising linearly with depth.

    Args:
        rate: Float in `[0, 1)`, the probability of dropping a sample's branch.
        seed: Int or `None`, the seed of the layer's `SeedGenerator`.
        **kwargs: Base layer arguments (`name`, `dtype`).

    Example:

    >>> import numpy as np, keras_regkit
    >>> layer = keras_regkit.DropPath(rate=0.5, seed=1)
    >>> x = np.ones((16, 3), "float32")
    >>> bool(np.all(np.asarray(layer(x)) == x))  # inference: the identity
    True
    >>> out = np.asarray(layer(x, training=True))
    >>> sorted(set(out.ravel().tolist()))  # whole rows: 0 or 1 / (1 - 0.5)
    [0.0, 2.0]

    Reference: Huang et al. (2016), "Deep networks with stochastic depth".
    """

    def __init__(self, rate, seed=None, **kwargs):
        rate = _validation.rate(rate, "rate")
        seed = _validation.seed(seed, "seed")
        super().__init__(**kwargs)
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def _noise_shape(self, inputs):
        # One draw per sample: a (batch, 1, ..., 1) factor on the (large) input.
        return (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)

    def load_own_variables(self, store):
        # A file saved before `rate_factor` existed holds no variable for this
        # layer: it keeps the factor 1, the rate it was saved with.
        if len(store.keys()) == 0:
            return
        super().load_own_variables(store)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_regkit")
class DropBlock2D(keras.layers.Layer):
    r"""DropBlock: drops contiguous blocks of each feature map.

    Neighbouring activations of a feature map are correlated, so dropping
    single ones barely regularizes a convnet; DropBlock drops whole
    `block_h x block_w` blocks instead (squares with an int `block_size`). In
    training, for each sample and each channel separately (the paper's
    Algorithm 1), on an `H x W` map:

    1. The block is clipped to the map on each axis, `block_h = min(block_h,
       H)` and `block_w = min(block_w, W)`; block seeds are drawn with
       probability `gamma` at the positions where a whole block fits inside
       the map (the valid region, `(H - block_h + 1) x (W - block_w + 1)`),
       with

           gamma = rate * H * W / (block_h * block_w * (H - block_h + 1) * (W - block_w + 1))

       (the paper's formula, for square maps `rate / block_size**2 *
       feat_size**2 / (feat_size - block_size + 1)**2`);
    2. each seed zeroes the block around it (the block it is the top-left
       corner of here; the paper centres it on the seed, the same thing
       shifted, since seeds lie only where a whole block fits);
    3. the result is rescaled by `count(mask) / count_ones(mask)` over the
       whole batch, so the mean activation is kept.

    `gamma` makes the expected dropped fraction `rate` when blocks do not
    overlap; overlapping blocks make it somewhat smaller (the paper's
    approximation). A map smaller than the block degrades gracefully through
    the clipping: on a map of at most `block_h x block_w` a whole channel is
    dropped with probability `rate`, as in `SpatialDropout2D`. Spatial sizes
    unknown when the model is built (`keras.Input((None, None, C))`, batches
    of several image sizes) are clipped and drawn the same way when the step
    runs, also under `jit_compile`.

    The rate actually used is `rate * rate_factor`, where `rate_factor` is a
    non-trainable weight, `1.0` unless `DropBlockSchedule` ramps it up during
    training (or `keras_regkit.RegularizationSchedule` sets it from another
    schedule). In inference (and with `rate=0`) the layer is the identity.

    Args:
        rate: Float in `[0, 1)`, the target fraction of units to drop (`1 -
            keep_prob` in the paper).
        block_size: Int `>= 1`, the side of a dropped square, or a pair
            `(height, width)` of them for a rectangle (kept as a list, as
            JSON gives it back). Defaults to `7` (the paper's choice for
            ResNet-50 on ImageNet).
        data_format: `"channels_last"` (batch, H, W, C) or `"channels_first"`
            (batch, C, H, W). Defaults to `keras.config.image_data_format()`.
        seed: Int or `None`, the seed of the layer's `SeedGenerator`.
        **kwargs: Base layer arguments (`name`, `dtype`).

    Example:

    >>> import numpy as np, keras_regkit
    >>> layer = keras_regkit.DropBlock2D(rate=0.2, block_size=3, seed=0)
    >>> layer.gamma(8, 8)  # 0.2 * 8 * 8 / (3 * 3 * 6 * 6)
    0.0395...
    >>> x = np.ones((1, 8, 8, 1), "float32")
    >>> bool(np.all(np.asarray(layer(x)) == x))  # inference: the identity
    True
    >>> out = np.asarray(layer(x, training=True))
    >>> kept = out > 0
    >>> bool(np.allclose(out[kept], out.size / kept.sum()))  # renormalized
    True
    >>> wide = keras_regkit.DropBlock2D(rate=0.2, block_size=(2, 9))
    >>> wide.block_size
    [2, 9]
    >>> wide.gamma(4, 6)  # clipped to 2 x 6: 0.2 * 4 * 6 / (2 * 6 * 3 * 1)
    0.1333...

    Reference: Ghiasi, Lin & Le (2018), "DropBlock: a regularization method
    for convolutional networks".
    """

    def __init__(self, rate, block_size=7, data_format=None, seed=None, **kwargs):
        rate = _validation.rate(rate, "rate")
        block_size = validate_block_size(block_size)
        if data_format is None:
            data_format = keras.config.image_data_format()
        data_format = _validation.one_of(data_format, "data_format", DATA_FORMATS)
        seed = _validation.seed(seed, "seed")
        super().__init__(**kwargs)
        self.rate = rate
        self.block_size = block_size
        self.data_format = data_format
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        self.rate_factor = self.add_weight(
            shape=(), initializer="ones", trainable=False, name="rate_factor"
        )

    def _sizes(self):
        """The block's `(height, width)` before clipping."""
        if isinstance(self.block_size, int):
            return self.block_size, self.block_size
        return tuple(self.block_size)

    def _block(self, height, width):
        """The block's `(block_h, block_w)` clipped to an `height x width` map.

        Python ints on an axis whose size is known when the layer is called,
        tensors on one whose size is known only when the step runs.
        """
        return tuple(min(size, extent) if isinstance(extent, int)
                     else ops.minimum(size, extent)
                     for size, extent in zip(self._sizes(), (height, width)))

    def gamma(self, height, width):
        """The seed probability `gamma` at `rate` for an `height x width` map."""
        height = _validation.positive_int(height, "height")
        width = _validation.positive_int(width, "width")
        block_h, block_w = self._block(height, width)
        return self.rate * height * width / (
            block_h * block_w * (height - block_h + 1) * (width - block_w + 1))

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        spatial = (1, 2) if self.data_format == "channels_last" else (2, 3)
        shape = ops.shape(inputs)  # ints where known, tensors where not
        height, width = shape[spatial[0]], shape[spatial[1]]
        block_h, block_w = self._block(height, width)
        valid_h, valid_w = height - block_h + 1, width - block_w + 1
        # The pooling window must be static: the clipped block where the size
        # is known, else the whole block. A whole block on a smaller map drops
        # what the clipped one does, as seeds then lie in the first row
        # (column) only and every window below (right of) it reaches back to it.
        window = tuple(block if isinstance(block, int) else size
                       for block, size in zip((block_h, block_w), self._sizes()))
        rate = self.rate * ops.convert_to_tensor(self.rate_factor, "float32")
        # The formula in float32 (its products of ints could overflow int32).
        h, w, b_h, b_w, v_h, v_w = (ops.cast(v, "float32") for v in (
            height, width, block_h, block_w, valid_h, valid_w))
        gamma = rate * h * w / (b_h * b_w * v_h * v_w)
        # Seeds only in the valid region: gamma there, 0 elsewhere.
        where = [1, 1, 1, 1]
        where[spatial[0]] = -1
        in_rows = ops.reshape(ops.less(ops.arange(height), valid_h), where)
        where[spatial[0]], where[spatial[1]] = 1, -1
        in_cols = ops.reshape(ops.less(ops.arange(width), valid_w), where)
        gamma = gamma * ops.cast(ops.logical_and(in_rows, in_cols), "float32")
        noise = keras.random.uniform(shape, seed=self.seed_generator)
        seeds = ops.cast(ops.less(noise, gamma), "float32")
        padding = [[0, 0]] * 4
        padding[spatial[0]] = [window[0] - 1, 0]
        padding[spatial[1]] = [window[1] - 1, 0]
        # A unit is dropped if a seed lies within window_h - 1 rows above and
        # window_w - 1 columns to the left of it: a max over that window.
        dropped = ops.max_pool(
            ops.pad(seeds, padding), window, strides=1,
            padding="valid", data_format=self.data_format)
        mask = 1.0 - dropped
        scale = ops.cast(ops.size(mask), "float32") / ops.maximum(ops.sum(mask), 1.0)
        return inputs * ops.cast(mask * scale, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "rate": self.rate,
            "block_size": self.block_size,
            "data_format": self.data_format,
            "seed": self.seed,
        }


def validate_block_size(value, name="block_size"):
    """Returns `block_size` as an int `>= 1` or a list `[height, width]` of them.

    A tuple becomes a list, so a config round-trips through JSON exactly.
    """
    expected = f"`{name}` must be an int >= 1 or a pair (height, width) of ints >= 1"
    received = f"Received: {name}={value!r}"
    if isinstance(value, (list, tuple)):
        sizes = list(value)
        if len(sizes) != 2:
            raise ValueError(f"{expected}. {received}")
    else:
        sizes = [value]
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, numbers.Integral):
            raise TypeError(f"{expected}, not {type(size).__name__}. {received}")
        if size < 1:
            raise ValueError(f"{expected}. {received}")
    sizes = [int(size) for size in sizes]
    return sizes if isinstance(value, (list, tuple)) else sizes[0]


@keras.saving.register_keras_serializable(package="keras_regkit")
class DropBlockSchedule(keras.callbacks.Callback):
    r"""Ramps the rate of every `DropBlock2D` of the model up linearly in training.

    Ghiasi et al. found DropBlock works best when its rate starts at zero and
    rises linearly to its target. At the start of epoch `e` (counting from 0,
    as `fit` does, so `initial_epoch` resumes the ramp) every `DropBlock2D`
    layer of the model, nested models and composite layers included, gets

        rate_factor = min(1, (e + 1) / epochs)

    so it drops `rate * rate_factor`: a ramp that reaches the full rate in the
    last ramp epoch and stays there. The factor is the layer's `rate_factor`
    weight, so it is saved with the model. It changes once per epoch, which
    works the same on every backend (JAX reads variables at epoch starts).

    Args:
        epochs: Int `>= 1`, the length of the ramp in epochs, or `None` (the
            default) for the `epochs` of the `fit` call.

    Raises:
        ValueError: at the start of `fit`, if the model has no `DropBlock2D`
            layer (the schedule would do nothing).

    Example:

    >>> import numpy as np, keras, keras_regkit
    >>> inputs = keras.Input((8, 8, 2))
    >>> x = keras_regkit.DropBlock2D(0.1, block_size=3, name="drop")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(x)))
    >>> model.compile("sgd", "mse")
    >>> factors = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs:
    ...     print(float(model.get_layer("drop").rate_factor.numpy())))
    >>> _ = model.fit(np.ones((4, 8, 8, 2)), np.ones((4, 1)), epochs=4, verbose=0,
    ...               callbacks=[keras_regkit.DropBlockSchedule(), factors])
    0.25
    0.5
    0.75
    1.0

    Reference: Ghiasi et al. (2018), Section 3 ("Scheduled DropBlock").
    """

    def __init__(self, epochs=None):
        epochs = _validation.optional_positive_int(epochs, "epochs")
        super().__init__()
        self.epochs = epochs
        self._layers = []
        self._ramp = None

    def on_train_begin(self, logs=None):
        self._layers = [layer for layer in _layer_tree.iter_layers(self.model)
                        if isinstance(layer, DropBlock2D)]
        if not self._layers:
            raise ValueError(
                f"DropBlockSchedule: the model '{self.model.name}' has no "
                "DropBlock2D layer, so the schedule would do nothing. Add one "
                "(keras_regkit.insert_dropblock puts them into residual "
                "networks) or drop the callback.")
        self._ramp = self.epochs or self.params.get("epochs") or 1

    def on_epoch_begin(self, epoch, logs=None):
        factor = min(1.0, (epoch + 1) / self._ramp)
        for layer in self._layers:
            if layer.built:
                layer.rate_factor.assign(factor)

    def get_config(self):
        return {"epochs": self.epochs}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
