"""Wall time of `insert_dropout` and `remove_dropout` on ResNet50.

Builds `keras.applications.ResNet50(weights=None)` (224x224x3, 1000 classes,
25.6M parameters) once, then times each transform several times and reports
the median. The transform copies every weight, so the time is dominated by
rebuilding the graph and copying ~100 MB of weights.

Usage:
    python benchmarks/dropout_transform.py [--repeats 3]
"""

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_regkit  # noqa: E402


def timed(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import tensorflow as tf

    print(
        f"# machine: {platform.machine()}, {os.cpu_count()} CPUs; Python "
        f"{platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}"
    )
    model = keras.applications.ResNet50(weights=None)
    print("| transform | layers before -> after | median seconds |")
    print("|---|---|---|")
    seconds, dropped = timed(
        lambda: keras_regkit.insert_dropout(model, 0.1, after=keras.layers.Add), args.repeats
    )
    print(
        f"| insert_dropout(ResNet50, 0.1, after=Add) | {len(model.layers)} -> "
        f"{len(dropped.layers)} | {seconds:.2f} |"
    )
    seconds, restored = timed(lambda: keras_regkit.remove_dropout(dropped), args.repeats)
    print(
        f"| remove_dropout(result) | {len(dropped.layers)} -> {len(restored.layers)} "
        f"| {seconds:.2f} |"
    )


if __name__ == "__main__":
    main()
