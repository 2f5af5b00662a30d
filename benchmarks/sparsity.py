"""Exact zeros: proximal L1 against a plain L1 penalty, at matched strength.

Both arms minimize the same objective, mean cross-entropy + l1 * sum|W| over
the kernels, with plain SGD:

  keras L1   keras.regularizers.L1(l1) on every kernel: SGD on the subgradient
             l1 * sign(w), which makes weights oscillate around zero and
             almost never land on it;
  prox L1    DecoupledWeightDecay(SGD, weight_decay=0, l1=l1): the
             proximal-gradient (ISTA) step w <- sign(w) max(|w| - lr*l1, 0),
             which sets weights exactly to zero.

Data: scikit-learn's bundled digits (1,797 8x8 images, standardized; 75/25
split), an MLP 64-256-256-10. Reports test accuracy and the fraction of kernel
entries that are exactly 0.0, as mean over seeds.

Usage:
    python benchmarks/sparsity.py [--epochs 60] [--seeds 3] [--l1 1e-4 1e-3 3e-3]
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import _bench  # noqa: E402
import keras_regkit  # noqa: E402


def load_data():
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    scaler = StandardScaler().fit(x_train)
    return (
        scaler.transform(x_train).astype("float32"), y_train,
        scaler.transform(x_test).astype("float32"), y_test,
    )


def mlp(kernel_regularizer=None):
    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(256, activation="relu", kernel_regularizer=kernel_regularizer),
        keras.layers.Dense(256, activation="relu", kernel_regularizer=kernel_regularizer),
        keras.layers.Dense(10, activation="softmax", kernel_regularizer=kernel_regularizer),
    ])


def run(arm, l1, seed, data, epochs, learning_rate):
    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    if arm == "keras L1":
        model = mlp(keras.regularizers.L1(l1) if l1 else None)
        optimizer = keras.optimizers.SGD(learning_rate)
    else:
        model = mlp()
        optimizer = keras_regkit.DecoupledWeightDecay(
            keras.optimizers.SGD(learning_rate), weight_decay=0.0, l1=l1
        )
    model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    kernels = [layer.kernel.numpy() for layer in model.layers]
    zeros = sum(int((k == 0.0).sum()) for k in kernels)
    size = sum(k.size for k in kernels)
    return accuracy, zeros / size


def main(argv=None):
    parser = _bench.argument_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--l1", type=float, nargs="+", default=[1e-4, 1e-3, 3e-3])
    args = parser.parse_args(argv)
    data = load_data()

    def rows():
        for l1 in args.l1:
            for arm in ("keras L1", "prox L1"):
                results = [
                    run(arm, l1, seed, data, args.epochs, args.learning_rate)
                    for seed in range(args.seeds)
                ]
                accuracy = np.mean([r[0] for r in results])
                zeros = np.mean([r[1] for r in results])
                yield [f"{l1:g}", arm, f"{accuracy:.4f}", f"{zeros:.4f}"]

    _bench.print_table(
        f"digits, MLP 64-256-256-10, SGD lr={args.learning_rate}, batch 64, "
        f"{args.epochs} epochs, mean of {args.seeds} seeds",
        ["l1", "method", "test accuracy", "exact-zero fraction of kernels"],
        rows(),
    )

if __name__ == "__main__":
    main()
