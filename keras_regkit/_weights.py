"""Setting a regularizer or constraint on a weight of a built layer, both places.

Keras 3 reads a weight penalty from `variable.regularizer` and a projection
from `variable.constraint`, set once when the layer is built; the layer's
`<weight>_regularizer` attribute is what its config (hence a `.keras` file)
holds. `attach` sets both. Shared by `rules` (which decides what to set) and
`saving` (which sets it again after a load).
"""

import keras
from keras import ops

from keras_regkit import _layer_tree

# The rule kinds a weight takes: kind -> (base class, an example for error messages).
# Also the only attribute names `attach` sets on a variable.
KINDS = {
    "regularizer": (keras.regularizers.Regularizer, "keras_regkit.L2(1e-4)"),
    "constraint": (keras.constraints.Constraint, "keras_regkit.MaxNorm(3.0)"),
}


def get_variable(layer, name):
    """`layer.<name>` if it is a variable, else `None` (also when reading it raises)."""
    try:
        value = getattr(layer, name, None)
    except Exception:  # a property that needs the layer built
        return None
    return value if isinstance(value, keras.Variable) else None


def weight_name(owner, variable, names):
    """The first of `names` under which `owner` holds `variable`, else `variable.name`."""
    for name in names:
        if get_variable(owner, name) is variable:
            return name
    return getattr(variable, "name", None)


def config_attribute(owner, name, kind, config=None):
    """The settable attribute of `owner` that its config reads, or `None`.

    `config`: `owner.get_config()` if the caller has it already.
    """
    candidates = [f"{name}_{kind}"]
    if name.endswith("_kernel"):  # depthwise_regularizer, recurrent_regularizer
        candidates.append(f"{name[: -len('_kernel')]}_{kind}")
    if name == "kernel":  # DepthwiseConv*D: weight `kernel`, config `depthwise_*`
        candidates.append(f"depthwise_{kind}")
    if config is None:
        config = layer_config(owner)
    for attribute in candidates:
        declared = getattr(type(owner), attribute, None)
        if isinstance(declared, property) and declared.fset is None:
            continue
        if hasattr(owner, attribute) and attribute in config:
            return attribute
    return None


def check_value(value, kind, where):
    """Raises a `TypeError` unless `value` is a rule of `kind` or `None` (a removal).

    `where` names the value for the message (`"The value of rule 'dense*'"`).
    """
    base, example = KINDS[kind]
    if value is not None and not isinstance(value, base):
        raise TypeError(
            f"{where} must be a `keras.{kind}s.{base.__name__}` instance (e.g. "
            f"{example}) or None to remove one. Received: {value!r} of type "
            f"{type(value).__name__}"
        )
    return value


def dry_run(value, variable, kind, layer, name):
    """Runs `value` on zeros of `variable`'s shape; a `ValueError` if it fails or
    returns the wrong shape (a regularizer: a scalar; a constraint: the same shape)."""
    shape = tuple(variable.shape)
    where = (
        f"The {kind} {value!r} for '{name}' of layer '{layer.name}' "
        f"(variable '{variable.path}', shape {shape})"
    )
    try:
        result = value(ops.zeros(shape, dtype=variable.dtype))
    except Exception as error:
        raise ValueError(
            f"{where} failed on a zero tensor of that shape: "
            f"{type(error).__name__}: {error}"
        ) from error
    result_shape = tuple(ops.shape(result))
    if kind == "regularizer" and result_shape != ():
        raise ValueError(
            f"{where} must return a scalar. Received shape {result_shape}"
        )
    if kind == "constraint" and result_shape != shape:
        raise ValueError(
            f"{where} must return a tensor of the same shape. Received shape "
            f"{result_shape}"
        )


def layer_config(owner):
    """`owner.get_config()`, or `{}` for a custom layer without one."""
    try:
        return owner.get_config()
    except Exception:
        return {}


def attach(owner, variable, name, kind, value, in_config=True, config=None):
    """Sets `value` on `variable` and in `owner`'s config attribute.

    With `in_config=False` (a value that does not serialize, which would break
    `model.save`), the config attribute is cleared instead.
    """
    if kind not in KINDS:  # never an arbitrary attribute name
        raise ValueError(f"`kind` must be one of {sorted(KINDS)}. Received: kind={kind!r}")
    setattr(variable, kind, value)
    attribute = config_attribute(owner, name, kind, config)
    if attribute is not None:
        setattr(owner, attribute, value if in_config else None)


def current(owner, variable, name, kind, config=None):
    """What `attach` would overwrite, for `put_back`."""
    attribute = config_attribute(owner, name, kind, config)
    return (variable, kind, getattr(variable, kind, None), owner, attribute,
            None if attribute is None else getattr(owner, attribute))


def put_back(previous):
    """Undoes one `attach`, given what `current` returned before it."""
    variable, kind, value, owner, attribute, setting = previous
    setattr(variable, kind, value)
    if attribute is not None:
        setattr(owner, attribute, setting)


def reset_compiled_functions(model):
    """Drops traced train/test functions: they captured the old losses/constraints."""
    models = [model] + [
        layer for layer in _layer_tree.iter_layers(model) if isinstance(layer, keras.Model)
    ]
    for each in models:
        for attribute in ("train_function", "test_function"):
            if getattr(each, attribute, None) is not None:
                setattr(each, attribute, None)
