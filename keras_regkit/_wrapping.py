"""Checks on the optimizer that `DecoupledWeightDecay` wraps.

The wrapped optimizer may itself wrap another (`LossScaleOptimizer`); `chain`
walks down to the one that takes the gradient steps, which owns the step
count, the learning rate and the gradient-accumulation setting.
"""

import numbers

import keras
from keras import ops

from keras_regkit import _validation

# Base-optimizer arguments the wrapper passes on to the optimizer that takes
# the steps, with their Keras defaults.
FORWARDED = {
    "clipnorm": None,
    "clipvalue": None,
    "global_clipnorm": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}


def chain(optimizer):
    """`[optimizer, its inner optimizer, ...]` down to the one taking the steps."""
    optimizers = [optimizer]
    while isinstance(
        getattr(optimizers[-1], "inner_optimizer", None), keras.optimizers.Optimizer
    ):
        optimizers.append(optimizers[-1].inner_optimizer)
    return optimizers


def step_count(optimizer):
    """The count a learning-rate schedule sees: every call, with accumulation."""
    stepping = chain(optimizer)[-1]
    if hasattr(stepping, "_iterations"):
        return stepping._iterations
    return stepping.iterations


def initial_learning_rate(optimizer):
    """`lr_0` for `decay_scaling="schedule"`: a schedule's value at step 0, or
    the learning rate now (a float learning rate, at build). Must be > 0."""
    schedule = getattr(chain(optimizer)[-1], "_learning_rate", None)
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        value = schedule(0)
    else:
        value = optimizer.learning_rate
    value = ops.cast(value, "float32")
    try:
        number = float(ops.convert_to_numpy(value))
    except Exception:  # a symbolic value: nothing to check now
        return value
    if not number > 0:
        raise ValueError(
            "decay_scaling='schedule' divides by the learning rate at step 0, "
            f"which must be > 0. Received: learning rate at step 0={number!r}"
        )
    return value


def update_gate(optimizer, grads):
    """Will this call update the weights? `None` if always, else a 0./1. tensor.

    A wrapped `LossScaleOptimizer` skips steps with non-finite gradients, and
    gradient accumulation only updates on every `gradient_accumulation_steps`-th
    call; read before the step changes the step count.
    """
    conditions = [
        inner.check_finite(grads)
        for inner in chain(optimizer)
        if isinstance(inner, keras.optimizers.LossScaleOptimizer)
    ]
    steps = chain(optimizer)[-1].gradient_accumulation_steps
    if steps:
        conditions.append(ops.equal((step_count(optimizer) + 1) % steps, 0))
    if not conditions:
        return None
    gate = conditions[0]
    for condition in conditions[1:]:
        gate = ops.logical_and(gate, condition)
    return ops.cast(gate, "float32")


def check_optimizer(optimizer):
    """Refuses a non-optimizer, one that already decays the weights, and (on
    JAX) a wrapped `LossScaleOptimizer`."""
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            "`optimizer` must be a `keras.optimizers.Optimizer` instance. "
            f"Received: optimizer={optimizer!r} of type {type(optimizer).__name__}"
        )
    for inner in chain(optimizer):
        existing = inner.weight_decay
        if existing is not None and not (
            isinstance(existing, numbers.Real) and existing == 0
        ):
            raise ValueError(
                "The wrapped optimizer already applies weight decay "
                f"(`{type(inner).__name__}` with weight_decay={existing!r}), "
                "which would decay the weights twice. Wrap an optimizer "
                "without `weight_decay` (e.g. `Adam` instead of `AdamW`)."
            )
    for inner in chain(optimizer):
        if isinstance(inner, keras.optimizers.LossScaleOptimizer) and (
            keras.backend.backend() == "jax"
        ):
            raise ValueError(
                "On the JAX backend a `LossScaleOptimizer` cannot be wrapped: "
                "its stateful `apply` cannot run inside the traced train step. "
                "Put it outside instead, "
                "`LossScaleOptimizer(DecoupledWeightDecay(...))`, which is what "
                "`model.compile` does under the 'mixed_float16' policy. "
                f"Received: optimizer={optimizer!r}"
            )


def check_forwarded(kwargs, stepping):
    """Validates base-optimizer arguments given to the wrapper; returns them.

    They are meant for `stepping`, the optimizer taking the steps; the caller
    sets them once everything has been validated.
    """
    unknown = sorted(set(kwargs) - set(FORWARDED))
    if unknown:
        raise ValueError(
            f"Argument(s) not recognized: {unknown}. Set the learning rate and "
            "other hyperparameters on the wrapped optimizer. "
            f"Received: {', '.join(f'{k}={kwargs[k]!r}' for k in unknown)}"
        )
    checked = {}
    for key, value in kwargs.items():
        checked[key] = _check_one(key, value)
        current = getattr(stepping, key, FORWARDED[key])
        if current != FORWARDED[key] and current != checked[key]:
            raise ValueError(
                f"`{key}` is already {current!r} on the wrapped optimizer; set it "
                f"in one place only. Received: {key}={value!r}"
            )
    if checked and stepping.built:
        raise ValueError(
            "Base-optimizer arguments can only be passed on to an optimizer that "
            f"is not built yet. Received: {', '.join(sorted(checked))} for a built "
            f"`{type(stepping).__name__}`"
        )
    clips = {
        k: checked.get(k, getattr(stepping, k, None))
        for k in ("clipnorm", "clipvalue", "global_clipnorm")
    }
    clips = {k: v for k, v in clips.items() if v is not None}
    if len(clips) > 1:
        raise ValueError(
            "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. "
            f"Received: {', '.join(f'{k}={v!r}' for k, v in clips.items())}"
        )
    return checked


def _check_one(key, value):
    if key == "use_ema":
        if not isinstance(value, bool):
            raise TypeError(f"`use_ema` must be a bool. Received: use_ema={value!r}")
        return value
    if value is None:
        return None
    if key in ("gradient_accumulation_steps", "ema_overwrite_frequency"):
        value = _validation.positive_int(value, key)
        if key == "gradient_accumulation_steps" and value < 2:
            raise ValueError(
                "`gradient_accumulation_steps` must be an integer >= 2. "
                f"Received: gradient_accumulation_steps={value!r}"
            )
        return value
    if key == "ema_momentum":
        value = _validation.number(value, key)
        if not 0 <= value <= 1:
            raise ValueError(
                f"`ema_momentum` must be in [0, 1]. Received: ema_momentum={value!r}"
            )
        return value
    return _validation.positive(value, key)
