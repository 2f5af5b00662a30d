"""One checklist for every dropout-like layer, as keras-hub's `run_layer_test`.

A dropout-like layer is the identity in inference and, in training, zeroes
part of its input and rescales the rest so the mean is kept. For one
`LayerCase` (the class, its arguments, an input shape), `run_layer_checklist`
checks, each item a function of its own whose failures name the item:

1. `check_config`: every argument is in `get_config` (JSON-normalized),
   `from_config(get_config())` gives the same config, and the
   `serialize_keras_object` / `deserialize_keras_object` round trip through
   JSON restores the class under its `keras_regkit>` name;
2. `check_fresh_process_reload` (also for many cases at once, one child
   process for all): a `.keras` file saved here loads in a fresh Python
   process (`safe_mode=True`, no `custom_objects`, only `import
   keras_regkit`) with the same class, config and weights, the identity in
   inference and, from the same seed, the same training output;
3. `check_training_flag`: `training=False` and no `training` argument give
   the input back exactly; `training=True` keeps entries at `x * scale` with
   one `scale` (`1 / (1 - rate)`, or the batch's count over kept count), drops
   the stated fraction and keeps the mean of an all-ones input within the
   stated tolerance; the same seed gives the same mask, a second call or
   another seed a new one;
4. `check_eager_and_jit`: a functional model run eagerly and with
   `model.predict` under `jit_compile=True` (XLA on TensorFlow, `jax.jit`
   on JAX) gives the input back in inference and drops-and-rescales in
   training;
5. `check_mixed_precision`: under the `mixed_float16` policy the output is
   float16 and finite (symbolic and eager, training on and off), the
   variables stay float32;
6. `check_dynamic_shapes`: a functional model on `keras.Input` with `None`
   spatial sizes keeps `None` in its output shape, and, called on two
   spatial sizes, eagerly and with `predict` under `jit_compile=True`, gives
   outputs of the input's shape, the identity in inference and
   drops-and-rescales in training.

The statistics are this checklist's own; the layers' math (the exact kept
fraction of DropBlock, mask shapes) is tested against NumPy references in
the layers' own test files.
"""

import dataclasses
import json
import pathlib

import keras
import numpy as np

from tests import helpers


@dataclasses.dataclass(frozen=True)
class LayerCase:
    """A layer and what its checklist expects of it.

    Attributes:
        layer_cls: The layer class.
        init_kwargs: Its constructor arguments; must hold `rate` and `seed`.
        input_shape: A small input shape, batch first.
        spatial_axes: The axes made `None` in `check_dynamic_shapes`.
        stats_shape: The all-ones input of the drop statistics, large enough
            for `tolerance`.
        expected_drop: The expected fraction of zeroed entries in training.
        tolerance: The allowed distance of the measured drop fraction from
            `expected_drop` (and `tolerance / (1 - rate)` of the mean from 1);
            derive it where the case is written.
        rescale: `"rate"`: kept entries are scaled by `1 / (1 - rate)`;
            `"batch"`: by the input's size over the count of kept entries.
        id: The pytest id.
    """

    layer_cls: type
    init_kwargs: dict
    input_shape: tuple
    spatial_axes: tuple
    stats_shape: tuple
    expected_drop: float
    tolerance: float
    rescale: str = "rate"
    id: str = ""

    def make(self):
        return self.layer_cls(**self.init_kwargs)

    def inputs(self, shape=None, seed=0):
        """Values in [0.5, 1.5]: no zeros, so `output / input` is the mask times the scale."""
        shape = self.input_shape if shape is None else shape
        return np.random.default_rng(seed).uniform(0.5, 1.5, shape).astype("float32")

    @property
    def rate(self):
        return self.init_kwargs["rate"]


def run_layer_checklist(case, tmp_path, *, fresh_process=True):
    """Runs every item of the checklist for `case` (see the module docstring).

    `fresh_process=False` leaves out item 2, for a test module that reloads
    all its cases in one child process (`check_fresh_process_reload`).
    """
    check_config(case)
    check_training_flag(case)
    check_eager_and_jit(case)
    check_mixed_precision(case)
    check_dynamic_shapes(case)
    if fresh_process:
        check_fresh_process_reload([case], tmp_path)


# ---------------------------------------------------------------- the items


def _json(value):
    return json.loads(json.dumps(value))


def check_config(case):
    layer = case.make()
    config = layer.get_config()
    for key, value in case.init_kwargs.items():
        assert key in config, f"config: `{key}` is missing from {config}"
        assert _json(config[key]) == _json(value), (
            f"config: `{key}` is {config[key]!r}, constructed with {value!r}")
    assert json.dumps(config)  # JSON-ready
    again = case.layer_cls.from_config(config)
    assert again.get_config() == config, "config: from_config(get_config()) differs"
    helpers.config_round_trip(layer)


def assert_drops_and_rescales(out, x, case, *, rtol=1e-5, what="training"):
    """`out` is `x * mask * scale`, mask in {0, 1}, one `scale` as the case says."""
    out = np.asarray(out, "float32")
    assert out.shape == x.shape, f"{what}: output shape {out.shape}, input {x.shape}"
    ratio = out / x
    kept = ratio != 0
    assert kept.any(), f"{what}: every entry dropped"
    scale = ratio[kept]
    if case.rescale == "rate":
        want = 1 / (1 - case.rate)  # an identity output fails here: ratio 1
    else:
        # Renormalized by the batch's kept count, the identity would pass the
        # scale check; the inputs are large enough that a draw dropping nothing
        # is practically impossible (DropBlock on (4, 8, 8, 3): about e^-17).
        assert not kept.all(), f"{what}: nothing dropped"
        want = kept.size / kept.sum()
    np.testing.assert_allclose(
        scale, want, rtol=rtol,
        err_msg=f"{what}: kept entries are not x * {want} ({case.rescale} rescale)")
    return kept


def _equal(got, want, what):
    np.testing.assert_array_equal(np.asarray(got), want, err_msg=what)


def check_training_flag(case):
    x = case.inputs()
    layer = case.make()
    _equal(layer(x, training=False), x, "training=False: not the identity")
    _equal(layer(x), x, "no training argument: not the identity")
    assert_drops_and_rescales(layer(x, training=True), x, case)

    ones = np.ones(case.stats_shape, "float32")
    first = np.asarray(case.make()(ones, training=True))
    dropped = np.mean(first == 0)
    assert abs(dropped - case.expected_drop) <= case.tolerance, (
        f"training: dropped {dropped:.4f}, expected {case.expected_drop:.4f} "
        f"+- {case.tolerance:.4f}")
    mean_tolerance = case.tolerance / (1 - case.rate)
    assert abs(first.mean() - 1) <= mean_tolerance, (
        f"training: mean of an all-ones input is {first.mean():.4f}, "
        f"expected 1 +- {mean_tolerance:.4f}")
    assert_drops_and_rescales(first, ones, case)

    same_seed = case.make()
    _equal(same_seed(ones, training=True), first, "training: the same seed drew another mask")
    assert not np.array_equal(np.asarray(same_seed(ones, training=True)), first), (
        "training: a second call drew the same mask again")
    other_seed = case.layer_cls(**{**case.init_kwargs, "seed": case.init_kwargs["seed"] + 1})
    assert not np.array_equal(np.asarray(other_seed(ones, training=True)), first), (
        "training: another seed drew the same mask")


class _Fixed(keras.layers.Layer):
    """Calls `layer` with a fixed `training`, whatever the model is called with.

    A functional model passes its own `training` to its layers (`predict`:
    `False`), so this is the way to run a layer in training under `predict`.
    """

    def __init__(self, layer, training, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer
        self.training = training

    def call(self, inputs):
        return self.layer(inputs, training=self.training)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


def _both_modes_model(layer, shape):
    """`x -> [layer(x, training=False), layer(x, training=True)]` on `keras.Input(shape)`."""
    inputs = keras.Input(shape)
    return keras.Model(inputs, [_Fixed(layer, False)(inputs), _Fixed(layer, True)(inputs)])


def check_eager_and_jit(case):
    x = case.inputs()
    model = _both_modes_model(case.make(), case.input_shape[1:])
    eager_off, eager_on = model(x)
    _equal(eager_off, x, "eager, training=False: not the identity")
    assert_drops_and_rescales(eager_on, x, case, what="eager, training=True")
    model.compile(jit_compile=True)
    assert model.jit_compile, "jit_compile: Keras turned XLA off for this model"
    jit_off, jit_on = model.predict(x, batch_size=len(x), verbose=0)
    _equal(jit_off, np.asarray(eager_off), "jit_compile, training=False: differs from eager")
    assert_drops_and_rescales(jit_on, x, case, what="jit_compile, training=True")


def check_mixed_precision(case):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = case.make()
        symbolic = layer(keras.Input(case.input_shape[1:]), training=True)
        assert keras.backend.standardize_dtype(symbolic.dtype) == "float16", (
            f"mixed precision: symbolic output is {symbolic.dtype}")
        x = case.inputs()
        for training in (False, True):
            out = layer(x, training=training)
            dtype = keras.backend.standardize_dtype(out.dtype)
            assert dtype == "float16", f"mixed precision, training={training}: output {dtype}"
            out = np.asarray(out, "float32")
            assert np.isfinite(out).all(), f"mixed precision, training={training}: not finite"
        # The input is rounded to float16 first; then the float16 scale.
        assert_drops_and_rescales(out, x.astype("float16").astype("float32"), case,
                                  rtol=2e-3, what="mixed precision, training=True")
        for variable in layer.weights:
            assert keras.backend.standardize_dtype(variable.dtype) == "float32", (
                f"mixed precision: variable {variable.path} is {variable.dtype}")
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _other_size(shape, axes):
    """`shape` with each axis of `axes` changed (by a different amount each)."""
    shape = list(shape)
    for step, axis in enumerate(axes):
        shape[axis] += 1 + 2 * step
    return tuple(shape)


def check_dynamic_shapes(case):
    unknown = tuple(None if axis in case.spatial_axes else size
                    for axis, size in enumerate(case.input_shape))
    model = _both_modes_model(case.make(), unknown[1:])
    for output in model.outputs:
        assert tuple(output.shape) == (None, *unknown[1:]), (
            f"dynamic shapes: symbolic output {output.shape}, input {unknown}")
    # On TensorFlow the second `predict` retraces with `None` sizes (Keras
    # traces with `reduce_retracing`); JAX compiles for each size.
    model.compile(jit_compile=True)
    assert model.jit_compile, "dynamic shapes: Keras turned XLA off for this model"
    for shape in (case.input_shape, _other_size(case.input_shape, case.spatial_axes)):
        x = case.inputs(shape)
        for mode, (off, on) in (("eager", model(x)),
                                ("jit_compile", model.predict(x, batch_size=len(x), verbose=0))):
            what = f"dynamic shapes, {shape}, {mode}"
            _equal(off, x, f"{what}, training=False: not the identity")
            assert_drops_and_rescales(on, x, case, what=f"{what}, training=True")


# ---------------------------------------------------------------- fresh process

_CHILD = """
import json
import numpy as np, keras
import keras_regkit  # registers the package's classes; nothing else

for path in PATHS:
    model = keras.saving.load_model(path, safe_mode=True)
    layer = model.layers[1]
    data = np.load(path + ".data.npz")
    x = data["x"]
    out = {"predictions": np.asarray(model(x, training=False)),
           "inference": np.asarray(layer(x, training=False)),
           "training": np.asarray(layer(x, training=True))}
    out.update({f"weight_{i}": np.asarray(w) for i, w in enumerate(layer.weights)})
    model.train_on_batch(x, data["y"])
    out.update({f"step_{i}": np.asarray(w) for i, w in enumerate(model.trainable_weights)})
    np.savez(path + ".out.npz", **out)
    with open(path + ".json", "w") as f:
        json.dump({"class": type(layer).__name__,
                   "registered": keras.saving.get_registered_name(type(layer)),
                   "config": layer.get_config()}, f)
"""


def check_fresh_process_reload(cases, tmp_path):
    """Item 2 for all `cases` in one child process (one interpreter start for all).

    Each layer feeds a `Dense` head in a compiled model. The layer's weights
    are halved before saving (a `rate_factor` of 0.5), so the file must carry
    them. Here and in the child, after saving (or loading), the same calls
    run in the same order: inference, one training call, one `train_on_batch`;
    from the same seed they must give the same results.
    """
    tmp_path = pathlib.Path(tmp_path)
    expected = []
    for index, case in enumerate(cases):
        layer = case.make()
        inputs = keras.Input(case.input_shape[1:])
        model = keras.Model(inputs, keras.layers.Dense(2, name="head")(layer(inputs)))
        model.compile("sgd", "mse", jit_compile=False)  # XLA: check_eager_and_jit
        for weight in layer.weights:
            weight.assign(np.asarray(weight) * 0.5)
        path = tmp_path / f"case_{index}.keras"
        model.save(path)
        x = case.inputs()
        y = case.inputs((*case.input_shape[:-1], 2), seed=1)
        np.savez(f"{path}.data.npz", x=x, y=y)
        predictions = np.asarray(model(x, training=False))
        training = np.asarray(layer(x, training=True))
        weights = [np.asarray(w) for w in layer.weights]  # as the child reads them
        model.train_on_batch(x, y)
        steps = [np.asarray(w) for w in model.trainable_weights]
        expected.append((path, case, layer, x, predictions, training, weights, steps))
    helpers.run_python(_CHILD.replace("PATHS", repr([str(p) for p, *_ in expected])))
    for path, case, layer, x, predictions, training, weights, steps in expected:
        what = f"fresh-process reload of {case.id or case.layer_cls.__name__}"
        meta = json.loads(pathlib.Path(f"{path}.json").read_text())
        assert meta["class"] == case.layer_cls.__name__, f"{what}: class {meta['class']}"
        assert meta["registered"].startswith("keras_regkit>"), f"{what}: {meta['registered']}"
        assert meta["config"] == _json(layer.get_config()), f"{what}: config differs"
        out = np.load(f"{path}.out.npz")
        count = sum(name.startswith("weight_") for name in out.files)
        assert count == len(layer.weights), f"{what}: {count} weights, {len(layer.weights)} saved"
        for i, (variable, want) in enumerate(zip(layer.weights, weights)):
            _equal(out[f"weight_{i}"], want, f"{what}: weight {variable.path} differs")
        np.testing.assert_allclose(out["predictions"], predictions, rtol=1e-6, atol=1e-6,
                                   err_msg=f"{what}: other predictions in inference")
        _equal(out["inference"], x, f"{what}: not the identity in inference")
        _equal(out["training"], training, f"{what}: the same seed drew another mask")
        for i, want in enumerate(steps):
            np.testing.assert_allclose(out[f"step_{i}"], want, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{what}: another training step")
