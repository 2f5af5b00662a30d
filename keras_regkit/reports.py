"""Reports on a model's regularization: `summary` and `sparsity`.

`summary` lists the regularized and constrained variables with their current
penalty; `sparsity` counts exact zeros (the output of proximal L1 and
group-lasso steps).
"""

import numpy as np
from keras import ops

from keras_regkit import _layer_tree
from keras_regkit import _tables
from keras_regkit import _units
from keras_regkit import _validation


def summary(model, print_fn=print):
    """Prints and returns each regularized or constrained variable of `model`.

    Args:
        model: A `keras.Model`.
        print_fn: Called with each line of the table; `None` prints nothing.
            The last line is the total of the penalties in `model.losses`
            (those of trainable variables).

    Returns:
        One dict per variable with `layer` (innermost layer name), `variable`
        (path), `shape`, `trainable` (whether its penalty is in
        `model.losses`), `regularizer` and `constraint` (class names or
        `None`), `regularizer_config` and `constraint_config` (their
        `get_config()`, or `None`), and `penalty` (its current value, float,
        or `None`).

    Example:

    >>> import keras, numpy as np, keras_regkit
    >>> model = keras.Sequential(
    ...     [keras.Input((2,)), keras.layers.Dense(2, name="d")], name="net")
    >>> _ = model.get_layer("d").kernel.assign(np.array([[3.0, 0.0], [4.0, 0.0]]))
    >>> model = keras_regkit.regularize(model, {"d": keras_regkit.L1(0.1)})
    >>> rows = keras_regkit.summary(model)
    layer  variable      shape   regularizer  penalty  constraint
    d      net/d/kernel  (2, 2)  L1(l1=0.1)   0.7      -
    Total penalty: 0.7 (1 variable)
    >>> rows[0]["penalty"]  # 0.1 * (3 + 4)
    0.7
    """
    _layer_tree.check_model(model)
    print_fn = _validation.print_fn(print_fn)
    layer_of = {k: layer.name for k, layer in _layer_tree.variable_owners(model).items()}
    trainable = {id(v) for v in model.trainable_weights}
    rows = []
    for variable in _layer_tree.unique_variables(model.weights):
        regularizer = getattr(variable, "regularizer", None)
        constraint = getattr(variable, "constraint", None)
        if regularizer is None and constraint is None:
            continue
        penalty = None
        if regularizer is not None:
            penalty = float(np.sum(ops.convert_to_numpy(regularizer(variable))))
        rows.append(
            {
                "layer": layer_of.get(id(variable), model.name),
                "variable": variable.path,
                "shape": tuple(variable.shape),
                "trainable": id(variable) in trainable,
                "regularizer": _class_name(regularizer),
                "regularizer_config": _config(regularizer),
                "penalty": penalty,
                "constraint": _class_name(constraint),
                "constraint_config": _config(constraint),
            }
        )
    if print_fn is not None:
        _print_summary(rows, model.name, print_fn)
    return rows


def sparsity(model, print_fn=print):
    """Prints and returns the exact-zero counts of the trainable weights of `model`.

    One row per trainable variable of rank >= 1, then a total row. For a
    variable of rank >= 2, a unit is one output unit's fan-in vector, as
    the layer holding the variable lays it out (the same units as
    `MaxNorm` and `GroupLasso` get from `constrain`/`regularize`): a column
    of a `Dense` kernel, a filter `W[..., j]` of a `ConvND` kernel, one
    (channel, multiplier) filter `W[..., c, m]` of a depthwise kernel, one
    output channel `W[..., j, :]` of a transposed-convolution kernel, one
    index of the output axes of an `EinsumDense` kernel (its `equation`), a
    column of an `Embedding` matrix. Layers inside composite layers
    (`MultiHeadAttention`'s projections, a wrapper's layer) are looked up.
    A unit whose whole fan-in vector is zero is counted in `zero_units`.

    Args:
        model: A `keras.Model`.
        print_fn: Called with each line of the table; `None` prints nothing.

    Returns:
        One dict per variable with `layer`, `variable` (path), `shape`,
        `size`, `zeros` (count of exact zeros), `fraction` (`zeros / size`),
        `units` (the number of unit vectors) and `zero_units` (`None` for
        rank 1); the last dict is the
        total (`layer="(total)"`, `variable=None`, units summed over rank >= 2
        variables).

    Example:

    >>> import keras, numpy as np, keras_regkit
    >>> model = keras.Sequential(
    ...     [keras.Input((3,)), keras.layers.Dense(2, name="d")], name="net")
    >>> _ = model.get_layer("d").kernel.assign(np.array([[0.0, 1.0], [0.0, 0.0], [0.0, 2.0]]))
    >>> _ = model.get_layer("d").bias.assign(np.array([0.0, 5.0]))
    >>> rows = keras_regkit.sparsity(model)
    layer    variable      shape   size  zeros  fraction  zero units
    d        net/d/kernel  (3, 2)  6     4      0.667     1/2
    d        net/d/bias    (2,)    2     1      0.5       -
    (total)                -       8     5      0.625     1/2
    >>> rows[0]["zeros"], rows[0]["zero_units"], rows[-1]["fraction"]
    (4, 1, 0.625)
    """
    _layer_tree.check_model(model)
    print_fn = _validation.print_fn(print_fn)
    owner_of = _layer_tree.variable_owners(model)
    rows = []
    for variable in _layer_tree.unique_variables(model.trainable_weights):
        if len(variable.shape) < 1:
            continue
        owner = owner_of.get(id(variable), model)
        value = np.asarray(ops.convert_to_numpy(variable))
        zeros = int(np.count_nonzero(value == 0))
        units = zero_units = None
        if value.ndim >= 2:
            axes = tuple(_units.unit_axes(owner, variable))
            dead = np.all(value == 0, axis=axes) if axes else value == 0
            units = int(np.size(dead))
            zero_units = int(np.count_nonzero(dead))
        rows.append(
            {
                "layer": owner.name,
                "variable": variable.path,
                "shape": tuple(value.shape),
                "size": int(value.size),
                "zeros": zeros,
                "fraction": zeros / value.size if value.size else 0.0,
                "units": units,
                "zero_units": zero_units,
            }
        )
    size = sum(row["size"] for row in rows)
    zeros = sum(row["zeros"] for row in rows)
    ranked = [row for row in rows if row["units"] is not None]
    rows.append(
        {
            "layer": "(total)",
            "variable": None,
            "shape": None,
            "size": size,
            "zeros": zeros,
            "fraction": zeros / size if size else 0.0,
            "units": sum(row["units"] for row in ranked),
            "zero_units": sum(row["zero_units"] for row in ranked),
        }
    )
    if print_fn is not None:
        _tables.print_table(
            ["layer", "variable", "shape", "size", "zeros", "fraction", "zero units"],
            [
                [
                    row["layer"],
                    row["variable"] or "",
                    "-" if row["shape"] is None else str(row["shape"]),
                    str(row["size"]),
                    str(row["zeros"]),
                    f"{row['fraction']:.3g}",
                    "-" if row["units"] is None
                    else f"{row['zero_units']}/{row['units']}",
                ]
                for row in rows
            ],
            print_fn,
        )
    return rows


# --- helpers ------------------------------------------------------------




def _class_name(obj):
    return None if obj is None else type(obj).__name__


def _config(obj):
    if obj is None:
        return None
    try:
        return dict(obj.get_config())
    except NotImplementedError:
        return {}


def _describe(class_name, config):
    if class_name is None:
        return "-"
    items = ", ".join(
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value!r}"
        for key, value in (config or {}).items()
    )
    return f"{class_name}({items})"


def _print_summary(rows, model_name, print_fn):
    if not rows:
        print_fn(f"No regularized or constrained variables in '{model_name}'.")
        return
    _tables.print_table(
        ["layer", "variable", "shape", "regularizer", "penalty", "constraint"],
        [
            [
                row["layer"] + ("" if row["trainable"] else " (frozen)"),
                row["variable"],
                str(row["shape"]),
                _describe(row["regularizer"], row["regularizer_config"]),
                "-" if row["penalty"] is None else f"{row['penalty']:.6g}",
                _describe(row["constraint"], row["constraint_config"]),
            ]
            for row in rows
        ],
        print_fn,
    )
    counted = [r["penalty"] for r in rows if r["penalty"] is not None and r["trainable"]]
    plural = "" if len(counted) == 1 else "s"
    print_fn(f"Total penalty: {sum(counted):.6g} ({len(counted)} variable{plural})")
