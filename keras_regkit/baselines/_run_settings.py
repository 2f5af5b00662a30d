"""The settings of one CIFAR-10 baseline run, as one frozen object.

`RunSettings` is built once (from Python keywords, or by the command line from
its arguments), validated once, recorded in the run folder (metrics.json,
under `arguments`), and passed whole to training and the input pipeline. Its
variant is resolved here, once, from a name to a `Variant`. Like `_settings`
and `_variants` below it, this module imports no model code, so
`keras-regkit --help` need not load it.
"""

import dataclasses

from keras_regkit import _validation
from keras_regkit.baselines._settings import DEFAULT_RUN
from keras_regkit.baselines._settings import DEFAULT_VARIANT
from keras_regkit.baselines._settings import MAX_BLOCKS
from keras_regkit.baselines._settings import QUICK
from keras_regkit.baselines._settings import STRATEGIES
from keras_regkit.baselines._variants import Variant
from keras_regkit.baselines._variants import get_variant


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What one baseline run trains, and on which data (`train(settings=...)`).

    Attributes:
        variant: Name in `VARIANTS`, or a `Variant`; held as the `Variant`.
            Defaults to `"l2+dropout"`.
        epochs: Positive int. Defaults to `50`.
        batch_size: Per-replica batch size; the global batch is
            `batch_size * replicas`. Defaults to `128`.
        data_dir: tensorflow-datasets directory (`None`: `$TFDS_DATA_DIR`).
        train_limit, test_limit: Use only the first that many images of each
            split (`None`: all).
        augment: Random flip + pad-crop on the training images.
        batch_norm: BatchNormalization after each convolution (VGG-like only).
        blocks: Number of convolution blocks, 1 to 5 (2: classic, 3:
            textbook; VGG-like only). Defaults to `2`.
        standardize: Per-channel standardization instead of [0, 1] scaling.
        strategy: `"default"`, `"mirrored"` or `"multiworker"`.
        seed: Seed for weights, dropout, shuffling and augmentation (0 to
            2**32 - 1, as NumPy takes), or `None`.

    Every value is checked when the object is built: a `ValueError` or
    `TypeError` names the argument and the value received. `to_dict()` is
    what the run folder records (metrics.json's `arguments`).
    `RunSettings.quick(...)` gives the settings of `--quick`.

    Example:

    >>> settings = RunSettings("l2", epochs=3, seed=0)
    >>> settings.variant.name, settings.epochs, settings.batch_size
    ('l2', 3, 128)
    >>> RunSettings.quick("none").train_limit  # --quick
    1000
    >>> RunSettings(epochs=0)
    Traceback (most recent call last):
    ...
    ValueError: `epochs` must be >= 1. Received: epochs=0
    """

    variant: Variant = DEFAULT_VARIANT
    epochs: int = DEFAULT_RUN["epochs"]
    batch_size: int = DEFAULT_RUN["batch_size"]
    data_dir: str = None
    train_limit: int = None
    test_limit: int = None
    augment: bool = False
    batch_norm: bool = False
    blocks: int = 2
    standardize: bool = False
    strategy: str = "default"
    seed: int = None

    def __post_init__(self):
        checked = {
            "variant": get_variant(self.variant),
            "epochs": _validation.positive_int(self.epochs, "epochs"),
            "batch_size": _validation.positive_int(self.batch_size, "batch_size"),
            "data_dir": _validation.optional_path(self.data_dir, "data_dir"),
            "train_limit": _validation.optional_positive_int(self.train_limit, "train_limit"),
            "test_limit": _validation.optional_positive_int(self.test_limit, "test_limit"),
            "augment": _validation.boolean(self.augment, "augment"),
            "batch_norm": _validation.boolean(self.batch_norm, "batch_norm"),
            "blocks": _validation.positive_int_at_most(self.blocks, "blocks", MAX_BLOCKS),
            "standardize": _validation.boolean(self.standardize, "standardize"),
            "strategy": _validation.one_of(self.strategy, "strategy", STRATEGIES),
            "seed": _validation.random_seed(self.seed),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def quick(cls, variant=DEFAULT_VARIANT, **overrides):
        """The settings of `--quick` (`QUICK`); keywords given here win."""
        return cls(variant, **{**QUICK, **overrides})

    @property
    def data_seed(self):
        """The seed of shuffling and augmentation.

        `seed`; for an unseeded multi-worker run `0`, since sharding by data
        needs one shuffle order on every worker.
        """
        if self.seed is None and self.strategy == "multiworker":
            return 0
        return self.seed

    def to_dict(self):
        """The settings as JSON-ready values, the variant by its name."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        values["variant"] = self.variant.name
        return values
