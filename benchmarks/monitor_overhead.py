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

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import _bench  # noqa: E402
import keras_regkit  # noqa: E402
from keras_regkit.baselines import cifar10  # noqa: E402


def _vgg():
    return keras_regkit.regularize(cifar10.build_vgg_like(), {"*": keras_regkit.L2(1e-4)},
                                   target="kernels")


def _resnet50():
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    return keras_regkit.regularize(model, {"*": keras_regkit.L2(1e-4)}, target="kernels")


NETS = {"vgg": (_vgg, (32, 32, 3), 128), "resnet50": (_resnet50, (64, 64, 3), 16)}


def main(argv=None):
    args = _bench.timing_parser(__doc__, rounds=9, steps=10,
                                names=("--nets", NETS)).parse_args(argv)

    def arms(name):
        build, shape, batch = NETS[name]

        def arm(callbacks):
            return _bench.epoch_timer(build, callbacks, steps=args.steps, batch_size=batch,
                                      shape=shape)

        plain = arm([])
        return arm([keras_regkit.RegularizationMonitor()]), plain

    def seconds_per_epoch(ms_per_step):
        return f"{ms_per_step * args.steps / 1000:.3f}"

    _bench.print_table(
        f"rounds={args.rounds}, an epoch of {args.steps} steps per arm and round",
        ["net", "median ratio monitored/plain", "IQR of ratio", "monitored s/epoch",
         "plain s/epoch"],
        ([name, *_bench.ratio_cells(result), seconds_per_epoch(result["a_ms"]),
          seconds_per_epoch(result["b_ms"])]
         for name, result in _bench.compare(args.nets, arms, args.rounds, args.steps)),
    )


if __name__ == "__main__":
    main()
