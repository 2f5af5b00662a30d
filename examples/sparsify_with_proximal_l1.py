"""Sparsity on digits: subgradient L1 vs proximal L1 vs proximal group L1.

An MLP on scikit-learn's 8x8 digits trained three ways: an `L1` penalty in the loss
(subgradient steps: small weights but almost no exact zeros), the proximal L1 step of
`DecoupledWeightDecay(l1=...)` (soft-thresholding: exact zeros), and its group-L1 step
(`group_l1=...`: whole hidden units to zero). Prints the `sparsity()` table, accuracy,
exact-zero counts, and the size of the network with the zeroed hidden units pruned.

    python examples/sparsify_with_proximal_l1.py [--smoke]
"""

import argparse

import keras
import numpy as np
from sklearn import datasets

import keras_regkit

HIDDEN = 128


def train(x, y, epochs, regularizer=None, **prox):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(HIDDEN, activation="relu", name="hidden"),
        keras.layers.Dense(10, name="logits"),
    ])
    if regularizer is not None:
        keras_regkit.regularize(model, {"hidden": regularizer, "logits": regularizer})
    optimizer = keras.optimizers.Adam(1e-2)
    if prox:
        optimizer = keras_regkit.DecoupledWeightDecay(optimizer, weight_decay=0.0, **prox)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x[:1400], y[:1400], batch_size=64, epochs=epochs, verbose=0)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="fewer epochs (seconds)")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    epochs = 3 if args.smoke else args.epochs

    x, y = datasets.load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")

    runs = {
        "subgradient L1": dict(regularizer=keras_regkit.L1(1e-3)),
        "proximal L1": dict(l1=1e-1),
        "proximal group L1": dict(group_l1=3.0),
    }
    results = {}
    for name, settings in runs.items():
        model = train(x, y, epochs, **settings)
        print(f"\n{name}:")
        rows = keras_regkit.sparsity(model)
        kernels = [row for row in rows if row["variable"] and row["variable"].endswith("kernel")]
        zeros = sum(row["zeros"] for row in kernels)
        hidden_kernel = model.get_layer("hidden").kernel.numpy()
        kept = int(np.sum(np.any(hidden_kernel != 0, axis=0)))  # hidden units with an input
        pruned_size = 64 * kept + kept + kept * 10 + 10
        accuracy = model.evaluate(x[1400:], y[1400:], verbose=0)[1]
        results[name] = {"zeros": zeros, "kept_units": kept, "accuracy": accuracy}
        print(f"test accuracy {accuracy:.3f}, exact zeros in kernels {zeros}, hidden units kept "
              f"{kept}/{HIDDEN}, pruned size {pruned_size} parameters "
              f"(from {64 * HIDDEN + HIDDEN + HIDDEN * 10 + 10})")
    print(f"RESULT sparsify subgradient_zeros={results['subgradient L1']['zeros']} "
          f"proximal_zeros={results['proximal L1']['zeros']} "
          f"group_kept_units={results['proximal group L1']['kept_units']}/{HIDDEN}")
    return results


if __name__ == "__main__":
    main()
