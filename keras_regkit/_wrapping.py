"""The optimizer that `DecoupledWeightDecay` wraps: checks, what is read from it, delegation.

The wrapped optimizer may itself wrap another (`LossScaleOptimizer`); `chain`
walks down to the one that takes the gradient steps, which owns the step
count, the learning rate and the gradient-accumulation setting. Base-optimizer
arguments given to the wrapper are set on that one. Each value is checked here
(type and range, as every argument of this package is); how they combine (one
clip at a time, EMA settings, accumulation >= 2) Keras itself checks.
"""

import inspect
import numbers

import keras
from keras import ops

from keras_regkit import _private_api
from keras_regkit import _validation

# Base-optimizer arguments the wrapper passes on to the optimizer that takes
# the steps.
FORWARDED = (
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
    "loss_scale_factor",
    "gradient_accumulation_steps",
)
# The value check of each (`None`, Keras's "off", passes except for `use_ema`).
# Keras's constructor checks only how they combine, and accepts e.g.
# `clipnorm=-1` or `gradient_accumulation_steps=0` silently.
_VALUE_CHECKS = {
    "clipnorm": _validation.positive,
    "clipvalue": _validation.positive,
    "global_clipnorm": _validation.positive,
    "use_ema": _validation.boolean,
    "ema_momentum": _validation.fraction,
    "ema_overwrite_frequency": _validation.positive_int,
    "loss_scale_factor": _validation.positive,
    "gradient_accumulation_steps": _validation.positive_int,
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
    return _private_api.call_count(chain(optimizer)[-1])


def initial_learning_rate(optimizer):
    """`lr_0` for `decay_scaling="schedule"`: a schedule's value at step 0, or
    the learning rate now (a float learning rate, at build). Must be > 0."""
    schedule = _private_api.learning_rate_schedule(chain(optimizer)[-1])
    if schedule is not None:
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
    """Checks base-optimizer arguments given to the wrapper; returns them.

    They are meant for `stepping`, the optimizer taking the steps; the caller
    sets them once everything has been checked. Each value is checked here
    (`_VALUE_CHECKS`: type and range), then refused if `stepping` already has
    another non-default value for it or is built. How the values combine
    with `stepping`'s other settings (one clip at a time, EMA settings) is
    Keras's to check: one throwaway `keras.optimizers.Optimizer` is built with
    all of them, so Keras's own error comes out.
    """
    unknown = sorted(set(kwargs) - set(FORWARDED))
    if unknown:
        raise ValueError(
            f"Argument(s) not recognized: {unknown}. Set the learning rate and "
            "other hyperparameters on the wrapped optimizer. "
            f"Received: {', '.join(f'{k}={kwargs[k]!r}' for k in unknown)}"
        )
    if not kwargs:
        return {}
    kwargs = {
        key: value if value is None and key != "use_ema" else _VALUE_CHECKS[key](value, key)
        for key, value in kwargs.items()
    }
    defaults = _keras_defaults()
    settings = {key: getattr(stepping, key, defaults[key]) for key in FORWARDED}
    for key, value in kwargs.items():
        current = settings[key]
        if current != defaults[key] and current != value:
            raise ValueError(
                f"`{key}` is already {current!r} on the wrapped optimizer; set it "
                f"in one place only. Received: {key}={value!r}"
            )
    if stepping.built:
        raise ValueError(
            "Base-optimizer arguments can only be passed on to an optimizer that "
            f"is not built yet. Received: {', '.join(sorted(kwargs))} for a built "
            f"`{type(stepping).__name__}`"
        )
    keras.optimizers.Optimizer(
        learning_rate=0.0, name="forwarded_arguments_check", **{**settings, **kwargs}
    )
    return dict(kwargs)


class Wrapper(keras.optimizers.Optimizer):
    """An optimizer around `inner_optimizer`, which takes the steps.

    Delegates as `keras.optimizers.LossScaleOptimizer` does: the variables
    are both optimizers', and the learning rate, the step count and the loss
    scaling are the wrapped optimizer's. A subclass sets `inner_optimizer`
    in its `__init__` after `super().__init__`.
    """

    @property
    def optimizer(self):
        """The wrapped optimizer (also `inner_optimizer`, as in `LossScaleOptimizer`)."""
        return self.inner_optimizer

    @property
    def variables(self):
        return super().variables + self.inner_optimizer.variables

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    @property
    def loss_scale_factor(self):
        inner = self.__dict__.get("inner_optimizer")
        return None if inner is None else inner.loss_scale_factor

    @loss_scale_factor.setter
    def loss_scale_factor(self, value):
        # `LossScaleOptimizer(self)` sets `None` to turn off our scaling: the
        # inner optimizer is the one that scales. Before `inner_optimizer`
        # exists, `Optimizer.__init__` sets `None` too.
        inner = self.__dict__.get("inner_optimizer")
        if inner is not None:
            inner.loss_scale_factor = value

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)


def _keras_defaults():
    """`{argument: Keras's default}` for `FORWARDED`, from a Keras optimizer's signature.

    Every built-in Keras optimizer repeats the base-optimizer arguments with
    their defaults in its signature (`keras.optimizers.Optimizer` itself
    takes `**kwargs`); `SGD`'s is read.
    """
    parameters = inspect.signature(keras.optimizers.SGD).parameters
    return {key: parameters[key].default for key in FORWARDED}
