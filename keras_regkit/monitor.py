"""What regularization does during `fit`: the penalty beside the loss, per-variable statistics.

Keras folds every penalty (`model.losses`) into `loss`. `RegularizationMonitor`
splits it back out, exactly, and records per epoch what each regularized or
constrained variable looks like.
"""

import contextlib
import importlib
import inspect
import json
import math
import os
import warnings

import keras
import numpy as np
from keras import ops

from keras_regkit import _distribute
from keras_regkit import _private_api
from keras_regkit import _selectors
from keras_regkit import _units
from keras_regkit import _validation
from keras_regkit.constraints import MaxNorm

_TRACKERS = "_keras_regkit_penalty_trackers"


def _install_penalty_trackers(model):
    """Two `Mean` metrics on a model, fed by a `compute_loss` that splits the loss.

    Installed once per model: the metrics become tracked attributes (so they are
    in `model.metrics` and in every log Keras writes), and the model's
    `compute_loss` is wrapped on the instance. Keras's `train_step` updates its
    `loss` tracker with the unscaled per-replica loss weighted by the batch
    size; the two metrics are updated the same way, so for every logged value
    `loss = data_loss + penalty` up to float rounding. The data loss is the
    compiled loss computed on its own (so it stays exact beside a penalty
    millions of times larger); under a `compute_loss` override, whose terms
    are unknown, it is the loss minus the penalty.
    """
    if getattr(model, _TRACKERS, None) is not None:
        return
    strategy = getattr(model, "distribute_strategy", None)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        data = keras.metrics.Mean(name="data_loss")
        penalty = keras.metrics.Mean(name="penalty")
    _private_api.set_tracked_attribute(model, _TRACKERS, [data, penalty])
    compute_loss = model.compute_loss  # the class's method (or the user's), bound
    # Keras passes `training` only to a `compute_loss` that takes it (3.3+).
    takes_training = "training" in inspect.signature(compute_loss).parameters
    keras_terms = getattr(compute_loss, "__func__", None) is keras.Model.compute_loss
    traced = {"training": False}  # whether a training step went through the split

    def split_compute_loss(x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if takes_training:
            total = compute_loss(x, y, y_pred, sample_weight, training=training)
        else:
            total = compute_loss(x, y, y_pred, sample_weight)
        if total is None:
            return total
        traced["training"] = traced["training"] or training is not False
        penalties = [
            ops.sum(ops.cast(loss, total.dtype)) for loss in model.losses
        ]
        raw_penalty = ops.sum(ops.stack(penalties)) if penalties else ops.zeros((), total.dtype)
        if keras_terms:
            data_loss = _distribute.unscaled_replica_loss(
                _compiled_loss(model, y, y_pred, sample_weight, total.dtype))
        else:
            data_loss = _distribute.unscaled_replica_loss(total) - raw_penalty
        batch = ops.shape(next(i for i in keras.tree.flatten(x) if i is not None))[0]
        data.update_state(data_loss, sample_weight=batch)
        penalty.update_state(raw_penalty, sample_weight=batch)
        return total

    split_compute_loss.keras_regkit_traced = traced
    model.compute_loss = split_compute_loss
    for attribute in ("train_function", "test_function"):
        setattr(model, attribute, None)  # retrace with the split loss


def _compiled_loss(model, y, y_pred, sample_weight, dtype):
    """The loss of `compile` alone: Keras's `compute_loss` without `model.losses`.

    Read through `_private_api.compiled_loss`. It runs in a `StatelessScope`
    whose updates are dropped: its per-output loss metrics were updated by
    `compute_loss` already.
    """
    compiled = _private_api.compiled_loss(model)
    value = None
    if compiled is not None:
        # Its own variables (per-output loss trackers) read as the step sees them.
        current = [(v, v.value) for v in compiled.variables]
        with keras.StatelessScope(state_mapping=current):
            value = compiled(y, y_pred, sample_weight)
    return ops.zeros((), dtype) if value is None else ops.cast(value, dtype)


def _split_is_traced(model):
    """Whether a training step of `model` went through the split `compute_loss`."""
    traced = getattr(getattr(model, "compute_loss", None), "keras_regkit_traced", None)
    return traced is None or traced["training"]


def _require(module, argument, value, purpose):
    """Imports `module`, or raises an `ImportError` naming the extra that installs it."""
    try:
        importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"`RegularizationMonitor({argument}=...)` needs {module} to {purpose}, and it "
            "cannot be imported. Install it with `pip install keras_regkit[monitor]`, or "
            f"pass `{argument}=None`. Received: {argument}={value!r}"
        ) from error


def _prepare_folder(argument, path, first_write, errors=(OSError,)):
    """Runs `first_write()` (which makes the folder `path`), or raises a `ValueError` naming it."""
    try:
        return first_write()
    except errors as error:
        raise ValueError(
            f"`{argument}` must be a folder that can be created and written "
            f"({type(error).__name__}: {error}). Received: {argument}={path!r}"
        ) from error


@keras.saving.register_keras_serializable(package="keras_regkit")
class RegularizationMonitor(keras.callbacks.Callback):
    """Logs the penalty beside the loss in `fit`, and per-variable statistics per epoch.

    **In every log.** With the monitor among `fit`'s callbacks, the progress
    bar (per batch), `History`, `CSVLogger` and `TensorBoard` get two more
    numbers beside `loss`: `penalty`, the sum of `model.losses` that entered
    the loss (regularizer penalties and `add_loss` terms, at the weights of
    each step, before the update), and `data_loss`, the compiled loss. Both are
    averaged over the epoch exactly as Keras averages `loss` (weighted by batch
    size), so `loss == data_loss + penalty` for every logged value, also under
    `tf.distribute` (each replica's share is unscaled as Keras unscales
    `loss`). Validation gets `val_penalty` and `val_data_loss`. A model without
    penalties logs `penalty = 0`. The decay of `DecoupledWeightDecay` happens
    in the optimizer, not in the loss: it is not in `penalty`. `data_loss` is
    computed on its own, not as `loss - penalty`: it stays exact when the
    penalty dwarfs it (where float32 `loss` has lost it). A model whose own
    `train_step` does not call `compute_loss` cannot be split: the monitor
    warns once per `fit`.

    The two numbers come from `Mean` metrics that the first `fit` with a
    monitor adds to the model (they stay in `model.metrics`, so a later
    `evaluate` reports them too) and from a wrapper around the model's
    `compute_loss` that splits the loss it returns.

    **Per epoch, per variable** (`per_variable=True`), for every variable with
    a regularizer or a constraint, and every variable a `DecoupledWeightDecay`
    decays, measured at the end of each epoch: `penalty` (its regularizer's
    value), `norm` (L2 norm), `zero_fraction` (exact zeros), `saturation`
    (for `MaxNorm`, the fraction of units on the ball's boundary, norm >=
    `max_value * (1 - 1e-5)`), and for the optimizer's decay `decayed` and
    `decay_penalty`: the L2 penalty that the decoupled decay amounts to,
    `(c / (2 * lr)) * ||w - w_ref||^2` with `c` the decay coefficient of the
    next step and `lr` the learning rate (for plain SGD the decay is exactly
    the gradient step of that penalty). The epoch's logs also get
    `decay_share`: `sum(decay_penalty) / (sum(decay_penalty) + penalty)`, the
    optimizer's part of the regularization. The rows are kept in `self.rows`,
    appended to `<log_dir>/regularization.jsonl` as they are made, drawn in
    `<log_dir>/regularization.png` at the end of training (matplotlib, a panel
    per quantity, a line per variable), and written as TensorBoard scalars to
    `tensorboard_dir` (TensorFlow's summary writer). What these need is
    checked when training begins, before the first step: a missing extra
    (matplotlib for the PNG, tensorboard for the scalars) raises an
    `ImportError` naming `pip install keras_regkit[monitor]`, a folder that
    cannot be made or written a `ValueError` naming it.

    Args:
        log_dir: Folder for the JSON lines and the PNG, or `None` (keep the
            rows in memory only).
        tensorboard_dir: Folder for TensorBoard scalars, or `None`.
        per_variable: Whether to record the per-variable rows. Defaults to
            `True`.

    Example:

    >>> import keras, numpy as np, keras_regkit
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
    ...     1, kernel_regularizer=keras_regkit.L2(0.5), kernel_initializer="ones",
    ...     name="d")], name="net")
    >>> model.compile(keras.optimizers.SGD(learning_rate=0.0), "mse")  # weights stay put
    >>> monitor = keras_regkit.RegularizationMonitor()
    >>> history = model.fit(np.zeros((4, 2)), np.ones((4, 1)), epochs=1,
    ...                     verbose=0, callbacks=[monitor])
    >>> logs = {key: round(values[0], 4) for key, values in history.history.items()}
    >>> logs["loss"], logs["data_loss"], logs["penalty"]  # 1 + 0.5 * (1 + 1)
    (2.0, 1.0, 1.0)
    >>> row = monitor.rows[0]
    >>> row["variable"], round(row["norm"], 4), round(row["penalty"], 4)  # sqrt(2), 0.5 * 2
    ('net/d/kernel', 1.4142, 1.0)
    """

    def __init__(self, log_dir=None, tensorboard_dir=None, per_variable=True):
        super().__init__()
        self.log_dir = _validation.optional_path(log_dir, "log_dir")
        self.tensorboard_dir = _validation.optional_path(tensorboard_dir, "tensorboard_dir")
        _validation.boolean(per_variable, "per_variable")
        self.per_variable = per_variable
        self.rows = []
        self._writer = None
        self._checked_split = True  # set to False when a fit begins

    def set_model(self, model):
        super().set_model(model)
        _install_penalty_trackers(model)

    def on_train_begin(self, logs=None):
        # Whatever can fail does so here, before the first step, not after training.
        self.rows = []
        self._checked_split = False
        if self.log_dir is not None and self.per_variable:
            _require("matplotlib", "log_dir", self.log_dir, "draw regularization.png")
        if self.tensorboard_dir is not None:
            _require("tensorboard", "tensorboard_dir", self.tensorboard_dir,
                     "write TensorBoard scalars")
        if self.log_dir is not None:
            _prepare_folder("log_dir", self.log_dir, self._start_json_lines)
        if self.tensorboard_dir is not None:
            import tensorflow as tf

            self._writer = _prepare_folder(
                "tensorboard_dir", self.tensorboard_dir,
                lambda: tf.summary.create_file_writer(self.tensorboard_dir),
                (OSError, tf.errors.OpError),
            )

    def _start_json_lines(self):
        os.makedirs(self.log_dir, exist_ok=True)
        open(os.path.join(self.log_dir, "regularization.jsonl"), "w").close()

    def on_epoch_end(self, epoch, logs=None):
        if not self._checked_split:
            self._checked_split = True  # once per fit: the step is traced by now
            if not _split_is_traced(self.model):
                warnings.warn(
                    f"`RegularizationMonitor`: model '{self.model.name}' "
                    f"({type(self.model).__name__}) has its own `train_step`, which does "
                    "not call `self.compute_loss(...)`: the monitor cannot split its "
                    "loss, and its logs get no `penalty` or `data_loss`. Compute the "
                    "loss with `self.compute_loss(x=x, y=y, y_pred=y_pred, "
                    "sample_weight=sample_weight, training=True)` to have them.",
                    UserWarning,
                    stacklevel=2,
                )
        if not self.per_variable:
            return
        rows = variable_statistics(self.model, epoch=epoch)
        self.rows.extend(rows)
        decay = sum(row["decay_penalty"] or 0.0 for row in rows)
        penalty = sum(row["penalty"] or 0.0 for row in rows if row["trainable"])
        share = decay / (decay + penalty) if decay + penalty > 0 else 0.0
        if logs is not None and any(row["decayed"] for row in rows):
            logs["decay_share"] = share
        if self.log_dir is not None:
            with open(os.path.join(self.log_dir, "regularization.jsonl"), "a") as file:
                for row in rows:
                    file.write(json.dumps(row) + "\n")
        if self._writer is not None:
            self._write_tensorboard(epoch, rows)

    def _write_tensorboard(self, epoch, rows):
        import tensorflow as tf

        with self._writer.as_default():
            for row in rows:
                for key in ("penalty", "norm", "zero_fraction", "saturation", "decay_penalty"):
                    if row[key] is not None:
                        tf.summary.scalar(f"{key}/{row['variable']}", row[key], step=epoch)
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.log_dir is not None and self.rows:
            plot_statistics(self.rows, os.path.join(self.log_dir, "regularization.png"))

    def get_config(self):
        return {
            "log_dir": self.log_dir,
            "tensorboard_dir": self.tensorboard_dir,
            "per_variable": self.per_variable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def variable_statistics(model, epoch=None):
    """One dict per regularized, constrained or decayed variable of `model`, measured now.

    The keys are those of `RegularizationMonitor`'s rows (see there), plus
    `trainable`.
    """
    _selectors.check_model(model)
    owners = _selectors.variable_owners(model)
    decay = _decay_state(model)
    trainable = {id(v) for v in model.trainable_weights}
    rows = []
    seen = set()
    for variable in model.weights:
        if id(variable) in seen:
            continue
        seen.add(id(variable))
        regularizer = getattr(variable, "regularizer", None)
        constraint = getattr(variable, "constraint", None)
        decayed = id(variable) in decay["references"]
        if regularizer is None and constraint is None and not decayed:
            continue
        value = np.asarray(ops.convert_to_numpy(variable), dtype="float64")
        row = {
            "epoch": epoch,
            "variable": variable.path,
            "layer": owners[id(variable)].name if id(variable) in owners else model.name,
            "trainable": id(variable) in trainable,
            "penalty": None,
            "norm": float(np.sqrt(np.sum(np.square(value)))),
            "zero_fraction": float(np.mean(value == 0)) if value.size else 0.0,
            "saturation": None,
            "decayed": decayed,
            "decay_penalty": None,
        }
        if regularizer is not None:
            row["penalty"] = float(np.sum(ops.convert_to_numpy(regularizer(variable))))
        if isinstance(constraint, MaxNorm):
            row["saturation"] = _saturation(value, constraint)
        if decayed:
            reference = decay["references"][id(variable)]
            difference = value if reference is None else value - reference
            row["decay_penalty"] = decay["factor"] / 2.0 * float(np.sum(np.square(difference)))
        rows.append(row)
    return rows


def _saturation(value, constraint):
    rank = value.ndim
    axes = tuple(_units.reduction_axes(constraint.axis, rank)) if rank else ()
    norms = np.sqrt(np.atleast_1d(ops.convert_to_numpy(_units.squared_norms(value, axes))))
    return float(np.mean(norms >= constraint.max_value * (1 - 1e-5)))


def _decay_state(model):
    """`{"references": {id(variable): reference array or None}, "factor": c / lr}`."""
    from keras_regkit.optimizers import DecoupledWeightDecay

    optimizer = getattr(model, "optimizer", None)
    if not isinstance(optimizer, DecoupledWeightDecay) or not optimizer.built:
        return {"references": {}, "factor": 0.0}
    learning_rate = float(ops.convert_to_numpy(optimizer.learning_rate))
    coefficient = optimizer.decay_coefficient()
    factor = coefficient / learning_rate if learning_rate > 0 else 0.0
    references = {}
    for variable in model.trainable_weights:
        if optimizer.decays(variable):
            reference = optimizer.decay_reference(variable)
            references[id(variable)] = (
                None if reference is None
                else np.asarray(ops.convert_to_numpy(reference), dtype="float64")
            )
    return {"references": references, "factor": factor}


def plot_statistics(rows, path):
    """Draws `rows` (from `RegularizationMonitor`) as one PNG: a panel per quantity."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    keys = [
        key for key in ("penalty", "norm", "zero_fraction", "saturation", "decay_penalty")
        if any(row[key] is not None for row in rows)
    ]
    variables = list(dict.fromkeys(row["variable"] for row in rows))
    columns = min(len(keys), 3)
    lines = math.ceil(len(keys) / columns)
    figure, axes = pyplot.subplots(lines, columns, figsize=(5 * columns, 3.5 * lines), squeeze=False)
    for axis, key in zip(axes.flat, keys):
        for variable in variables:
            points = [(r["epoch"], r[key]) for r in rows if r["variable"] == variable and r[key] is not None]
            if points:
                epochs, values = zip(*points)
                axis.plot([e + 1 for e in epochs], values, marker=".", label=variable)
        axis.set_title(key)
        axis.set_xlabel("epoch")
    for axis in list(axes.flat)[len(keys):]:
        axis.axis("off")
    if len(variables) <= 12:
        axes.flat[0].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path
