"""Training-step cost of DropPath (and DropBlock) inserted into ResNet50.

Builds `keras.applications.ResNet50(weights=None)` on small images, and
copies of it with `keras_regkit.insert_droppath(model, 0.1)` (16 DropPath
layers, one per residual branch) and, with `--dropblock`, with
`keras_regkit.insert_dropblock(model, 0.1, block_size=3)` (36 DropBlock2D
layers in groups 3 and 4). Each arm trains on the same random batch; the arms
are timed interleaved (A B A B ..., alternating who goes first) in one
process, and the table reports the median of the per-round ratios
with / without, so machine noise hits both arms alike.

Usage:
    python benchmarks/droppath_step_time.py [--rounds 9] [--steps 5]
        [--image-size 64] [--batch-size 16] [--dropblock]
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


def _trainer(model, x, y, jit_compile):
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss="sparse_categorical_crossentropy", jit_compile=jit_compile)
    return step_timer(model, x, y)


def measure(with_layers, without, rounds, steps):
    result = interleaved(with_layers, without, rounds, steps)
    return {"ratio": result["ratio"], "with_ms": result["a_ms"], "without_ms": result["b_ms"],
            "ratio_iqr": result["ratio_iqr"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    timing_arguments(parser, rounds=9, steps=5)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dropblock", action="store_true",
                        help="also time insert_dropblock(model, 0.1, block_size=3)")
    jit_values = jit_compile_argument(parser)
    args = parser.parse_args(argv)
    jit = jit_values[args.jit_compile]


    keras.utils.set_random_seed(0)
    shape = (args.image_size, args.image_size, 3)
    base = keras.applications.ResNet50(weights=None, input_shape=shape, classes=10)
    arms = {"without": base,
            "DropPath": keras_regkit.insert_droppath(base, max_rate=0.1, seed=0)}
    if args.dropblock:
        arms["DropBlock2D"] = keras_regkit.insert_dropblock(base, 0.1, block_size=3, seed=0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch_size,) + shape).astype("float32")
    y = rng.integers(0, 10, size=(args.batch_size,))
    runs = {name: _trainer(model, x, y, jit) for name, model in arms.items()}

    def rows():
        for name in [name for name in arms if name != "without"]:
            count = sum(type(layer).__name__ == name for layer in arms[name].layers)
            result = measure(runs[name], runs["without"], args.rounds, args.steps)
            yield [name, count, f"{result['with_ms']:.1f}", f"{result['without_ms']:.1f}",
                   *ratio_cells(result)]

    print_ratio_table(
        f"ResNet50(weights=None) {args.image_size}x{args.image_size}x3, 10 classes, "
        f"batch={args.batch_size}, SGD; rounds={args.rounds} steps/round={args.steps} "
        f"jit_compile={args.jit_compile}",
        ["inserted", "layers", "with ms/step", "without ms/step", "median ratio",
         "IQR of ratio"],
        rows(),
    )


if __name__ == "__main__":
    main()
