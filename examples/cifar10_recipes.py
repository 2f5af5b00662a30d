"""The CIFAR-10 baseline from Python: two variants trained side by side, then compared.

`build_variant` shows the model a variant builds, `load_cifar10` the data (a
tensorflow-datasets directory, never downloaded), `train` runs a variant end to end into
a run folder, and `compare_runs` prints the table and writes one picture of all curves.

    python examples/cifar10_recipes.py [--smoke] [--data-dir DIR] [--train-limit N] [--out DIR]
"""

import argparse
import os
import pathlib

from keras_regkit.baselines import cifar10


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny settings (seconds)")
    parser.add_argument("--data-dir", default=os.environ.get("TFDS_DATA_DIR"),
                        help="tensorflow-datasets directory (default: $TFDS_DATA_DIR)")
    parser.add_argument("--train-limit", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--variants", default="none,l2+dropout")
    parser.add_argument("--out", default="runs/examples/cifar10_recipes")
    args = parser.parse_args(argv)
    train_limit, test_limit, epochs, batch_size = (
        (16, 8, 1, 8) if args.smoke else (args.train_limit, 1000, args.epochs, 128))
    variants = args.variants.split(",")

    for name in variants:
        print(f"{name}: {cifar10.get_variant(name).description}")
    cifar10.build_variant(variants[-1]).summary(line_length=90)
    data = cifar10.load_cifar10(batch_size=batch_size, data_dir=args.data_dir,
                                train_limit=train_limit, test_limit=test_limit)
    print(f"data: {data.num_train} training images")

    out = pathlib.Path(args.out)
    folders = []
    for name in variants:
        folder = out / name.replace("+", "_")
        cifar10.train(name, epochs=epochs, batch_size=batch_size, out=folder,
                      data_dir=args.data_dir, train_limit=train_limit,
                      test_limit=test_limit, verbose=0 if args.smoke else 2)
        folders.append(folder)
    rows = cifar10.compare_runs(folders, plot=out / "compare.png")
    print(f"wrote {out / 'compare.png'}")
    print(f"RESULT cifar10_recipes runs={len(folders)} plot={(out / 'compare.png').exists()}")
    return rows


if __name__ == "__main__":
    main()
