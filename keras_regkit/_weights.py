"""Setting a regularizer or constraint on a weight of a built layer, both places.

Keras 3 reads a weight penalty from `variable.regularizer` and a projection
from `variable.constraint`, set once when the layer is built; the layer's
`<weight>_regularizer` attribute is what its config (hence a `.keras` file)
holds. `attach` sets both. Shared by `rules` (which decides what to set) and
`saving` (which sets it again after a load).
"""

import keras

from keras_regkit import _selectors


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


def config_attribute(owner, name, kind):
    """The settable attribute of `owner` that its config reads, or `None`."""
    candidates = [f"{name}_{kind}"]
    if name.endswith("_kernel"):  # depthwise_regularizer, recurrent_regularizer
        candidates.append(f"{name[: -len('_kernel')]}_{kind}")
    if name == "kernel":  # DepthwiseConv*D: weight `kernel`, config `depthwise_*`
        candidates.append(f"depthwise_{kind}")
    try:
        config = owner.get_config()
    except Exception:  # a custom layer without get_config
        config = {}
    for attribute in candidates:
        declared = getattr(type(owner), attribute, None)
        if isinstance(declared, property) and declared.fset is None:
            continue
        if hasattr(owner, attribute) and attribute in config:
            return attribute
    return None


def attach(owner, variable, name, kind, value, in_config=True):
    """Sets `value` on `variable` and in `owner`'s config attribute.

    With `in_config=False` (a value that does not serialize, which would break
    `model.save`), the config attribute is cleared instead.
    """
    setattr(variable, kind, value)
    attribute = config_attribute(owner, name, kind)
    if attribute is not None:
        setattr(owner, attribute, value if in_config else None)


def reset_compiled_functions(model):
    """Drops traced train/test functions: they captured the old losses/constraints."""
    models = [model] + [
        layer for layer in _selectors.iter_layers(model) if isinstance(layer, keras.Model)
    ]
    for each in models:
        for attribute in ("train_function", "test_function"):
            if getattr(each, attribute, None) is not None:
                setattr(each, attribute, None)
