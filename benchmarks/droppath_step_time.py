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

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import _bench  # noqa: E402
import keras_regkit  # noqa: E402


def main(argv=None):
    parser = _bench.timing_parser(__doc__, rounds=9, steps=5, jit_compile=True)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dropblock", action="store_true",
                        help="also time insert_dropblock(model, 0.1, block_size=3)")
    args = parser.parse_args(argv)
    jit = _bench.jit_compile_value(args)

    keras.utils.set_random_seed(0)
    shape = (args.image_size, args.image_size, 3)
    base = keras.applications.ResNet50(weights=None, input_shape=shape, classes=10)
    arms = {"without": base,
            "DropPath": keras_regkit.insert_droppath(base, max_rate=0.1, seed=0)}
    if args.dropblock:
        arms["DropBlock2D"] = keras_regkit.insert_dropblock(base, 0.1, block_size=3, seed=0)
    x, y = _bench.random_batch(args.batch_size, shape, high=255.0)
    runs = {name: _bench.step_timer(model, keras.optimizers.SGD(0.01), x, y, jit)
            for name, model in arms.items()}

    def count(name):
        return sum(type(layer).__name__ == name for layer in arms[name].layers)

    inserted = [name for name in arms if name != "without"]
    _bench.print_table(
        f"ResNet50(weights=None) {args.image_size}x{args.image_size}x3, 10 classes, "
        f"batch={args.batch_size}, SGD; rounds={args.rounds} steps/round={args.steps} "
        f"jit_compile={args.jit_compile}",
        ["inserted", "layers", "with ms/step", "without ms/step", "median ratio",
         "IQR of ratio"],
        ([name, count(name), *_bench.time_cells(result), *_bench.ratio_cells(result)]
         for name, result in _bench.compare(
             inserted, lambda name: (runs[name], runs["without"]), args.rounds, args.steps)),
    )


if __name__ == "__main__":
    main()
