"""The rule records of a `.keras` file are input: checked, capped, applied all or none.

Issue 20, items 2-7. Each test crafts the `rules.json` asset of a real saved
model and hands the file to `keras_regkit.restore_rules`/`load_model`.
"""

import json
import time
import warnings
import zipfile

import keras
import pytest

import keras_regkit
from keras_regkit import _rule_store
from keras_regkit import saving
from tests import helpers


def _attention_model():
    inputs = keras.Input((3, 4))
    x = keras.layers.MultiHeadAttention(2, 2, name="attention")(inputs, inputs)
    outputs = keras.layers.Dense(2, name="logits")(x)
    return keras.Model(inputs, outputs, name="net")


def _saved(tmp_path):
    """A model whose 4 attention kernels are ruled, saved; its records, and a fresh copy."""
    model = _attention_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", keras_regkit.RulesNeedRestoreWarning)
        keras_regkit.regularize(model, {"*/attention/*/kernel": keras_regkit.L2(0.01)})
    path = tmp_path / "ruled.keras"
    model.save(path)
    [(_, member, records)] = _rule_store.read_records(str(path), variable_count=100)
    return path, member, records


def _craft(path, member, content):
    """A copy of the archive at `path` whose rule asset `member` holds `content`."""
    crafted = path.with_name("crafted.keras")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(
            crafted, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == member:
                data = content if isinstance(content, bytes) else json.dumps(content).encode()
            target.writestr(info.filename, data)
    return str(crafted)


def _records_file(path, member, records):
    return _craft(path, member, {"format": _rule_store.FORMAT, "records": records})


def _refused(crafted, error, match):
    """Restoring `crafted` into a plainly loaded model raises and changes nothing."""
    model = keras.saving.load_model(crafted)
    before = helpers.snapshot(model)
    trainable = [v.trainable for v in model.weights]
    with pytest.raises(error, match=match):
        keras_regkit.restore_rules(model, crafted)
    helpers.assert_unchanged(model, before)
    assert [v.trainable for v in model.weights] == trainable
    with pytest.raises(error, match=match):
        keras_regkit.load_model(crafted)


def test_a_kind_we_do_not_write_is_refused_not_set_as_an_attribute(tmp_path):
    path, member, records = _saved(tmp_path)
    records[1] = {**records[1], "kind": "trainable", "value": None}
    crafted = _records_file(path, member, records)
    _refused(crafted, ValueError, r"record 1 of .*crafted.keras.*'kind' must be one of")


@pytest.mark.parametrize("value, error, match", [
    # A constraint where a regularizer belongs (and the reverse, below).
    (keras.saving.serialize_keras_object(keras_regkit.MaxNorm(2.0)), TypeError,
     r"regularizer of record 2 of .* must be a `keras.regularizers.Regularizer`"),
    # A plain function: loads, but is not a rule.
    (keras.saving.serialize_keras_object(keras.activations.relu), TypeError,
     r"must be a `keras.regularizers.Regularizer`.*Received: <function relu"),
    # A string is not a serialized rule at all.
    ("relu", ValueError, r"record 2 of .*'value' must be a serialized rule"),
    # A regularizer that cannot run on the kernel's shape: checked as `regularize` does.
    (keras.saving.serialize_keras_object(keras_regkit.GroupLasso(0.1, axis=7)), ValueError,
     r"record 2 of .*failed on a zero tensor"),
    # A class nobody registered.
    ({"class_name": "Nope", "module": "nowhere", "config": {}}, ValueError,
     r"regularizer of record 2 of .* does not load"),
])
def test_values_are_checked_as_regularize_checks_them(tmp_path, value, error, match):
    path, member, records = _saved(tmp_path)
    records[2] = {**records[2], "value": value}
    _refused(_records_file(path, member, records), error, match)


def test_a_regularizer_recorded_as_a_constraint_is_refused(tmp_path):
    path, member, records = _saved(tmp_path)
    records[3] = {**records[3], "kind": "constraint"}
    _refused(_records_file(path, member, records), TypeError,
             r"constraint of record 3 .* must be a `keras.constraints.Constraint`")


def test_an_error_on_a_late_record_leaves_the_earlier_ones_unapplied(tmp_path):
    path, member, records = _saved(tmp_path)
    # Records 0-2 are valid and would set L2(0.01) where plain loading left none.
    records[3] = {**records[3], "value": "not a rule"}
    crafted = _records_file(path, member, records)
    model = keras.saving.load_model(crafted)
    assert len(model.losses) == 0
    _refused(crafted, ValueError, "record 3")
    assert len(model.losses) == 0


@pytest.mark.parametrize("content, match", [
    (b"{not json", r"rules.json' in .*crafted.keras.*it is not JSON"),
    (b"\xff\xfe", r"it is not JSON"),
    ([], r"a JSON object with a list of 'records'"),
    ({"format": 1, "records": {"0": {}}}, r"a JSON object with a list of 'records'"),
    ({"format": 99, "records": []}, r"has format 99"),
    ({"format": 1, "records": [42]}, r"record 0 of .* keys \['kind'"),
    ({"format": 1, "records": [{"kind": "regularizer"}]}, r"record 0 of .* keys"),
])
def test_malformed_files_name_the_file_and_the_record(tmp_path, content, match):
    path, member, _ = _saved(tmp_path)
    _refused(_craft(path, member, content), ValueError, match)


@pytest.mark.parametrize("field, bad, match", [
    ("index", "0", "'index' must be a non-negative integer"),
    ("index", -1, "'index' must be a non-negative integer"),
    ("index", True, "'index' must be a non-negative integer"),
    ("variable", 3, "'variable' must be a non-empty variable path"),
    ("shape", [4, "2"], "'shape' must be a list of non-negative integers"),
    ("shape", 8, "'shape' must be a list of non-negative integers"),
])
def test_malformed_fields_are_refused(tmp_path, field, bad, match):
    path, member, records = _saved(tmp_path)
    records[0] = {**records[0], field: bad}
    _refused(_records_file(path, member, records), ValueError, "record 0 of .*" + match)


def test_records_are_capped_before_they_are_read(tmp_path, monkeypatch):
    path, member, records = _saved(tmp_path)
    # 10 weights in the model: at most 20 records, and a few hundred KiB in all.
    padded = json.dumps({"format": 1, "records": records}).encode() + b" " * (4 << 20)
    crafted = _craft(path, member, padded)
    assert zipfile.ZipFile(crafted).getinfo(member).compress_size < 100_000  # small on disk
    read = []
    monkeypatch.setattr(zipfile.ZipExtFile, "read",
                        lambda self, *args: read.append(args) or b"")
    with pytest.raises(ValueError, match=r"take 4\d{6} bytes .*more than the \d+ that rules "
                                         r"for 9 variables can take"):
        _rule_store.read_records(crafted, variable_count=9)
    assert not read  # refused before inflating anything
    monkeypatch.undo()
    _refused(crafted, ValueError, "more than the")


def test_more_records_than_a_model_can_have_are_refused(tmp_path):
    path, member, records = _saved(tmp_path)
    _refused(_records_file(path, member, records * 6), ValueError,
             r"holds 24 records \(24 with those before it\); a model with 10 variables "
             r"has at most 20")


class _ManyWeights(keras.layers.Layer):
    def __init__(self, count, **kwargs):
        super().__init__(**kwargs)
        self.count = count

    def build(self, input_shape):
        self.ws = [self.add_weight(shape=(1,), name=f"w{i}", initializer="ones")
                   for i in range(self.count)]

    def call(self, x):
        return x + self.ws[0]


def test_restore_takes_time_linear_in_records_and_weights(tmp_path):
    # 4,000 records on 4,000 weights: the old scan of every weight for every
    # record took 78 s here; an index by path takes a fraction of a second.
    count = 4000
    layer = _ManyWeights(count, name="many")
    model = keras.Sequential([keras.Input((1,)), layer], name="wide")
    records = [{"kind": "regularizer", "index": i, "variable": v.path, "shape": [1],
                "value": keras.saving.serialize_keras_object(keras_regkit.L2(0.01))}
               for i, v in enumerate(model.weights)]
    path = tmp_path / "wide.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"assets/{_rule_store.ATTRIBUTE}/{_rule_store.FILENAME}",
                         json.dumps({"format": 1, "records": records}))
    start = time.perf_counter()
    keras_regkit.restore_rules(model, str(path))
    elapsed = time.perf_counter() - start
    assert sum(v.regularizer is not None for v in model.weights) == count
    assert elapsed < 5.0, f"restore of {count} records took {elapsed:.1f} s"


# --- found by a red-team pass ---------------------------------------------------------


@pytest.mark.parametrize("content, match", [
    ({"format": 1, "records": [{"kind": ["regularizer"], "index": 0, "variable": "a",
                                "shape": [], "value": None}]}, r"'kind' must be one of"),
    (b"[" * 100_000, r"it is not JSON \(RecursionError"),
    ({"format": True, "records": []}, r"has format True"),
])
def test_odd_json_is_one_value_error(tmp_path, content, match):
    path, member, _ = _saved(tmp_path)
    _refused(_craft(path, member, content), ValueError, match)


def test_duplicate_records_are_refused(tmp_path):
    path, member, records = _saved(tmp_path)
    duplicate = {**records[0], "value": keras.saving.serialize_keras_object(
        keras_regkit.L2(5.0))}
    _refused(_records_file(path, member, records + [duplicate]), ValueError,
             r"record 4 of .*a second regularizer record for")


def test_the_record_cap_counts_every_store_of_the_file(tmp_path):
    path, member, records = _saved(tmp_path)
    crafted = _records_file(path, member, records)
    with zipfile.ZipFile(crafted, "a") as archive:  # 5 more stores of 4 records each
        for i in range(5):
            archive.writestr(f"assets/layers/m{i}/{_rule_store.ATTRIBUTE}/{_rule_store.FILENAME}",
                             json.dumps({"format": 1, "records": records}))
    _refused(crafted, ValueError, r"\(24 with those before it\); a model with 10 variables")


def test_a_corrupt_deflate_stream_is_one_value_error(tmp_path):
    path, member, records = _saved(tmp_path)
    crafted = _records_file(path, member, records)
    data = bytearray(open(crafted, "rb").read())
    with zipfile.ZipFile(crafted) as archive:
        info = archive.getinfo(member)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start:start + 8] = b"\xff" * 8  # garbage where the compressed bytes begin
    open(crafted, "wb").write(bytes(data))
    # (Keras's own load_model of this file fails in zlib first: it extracts assets.)
    model = keras.saving.load_model(path)
    before = helpers.snapshot(model)
    with pytest.raises(ValueError, match=r"it cannot be read"):
        keras_regkit.restore_rules(model, crafted)
    helpers.assert_unchanged(model, before)


def test_long_paths_of_slashes_cost_no_more_than_real_ones(tmp_path, monkeypatch):
    path, member, records = _saved(tmp_path)
    crafted = _records_file(path, member, [
        {**record, "variable": "/" * 4000 + record["variable"]} for record in records])
    model = keras.saving.load_model(crafted)
    # Counted, not timed: a lookup per '/' took only 0.2 s here, under any sane bound.
    looked_up = []

    class _Counting(dict):
        def get(self, key, default=None):
            looked_up.append(key)
            return super().get(key, default)

    build_index = saving._PathIndex.__init__

    def counting_index(index, weights):
        build_index(index, weights)
        index.by_path = _Counting(index.by_path)

    monkeypatch.setattr(saving._PathIndex, "__init__", counting_index)
    keras_regkit.restore_rules(model, crafted)  # still found: the tail is the real path
    assert len(model.losses) == 4
    depth = max(v.path.count("/") + 1 for v in model.weights)
    assert 0 < len(looked_up) <= len(records) * depth  # not one per '/' (4,000 each)
    too_long = _records_file(path, member, [{**records[0], "variable": "/" * 40_000}])
    _refused(too_long, ValueError, r"at most 4096 characters")


def test_a_config_naming_a_layer_is_refused_before_it_is_built(tmp_path, monkeypatch):
    path, member, records = _saved(tmp_path)
    dense = keras.saving.serialize_keras_object(keras.layers.Dense(4000))
    crafted = _records_file(path, member, [{**records[0], "value": dense}])
    built, build = [], keras.layers.Dense.build

    def spy(layer, *args, **kwargs):
        if layer.units == 4000:
            built.append(layer)
        return build(layer, *args, **kwargs)

    monkeypatch.setattr(keras.layers.Dense, "build", spy)
    _refused(crafted, TypeError, r"names keras.*Dense, which is not built")
    assert not built


@pytest.mark.parametrize("filepath", [None, 123, b"model.keras"])
def test_a_filepath_that_is_no_path_is_a_type_error(filepath):
    model = _attention_model()
    with pytest.raises(TypeError, match=r"Received: filepath="):
        keras_regkit.restore_rules(model, filepath)
