"""Training-step time of keras_regkit against plain Keras, side by side.

Each pair trains the VGG-like CIFAR-10 network (Conv32-Conv32-Pool-Conv64-
Conv64-Pool-Dense256-Dense10) on the same batches. The two arms are timed
interleaved (A B A B ...) in one process, and the table reports the median of
the per-round ratios ours / Keras, so machine noise hits both arms alike.

Pairs:
  l2         keras_regkit.L2(1e-4)  vs keras.regularizers.L2(1e-4) on every kernel
  decay      DecoupledWeightDecay(Adam, 1e-4)          vs keras.optimizers.AdamW
  decay+l1   DecoupledWeightDecay(Adam, 1e-4, l1=1e-5) vs keras.optimizers.AdamW

Usage:
    python benchmarks/step_time.py [--rounds 15] [--steps 20] [--batch-size 128]

Input batches are random tensors of CIFAR-10's shape: step time does not
depend on pixel values, and this keeps the benchmark free of the data set.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import _bench  # noqa: E402
import keras_regkit  # noqa: E402


def vgg_like(kernel_regularizer=None):
    """The benchmark network; `kernel_regularizer` is a factory or None."""

    def reg():
        return kernel_regularizer() if kernel_regularizer else None

    layers = [keras.Input((32, 32, 3))]
    for filters in (32, 32, None, 64, 64, None):
        if filters is None:
            layers.append(keras.layers.MaxPooling2D())
        else:
            layers.append(
                keras.layers.Conv2D(
                    filters, 3, padding="same", activation="relu",
                    kernel_regularizer=reg(),
                )
            )
    layers += [
        keras.layers.Flatten(),
        keras.layers.Dense(256, activation="relu", kernel_regularizer=reg()),
        keras.layers.Dense(10, activation="softmax", kernel_regularizer=reg()),
    ]
    return keras.Sequential(layers)


PAIRS = {
    "l2": (
        "keras_regkit.L2 / keras.regularizers.L2 (Adam)",
        lambda: (vgg_like(lambda: keras_regkit.L2(1e-4)), keras.optimizers.Adam(1e-3)),
        lambda: (vgg_like(lambda: keras.regularizers.L2(1e-4)), keras.optimizers.Adam(1e-3)),
    ),
    "decay": (
        "DecoupledWeightDecay(Adam) / keras.optimizers.AdamW",
        lambda: (
            vgg_like(),
            keras_regkit.DecoupledWeightDecay(keras.optimizers.Adam(1e-3), weight_decay=1e-4),
        ),
        lambda: (vgg_like(), keras.optimizers.AdamW(1e-3, weight_decay=1e-4)),
    ),
    "decay+l1": (
        "DecoupledWeightDecay(Adam, l1>0) / keras.optimizers.AdamW",
        lambda: (
            vgg_like(),
            keras_regkit.DecoupledWeightDecay(
                keras.optimizers.Adam(1e-3), weight_decay=1e-4, l1=1e-5
            ),
        ),
        lambda: (vgg_like(), keras.optimizers.AdamW(1e-3, weight_decay=1e-4)),
    ),
}


def _timer(factory, x, y, jit_compile):
    keras.utils.set_random_seed(0)
    model, optimizer = factory()
    return _bench.step_timer(model, optimizer, x, y, jit_compile)


def main(argv=None):
    args = _bench.timing_parser(__doc__, rounds=15, steps=20, batch_size=128, jit_compile=True,
                                names=("--pairs", PAIRS)).parse_args(argv)
    jit = _bench.jit_compile_value(args)
    x, y = _bench.random_batch(args.batch_size, (32, 32, 3))

    def arms(pair):
        _, ours, theirs = PAIRS[pair]
        return _timer(ours, x, y, jit), _timer(theirs, x, y, jit)

    _bench.print_table(
        f"rounds={args.rounds} steps/round={args.steps} "
        f"batch={args.batch_size} jit_compile={args.jit_compile}",
        ["comparison", "ours ms/step", "Keras ms/step", "median ratio", "IQR of ratio"],
        ([PAIRS[pair][0], *_bench.time_cells(result), *_bench.ratio_cells(result)]
         for pair, result in _bench.compare(args.pairs, arms, args.rounds, args.steps)),
    )


if __name__ == "__main__":
    main()
