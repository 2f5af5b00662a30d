"""Cost of `RegularizationMonitor`: monitored training against unmonitored, side by side.

Two copies of one network, with the same penalties, train on the same random
batches; one has the monitor among its callbacks (penalty and data-loss
metrics in every step, per-variable statistics at every epoch end). The two
arms run interleaved (A B A B ...), each an epoch of `--steps` steps through
`model.fit`, so the epoch-end statistics are in the monitored time. The table
reports the median of the per-round time ratios monitored / unmonitored.

Networks:
  vgg        the VGG-like CIFAR-10 net, L2(1e-4) on every kernel, batch 128
  resnet50   keras.applications.ResNet50 (weights=None, 64x64 inputs, 10
             classes), L2(1e-4) on every kernel via `regularize`, batch 16

Usage:
    python benchmarks/monitor_overhead.py [--rounds 9] [--steps 10] [--nets vgg resnet50]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_regkit  # noqa: E402
from _interleave import interleaved  # noqa: E402
from _interleave import print_ratio_table  # noqa: E402
from _interleave import ratio_cells  # noqa: E402
from _interleave import timing_arguments  # noqa: E402
from keras_regkit.baselines import cifar10  # noqa: E402


def _vgg():
    model = cifar10.build_vgg_like()
    return keras_regkit.regularize(model, {"*": keras_regkit.L2(1e-4)}, target="kernels"), (32, 32, 3), 128


def _resnet50():
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    return keras_regkit.regularize(model, {"*": keras_regkit.L2(1e-4)}, target="kernels"), (64, 64, 3), 16


NETS = {"vgg": _vgg, "resnet50": _resnet50}


def _arm(build, monitored, steps, seed):
    keras.utils.set_random_seed(seed)
    model, shape, batch = build()
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(seed)
    x = rng.random((steps * batch, *shape), dtype=np.float32)
    y = rng.integers(0, 10, size=steps * batch)
    callbacks = [keras_regkit.RegularizationMonitor()] if monitored else []

    def epoch(_steps):
        started = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
        return time.perf_counter() - started

    return epoch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    timing_arguments(parser, rounds=9, steps=10)
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    args = parser.parse_args()

    def rows():
        for name in args.nets:
            plain = _arm(NETS[name], False, args.steps, seed=0)
            monitored = _arm(NETS[name], True, args.steps, seed=0)
            result = interleaved(monitored, plain, args.rounds, args.steps)
            yield [name, *ratio_cells(result), f"{result['a_ms'] / 1000:.3f}",
                   f"{result['b_ms'] / 1000:.3f}"]

    print_ratio_table(
        f"rounds={args.rounds}, an epoch of {args.steps} steps per arm and round",
        ["net", "median ratio monitored/plain", "IQR of ratio", "monitored s/epoch",
         "plain s/epoch"],
        rows(),
    )


if __name__ == "__main__":
    main()
