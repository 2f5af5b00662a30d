"""Nothing lost on save, crash or scale-out.

- Fresh-process round trip of every public object: four models (one with
  every regularizer, `MaxNorm` and a `DecoupledWeightDecay(Adam)` optimizer;
  one transformed by `regularize`/`constrain`, with a schedule, `toward=
  "initial"` and group L1; one made by `insert_dropout`; one whose decay mask
  is given as `variable.path` globs) are trained a few steps in this process,
  saved as `.keras`, and loaded in ONE new Python process with
  `safe_mode=True` and no `custom_objects`. Predictions, `model.losses`, the
  optimizer's variables (bit-identical), and the next training step on the
  same batch (same update, so the optimizer state was restored) must equal
  the in-process original's.
- Crash and resume (TensorFlow): a `model.fit` in a subprocess is killed
  with SIGKILL in the middle of an epoch, then resumed in another subprocess
  with `keras.callbacks.BackupAndRestore`; it must end with the weights and
  optimizer state of an uninterrupted run.
- Scale-out (TensorFlow): `MirroredStrategy` over 2 logical CPU devices (set
  up by conftest, trained with `model.fit`) and `MultiWorkerMirroredStrategy`
  with 2 worker processes on 127.0.0.1 (TensorFlow's custom-training-loop
  recipe, see `_custom_loop_train`) give the weights of a single device after
  8 steps, for an L2 penalty, an elastic net, MaxNorm, decoupled decay and
  proximal L1.
"""

import json
import signal
import subprocess
import sys
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

Dense = keras.layers.Dense


def _rng(seed):
    return np.random.default_rng(seed)


def _seeded(seed):
    return keras.initializers.GlorotUniform(seed=seed)


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
    x = _rng(10).normal(size=(8, 6, 6, 2)).astype("float32")
    y = _rng(11).normal(size=(8, 2)).astype("float32")
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
    x = _rng(12).normal(size=(8, 5)).astype("float32")
    y = _rng(13).normal(size=(8, 3)).astype("float32")
    return model, x, y


def _dropout_model():
    base = keras.Sequential(
        [
            keras.Input((7,)),
            Dense(8, activation="relu", name="d1", kernel_initializer=_seeded(9)),
            Dense(8, activation="relu", name="d2", kernel_initializer=_seeded(10)),
            Dense(2, name="head", kernel_initializer=_seeded(11)),
        ],
        name="base",
    )
    model = keras_regkit.insert_dropout(base, rate=0.3, after=Dense)
    model.compile(
        optimizer=DecoupledWeightDecay(
            keras.optimizers.RMSprop(learning_rate=1e-2), weight_decay=1e-2
        ),
        loss="mse",
    )
    x = _rng(14).normal(size=(8, 7)).astype("float32")
    y = _rng(15).normal(size=(8, 2)).astype("float32")
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
    model = keras.Sequential(
        [
            keras.Input((5,)),
            Dense(4, activation="tanh", name="d1", kernel_initializer=_seeded(12)),
            Dense(4, activation="tanh", name="d2", kernel_initializer=_seeded(13)),
            Dense(2, name="d3", kernel_initializer=_seeded(14)),
        ],
        name="seqnet",
    )
    model.compile(
        optimizer=DecoupledWeightDecay(
            keras.optimizers.SGD(learning_rate=0.1), weight_decay=0.2,
            exclude=["seqnet/d1/*", "d2/*"],
        ),
        loss="mse",
    )
    x = _rng(16).normal(size=(8, 5)).astype("float32")
    y = _rng(17).normal(size=(8, 2)).astype("float32")
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


# --- 2. crash (SIGKILL mid-epoch) and resume with BackupAndRestore ------------------

_CRASH_SCRIPT = r'''
import json, os, pathlib, signal, sys
import numpy as np
import tensorflow as tf
tf.config.experimental.enable_op_determinism()
import keras
import keras_regkit
from keras_regkit import CorrectedElasticNet, DecoupledWeightDecay, L2, MaxNorm

work = pathlib.Path(sys.argv[1])
EPOCHS, BATCH, KILL_EPOCH, KILL_BATCH = 4, 16, 2, 3
rng = np.random.default_rng(0)
x = rng.normal(size=(128, 8)).astype("float32")
y = (x @ rng.normal(size=(8, 1)) + 0.1 * rng.normal(size=(128, 1))).astype("float32")


def build():
    keras.utils.clear_session()
    keras.utils.set_random_seed(1234)
    init = lambda s: keras.initializers.GlorotUniform(seed=s)
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="tanh", name="h1", kernel_initializer=init(1),
                           kernel_regularizer=CorrectedElasticNet(1e-3, 1e-2)),
        keras.layers.Dense(16, activation="tanh", name="h2", kernel_initializer=init(2),
                           kernel_regularizer=L2(1e-3), kernel_constraint=MaxNorm(1.0)),
        keras.layers.Dense(1, name="out", kernel_initializer=init(3),
                           kernel_regularizer=CorrectedElasticNet(1e-3, 1e-2)),
    ], name="crash")
    model.compile(
        optimizer=DecoupledWeightDecay(keras.optimizers.Adam(1e-2), weight_decay=1e-2,
                                       exclude=["*/bias"], l1=1e-4),
        loss="mse",
    )
    return model


class KillOnce(keras.callbacks.Callback):
    """SIGKILL (no clean-up, no Python exception) mid-epoch, only on the first run."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        marker = work / "killed"
        if self.epoch == KILL_EPOCH and batch == KILL_BATCH and not marker.exists():
            marker.write_text("1")
            os.kill(os.getpid(), signal.SIGKILL)


def save(model, name, history):
    arrays = {f"w{i}": np.asarray(w) for i, w in enumerate(model.weights)}
    arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)})
    np.savez(work / f"{name}.npz", **arrays)
    flags = [l.kernel_regularizer.correction_applied for l in model.layers
             if isinstance(l.kernel_regularizer, CorrectedElasticNet)]
    (work / f"{name}.json").write_text(json.dumps({
        "epochs_run": len(history.history["loss"]),
        "iterations": int(model.optimizer.iterations), "flags": flags}))


backup = work / "backup"
if not (work / "killed").exists():  # first run: reference first, then the doomed run
    model = build()
    history = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
                        callbacks=[keras_regkit.ElasticNetCorrection()])
    save(model, "reference", history)
else:
    meta = json.loads((backup / "training_metadata.json").read_text())
    (work / "backup_seen.json").write_text(json.dumps(meta))
model = build()
history = model.fit(
    x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
    callbacks=[keras.callbacks.BackupAndRestore(str(backup), save_freq="epoch"),
               keras_regkit.ElasticNetCorrection(), KillOnce()],
)
save(model, "resumed", history)
'''


def _run_script(code, args, timeout=300):
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=helpers.REPO_ROOT, env=helpers.child_env(),
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.mark.tensorflow_only
def test_fit_killed_mid_epoch_resumes_to_the_uninterrupted_weights(tmp_path):
    """`save_freq="epoch"`: the kill in epoch 2 resumes from the end of epoch 1.

    Keras 3's `BackupAndRestore` restores weights, optimizer state (the
    optimizer is saved with the model's weights) and the epoch number, but not
    the batch index: with an integer `save_freq` a resumed run would restart
    the epoch from its first batch on mid-epoch weights. So the backup is
    taken at epoch ends, and the batches of the killed epoch are replayed.
    """
    first = _run_script(_CRASH_SCRIPT, [str(tmp_path)])
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert (tmp_path / "killed").exists() and (tmp_path / "reference.json").exists()
    assert not (tmp_path / "resumed.json").exists()

    second = _run_script(_CRASH_SCRIPT, [str(tmp_path)])
    assert second.returncode == 0, second.stderr[-5000:]

    backup_seen = json.loads((tmp_path / "backup_seen.json").read_text())
    assert backup_seen["epoch"] == 2  # epochs 0 and 1 were finished and backed up
    reference = json.loads((tmp_path / "reference.json").read_text())
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert reference["epochs_run"] == 4 and resumed["epochs_run"] == 2
    assert resumed["iterations"] == reference["iterations"] == 4 * 8
    assert resumed["flags"] == reference["flags"] == [True, True]  # corrected once
    want = dict(np.load(tmp_path / "reference.npz"))
    got = dict(np.load(tmp_path / "resumed.npz"))
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-6, err_msg=key)
    assert not (tmp_path / "backup").exists()  # deleted at the end of a finished fit


# --- 3. scale-out: MirroredStrategy and MultiWorkerMirroredStrategy -----------------

SCALEOUT_CASES = ("l2", "elastic_net", "max_norm", "decoupled_decay", "proximal_l1")
SCALEOUT_EPOCHS, SCALEOUT_BATCH = 2, 16  # 64 examples: 8 steps of global batch 16


def _scaleout_data():
    rng = _rng(21)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.normal(size=(64, 4)).astype("float32")
    return x, y


def _scaleout_model(case):
    """Built inside the strategy's scope by the caller."""
    keras.utils.set_random_seed(3)
    regularizer = {"l2": L2(1e-2), "elastic_net": ElasticNet(1e-2, 1e-2)}.get(case)
    constraint = MaxNorm(0.5) if case == "max_norm" else None
    model = keras.Sequential(
        [
            keras.Input((8,)),
            Dense(16, activation="tanh", name="h", kernel_initializer=_seeded(1),
                  kernel_regularizer=regularizer, kernel_constraint=constraint),
            Dense(4, name="out", kernel_initializer=_seeded(2),
                  kernel_regularizer=regularizer, kernel_constraint=constraint),
        ],
        name=f"scale_{case}",
    )
    if case == "decoupled_decay":
        optimizer = DecoupledWeightDecay(keras.optimizers.Adam(1e-2), weight_decay=0.1)
    elif case == "proximal_l1":
        optimizer = DecoupledWeightDecay(keras.optimizers.SGD(0.1), weight_decay=0.0,
                                         l1=0.05)
    else:
        optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    model.compile(optimizer=optimizer, loss="mse")
    return model


def _scaleout_train(model, x, y):
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(SCALEOUT_BATCH)
    options = tf.data.Options()
    # Each global batch of 16 is split across the replicas: same examples per step.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    model.fit(dataset.with_options(options), epochs=SCALEOUT_EPOCHS, shuffle=False,
              verbose=0)
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    assert steps == SCALEOUT_EPOCHS * 64 // SCALEOUT_BATCH
    return [np.asarray(w) for w in model.weights]


def _single_device_weights():
    x, y = _scaleout_data()
    results = {}
    for case in SCALEOUT_CASES:
        keras.utils.clear_session()
        initial = [np.asarray(w) for w in _scaleout_model(case).weights]
        keras.utils.clear_session()
        results[case] = _scaleout_train(_scaleout_model(case), x, y)
        # Training moved the weights (the comparison below is not vacuous).
        assert max(np.max(np.abs(a - b)) for a, b in zip(results[case], initial)) > 1e-2
    if "proximal_l1" in results:
        kernels = [w for w in results["proximal_l1"] if w.ndim == 2]
        assert sum(int(np.sum(w == 0)) for w in kernels) > 0  # exact zeros were made
    if "max_norm" in results:
        assert np.max(np.linalg.norm(results["max_norm"][0], axis=0)) <= 0.5 + 1e-6
    return results


@pytest.fixture(scope="module")
def single_device_weights():
    return _single_device_weights()


def _assert_same_weights(got, want, label):
    assert len(got) == len(want), label
    for i, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5, err_msg=f"{label} weight {i}")


@pytest.mark.tensorflow_only
def test_mirrored_strategy_matches_one_device(single_device_weights):
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(devices) >= 2, "conftest should split the CPU into 2 logical devices"
    strategy = tf.distribute.MirroredStrategy(
        devices[:2], cross_device_ops=tf.distribute.ReductionToOneDevice())
    assert strategy.num_replicas_in_sync == 2
    x, y = _scaleout_data()
    for case in SCALEOUT_CASES:
        keras.utils.clear_session()
        with strategy.scope():
            model = _scaleout_model(case)
        _assert_same_weights(
            _scaleout_train(model, x, y), single_device_weights[case], f"mirrored/{case}"
        )


def _custom_loop_train(strategy, model, x, y):
    """`SCALEOUT_EPOCHS` epochs with TensorFlow's custom-training-loop recipe.

    Used for `MultiWorkerMirroredStrategy` because Keras 3.15's `fit` fails
    there before the first step (`Trainer._maybe_symbolic_build` calls
    `strategy.reduce` on the nested `(x, y)` batch; the metric logs are then
    reduced with `axis=0` on scalars): keras-team/keras#20585,
    tensorflow/tensorflow#72388. The recipe is the one of
    https://www.tensorflow.org/tutorials/distribute/multi_worker_with_ctl:
    per-replica loss averaged over the *global* batch, regularization losses
    divided by the number of replicas, and the Keras optimizer's own
    `apply_gradients`, which all-reduces the gradients and then runs the
    update, the decoupled decay/proximal step and the constraints.
    """
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(SCALEOUT_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    dataset = strategy.experimental_distribute_dataset(dataset.with_options(options))
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)

    def replica_step(inputs, targets):
        with tf.GradientTape() as tape:
            predictions = model(inputs, training=True)
            per_example = tf.reduce_mean(tf.square(targets - predictions), axis=-1)
            loss = tf.nn.compute_average_loss(
                per_example, global_batch_size=SCALEOUT_BATCH
            )
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))

    @tf.function
    def distributed_step(batch):
        strategy.run(replica_step, args=batch)

    for _ in range(SCALEOUT_EPOCHS):
        for batch in dataset:
            distributed_step(batch)
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    assert steps == SCALEOUT_EPOCHS * 64 // SCALEOUT_BATCH
    return [np.asarray(w) for w in model.weights]


def _mwms_worker_main(out_path):
    """Entry point of one worker process (TF_CONFIG is set by the test)."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=120
        )
    )
    assert strategy.num_replicas_in_sync == 2
    x, y = _scaleout_data()
    arrays = {}
    for case in SCALEOUT_CASES:
        with strategy.scope():
            model = _scaleout_model(case)
        for i, w in enumerate(_custom_loop_train(strategy, model, x, y)):
            arrays[f"{case}/{i}"] = w
    np.savez(out_path, **arrays)


@pytest.mark.tensorflow_only
def test_multi_worker_mirrored_strategy_matches_one_device(tmp_path, single_device_weights):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in helpers.free_ports(2)]}
    outs = [tmp_path / f"worker{index}.npz" for index in range(2)]
    code = "import sys; from tests import test_reliability as t; t._mwms_worker_main(sys.argv[1])"
    results = helpers.run_together(code, [
        ([str(out)], helpers.child_env(TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}})))
        for index, out in enumerate(outs)], timeout=300)
    failures = [f"worker {index} failed ({code}):\n{stderr[-3000:]}"
                for index, (code, _, stderr) in enumerate(results) if code != 0]
    assert not failures, "\n\n".join(failures)
    for index, out in enumerate(outs):
        arrays = dict(np.load(out))
        for case in SCALEOUT_CASES:
            got = [arrays[f"{case}/{i}"] for i in range(len(single_device_weights[case]))]
            _assert_same_weights(got, single_device_weights[case], f"worker{index}/{case}")
