"""The networks of the CIFAR-10 baseline: the VGG-like convnet, each variant's compiled model.

What a `Variant` (plain data) asks for is built here: its network, its
optimizer, its `fit` callbacks. `build_variant` takes a name or a `Variant`
and resolves it once; the other builders take the `Variant` itself.
"""

import keras

from keras_regkit import _validation
from keras_regkit import averaging
from keras_regkit import constraints
from keras_regkit import optimizers
from keras_regkit import regularizers
from keras_regkit import residual
from keras_regkit import sam
from keras_regkit._deprecation import renamed_keyword
from keras_regkit.baselines._pipeline import CIFAR10_CLASSES
from keras_regkit.baselines._pipeline import CIFAR10_SHAPE
from keras_regkit.baselines._resnet import build_resnet
from keras_regkit.baselines._settings import DEFAULT_RUN
from keras_regkit.baselines._settings import DEFAULT_VARIANT
from keras_regkit.baselines._settings import MAX_BLOCKS
from keras_regkit.baselines._variants import L2_RENAMED
from keras_regkit.baselines._variants import get_variant
from keras_regkit.dropout import insert_dropout
from keras_regkit.layers import DropBlockSchedule


def _kernel_regularizer(l2, l1):
    if l2 and l1:
        return regularizers.ElasticNet(l1=l1, l2=l2)
    if l2:
        return regularizers.L2(l2)
    if l1:
        return regularizers.L1(l1)
    return None


@renamed_keyword("weight_decay", "l2", reason=L2_RENAMED)
def build_vgg_like(
    l2=1e-4,
    dropout=True,
    max_norm=None,
    batch_norm=False,
    blocks=2,
    num_classes=CIFAR10_CLASSES,
    input_shape=CIFAR10_SHAPE,
    *,
    l1=0.0,
    regularize_dense=False,
    kernel_initializer="he_uniform",
    name="vgg_like",
):
    """Builds the VGG-like CIFAR-10 convnet (uncompiled).

    Layout, for `blocks=2` (each block doubles the filters: 32, 64, 128, ...):

        Conv2D(32, 3, same, relu) x 2 -> MaxPooling2D -> Dropout(0.25)
        Conv2D(64, 3, same, relu) x 2 -> MaxPooling2D -> Dropout(0.25)
        Flatten -> Dense(256, relu) -> Dropout(0.5) -> Dense(10, softmax)

    The convolution kernels carry the loss penalty
    `keras_regkit.regularizers.L2(l2)` (`ElasticNet(l1, l2)` when `l1 > 0`
    too, `L1(l1)` alone when `l2` is 0); with `max_norm=c` every kernel
    (convolutions and dense layers) carries `keras_regkit.constraints.MaxNorm(c)`;
    `batch_norm=True` puts a BatchNormalization after each convolution. The
    dropout layers are placed by
    `keras_regkit.dropout.insert_dropout(model, policy="vgg")` on the
    dropout-free network.

    Args:
        l2: L2 coefficient of the loss penalty on the convolution kernels
            (`0` or `None`: no L2). Defaults to `1e-4`. Its old name
            `weight_decay=` still works, with a `DeprecationWarning` (in
            Keras, `weight_decay` means decoupled decay).
        dropout: Whether to insert the VGG dropout layers.
        max_norm: Max-norm bound `c` on every kernel, or `None`.
        batch_norm: BatchNormalization after each convolution.
        blocks: Number of convolution blocks, 1 to 5. Defaults to `2`.
        num_classes: Size of the softmax output. Defaults to `10`.
        input_shape: Image shape. Defaults to `(32, 32, 3)`.
        l1: L1 coefficient on the convolution kernels (elastic net together
            with `l2`). Defaults to `0`.
        regularize_dense: Also put the penalty on the hidden Dense kernel.
        kernel_initializer: Initializer of every kernel.
        name: Model name.

    Returns:
        A functional `keras.Model`.

    Example:

    >>> model = build_vgg_like(l2=1e-4, dropout=False)
    >>> [layer.name for layer in model.layers][1:4]
    ['block1_conv1', 'block1_conv2', 'block1_pool']
    >>> model.get_layer("block1_conv1").kernel_regularizer.get_config()
    {'l2': 0.0001}
    """
    l2 = _validation.non_negative(l2 or 0.0, "l2")
    l1 = _validation.non_negative(l1 or 0.0, "l1")
    if max_norm is not None:
        max_norm = _validation.positive(max_norm, "max_norm")
    blocks = _validation.positive_int_at_most(blocks, "blocks", MAX_BLOCKS)
    num_classes = _validation.positive_int(num_classes, "num_classes")
    input_shape = tuple(int(d) for d in input_shape)

    def regularizer():
        return _kernel_regularizer(l2, l1)

    def constraint():
        return None if max_norm is None else constraints.MaxNorm(max_norm)

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for block in range(1, blocks + 1):
        filters = 32 * 2 ** (block - 1)
        for index in (1, 2):
            x = keras.layers.Conv2D(
                filters,
                3,
                padding="same",
                activation="relu",
                kernel_initializer=kernel_initializer,
                kernel_regularizer=regularizer(),
                kernel_constraint=constraint(),
                name=f"block{block}_conv{index}",
            )(x)
            if batch_norm:
                x = keras.layers.BatchNormalization(name=f"block{block}_bn{index}")(x)
        x = keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(
        256,
        activation="relu",
        kernel_initializer=kernel_initializer,
        kernel_regularizer=regularizer() if regularize_dense else None,
        kernel_constraint=constraint(),
        name="fc",
    )(x)
    outputs = keras.layers.Dense(
        num_classes,
        activation="softmax",
        kernel_constraint=constraint(),
        name="predictions",
    )(x)
    model = keras.Model(inputs, outputs, name=name)
    if dropout:
        model = insert_dropout(model, policy="vgg")
    return model


def build_network(variant, *, batch_norm=False, blocks=2):
    """The (uncompiled) network of the `Variant` `variant`, regularized."""
    if variant.architecture == "resnet":
        model = build_resnet(20, l2=variant.l2)
        if variant.droppath:
            model = residual.insert_droppath(model, max_rate=variant.droppath)
        if variant.dropblock:
            model = residual.insert_dropblock(
                model, variant.dropblock, block_size=variant.dropblock_size)
        return model
    return build_vgg_like(
        l2=variant.l2,
        l1=variant.l1,
        regularize_dense=variant.regularize_dense,
        dropout=variant.dropout,
        max_norm=variant.max_norm,
        batch_norm=batch_norm,
        blocks=blocks,
    )


def build_optimizer(variant, *, batch_size=None, num_examples=None, epochs=None):
    """Adam, wrapped in `DecoupledWeightDecay` for the decoupled variants.

    The wrapper's `weight_decay` is `variant.decoupled_weight_decay(...)` for
    the run's global `batch_size`, `num_examples` and `epochs` (missing ones:
    `_settings.DEFAULT_RUN`).
    """
    adam = keras.optimizers.Adam(learning_rate=variant.learning_rate)
    if not variant.decoupled:
        return adam
    return optimizers.DecoupledWeightDecay(
        adam,
        weight_decay=variant.decoupled_weight_decay(
            batch_size=batch_size, num_examples=num_examples, epochs=epochs
        ),
        decay_scaling="schedule",
        l1=variant.decoupled_l1,
    )


def build_callbacks(variant, *, epochs=None, train_data=None, validation_data=None):
    """The `fit` callbacks the `Variant` `variant` needs.

    `DropBlockSchedule` for DropBlock; `SWA` from epoch `int(swa_start *
    epochs)` (recalibrating batch norm on `train_data`), `EMA`, both
    evaluating on `validation_data` each epoch (`val_swa_*`, `val_ema_*`).
    """
    callbacks = [DropBlockSchedule()] if variant.dropblock else []
    if variant.swa_start:
        start = int(variant.swa_start * (epochs or DEFAULT_RUN["epochs"]))
        callbacks.append(averaging.SWA(start_epoch=start, recalibrate_data=train_data,
                                       validation_data=validation_data))
    if variant.ema_decay:
        callbacks.append(averaging.EMA(decay=variant.ema_decay,
                                       validation_data=validation_data))
    return callbacks


def build_variant(
    variant=DEFAULT_VARIANT,
    *,
    batch_norm=False,
    blocks=2,
    batch_size=None,
    num_examples=None,
    epochs=None,
):
    """Builds and compiles the network of `variant` (call under a strategy scope).

    Loss: sparse categorical cross-entropy; metric: accuracy; optimizer:
    `build_optimizer(variant, ...)` (Adam 1e-3, or its decoupled wrapper, whose
    normalized decay uses the run's global `batch_size`, `num_examples` and
    `epochs`, or `_settings.DEFAULT_RUN` for the missing ones). The `sam` variants
    return the network wrapped in `keras_regkit.SharpnessAwareMinimization`.

    Example:

    >>> model = build_variant("l2")
    >>> type(model.optimizer).__name__, model.get_layer("fc").kernel_regularizer.l2
    ('Adam', 0.001)
    """
    variant = get_variant(variant)
    model = build_network(variant, batch_norm=batch_norm, blocks=blocks)
    if variant.sam_rho:
        model = sam.SharpnessAwareMinimization(model, rho=variant.sam_rho)
    model.compile(
        optimizer=build_optimizer(
            variant, batch_size=batch_size, num_examples=num_examples, epochs=epochs
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model

