"""L2 penalty vs decoupled weight decay: the same under SGD, different under Adam.

For plain SGD, `L2(c)` on the kernels (gradient `2c·w`) and
`DecoupledWeightDecay(SGD, weight_decay=2c)` (`w ← w − lr·2c·w`) give the same weights;
under Adam they differ (Adam rescales the penalty's gradient, not the decay), which is
why decoupled decay exists. Then the three `decay_scaling`s under a cosine learning-rate
schedule: the fraction of each weight removed per step, printed and plotted.

    python examples/weight_decay_vs_l2.py [--smoke] [--out DIR]
"""

import argparse
import pathlib

import keras
import numpy as np

import keras_regkit


def train(optimizer, regularizer, x, y, epochs):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="tanh", kernel_regularizer=regularizer),
        keras.layers.Dense(1, kernel_regularizer=regularizer),
    ])
    model.compile(optimizer, "mse")
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    return model.get_weights()


def max_diff(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))


def decay_per_step(decay_scaling, steps, weight_decay=0.1, learning_rate=0.1):
    """Fraction of a weight each step removes, measured with zero gradients."""
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    optimizer = keras_regkit.DecoupledWeightDecay(
        keras.optimizers.SGD(schedule), weight_decay=weight_decay, decay_scaling=decay_scaling)
    kernel = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
    fractions = []
    for _ in range(steps):
        before = float(kernel[0, 0])
        optimizer.apply_gradients([(np.zeros((2, 2), "float32"), kernel)])
        fractions.append(1.0 - float(kernel[0, 0]) / before)
    return fractions


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny settings (seconds)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default="runs/examples/weight_decay_vs_l2")
    args = parser.parse_args(argv)
    epochs, steps = (2, 10) if args.smoke else (args.epochs, 100)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1))).astype("float32")
    c = 1e-2

    results = {}
    for name, make in [("sgd", lambda: keras.optimizers.SGD(0.05)),
                       ("adam", lambda: keras.optimizers.Adam(0.01))]:
        with_l2 = train(make(), keras_regkit.L2(c), x, y, epochs)
        with_decay = train(keras_regkit.DecoupledWeightDecay(make(), weight_decay=2 * c),
                           None, x, y, epochs)
        results[name] = max_diff(with_l2, with_decay)
        print(f"{name:4s}: L2({c}) vs DecoupledWeightDecay(weight_decay={2 * c}): "
              f"max |weight difference| = {results[name]:.3g}")

    curves = {s: decay_per_step(s, steps) for s in ("learning_rate", "schedule", "none")}
    print("step  " + "  ".join(f"{s:>13s}" for s in curves))
    for step in range(0, steps, max(1, steps // 5)):
        print(f"{step:4d}  " + "  ".join(f"{curves[s][step]:13.5f}" for s in curves))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(6, 4))
    for scaling, fractions in curves.items():
        axes.plot(fractions, label=f'decay_scaling="{scaling}"')
    axes.set(xlabel="step (cosine learning-rate schedule)", ylabel="fraction decayed per step",
             yscale="log", title="weight_decay=0.1, learning_rate=0.1")
    axes.legend()
    figure.tight_layout()
    figure.savefig(out / "decay_scaling.png")
    plt.close(figure)
    print(f"wrote {out / 'decay_scaling.png'}")
    print(f"RESULT weight_decay_vs_l2 sgd_diff={results['sgd']:.3g} adam_diff={results['adam']:.3g}")
    return results


if __name__ == "__main__":
    main()
