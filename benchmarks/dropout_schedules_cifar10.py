"""Early and late dropout against constant dropout (and none), on CIFAR-10 (local copy).

Liu et al. (2023), "Dropout reduces underfitting": dropout only in the first
epochs (early) helps models that underfit; dropout that starts late helps
models that overfit. Two set-ups, each with three arms trained from the same
initial weights on the same data order, one after another in one process:

- underfitting: the 1-block VGG-like net (Conv 32 x2, pool, Dense 256) on
  `--under-images` images with augmentation: no dropout, constant dropout,
  early dropout (`EarlySchedule(epochs=--early-epochs)`);
- overfitting: the 2-block VGG-like net on `--over-images` images, no
  augmentation (the quick job's `none` set-up): no dropout, constant dropout,
  late dropout (`LateSchedule(epochs=--late-epochs)`).

The dropout layers are the net's own (0.25 after each pool, 0.5 after the
hidden Dense), made schedulable with `keras_regkit.schedulable_dropout`.

    TFDS_DATA_DIR=../shared/tensorflow_datasets python benchmarks/dropout_schedules_cifar10.py \
        --out runs/dropout_schedules

Writes `<out>/runs.jsonl` (a row per arm, as it goes) and prints a table.
"""

import json
import time

import keras

import _bench
import keras_regkit
from keras_regkit.baselines import cifar10


def _arm(name, blocks, dropout, schedule, data, epochs, seed):
    keras.utils.set_random_seed(seed)  # the same initial weights in every arm
    model = cifar10.build_vgg_like(l2=0.0, dropout=dropout, blocks=blocks)
    callbacks = []
    if dropout:
        model = keras_regkit.schedulable_dropout(model)
    if schedule is not None:
        callbacks.append(keras_regkit.RegularizationSchedule(dropout=schedule))
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    started = time.time()
    history = model.fit(data.train, epochs=epochs, validation_data=data.test, verbose=0,
                        callbacks=callbacks)
    train = model.evaluate(data.train_eval, verbose=0, return_dict=True)
    test = model.evaluate(data.test, verbose=0, return_dict=True)
    return {
        "arm": name, "train_accuracy": train["accuracy"], "test_accuracy": test["accuracy"],
        "gap": train["accuracy"] - test["accuracy"],
        "best_test_accuracy": max(history.history["val_accuracy"]),
        "best_epoch": 1 + history.history["val_accuracy"].index(
            max(history.history["val_accuracy"])),
        "test_accuracy_per_epoch": [round(v, 4) for v in history.history["val_accuracy"]],
        "minutes": (time.time() - started) / 60,
    }


def main(argv=None):
    parser = _bench.argument_parser(__doc__)
    _bench.run_arguments(parser, out="runs/dropout_schedules")
    parser.add_argument("--under-images", type=int, default=10000)
    parser.add_argument("--under-epochs", type=int, default=8)
    parser.add_argument("--early-epochs", type=int, default=2)
    parser.add_argument("--over-images", type=int, default=1000)
    parser.add_argument("--over-epochs", type=int, default=12)
    parser.add_argument("--late-epochs", type=int, default=4)
    parser.add_argument("--test-limit", type=int, default=5000,
                        help="the first N test images (evaluated every epoch)")
    args = parser.parse_args(argv)
    write_run = _bench.json_lines(args.out, "runs.jsonl")

    setups = [
        ("underfitting", 1, args.under_images, args.under_epochs, True,
         [("none", False, None), ("constant", True, None),
          (f"early ({args.early_epochs} epochs)", True,
           keras_regkit.EarlySchedule(epochs=args.early_epochs))]),
        ("overfitting", 2, args.over_images, args.over_epochs, False,
         [("none", False, None), ("constant", True, None),
          (f"late (from epoch {args.late_epochs + 1})", True,
           keras_regkit.LateSchedule(epochs=args.late_epochs))]),
    ]
    rows = []
    for setup, blocks, images, epochs, augment, arms in setups:
        data = cifar10.load_cifar10(batch_size=128, data_dir=args.data_dir, train_limit=images,
                                    test_limit=args.test_limit, augment=augment, seed=args.seed)
        for name, dropout, schedule in arms:
            row = {"setup": setup, "images": images, "epochs": epochs, "blocks": blocks,
                   **_arm(name, blocks, dropout, schedule, data, epochs, args.seed)}
            rows.append(row)
            write_run(row)
            print(json.dumps(row), flush=True)

    what = (f"CIFAR-10 (local copy), first {args.test_limit} test images, VGG-like, "
            f"Adam 1e-3, seed {args.seed}")
    print(f"\n{_bench.run_line(what)}\n")
    _bench.print_markdown(
        ["set-up", "arm", "train acc.", "test acc.", "gap", "best test acc. (epoch)"],
        ([f"{row['setup']} ({row['images']} images, {row['blocks']} block(s), "
          f"{row['epochs']} epochs)", row["arm"], f"{row['train_accuracy']:.4f}",
          f"{row['test_accuracy']:.4f}", f"{row['gap']:+.4f}",
          f"{row['best_test_accuracy']:.4f} ({row['best_epoch']})"] for row in rows))


if __name__ == "__main__":
    main()
