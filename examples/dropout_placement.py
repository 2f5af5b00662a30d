"""Dropout placement on an existing functional model with a branch, two inputs, two outputs.

`dropout_plan` prints where dropout would go, `insert_dropout` rebuilds the model with it
(weights copied), `remove_dropout` takes it out again; in inference every version gives
the same outputs.

    python examples/dropout_placement.py [--smoke]
"""

import argparse

import keras
import numpy as np

import keras_regkit


def build():
    image = keras.Input((16, 16, 3), name="image")
    meta = keras.Input((4,), name="meta")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(image)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    m = keras.layers.Dense(8, activation="relu", name="meta_dense")(meta)
    joined = keras.layers.Concatenate(name="join")([x, m])
    trunk = keras.layers.Dense(32, activation="relu", name="trunk")(joined)
    label = keras.layers.Dense(5, activation="softmax", name="label")(trunk)
    box = keras.layers.Dense(4, name="box")(keras.layers.Dense(16, activation="relu",
                                                              name="box_hidden")(trunk))
    return keras.Model({"image": image, "meta": meta}, {"label": label, "box": box})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="(already seconds)")
    parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    model = build()
    rng = np.random.default_rng(0)
    inputs = {"image": rng.uniform(size=(4, 16, 16, 3)).astype("float32"),
              "meta": rng.normal(size=(4, 4)).astype("float32")}

    print("plan (VGG policy: 0.25 after pooling, 0.5 after hidden Dense, never after outputs):")
    keras_regkit.dropout_plan(model, policy="vgg")
    with_dropout = keras_regkit.insert_dropout(model, policy="vgg")
    without = keras_regkit.remove_dropout(with_dropout)

    def count(m):
        return sum(isinstance(layer, keras.layers.Dropout) for layer in m.layers)

    def difference(a, b):
        out_a, out_b = a(inputs, training=False), b(inputs, training=False)
        return max(float(np.max(np.abs(np.asarray(out_a[k]) - np.asarray(out_b[k]))))
                   for k in out_a)

    inserted = count(with_dropout)
    diff = max(difference(model, with_dropout), difference(model, without))
    print(f"dropout layers: {count(model)} -> {inserted} (inserted) -> {count(without)} (removed)")
    print(f"RESULT dropout inserted={inserted} removed_left={count(without)} max_diff={diff:.3g}")
    return {"inserted": inserted, "removed_left": count(without), "max_diff": diff}


if __name__ == "__main__":
    main()
