"""`ScheduledWeightDecay`, an epoch schedule for `DecoupledWeightDecay`.

Its public home is `keras_regkit.schedules` (saved configs name it).
"""

import keras
from keras import ops

from keras_regkit import _validation
from keras_regkit.schedules import get


@keras.saving.register_keras_serializable(package="keras_regkit")
class ScheduledWeightDecay(keras.optimizers.schedules.LearningRateSchedule):
    r"""A `DecoupledWeightDecay` strength that follows an epoch schedule.

    `DecoupledWeightDecay` evaluates a `weight_decay` schedule at its step
    count (every call, with gradient accumulation) inside the traced step;
    this one turns the step into an epoch and multiplies:

        epoch(step) = initial_epoch + floor((step - initial_step) / steps_per_epoch)
        weight_decay(step) = base(step) * schedule(epoch(step))

    where `base` is `weight_decay` (a float, or a schedule of its own,
    evaluated at `step`). With `per_step=True` the epoch is not floored: the
    value changes every step. `RegularizationSchedule(weight_decay=...)` puts
    one on the model's optimizer for the length of a `fit` (and takes it off
    again); on its own it needs `steps_per_epoch` known in advance.

    Args:
        weight_decay: Non-negative float or
            `keras.optimizers.schedules.LearningRateSchedule`, the base strength.
        schedule: A `Schedule` (or what `keras_regkit.schedules.get` takes).
        steps_per_epoch: Int `>= 1`, training steps per epoch.
        initial_step: Int `>= 0`, the step count at the start of
            `initial_epoch`. Defaults to `0`.
        initial_epoch: Int `>= 0`. Defaults to `0`.
        per_step: Whether the epoch is fractional. Defaults to `False`.

    Example:

    >>> import keras_regkit
    >>> decay = keras_regkit.ScheduledWeightDecay(
    ...     0.1, keras_regkit.LateSchedule(epochs=1), steps_per_epoch=10)
    >>> [round(float(decay(step)), 6) for step in (0, 9, 10, 25)]  # 0.1 * late(step // 10)
    [0.0, 0.0, 0.1, 0.1]
    """

    def __init__(self, weight_decay, schedule, steps_per_epoch, *, initial_step=0,
                 initial_epoch=0, per_step=False):
        if not isinstance(weight_decay, keras.optimizers.schedules.LearningRateSchedule):
            weight_decay = _validation.non_negative(weight_decay, "weight_decay")
        self.weight_decay = weight_decay
        self.schedule = get(schedule, "schedule")
        self.steps_per_epoch = _validation.positive_int(steps_per_epoch, "steps_per_epoch")
        self.initial_step = _validation.non_negative_int(initial_step, "initial_step")
        self.initial_epoch = _validation.non_negative_int(initial_epoch, "initial_epoch")
        self.per_step = _validation.boolean(per_step, "per_step")

    def epoch(self, step):
        """`epoch(step)` of the formula above, a float32 tensor."""
        elapsed = ops.maximum(ops.cast(step, "int32") - self.initial_step, 0)
        if self.per_step:
            return self.initial_epoch + ops.cast(elapsed, "float32") / self.steps_per_epoch
        return self.initial_epoch + ops.cast(elapsed // self.steps_per_epoch, "float32")

    def __call__(self, step):
        base = self.weight_decay
        if isinstance(base, keras.optimizers.schedules.LearningRateSchedule):
            base = ops.cast(base(step), "float32")
        return base * self.schedule(self.epoch(step))

    def get_config(self):
        weight_decay = self.weight_decay
        if isinstance(weight_decay, keras.optimizers.schedules.LearningRateSchedule):
            weight_decay = keras.saving.serialize_keras_object(weight_decay)
        return {
            "weight_decay": weight_decay,
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "steps_per_epoch": self.steps_per_epoch,
            "initial_step": self.initial_step,
            "initial_epoch": self.initial_epoch,
            "per_step": self.per_step,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("weight_decay"), dict):
            config["weight_decay"] = keras.saving.deserialize_keras_object(
                config["weight_decay"])
        return cls(**config)
