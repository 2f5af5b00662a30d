"""SWA and EMA against the last weights, on one ResNet-20 run over CIFAR-10 (local copy).

One training run, three models read off it each epoch, so the comparison is
side by side by construction (same data order, same initial weights, same
steps): the last weights (`val_accuracy`), the SWA average from `--swa-start`
with batch-norm statistics recalibrated on the training subset
(`val_swa_accuracy`), and an EMA with timm's warm-up whose batch-norm
statistics are averaged too (`val_ema_accuracy`). Both callbacks leave the
last weights in the model (`final_weights="last"`), so the plain run is what
`fit` alone would give.

    TFDS_DATA_DIR=../shared/tensorflow_datasets python benchmarks/averaging_cifar10.py \
        --train-limit 10000 --epochs 10 --swa-start 5 --out runs/averaging

Writes `<out>/epochs.jsonl` (a row per epoch, as it goes) and prints a table.
"""

import time

import keras

import _bench
import keras_regkit
from keras_regkit.baselines import cifar10


def main(argv=None):
    parser = _bench.argument_parser(__doc__)
    _bench.run_arguments(parser, out="runs/averaging")
    parser.add_argument("--train-limit", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--swa-start", type=int, default=5, help="0-based epoch")
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)

    write_epoch = _bench.json_lines(args.out, "epochs.jsonl")
    keras.utils.set_random_seed(args.seed)
    data = cifar10.load_cifar10(batch_size=args.batch_size, data_dir=args.data_dir,
                                train_limit=args.train_limit, standardize=True,
                                augment=True, seed=args.seed)
    model = cifar10.build_resnet(20)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    swa = keras_regkit.SWA(start_epoch=args.swa_start, recalibrate_data=data.train_eval,
                           validation_data=data.test, final_weights="last")
    ema = keras_regkit.EMA(decay=args.ema_decay, validation_data=data.test,
                           final_weights="last")

    def write_row(epoch, logs):
        write_epoch({"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}})

    started = time.time()
    history = model.fit(data.train, epochs=args.epochs, validation_data=data.test, verbose=2,
                        callbacks=[swa, ema, keras.callbacks.LambdaCallback(
                            on_epoch_end=write_row)])
    minutes = (time.time() - started) / 60
    logs = history.history
    what = (f"ResNet-20, CIFAR-10 (local copy), {args.train_limit} training images, "
            f"{args.epochs} epochs, Adam 1e-3, augmentation")
    print(f"\n{_bench.run_line(what, f'{minutes:.1f} min')}\n")

    def rows():
        for i in range(args.epochs):
            cells = [i + 1, f"{logs['val_accuracy'][i]:.4f}"]
            for key in ("val_swa_accuracy", "val_ema_accuracy"):
                values = logs.get(key, [])
                offset = args.epochs - len(values)  # SWA logs from its start epoch
                cells.append(f"{values[i - offset]:.4f}" if i >= offset else "")
            yield cells

    _bench.print_markdown(["epoch", "last weights", "SWA (BN recalibrated)", "EMA"], rows())


if __name__ == "__main__":
    main()
