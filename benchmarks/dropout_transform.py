"""Wall time of `insert_dropout` and `remove_dropout` on ResNet50.

Builds `keras.applications.ResNet50(weights=None)` (224x224x3, 1000 classes,
25.6M parameters) once, then times each transform several times and reports
the median. The transform copies every weight, so the time is dominated by
rebuilding the graph and copying ~100 MB of weights.

Usage:
    python benchmarks/dropout_transform.py [--repeats 3]
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import _bench  # noqa: E402
import keras_regkit  # noqa: E402


def timed(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv=None):
    parser = _bench.argument_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    model = keras.applications.ResNet50(weights=None)

    def rows():
        seconds, dropped = timed(
            lambda: keras_regkit.insert_dropout(model, 0.1, after=keras.layers.Add), args.repeats
        )
        yield ["insert_dropout(ResNet50, 0.1, after=Add)",
               f"{len(model.layers)} -> {len(dropped.layers)}", f"{seconds:.2f}"]
        seconds, restored = timed(lambda: keras_regkit.remove_dropout(dropped), args.repeats)
        yield ["remove_dropout(result)", f"{len(dropped.layers)} -> {len(restored.layers)}",
               f"{seconds:.2f}"]

    _bench.print_table(
        f"median of {args.repeats} repeats",
        ["transform", "layers before -> after", "median seconds"],
        rows(),
    )

if __name__ == "__main__":
    main()
