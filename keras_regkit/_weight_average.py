"""The machinery `SWA` and `EMA` share; what it does is described in `keras_regkit.averaging`."""

import contextlib
import json

import keras
import numpy as np
from keras import ops

from keras_regkit import _layer_tree
from keras_regkit import _validation
from keras_regkit import batch_norm


def check_validation_data(data):
    """Returns `data` if `model.evaluate` takes it whole (not a list of batches), or `None`."""
    if data is None or batch_norm._is_dataset(data) or batch_norm._is_array_data(data) \
            or isinstance(data, keras.utils.PyDataset):
        return data
    raise TypeError(
        "`validation_data` must be a tuple `(x, y)` or `(x, y, sample_weight)` of arrays, "
        "a tf.data.Dataset or a keras.utils.PyDataset (what `model.evaluate` takes), or "
        f"None. Received: validation_data={data!r} of type {type(data).__name__}")


def assign(variables, values):
    """Assigns copies: with JAX, a training step deletes the buffers it is given."""
    for variable, value in zip(variables, values):
        if isinstance(value, keras.Variable):
            value = value.value
        variable.assign(ops.copy(value))


def make_lerp(averages, variables):
    """`update(rate)`: `average += rate * (variable - average)` for each pair, one compiled call.

    Compiled once per list (the rate is an argument, so nothing retraces): a
    `tf.function` with TensorFlow, `jax.jit` with JAX, plain ops otherwise.
    """

    def lerp(average, value, rate):
        return ops.add(average, ops.multiply(ops.subtract(value, average),
                                             ops.cast(rate, average.dtype)))

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(autograph=False)
        def step(rate):
            for average, variable in zip(averages, variables):
                average.assign(lerp(average.value, variable.value, rate))

        return lambda rate: step(tf.constant(rate, "float32"))
    if backend == "jax":
        import jax

        step = jax.jit(lambda values, targets, rate: [
            lerp(a, v, rate) for a, v in zip(values, targets)])

        def update(rate):
            new = step([a.value for a in averages], [v.value for v in variables],
                       np.float32(rate))
            for average, value in zip(averages, new):
                average.assign(value)

        return update

    def update(rate):
        for average, variable in zip(averages, variables):
            average.assign(lerp(average.value, variable.value, rate))

    return update


def _in_model_order(model, variables):
    """`variables` without repeats, in the order of `model.weights` (others after)."""
    position = {id(v): i for i, v in enumerate(model.weights)}
    variables = _layer_tree.unique_variables(variables)
    return sorted(variables, key=lambda v: position.get(id(v), len(position)))


class WeightAverage(keras.callbacks.Callback):
    """What `SWA` and `EMA` share (described in `keras_regkit.averaging`)."""

    _prefix = None  # "swa" or "ema": the logs' `val_<prefix>_<name>`
    _counter = None  # the name of the public int attribute counting the updates

    def __init__(self, recalibrate_data, recalibrate_steps, validation_data, final_weights):
        super().__init__()
        if recalibrate_data is not None:
            batch_norm._check_data(recalibrate_data, "recalibrate_data", reiterable=True)
        self.recalibrate_data = recalibrate_data
        self.recalibrate_steps = _validation.optional_positive_int(
            recalibrate_steps, "recalibrate_steps")
        self.validation_data = check_validation_data(validation_data)
        self.final_weights = _validation.one_of(final_weights, "final_weights",
                                                ("average", "last"))
        self._variables = None  # the model's variables that are averaged
        self._averages = None  # one keras.Variable per averaged variable
        self._targets = None  # what a swap exchanges: those, and statistics to recalibrate
        self._other = None  # the training weights, while the model holds the average
        self._pending = None  # a state read by `load_state`, adopted when `fit` begins
        self._guard = None
        self._lerp = None  # `make_lerp` of the averages and the variables

    # To define: which variables, whether statistics are recalibrated.
    def _variables_to_average(self, model):
        return list(model.trainable_variables)

    def _recalibrates(self):
        return self.recalibrate_data is not None

    def _undo(self):
        """Undoes what the callback changed for training (idempotent)."""

    @property
    def average_weights(self):
        """The averages as NumPy arrays, or `None` before any.

        One per averaged variable, in the order of `model.weights`.
        """
        if not self._has_average():
            return None
        return [ops.convert_to_numpy(a) for a in self._averages]

    @property
    def last_weights(self):
        """The training weights while the model holds the average (else `None`).

        One array per variable that `swap()` exchanges (the averaged ones and
        the recalibrated batch-norm statistics), in the order of `model.weights`.
        """
        return None if self._other is None else [ops.convert_to_numpy(v) for v in self._other]

    def _has_average(self):
        return self._averages is not None and getattr(self, self._counter) > 0

    def _bind(self, model):
        """Finds the variables to average in `model`; makes or checks the averages."""
        if self._recalibrates():
            if self.recalibrate_data is None:
                raise ValueError(
                    f"{type(self).__name__}(batch_norm='recalibrate') needs "
                    "`recalibrate_data`, the batches to recalibrate on. Received: "
                    "recalibrate_data=None")
            layers = batch_norm._batch_norm_layers(model)
            batch_norm._check_layers(model, layers)
            statistics = [s for layer in layers for s in (layer.moving_mean, layer.moving_variance)]
        else:
            statistics = []
        variables = _in_model_order(model, self._variables_to_average(model))
        targets = _in_model_order(model, variables + statistics)
        signature = [[[int(d) for d in v.shape], str(v.dtype)] for v in targets]
        pending = self._pending
        known = pending["signature"] if pending else (
            self._signature if self._averages is not None else None)
        if known is not None and known != signature:
            raise ValueError(
                f"{type(self).__name__}: the variables to average differ from those "
                f"its average was made of ({len(signature)} now, {len(known)} before; "
                "shapes or dtypes differ): use a new callback for another model. "
                f"Received: model={model.name!r}")
        if self._variables is None or [id(v) for v in variables] != [
                id(v) for v in self._variables]:
            self._lerp = None  # compiled for other variables
        self._variables, self._targets, self._signature = variables, targets, signature
        if self._averages is None:
            strategy = getattr(model, "distribute_strategy", None)
            with strategy.scope() if strategy is not None else contextlib.nullcontext():
                self._averages = [
                    keras.Variable(ops.copy(v.value), dtype=v.dtype, trainable=False,
                                   name=f"{self._prefix}_{v.name}")
                    for v in variables]
        if self._lerp is None:
            self._lerp = make_lerp(self._averages, variables)
        if pending:
            assign(self._averages, pending["averages"])
            self._other = pending["other"]
            setattr(self, self._counter, pending["counter"])
            self._pending = None

    def _put_average(self):
        """Puts the average into the model (recalibrated); returns what it replaced."""
        model = self.model
        backup = [ops.copy(v.value) for v in self._targets]
        assign(self._variables, self._averages)
        if self._recalibrates():
            try:
                batch_norm.recalibrate_batch_norm(model, self.recalibrate_data,
                                                  steps=self.recalibrate_steps)
            except BaseException:
                assign(self._targets, backup)
                raise
        return backup

    @contextlib.contextmanager
    def swap(self):
        """A `with` block in which the model holds the other set of weights.

        The average if the model holds the training weights, or the training
        weights if it holds the average (after `fit` with
        `final_weights="average"`). The previous set is put back at the end of
        the block, also when it raises. Yields the model.
        """
        if not self._has_average() or self._targets is None:
            raise ValueError(f"{type(self).__name__} has no average yet: use it in `fit` first.")
        model = self.model  # with JAX, this brings the model's state up to date
        if self._other is not None:
            restore = [ops.copy(v.value) for v in self._targets]
            assign(self._targets, self._other)
        else:
            restore = self._put_average()
        try:
            yield model
        finally:
            assign(self._targets, restore)

    def _evaluate(self, logs):
        data = self.validation_data
        if isinstance(data, tuple):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            arguments = {"x": x, "y": y, "sample_weight": sample_weight}
        else:
            arguments = {"x": data}
        backup = self._put_average()
        try:
            results = self.model.evaluate(**arguments, verbose=0, return_dict=True)
        finally:
            assign(self._targets, backup)
        if logs is not None:
            logs.update({f"val_{self._prefix}_{name}": value for name, value in results.items()})

    def on_train_begin(self, logs=None):
        model = self.model
        self._undo()  # left over from a `fit` that raised outside a training step
        self._bind(model)
        self._begin(model)
        if self._other is not None:  # the model holds the average of the last `fit`
            assign(self._targets, self._other)
            self._other = None
        self._install_guard(model)

    def _begin(self, model):
        """Checks before training begins (nothing is changed yet)."""

    def on_train_end(self, logs=None):
        model = self.model
        self._remove_guard()
        self._undo()
        self._end(model)
        if self.final_weights == "average" and self._has_average():
            self._other = self._put_average()

    def _end(self, model):
        """Warnings at the end of training."""

    def _install_guard(self, model):
        """Wraps `model.train_function` so that an error in a step undoes the changes.

        Guards of several callbacks stack; each removes only itself.
        """
        if getattr(model, "train_function", None) is None:
            return

        def guarded(*args, **kwargs):
            try:
                return guarded.__wrapped__(*args, **kwargs)
            except BaseException as error:
                # The end of an epoch's data is not an error.
                if not isinstance(error, StopIteration) and \
                        type(error).__name__ != "OutOfRangeError":
                    self._remove_guard()
                    self.model  # noqa: B018 -- with JAX, sync first: `fit` syncs after us
                    self._undo()
                raise

        guarded.__wrapped__ = model.train_function
        guarded.keras_regkit_guard = True
        model.train_function = guarded
        self._guard = (model, guarded)

    def _remove_guard(self):
        if self._guard is None:
            return
        model, guarded = self._guard
        self._guard = None
        if model.train_function is guarded:
            model.train_function = guarded.__wrapped__
            return
        outer = model.train_function  # another callback's guard, installed after this one
        while getattr(outer, "keras_regkit_guard", False):
            if outer.__wrapped__ is guarded:
                outer.__wrapped__ = guarded.__wrapped__
                return
            outer = outer.__wrapped__

    def save_state(self, path):
        """Writes the callback's state to the NumPy file `path` (`.npz`).

        The counter, the averages and, while the model holds the average, the
        training weights; `load_state` reads it.
        """
        if self._averages is None:
            raise ValueError(f"{type(self).__name__} has no state yet: use it in `fit` first.")
        arrays = {"kind": np.array(type(self).__name__),
                  "counter": np.array(getattr(self, self._counter)),
                  "signature": np.array(json.dumps(self._signature))}
        arrays.update({f"average_{i}": ops.convert_to_numpy(a)
                       for i, a in enumerate(self._averages)})
        if self._other is not None:
            arrays.update({f"other_{i}": ops.convert_to_numpy(v)
                           for i, v in enumerate(self._other)})
        np.savez(path, **arrays)

    def load_state(self, path):
        """Reads a state written by `save_state`; the next `fit` adopts it.

        It is checked against the model's variables then (their number, shapes
        and dtypes). Returns the callback.
        """
        with np.load(path) as file:
            kind = str(file["kind"])
            if kind != type(self).__name__:
                raise ValueError(f"{path!r} holds the state of a {kind}, not of a "
                                 f"{type(self).__name__}. Received: path={path!r}")
            counter = int(file["counter"])
            signature = json.loads(str(file["signature"]))
            averages = [file[f"average_{i}"]
                        for i in range(sum(k.startswith("average_") for k in file))]
            other = [file[f"other_{i}"] for i in range(sum(k.startswith("other_") for k in file))]
        self._pending = {"counter": counter, "signature": signature, "averages": averages,
                         "other": other or None}
        setattr(self, self._counter, counter)
        return self

    def _data_config(self):
        return {"recalibrate_steps": self.recalibrate_steps, "final_weights": self.final_weights}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
