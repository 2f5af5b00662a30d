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


def _ramp():
    return keras_regkit.LinearSchedule(0.0, 1.0, epochs=50)


ARMS = {
    "ema": lambda: keras_regkit.EMA(decay=0.999),
    "swa": lambda: keras_regkit.SWA(start_epoch=0),
    "schedule": lambda: keras_regkit.RegularizationSchedule(dropout=_ramp()),
    "schedule-per-step": lambda: keras_regkit.RegularizationSchedule(
        dropout=_ramp(), per_step=True),
}


def _arm(callback, steps, seed, batch=128):
    keras.utils.set_random_seed(seed)
    model = keras_regkit.schedulable_dropout(cifar10.build_vgg_like(l2=1e-4))
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(seed)
    x = rng.random((steps * batch, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, size=steps * batch)
    callbacks = [] if callback is None else [callback()]

    def epoch(_steps):
        started = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False,
                  callbacks=callbacks)
        return (time.perf_counter() - started) / steps

    return epoch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    timing_arguments(parser, rounds=9, steps=10)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    args = parser.parse_args()

    def rows():
        for name in args.arms:
            plain = _arm(None, args.steps, seed=0)
            with_callback = _arm(ARMS[name], args.steps, seed=0)
            result = interleaved(with_callback, plain, args.rounds, args.steps)
            yield [name, *ratio_cells(result), f"{result['a_ms']:.1f}", f"{result['b_ms']:.1f}"]

    print_ratio_table(
        f"callback / plain fit, VGG-like, batch 128, {args.steps} steps an epoch, "
        f"{args.rounds} interleaved rounds",
        ["arm", "median ratio", "IQR", "ms/step with", "ms/step plain"], rows())


if __name__ == "__main__":
    main()
