"""The `RegularizationSchedule` callback (public home: `keras_regkit.schedules`).

What it changes, and how one traced training step serves every value:

- a layer's rate: the `rate_factor` weight of `ScheduledDropout` (and the
  spatial ones), `DropPath` and `DropBlock2D`, a variable of the model that
  the step reads;
- a weight penalty: for the length of `fit`, `variable.regularizer` becomes
  `factor * regularizer`, with `factor` a non-trainable variable of the
  model (`_scaled_penalty`);
- `DecoupledWeightDecay`'s `weight_decay`: for the length of `fit`, a
  `ScheduledWeightDecay`, which turns the optimizer's step count into the
  epoch inside the step.

The last two are installed once at the start of `fit` (the step is traced
again then, once) and taken off when it ends. What the schedule drives is
found and checked first, by `_schedule_plan`.
"""

import keras
from keras import ops

from keras_regkit import _leftovers
from keras_regkit import _scaled_penalty
from keras_regkit import _schedule_plan
from keras_regkit import _validation
from keras_regkit import _wrapping
from keras_regkit import schedules

# The schedule installed on a model while a `fit` runs; the next fit with a
# schedule undoes a leftover (or call `RegularizationSchedule.restore()`).
_INSTALLED = _leftovers.Leftovers()


@keras.saving.register_keras_serializable(package="keras_regkit")
class RegularizationSchedule(keras.callbacks.Callback):
    r"""Changes dropout rates, penalties and weight decay during training, by schedules.

    Each argument is a schedule (a `keras_regkit.Schedule`, or what
    `keras_regkit.schedules.get` takes) giving a non-negative value per
    epoch, which multiplies what it drives. At the start of epoch `e`
    (counting from 0, as `fit` does, so `initial_epoch` resumes), or of each
    batch with `per_step=True` (at `e + batch / steps_per_epoch`):

        dropout, drop_path, drop_block:  each such layer drops  rate * schedule(e)
                                          (its `rate_factor` weight is set)
        regularizers:                    each penalty becomes   penalty(w) * schedule(e)
        weight_decay:                    decay strength         weight_decay * schedule(e)

    `dropout` drives `ScheduledDropout` and `ScheduledSpatialDropout1D/2D/3D`
    (`schedulable_dropout(model)` swaps Keras's own dropout layers of a built
    model for them); `drop_path` every `DropPath` (so the per-depth rates of
    `insert_droppath` keep their ratios); `drop_block` every `DropBlock2D`
    (use this or `DropBlockSchedule`, not both); `regularizers` the penalty of
    every trainable weight with a `regularizer`; `weight_decay` the strength
    of a `DecoupledWeightDecay` optimizer (also inside a
    `LossScaleOptimizer`). `layers` maps layer-name globs to schedules for
    particular layers (nested and inner layers too): a rate layer's rate, or
    the penalties of a layer's weights; it wins over the arguments above,
    and later entries win over earlier ones. Layers and penalties not named
    keep their values.

    The training step is not traced again when a value changes: the rates
    are weights of the model, the penalty factors are variables attached to
    the model while `fit` runs, and the weight decay is a
    `ScheduledWeightDecay` evaluated at the optimizer's step count inside
    the step. When penalties or weight decay are scheduled, the step is
    traced once more when `fit` starts. When `fit` ends, the rate factors are
    set back to their values at its start and the penalties and weight decay
    are restored. (Keras does not tell callbacks when `fit` raises: then the
    next `fit` with a schedule restores them first, or call `restore()`.)
    With `per_step=True` on the JAX backend, each change of value within an
    epoch copies the training state back to the model first
    (`model.jax_state_sync()`), which costs time on large models.

    Everything is checked when `fit` starts, before anything changes: a
    schedule whose target is not in the model, a rate that the schedule
    would take to 1 or more (`rate * schedule.maximum()`), a `weight_decay`
    schedule without a `DecoupledWeightDecay` or with a zero decay, unknown
    steps per epoch where needed (`per_step`, `weight_decay`).

    Args:
        dropout: Schedule for the schedulable dropout layers. Defaults to `None`.
        drop_path: Schedule for the `DropPath` layers.
        drop_block: Schedule for the `DropBlock2D` layers.
        regularizers: Schedule for every weight penalty.
        weight_decay: Schedule for `DecoupledWeightDecay`'s strength.
        layers: Dict `{layer-name glob: schedule}`. Defaults to `None`.
        per_step: Whether values change every batch (`True`) or every
            epoch (`False`, the default).

    Example (late dropout: off for the first 2 epochs, then each layer's rate):

    >>> import numpy as np, keras, keras_regkit
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...     keras_regkit.ScheduledDropout(0.3, name="drop"), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> schedule = keras_regkit.RegularizationSchedule(dropout=keras_regkit.LateSchedule(2))
    >>> rates = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: print(
    ...     0.3 * float(model.get_layer("drop").rate_factor.numpy())))
    >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 1)), epochs=4, verbose=0,
    ...               callbacks=[schedule, rates])
    0.0
    0.0
    0.3
    0.3

    Reference: Liu et al. (2023), "Dropout reduces underfitting"; Huang et
    al. (2016) and Ghiasi et al. (2018) for ramped stochastic depth and
    DropBlock.
    """

    def __init__(self, *, dropout=None, drop_path=None, drop_block=None,
                 regularizers=None, weight_decay=None, layers=None, per_step=False):
        super().__init__()
        given = {"dropout": dropout, "drop_path": drop_path, "drop_block": drop_block,
                 "regularizers": regularizers, "weight_decay": weight_decay}
        kinds = {kind: schedules.get(value, kind)
                 for kind, value in given.items() if value is not None}
        if layers is not None:
            if not isinstance(layers, dict):
                raise TypeError(
                    "`layers` must be a dict {layer-name glob: schedule}. "
                    f"Received: layers={layers!r} of type {type(layers).__name__}")
            for key in layers:
                if not isinstance(key, str) or not key:
                    raise TypeError(
                        "`layers` keys must be non-empty layer-name globs (str). "
                        f"Received: layers={layers!r}")
            layers = {key: schedules.get(value, f"layers[{key!r}]")
                      for key, value in layers.items()}
            if not layers:
                raise ValueError("`layers` must not be an empty dict. Received: layers={}")
        per_step = _validation.boolean(per_step, "per_step")
        if not kinds and not layers:
            raise ValueError(
                "RegularizationSchedule needs at least one schedule: pass `dropout`, "
                "`drop_path`, `drop_block`, `regularizers`, `weight_decay` or `layers`. "
                "Received: no schedule")
        self.dropout = kinds.get("dropout")
        self.drop_path = kinds.get("drop_path")
        self.drop_block = kinds.get("drop_block")
        self.regularizers = kinds.get("regularizers")
        self.weight_decay = kinds.get("weight_decay")
        self.layers = layers
        self.per_step = per_step
        self._undo = None
        self._targets = []  # (schedule, variable) pairs set at epoch (or batch) starts
        self._current = {}  # id(variable) -> value last set
        self._decay = None  # the ScheduledWeightDecay installed, if any
        self._steps = None
        self._epoch = 0
        self._sync = None

    # --- installing and undoing -----------------------------------------------------

    def on_train_begin(self, logs=None):
        model = self.model
        _INSTALLED.undo(model)
        steps = self.params.get("steps") if self.params else None
        rates, groups, decay = _schedule_plan.plan(
            model,
            {"dropout": self.dropout, "drop_path": self.drop_path,
             "drop_block": self.drop_block, "regularizers": self.regularizers},
            self.layers, self.weight_decay, self.per_step, steps)
        undo = []

        def restore():
            for step in reversed(undo):
                step()

        try:
            targets = self._install(model, rates, groups, decay, steps, undo)
        except Exception:
            restore()
            raise
        self._undo = _INSTALLED.keep(model, restore)
        self._targets = targets
        self._current = {}
        self._steps = steps
        self._first_epoch = None
        # Backend differences decided once: on JAX the step runs on a copy of
        # the variables, which must be copied back before one changes mid-epoch.
        self._sync = getattr(model, "jax_state_sync", None)

    def _install(self, model, rates, groups, decay, steps, undo):
        """Changes the model for this fit, appending each undo step; returns the targets."""
        targets = []
        for layer, schedule, _ in rates:
            start = float(ops.convert_to_numpy(layer.rate_factor))
            undo.append(lambda variable=layer.rate_factor, value=start: variable.assign(value))
            targets.append((schedule, layer.rate_factor))
        retrace = False
        if groups:
            targets.extend(_scaled_penalty.scale_penalties(model, groups, undo))
            retrace = True
        self._decay = None
        if decay is not None:
            optimizer, schedule = decay
            original = optimizer.weight_decay
            self._decay = schedules.ScheduledWeightDecay(
                original, schedule, steps, per_step=self.per_step,
                initial_step=int(ops.convert_to_numpy(_wrapping.step_count(optimizer))))
            optimizer.weight_decay = self._decay
            undo.append(lambda: setattr(optimizer, "weight_decay", original))
            retrace = True
        if retrace:
            undo.append(lambda: (setattr(model, "train_function", None),
                                 setattr(model, "test_function", None)))
            model.make_train_function(force=True)
            model.test_function = None
        return targets

    def restore(self):
        """Undoes what the schedule changed on its model (as the end of `fit` does).

        For a `fit` that raised, which Keras does not report to callbacks.
        Nothing happens when nothing is installed.
        """
        if self._undo is not None and self.model is not None:
            undo, self._undo = self._undo, None
            _INSTALLED.release(self.model, undo)

    def on_train_end(self, logs=None):
        self.restore()

    # --- setting the values -----------------------------------------------------------

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self._first_epoch is None:
            self._first_epoch = epoch
            if self._decay is not None:  # read when the step is traced, after this
                self._decay.initial_epoch = epoch
        self._set(float(epoch))

    def on_train_batch_begin(self, batch, logs=None):
        if self.per_step:
            self._set(self._epoch + batch / self._steps)

    def _set(self, epoch):
        values = {}
        changes = []
        for schedule, variable in self._targets:
            if id(schedule) not in values:
                values[id(schedule)] = schedule(epoch)
            value = values[id(schedule)]
            if self._current.get(id(variable)) != value:
                changes.append((variable, value))
        if not changes:
            return
        if self._sync is not None:
            self._sync()
        for variable, value in changes:
            variable.assign(value)
            self._current[id(variable)] = value

    # --- serialization --------------------------------------------------------------

    def get_config(self):
        def serialize(schedule):
            return None if schedule is None else keras.saving.serialize_keras_object(schedule)

        return {
            "dropout": serialize(self.dropout),
            "drop_path": serialize(self.drop_path),
            "drop_block": serialize(self.drop_block),
            "regularizers": serialize(self.regularizers),
            "weight_decay": serialize(self.weight_decay),
            "layers": None if self.layers is None else {
                key: serialize(value) for key, value in self.layers.items()},
            "per_step": self.per_step,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

