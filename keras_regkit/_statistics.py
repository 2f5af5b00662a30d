"""Per-variable regularization statistics: pure functions of a model, measured now.

What `RegularizationMonitor` records per epoch; the quantities are defined in
its docstring.
"""

import numpy as np
from keras import ops

from keras_regkit import _layer_tree
from keras_regkit import _units
from keras_regkit.constraints import MaxNorm


def variable_statistics(model, epoch=None):
    """One dict per regularized, constrained or decayed variable of `model`, measured now.

    The keys are those of `RegularizationMonitor`'s rows (see there), plus
    `trainable`.
    """
    _layer_tree.check_model(model)
    owners = _layer_tree.variable_owners(model)
    decay = _decay_state(model)
    trainable = {id(v) for v in model.trainable_weights}
    rows = []
    for variable in _layer_tree.unique_variables(model.weights):
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
