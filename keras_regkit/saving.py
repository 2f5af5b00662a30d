"""Rules that survive saving: `keras_regkit.load_model` and `restore_rules`.

A layer's config keeps a regularizer only if every layer above it serializes
its sub-layers' configs (functional and Sequential models, wrappers, RNN
cells). Layers rebuilt from their parent's constructor arguments when a model
is loaded (inside `MultiHeadAttention`, KerasHub backbones and blocks, most
user-written composite layers) lose it. So `regularize` and `constrain` also
record every rule on the model (see `_rule_store`), `model.save` writes the
records into the `.keras` file, and `load_model`/`restore_rules` put them back.
"""

import json
import warnings

import keras

from keras_regkit import _rule_store
from keras_regkit import _selectors
from keras_regkit import _weights


class RulesNeedRestoreWarning(UserWarning):
    """Some rules are kept by a `.keras` file but not by the layers' configs.

    Plain `keras.saving.load_model` rebuilds those layers without them; load
    with `keras_regkit.load_model` (or call `keras_regkit.restore_rules`).
    """


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """Loads a `.keras` model with every rule `regularize`/`constrain` set on it.

    `keras.saving.load_model(filepath, ...)`, then `restore_rules(model,
    filepath)`. Use it for models whose ruled layers are rebuilt from their
    parent's constructor arguments (KerasHub backbones, `MultiHeadAttention`,
    user-written composite layers): their layer configs cannot carry the rules,
    the `.keras` file does. For every other model it gives what
    `keras.saving.load_model` gives.

    Args:
        filepath: Path of a `.keras` file.
        custom_objects, compile, safe_mode: As for `keras.saving.load_model`;
            `safe_mode` also applies to the stored rules.

    Returns:
        The loaded model, with its rules.

    Example:

    >>> import os, tempfile, warnings, keras, keras_regkit
    >>> inputs = keras.Input((3, 4))
    >>> outputs = keras.layers.MultiHeadAttention(2, 2, name="attention")(inputs, inputs)
    >>> model = keras.Model(inputs, outputs)
    >>> with warnings.catch_warnings(record=True) as caught:  # the layers inside
    ...     _ = keras_regkit.regularize(   # `attention` are rebuilt on load
    ...         model, {"*/attention/*/kernel": keras_regkit.L2(0.01)})
    >>> [type(w.message).__name__ for w in caught]
    ['RulesNeedRestoreWarning']
    >>> path = os.path.join(tempfile.mkdtemp(), "model.keras")
    >>> model.save(path)
    >>> len(keras.saving.load_model(path).losses)  # lost by the layer configs
    0
    >>> len(keras_regkit.load_model(path).losses)  # query, key, value, output
    4
    """
    model = keras.saving.load_model(
        filepath, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode
    )
    if _rule_store.has_records(filepath):
        restore_rules(model, filepath, safe_mode=safe_mode)
    return model


def restore_rules(model, filepath, *, safe_mode=True):
    """Re-applies the rules stored in a `.keras` file to the model loaded from it.

    `regularize` and `constrain` record each rule on the model, and
    `model.save` writes the records into the `.keras` file. This sets each
    recorded regularizer or constraint again on the variable it was set on
    (found by its position in `model.weights` and its shape, or by its path
    when the ruled model was nested in the saved one). Rules whose layers keep
    them in their config are set again to the same value.

    Args:
        model: The `keras.Model` loaded from `filepath`.
        filepath: The `.keras` file.
        safe_mode: Passed to `keras.saving.deserialize_keras_object`.

    Returns:
        `model`, changed in place.

    Raises:
        ValueError: `filepath` is not a `.keras` file, or a recorded variable
            is not in `model` (nothing is changed then).
    """
    _selectors.check_model(model)
    owners = _selectors.variable_owners(model)
    weights = _selectors.unique_variables(model.weights)
    plan, missing = [], []
    for holder, stored in _rule_store.read_records(filepath):
        for record in stored:
            variable = _find_recorded(weights, record, top=holder == "")
            if variable is None:
                missing.append(record["variable"])
                continue
            value = None
            if record["value"] is not None:
                value = keras.saving.deserialize_keras_object(
                    record["value"], safe_mode=safe_mode
                )
            plan.append((owners.get(id(variable), model), variable, record["kind"], value))
    if missing:
        raise ValueError(
            f"{len(missing)} rule(s) stored in {filepath!r} name variables that "
            f"model '{model.name}' does not have (by position and shape, or by "
            f"path): {missing[:10]}. Was `model` loaded from this file? Nothing "
            "was changed."
        )
    store = _rule_store.store_of(model)
    for owner, variable, kind, value in plan:
        _weights.attach(owner, variable, variable.name, kind, value)
    for kind in ("regularizer", "constraint"):
        planned = [(o, v, v.name, value) for o, v, k, value in plan if k == kind]
        for record in records(model, planned, kind)[0]:
            store.put(record)
    _weights.reset_compiled_functions(model)
    return model


def _find_recorded(weights, record, top):
    """The variable a record names: by path (leading scopes may differ) and shape;
    the recorded position decides between equal paths, and stands alone only
    when no path matches (auto-generated layer names that changed on reload)."""
    shape = list(record["shape"])
    path = record["variable"]

    def same_path(variable):
        return (variable.path == path or variable.path.endswith("/" + path)
                or path.endswith("/" + variable.path))

    at_index = None
    if top and record["index"] < len(weights):
        at_index = weights[record["index"]]
        if list(at_index.shape) != shape:
            at_index = None
    found = [v for v in weights if list(v.shape) == shape and same_path(v)]
    if len(found) == 1:
        return found[0]
    if found:
        return at_index if any(v is at_index for v in found) else None
    return at_index


def records(model, planned, kind):
    """Store records for `planned`, and the `(variable, value)` pairs that can't be stored."""
    index = {id(v): i for i, v in enumerate(_selectors.unique_variables(model.weights))}
    made, unstorable = [], []
    for owner, variable, name, value in planned:
        serialized = None
        if value is not None:
            serialized = _serialize(value)
            if serialized is None:
                unstorable.append((variable, value))
                continue
        made.append(
            {
                "kind": kind,
                "index": index[id(variable)],
                "variable": variable.path,
                "shape": list(variable.shape),
                "value": serialized,
            }
        )
    return made, unstorable


def _serialize(value):
    """`value`'s JSON-ready serialization if it loads back, else `None`."""
    try:
        serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(value)))
        restored = keras.saving.deserialize_keras_object(serialized)
    except Exception:
        return None
    return serialized if type(restored) is type(value) else None


def config_survives(owner, parents):
    """Whether a `.keras` file rebuilds `owner` from its own config.

    True when every layer from the model down to `owner` lists its child's
    config in its own (functional and Sequential models, wrappers); false
    under a layer that rebuilds its inner layers from constructor arguments
    (`MultiHeadAttention`, KerasHub blocks and backbones, most composite layers).
    """
    if parents is None:
        return False
    chain = list(parents) + [owner]
    for container, child in zip(chain[:-1], chain[1:]):
        try:
            config = container.get_config()
        except Exception:
            return False
        if not (_lists_config(config, child) or _reads_settings_of(container, child)):
            return False
    return True


def _reads_settings_of(container, child):
    """Wrappers whose config carries their inner layer's settings.

    An RNN layer's config holds its cell's `kernel_regularizer` etc. (read
    from the cell), and `Bidirectional`/`TimeDistributed` list the wrapped
    layer's config.
    """
    wrapped = [getattr(container, "cell", None), getattr(container, "layer", None)]
    wrapped += [getattr(container, "forward_layer", None), getattr(container, "backward_layer", None)]
    return any(child is each for each in wrapped)


def _lists_config(config, layer):
    if isinstance(config, dict):
        inner = config.get("config")
        if (
            config.get("class_name") == type(layer).__name__
            and isinstance(inner, dict)
            and inner.get("name") == layer.name
        ):
            return True
        return any(_lists_config(value, layer) for value in config.values())
    if isinstance(config, (list, tuple)):
        return any(_lists_config(value, layer) for value in config)
    return False


def warn_about_persistence(planned, kept_by_config, unstorable, kind):
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
            RulesNeedRestoreWarning,
            stacklevel=4,
        )
