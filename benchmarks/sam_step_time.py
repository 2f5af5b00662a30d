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

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_regkit  # noqa: E402
from _interleave import interleaved  # noqa: E402
from _interleave import jit_compile_argument  # noqa: E402
from _interleave import print_ratio_table  # noqa: E402
from _interleave import ratio_cells  # noqa: E402
from _interleave import step_timer  # noqa: E402
from _interleave import timing_arguments  # noqa: E402
from keras_regkit.baselines.cifar10 import build_vgg_like  # noqa: E402

ROWS = {
    "sam": ("SAM(rho=0.05) / plain", {"rho": 0.05}),
    "asam": ("ASAM(rho=0.5) / plain", {"rho": 0.5, "adaptive": True}),
    "sam-m2": ("SAM(rho=0.05, num_batch_splits=2) / plain",
               {"rho": 0.05, "num_batch_splits": 2}),
}


def _trainer(sam_kwargs, x, y, jit_compile):
    keras.utils.set_random_seed(0)
    model = build_vgg_like()
    if sam_kwargs is not None:
        model = keras_regkit.SharpnessAwareMinimization(model, **sam_kwargs)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        jit_compile=jit_compile,
    )
    run = step_timer(model, x, y)
    return run, model.jit_compile


def measure(row, rounds, steps, batch_size, jit_compile):
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, size=(batch_size,))
    sam, sam_jit = _trainer(ROWS[row][1], x, y, jit_compile)
    plain, plain_jit = _trainer(None, x, y, jit_compile)
    result = interleaved(sam, plain, rounds, steps)
    return {"ratio": result["ratio"], "sam_ms": result["a_ms"], "plain_ms": result["b_ms"],
            "ratio_iqr": result["ratio_iqr"], "jit": (sam_jit, plain_jit)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    timing_arguments(parser, rounds=11, steps=10, batch_size=128)
    jit_values = jit_compile_argument(parser)
    args = parser.parse_args(argv)
    jit = jit_values[args.jit_compile]

    def rows():
        for row in args.rows:
            result = measure(row, args.rounds, args.steps, args.batch_size, jit)
            yield [ROWS[row][0], f"{result['sam_ms']:.1f}", f"{result['plain_ms']:.1f}",
                   *ratio_cells(result), result["jit"]]

    print_ratio_table(
        f"rounds={args.rounds} steps/round={args.steps} "
        f"batch={args.batch_size} jit_compile={args.jit_compile}; VGG-like, Adam 1e-3",
        ["comparison", "SAM ms/step", "plain ms/step", "median ratio", "IQR of ratio",
         "XLA (SAM, plain)"],
        rows(),
    )


if __name__ == "__main__":
    main()
