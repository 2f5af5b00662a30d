"""Nothing lost on save: a fresh-process `.keras` round trip of every public object.

Four models (one with every regularizer, `MaxNorm` and a
`DecoupledWeightDecay(Adam)` optimizer; one transformed by
`regularize`/`constrain`, with a schedule, `toward="initial"` and group L1;
one made by `insert_dropout`; one whose decay mask is given as
`variable.path` globs) are trained a few steps in this process, saved as
`.keras`, and loaded in ONE new Python process with `safe_mode=True` and no
`custom_objects`. Predictions, `model.losses`, the optimizer's variables
(bit-identical), and the next training step on the same batch (same update, so
the optimizer state was restored) must equal the in-process original's.

Crash and resume: `test_reliability_resume.py`; scale-out:
`test_reliability_distribute.py`.
"""

import json
import textwrap

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import (
    L1,
    L2,
    CorrectedElasticNet,
    DecoupledWeightDecay,
    ElasticNet,
    GroupLasso,
    MaxNorm,
)
from tests import helpers
from tests.rules_saving.reliability_problems import dense_stack
from tests.rules_saving.reliability_problems import seeded as _seeded

Dense = keras.layers.Dense


# --- 1. fresh-process round trip ---------------------------------------------------


def _zoo_model():
    """Every regularizer and MaxNorm set at construction; the wrapper optimizer."""
    inputs = keras.Input((6, 6, 2), name="image")
    h = keras.layers.Conv2D(
        4, 3, name="conv", kernel_initializer=_seeded(1),
        kernel_regularizer=GroupLasso(0.01), bias_regularizer=L1(0.01),
        kernel_constraint=MaxNorm(0.8),
    )(inputs)
    h = keras.layers.Flatten()(h)
    h = Dense(8, activation="tanh", name="dense_en", kernel_initializer=_seeded(2),
              kernel_regularizer=ElasticNet(1e-3, 1e-2), bias_regularizer=L2(1e-2))(h)
    h = Dense(6, activation="tanh", name="dense_cen", kernel_initializer=_seeded(3),
              kernel_regularizer=CorrectedElasticNet(1e-3, 1e-2),
              kernel_constraint=MaxNorm(1.5, axis=[0]))(h)
    h = Dense(4, activation="tanh", name="dense_l1", kernel_initializer=_seeded(4),
              kernel_regularizer=L1(1e-3))(h)
    outputs = Dense(2, name="logits", kernel_initializer=_seeded(5),
                    kernel_regularizer=L2(1e-3))(h)
    model = keras.Model(inputs, outputs, name="zoo")
    model.compile(
        optimizer=DecoupledWeightDecay(
            keras.optimizers.Adam(learning_rate=1e-2),
            weight_decay=1e-2,
            exclude=["*/bias", "*logits/*"],
            l1=1e-3,
        ),
        loss="mse",
    )
    x = np.random.default_rng(10).normal(size=(8, 6, 6, 2)).astype("float32")
    y = np.random.default_rng(11).normal(size=(8, 2)).astype("float32")
    return model, x, y


def _ruled_model():
    """A plain model (with a nested block) regularized and constrained after build."""
    block = keras.Sequential(
        [keras.Input((6,)), Dense(6, activation="relu", name="inner",
                                  kernel_initializer=_seeded(6))],
        name="block",
    )
    inputs = keras.Input((5,))
    h = Dense(6, activation="relu", name="h1", kernel_initializer=_seeded(7))(inputs)
    h = block(h)
    outputs = Dense(3, name="out", kernel_initializer=_seeded(8))(h)
    model = keras.Model(inputs, outputs, name="ruled")
    keras_regkit.regularize(model, {Dense: L2(1e-2), "out": GroupLasso(1e-2)})
    keras_regkit.regularize(model, {"h1": L1(1e-2), "inner": ElasticNet(1e-3, 1e-3)},
                            target="bias")
    keras_regkit.constrain(model, {"h1": MaxNorm(0.9), "inner": MaxNorm(1.1)})
    schedule = keras.optimizers.schedules.ExponentialDecay(0.05, 10, 0.5)
    model.compile(
        optimizer=DecoupledWeightDecay(
            keras.optimizers.SGD(learning_rate=schedule, momentum=0.9, nesterov=True),
            weight_decay=5e-2,
            decay_scaling="schedule",
            toward="initial",
            include=["*/kernel"],
            group_l1=1e-3,
        ),
        loss="mse",
    )
    x = np.random.default_rng(12).normal(size=(8, 5)).astype("float32")
    y = np.random.default_rng(13).normal(size=(8, 3)).astype("float32")
    return model, x, y


def _dropout_model():
    base = dense_stack(7, [("d1", 8, "relu"), ("d2", 8, "relu"), ("head", 2, None)],
                       "base", seed=9)
    model = keras_regkit.insert_dropout(base, rate=0.3, after=Dense)
    model.compile(
        optimizer=DecoupledWeightDecay(
            keras.optimizers.RMSprop(learning_rate=1e-2), weight_decay=1e-2
        ),
        loss="mse",
    )
    x = np.random.default_rng(14).normal(size=(8, 7)).astype("float32")
    y = np.random.default_rng(15).normal(size=(8, 2)).astype("float32")
    return model, x, y




# The same inspection runs in this process and in the fresh one.
_INSPECT = '''
def pin_dropout_rng(model, seed):
    """Keras does not save RNG state: pin every dropout layer's seed, the same in both runs."""
    count = 0
    for layer in model.layers:
        generator = getattr(layer, "seed_generator", None)
        if isinstance(layer, keras.layers.Dropout) and generator is not None:
            state = generator.state
            state.assign(np.asarray([seed + count, 0], dtype=state.dtype))
            count += 1
    return count


def inspect(model, x, y):
    out = {"predictions": np.asarray(model(x, training=False))}
    for i, loss in enumerate(model.losses):
        out[f"loss/{i}"] = np.asarray(loss)
    for i, w in enumerate(model.weights):
        out[f"weight/{i}"] = np.asarray(w)
    for i, v in enumerate(model.optimizer.variables):
        out[f"optimizer/{i}"] = np.asarray(v)
    meta = {
        "optimizer": type(model.optimizer).__name__,
        "optimizer_config": keras.saving.serialize_keras_object(model.optimizer),
        "optimizer_paths": [v.path for v in model.optimizer.variables],
        "layers": [type(layer).__name__ for layer in model.layers],
        "regularizers": [
            [v.path, keras.saving.serialize_keras_object(getattr(v, "regularizer", None)),
             keras.saving.serialize_keras_object(getattr(v, "constraint", None))]
            for v in model.weights
        ],
    }
    pin_dropout_rng(model, 1234)
    model.train_on_batch(x, y)
    for i, w in enumerate(model.weights):
        out[f"step_weight/{i}"] = np.asarray(w)
    for i, v in enumerate(model.optimizer.variables):
        out[f"step_optimizer/{i}"] = np.asarray(v)
    return out, meta
'''


def _inspect_here(model, x, y):
    namespace = {"np": np, "keras": keras}
    exec(_INSPECT, namespace)
    out, meta = namespace["inspect"](model, x, y)
    return out, json.loads(json.dumps(meta, default=repr))


def _sequential_patterns_model():
    """A Sequential model whose decay mask is given as `variable.path` globs.

    `exclude` holds one pattern in each of the two forms a user may take from
    `variable.path`: with the model's name (`"seqnet/d1/*"`, what `.path`
    shows for a Sequential model after it is built) and without (`"d2/*"`,
    what the docstring's `"dense_2/*"` looks like, and what `.path` shows
    after loading). The decay must select the same variables before and after
    a save/load.
    """
    model = dense_stack(5, [("d1", 4, "tanh"), ("d2", 4, "tanh"), ("d3", 2, None)],
                        "seqnet", seed=12)
    model.compile(
        optimizer=DecoupledWeightDecay(
            keras.optimizers.SGD(learning_rate=0.1), weight_decay=0.2,
            exclude=["seqnet/d1/*", "d2/*"],
        ),
        loss="mse",
    )
    x = np.random.default_rng(16).normal(size=(8, 5)).astype("float32")
    y = np.random.default_rng(17).normal(size=(8, 2)).astype("float32")
    return model, x, y


ROUND_TRIP_MODELS = {
    "zoo": _zoo_model,
    "ruled": _ruled_model,
    "dropout": _dropout_model,
    "sequential_patterns": _sequential_patterns_model,
}


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """Trains, saves and inspects every model here; loads all in ONE fresh process.

    Returns `{name: (expected, expected_meta, got, meta)}`, or `{name: error}`
    for a model whose in-process part failed (reported by its own test).
    """
    import traceback
    import warnings

    root = tmp_path_factory.mktemp("round_trip")
    originals, errors = {}, {}
    for name, build in ROUND_TRIP_MODELS.items():
        keras.utils.clear_session()
        keras.utils.set_random_seed(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pattern warnings are tested elsewhere
                model, x, y = build()
                callbacks = [keras_regkit.ElasticNetCorrection()] if name == "zoo" else []
                model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
                          callbacks=callbacks)
            assert int(model.optimizer.iterations) == 4
            model.save(root / f"{name}.keras")
            np.savez(root / f"{name}.data.npz", x=x, y=y)
            originals[name] = _inspect_here(model, x, y)
        except Exception:  # noqa: BLE001 - reported by the model's own test
            errors[name] = traceback.format_exc(limit=-8)
    keras.utils.clear_session()

    if originals:
        helpers.run_python(
            "import json, numpy as np, keras\n"
            "import keras_regkit  # registers the package's classes; nothing else\n"
            + _INSPECT
            + textwrap.dedent(f"""
            for name in {list(originals)!r}:
                root = {str(root)!r} + "/" + name
                model = keras.saving.load_model(root + ".keras", safe_mode=True)
                data = np.load(root + ".data.npz")
                out, meta = inspect(model, data["x"], data["y"])
                np.savez(root + ".loaded.npz", **out)
                with open(root + ".loaded.json", "w") as f:
                    json.dump(meta, f, default=repr)
            """)
        )
    results = dict(errors)
    for name, (expected, expected_meta) in originals.items():
        got = dict(np.load(root / f"{name}.loaded.npz"))
        meta = json.loads((root / f"{name}.loaded.json").read_text())
        results[name] = expected, expected_meta, got, meta
    return results


@pytest.mark.parametrize("name", list(ROUND_TRIP_MODELS))
def test_fresh_process_round_trip(round_trip, name):
    """Loaded state is bit-identical; the next training step is the same step."""
    if isinstance(round_trip[name], str):
        pytest.fail(f"training/saving {name!r} in this process failed:\n{round_trip[name]}")
    expected, expected_meta, got, meta = round_trip[name]
    assert meta["optimizer"] == "DecoupledWeightDecay"
    assert meta["optimizer_config"] == expected_meta["optimizer_config"]
    # Same optimizer variables in the same order (their values are compared
    # below). Not their paths: Keras names variables from the name scopes of
    # their creation, which differ between a built model and a loaded one, for
    # plain Keras too ("net/d/kernel" -> "d/kernel" for a Sequential model;
    # "adam/sequential_dense_kernel_momentum" -> "adam/dense_kernel_momentum").
    assert len(meta["optimizer_paths"]) == len(expected_meta["optimizer_paths"])
    assert meta["layers"] == expected_meta["layers"]
    assert [r[1:] for r in meta["regularizers"]] == [
        r[1:] for r in expected_meta["regularizers"]
    ]
    assert sorted(got) == sorted(expected)
    for key, want in expected.items():
        if not key.startswith("step_"):  # loaded state: bit-identical
            np.testing.assert_array_equal(got[key], want, err_msg=key)
    for key, want in expected.items():
        if key.startswith("step_"):
            # The next step: same batch, restored optimizer state -> same update.
            np.testing.assert_allclose(
                got[key], want, rtol=1e-6, atol=1e-7,
                err_msg=f"{key}: {(ROUND_TRIP_MODELS[name].__doc__ or name).splitlines()[0]}",
            )

    # The round trip is not vacuous: penalties, constraints, dropout, decay are there.
    losses = [k for k in expected if k.startswith("loss/")]
    regularized = [r for r in expected_meta["regularizers"] if r[1] is not None]
    constrained = [r for r in expected_meta["regularizers"] if r[2] is not None]
    if name == "zoo":
        assert len(losses) == 7 and len(constrained) == 2
        assert any(r[1]["class_name"] == "CorrectedElasticNet"
                   and r[1]["config"]["correction_applied"] is True for r in regularized)
    elif name == "ruled":
        assert len(regularized) == 5 and len(constrained) == 2  # 3 kernels + 2 biases
    elif name == "dropout":
        assert expected_meta["layers"].count("Dropout") == 2  # not after the output
