"""Where `regularize`/`constrain` keep their rules so that a `.keras` file holds them.

A layer's config keeps a regularizer only if every layer above it serializes
its sub-layers' configs (functional and Sequential models, `Bidirectional`,
RNN cells). Many layers and models instead rebuild their inner layers from
constructor arguments when loaded: Keras's `MultiHeadAttention`, KerasHub
backbones and blocks, most user-written composite layers. A rule set on one
of their inner weights would be lost by `load_model`.

So every rule applied by `regularize`/`constrain` is also recorded on the
model itself, in a small `RuleStore` that `model.save` writes as a JSON asset
of the `.keras` file (`assets/.../_keras_regkit_rules/rules.json`). The store
is set as a plain attribute, not tracked by Keras: it adds no layer, weight or
config entry, and plain `keras.saving.load_model` still loads the file (and
ignores the asset). `keras_regkit.load_model` / `keras_regkit.restore_rules`
read it back and re-apply each rule to the variable it was set on.

Also here, for `regularize`/`constrain`: which rules the layer configs keep
anyway (`kept_by_config`); they warn about the others.
"""

import json
import os
import posixpath
import zipfile
import zlib

import keras

from keras_regkit import _layer_tree
from keras_regkit import _weights

ATTRIBUTE = "_keras_regkit_rules"
FILENAME = "rules.json"
FORMAT = 1


class RuleStore(keras.layers.Layer):
    """Holds one record per (variable, kind) ruled on a model; saved as an asset.

    A record is a dict: `kind` ("regularizer" or "constraint"), `index` (the
    variable's position in `_layer_tree.unique_variables(model.weights)` of the
    holding model: its `weights` with each shared variable listed once),
    `variable` (its path), `shape`, `value` (`keras.saving.serialize_keras_object`
    of the rule, `None` for a removal).
    """

    def __init__(self, **kwargs):
        super().__init__(name="keras_regkit_rules", **kwargs)
        # Plain data, not tracked by Keras (a tracked dict wraps every record).
        object.__setattr__(self, "records", {})

    def put(self, record):
        self.records[(record["kind"], record["index"])] = record

    def save_assets(self, dir_path):
        content = {"format": FORMAT, "records": list(self.records.values())}
        with open(posixpath.join(dir_path, FILENAME), "w") as file:
            json.dump(content, file, indent=1)


def store_of(model, create=True):
    """The `RuleStore` of `model`, created (untracked) on first use."""
    store = getattr(model, ATTRIBUTE, None)
    if store is None and create:
        store = RuleStore()
        # object.__setattr__: not tracked, so no layer, weight or config is added.
        object.__setattr__(model, ATTRIBUTE, store)
    return store


def forget(model, variables, kind):
    """Drops the records of `kind` for `variables` from `model`'s store."""
    store = store_of(model, create=False)
    if store is None or not variables:
        return
    wanted = {id(v) for v in variables}
    indices = [i for i, v in enumerate(_layer_tree.unique_variables(model.weights)) if id(v) in wanted]
    for index in indices:
        store.records.pop((kind, index), None)


# A store holds at most one record per (kind, variable); each record is a path,
# a shape and a small serialized rule. What a file may hold is capped by that,
# before anything is read: a crafted archive cannot make us inflate more.
RECORD_BYTES = 8 * 1024
BASE_BYTES = 64 * 1024
MAX_PATH = 4096  # characters of a recorded variable path
_RECORD_KEYS = ("kind", "index", "variable", "shape", "value")


def read_records(filepath, *, variable_count, archive_required=True):
    """`[(holder, member, records)]` from a `.keras` file; `[]` when it stores no rules.

    `holder` is the saving path of the model the store was attached to: ""
    for the top model, `"layers/functional"` when a ruled model was nested in
    the saved one; `member` is the archive entry. A `filepath` that is not a
    zip archive raises `ValueError`, or gives `[]` with `archive_required=False`
    (a model `keras.saving.load_model` reads from elsewhere: a `.h5` file, a
    directory, a remote path).

    The file is input like any other: the stores of a model with
    `variable_count` variables hold at most two records per variable each,
    so more bytes than that can hold (`BASE_BYTES + RECORD_BYTES` per record)
    are refused before they are inflated. Every record is checked for shape
    (`check_record`); anything else raises one `ValueError` that names the
    file, the entry and the record. Nothing is applied here.
    """
    if not isinstance(filepath, (str, os.PathLike)):
        raise TypeError(
            "`filepath` must be the path of a `.keras` file (a str or os.PathLike). "
            f"Received: filepath={filepath!r} of type {type(filepath).__name__}")
    found = []
    try:
        archive = zipfile.ZipFile(filepath)
    except (zipfile.BadZipFile, OSError) as error:
        if not archive_required:
            return []
        if not isinstance(error, (zipfile.BadZipFile, IsADirectoryError)):
            raise
        raise ValueError(
            "`filepath` must be a `.keras` file written by `model.save`. "
            f"Received: filepath={filepath!r} ({error})"
        ) from error
    max_records = 2 * variable_count  # in all the stores of the file together
    budget = BASE_BYTES + max_records * RECORD_BYTES
    count = 0
    with archive:
        for info in sorted(archive.infolist(), key=lambda info: info.filename):
            name = info.filename
            parts = name.split("/")
            if not (len(parts) >= 3 and parts[0] == "assets"
                    and parts[-2:] == [ATTRIBUTE, FILENAME]):
                continue
            where = f"'{name}' in {filepath!r}"
            budget -= info.file_size
            if budget < 0:
                raise _malformed(
                    where, f"the rule records take {info.file_size} bytes (with "
                    "those before them, more than the "
                    f"{BASE_BYTES + max_records * RECORD_BYTES} that rules for "
                    f"{variable_count} variables can take)")
            try:
                with archive.open(info) as member:
                    raw = member.read(info.file_size + 1)
            except (zipfile.BadZipFile, OSError, RuntimeError, EOFError, zlib.error) as error:
                raise _malformed(where, f"it cannot be read ({error})") from error
            if len(raw) > info.file_size:
                raise _malformed(where, "it is longer than the archive says")
            try:
                content = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError) as error:
                raise _malformed(where, f"it is not JSON ({type(error).__name__}: "
                                        f"{str(error)[:200]})") from error
            if not isinstance(content, dict) or not isinstance(content.get("records"), list):
                raise _malformed(where, "it must be a JSON object with a list of 'records'")
            if type(content.get("format")) is not int or content["format"] != FORMAT:
                raise ValueError(
                    f"{where} has format {content.get('format')!r}; this version "
                    f"of keras_regkit reads format {FORMAT}."
                )
            stored = content["records"]
            count += len(stored)
            if count > max_records:
                raise _malformed(
                    where, f"it holds {len(stored)} records ({count} with those before "
                    f"it); a model with {variable_count} variables has at most "
                    f"{max_records}")
            seen = set()
            for number, record in enumerate(stored):
                check_record(record, f"record {number} of {where}")
                key = (record["kind"], record["variable"], record["index"])
                if key in seen:
                    raise _malformed(
                        f"record {number} of {where}",
                        f"a second {record['kind']} record for '{record['variable']}' "
                        f"(position {record['index']}); a store holds one per variable")
                seen.add(key)
            found.append(("/".join(parts[1:-2]), name, stored))
    return found


def check_record(record, where):
    """Raises a `ValueError` naming `where` unless `record` has the shape we write."""
    def refuse(problem):
        shown = repr(record)
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        raise _malformed(where, f"{problem}. Received: {shown}")

    if not isinstance(record, dict) or sorted(record) != sorted(_RECORD_KEYS):
        refuse(f"a record must be a JSON object with the keys {list(_RECORD_KEYS)}")
    if not isinstance(record["kind"], str) or record["kind"] not in _weights.KINDS:
        refuse(f"'kind' must be one of {sorted(_weights.KINDS)}")
    index = record["index"]
    if type(index) is not int or index < 0:
        refuse("'index' must be a non-negative integer")
    if not isinstance(record["variable"], str) or not record["variable"]:
        refuse("'variable' must be a non-empty variable path")
    if len(record["variable"]) > MAX_PATH:
        refuse(f"'variable' must be a variable path of at most {MAX_PATH} characters")
    shape = record["shape"]
    if not isinstance(shape, list) or not all(
            type(size) is int and size >= 0 for size in shape):
        refuse("'shape' must be a list of non-negative integers")
    if record["value"] is not None and not isinstance(record["value"], dict):
        refuse("'value' must be a serialized rule (a JSON object) or null")


def _malformed(where, problem):
    return ValueError(
        f"Invalid keras_regkit rule records ({where}): {problem}. Nothing was "
        "changed. Was the file written by `model.save` of a model ruled with "
        "`keras_regkit.regularize`/`constrain`?")


def records(model, planned, kind):
    """Store records for `planned`, and the `(variable, value)` pairs that can't be stored.

    `planned` holds `(owner, variable, weight name, value)` entries of `kind`.
    """
    index = {id(v): i for i, v in enumerate(_layer_tree.unique_variables(model.weights))}
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


def storable(value):
    """Whether `value` (a rule, or `None`) can be kept in layer configs and records."""
    return value is None or _serialize(value) is not None


def _serialize(value):
    """`value`'s JSON-ready serialization if it loads back, else `None`."""
    try:
        serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(value)))
        restored = keras.saving.deserialize_keras_object(serialized)
    except Exception:
        return None
    return serialized if type(restored) is type(value) else None


# Keras layers whose config holds their cell's `kernel_regularizer` etc. (read
# from the cell) instead of the cell's own config; subclasses inherit it.
_READS_CELL_SETTINGS = (
    keras.layers.SimpleRNN,
    keras.layers.GRU,
    keras.layers.LSTM,
    keras.layers.ConvLSTM1D,
    keras.layers.ConvLSTM2D,
    keras.layers.ConvLSTM3D,
)


def kept_by_config(planned, walked, kind):
    """`{id(variable): bool}`: whether a `.keras` file's layer configs keep each rule.

    True when the owner has a `<weight>_<kind>` setting in its config and is
    rebuilt from that config: every layer from the model down to the owner
    lists its child's config in its own (functional and Sequential models,
    `Wrapper`s, `Bidirectional`, `RNN` with its cell), or is a Keras RNN layer
    whose config carries its cell's settings (`LSTM`, `GRU`, ...). False
    under a layer that rebuilds its inner layers from constructor arguments
    (`MultiHeadAttention`, KerasHub blocks and backbones, most composite
    layers), whatever attributes hold them.

    `walked` is `_layer_tree.walk_layers(model)` as a list. Each container's
    config is computed once, however many rules lie under it.
    """
    parents_of = {id(layer): parents for layer, parents in walked}
    listed = {}  # id(container) -> {(class name, layer name)} in its config, or None

    def rebuilds_from_config(container, child):
        if id(container) not in listed:
            try:
                listed[id(container)] = _listed_layers(container.get_config(), set())
            except Exception:
                listed[id(container)] = None
        names = listed[id(container)]
        if names is None:
            return False
        return (type(child).__name__, child.name) in names or (
            isinstance(container, _READS_CELL_SETTINGS) and child is container.cell
        )

    def survives(owner):
        parents = parents_of.get(id(owner))
        if parents is None:
            return False
        chain = list(parents) + [owner]
        return all(rebuilds_from_config(c, child) for c, child in zip(chain[:-1], chain[1:]))

    return {
        id(variable): _weights.config_attribute(owner, name, kind) is not None
        and survives(owner)
        for owner, variable, name, value in planned
    }


def _listed_layers(config, found):
    """Adds to `found` the `(class name, name)` of each layer config inside `config`."""
    if isinstance(config, dict):
        inner = config.get("config")
        if isinstance(config.get("class_name"), str) and isinstance(inner, dict):
            found.add((config["class_name"], inner.get("name")))
        for value in config.values():
            _listed_layers(value, found)
    elif isinstance(config, (list, tuple)):
        for value in config:
            _listed_layers(value, found)
    return found

