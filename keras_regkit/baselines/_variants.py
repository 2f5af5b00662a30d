"""The named regularization variants of the CIFAR-10 baseline: what each one sets.

A `Variant` is plain data: what the model, its optimizer and its callbacks
are built from (by `_model.build_variant`, `build_optimizer`,
`build_callbacks`). This module imports `_settings` only, and no Keras: the
command line lists the names for `--help` without loading model code.
"""

import dataclasses
import warnings

from keras_regkit import _validation
from keras_regkit._deprecation import renamed_keyword
from keras_regkit.baselines._settings import DEFAULT_RUN

# Why `weight_decay=` became `l2=` (the deprecation warning's explanation).
L2_RENAMED = "the L2 coefficient of the loss; in Keras, `weight_decay` means decoupled decay"


def _renamed(old, new):
    warnings.warn(
        f"`Variant.{old}` is deprecated; use `Variant.{new}` (in Keras, "
        "`weight_decay` means decoupled decay).",
        DeprecationWarning,
        stacklevel=3,
    )


def _moved(old, new):
    warnings.warn(
        f"`Variant.{old}()` is deprecated: a `Variant` is data. Use "
        f"`keras_regkit.baselines.cifar10.{new}`.",
        DeprecationWarning,
        stacklevel=3,
    )


@dataclasses.dataclass(frozen=True)
class Variant:
    """One named regularization set-up of the baseline.

    Attributes:
        name: The variant's name (`--variant`).
        description: One line for tables and `--help`.
        l2: L2 coefficient of the loss penalty on the convolution kernels
            (`keras_regkit.regularizers.L2(l2)`).
        l1: L1 coefficient of the loss penalty on the convolution kernels.
        regularize_dense: Also put the `l2`/`l1` penalty on the hidden Dense
            kernel.
        dropout: Whether the VGG dropout layers are inserted.
        max_norm: Max-norm bound on every kernel, or `None`.
        normalized_decay: `lambda_norm` of Loshchilov & Hutter's normalized
            decoupled weight decay (`0`: none), not a loss term. The
            optimizer is then `DecoupledWeightDecay(Adam, weight_decay=decay,
            decay_scaling="schedule")` with
            `decay = normalized_weight_decay(lambda_norm, batch, examples, epochs)`
            for the run (`decoupled_weight_decay(...)`): `w <- w - decay * w`
            each step (constant learning rate).
        decoupled_l1: Strength of the wrapper's proximal L1 step
            (`w <- sign(w) max(|w| - lr * l1, 0)` each step).
        learning_rate: Adam's learning rate.
        architecture: `"vgg"` (the VGG-like net; `batch_norm` and `blocks`
            apply) or `"resnet"` (ResNet-20, `build_resnet`; BN throughout,
            `l2` on every kernel, the VGG-only fields unused).
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
        swa_start: Fraction of the run's epochs after which
            `keras_regkit.SWA` averages the weights once an epoch (batch-norm
            statistics recalibrated on the training images at the end; the
            final model and its scores are the average); `0`: none.
        ema_decay: `decay` of a `keras_regkit.EMA` of the weights (timm's
            warm-up; batch-norm statistics averaged too; the final model and
            its scores are the average); `0`: none.

    The fields were called `weight_decay` (now `l2`) and
    `normalized_weight_decay` (now `normalized_decay`) before; reading the
    old names still works, with a `DeprecationWarning`.

    Example:

    >>> variant = VARIANTS["adamw"]
    >>> variant.normalized_decay, variant.l2, variant.decoupled
    (0.05, 0.0, True)
    >>> variant.decoupled_weight_decay(batch_size=128, num_examples=50000, epochs=200)
    0.000178885...
    """

    name: str
    description: str
    l2: float = 0.0
    l1: float = 0.0
    regularize_dense: bool = False
    dropout: bool = False
    max_norm: float = None
    normalized_decay: float = 0.0
    decoupled_l1: float = 0.0
    learning_rate: float = 1e-3
    architecture: str = "vgg"
    droppath: float = 0.0
    dropblock: float = 0.0
    dropblock_size: int = 5
    sam_rho: float = 0.0
    swa_start: float = 0.0
    ema_decay: float = 0.0

    def __post_init__(self):
        _validation.fraction(self.swa_start, "swa_start")
        _validation.fraction(self.ema_decay, "ema_decay")

    @property
    def decoupled(self):
        """Whether the optimizer is the `DecoupledWeightDecay` wrapper."""
        return bool(self.normalized_decay or self.decoupled_l1)

    @property
    def weight_decay(self):
        """Deprecated name of `l2`."""
        _renamed("weight_decay", "l2")
        return self.l2

    @property
    def normalized_weight_decay(self):
        """Deprecated name of `normalized_decay`."""
        _renamed("normalized_weight_decay", "normalized_decay")
        return self.normalized_decay

    def decoupled_weight_decay(self, *, batch_size=None, num_examples=None, epochs=None):
        """The optimizer's per-step decoupled decay for a run (defaults: `DEFAULT_RUN`).

        `normalized_weight_decay(normalized_decay, batch_size, num_examples,
        epochs)`, the `weight_decay` of the `DecoupledWeightDecay` wrapper.
        """
        from keras_regkit.optimizers import normalized_weight_decay

        run = dict(DEFAULT_RUN)
        run.update({key: value for key, value in
                    (("batch_size", batch_size), ("num_examples", num_examples),
                     ("epochs", epochs)) if value is not None})
        return normalized_weight_decay(
            self.normalized_decay, run["batch_size"], run["num_examples"], run["epochs"]
        )

    # Deprecated (0.1.0 had them; a Variant is now data). The only imports
    # here that go up the baselines' order, at call time, after the warning.
    def build_model(self, *, batch_norm=False, blocks=2):
        """Deprecated: use `cifar10.build_variant(variant)` (compiled) instead."""
        _moved("build_model", "build_variant(variant)")
        from keras_regkit.baselines import _model  # deprecated path only

        return _model.build_network(self, batch_norm=batch_norm, blocks=blocks)

    def build_optimizer(self, *, batch_size=None, num_examples=None, epochs=None):
        """Deprecated: `cifar10.build_variant(variant)` compiles with it."""
        _moved("build_optimizer", "build_variant(variant)")
        from keras_regkit.baselines import _model  # deprecated path only

        return _model.build_optimizer(
            self, batch_size=batch_size, num_examples=num_examples, epochs=epochs)

    def build_callbacks(self, *, epochs=None, train_data=None, validation_data=None):
        """Deprecated: use `cifar10.build_callbacks(variant, ...)` instead."""
        _moved("build_callbacks", "build_callbacks(variant, ...)")
        from keras_regkit.baselines import _model  # deprecated path only

        return _model.build_callbacks(self, epochs=epochs, train_data=train_data,
                                      validation_data=validation_data)

    def to_dict(self):
        return dataclasses.asdict(self)

# The old constructor keywords still work, with a `DeprecationWarning`.
Variant.__init__ = renamed_keyword("weight_decay", "l2", reason=L2_RENAMED)(
    renamed_keyword(
        "normalized_weight_decay", "normalized_decay",
        reason="the normalized decoupled decay lambda_norm, not a loss term",
    )(Variant.__init__)
)


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
            l2=1e-3,
            regularize_dense=True,
        ),
        Variant("dropout", "VGG dropout (0.25 after pools, 0.5 after fc)", dropout=True),
        Variant(
            "l2+dropout",
            "L2 1e-4 on the conv kernels + VGG dropout (the classic recipe)",
            l2=1e-4,
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
            normalized_decay=0.05,
        ),
        Variant(
            "elastic-net",
            "elastic-net penalty (l1=1e-5, l2=1e-4) on the conv kernels",
            l2=1e-4,
            l1=1e-5,
        ),
        Variant(
            "prox-l1",
            "AdamW (lambda_norm=0.05) + proximal L1 step (l1=0.02) on every kernel",
            normalized_decay=0.05,
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
            "resnet+swa",
            "ResNet-20 + SWA over the second half of the run (BN recalibrated)",
            architecture="resnet",
            swa_start=0.5,
        ),
        Variant(
            "resnet+ema",
            "ResNet-20 + EMA of the weights (decay 0.999, timm warm-up)",
            architecture="resnet",
            ema_decay=0.999,
        ),
        Variant(
            "sam",
            "sharpness-aware minimization (rho=0.05) around Adam, no penalty",
            sam_rho=0.05,
        ),
        Variant("sam+dropout", "SAM (rho=0.05) + VGG dropout", dropout=True, sam_rho=0.05),
    )
}


def get_variant(variant):
    """Returns the `Variant` named `variant` (a `Variant` passes through)."""
    if isinstance(variant, Variant):
        return variant
    return VARIANTS[_validation.one_of(variant, "variant", tuple(VARIANTS))]
