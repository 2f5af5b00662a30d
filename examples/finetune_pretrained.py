"""Fine-tuning a pretrained network: per-layer λ on the built model, L2-SP on the rest.

A `keras.applications.MobileNetV2` with `weights=None` stands in for a pretrained
backbone (pass `weights="imagenet"` on a connected machine). `regularize()` puts L2 on
the built model's inverted-residual blocks and a stronger one on the new head;
`DecoupledWeightDecay(toward="initial")` pulls the remaining kernels toward their
weights at the start of fine-tuning (L2-SP, Li et al. 2018), with biases and
normalization parameters excluded; `summary()` shows every rule; the model is saved
and reloaded with `keras_regkit.load_model`, rules and predictions intact.

    python examples/finetune_pretrained.py [--smoke] [--out DIR]
"""

import argparse
import pathlib

import keras
import numpy as np

import keras_regkit


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny settings (seconds)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default="runs/examples/finetune_pretrained")
    args = parser.parse_args(argv)
    num_images, epochs = (16, 1) if args.smoke else (512, args.epochs)

    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None)
    features = keras.layers.GlobalAveragePooling2D()(backbone.output)
    outputs = keras.layers.Dense(10, name="head")(features)
    model = keras.Model(backbone.input, outputs)

    # Per-layer rules on the built model: the blocks get a small λ, the new head a larger one.
    keras_regkit.regularize(model, {"block_*": keras_regkit.L2(1e-5),
                                    "head": keras_regkit.L2(1e-4)}, target="kernels")
    # L2-SP on the other kernels (stem, first block, last 1x1 conv); biases and
    # batch-norm parameters never decay.
    optimizer = keras_regkit.DecoupledWeightDecay(
        keras.optimizers.Adam(1e-4), weight_decay=1e-2, toward="initial",
        exclude=["block_*/*", "head/*"])
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rows = keras_regkit.summary(model)

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(num_images, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, num_images)
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0 if args.smoke else 2)

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "finetuned.keras")
    restored = keras_regkit.load_model(out / "finetuned.keras")
    difference = float(np.max(np.abs(np.asarray(model(x[:8], training=False))
                                     - np.asarray(restored(x[:8], training=False)))))
    print(f"regularized kernels: {len(model.losses)}, after reload: {len(restored.losses)}")
    print(f"RESULT finetune rules={len(model.losses)} restored={len(restored.losses)} "
          f"max_prediction_diff={difference:.3g}")
    return {"rules": len(model.losses), "restored": len(restored.losses),
            "summary_rows": rows, "max_prediction_diff": difference}


if __name__ == "__main__":
    main()
