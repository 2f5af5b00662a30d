"""Per-layer regularizers and constraints on built models, and reports on them.

Keras 3 reads a weight penalty from `variable.regularizer` and a projection
from `variable.constraint`; both are set once, when the layer is built. A
`kernel_regularizer` assigned to a layer afterwards is silently ignored by
training, and a regularizer set only on the variable is lost by a `.keras`
save. `regularize` and `constrain` set both, so that a built (even pretrained)
model gets the penalty in `model.losses`, the projection after each optimizer
step, and a config that survives save/load.

`keras_regkit.summary` (in `reports.py`) lists what these set.
"""

import warnings

import keras
from keras import ops

from keras_regkit import _selectors

# kind -> (base class, an example value for error messages)
_KINDS = {
    "regularizer": (keras.regularizers.Regularizer, "keras_regkit.L2(1e-4)"),
    "constraint": (keras.constraints.Constraint, "keras_regkit.MaxNorm(3.0)"),
}


def regularize(model, rules, *, target="kernel"):
    """Attaches regularizers to the weights of chosen layers of a built model.

    Each rule maps a selector to a `keras.regularizers.Regularizer` instance
    (attach it) or `None` (remove any regularizer). A selector is a glob on
    `layer.name` (`"conv2d*"`), a layer class, a tuple of classes, or a
    callable `layer -> bool`; it is matched against every layer, nested
    models' layers included. Rules apply in order: when several rules select
    the same layer, the last one wins (`{keras.layers.Dense: L2(1e-4),
    "logits": None}` regularizes every Dense kernel but that of `logits`).

    For each selected weight, both `variable.regularizer` (what training and
    `model.losses` read) and the layer's `<target>_regularizer` attribute
    (what its config, hence a `.keras` save, holds) are set. Weights of a
    wrapped layer are found too: the cell of an RNN layer (`recurrent_kernel`
    is stored as the cell's `recurrent_regularizer`; the `kernel` of a
    `DepthwiseConv2D` as its `depthwise_regularizer`), both directions of a
    `Bidirectional` layer, the inner layer of a `TimeDistributed`. If the
    model was compiled, its cached train/test functions are dropped so that
    the next `fit`/`evaluate` traces the new penalty. The penalty of a frozen
    (non-trainable) weight is not in `model.losses` until it is unfrozen.

    Every rule is checked before anything changes: a bad selector or value,
    a selector that matches no layer (the error lists the layer names), a
    selected layer without the targeted weight, or a regularizer that fails on
    a zero tensor of the weight's shape raises, and the model is untouched.

    Args:
        model: A built `keras.Model` (Sequential, functional, subclassed).
        rules: A dict `{selector: regularizer_or_None}`, or a list of
            `(selector, regularizer_or_None)` pairs.
        target: The weight attribute to regularize: `"kernel"` (default),
            `"bias"`, `"embeddings"`, `"depthwise_kernel"`,
            `"recurrent_kernel"`, `"gamma"`, ..., or a list of such names.

    Returns:
        `model` itself, changed in place.

    Raises:
        TypeError: a non-model, a bad selector, target or rule value.
        ValueError: a selector matching no layer, a missing weight, a
            regularizer that fails on the weight's shape, empty `rules`.

    Example:

    >>> import keras, numpy as np, keras_regkit
    >>> model = keras.Sequential([keras.Input((3,)),
    ...     keras.layers.Dense(2, name="hidden"), keras.layers.Dense(1, name="out")])
    >>> _ = model.get_layer("hidden").kernel.assign(np.ones((3, 2)))
    >>> model = keras_regkit.regularize(model, {"hidden": keras_regkit.L2(0.01)})
    >>> [round(float(loss), 6) for loss in model.losses]  # 0.01 * 6 * 1**2
    [0.06]
    >>> model.get_layer("hidden").get_config()["kernel_regularizer"]["config"]
    {'l2': 0.01}
    """
    return _apply_rules(model, rules, target, "regularizer")


def constrain(model, rules, *, target="kernel"):
    """Attaches constraints to the weights of chosen layers of a built model.

    The same as `regularize`, for `keras.constraints.Constraint` instances:
    sets `variable.constraint` (applied by the optimizer after each step) and
    the layer's `<target>_constraint` attribute (kept by a `.keras` save).
    Each constraint is first run on a zero tensor of the weight's shape, so a
    `MaxNorm` axis out of range for a kernel fails before anything changes.

    Args:
        model: A built `keras.Model`.
        rules: A dict `{selector: constraint_or_None}`, or a list of
            `(selector, constraint_or_None)` pairs; later rules win.
        target: Weight attribute name(s), `"kernel"` by default.

    Returns:
        `model` itself, changed in place.

    Example:

    >>> import keras, keras_regkit
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    >>> model = keras_regkit.constrain(
    ...     model, {keras.layers.Dense: keras_regkit.MaxNorm(3.0)})
    >>> model.get_layer("d").get_config()["kernel_constraint"]["registered_name"]
    'keras_regkit>MaxNorm'
    """
    return _apply_rules(model, rules, target, "constraint")


# --- shared implementation of `regularize` and `constrain` -----------------


def _apply_rules(model, rules, target, kind):
    """Validates every rule of `kind` ("regularizer"/"constraint"), then applies all."""
    _selectors.check_model(model)
    targets = _check_targets(target)
    checked = _check_rules(rules, kind)
    layers = list(_selectors.iter_layers(model))
    plan = {}  # id(variable) -> (owner, variable, target, config attribute, value)
    tried = set()  # (id(value), shape, dtype) already dry-run
    for selector, predicate, value in checked:
        matched = [layer for layer in layers if predicate(layer)]
        if not matched:
            raise ValueError(
                f"Rule {_selectors.describe(selector)} of `rules` matches no layer "
                f"of model '{model.name}'. Its layers are: "
                f"{_selectors.layer_names(model)}"
            )
        for layer in matched:
            for name in targets:
                owners = _weight_owners(layer, name)
                if not owners:
                    raise ValueError(_missing_weight_message(layer, name, selector))
                for owner, variable in owners:
                    key = (id(value), tuple(variable.shape), str(variable.dtype))
                    if value is not None and key not in tried:
                        _dry_run(value, variable, kind, layer, name)
                        tried.add(key)
                    attribute = _config_attribute(owner, name, kind)
                    plan[id(variable)] = (owner, variable, name, attribute, value)
    # Everything is valid: mutate.
    for owner, variable, name, attribute, value in plan.values():
        setattr(variable, kind, value)
        if attribute is not None:
            setattr(owner, attribute, value)
        elif value is not None:
            warnings.warn(
                f"Layer '{owner.name}' has no `{name}_{kind}` setting in its "
                f"config: the {kind} acts on '{variable.path}' "
                f"during training, but a `.keras` save will not keep it.",
                stacklevel=3,
            )
    _reset_compiled_functions(model)
    return model


def _check_targets(target):
    names = [target] if isinstance(target, str) else target
    if not isinstance(names, (list, tuple)) or not all(
        isinstance(name, str) for name in names
    ):
        raise TypeError(
            "`target` must be a weight attribute name (str, e.g. 'kernel') or a "
            f"list of names. Received: target={target!r}"
        )
    if not names or not all(name.isidentifier() for name in names):
        raise ValueError(
            "`target` must name at least one weight attribute, each a Python "
            f"identifier such as 'kernel' or 'bias'. Received: target={target!r}"
        )
    return list(dict.fromkeys(names))


def _check_rules(rules, kind):
    """Returns `[(selector, predicate, value)]`, checking structure and types."""
    if isinstance(rules, dict):
        items = list(rules.items())
    elif isinstance(rules, (list, tuple)):
        items = list(rules)
        for item in items:
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise TypeError(
                    "A list of `rules` must hold (selector, value) pairs. "
                    f"Received an item: {item!r}"
                )
    else:
        raise TypeError(
            f"`rules` must be a dict {{selector: {kind}}} or a list of "
            f"(selector, {kind}) pairs. Received: rules={rules!r}"
        )
    if not items:
        raise ValueError(f"`rules` must hold at least one rule. Received: rules={rules!r}")
    base, example = _KINDS[kind]
    checked = []
    for selector, value in items:
        predicate = _selectors.as_predicate(selector, name="selector")
        if value is not None and not isinstance(value, base):
            raise TypeError(
                f"The value of rule {_selectors.describe(selector)} must be a "
                f"`keras.{kind}s.{base.__name__}` instance (e.g. {example}) or "
                f"None to remove one. Received: {value!r} of type "
                f"{type(value).__name__}"
            )
        checked.append((selector, predicate, value))
    return checked


def _weight_owners(layer, name):
    """`[(owner, variable)]` for the weight `name` of `layer` or of the layers it wraps."""
    value = getattr(layer, name, None)
    if isinstance(value, keras.Variable):
        return [(layer, value)]
    if isinstance(layer, keras.Model):
        return []  # its own layers are selected individually
    if hasattr(layer, "forward_layer") and hasattr(layer, "backward_layer"):
        children = [layer.forward_layer, layer.backward_layer]  # Bidirectional
    elif isinstance(getattr(layer, "cell", None), keras.layers.Layer):
        children = [layer.cell]  # RNN layers keep their weights in the cell
    elif isinstance(getattr(layer, "cells", None), (list, tuple)):
        children = list(layer.cells)  # StackedRNNCells
    elif isinstance(getattr(layer, "layer", None), keras.layers.Layer):
        children = [layer.layer]  # TimeDistributed and other wrappers
    else:
        return []
    owners = []
    for child in children:
        owners.extend(_weight_owners(child, name))
    return owners


def _missing_weight_message(layer, name, selector):
    weights = [v.path for v in layer.weights]
    hint = "" if layer.built else " The layer is not built: build the model first."
    return (
        f"Layer '{layer.name}' ({type(layer).__name__}, selected by rule "
        f"{_selectors.describe(selector)}) has no '{name}' weight. Its weights: "
        f"{weights}.{hint} Received: target={name!r}"
    )


def _config_attribute(owner, name, kind):
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


def _dry_run(value, variable, kind, layer, name):
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


def _reset_compiled_functions(model):
    """Drops traced train/test functions: they captured the old losses/constraints."""
    models = [model] + [
        layer for layer in _selectors.iter_layers(model) if isinstance(layer, keras.Model)
    ]
    for each in models:
        for attribute in ("train_function", "test_function"):
            if getattr(each, attribute, None) is not None:
                setattr(each, attribute, None)
