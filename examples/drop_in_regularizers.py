"""Drop-in regularizers: keras_regkit's classes where Keras's own go, with the same loss.

A Sequential and a functional model with `kernel_regularizer=keras_regkit.L2(...)` and
`kernel_constraint=keras_regkit.MaxNorm(...)`, the textbook `λ/(2m)` mapping
(`L2.from_textbook`), and the same models built with `keras.regularizers.L2` and
`keras.constraints.MaxNorm`: equal loss before training, and weights that stay together
during training (the drop-in promise shown, not claimed): 2e-7 apart after the 2 smoke
epochs, 1e-2 after the default 20 (measured 2026-11-26). The penalties are the same
function; the max-norm constraints are not quite (Keras divides by `||w|| + 1e-7` and
so also nudges weights inside the ball; ours is the exact projection), and SGD lets such
differences grow. `RegularizationMonitor` puts the penalty beside the loss in the logs.

    python examples/drop_in_regularizers.py [--smoke]
"""

import argparse

import keras
import numpy as np

import keras_regkit


def sequential(regularizer, constraint):
    return keras.Sequential([
        keras.Input((20,)),
        keras.layers.Dense(32, activation="relu", kernel_regularizer=regularizer,
                           kernel_constraint=constraint),
        keras.layers.Dense(3, activation="softmax", kernel_regularizer=regularizer),
    ])


def functional(regularizer, constraint):
    inputs = keras.Input((20,))
    hidden = keras.layers.Dense(32, activation="relu", kernel_regularizer=regularizer,
                                kernel_constraint=constraint)(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", kernel_regularizer=regularizer)(hidden)
    return keras.Model(inputs, outputs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny settings (seconds)")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    epochs = 2 if args.smoke else args.epochs
    num_examples = 64 if args.smoke else 1024

    rng = np.random.default_rng(0)
    x = rng.normal(size=(num_examples, 20)).astype("float32")
    y = rng.integers(0, 3, num_examples)

    # The textbook cost J = 1/m ΣL + λ/(2m) Σ‖W‖² with Keras's mean loss is l2 = λ/(2m).
    ours = keras_regkit.L2.from_textbook(strength=1.0, num_examples=num_examples)
    print(f"L2.from_textbook(strength=1.0, num_examples={num_examples}).l2 = {ours.l2:.6g}"
          f"  (= 1 / (2 * {num_examples}))")
    theirs = keras.regularizers.L2(ours.l2)

    loss_diffs, weight_diffs = [], []
    for build in (sequential, functional):
        keras.utils.set_random_seed(0)
        a = build(ours, keras_regkit.MaxNorm(0.5))
        b = build(theirs, keras.constraints.MaxNorm(0.5, axis=0))  # axis=0 is right for Dense
        b.set_weights(a.get_weights())
        for model in (a, b):
            model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        loss_diffs.append(abs(a.evaluate(x, y, verbose=0) - b.evaluate(x, y, verbose=0)))
        history = a.fit(x, y, batch_size=32, epochs=epochs, shuffle=False, verbose=0,
                        callbacks=[keras_regkit.RegularizationMonitor()])
        b.fit(x, y, batch_size=32, epochs=epochs, shuffle=False, verbose=0)
        weight_diffs.append(max(float(np.max(np.abs(wa - wb)))
                                for wa, wb in zip(a.get_weights(), b.get_weights())))
        last = {k: round(v[-1], 4) for k, v in history.history.items()}
        print(f"{build.__name__:10s}  last epoch: loss {last['loss']} = data_loss "
              f"{last['data_loss']} + penalty {last['penalty']}")
    keras_regkit.summary(a)
    print(f"RESULT drop_in max_loss_diff={max(loss_diffs):.3g} "
          f"max_weight_diff={max(weight_diffs):.3g}")
    return {"max_loss_diff": max(loss_diffs), "max_weight_diff": max(weight_diffs)}


if __name__ == "__main__":
    main()
