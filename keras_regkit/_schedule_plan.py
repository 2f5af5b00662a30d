"""What a `RegularizationSchedule` drives in a model, checked before anything changes.

`plan` finds the layers whose rate it sets, the weights whose penalty it
scales and the `DecoupledWeightDecay` whose strength it schedules, and
refuses, naming the argument, a schedule with nothing to drive, a rate the
schedule would take to 1 or more, or steps per epoch it needs and `fit`
does not know. `_regularization_schedule` then installs the plan.
"""

import keras

from keras_regkit import _graph
from keras_regkit import _layer_tree
from keras_regkit import _selectors
from keras_regkit import _wrapping
from keras_regkit._scheduled_dropout import SCHEDULED_DROPOUT
from keras_regkit.layers import DropBlock2D
from keras_regkit.layers import DropPath
from keras_regkit.optimizers import DecoupledWeightDecay

# Not `_ScheduledRate` for `dropout`: `DropPath` shares that mixin, and is `drop_path`'s.
RATE_KINDS = {
    "dropout": (SCHEDULED_DROPOUT, "ScheduledDropout or ScheduledSpatialDropout1D/2D/3D"),
    "drop_path": (DropPath, "DropPath"),
    "drop_block": (DropBlock2D, "DropBlock2D"),
}
RATE_LAYERS = SCHEDULED_DROPOUT + (DropPath, DropBlock2D)


def plan(model, schedules, layers, weight_decay, per_step, steps):
    """Checks everything; returns `(rates, penalties, decay)`.

    `schedules` maps the kinds `dropout`, `drop_path`, `drop_block` and
    `regularizers` to their schedules (`None` for none), `layers` is the
    callback's `{glob: schedule}` or `None`, `steps` the steps per epoch
    (`None` if unknown). `rates` is `[(layer, schedule, where)]`,
    `penalties` is `[(schedule, [variables])]`, `decay` is
    `(optimizer, schedule)` or `None`.
    """
    all_layers = list(_layer_tree.iter_layers(model))
    rates = {}  # id(layer) -> (layer, schedule, where)
    for kind, (layer_class, label) in RATE_KINDS.items():
        schedule = schedules[kind]
        if schedule is None:
            continue
        found = [layer for layer in all_layers if isinstance(layer, layer_class)]
        if not found:
            raise ValueError(_missing_rate_layers(model, kind, schedule, label, all_layers))
        if all(layer.rate == 0 for layer in found):
            raise ValueError(
                f"RegularizationSchedule: every {label} layer of '{model.name}' has "
                "rate 0, and the schedule multiplies the rate, so it would do "
                f"nothing. Received: {kind}={schedule!r}")
        for layer in found:
            rates[id(layer)] = (layer, schedule, f"{kind}={schedule!r}")
    owners = {}  # id(variable) -> (variable, schedule key)
    regularizers = schedules["regularizers"]
    if regularizers is not None:
        penalized = [v for v in _layer_tree.unique_variables(model.trainable_weights)
                     if v.regularizer is not None]
        if not penalized:
            raise ValueError(
                f"RegularizationSchedule: no trainable weight of '{model.name}' has "
                "a regularizer, so the `regularizers` schedule would do nothing. "
                "Set one (`keras_regkit.regularize(model, {...})`) or drop the "
                f"argument. Received: regularizers={regularizers!r}")
        for variable in penalized:
            owners[id(variable)] = (variable, "regularizers")
    for pattern, schedule in (layers or {}).items():
        matches = _selectors.as_predicate(pattern, name="layers key")
        matched = [layer for layer in all_layers if matches(layer)]
        if not matched:
            raise ValueError(
                f"RegularizationSchedule: `layers` key {pattern!r} matches no layer "
                f"of '{model.name}'. Its layers are: "
                f"{', '.join(_layer_tree.layer_names(model))}. "
                f"Received: layers={layers!r}")
        for layer in matched:
            if isinstance(layer, RATE_LAYERS):
                rates[id(layer)] = (layer, schedule, f"layers[{pattern!r}]={schedule!r}")
                continue
            if _graph.is_dropout(layer):
                raise ValueError(
                    f"RegularizationSchedule: layer {layer.name!r} matched by `layers` "
                    f"key {pattern!r} is a Keras {type(layer).__name__}, whose rate is "
                    "fixed when the training step is traced. Swap it for a schedulable "
                    "one with `model = keras_regkit.schedulable_dropout(model)` "
                    f"first. Received: layers={layers!r}")
            penalized = [v for v in layer.trainable_weights if v.regularizer is not None]
            if not penalized:
                raise ValueError(
                    f"RegularizationSchedule: layer {layer.name!r} matched by `layers` "
                    f"key {pattern!r} has neither a schedulable rate (a "
                    "ScheduledDropout, DropPath or DropBlock2D) nor a trainable "
                    f"weight with a regularizer. Received: layers={layers!r}")
            for variable in penalized:
                owners[id(variable)] = (variable, pattern)
    for layer, schedule, where in rates.values():
        if not layer.built:
            raise ValueError(
                f"RegularizationSchedule: layer {layer.name!r} is not built. "
                "Build the model (call it on data) before `fit`.")
        largest = layer.rate * schedule.maximum()
        if largest >= 1:
            raise ValueError(
                f"RegularizationSchedule: layer {layer.name!r} has rate {layer.rate} "
                f"and its schedule reaches {schedule.maximum()}, so it would drop "
                f"{largest:g} of its inputs: rate * schedule must stay below 1. "
                f"Received: {where}")
    groups = {}
    for variable, key in owners.values():
        schedule = regularizers if key == "regularizers" else layers[key]
        groups.setdefault(key, (schedule, []))[1].append(variable)
    decay = None
    if weight_decay is not None:
        decay = (_decay_target(model, weight_decay), weight_decay)
    if (per_step or decay is not None) and not steps:
        needs = "`per_step=True`" if per_step else "a `weight_decay` schedule"
        raise ValueError(
            f"RegularizationSchedule: {needs} needs the number of steps per "
            "epoch, which this `fit` does not know (a dataset of unknown size): "
            f"pass `steps_per_epoch` to `fit`. Received: steps={steps!r}")
    return list(rates.values()), list(groups.values()), decay


def _missing_rate_layers(model, kind, schedule, label, all_layers):
    message = (f"RegularizationSchedule: the model '{model.name}' has no {label} "
               f"layer, so the `{kind}` schedule would do nothing.")
    if kind == "dropout":
        keras_dropout = [layer.name for layer in all_layers
                         if _graph.is_dropout(layer)]
        if keras_dropout:
            message += (
                f" Its Keras dropout layers ({', '.join(keras_dropout)}) fix their "
                "rate when the training step is traced: swap them for schedulable "
                "ones with `model = keras_regkit.schedulable_dropout(model)`.")
    elif kind == "drop_path":
        message += " `keras_regkit.insert_droppath` puts them into residual networks."
    elif kind == "drop_block":
        message += " `keras_regkit.insert_dropblock` puts them into residual networks."
    return f"{message} Received: {kind}={schedule!r}"


def _decay_target(model, weight_decay):
    optimizer = getattr(model, "optimizer", None)
    chain = _wrapping.chain(optimizer) if optimizer is not None else []
    found = [o for o in chain if isinstance(o, DecoupledWeightDecay)]
    if not found:
        raise ValueError(
            "RegularizationSchedule: a `weight_decay` schedule drives the decay "
            "of a `keras_regkit.DecoupledWeightDecay` optimizer, and the model "
            f"'{model.name}' is compiled with {type(optimizer).__name__}. Compile it "
            "with `keras_regkit.DecoupledWeightDecay(optimizer, weight_decay=...)`. "
            f"Received: weight_decay={weight_decay!r}")
    optimizer = found[0]
    if not isinstance(optimizer.weight_decay,
                      keras.optimizers.schedules.LearningRateSchedule) \
            and optimizer.weight_decay == 0:
        raise ValueError(
            "RegularizationSchedule: the optimizer's `weight_decay` is 0, and the "
            "schedule multiplies it, so it would do nothing. Give the optimizer "
            f"the decay strength to scale. Received: weight_decay={weight_decay!r}")
    return optimizer
