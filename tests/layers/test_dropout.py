"""Tests for keras_regkit.insert_dropout and remove_dropout: layouts, copies, outputs, save/load."""

import warnings

import keras
import numpy as np
import pytest
from keras import layers as L

import keras_regkit
from keras_regkit import dropout as kd
from tests import helpers
from tests.layers.dropout_problems import assert_same_outputs
from tests.layers.dropout_problems import classes_and_rates
from tests.layers.dropout_problems import vgg_like
from tests.helpers import randomize


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


def test_names_stay_unique_and_compile_is_carried():
    model = keras.Sequential([keras.Input((4,)), L.Dense(8, name="d"),
                              L.Identity(name="d_dropout"), L.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    new = keras_regkit.insert_dropout(model, 0.5, after="d")
    assert [l.name for l in new.layers][:3] == ["d", "d_dropout_1", "d_dropout"]
    assert new.compiled and new.loss == "mse"
    assert new.optimizer is not model.optimizer
