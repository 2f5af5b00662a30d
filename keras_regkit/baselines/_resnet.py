"""The residual CIFAR-10 network of the baseline: ResNet-20 (He et al., 2016)."""

import keras

from keras_regkit import _validation
from keras_regkit import regularizers
from keras_regkit.baselines._pipeline import CIFAR10_CLASSES
from keras_regkit.baselines._pipeline import CIFAR10_SHAPE

STAGE_FILTERS = (16, 32, 64)


def build_resnet(
    depth=20,
    num_classes=CIFAR10_CLASSES,
    input_shape=CIFAR10_SHAPE,
    *,
    l2=0.0,
    kernel_initializer="he_normal",
    name=None,
):
    """Builds He et al.'s CIFAR-10 ResNet of `depth = 6 n + 2` layers (uncompiled).

    The layout of the paper's Section 4.2, for `depth=20` (`n = 3`):

        Conv2D(16, 3) -> BN -> ReLU
        3 stages of n basic blocks, 16, 32 and 64 filters, on 32x32, 16x16
        and 8x8 maps (the first block of stages 2 and 3 has stride 2):
            x -> Conv2D(3x3) -> BN -> ReLU -> Conv2D(3x3) -> BN -> Add([shortcut, .]) -> ReLU
        GlobalAveragePooling2D -> Dense(10, softmax)

    Where a block changes the shape, the shortcut is a 1x1 convolution with
    stride 2 and BN (the paper's option B); elsewhere it is the identity. The
    paper's CIFAR nets use option A (zero-padded identity) instead, which
    needs no weights: this one has 1.1% more (274,042 instead of 271,098
    parameters for depth 20). Convolutions have no bias (BN follows each).

    Args:
        depth: Int, `6 n + 2` with `n >= 1`: 20, 32, 44, 56, 110. Defaults to `20`.
        num_classes: Size of the softmax output. Defaults to `10`.
        input_shape: Image shape. Defaults to `(32, 32, 3)`.
        l2: L2 coefficient of the loss penalty (`keras_regkit.L2`) on every
            convolution and the Dense kernel; `0` for none. Defaults to `0`.
        kernel_initializer: Initializer of every kernel (the paper's He normal).
        name: Model name. Defaults to `f"resnet{depth}"`.

    Returns:
        A functional `keras.Model` whose residual merges are `Add` layers
        named `stage{s}_block{b}_add`.

    Example:

    >>> model = build_resnet(20)
    >>> sum(isinstance(layer, keras.layers.Conv2D) for layer in model.layers)  # 1 + 3 * 3 * 2 + 2
    21
    >>> model.output_shape
    (None, 10)

    Reference: He, Zhang, Ren & Sun (2016), "Deep residual learning for image
    recognition", Section 4.2.
    """
    depth = _validation.positive_int(depth, "depth")
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"`depth` must be 6 n + 2 with n >= 1 (20, 32, 44, 56, 110). "
            f"Received: depth={depth!r}")
    l2 = _validation.non_negative(l2 or 0.0, "l2")
    num_classes = _validation.positive_int(num_classes, "num_classes")
    input_shape = tuple(int(d) for d in input_shape)
    blocks = (depth - 2) // 6

    def conv(filters, size, strides, name):
        return keras.layers.Conv2D(
            filters, size, strides=strides, padding="same", use_bias=False,
            kernel_initializer=kernel_initializer,
            kernel_regularizer=regularizers.L2(l2) if l2 else None,
            name=name)

    inputs = keras.Input(shape=input_shape, name="image")
    x = conv(STAGE_FILTERS[0], 3, 1, "stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, filters in enumerate(STAGE_FILTERS, start=1):
        for block in range(1, blocks + 1):
            prefix = f"stage{stage}_block{block}"
            strides = 2 if stage > 1 and block == 1 else 1
            shortcut = x
            if strides != 1 or x.shape[-1] != filters:
                shortcut = conv(filters, 1, strides, f"{prefix}_shortcut_conv")(x)
                shortcut = keras.layers.BatchNormalization(
                    name=f"{prefix}_shortcut_bn")(shortcut)
            y = conv(filters, 3, strides, f"{prefix}_conv1")(x)
            y = keras.layers.BatchNormalization(name=f"{prefix}_bn1")(y)
            y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
            y = conv(filters, 3, 1, f"{prefix}_conv2")(y)
            y = keras.layers.BatchNormalization(name=f"{prefix}_bn2")(y)
            x = keras.layers.Add(name=f"{prefix}_add")([shortcut, y])
            x = keras.layers.ReLU(name=f"{prefix}_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", kernel_initializer=kernel_initializer,
        kernel_regularizer=regularizers.L2(l2) if l2 else None,
        name="predictions")(x)
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}")
