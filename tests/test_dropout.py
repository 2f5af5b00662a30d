"""Tests for keras_regkit.dropout: insert_dropout, dropout_plan, remove_dropout."""

import warnings

import keras
import numpy as np
import pytest
from keras import layers as L

import keras_regkit
from keras_regkit import dropout as kd
from tests import helpers
from tests.helpers import randomize


def classes_and_rates(model):
    return [(layer.__class__.__name__, getattr(layer, "rate", None))
            for layer in model.layers]


def assert_same_outputs(original, new, x):
    expected = keras.tree.flatten(original(x, training=False))
    got = keras.tree.flatten(new(x, training=False))
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(np.asarray(e), np.asarray(g))


def vgg_like(input_shape=(16, 16, 3)):
    return randomize(keras.Sequential([
        keras.Input(input_shape),
        L.Conv2D(4, 3, padding="same", activation="relu"),
        L.Conv2D(4, 3, padding="same", activation="relu"),
        L.MaxPooling2D(),
        L.Conv2D(8, 3, padding="same", activation="relu"),
        L.Conv2D(8, 3, padding="same", activation="relu"),
        L.MaxPooling2D(),
        L.Flatten(),
        L.Dense(16, activation="relu"),
        L.Dense(10, activation="softmax"),
    ], name="vgg"))


def two_in_two_out():
    a, b = keras.Input((8,), name="a"), keras.Input((4,), name="b")
    h = L.Concatenate()([L.Dense(8, name="da")(a), L.Dense(8, name="db")(b)])
    h = L.Dense(12, activation="relu", name="trunk")(h)
    reg = L.Dense(1, name="reg")(h)
    cls = L.Activation("softmax", name="cls")(L.Dense(3, name="cls_logits")(h))
    return randomize(keras.Model([a, b], [reg, cls], name="two_by_two"))


def test_vgg_policy_layout_weights_and_outputs():
    model = vgg_like()
    before = helpers.snapshot(model)
    new = keras_regkit.insert_dropout(model, policy="vgg")
    assert isinstance(new, keras.Sequential)
    assert classes_and_rates(new) == [
        ("Conv2D", None), ("Conv2D", None), ("MaxPooling2D", None), ("Dropout", 0.25),
        ("Conv2D", None), ("Conv2D", None), ("MaxPooling2D", None), ("Dropout", 0.25),
        ("Flatten", None), ("Dense", None), ("Dropout", 0.5), ("Dense", None)]
    helpers.assert_unchanged(model, before)
    kept = [layer for layer in new.layers if not isinstance(layer, L.Dropout)]
    for old, copy in zip(model.layers, kept):
        assert old.name == copy.name and old is not copy
        for w_old, w_new in zip(old.weights, copy.weights):
            assert w_old is not w_new  # copies, not shared variables
            np.testing.assert_array_equal(w_old.numpy(), w_new.numpy())
    x = np.random.default_rng(1).normal(size=(4, 16, 16, 3)).astype("float32")
    assert_same_outputs(model, new, x)
    # The dropout is live in training mode.
    assert not np.allclose(model(x), new(x, training=True))
    # Training the copy leaves the original alone.
    new.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    new.train_on_batch(x, np.array([0, 1, 2, 3]))
    helpers.assert_unchanged(model, before)


def test_inserted_dropout_is_inverted_dropout_at_the_rate():
    model = keras.Sequential([keras.Input((4000,)), L.Identity(name="features"),
                              L.Dense(1, name="out")])
    new = keras_regkit.insert_dropout(model, 0.3, after="features")
    probe = keras.Model(new.inputs[0], new.get_layer("features_dropout").output)
    y = np.asarray(probe(np.ones((5, 4000), "float32"), training=True))
    # Inverted dropout: each unit is 0 with probability 0.3, else 1 / (1 - 0.3).
    assert abs((y == 0).mean() - 0.3) < 0.02
    np.testing.assert_allclose(y[y != 0], 1 / 0.7, rtol=1e-6)


def test_plan_rows_and_printed_table():
    model = vgg_like()
    before = helpers.snapshot(model)
    lines = []
    rows = keras_regkit.dropout_plan(model, policy="vgg", print_fn=lines.append)
    helpers.assert_unchanged(model, before)
    assert [(r["layer"], r["layer_class"], r["dropout"], r["rate"], r["skipped"])
            for r in rows] == [
        ("max_pooling2d", "MaxPooling2D", "Dropout", 0.25, False),
        ("max_pooling2d_1", "MaxPooling2D", "Dropout", 0.25, False),
        ("dense", "Dense", "Dropout", 0.5, False),
        ("dense_1", "Dense", None, None, True)]
    assert rows[-1]["reason"] == "produces a model output"
    assert rows[0]["rule"] == "policy='vgg': pooling" and rows[0]["reason"] == ""
    assert lines[0] == "Dropout plan for 'vgg': 3 inserted, 1 skipped"
    assert lines[1].split() == ["layer", "class", "dropout", "rate", "note"]
    assert lines[4].split() == ["dense", "Dense", "Dropout", "0.5"]
    assert "skipped: produces a model output" in lines[5]
    assert keras_regkit.dropout_plan(model, policy="vgg", print_fn=None) == rows


def test_plain_dropout_after_convolution_warns_and_spatial_does_not():
    model = vgg_like()
    with pytest.warns(UserWarning, match=r"(?s)'conv2d'.*correlated.*spatial=True"):
        new = keras_regkit.insert_dropout(model, 0.1, after="conv2d")
    assert classes_and_rates(new)[1] == ("Dropout", 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        new = keras_regkit.insert_dropout(model, 0.1, after=L.Conv2D, spatial=True)
        # policy="vgg" puts plain dropout after pooling only: no warning.
        keras_regkit.insert_dropout(model, policy="vgg")
    assert [c for c, _ in classes_and_rates(new)].count("SpatialDropout2D") == 4
    assert new.layers[1].data_format == "channels_last"


@pytest.mark.parametrize("conv, shape, expected", [
    (L.Conv1D, (12, 3), "SpatialDropout1D"),
    (L.Conv2D, (6, 6, 3), "SpatialDropout2D"),
    (L.Conv3D, (4, 4, 4, 3), "SpatialDropout3D"),
])
def test_spatial_dropout_matches_rank(conv, shape, expected):
    model = keras.Sequential([keras.Input(shape), conv(5, 3, padding="same", name="c"),
                              L.Flatten(), L.Dense(2)])
    new = keras_regkit.insert_dropout(model, 0.5, after="c", spatial=True)
    assert classes_and_rates(new)[1] == (expected, 0.5)
    x = np.random.default_rng(0).normal(size=(2,) + shape).astype("float32")
    assert_same_outputs(model, new, x)
    # Whole channels drop: per example and channel, all positions zero or none.
    probe = keras.Model(new.inputs[0], new.get_layer("c_dropout").output)
    y = np.asarray(probe(np.abs(x) + 1, training=True)).reshape(2, -1, 5)
    zero = y == 0
    assert np.all(zero.all(axis=1) | ~zero.any(axis=1))


def test_spatial_dropout_channels_first():
    inputs = keras.Input((3, 6, 6))
    h = L.Conv2D(4, 3, padding="same", data_format="channels_first", name="c")(inputs)
    model = keras.Model(inputs, L.Dense(2)(L.Flatten()(h)))
    new = keras_regkit.insert_dropout(model, 0.5, after="c", spatial=True)
    layer = new.get_layer("c_dropout")
    assert isinstance(layer, L.SpatialDropout2D) and layer.data_format == "channels_first"
    # (TensorFlow has no channels_first convolution on CPU: apply the layer alone.)
    y = np.asarray(layer(np.ones((8, 4, 6, 6), "float32"), training=True))
    zero = (y == 0).reshape(8, 4, 36)  # channels on axis 1
    assert np.all(zero.all(axis=2) | ~zero.any(axis=2)) and zero.any()
    # SpatialDropout1D knows channels_last only: a noise shape does it instead.
    inputs = keras.Input((3, 10))
    h = L.Conv1D(4, 3, data_format="channels_first", name="c")(inputs)
    model = keras.Model(inputs, L.Dense(2)(L.Flatten()(h)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # not the plain-dropout warning
        new = keras_regkit.insert_dropout(model, 0.5, after="c", spatial=True)
    layer = new.get_layer("c_dropout")
    assert type(layer) is L.Dropout and layer.noise_shape == (None, None, 1)
    y = np.asarray(layer(np.ones((8, 4, 8), "float32"), training=True))
    zero = y == 0
    assert np.all(zero.all(axis=2) | ~zero.any(axis=2)) and zero.any()


def test_mixed_precision_model_keeps_dtypes():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = keras.Sequential([keras.Input((6,)), L.Dense(8, name="d"),
                              L.Dense(2, dtype="float32")])
    keras.mixed_precision.set_global_policy("float32")
    new = keras_regkit.insert_dropout(model, 0.5, after="d")
    assert new.get_layer("d_dropout").dtype_policy.name == "mixed_float16"
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    probe_old = keras.Model(model.inputs[0], model.get_layer("d").output)
    probe_new = keras.Model(new.inputs[0], new.get_layer("d_dropout").output)
    assert probe_new(x).dtype == probe_old(x).dtype == "float16"
    assert_same_outputs(model, new, x)


def test_resnet50_after_add_trains_one_step():
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    randomize(model)
    before = helpers.snapshot(model)
    adds = [layer.name for layer in model.layers if isinstance(layer, L.Add)]
    new = keras_regkit.insert_dropout(model, 0.2, after=L.Add)
    helpers.assert_unchanged(model, before)
    assert len(adds) == 16
    assert len(new.layers) == len(model.layers) + 16
    for name in adds:
        dropout = new.get_layer(f"{name}_dropout")
        assert isinstance(dropout, L.Dropout) and dropout.rate == 0.2
        assert dropout.input is new.get_layer(name).output  # right after the Add
    # The block's output activation now reads the dropout, not the Add.
    block_out = new.get_layer(adds[0].replace("_add", "_out"))
    assert block_out.input is new.get_layer(f"{adds[0]}_dropout").output
    x = np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 3)).astype("float32")
    assert_same_outputs(model, new, x)
    new.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    weights = [w.copy() for w in new.get_weights()]
    loss = new.train_on_batch(x, np.array([1, 7]))
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(weights, new.get_weights()))
    helpers.assert_unchanged(model, before)


def test_two_inputs_two_outputs():
    model = two_in_two_out()
    before = helpers.snapshot(model)
    rows = keras_regkit.dropout_plan(model, policy="dense", print_fn=None)
    reasons = {r["layer"]: r["reason"] for r in rows}
    assert reasons == {
        "da": "", "db": "", "trunk": "",
        "reg": "produces a model output",
        "cls_logits": "reaches a model output only through weightless 'cls'"}
    new = keras_regkit.insert_dropout(model, policy="dense")
    helpers.assert_unchanged(model, before)
    assert sorted(layer.name for layer in new.layers if isinstance(layer, L.Dropout)) == [
        "da_dropout", "db_dropout", "trunk_dropout"]
    assert [t.name for t in new.inputs] == ["a", "b"] and len(new.outputs) == 2
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(5, 8)).astype("float32"), rng.normal(size=(5, 4)).astype("float32")]
    assert_same_outputs(model, new, x)
    new.compile(optimizer="sgd", loss=["mse", "sparse_categorical_crossentropy"])
    losses = new.train_on_batch(x, [np.zeros((5, 1)), np.array([0, 1, 2, 0, 1])])
    model.compile(optimizer="adam", loss=["mse", "sparse_categorical_crossentropy"])
    compiled = keras_regkit.insert_dropout(model, policy="dense")
    assert compiled.compiled and compiled.optimizer is not model.optimizer
    assert np.all(np.isfinite(compiled.train_on_batch(
        x, [np.zeros((5, 1)), np.array([0, 1, 2, 0, 1])])))
    assert np.all(np.isfinite(losses))
    # skip_output=False puts dropout after the output layers too.
    forced = keras_regkit.insert_dropout(model, policy="dense", skip_output=False)
    names = {layer.name for layer in forced.layers}
    assert {"reg_dropout", "cls_logits_dropout"} <= names


def test_nested_sub_models():
    inner_in = keras.Input((6,))
    backbone = keras.Model(inner_in, L.Dense(5, name="b2")(L.Dense(7, name="b1")(inner_in)),
                           name="backbone")
    head = keras.Sequential([keras.Input((5,)), L.Dense(4, name="h1"), L.Dense(2, name="h2")],
                            name="head")
    inputs = keras.Input((6,))
    model = randomize(keras.Model(inputs, head(backbone(inputs)), name="outer"))
    backbone.trainable = False
    before = helpers.snapshot(model)
    rows = keras_regkit.dropout_plan(model, 0.3, after=L.Dense, print_fn=None)
    assert [(r["layer"], r["skipped"]) for r in rows] == [
        ("backbone/b1", False), ("backbone/b2", False), ("head/h1", False), ("head/h2", True)]
    assert rows[-1]["reason"] == ("produces a model output of nested model 'head', "
                                  "an output layer")
    new = keras_regkit.insert_dropout(model, 0.3, after=L.Dense)
    helpers.assert_unchanged(model, before)
    new_backbone, new_head = new.get_layer("backbone"), new.get_layer("head")
    assert new_backbone is not backbone
    assert [l.name for l in new_backbone.layers[1:]] == ["b1", "b1_dropout", "b2", "b2_dropout"]
    assert isinstance(new_head, keras.Sequential)
    assert classes_and_rates(new_head) == [("Dense", None), ("Dropout", 0.3), ("Dense", None)]
    assert not new_backbone.trainable
    assert len(new.trainable_weights) == len(model.trainable_weights) == 4
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    assert_same_outputs(model, new, x)
    # A nested model can itself be selected (glob on its name).
    after_backbone = keras_regkit.insert_dropout(model, 0.2, after="backbone")
    assert "backbone_dropout" in [layer.name for layer in after_backbone.layers]
    assert_same_outputs(model, after_backbone, x)


def test_shared_layer_used_twice():
    a, b = keras.Input((4,)), keras.Input((4,))
    shared = L.Dense(6, name="shared")
    out = L.Dense(1, name="out")(L.Add()([shared(a), shared(b)]))
    model = randomize(keras.Model([a, b], out))
    new = keras_regkit.insert_dropout(model, 0.4, after="shared")
    dropouts = [layer for layer in new.layers if isinstance(layer, L.Dropout)]
    assert sorted(d.name for d in dropouts) == ["shared_dropout", "shared_dropout_1"]
    assert len([l for l in new.layers if l.name == "shared"]) == 1
    assert len(new.weights) == len(model.weights)
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=(3, 4)).astype("float32")]
    assert_same_outputs(model, new, x)


def test_keras_save_and_load(tmp_path):
    model = vgg_like()
    new = keras_regkit.insert_dropout(model, policy="vgg", spatial=True)
    path = tmp_path / "with_dropout.keras"
    new.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert classes_and_rates(loaded) == classes_and_rates(new)
    assert isinstance(loaded.layers[3], L.SpatialDropout2D)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    assert_same_outputs(model, loaded, x)


def test_remove_dropout_round_trip():
    model = vgg_like()
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    back = keras_regkit.remove_dropout(keras_regkit.insert_dropout(model, policy="vgg"))
    assert classes_and_rates(back) == classes_and_rates(model)
    assert [l.name for l in back.layers] == [l.name for l in model.layers]
    assert_same_outputs(model, back, x)
    two = two_in_two_out()
    back_two = keras_regkit.remove_dropout(keras_regkit.insert_dropout(two, policy="dense"))
    assert sorted(l.name for l in back_two.layers) == sorted(l.name for l in two.layers)
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(5, 8)).astype("float32"), rng.normal(size=(5, 4)).astype("float32")]
    assert_same_outputs(two, back_two, xs)


def test_remove_dropout_every_kind_and_nested():
    inner = keras.Sequential([keras.Input((6,)), L.Dense(6), L.AlphaDropout(0.1)], name="inner")
    inputs = keras.Input((4, 4, 2))
    h = L.SpatialDropout2D(0.2)(L.Conv2D(3, 2)(inputs))
    h = L.GaussianDropout(0.3)(L.Dense(6)(L.Flatten()(h)))
    model = randomize(keras.Model(inputs, L.Dense(2)(L.Dropout(0.5)(inner(h)))))
    before = helpers.snapshot(model)
    clean = keras_regkit.remove_dropout(model)
    helpers.assert_unchanged(model, before)
    found = [l for l in clean.layers + clean.get_layer("inner").layers
             if isinstance(l, kd.DROPOUT_LAYERS)]
    assert found == []
    x = np.random.default_rng(0).normal(size=(3, 4, 4, 2)).astype("float32")
    assert_same_outputs(model, clean, x)
    with pytest.warns(UserWarning, match="no dropout layer"):
        keras_regkit.remove_dropout(clean)


def test_mapping_rates_later_entries_win_and_none_excludes():
    model = vgg_like()
    rules = {L.Conv2D: 0.1, "conv2d_3": None, "max_pooling2d*": 0.2, "conv2d_2": 0.3}
    rows = keras_regkit.dropout_plan(model, after=rules, spatial=True, print_fn=None)
    got = {r["layer"]: (r["dropout"], r["rate"], r["reason"]) for r in rows}
    assert got == {
        "conv2d": ("SpatialDropout2D", 0.1, ""),
        "conv2d_1": ("SpatialDropout2D", 0.1, ""),
        "max_pooling2d": ("SpatialDropout2D", 0.2, ""),
        "conv2d_2": ("SpatialDropout2D", 0.3, ""),
        "conv2d_3": (None, None, "rate None for 'conv2d_3'"),
        "max_pooling2d_1": ("SpatialDropout2D", 0.2, ""),
    }
    new = keras_regkit.insert_dropout(model, after=rules, spatial=True)
    assert [getattr(l, "rate", None) for l in new.layers][:8] == [
        None, 0.1, None, 0.1, None, 0.2, None, 0.3]


def test_callable_selector_and_tuple_of_classes():
    model = vgg_like()
    with pytest.warns(UserWarning, match="'conv2d_1'"):
        by_callable = keras_regkit.dropout_plan(
            model, 0.2, after=lambda layer: layer.name.endswith("_1"), print_fn=None)
    assert [r["layer"] for r in by_callable] == ["conv2d_1", "max_pooling2d_1", "dense_1"]
    assert by_callable[-1]["skipped"]
    with pytest.warns(UserWarning):
        by_tuple = keras_regkit.dropout_plan(model, 0.2, after=(L.Flatten, L.Conv2D),
                                             print_fn=None)
    assert len(by_tuple) == 5


def test_skips_dropout_layers_and_layers_already_followed_by_dropout():
    model = keras.Sequential([keras.Input((4,)), L.Dense(8, name="d1"), L.Dropout(0.5),
                              L.Dense(8, name="d2"), L.Dense(1, name="d3")])
    rows = keras_regkit.dropout_plan(model, after="*", print_fn=None)
    reasons = {r["layer"]: r["reason"] for r in rows}
    assert reasons["d1"] == "already followed by Dropout 'dropout'"
    assert reasons["dropout"] == "is a dropout layer"
    assert reasons["d2"] == "" and reasons["d3"] == "produces a model output"


def test_warns_when_every_selected_layer_is_skipped():
    model = keras.Sequential([keras.Input((4,)), L.Dense(1)])
    with pytest.warns(UserWarning, match="no dropout inserted"):
        new = keras_regkit.insert_dropout(model, policy="dense")
    assert classes_and_rates(new) == [("Dense", None)]


def test_names_stay_unique_and_compile_is_carried():
    model = keras.Sequential([keras.Input((4,)), L.Dense(8, name="d"),
                              L.Identity(name="d_dropout"), L.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    new = keras_regkit.insert_dropout(model, 0.5, after="d")
    assert [l.name for l in new.layers][:3] == ["d", "d_dropout_1", "d_dropout"]
    assert new.compiled and new.loss == "mse"
    assert new.optimizer is not model.optimizer


@pytest.mark.parametrize("kwargs, error, match", [
    ({"rate": -0.1, "policy": "dense"}, ValueError, r"Received: rate=-0.1"),
    ({"rate": 1.0, "policy": "dense"}, ValueError, r"\[0, 1\). Received: rate=1.0"),
    ({"rate": "0.5", "policy": "dense"}, TypeError, r"Received: rate='0.5'"),
    ({}, ValueError, "exactly one of `after`"),
    ({"after": "dense", "policy": "dense"}, ValueError, "exactly one of `after`"),
    ({"policy": "resnet"}, ValueError, r"Received: policy='resnet'"),
    ({"after": "nothing*"}, ValueError,
     r"'nothing\*' matches no layer of 'vgg'. Its layers are: conv2d, conv2d_1, .*dense_1"),
    ({"after": {L.Dense: 1.5}}, ValueError, r"Received: after\[Dense\]=1.5"),
    ({"after": {"dense": 0.1, "nope": 0.2}}, ValueError, "'nope' matches no layer"),
    ({"after": {}}, ValueError, "empty dict"),
    ({"after": 3}, TypeError, "Received: after=3"),
    ({"after": L.Dense(2)}, TypeError, "not be one"),
    ({"policy": "vgg", "spatial": "yes"}, TypeError, "Received: spatial='yes'"),
    ({"policy": "vgg", "skip_output": 1}, TypeError, "Received: skip_output=1"),
])
def test_bad_arguments_raise_and_leave_model_unchanged(kwargs, error, match):
    model = vgg_like()
    before = helpers.snapshot(model)
    with pytest.raises(error, match=match):
        keras_regkit.insert_dropout(model, **kwargs)
    with pytest.raises(error, match=match):
        keras_regkit.dropout_plan(model, print_fn=None, **kwargs)
    helpers.assert_unchanged(model, before)


def test_bad_models():
    with pytest.raises(TypeError, match="must be a `keras.Model`"):
        keras_regkit.insert_dropout(L.Dense(2), policy="dense")

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(2)

        def call(self, x):
            return self.dense(x)

    sub = Subclassed()
    sub(np.zeros((1, 3)))
    with pytest.raises(TypeError, match=r"(?s)subclassed Subclassed.*call\(\).*functional"):
        keras_regkit.insert_dropout(sub, policy="dense")
    with pytest.raises(TypeError, match="subclassed"):
        keras_regkit.remove_dropout(sub)
    with pytest.raises(ValueError, match="must be built"):
        keras_regkit.insert_dropout(keras.Sequential([L.Dense(2)]), policy="dense")
    no_dense = keras.Sequential([keras.Input((4, 4, 1)), L.Conv2D(2, 2)])
    with pytest.raises(ValueError, match=r"policy='vgg' selects no layer .*conv2d"):
        keras_regkit.insert_dropout(no_dense, policy="vgg")
    with pytest.raises(TypeError, match="print_fn"):
        keras_regkit.dropout_plan(no_dense, after="conv2d", print_fn="stdout")


def test_nested_subclassed_model_is_one_layer():
    class Block(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = L.Dense(3, name="inner")

        def call(self, x):
            return self.dense(x)

    keras.saving.register_keras_serializable("test_dropout")(Block)
    inputs = keras.Input((4,))
    model = randomize(keras.Model(inputs, L.Dense(2, name="out")(Block(name="block")(inputs))))
    before = helpers.snapshot(model)
    # "*" also picks the Dense inside the block, which no copy can reach.
    with pytest.raises(ValueError, match=r"'block/inner' \(Dense\) inside 'block' \(Block\)"):
        keras_regkit.dropout_plan(model, after="*", print_fn=None)
    helpers.assert_unchanged(model, before)
    rows = keras_regkit.dropout_plan(model, after={"*": 0.5, "inner": None}, print_fn=None)
    assert [r["layer"] for r in rows] == ["block", "out"]
    new = keras_regkit.insert_dropout(model, 0.2, after="block")
    assert [type(l).__name__ for l in new.layers[1:]] == ["Block", "Dropout", "Dense"]
    assert_same_outputs(model, new, np.ones((2, 4), "float32"))


class _TwoDense(keras.layers.Layer):
    """A composite layer: two Dense sub-layers, one held in a list."""

    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.first = L.Dense(units, activation="relu", name="first")
        self.rest = [L.Dense(units, name="second")]

    def call(self, x):
        return self.rest[0](self.first(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _with_composite_layer():
    inputs = keras.Input((6,))
    x = L.Dense(5, name="pre")(inputs)
    x = _TwoDense(name="pair")(x)
    return randomize(keras.Model(inputs, L.Dense(2, name="out")(x), name="with_pair"))


_BOTH = r"'pair/first' \(Dense\), 'pair/second' \(Dense\)"


@pytest.mark.parametrize("kwargs, which", [
    ({"after": L.Dense}, _BOTH),
    ({"policy": "dense"}, _BOTH),
    ({"after": {L.Dense: 0.3, "second": None}}, r"'pair/first' \(Dense\)"),
], ids=["after-Dense", "policy-dense", "dict-second-None"])
def test_dense_inside_a_composite_layer_is_refused_and_nothing_changes(kwargs, which):
    model = _with_composite_layer()
    before = helpers.snapshot(model)
    layers = list(model.layers)
    match = rf"(?s)Cannot put dropout.*{which} inside 'pair' \(_TwoDense\).*dropout=.*Received: "
    with pytest.raises(ValueError, match=match):
        keras_regkit.insert_dropout(model, **kwargs)
    with pytest.raises(ValueError, match=match):
        keras_regkit.dropout_plan(model, print_fn=None, **kwargs)
    helpers.assert_unchanged(model, before)
    assert list(model.layers) == layers


def test_composite_layer_inner_layers_left_out_by_none_and_reachable_ones_still_work():
    model = _with_composite_layer()
    before = helpers.snapshot(model)
    after = {L.Dense: 0.3, "first": None, "second": None}
    rows = keras_regkit.dropout_plan(model, after=after, print_fn=None)
    assert [(r["layer"], r["rate"]) for r in rows] == [("pre", 0.3), ("out", None)]
    new = keras_regkit.insert_dropout(model, after=after)
    assert classes_and_rates(new)[1:] == [("Dense", None), ("Dropout", 0.3),
                                          ("_TwoDense", None), ("Dense", None)]
    assert_same_outputs(model, new, np.ones((3, 6), "float32"))
    # Selecting the composite layer itself puts dropout after its output.
    new = keras_regkit.insert_dropout(model, 0.2, after="pair")
    assert [type(l).__name__ for l in new.layers[1:]] == ["Dense", "_TwoDense", "Dropout",
                                                          "Dense"]
    helpers.assert_unchanged(model, before)


def test_multi_head_attention_holds_a_rate_0_dropout_that_is_not_in_the_way():
    def model_with(dropout):
        inputs = keras.Input((3, 8))
        x = L.MultiHeadAttention(2, 4, dropout=dropout, name="attention")(inputs, inputs)
        x = L.Dropout(0.1, name="drop")(L.Dense(8, name="hidden")(x))
        return keras.Model(inputs, L.Dense(2, name="out")(x))

    # Its projections are EinsumDense, not Dense; its own Dropout has rate 0.
    new = keras_regkit.insert_dropout(model_with(0.0), 0.3, after=L.Dense, skip_output=False)
    assert [l.name for l in new.layers if isinstance(l, L.Dropout)] == ["drop", "out_dropout"]
    plain = keras_regkit.remove_dropout(model_with(0.0))
    assert not any(isinstance(l, L.Dropout) for l in plain.layers)
    model = model_with(0.25)
    before = helpers.snapshot(model)
    with pytest.raises(ValueError, match=(
            r"(?s)remove_dropout: cannot remove 1 dropout layer.*'attention/dropout\S*' "
            r"\(Dropout, rate 0.25\) inside 'attention' \(MultiHeadAttention\).*"
            r"dropout=0.0.*Received: model=")):
        keras_regkit.remove_dropout(model)
    helpers.assert_unchanged(model, before)


def _bert_classifier(dropout):
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=8, dropout=dropout)
    inputs = {name: keras.Input((8,), dtype="int32", name=name)
              for name in ("token_ids", "segment_ids", "padding_mask")}
    x = L.Dense(8, activation="relu", name="head_hidden")(backbone(inputs)["pooled_output"])
    return keras.Model(inputs, L.Dense(2, name="logits")(x), name="classifier")


def _bert_inputs():
    rng = np.random.default_rng(0)
    return {"token_ids": rng.integers(0, 50, (2, 8)).astype("int32"),
            "segment_ids": np.zeros((2, 8), "int32"),
            "padding_mask": np.ones((2, 8), "int32")}


def test_kerashub_bert_backbone_in_a_classifier():
    model = _bert_classifier(dropout=0.1)
    before = helpers.snapshot(model)
    inner = r"'bert_backbone/transformer_layer_{i}/feedforward_{part}_dense' \(Dense\)"
    owner = r"inside 'bert_backbone/transformer_layer_{i}' \(TransformerEncoder\)"
    match = (r"(?s)4 layer\(s\) of 'classifier' \(selected by Dense\).*"
             + inner.format(i=0, part="intermediate") + ", "
             + inner.format(i=0, part="output") + " " + owner.format(i=0) + ".*"
             + inner.format(i=1, part="output") + " " + owner.format(i=1)
             + r".*Nothing was changed.*`dropout=`.*BertBackbone")
    with pytest.raises(ValueError, match=match):
        keras_regkit.insert_dropout(model, after=L.Dense)
    with pytest.raises(ValueError, match=match):
        keras_regkit.dropout_plan(model, after=L.Dense, print_fn=None)
    with pytest.raises(ValueError, match=(
            r"(?s)cannot remove 6 dropout layer.*"
            r"'bert_backbone/transformer_layer_0/self_attention_dropout' \(Dropout, rate 0.1\)"
            r".*inside 'bert_backbone/transformer_layer_0' \(TransformerEncoder\)"
            r".*dropout=0.0")):
        keras_regkit.remove_dropout(model)
    helpers.assert_unchanged(model, before)
    # The backbone's own graph layers are reachable, as before.
    new = keras_regkit.insert_dropout(model, 0.2, after={L.Dense: 0.2, "feedforward_*": None})
    rows = keras_regkit.dropout_plan(model, after={L.Dense: 0.2, "feedforward_*": None},
                                     print_fn=None)
    assert [(r["layer"], r["rate"]) for r in rows] == [
        ("head_hidden", 0.2), ("logits", None), ("bert_backbone/pooled_dense", 0.2)]
    assert "head_hidden_dropout" in [l.name for l in new.layers]
    assert_same_outputs(model, new, _bert_inputs())
    helpers.assert_unchanged(model, before)


def test_kerashub_bert_backbone_without_dropout_can_lose_its_graph_dropout():
    model = _bert_classifier(dropout=0.0)
    plain = keras_regkit.remove_dropout(model)
    backbone = plain.get_layer("bert_backbone")
    assert "embeddings_dropout" in [l.name for l in model.get_layer("bert_backbone").layers]
    assert not any(isinstance(l, L.Dropout) for l in backbone.layers)
    assert_same_outputs(model, plain, _bert_inputs())


def test_shared_weightless_layer_on_two_output_paths():
    a, b = keras.Input((4,)), keras.Input((4,))
    act = L.Activation("tanh", name="act")
    model = keras.Model([a, b], [act(L.Dense(3, name="h1")(a)), act(L.Dense(3, name="h2")(b))])
    rows = keras_regkit.dropout_plan(model, after=L.Dense, print_fn=None)
    assert [(r["layer"], r["reason"]) for r in rows] == [
        ("h1", "reaches a model output only through weightless 'act'"),
        ("h2", "reaches a model output only through weightless 'act'")]
