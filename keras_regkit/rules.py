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

from keras_regkit import _layer_tree
from keras_regkit import _path_globs
from keras_regkit import _rule_store
from keras_regkit import _selectors
from keras_regkit import _units
from keras_regkit import _weights
from keras_regkit import saving
from keras_regkit.constraints import MaxNorm
from keras_regkit.regularizers import GroupLasso


def regularize(model, rules, *, target="kernel"):
    """Attaches regularizers to the weights of chosen layers of a built model.

    Each rule maps a selector to a `keras.regularizers.Regularizer` instance
    (attach it) or `None` (remove any regularizer). A selector is one of:

    - a glob on `layer.name` (`"conv2d*"`), a layer class, a tuple of
      classes, or a callable `layer -> bool`. It is matched against every
      layer under the model: the layers of nested models and the sub-layers
      of composite layers (the `EinsumDense` projections of a
      `MultiHeadAttention`, the `Dense` layers of a KerasHub
      `TransformerEncoder`, the layers a user-written layer holds as
      attributes). A selected layer without the `target` weight stands for
      the layers inside it that have one (`{"transformer_layer_0": L2(1e-5)}`
      regularizes every kernel of that block);
    - a glob with a `/`, on `variable.path` (`"*/self_attention_layer/*/kernel"`):
      it selects variables directly, whatever `target` says, since inner layer
      names repeat across blocks. Leading scopes may be left out.

    Rules apply in order: when several rules select the same weight, the last
    one wins (`{keras.layers.Dense: L2(1e-4), "logits": None}` regularizes
    every Dense kernel but that of `logits`).

    For each selected weight, `variable.regularizer` (what training and
    `model.losses` read) and, where the layer has one, its
    `<target>_regularizer` attribute (what its config holds) are set. Weights
    of a wrapped layer are found too: the cell of an RNN layer
    (`recurrent_kernel` is stored as the cell's `recurrent_regularizer`; the
    `kernel` of a `DepthwiseConv2D` as its `depthwise_regularizer`), both
    directions of a `Bidirectional` layer, the inner layer of a
    `TimeDistributed`. If the model was compiled, its cached train/test
    functions are dropped so that the next `fit`/`evaluate` traces the new
    penalty. The penalty of a frozen (non-trainable) weight is not in
    `model.losses` until it is unfrozen. A `GroupLasso` with `axis="auto"`
    gets the layer's own unit (`keras_regkit.constraints` explains units):
    one filter per channel for depthwise kernels, one output channel for
    transposed convolutions, the output axes of `EinsumDense`.

    Saving: every rule is also recorded on `model` and written into its
    `.keras` file by `model.save`. Layers whose config a `.keras` file keeps
    (those of functional and Sequential models) get their rules back from
    `keras.saving.load_model`. Layers that their parent rebuilds from
    constructor arguments (inside `MultiHeadAttention`, KerasHub backbones,
    most composite layers) do not: a `RulesNeedRestoreWarning` says so, and
    `keras_regkit.load_model` (or `keras_regkit.restore_rules`) puts them back.
    A regularizer whose class does not serialize is applied but cannot be
    stored: a `UserWarning` says so.

    Every rule is checked before anything changes: a bad selector or value,
    a selector that matches no layer (the error lists the layer names) or no
    variable path, a selected layer without the targeted weight (in itself or
    inside it), or a regularizer that fails on a zero tensor of the weight's
    shape raises, and the model is untouched.

    Args:
        model: A built `keras.Model` (Sequential, functional, subclassed).
        rules: A dict `{selector: regularizer_or_None}`, or a list of
            `(selector, regularizer_or_None)` pairs.
        target: The weight to regularize, by layer attribute or variable
            name: `"kernel"` (default),
            `"bias"`, `"embeddings"`, `"depthwise_kernel"`,
            `"recurrent_kernel"`, `"gamma"`, ..., or a list of such names.
            `"kernels"` means every kernel whatever the layer calls it
            (`kernel` of Dense, ConvND, EinsumDense, DepthwiseConvND;
            `depthwise_kernel` and `pointwise_kernel` of SeparableConvND);
            layers without one are skipped (with `"kernels"` in a list,
            every name in it is optional that way). Embeddings are opt in:
            `target=["kernels", "embeddings"]`.

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

# What `target="kernels"` stands for: every kernel, whatever the layer calls it.
KERNELS = ("kernel", "depthwise_kernel", "pointwise_kernel")


def _apply_rules(model, rules, target, kind):
    """Validates every rule of `kind` ("regularizer"/"constraint"), then applies all."""
    _layer_tree.check_model(model)
    targets = _check_targets(target)
    checked = _check_rules(rules, kind)
    walked = list(_layer_tree.walk_layers(model))
    layers = [layer for layer, _ in walked]
    plan = {}  # id(variable) -> (owner, variable, weight name, value)
    for selector, predicate, value in checked:
        if predicate is None:
            entries = _entries_by_path(model, selector)
        else:
            entries = _entries_by_layer(model, layers, selector, predicate, targets)
        for owner, variable, name in entries:
            plan[id(variable)] = (owner, variable, name, _for_unit(value, owner, variable))
    tried = set()  # (id(value), shape, dtype) already dry-run
    for owner, variable, name, value in plan.values():
        key = (id(value), tuple(variable.shape), str(variable.dtype))
        if value is not None and key not in tried:
            _weights.dry_run(value, variable, kind, owner, name)
            tried.add(key)
    records, unstorable = _rule_store.records(model, plan.values(), kind)
    kept_by_config = _rule_store.kept_by_config(plan.values(), walked, kind)
    # Everything is valid: mutate.
    store = _rule_store.store_of(model)
    unstored = {id(variable) for variable, _ in unstorable}
    for owner, variable, name, value in plan.values():
        # A value that does not serialize goes on the variable only: in the
        # layer's config it would break `model.save`.
        _weights.attach(owner, variable, name, kind, value,
                        in_config=id(variable) not in unstored)
    _rule_store.forget(model, [variable for variable, _ in unstorable], kind)
    for record in records:
        store.put(record)
    # The newest rule wins on reload too: nested models' stores forget these weights.
    ruled = [variable for _, variable, _, _ in plan.values()]
    for layer in layers:
        if isinstance(layer, keras.Model):
            _rule_store.forget(layer, ruled, kind)
    _warn_about_persistence(plan.values(), kept_by_config, unstorable, kind)
    _weights.reset_compiled_functions(model)
    return model


def _entries_by_layer(model, layers, selector, predicate, targets):
    """`[(owner, variable, weight name)]` for the layers `predicate` selects."""
    matched = [layer for layer in layers if predicate(layer)]
    if not matched:
        raise ValueError(
            f"Rule {_selectors.describe(selector)} of `rules` matches no layer "
            f"of model '{model.name}'. Its layers are: "
            f"{_layer_tree.layer_names(model)}"
        )
    entries = []
    for layer in matched:
        for name in targets:
            names = KERNELS if name == "kernels" else (name,)
            owners = [pair for each in names for pair in _weight_owners(layer, each)]
            if not owners and "kernels" not in targets:
                raise ValueError(_missing_weight_message(layer, name, selector))
            entries.extend(
                (owner, variable, _weights.weight_name(owner, variable, names))
                for owner, variable in owners
            )
    if not entries:  # only with target="kernels"
        raise ValueError(
            f"Rule {_selectors.describe(selector)} of `rules` selects layers "
            f"{[layer.name for layer in matched]} of model '{model.name}', none of "
            f"which holds a kernel ({', '.join(KERNELS)}) or another targeted "
            f"weight. Received: target={targets if len(targets) > 1 else targets[0]!r}"
        )
    return entries


def _entries_by_path(model, pattern):
    """`[(owner, variable, weight name)]` for the variables whose path matches."""
    owners = _layer_tree.variable_owners(model)
    entries = [
        (owners.get(id(variable), model), variable, variable.name)
        for variable in _layer_tree.unique_variables(model.weights)
        if _path_globs.path_matches(variable.path, pattern)
    ]
    if not entries:
        paths = [variable.path for variable in _layer_tree.unique_variables(model.weights)]
        shown = paths if len(paths) <= 40 else paths[:40] + ["..."]
        raise ValueError(
            f"Rule {pattern!r} of `rules` (a pattern on `variable.path`, since it "
            f"holds a '/') matches no variable of model '{model.name}'. Its "
            f"variables are: {shown}"
        )
    return entries


def _for_unit(value, owner, variable):
    """`value` with the owning layer's unit axes when its `axis` is `"auto"`.

    Max-norm and group-lasso act on units; `"auto"` means all axes but the
    last, which is wrong for depthwise, transposed and `EinsumDense` kernels.
    Attached here, the layer is known, so it decides.
    """
    if not isinstance(value, (MaxNorm, GroupLasso)) or value.axis != "auto":
        return value
    rank = len(variable.shape)
    axes = _units.unit_axes(owner, variable)
    if rank < 2 or list(axes) == list(range(rank - 1)):
        return value
    return type(value).from_config({**value.get_config(), "axis": list(axes)})


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
    checked = []
    for selector, value in items:
        if _path_globs.is_path_pattern(selector):
            predicate = None  # selects variables by path
        else:
            predicate = _selectors.as_predicate(selector, name="selector")
        _weights.check_value(value, kind, f"The value of rule {_selectors.describe(selector)}")
        checked.append((selector, predicate, value))
    return checked


def _weight_owners(layer, name):
    """`[(owner, variable)]` for the weight `name` of `layer` or of the layers inside it.

    A layer that has no such weight itself stands for the layers it wraps
    (the cell of an RNN layer, both directions of `Bidirectional`, the layer
    of `TimeDistributed`) or holds (the layers of a nested model, the
    sub-layers of a composite layer such as `MultiHeadAttention` or a
    KerasHub `TransformerEncoder`), at any depth.
    """
    variable = _weights.get_variable(layer, name)
    if variable is not None:
        return [(layer, variable)]
    children = _layer_tree.sub_layers(layer)
    inner = {id(v) for child in children for v in child.weights}
    own = [v for v in layer.weights if id(v) not in inner and v.name == name]
    if own:  # held under another attribute name (KerasHub's PositionEmbedding)
        return [(layer, v) for v in own]
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


def _warn_about_persistence(planned, kept_by_config, unstorable, kind):
    """Warns about the rules a `.keras` file cannot hold, and those only it holds."""
    for variable, value in unstorable:
        warnings.warn(
            f"The {kind} {value!r} on '{variable.path}' acts in training but "
            f"cannot be stored in a `.keras` file: its class does not serialize "
            f"(register it with `@keras.saving.register_keras_serializable` and "
            f"give it a `get_config`), so after loading you must apply it again.",
            stacklevel=4,
        )
    needs_restore = [
        variable.path
        for owner, variable, name, value in planned
        if not kept_by_config[id(variable)]
    ]
    if needs_restore:
        shown = needs_restore[:5] + (["..."] if len(needs_restore) > 5 else [])
        warnings.warn(
            f"{len(needs_restore)} {kind} rule(s) act on weights whose layer "
            f"config cannot carry them ({shown}): the layer is rebuilt from its "
            f"parent's constructor arguments when the model is loaded, or has no "
            f"`<weight>_{kind}` setting. `model.save` stores these rules in the "
            f"`.keras` file, but plain `keras.saving.load_model` does not restore "
            f"them: load with `keras_regkit.load_model(path)` (or call "
            f"`keras_regkit.restore_rules(model, path)` after loading).",
            saving.RulesNeedRestoreWarning,
            stacklevel=4,
        )
