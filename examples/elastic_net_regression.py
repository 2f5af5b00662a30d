"""Elastic net on scikit-learn's diabetes data: Keras against scikit-learn.

scikit-learn's `ElasticNet(alpha, l1_ratio)` minimizes `1/(2m)·‖y − Xw‖² + α·ρ·‖w‖₁ +
½·α·(1−ρ)·‖w‖²`; with Keras's `"mse"` (no ½) the same problem is
`keras_regkit.ElasticNet.from_mix(2·alpha, l1_ratio)`. A linear Keras model trained with
it lands on scikit-learn's coefficients. `CorrectedElasticNet` then applies Zou & Hastie's
`(1 + l2)` rescaling once after training (`apply_elastic_net_correction`), undoing the
double shrinkage of the naive elastic net. Coefficients side by side.

    python examples/elastic_net_regression.py [--smoke]
"""

import argparse

import keras
import numpy as np
from sklearn import datasets
from sklearn import linear_model

import keras_regkit


def fit_linear(x, y, regularizer, epochs):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((x.shape[1],)),
                              keras.layers.Dense(1, kernel_regularizer=regularizer)])
    model.compile(keras.optimizers.Adam(0.02), "mse", steps_per_execution=50)
    # Full-batch gradient steps, `epochs` of them in one pass (less per-epoch overhead).
    model.fit(np.tile(x, (epochs, 1)), np.tile(y, epochs), batch_size=len(x), epochs=1,
              shuffle=False, verbose=0)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="fewer epochs (seconds)")
    parser.add_argument("--epochs", type=int, default=2000)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--l1-ratio", type=float, default=0.5)
    args = parser.parse_args(argv)
    epochs = 400 if args.smoke else args.epochs

    x, y = datasets.load_diabetes(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype("float32")  # standardized inputs
    y = ((y - y.mean()) / y.std()).astype("float32")

    reference = linear_model.ElasticNet(alpha=args.alpha, l1_ratio=args.l1_ratio).fit(x, y)
    naive = keras_regkit.ElasticNet.from_mix(2 * args.alpha, args.l1_ratio)
    print(f"sklearn ElasticNet(alpha={args.alpha}, l1_ratio={args.l1_ratio}) == "
          f"keras_regkit.ElasticNet(l1={naive.l1:.4g}, l2={naive.l2:.4g}) with 'mse'")
    keras_naive = fit_linear(x, y, naive, epochs).layers[0].kernel.numpy()[:, 0]

    corrected_model = fit_linear(
        x, y, keras_regkit.CorrectedElasticNet(l1=naive.l1, l2=naive.l2), epochs)
    keras_regkit.apply_elastic_net_correction(corrected_model)
    corrected = corrected_model.layers[0].kernel.numpy()[:, 0]

    print(f"{'feature':>8s}  {'sklearn':>9s}  {'keras':>9s}  {'corrected':>9s}")
    for i, (a, b, c) in enumerate(zip(reference.coef_, keras_naive, corrected)):
        print(f"{i:8d}  {a:9.4f}  {b:9.4f}  {c:9.4f}")
    difference = float(np.max(np.abs(reference.coef_ - keras_naive)))
    ratio = float(np.linalg.norm(corrected) / np.linalg.norm(keras_naive))
    print(f"corrected / naive norm = {ratio:.4f} (1 + l2 = {1 + naive.l2:.4f})")
    print(f"RESULT elastic_net max_coef_diff_vs_sklearn={difference:.3g} "
          f"correction_ratio={ratio:.4f} expected_ratio={1 + naive.l2:.4f}")
    return {"max_coef_diff": difference, "ratio": ratio, "expected_ratio": 1 + naive.l2}


if __name__ == "__main__":
    main()
