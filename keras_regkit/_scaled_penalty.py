"""Weight penalties scaled by a factor variable while a `RegularizationSchedule` runs.

For the length of `fit`, `variable.regularizer` becomes
`factor * regularizer` (a `_ScaledPenalty`), with `factor` a non-trainable
variable held by a small layer attached to the model (a `_FactorHolder`), so
that the JAX backend, which passes the model's variables into the step,
passes it too: a variable outside the model would be a constant of the traced
step there. Setting the factor then changes the penalty without tracing the
step again. `scale_penalties` installs this; the undo steps it records take
it off.
"""

import contextlib
import weakref

import keras
from keras import ops

from keras_regkit import _layer_tree
from keras_regkit import _private_api

HOLDER = "_keras_regkit_penalty_factors"

# owner layer -> its (empty between fits) factor holder, reused across fits.
_HOLDERS = weakref.WeakKeyDictionary()


class _FactorHolder(keras.layers.Layer):
    """Holds the penalty factors as non-trainable variables while a fit runs.

    Never built, so its variables can be set and deleted as attributes at any
    time (Keras tracks and untracks them); it has none between fits.
    """

    def __init__(self):
        super().__init__(name="keras_regkit_penalty_factors")


class _ScaledPenalty:
    """`factor * regularizer(x)`; otherwise it reads as `regularizer`.

    Readers of `variable.regularizer` (`DecoupledWeightDecay`'s group unit,
    `ElasticNetCorrection`, `regularization_summary`, serialization) must go on
    seeing the user's regularizer while a schedule scales it: attributes are
    read from and written to it, and `__class__` is its class (so `isinstance`
    checks see it too).
    """

    def __init__(self, regularizer, factor):
        object.__setattr__(self, "regularizer", regularizer)
        object.__setattr__(self, "factor", factor)

    @property
    def __class__(self):
        return type(object.__getattribute__(self, "regularizer"))

    def __call__(self, x):
        penalty = ops.convert_to_tensor(self.regularizer(x))
        return ops.cast(self.factor, penalty.dtype) * penalty

    def __getattr__(self, name):
        return getattr(object.__getattribute__(self, "regularizer"), name)

    def __setattr__(self, name, value):
        setattr(self.regularizer, name, value)

    def __repr__(self):
        return f"{self.regularizer!r} (scaled by a RegularizationSchedule)"


def _scaled(regularizer):
    """Whether `regularizer` is a `_ScaledPenalty`."""
    return type(regularizer) is _ScaledPenalty


def scale_penalties(model, groups, undo):
    """Scales the penalties of `groups` by new factors; returns `(schedule, factor)` pairs.

    `groups` is `[(schedule, [variables])]`: each group gets a factor
    variable (`1.0`), held by the `_FactorHolder` attached to the layer that
    owns the group's first variable (the model if none does), and each of
    its variables' regularizers becomes a `_ScaledPenalty` with it (a
    regularizer already scaled is unwrapped first). Appends to `undo` the
    steps that put the regularizers back and detach the factors (that one
    runs last).
    """
    owners = _layer_tree.variable_owners(model)
    owner = owners.get(id(groups[0][1][0]), model)
    holder = _HOLDERS.get(owner)
    if holder is None:
        holder = _HOLDERS[owner] = _FactorHolder()
    strategy = getattr(model, "distribute_strategy", None)
    names = [f"factor_{index}" for index in range(len(groups))]
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        factors = [keras.Variable(1.0, trainable=False, dtype="float32", name=name)
                   for name in names]
    targets = []
    for name, factor, (schedule, variables) in zip(names, factors, groups):
        setattr(holder, name, factor)
        targets.append((schedule, factor))
        for variable in variables:
            inner = variable.regularizer
            if _scaled(inner):
                inner = inner.regularizer
            variable.regularizer = _ScaledPenalty(inner, factor)
            undo.append(lambda v=variable, r=inner: setattr(v, "regularizer", r)
                        if _scaled(v.regularizer) else None)
    _private_api.set_tracked_attribute(owner, HOLDER, holder)

    def detach():
        for name in names:
            delattr(holder, name)
        if HOLDER in vars(owner):
            delattr(owner, HOLDER)

    undo.insert(0, detach)  # run last
    tracked = {id(v) for v in model.non_trainable_variables}
    if not all(id(factor) in tracked for _, factor in targets):
        raise RuntimeError(
            "RegularizationSchedule: the penalty factors are not among the model's "
            "variables after attaching them to layer "
            f"{owner.name!r}; this Keras version tracks layers differently. "
            "Please report it.")
    return targets
