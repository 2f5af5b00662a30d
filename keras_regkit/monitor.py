"""What regularization does during `fit`: the penalty beside the loss, per-variable statistics.

Keras folds every penalty (`model.losses`) into `loss`. `RegularizationMonitor`
splits it back out, exactly, and records per epoch what each regularized or
constrained variable looks like.
"""

import contextlib
import importlib
import inspect
import json
import os
import warnings

import keras
from keras import ops

from keras_regkit import _distribute
from keras_regkit import _leftovers
from keras_regkit import _private_api
from keras_regkit import _validation
from keras_regkit import _weights
from keras_regkit._plots import plot_statistics
from keras_regkit._plots import write_tensorboard
from keras_regkit._statistics import variable_statistics

__all__ = ["RegularizationMonitor", "plot_statistics", "variable_statistics"]

_TRACKERS = "_keras_regkit_penalty_trackers"
_ABSENT = object()

# The split installed on a model while a `fit` (or an `evaluate` given the
# monitor) runs; the next fit or evaluate with any monitor undoes a leftover.
_INSTALLED = _leftovers.Leftovers()


def _install_split(model):
    """Two `Mean` metrics on a model, fed by a `compute_loss` that splits the loss.

    Returns the function that undoes it exactly. The metrics become tracked
    attributes (so they are in `model.metrics` and in every log Keras writes),
    and the model's `compute_loss` is wrapped on the instance. Keras's
    `train_step` updates its `loss` tracker with the unscaled per-replica loss
    weighted by the batch size; the two metrics are updated the same way, so
    for every logged value `loss = data_loss + penalty` up to float rounding.
    The data loss is the compiled loss computed on its own (so it stays exact
    beside a penalty millions of times larger); under a `compute_loss`
    override, whose terms are unknown, it is the loss minus the penalty.

    The undo puts back the instance's own `compute_loss` if it had one, else
    deletes the wrapper so the class's method shows through; removes the two
    metrics from the model; and drops the traced train and test functions so
    the next run retraces without the split.
    """
    strategy = getattr(model, "distribute_strategy", None)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        data = keras.metrics.Mean(name="data_loss")
        penalty = keras.metrics.Mean(name="penalty")
    own = vars(model).get("compute_loss", _ABSENT)  # the user's instance attribute
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

    def undo():
        if own is not _ABSENT:
            model.compute_loss = own
        elif "compute_loss" in vars(model):
            del model.compute_loss
        _private_api.remove_tracked_attribute(model, _TRACKERS)
        _weights.reset_compiled_functions(model)

    _private_api.set_tracked_attribute(model, _TRACKERS, [data, penalty])
    model.compute_loss = split_compute_loss
    _weights.reset_compiled_functions(model)  # retrace with the split loss
    return undo


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

    The two numbers come from two `Mean` metrics and a wrapper around the
    model's `compute_loss` that splits the loss it returns. The monitor adds
    them when `fit` begins (or an `evaluate` given the monitor) and removes
    them when it ends: then the model has its own `compute_loss` again (an
    instance attribute of the user's is put back), `model.metrics` is as
    before, and a later `fit` or `evaluate` without a monitor logs no
    `penalty`. Keras does not call `on_train_end` when `fit` raises: the next
    `fit` or `evaluate` with any monitor undoes the leftovers first, or call
    `restore()`.

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
        self._undo = None  # undoes the split while a fit or evaluate runs
        self._test_only = False  # installed by `on_test_begin` of an `evaluate`

    def on_train_begin(self, logs=None):
        # Whatever can fail does so here, before the first step, not after training.
        self.rows = []
        self._checked_split = False
        _INSTALLED.undo(self.model)
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
        self._install()
        self.model.make_train_function(force=True)  # `fit` made one before this call

    def on_test_begin(self, logs=None):
        # The validation of a fit runs with the fit's split; a standalone
        # `evaluate(callbacks=[monitor])` gets its own, removed at its end.
        if self._undo is None:
            _INSTALLED.undo(self.model)
            self._install()
            self._test_only = True
            self.model.make_test_function(force=True)

    def on_test_end(self, logs=None):
        if self._test_only:
            self.restore()

    def _install(self):
        self._undo = _INSTALLED.keep(self.model, _install_split(self.model))
        self._test_only = False

    def restore(self):
        """Leaves the model as the monitor found it (as the end of `fit` does).

        Puts back the model's own `compute_loss`, removes the `data_loss` and
        `penalty` metrics, and drops the traced steps. For a `fit` that raised,
        which Keras does not report to callbacks. Nothing happens when nothing
        is installed.
        """
        undo, self._undo = self._undo, None
        self._test_only = False
        if undo is not None:
            _INSTALLED.release(self.model, undo)

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
            write_tensorboard(self._writer, epoch, rows)

    def on_train_end(self, logs=None):
        self.restore()
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
