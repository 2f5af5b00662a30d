"""Regularization strengths as KerasTuner hyperparameters.

KerasTuner (`pip install keras-tuner`, the `tuning` extra) does the search;
these helpers put the package's regularizers and decay strengths into its
search space, on a log scale as λ should be searched. The ready-made CIFAR-10
sweep is `keras_regkit.baselines.cifar10.sweep` (`keras-regkit sweep`).
"""

from keras_regkit import _validation
from keras_regkit import regularizers

_KINDS = ("l1", "l2", "group_lasso")


def strength(hp, name, min_value=1e-6, max_value=1e-1, values=None):
    """A regularization strength: `hp.Choice(values)` or a log-uniform `hp.Float`.

    Args:
        hp: A `keras_tuner.HyperParameters`.
        name: The hyperparameter's name.
        min_value, max_value: The log-uniform range (positive, min < max),
            used when `values` is `None`.
        values: A list of candidate strengths for a grid instead.

    Returns:
        The value KerasTuner draws for this trial (a float).

    Example:

    >>> import keras_tuner, keras_regkit
    >>> hp = keras_tuner.HyperParameters()
    >>> keras_regkit.tuning.strength(hp, "l2", values=[1e-4, 1e-3])
    0.0001
    >>> hp.get("l2")
    0.0001
    """
    if values is not None:
        values = check_values(values, "values")
        return hp.Choice(name, values)
    min_value = _validation.positive(min_value, "min_value")
    max_value = _validation.positive(max_value, "max_value")
    if not min_value < max_value:
        raise ValueError(
            "`min_value` must be below `max_value`. "
            f"Received: min_value={min_value}, max_value={max_value}"
        )
    return hp.Float(name, min_value, max_value, sampling="log")


def regularizer(hp, name, kind="l2", min_value=1e-6, max_value=1e-1, values=None):
    """A `keras_regkit` regularizer whose strength is a KerasTuner hyperparameter.

    Use it inside a KerasTuner `build(hp)` function, where a layer takes its
    `kernel_regularizer`, or in `keras_regkit.regularize` rules.

    Args:
        hp: A `keras_tuner.HyperParameters`.
        name: The hyperparameter's name.
        kind: `"l2"` (`L2`), `"l1"` (`L1`) or `"group_lasso"` (`GroupLasso`).
        min_value, max_value, values: As for `strength`.

    Example:

    >>> import keras_tuner, keras_regkit
    >>> hp = keras_tuner.HyperParameters()
    >>> keras_regkit.tuning.regularizer(hp, "dense_l2", min_value=1e-5, max_value=1e-2)
    <keras_regkit.regularizers.L2 object at ...>
    >>> hp.get("dense_l2")  # the default: the lower end of the range
    1e-05
    """
    kind = _validation.one_of(kind, "kind", _KINDS)
    value = strength(hp, name, min_value=min_value, max_value=max_value, values=values)
    if kind == "l1":
        return regularizers.L1(value)
    if kind == "group_lasso":
        return regularizers.GroupLasso(value)
    return regularizers.L2(value)


def check_values(values, name):
    """A non-empty list of distinct non-negative finite floats, sorted."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(
            f"`{name}` must be a list of numbers. Received: {name}={values!r}"
        )
    checked = [_validation.non_negative(value, name) for value in values]
    if not checked:
        raise ValueError(f"`{name}` must hold at least one value. Received: {name}={values!r}")
    if len(set(checked)) != len(checked):
        raise ValueError(f"`{name}` must not repeat a value. Received: {name}={values!r}")
    return sorted(checked)
