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
"""

import json
import posixpath
import zipfile

import keras

from keras_regkit import _selectors

ATTRIBUTE = "_keras_regkit_rules"
FILENAME = "rules.json"
FORMAT = 1


class RuleStore(keras.layers.Layer):
    """Holds one record per (variable, kind) ruled on a model; saved as an asset.

    A record is a dict: `kind` ("regularizer" or "constraint"), `index` (of the
    variable in the holding model's `weights`), `variable` (its path), `shape`,
    `value` (`keras.saving.serialize_keras_object` of the rule, `None` for a
    removal).
    """

    def __init__(self, **kwargs):
        super().__init__(name="keras_regkit_rules", **kwargs)
        self.records = {}

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
    indices = [i for i, v in enumerate(_selectors.unique_variables(model.weights)) if id(v) in wanted]
    for index in indices:
        store.records.pop((kind, index), None)


def has_records(filepath):
    """Whether `filepath` is a `.keras` archive holding stored rules."""
    if not zipfile.is_zipfile(filepath):
        return False
    with zipfile.ZipFile(filepath) as archive:
        return any(
            name.endswith(f"/{ATTRIBUTE}/{FILENAME}") for name in archive.namelist()
        )


def read_records(filepath):
    """`[(holder, records)]` from a `.keras` file; `holder` is "" for the top model.

    `holder` is the saving path of the model the store was attached to
    (`"layers/functional"` when a ruled model was nested in the saved one).
    """
    found = []
    try:
        archive = zipfile.ZipFile(filepath)
    except (zipfile.BadZipFile, IsADirectoryError) as error:
        raise ValueError(
            "`filepath` must be a `.keras` file written by `model.save`. "
            f"Received: filepath={filepath!r} ({error})"
        ) from error
    with archive:
        for name in sorted(archive.namelist()):
            parts = name.split("/")
            if len(parts) >= 3 and parts[0] == "assets" and parts[-2:] == [
                ATTRIBUTE,
                FILENAME,
            ]:
                content = json.loads(archive.read(name).decode("utf-8"))
                if content.get("format") != FORMAT:
                    raise ValueError(
                        f"'{name}' in {filepath!r} has format "
                        f"{content.get('format')!r}; this version of keras_regkit "
                        f"reads format {FORMAT}."
                    )
                found.append(("/".join(parts[1:-2]), content["records"]))
    return found
