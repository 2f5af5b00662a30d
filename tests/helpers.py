"""Checks shared by the test modules (Keras's own test helpers are not public API)."""

import copy
import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def config_round_trip(obj):
    """Serializes `obj` through JSON and the registry, and returns the copy.

    Asserts the registered name is under `keras_regkit>` and that the copy's
    config equals the original's.
    """
    serialized = keras.saving.serialize_keras_object(obj)
    assert serialized["registered_name"].startswith("keras_regkit>"), serialized
    restored = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(serialized))
    )
    assert type(restored) is type(obj)
    assert restored.get_config() == obj.get_config()
    return restored


def randomize(model, seed=0):
    """Random non-default weights, so carrying or penalizing them is tested.

    Weights of rank >= 2 from N(0, 0.3^2), the others (biases, BatchNorm
    statistics: a variance stays positive) from U(0.5, 1.5).
    """
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(w.dtype) if w.ndim > 1
                       else rng.uniform(0.5, 1.5, w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    return model


def child_env(*, drop=(), **overrides):
    """The environment for a child Python process that imports this checkout.

    The current environment with quiet TensorFlow logs (unless set), the
    current Keras backend and the repository root first on `PYTHONPATH`;
    then the variables in `drop` removed and `overrides` set.
    """
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["KERAS_BACKEND"] = keras.backend.backend()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    for name in drop:
        env.pop(name, None)
    env.update(overrides)
    return env


def free_ports(count):
    """`count` distinct free TCP ports on 127.0.0.1 (for local clusters)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_together(code, runs, *, timeout=300):
    """Runs `python -c code *args` for each `(args, env)` in `runs`, concurrently.

    Returns one `(returncode, stdout, stderr)` per process, in order; a
    process that outlives `timeout` seconds is killed (its return code is then
    negative). No process is left running.
    """
    processes = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                         cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for args, env in runs
    ]
    results = []
    try:
        for process in processes:
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
                stderr += f"\n(killed after {timeout} s)"
            results.append((process.returncode, stdout, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return results


def run_python(code, *, timeout=600, env=None):
    """Runs `code` in a fresh Python process and returns its stdout.

    The process starts in the repository root with the current backend, so it
    imports this checkout of `keras_regkit`. A failure raises `AssertionError`
    carrying the child's stderr.
    """
    full_env = child_env(**(env or {}))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"child process failed ({result.returncode}):\n{result.stderr[-5000:]}"
    )
    return result.stdout


def load_in_fresh_process(model_path, inputs, *, train_targets=None, timeout=600):
    """Loads a `.keras` file in a new process (`safe_mode=True`, no `custom_objects`).

    Returns a dict with the loaded model's `predictions` on `inputs`, its
    `losses` (the regularization penalties, in order), its `weights`, and, if
    `train_targets` is given, the `weights_after_step` of one `train_on_batch`
    on `(inputs, train_targets)` with the loaded (compiled) model.
    """
    model_path = pathlib.Path(model_path)
    data_path = model_path.with_suffix(".inputs.npz")
    out_path = model_path.with_suffix(".outputs.npz")
    arrays = {"x": np.asarray(inputs)}
    if train_targets is not None:
        arrays["y"] = np.asarray(train_targets)
    np.savez(data_path, **arrays)
    run_python(
        f"""
        import numpy as np, keras
        import keras_regkit  # registers the package's classes; nothing else
        model = keras.saving.load_model({str(model_path)!r}, safe_mode=True)
        data = np.load({str(data_path)!r})
        out = {{"predictions": np.asarray(model(data["x"], training=False))}}
        for i, loss in enumerate(model.losses):
            out[f"loss_{{i}}"] = np.asarray(loss)
        for i, w in enumerate(model.weights):
            out[f"weight_{{i}}"] = np.asarray(w)
        if "y" in data:
            model.train_on_batch(data["x"], data["y"])
            for i, w in enumerate(model.weights):
                out[f"step_weight_{{i}}"] = np.asarray(w)
        np.savez({str(out_path)!r}, **out)
        """,
        timeout=timeout,
    )
    loaded = dict(np.load(out_path))
    result = {
        "predictions": loaded["predictions"],
        "losses": [loaded[k] for k in sorted(
            (k for k in loaded if k.startswith("loss_")), key=lambda k: int(k[5:]))],
        "weights": [loaded[k] for k in sorted(
            (k for k in loaded if k.startswith("weight_")), key=lambda k: int(k[7:]))],
    }
    if train_targets is not None:
        result["weights_after_step"] = [loaded[k] for k in sorted(
            (k for k in loaded if k.startswith("step_weight_")),
            key=lambda k: int(k[12:]))]
    return result


@keras.saving.register_keras_serializable(package="keras_regkit_tests")
class ResidualBlock(keras.layers.Layer):
    """A user-written composite layer: `x + outer(inner(x))`, two `Dense` inside.

    Like most composite layers (and KerasHub blocks), it rebuilds its
    sub-layers from its constructor arguments when loaded. Import this module
    (`import tests.helpers`) in a child process to load a model that uses it.
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.inner = keras.layers.Dense(units, activation="relu", name="inner")
        self.outer = keras.layers.Dense(units, name="outer")

    def build(self, input_shape):
        self.inner.build(input_shape)
        self.outer.build((*input_shape[:-1], self.units))

    def call(self, x):
        return x + self.outer(self.inner(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def snapshot(model):
    """Everything a refused call could have touched on `model`.

    Layer count, the serialized config of the model and of every layer (nested
    ones included), the regularizer/constraint objects on layers and variables,
    the rules recorded for `.keras` files on the model and on nested models,
    the weight values and the number of losses. Compare with `assert_unchanged`.
    """
    from keras_regkit._rule_store import store_of
    from keras_regkit._layer_tree import iter_layers

    layers = [model] + list(iter_layers(model))
    stores = [store_of(layer, create=False) for layer in layers if isinstance(layer, keras.Model)]
    configs = [
        json.dumps(keras.saving.serialize_keras_object(layer), sort_keys=True, default=repr)
        for layer in layers
    ]
    attributes = [
        tuple(id(getattr(layer, name, None)) for name in (
            "kernel_regularizer", "bias_regularizer", "kernel_constraint", "bias_constraint"))
        for layer in layers
    ]
    variables = [
        (v.path, id(getattr(v, "regularizer", None)), id(getattr(v, "constraint", None)))
        for v in model.weights
    ]
    return {
        "layers": len(getattr(model, "layers", [])),
        "configs": configs,
        "attributes": attributes,
        "variables": variables,
        "records": [copy.deepcopy(store.records) if store else {} for store in stores],
        "values": [np.array(v) for v in model.weights],
        "losses": len(model.losses),
    }


def assert_unchanged(model, before):
    """Asserts that `snapshot(model)` still equals `before`."""
    after = snapshot(model)
    for key in ("layers", "configs", "attributes", "variables", "records", "losses"):
        assert after[key] == before[key], f"{key} changed"
    assert len(after["values"]) == len(before["values"])
    for got, want in zip(after["values"], before["values"]):
        np.testing.assert_array_equal(got, want)
