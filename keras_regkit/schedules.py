"""Regularization that changes during training: schedules, and what they drive.

A schedule gives a non-negative value for each epoch of training (a float
epoch, `epoch + batch / steps_per_epoch`, when it changes every step). The
`RegularizationSchedule` callback multiplies with it, without recompiling
and without retracing the training step when the value changes:

- the rate of each schedulable dropout layer (`ScheduledDropout`,
  `ScheduledSpatialDropout1D/2D/3D`; `schedulable_dropout` swaps Keras's own
  dropout layers in a built model for them), of each `DropPath` and of each
  `DropBlock2D`: the layer drops `rate * value`, so the per-depth rates of
  `insert_droppath` keep their ratios;
- the coefficient of each weight penalty (`variable.regularizer`);
- the `weight_decay` of a `DecoupledWeightDecay` optimizer (through
  `ScheduledWeightDecay`).

Early dropout (dropout for the first epochs only, for underfitting models) is
`EarlySchedule`, late dropout (none for the first epochs, for overfitting
models) `LateSchedule`, as in Liu et al.'s code; `LinearSchedule`,
`CosineSchedule`, `StepSchedule` and `ConstantSchedule` give ramps and steps.

Reference: Liu, Xu, Darrell et al. (2023), "Dropout reduces underfitting"
(github.com/facebookresearch/dropout).
"""

import math
import numbers

import keras
from keras import ops

from keras_regkit import _validation

__all__ = [
    "ConstantSchedule",
    "CosineSchedule",
    "EarlySchedule",
    "LateSchedule",
    "LinearSchedule",
    "RegularizationSchedule",
    "Schedule",
    "ScheduledDropout",
    "ScheduledSpatialDropout1D",
    "ScheduledSpatialDropout2D",
    "ScheduledSpatialDropout3D",
    "ScheduledWeightDecay",
    "StepSchedule",
    "get",
    "schedulable_dropout",
]

EARLY_DECAYS = ("constant", "linear")


class Schedule:
    """Base class of the schedules: a value `>= 0` for each epoch.

    `schedule(epoch)` takes the epoch counted from 0, as `fit` does (a float
    between two epochs when a schedule changes every step), and returns a
    float; given a tensor, it returns a float32 tensor, computed with
    `keras.ops` (so it runs inside a traced training step). A subclass writes
    its formula once, in `call(epoch)`, and gives `maximum()`, its largest
    value, and `get_config()`.
    """

    def __call__(self, epoch):
        if isinstance(epoch, numbers.Real):
            epoch = _validation.non_negative(epoch, "epoch")
            return float(ops.convert_to_numpy(self.call(ops.convert_to_tensor(epoch, "float32"))))
        return self.call(ops.cast(epoch, "float32"))

    def call(self, epoch):
        """The formula: the value at `epoch` (a float32 tensor), a float32 tensor."""
        raise NotImplementedError

    def maximum(self):
        """The largest value the schedule takes."""
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


@keras.saving.register_keras_serializable(package="keras_regkit")
class ConstantSchedule(Schedule):
    """The same value at every epoch.

    Args:
        value: Non-negative float. Defaults to `1.0`.

    Example:

    >>> import keras_regkit
    >>> keras_regkit.ConstantSchedule(0.5)(7)
    0.5
    """

    def __init__(self, value=1.0):
        self.value = _validation.non_negative(value, "value")

    def call(self, epoch):
        return ops.zeros_like(epoch) + self.value

    def maximum(self):
        return self.value

    def get_config(self):
        return {"value": self.value}


class _Ramp(Schedule):
    """What `LinearSchedule` and `CosineSchedule` share: `start`, `end`, `epochs`."""

    def __init__(self, start, end, epochs):
        self.start = _validation.non_negative(start, "start")
        self.end = _validation.non_negative(end, "end")
        self.epochs = _validation.positive_int(epochs, "epochs")

    def maximum(self):
        return max(self.start, self.end)

    def get_config(self):
        return {"start": self.start, "end": self.end, "epochs": self.epochs}


@keras.saving.register_keras_serializable(package="keras_regkit")
class LinearSchedule(_Ramp):
    """From `start` to `end` linearly over `epochs` epochs, then `end`:

        value(epoch) = start + (end - start) * min(epoch / epochs, 1)

    `LinearSchedule(0, 1, 5)` warms a regularizer up over five epochs (the
    value is `0` in the first one and reaches `1` at epoch 5);
    `LinearSchedule(1, 0, 5)` is the linear early dropout of Liu et al.

    Args:
        start: Non-negative float, the value at epoch 0.
        end: Non-negative float, the value from epoch `epochs` on.
        epochs: Int `>= 1`, the length of the ramp.

    Example:

    >>> import keras_regkit
    >>> ramp = keras_regkit.LinearSchedule(start=0.0, end=1.0, epochs=4)
    >>> [ramp(epoch) for epoch in range(6)]  # epoch / 4, then 1
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """

    def call(self, epoch):
        progress = ops.minimum(epoch / self.epochs, 1.0)
        return self.start + (self.end - self.start) * progress


@keras.saving.register_keras_serializable(package="keras_regkit")
class CosineSchedule(_Ramp):
    """From `start` to `end` along half a cosine over `epochs` epochs, then `end`:

        value(epoch) = start + (end - start) * (1 - cos(pi * min(epoch / epochs, 1))) / 2

    (DINO's weight-decay schedule is `CosineSchedule(1, 10, epochs)` on a base
    `weight_decay` of 0.04.)

    Args:
        start: Non-negative float, the value at epoch 0.
        end: Non-negative float, the value from epoch `epochs` on.
        epochs: Int `>= 1`, the length of the curve.

    Example:

    >>> import keras_regkit
    >>> curve = keras_regkit.CosineSchedule(start=1.0, end=0.0, epochs=2)
    >>> [round(curve(epoch), 6) for epoch in range(4)]  # (1 + cos(pi * epoch / 2)) / 2
    [1.0, 0.5, 0.0, 0.0]
    """

    def call(self, epoch):
        progress = ops.minimum(epoch / self.epochs, 1.0)
        return self.start + (self.end - self.start) * 0.5 * (1.0 - ops.cos(math.pi * progress))


@keras.saving.register_keras_serializable(package="keras_regkit")
class StepSchedule(Schedule):
    """Piecewise constant: `values[i]` from epoch `boundaries[i - 1]` on.

        value(epoch) = values[number of boundaries <= epoch]

    Args:
        boundaries: Strictly increasing list of ints `>= 1`, the epochs at
            which the value changes (kept as a list, as JSON gives it back).
        values: List of non-negative floats, one more than `boundaries`.

    Example:

    >>> import keras_regkit
    >>> steps = keras_regkit.StepSchedule(boundaries=[2, 4], values=[1.0, 0.5, 0.0])
    >>> [steps(epoch) for epoch in range(6)]
    [1.0, 1.0, 0.5, 0.5, 0.0, 0.0]
    """

    def __init__(self, boundaries, values):
        if not isinstance(boundaries, (list, tuple)):
            raise TypeError(
                "`boundaries` must be a list of increasing ints >= 1. "
                f"Received: boundaries={boundaries!r}")
        if not isinstance(values, (list, tuple)):
            raise TypeError(
                "`values` must be a list of non-negative floats. "
                f"Received: values={values!r}")
        boundaries = [_validation.positive_int(b, "boundaries") for b in boundaries]
        if any(later <= earlier for earlier, later in zip(boundaries, boundaries[1:])):
            raise ValueError(
                "`boundaries` must be strictly increasing. "
                f"Received: boundaries={boundaries!r}")
        values = [_validation.non_negative(v, "values") for v in values]
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                "`values` must hold one value more than `boundaries` (the value "
                "before the first boundary, then one after each). Received: "
                f"boundaries={boundaries!r}, values={values!r}")
        self.boundaries = boundaries
        self.values = values

    def call(self, epoch):
        if not self.boundaries:
            return ops.zeros_like(epoch) + self.values[0]
        passed = ops.greater_equal(
            ops.expand_dims(epoch, -1), ops.convert_to_tensor(self.boundaries, "float32"))
        index = ops.sum(ops.cast(passed, "int32"), axis=-1)
        return ops.take(ops.convert_to_tensor(self.values, "float32"), index)

    def maximum(self):
        return max(self.values)

    def get_config(self):
        return {"boundaries": list(self.boundaries), "values": list(self.values)}


@keras.saving.register_keras_serializable(package="keras_regkit")
class EarlySchedule(Schedule):
    """Early dropout: `value` for the first `epochs` epochs, then `0`.

    For underfitting models (Liu et al., 2023): dropout in the early phase of
    training lowers the variance of the mini-batch gradients and aligns them
    with the full-batch gradient; without dropout afterwards, the model fits
    the data better. With `decay="linear"`, the value falls from `value` to
    `0` over the early epochs instead of staying at `value`:

        decay="constant":  value(epoch) = value if epoch < epochs else 0
        decay="linear":    value(epoch) = value * max(1 - epoch / epochs, 0)

    Args:
        epochs: Int `>= 1`, the early phase (the paper's `cutoff_epoch`).
        value: Non-negative float, the value in the early phase. Defaults
            to `1.0` (each layer's own rate).
        decay: `"constant"` (default) or `"linear"` (the paper's
            `drop_schedule`).

    Example:

    >>> import keras_regkit
    >>> early = keras_regkit.EarlySchedule(epochs=2)
    >>> [early(epoch) for epoch in range(4)]
    [1.0, 1.0, 0.0, 0.0]

    Reference: Liu et al. (2023), "Dropout reduces underfitting", Section 4.
    """

    def __init__(self, epochs, value=1.0, decay="constant"):
        self.epochs = _validation.positive_int(epochs, "epochs")
        self.value = _validation.non_negative(value, "value")
        self.decay = _validation.one_of(decay, "decay", EARLY_DECAYS)

    def call(self, epoch):
        if self.decay == "linear":
            return self.value * ops.maximum(1.0 - epoch / self.epochs, 0.0)
        return ops.where(ops.less(epoch, self.epochs), self.value, 0.0)

    def maximum(self):
        return self.value

    def get_config(self):
        return {"epochs": self.epochs, "value": self.value, "decay": self.decay}


@keras.saving.register_keras_serializable(package="keras_regkit")
class LateSchedule(Schedule):
    """Late dropout: `0` for the first `epochs` epochs, then `value`.

    For overfitting models (Liu et al., 2023): training starts without
    dropout and turns it on later.

        value(epoch) = 0 if epoch < epochs else value

    Args:
        epochs: Int `>= 1`, the epochs without regularization.
        value: Non-negative float, the value afterwards. Defaults to `1.0`
            (each layer's own rate).

    Example:

    >>> import keras_regkit
    >>> late = keras_regkit.LateSchedule(epochs=2, value=0.5)
    >>> [late(epoch) for epoch in range(4)]
    [0.0, 0.0, 0.5, 0.5]

    Reference: Liu et al. (2023), "Dropout reduces underfitting", Section 5.
    """

    def __init__(self, epochs, value=1.0):
        self.epochs = _validation.positive_int(epochs, "epochs")
        self.value = _validation.non_negative(value, "value")

    def call(self, epoch):
        return ops.where(ops.less(epoch, self.epochs), 0.0, self.value)

    def maximum(self):
        return self.value

    def get_config(self):
        return {"epochs": self.epochs, "value": self.value}


SCHEDULES = {
    "constant": ConstantSchedule,
    "cosine": CosineSchedule,
    "early": EarlySchedule,
    "late": LateSchedule,
    "linear": LinearSchedule,
    "step": StepSchedule,
}


def get(identifier, name="schedule"):
    """Returns the `Schedule` that `identifier` stands for.

    Args:
        identifier: A `Schedule`; a non-negative number (a
            `ConstantSchedule`); or a dict, either what
            `keras.saving.serialize_keras_object` gives for a schedule or
            `{"class_name": short_name, "config": {...}}` with a short name
            among `"constant"`, `"cosine"`, `"early"`, `"late"`, `"linear"`
            and `"step"`.
        name: The argument's name, for error messages.

    Example:

    >>> import keras_regkit
    >>> keras_regkit.schedules.get({"class_name": "late", "config": {"epochs": 3}})
    LateSchedule(epochs=3, value=1.0)
    """
    if isinstance(identifier, Schedule):
        return identifier
    if isinstance(identifier, numbers.Real) and not isinstance(identifier, bool):
        return ConstantSchedule(_validation.non_negative(identifier, name))
    names = ", ".join(repr(n) for n in SCHEDULES)
    if isinstance(identifier, str):
        hint = (f"it needs its arguments: pass {{'class_name': {identifier!r}, "
                "'config': {...}}} or a schedule object" if identifier in SCHEDULES
                else f"the short names are {names}")
        raise ValueError(
            f"`{name}` must be a Schedule, a number or a dict, not a name alone "
            f"({hint}). Received: {name}={identifier!r}")
    if isinstance(identifier, dict):
        class_name = identifier.get("class_name")
        config = identifier.get("config", {})
        if class_name in SCHEDULES and isinstance(config, dict):
            return SCHEDULES[class_name].from_config(config)
        try:
            schedule = keras.saving.deserialize_keras_object(identifier)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"`{name}` names no known schedule (the short names are {names}; "
                f"or a registered `Schedule` class): {error} "
                f"Received: {name}={identifier!r}") from error
        if isinstance(schedule, Schedule):
            return schedule
        identifier = schedule
    raise TypeError(
        f"`{name}` must be a keras_regkit Schedule (such as "
        "`keras_regkit.LinearSchedule(0.0, 1.0, epochs=5)`), a non-negative "
        f"number or a schedule's config dict. Received: {name}={identifier!r} "
        f"of type {type(identifier).__name__}")


# The weight-decay schedule, the layers and the callback live in their own
# modules; this is their public home (saved configs name it).
from keras_regkit._scheduled_weight_decay import ScheduledWeightDecay  # noqa: E402
from keras_regkit._scheduled_dropout import ScheduledDropout  # noqa: E402
from keras_regkit._scheduled_dropout import ScheduledSpatialDropout1D  # noqa: E402
from keras_regkit._scheduled_dropout import ScheduledSpatialDropout2D  # noqa: E402
from keras_regkit._scheduled_dropout import ScheduledSpatialDropout3D  # noqa: E402
from keras_regkit._scheduled_dropout import schedulable_dropout  # noqa: E402
from keras_regkit._regularization_schedule import RegularizationSchedule  # noqa: E402

for _public in (ScheduledDropout, ScheduledSpatialDropout1D, ScheduledSpatialDropout2D,
                ScheduledSpatialDropout3D, schedulable_dropout, RegularizationSchedule,
                ScheduledWeightDecay):
    _public.__module__ = "keras_regkit.schedules"
del _public
