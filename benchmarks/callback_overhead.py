"""Cost of the training-time callbacks: `EMA`, `SWA` and `RegularizationSchedule` against plain `fit`.

Two copies of the VGG-like CIFAR-10 net (L2 on every kernel, its own dropout
layers made schedulable with `schedulable_dropout`, batch 128) train on the
same random batches; one has the callback. The arms run interleaved
(A B A B ...), each an epoch of `--steps` steps through `model.fit`, so
per-batch work (the EMA update, a per-step schedule) and epoch-end work are in
the timed epoch. The table reports the median of the per-round time ratios
callback / plain.

Arms:
  ema               EMA(decay=0.999) updated after every batch (BN: none in this net)
  swa               SWA(start_epoch=0): one average per epoch
  schedule          RegularizationSchedule(dropout=linear ramp): rates set each epoch
  schedule-per-step the same, rates changed every batch (per_step=True)

Each round is a new `fit` call. A schedule of penalties or weight decay
retraces the step once when `fit` starts (documented), a cost per `fit`, not
per epoch, that this one-epoch-per-`fit` design would charge to every epoch:
those are left out here.

Usage:
    python benchmarks/callback_overhead.py [--rounds 9] [--steps 10] [--arms ema swa schedule]
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _bench  # noqa: E402
import keras_regkit  # noqa: E402
from keras_regkit.baselines import cifar10  # noqa: E402


def _ramp():
    return keras_regkit.LinearSchedule(0.0, 1.0, epochs=50)


ARMS = {
    "ema": lambda: keras_regkit.EMA(decay=0.999),
    "swa": lambda: keras_regkit.SWA(start_epoch=0),
    "schedule": lambda: keras_regkit.RegularizationSchedule(dropout=_ramp()),
    "schedule-per-step": lambda: keras_regkit.RegularizationSchedule(
        dropout=_ramp(), per_step=True),
}


def _vgg():
    return keras_regkit.schedulable_dropout(cifar10.build_vgg_like(l2=1e-4))


def main(argv=None):
    args = _bench.timing_parser(__doc__, rounds=9, steps=10,
                                names=("--arms", ARMS)).parse_args(argv)

    def arm(callbacks):
        return _bench.epoch_timer(_vgg, callbacks, steps=args.steps, batch_size=128,
                                  shape=(32, 32, 3))

    def arms(name):
        plain = arm([])
        return arm([ARMS[name]()]), plain

    _bench.print_table(
        f"callback / plain fit, VGG-like, batch 128, {args.steps} steps an epoch, "
        f"{args.rounds} interleaved rounds",
        ["arm", "median ratio", "IQR", "ms/step with", "ms/step plain"],
        ([name, *_bench.ratio_cells(result), *_bench.time_cells(result)]
         for name, result in _bench.compare(args.arms, arms, args.rounds, args.steps)),
    )


if __name__ == "__main__":
    main()
