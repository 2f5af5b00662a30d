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

import keras

from keras_regkit import _layer_tree
from keras_regkit import _rule_store
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
    stored = _rule_store.read_records(
        filepath, variable_count=_variable_count(model), archive_required=False)
    if stored:
        _restore(model, filepath, stored, safe_mode, custom_objects)
    return model


def restore_rules(model, filepath, *, safe_mode=True, custom_objects=None):
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
        custom_objects: As for `keras.saving.load_model`: classes of rules
            that are not registered.

    Returns:
        `model`, changed in place.

    Raises:
        ValueError: `filepath` is not a `.keras` file; its rule records are
            malformed or too large for `model`; a recorded variable is not in
            `model`; a rule fails on its variable's shape.
        TypeError: a recorded value is not a rule of its kind (a constraint
            recorded as a regularizer).

    The records of a file are input: every one is checked as `regularize`
    and `constrain` check their rules (through the same code) before any is
    applied, and on any error the model is left as it was.
    """
    _layer_tree.check_model(model)
    stored = _rule_store.read_records(filepath, variable_count=_variable_count(model))
    return _restore(model, filepath, stored, safe_mode, custom_objects)


def _variable_count(model):
    return len(_layer_tree.unique_variables(model.weights))


def _restore(model, filepath, stored_records, safe_mode, custom_objects=None):
    """`restore_rules` with the records `_rule_store.read_records` read from `filepath`.

    Checks every record first (its variable is found, its value loads, is a
    rule of its kind and runs on the variable's shape), then applies them
    all; if applying fails anyway, what was applied is undone.
    """
    owners = _layer_tree.variable_owners(model)
    weights = _layer_tree.unique_variables(model.weights)
    index = _PathIndex(weights)
    plan, missing = {}, []  # (kind, id(variable)) -> (owner, variable, kind, value)
    tried = set()  # (serialized value, shape, dtype) already dry-run
    for holder, member, stored in stored_records:
        for number, record in enumerate(stored):
            where = f"record {number} of '{member}' in {filepath!r}"
            variable = index.find(record, top=holder == "")
            if variable is None:
                missing.append(record["variable"])
                continue
            kind, owner = record["kind"], owners.get(id(variable), model)
            value = _load_value(record, kind, where, safe_mode, custom_objects)
            key = (json.dumps(record["value"], sort_keys=True), tuple(variable.shape),
                   str(variable.dtype))
            if value is not None and key not in tried:
                tried.add(key)
                try:
                    _weights.dry_run(value, variable, kind, owner, variable.name)
                except ValueError as error:
                    raise ValueError(f"{where}: {error}. Nothing was changed.") from error
            plan[(kind, id(variable))] = (owner, variable, kind, value)
    if missing:
        raise ValueError(
            f"{len(missing)} rule(s) stored in {filepath!r} name variables that "
            f"model '{model.name}' does not have (by path and shape, or by "
            f"position and shape): {missing[:10]}. Was `model` loaded from this "
            "file? Nothing was changed."
        )
    records = []
    for kind in _weights.KINDS:
        planned = [(o, v, v.name, value) for o, v, k, value in plan.values() if k == kind]
        records.extend(_rule_store.records(model, planned, kind)[0])
    # Everything is valid: apply, undoing it all if Keras refuses a value anyway.
    undo, configs = [], {}  # each owner's config read once
    try:
        for owner, variable, kind, value in plan.values():
            if id(owner) not in configs:
                configs[id(owner)] = _weights.layer_config(owner)
            config = configs[id(owner)]
            undo.append(_weights.current(owner, variable, variable.name, kind, config))
            _weights.attach(owner, variable, variable.name, kind, value, config=config)
    except Exception:
        for previous in reversed(undo):
            _weights.put_back(previous)
        raise
    store = _rule_store.store_of(model)
    for record in records:
        store.put(record)
    _weights.reset_compiled_functions(model)
    return model


def _load_value(record, kind, where, safe_mode, custom_objects):
    """The rule a record holds, deserialized and checked as `regularize` checks one."""
    if record["value"] is None:
        return None
    _check_class(record["value"], kind, where, custom_objects)
    try:
        value = keras.saving.deserialize_keras_object(
            record["value"], custom_objects=custom_objects, safe_mode=safe_mode)
    except Exception as error:
        raise ValueError(
            f"The {kind} of {where} does not load: {type(error).__name__}: "
            f"{error}. Nothing was changed.") from error
    return _weights.check_value(value, kind, f"The {kind} of {where}")


def _check_class(config, kind, where, custom_objects):
    """Refuses, before anything is built, a config whose class is known and not a rule.

    Keras builds what a config names (a layer with its weights, a model);
    a class found by its registered name, or one of Keras's own modules other
    than its regularizers/constraints, is checked here first. What is not
    found is checked after deserializing, by type.
    """
    base, _ = _weights.KINDS[kind]
    name = config.get("registered_name") or config.get("class_name")
    module = config.get("module")
    found = None
    if isinstance(name, str):
        found = (custom_objects or {}).get(name) or keras.saving.get_registered_object(name)
    if isinstance(found, type) and not issubclass(found, base):
        refused = f"{found.__module__}.{found.__name__}"
    elif (found is None and isinstance(module, str) and module.split(".")[0] == "keras"
          and module not in (f"keras.{kind}s", f"keras.src.{kind}s.{kind}s")):
        refused = f"{module}.{config.get('class_name')}"
    else:
        return
    raise TypeError(
        f"The {kind} of {where} must be a `keras.{kind}s.{base.__name__}`; it names "
        f"{refused}, which is not built. Nothing was changed. Received: {str(config)[:200]}")


class _PathIndex:
    """Finds a record's variable in `weights` in time independent of their number.

    By path (leading scopes may differ either way: the ruled model may have
    been nested in the saved one, or the saved one in the loaded one) and
    shape; the recorded position decides between equal paths, and stands
    alone only when no path matches (auto-generated layer names that changed
    on reload).
    """

    def __init__(self, weights):
        self.weights = weights
        self.by_path = {}  # full path -> [variable]
        self.by_suffix = {}  # each "/"-suffix of a path, the path too -> [variable]
        self.longest = max((len(v.path) for v in weights), default=0)
        self.depth = max((v.path.count("/") + 1 for v in weights), default=0)
        for variable in weights:
            parts = variable.path.split("/")
            self.by_path.setdefault(variable.path, []).append(variable)
            for start in range(len(parts)):
                self.by_suffix.setdefault("/".join(parts[start:]), []).append(variable)

    def find(self, record, top):
        shape = list(record["shape"])
        path = record["variable"]
        at_index = None
        if top and record["index"] < len(self.weights):
            at_index = self.weights[record["index"]]
            if list(at_index.shape) != shape:
                at_index = None
        candidates = list(self.by_suffix.get(path, []))  # ends with the path
        # Is a tail of the path: only tails as long and as deep as a variable's
        # path can be one, so a crafted path of many '/' costs no more.
        end = len(path)
        for _ in range(self.depth):
            end = path.rfind("/", 0, end)
            if end < 0 or len(path) - end - 1 > self.longest:
                break
            candidates.extend(self.by_path.get(path[end + 1:], []))
        found = list({id(v): v for v in candidates if list(v.shape) == shape}.values())
        if len(found) == 1:
            return found[0]
        if found:
            return at_index if any(v is at_index for v in found) else None
        return at_index
