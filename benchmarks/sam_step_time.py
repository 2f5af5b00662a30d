"""Training-step time of SharpnessAwareMinimization against a plain step, side by side.

Both arms train the CIFAR-10 baseline's VGG-like network
(`keras_regkit.baselines.cifar10.build_vgg_like()`: two conv blocks, L2 1e-4
on the conv kernels, VGG dropout) with Adam 1e-3 on the same random batches.
The arms are timed interleaved (A B A B ..., alternating which goes first) in
one process, and the table reports the median of the per-round ratios
SAM / plain. SAM runs two forward and backward passes per step, so the floor
is about 2x; the rest is its overhead (the perturbation, the norm, the
snapshot of the non-trainable state).

Rows:
  sam     SharpnessAwareMinimization(model, rho=0.05)
  asam    SharpnessAwareMinimization(model, rho=0.5, adaptive=True)
  sam-m2  SharpnessAwareMinimization(model, rho=0.05, num_batch_splits=2)

Usage:
    python benchmarks/sam_step_time.py [--rounds 11] [--steps 10] [--batch-size 128]

Input batches are random tensors of CIFAR-10's shape: step time does not
depend on pixel values.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import _bench  # noqa: E402
import keras_regkit  # noqa: E402
from keras_regkit.baselines.cifar10 import build_vgg_like  # noqa: E402

ROWS = {
    "sam": ("SAM(rho=0.05) / plain", {"rho": 0.05}),
    "asam": ("ASAM(rho=0.5) / plain", {"rho": 0.5, "adaptive": True}),
    "sam-m2": ("SAM(rho=0.05, num_batch_splits=2) / plain",
               {"rho": 0.05, "num_batch_splits": 2}),
}


def _timer(sam_kwargs, x, y, jit_compile):
    """`(run, whether XLA compiled it)` for SAM with `sam_kwargs`, or the plain step for None."""
    keras.utils.set_random_seed(0)
    model = build_vgg_like()
    if sam_kwargs is not None:
        model = keras_regkit.SharpnessAwareMinimization(model, **sam_kwargs)
    run = _bench.step_timer(model, keras.optimizers.Adam(1e-3), x, y, jit_compile)
    return run, model.jit_compile


def main(argv=None):
    args = _bench.timing_parser(__doc__, rounds=11, steps=10, batch_size=128, jit_compile=True,
                                names=("--rows", ROWS)).parse_args(argv)
    jit = _bench.jit_compile_value(args)
    x, y = _bench.random_batch(args.batch_size, (32, 32, 3))
    xla = {}  # row -> whether XLA compiled (SAM, plain)

    def arms(row):
        sam, sam_xla = _timer(ROWS[row][1], x, y, jit)
        plain, plain_xla = _timer(None, x, y, jit)
        xla[row] = (sam_xla, plain_xla)
        return sam, plain

    _bench.print_table(
        f"rounds={args.rounds} steps/round={args.steps} "
        f"batch={args.batch_size} jit_compile={args.jit_compile}; VGG-like, Adam 1e-3",
        ["comparison", "SAM ms/step", "plain ms/step", "median ratio", "IQR of ratio",
         "XLA (SAM, plain)"],
        ([ROWS[row][0], *_bench.time_cells(result), *_bench.ratio_cells(result),
          xla[row]]
         for row, result in _bench.compare(args.rows, arms, args.rounds, args.steps)),
    )


if __name__ == "__main__":
    main()
