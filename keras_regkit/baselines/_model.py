"""The VGG-like network and the named regularization variants of the CIFAR-10 baseline."""

import dataclasses

import keras

from keras_regkit import _validation
from keras_regkit import constraints
from keras_regkit import dropout as dropout_lib
from keras_regkit import optimizers
from keras_regkit import regularizers
from keras_regkit import residual
from keras_regkit import sam
from keras_regkit.baselines._data import CIFAR10_CLASSES
from keras_regkit.baselines._data import CIFAR10_SHAPE
from keras_regkit.baselines._resnet import build_resnet
from keras_regkit.layers import DropBlockSchedule


MAX_BLOCKS = 5  # 32x32 halves five times down to 1x1


def _kernel_regularizer(weight_decay, l1):
    if weight_decay and l1:
        return regularizers.ElasticNet(l1=l1, l2=weight_decay)
    if weight_decay:
        return regularizers.L2(weight_decay)
    if l1:
        return regularizers.L1(l1)
    return None


def build_vgg_like(
    weight_decay=1e-4,
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

    The convolution kernels carry `keras_regkit.regularizers.L2(weight_decay)`
    (`ElasticNet(l1, weight_decay)` when `l1 > 0` too, `L1(l1)` alone when
    `weight_decay` is 0); with `max_norm=c` every kernel (convolutions and
    dense layers) carries `keras_regkit.constraints.MaxNorm(c)`;
    `batch_norm=True` puts a BatchNormalization after each convolution. The
    dropout layers are placed by
    `keras_regkit.dropout.insert_dropout(model, policy="vgg")` on the
    dropout-free network.

    Args:
        weight_decay: L2 coefficient on the convolution kernels (`0` or
            `None`: no L2). Defaults to `1e-4`.
        dropout: Whether to insert the VGG dropout layers.
        max_norm: Max-norm bound `c` on every kernel, or `None`.
        batch_norm: BatchNormalization after each convolution.
        blocks: Number of convolution blocks, 1 to 5. Defaults to `2`.
        num_classes: Size of the softmax output. Defaults to `10`.
        input_shape: Image shape. Defaults to `(32, 32, 3)`.
        l1: L1 coefficient on the convolution kernels (elastic net together
            with `weight_decay`). Defaults to `0`.
        regularize_dense: Also put the penalty on the hidden Dense kernel.
        kernel_initializer: Initializer of every kernel.
        name: Model name.

    Returns:
        A functional `keras.Model`.

    Example:

    >>> model = build_vgg_like(weight_decay=1e-4, dropout=False)
    >>> [layer.name for layer in model.layers][1:4]
    ['block1_conv1', 'block1_conv2', 'block1_pool']
    >>> model.get_layer("block1_conv1").kernel_regularizer.get_config()
    {'l2': 0.0001}
    """
    weight_decay = _validation.non_negative(weight_decay or 0.0, "weight_decay")
    l1 = _validation.non_negative(l1 or 0.0, "l1")
    if max_norm is not None:
        max_norm = _validation.positive(max_norm, "max_norm")
    blocks = _validation.positive_int(blocks, "blocks")
    if blocks > MAX_BLOCKS:
        raise ValueError(
            f"`blocks` must be between 1 and {MAX_BLOCKS}. Received: blocks={blocks!r}"
        )
    num_classes = _validation.positive_int(num_classes, "num_classes")
    input_shape = tuple(int(d) for d in input_shape)

    def regularizer():
        return _kernel_regularizer(weight_decay, l1)

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
        model = dropout_lib.insert_dropout(model, policy="vgg")
    return model


# The run geometry assumed when the decoupled decay is computed without one:
# the full CIFAR-10 training set, batch 128, 50 epochs.
DEFAULT_RUN = {"batch_size": 128, "num_examples": 50000, "epochs": 50}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One named regularization set-up of the baseline.

    Attributes:
        name: The variant's name (`--variant`).
        description: One line for tables and `--help`.
        weight_decay: L2 coefficient in the loss, on the convolution kernels.
        l1: L1 coefficient in the loss, on the convolution kernels.
        regularize_dense: Also put the `weight_decay`/`l1` penalty on the
            hidden Dense kernel.
        dropout: Whether the VGG dropout layers are inserted.
        max_norm: Max-norm bound on every kernel, or `None`.
        normalized_weight_decay: `lambda_norm` of Loshchilov & Hutter's
            normalized decoupled weight decay (`0`: none). The optimizer is
            then `DecoupledWeightDecay(Adam, weight_decay=lam,
            decay_scaling="schedule")` with
            `lam = normalized_weight_decay(lambda_norm, batch, examples, epochs)`
            for the run: `w <- w - lam * w` each step (constant learning rate).
        decoupled_l1: Strength of the wrapper's proximal L1 step
            (`w <- sign(w) max(|w| - lr * l1, 0)` each step).
        learning_rate: Adam's learning rate.
        architecture: `"vgg"` (the VGG-like net; `batch_norm` and `blocks`
            apply) or `"resnet"` (ResNet-20, `build_resnet`; BN throughout,
            `weight_decay` on every kernel, the VGG-only fields unused).
        droppath: `max_rate` of `keras_regkit.insert_droppath` on the ResNet
            (rates rising linearly to it with depth); `0`: none.
        dropblock: `rate` of `keras_regkit.insert_dropblock` on the ResNet's
            last two stages (and shortcuts), ramped up over the run by
            `keras_regkit.DropBlockSchedule`; `0`: none.
        dropblock_size: `block_size` of those DropBlock2D layers.
        sam_rho: `rho` of `keras_regkit.SharpnessAwareMinimization`, which
            `build_variant` wraps around the network (the optimizer steps
            with the gradient at the SAM-perturbed weights); `0`: plain
            training.
    """

    name: str
    description: str
    weight_decay: float = 0.0
    l1: float = 0.0
    regularize_dense: bool = False
    dropout: bool = False
    max_norm: float = None
    normalized_weight_decay: float = 0.0
    decoupled_l1: float = 0.0
    learning_rate: float = 1e-3
    architecture: str = "vgg"
    droppath: float = 0.0
    dropblock: float = 0.0
    dropblock_size: int = 5
    sam_rho: float = 0.0

    @property
    def decoupled(self):
        """Whether the optimizer is the `DecoupledWeightDecay` wrapper."""
        return bool(self.normalized_weight_decay or self.decoupled_l1)

    def build_model(self, *, batch_norm=False, blocks=2):
        """The (uncompiled) network with this variant's regularization."""
        if self.architecture == "resnet":
            model = build_resnet(20, weight_decay=self.weight_decay)
            if self.droppath:
                model = residual.insert_droppath(model, max_rate=self.droppath)
            if self.dropblock:
                model = residual.insert_dropblock(
                    model, self.dropblock, block_size=self.dropblock_size)
            return model
        return build_vgg_like(
            weight_decay=self.weight_decay,
            l1=self.l1,
            regularize_dense=self.regularize_dense,
            dropout=self.dropout,
            max_norm=self.max_norm,
            batch_norm=batch_norm,
            blocks=blocks,
        )

    def build_callbacks(self):
        """The `fit` callbacks the variant needs (`DropBlockSchedule` for DropBlock)."""
        return [DropBlockSchedule()] if self.dropblock else []

    def decoupled_weight_decay(self, *, batch_size=None, num_examples=None, epochs=None):
        """The per-step decay `lam` for a run (defaults: `DEFAULT_RUN`)."""
        run = dict(DEFAULT_RUN)
        run.update({key: value for key, value in
                    (("batch_size", batch_size), ("num_examples", num_examples),
                     ("epochs", epochs)) if value is not None})
        return optimizers.normalized_weight_decay(
            self.normalized_weight_decay, run["batch_size"], run["num_examples"],
            run["epochs"],
        )

    def build_optimizer(self, *, batch_size=None, num_examples=None, epochs=None):
        """Adam 1e-3, wrapped in `DecoupledWeightDecay` for the decoupled variants.

        `batch_size` (global), `num_examples` and `epochs` describe the run,
        for the normalized decay; missing ones come from `DEFAULT_RUN`.
        """
        adam = keras.optimizers.Adam(learning_rate=self.learning_rate)
        if not self.decoupled:
            return adam
        return optimizers.DecoupledWeightDecay(
            adam,
            weight_decay=self.decoupled_weight_decay(
                batch_size=batch_size, num_examples=num_examples, epochs=epochs
            ),
            decay_scaling="schedule",
            l1=self.decoupled_l1,
        )

    def to_dict(self):
        return dataclasses.asdict(self)


VARIANTS = {
    variant.name: variant
    for variant in (
        Variant("none", "no regularization"),
        # 1e-3 on the conv and hidden Dense kernels (the value of TensorFlow's
        # "Overfit and underfit" tutorial): the classic 1e-4 on the conv
        # kernels alone barely acts under Adam in a short run, where the
        # 1M-weight Dense layer does the overfitting (see README "Results").
        Variant(
            "l2",
            "L2 penalty 1e-3 on the conv and hidden Dense kernels",
            weight_decay=1e-3,
            regularize_dense=True,
        ),
        Variant("dropout", "VGG dropout (0.25 after pools, 0.5 after fc)", dropout=True),
        Variant(
            "l2+dropout",
            "L2 1e-4 on the conv kernels + VGG dropout (the classic recipe)",
            weight_decay=1e-4,
            dropout=True,
        ),
        Variant(
            "maxnorm+dropout",
            "max-norm c=3 on every kernel + VGG dropout (Srivastava et al.)",
            max_norm=3.0,
            dropout=True,
        ),
        Variant(
            "adamw",
            "Adam + decoupled weight decay, normalized lambda_norm=0.05 (AdamW)",
            normalized_weight_decay=0.05,
        ),
        Variant(
            "elastic-net",
            "elastic-net penalty (l1=1e-5, l2=1e-4) on the conv kernels",
            weight_decay=1e-4,
            l1=1e-5,
        ),
        Variant(
            "prox-l1",
            "AdamW (lambda_norm=0.05) + proximal L1 step (l1=0.02) on every kernel",
            normalized_weight_decay=0.05,
            decoupled_l1=0.02,
        ),
        Variant("resnet", "ResNet-20 (He et al. 2016), BN only", architecture="resnet"),
        Variant(
            "resnet+droppath",
            "ResNet-20 + DropPath, rates rising linearly with depth to 0.1",
            architecture="resnet",
            droppath=0.1,
        ),
        Variant(
            "resnet+dropblock",
            "ResNet-20 + DropBlock (rate 0.1 ramped, block 5) in stages 2-3",
            architecture="resnet",
            dropblock=0.1,
        ),
        Variant(
            "sam",
            "sharpness-aware minimization (rho=0.05) around Adam, no penalty",
            sam_rho=0.05,
        ),
        Variant("sam+dropout", "SAM (rho=0.05) + VGG dropout", dropout=True, sam_rho=0.05),
    )
}
DEFAULT_VARIANT = "l2+dropout"


def get_variant(variant):
    """Returns the `Variant` named `variant` (a `Variant` passes through)."""
    if isinstance(variant, Variant):
        return variant
    return VARIANTS[_validation.one_of(variant, "variant", tuple(VARIANTS))]


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
    `Variant.build_optimizer(...)` (Adam 1e-3, or its decoupled wrapper, whose
    normalized decay uses the run's global `batch_size`, `num_examples` and
    `epochs`, or `DEFAULT_RUN` for the missing ones). The `sam` variants
    return the network wrapped in `keras_regkit.SharpnessAwareMinimization`.

    Example:

    >>> model = build_variant("l2")
    >>> type(model.optimizer).__name__, model.get_layer("fc").kernel_regularizer.l2
    ('Adam', 0.001)
    """
    variant = get_variant(variant)
    model = variant.build_model(batch_norm=batch_norm, blocks=blocks)
    if variant.sam_rho:
        model = sam.SharpnessAwareMinimization(model, rho=variant.sam_rho)
    model.compile(
        optimizer=variant.build_optimizer(
            batch_size=batch_size, num_examples=num_examples, epochs=epochs
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model

