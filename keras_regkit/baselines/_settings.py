"""The choices and defaults of a CIFAR-10 baseline run: plain constants.

The strategies, the largest `blocks`, the `--quick` values, the sweep's
choices and the run geometry that `Variant.decoupled_weight_decay` assumes
when it is given none. This module is the bottom of the baselines' import
order (settings -> variants -> run settings -> model -> training -> sweep,
cifar10 -> cli): it imports no other baselines module and no Keras, so
`keras-regkit --help` is built from it without loading model code.
"""

STRATEGIES = ("default", "mirrored", "multiworker")
MAX_BLOCKS = 5  # 32x32 halves five times down to 1x1
DEFAULT_VARIANT = "l2+dropout"
# The run geometry assumed when the decoupled decay is computed without one:
# the full CIFAR-10 training set, batch 128, 50 epochs (`RunSettings`'s defaults).
DEFAULT_RUN = {"batch_size": 128, "num_examples": 50000, "epochs": 50}
# --quick: `none` and the variant side by side on a subset small enough to
# show `none` overfitting within a couple of minutes on 2 CPU cores.
QUICK = {"epochs": 12, "train_limit": 1000, "test_limit": 1000, "batch_size": 32}
# `keras-regkit sweep --param` -> the `Variant` field it sets (`weight_decay`:
# the normalized decoupled decay, as Keras means the word; `l2`: the loss
# coefficient), and `--tuner`'s KerasTuner searches.
SWEEP_PARAMS = {
    "l2": "l2",
    "l1": "l1",
    "max_norm": "max_norm",
    "weight_decay": "normalized_decay",
    "decoupled_l1": "decoupled_l1",
}
SWEEP_TUNERS = ("grid", "bayesian", "hyperband")
