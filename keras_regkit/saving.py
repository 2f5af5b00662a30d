"""Rules that survive saving: `keras_regkit.load_model` and `restore_rules`.

A layer's config keeps a regularizer only if every layer above it serializes
its sub-layers' configs (functional and Sequential models, wrappers, RNN
cells). Layers rebuilt from their parent's constructor arguments when a model
is loaded (inside `MultiHeadAttention`, KerasHub backbones and blocks, most
user-written composite layers) lose it. So `regularize` and `constrain` also
record every rule on the model (see `_rule_store`), `model.save` writes the
records into the `.keras` file, and `load_model`/`restore_rules` put them back.
"""

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
    stored = _rule_store.read_records(filepath, archive_required=False)
    if stored:
        _restore(model, filepath, stored, safe_mode)
    return model


def restore_rules(model, filepath, *, safe_mode=True):
    """Re-applies the rules stored in a `.keras` file to the model loaded from it.

    `regularize` and `constrain` record each rule on the model, and
    `model.save` writes the records into the `.keras` file. This sets each
    recorded regularizer or constraint again on the variable it was set on,
    found by its path (leading scopes may differ: the ruled model may have
    been nested in the saved one) and shape. For rules recorded on the saved
    model itself, the recorded position among its weights decides between
    variables of equal path, and stands alone only when no path matches
    (auto-generated layer names that changed on reload). Rules whose layers keep them in their config are set again to
    the same value.

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
    return _restore(model, filepath, _rule_store.read_records(filepath), safe_mode)


def _restore(model, filepath, stored_records, safe_mode):
    """`restore_rules` with the records `_rule_store.read_records` read from `filepath`."""
    owners = _selectors.variable_owners(model)
    weights = _selectors.unique_variables(model.weights)
    plan, missing = [], []
    for holder, stored in stored_records:
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
            f"model '{model.name}' does not have (by path and shape, or by "
            f"position and shape): {missing[:10]}. Was `model` loaded from this "
            "file? Nothing was changed."
        )
    store = _rule_store.store_of(model)
    for owner, variable, kind, value in plan:
        _weights.attach(owner, variable, variable.name, kind, value)
    for kind in ("regularizer", "constraint"):
        planned = [(o, v, v.name, value) for o, v, k, value in plan if k == kind]
        for record in _rule_store.records(model, planned, kind)[0]:
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

