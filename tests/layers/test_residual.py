"""Tests for keras_regkit.residual: DropPath and DropBlock placement on residual networks.

The keras.applications tests build their networks with `weights=None` on
32x32 inputs; they are marked `slow` (a few seconds each):
`pytest -m "not slow"` leaves them out.
"""

import keras
import numpy as np
import pytest
from keras import layers as L

import keras_regkit
from keras_regkit import DropBlock2D
from keras_regkit import DropPath
from tests import helpers
from tests.helpers import randomize


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def assert_same_inference(original, new, x, atol=1e-6):
    np.testing.assert_allclose(_np(new(x, training=False)), _np(original(x, training=False)),
                               atol=atol, rtol=0)


def assert_weights_kept(original, new):
    for layer in original.layers:
        if isinstance(layer, L.InputLayer) or not layer.weights:
            continue  # inputs are renamed after their tensors; replaced layers go
        copy = new.get_layer(layer.name)
        assert len(copy.weights) == len(layer.weights), layer.name
        for a, b in zip(copy.get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(a, b)


def dense_resnet(blocks=3, width=6, projection_at=(), name="dense_resnet"):
    """`x -> stem -> blocks x (x + fc_i(fc_i_in(x)))`; projection shortcuts at `projection_at`."""
    inputs = keras.Input((width,), name="x")
    x = L.Dense(width, name="stem")(inputs)
    for i in range(1, blocks + 1):
        branch = L.Dense(width, activation="tanh", name=f"fc{i}_in")(x)
        branch = L.Dense(width, name=f"fc{i}")(branch)
        shortcut = L.Dense(width, name=f"proj{i}")(x) if i in projection_at else x
        # Shortcut second for odd blocks: the order of the Add inputs must not matter.
        pair = [shortcut, branch] if i % 2 == 0 else [branch, shortcut]
        x = L.Add(name=f"add{i}")(pair)
    return randomize(keras.Model(inputs, x, name=name))


def drop_paths(model):
    found = []

    def walk(m):
        for layer in m.layers:
            if isinstance(layer, DropPath):
                found.append(layer)
            if isinstance(layer, keras.Model):
                walk(layer)
    walk(model)
    return found


def merge_inputs(model, name):
    """The layers feeding the merge `name` (in input order)."""
    node = model.get_layer(name)._inbound_nodes[0]
    return [t._keras_history[0] for t in node.input_tensors]


# ---------------------------------------------------------------- DropPath placement


def test_linear_rates_on_the_branch_never_the_shortcut():
    model = dense_resnet(4, projection_at=(1, 3))
    before = helpers.snapshot(model)
    new = keras_regkit.insert_droppath(model, max_rate=0.2)
    helpers.assert_unchanged(model, before)
    # Block l of L = 4 gets 0.2 * l / 4.
    assert [d.name for d in drop_paths(new)] == [f"add{i}_droppath" for i in range(1, 5)]
    assert [d.rate for d in drop_paths(new)] == pytest.approx([0.05, 0.1, 0.15, 0.2])
    for i in range(1, 5):
        feeding = merge_inputs(new, f"add{i}")
        branch_at = 0 if i % 2 else 1
        assert isinstance(feeding[branch_at], DropPath)
        assert feeding[branch_at]._inbound_nodes[0].input_tensors[0]._keras_history[0].name == f"fc{i}"
        assert not isinstance(feeding[1 - branch_at], DropPath)
    x = np.random.default_rng(1).normal(size=(5, 6)).astype("float32")
    assert_same_inference(model, new, x)
    assert_weights_kept(model, new)


def test_in_training_each_sample_keeps_its_shortcut():
    """One block y = x + f(x): per sample, y is x + f(x) / (1 - rate) or exactly x."""
    inputs = keras.Input((4,))
    branch = L.Dense(4, name="f")(inputs)
    model = randomize(keras.Model(inputs, L.Add(name="add")([inputs, branch])))
    new = keras_regkit.insert_droppath(model, max_rate=0.5, seed=3)
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    f = _np(model.get_layer("f")(x))
    out = _np(new(x, training=True))
    kept = np.all(np.isclose(out, x + f / 0.5, atol=1e-5), axis=1)
    dropped = np.all(out == x, axis=1)
    assert np.all(kept ^ dropped)
    assert 10 < dropped.sum() < 54  # ~half (binomial, 64 draws)


def test_uniform_schedule_and_seeds():
    new = keras_regkit.insert_droppath(dense_resnet(3), 0.3, "uniform", seed=10)
    assert [d.rate for d in drop_paths(new)] == pytest.approx([0.3, 0.3, 0.3])
    assert [d.seed for d in drop_paths(new)] == [11, 12, 13]


def test_plan_table_matches_the_insertion():
    model = dense_resnet(2, projection_at=(2,))
    lines = []
    rows = keras_regkit.droppath_plan(model, 0.1, print_fn=lines.append)
    assert lines[0] == "DropPath plan for 'dense_resnet': 2 residual blocks, 0 skipped"
    assert lines[1].split() == ["block", "merge", "branch", "shortcut", "rate", "note"]
    assert lines[2].split() == ["1", "add1", "fc1", "identity", "0.05"]
    assert lines[3].split() == ["2", "add2", "fc2", "projection", "0.1"]
    assert [(r["block"], r["merge"], r["rate"]) for r in rows] == [
        (1, "add1", 0.05), (2, "add2", 0.1)]
    assert keras_regkit.droppath_plan(model, 0.1, print_fn=None) == rows
    new = keras_regkit.insert_droppath(model, 0.1)
    assert [d.rate for d in drop_paths(new)] == [r["rate"] for r in rows]


def test_nested_models_are_numbered_in_call_order():
    inner = dense_resnet(2, name="inner")
    inputs = keras.Input((6,))
    x = L.Dense(6, name="pre")(inputs)
    x = L.Add(name="outer_add")([x, L.Dense(6, name="outer_fc")(x)])
    x = inner(x)
    model = randomize(keras.Model(inputs, L.Dense(2, name="head")(x)))
    rows = keras_regkit.droppath_plan(model, 0.3, print_fn=None)
    assert [r["merge"] for r in rows] == ["outer_add", "inner/add1", "inner/add2"]
    assert [r["rate"] for r in rows] == pytest.approx([0.1, 0.2, 0.3])
    new = keras_regkit.insert_droppath(model, 0.3)
    assert [d.name for d in drop_paths(new.get_layer("inner"))] == [
        "add1_droppath", "add2_droppath"]
    x = np.random.default_rng(2).normal(size=(3, 6)).astype("float32")
    assert_same_inference(model, new, x)


def test_adds_that_are_not_residual_are_skipped_and_listed():
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    ha, hb = L.Dense(3, name="ha")(a), L.Dense(3, name="hb")(b)
    two_inputs = L.Add(name="sum_inputs")([ha, hb])            # no common ancestor
    same = L.Add(name="twin")([L.Dense(3, name="t1")(a), L.Dense(3, name="t2")(a)])  # equal depth
    x = L.Add(name="res")([two_inputs, L.Dense(3, name="fc")(two_inputs)])
    x = L.Add(name="three")([x, same, ha])                     # three inputs
    model = keras.Model([a, b], x)
    rows = {r["merge"]: r for r in keras_regkit.droppath_plan(model, 0.1, print_fn=None)}
    assert rows["sum_inputs"]["reason"] == "its inputs share no ancestor (not a residual block)"
    assert "no shortcut to tell from the branch" in rows["twin"]["reason"]
    assert rows["three"]["reason"] == "has 3 inputs (a residual merge has two)"
    assert not rows["res"]["skipped"] and rows["res"]["rate"] == 0.1
    with pytest.raises(ValueError, match="has no residual merge.*'twin': both inputs"):
        keras_regkit.insert_droppath(keras.Model(a, same))


def test_model_without_any_add_is_refused():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, L.Dense(2)(L.Dense(3)(inputs)))
    with pytest.raises(ValueError, match="has no residual merge.*found no Add at all.*"
                                         "Received: model=<Functional"):
        keras_regkit.insert_droppath(model)


def test_sequential_and_subclassed_models_are_refused():
    sequential = keras.Sequential([keras.Input((3,)), L.Dense(3)])
    with pytest.raises(TypeError, match="`model` must be a functional model: in a "
                                        "Sequential.*Received: model=<Sequential"):
        keras_regkit.insert_droppath(sequential)

    class Residual(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = L.Dense(3)

        def call(self, x):
            return x + self.fc(x)

    subclassed = Residual()
    subclassed(np.ones((1, 3), "float32"))
    for function in (keras_regkit.insert_droppath, keras_regkit.insert_dropblock,
                     keras_regkit.remove_droppath):
        with pytest.raises(TypeError, match="subclassed Residual.*Received: model="):
            function(subclassed)
    with pytest.raises(TypeError, match="`model` must be a `keras.Model`. Received: model=3"):
        keras_regkit.insert_droppath(3)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"max_rate": 1.0}, ValueError, r"`max_rate` must be in the interval \[0, 1\). Received: max_rate=1.0"),
    ({"max_rate": -0.5}, ValueError, "Received: max_rate=-0.5"),
    ({"schedule": "cosine"}, ValueError, "Received: schedule='cosine'"),
    ({"seed": "1"}, TypeError, "Received: seed='1'"),
    ({"print_fn": "print"}, TypeError, "Received: print_fn='print'"),
])
def test_bad_droppath_arguments_change_nothing(kwargs, error, match):
    model = dense_resnet(2)
    before = helpers.snapshot(model)
    function = keras_regkit.droppath_plan if "print_fn" in kwargs else keras_regkit.insert_droppath
    with pytest.raises(error, match=match):
        function(model, **kwargs)
    helpers.assert_unchanged(model, before)


def test_remove_droppath_round_trip_and_reinsert():
    model = dense_resnet(3)
    with_path = keras_regkit.insert_droppath(model, 0.1)
    again = keras_regkit.insert_droppath(with_path, 0.3)  # replaces, does not stack
    assert [d.rate for d in drop_paths(again)] == pytest.approx([0.1, 0.2, 0.3])
    rows = keras_regkit.droppath_plan(with_path, 0.3, print_fn=None)
    assert [r["replaces"] for r in rows] == ["add1_droppath", "add2_droppath", "add3_droppath"]
    removed = keras_regkit.remove_droppath(again)
    assert [type(layer) for layer in removed.layers] == [type(layer) for layer in model.layers]
    x = np.random.default_rng(3).normal(size=(4, 6)).astype("float32")
    assert_same_inference(model, removed, x)
    with pytest.warns(UserWarning, match="has no DropPath layer"):
        keras_regkit.remove_droppath(model)


def test_trains_with_droppath():
    model = keras_regkit.insert_droppath(dense_resnet(2), 0.2)
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    history = model.fit(x, x, epochs=2, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_operator_merges_keep_a_mixed_precision_model_mixed():
    """`x + y` (a keras.ops operation, as in ConvNeXt) has no dtype policy of its own."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    inputs = keras.Input((8, 8, 4))
    x = L.Conv2D(4, 3, padding="same", name="stem")(inputs)
    y = x + L.Conv2D(4, 3, padding="same", name="branch")(x)
    model = keras.Model(inputs, L.GlobalAveragePooling2D()(y))  # an op on the output path
    keras.mixed_precision.set_global_policy("float32")
    paths = drop_paths(keras_regkit.insert_droppath(model, 0.1))
    blocks = drop_blocks(keras_regkit.insert_dropblock(model, 0.1, 3, stages=1))
    assert [layer.dtype_policy.name for layer in paths] == ["mixed_float16"]
    assert len(blocks) == 2 and {b.dtype_policy.name for b in blocks} == {"mixed_float16"}


# ---------------------------------------------------------------- keras.applications


APPLICATIONS = {
    # name: (constructor, residual blocks)
    "ResNet50": (keras.applications.ResNet50, 16),
    "ResNet50V2": (keras.applications.ResNet50V2, 16),
    "MobileNetV2": (keras.applications.MobileNetV2, 10),
    "EfficientNetB0": (keras.applications.EfficientNetB0, 9),
    "ConvNeXtTiny": (keras.applications.ConvNeXtTiny, 18),  # `x + y`, not Add layers
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(APPLICATIONS))
def test_keras_applications(name):
    constructor, blocks = APPLICATIONS[name]
    model = constructor(weights=None, input_shape=(32, 32, 3))
    rows = keras_regkit.droppath_plan(model, 0.1, print_fn=None)
    assert sum(not r["skipped"] for r in rows) == blocks
    new = keras_regkit.insert_droppath(model, 0.1)
    paths = drop_paths(new)
    assert len(paths) == blocks
    assert paths[-1].rate == pytest.approx(0.1) and paths[0].rate == pytest.approx(0.1 / blocks)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert_same_inference(model, new, x)
    assert_weights_kept(model, new)
    if name == "EfficientNetB0":
        # Its own stochastic depth (per-sample Dropout before each Add) is replaced.
        assert all(r["replaces"] == r["merge"].replace("_add", "_drop") for r in rows)
        assert [layer.name for layer in new.layers if isinstance(layer, L.Dropout)] == [
            "top_dropout"]


# ---------------------------------------------------------------- DropBlock placement


def conv_resnet(stage_channels=(4, 8, 16), blocks=2, data_format="channels_last"):
    """A small ResNet: per block conv-BN-ReLU-conv-BN + shortcut, ReLU after the Add."""
    shape = (16, 16, 3) if data_format == "channels_last" else (3, 16, 16)
    inputs = keras.Input(shape)
    kw = {"padding": "same", "data_format": data_format}
    axis = -1 if data_format == "channels_last" else 1
    x = L.Conv2D(stage_channels[0], 3, name="stem", **kw)(inputs)
    for s, channels in enumerate(stage_channels, start=1):
        for b in range(1, blocks + 1):
            p = f"s{s}b{b}"
            strides = 2 if s > 1 and b == 1 else 1
            shortcut = x
            if strides > 1:
                shortcut = L.Conv2D(channels, 1, strides=strides, name=f"{p}_proj", **kw)(x)
            y = L.Conv2D(channels, 3, strides=strides, name=f"{p}_conv1", **kw)(x)
            y = L.BatchNormalization(axis=axis, name=f"{p}_bn1")(y)
            y = L.ReLU(name=f"{p}_relu1")(y)
            y = L.Conv2D(channels, 3, name=f"{p}_conv2", **kw)(y)
            y = L.BatchNormalization(axis=axis, name=f"{p}_bn2")(y)
            x = L.ReLU(name=f"{p}_out")(L.Add(name=f"{p}_add")([shortcut, y]))
    x = L.GlobalAveragePooling2D(data_format=data_format)(x)
    return randomize(keras.Model(inputs, L.Dense(2, name="head")(x), name="conv_resnet"))


def drop_blocks(model):
    return [layer for layer in model.layers if isinstance(layer, DropBlock2D)]


def test_dropblock_goes_after_conv_groups_and_shortcuts_of_the_last_stages():
    model = conv_resnet()
    before = helpers.snapshot(model)
    new = keras_regkit.insert_dropblock(model, rate=0.15, block_size=3, seed=0)
    helpers.assert_unchanged(model, before)
    expected = []
    for s in (2, 3):  # the last two of three stages; stage 1 untouched
        for b in (1, 2):
            p = f"s{s}b{b}"
            expected += [f"{p}_add_shortcut_dropblock", f"{p}_relu1_dropblock",
                         f"{p}_bn2_dropblock"]
    layers = drop_blocks(new)
    assert sorted(layer.name for layer in layers) == sorted(expected)
    assert {(layer.rate, layer.block_size, layer.data_format) for layer in layers} == {
        (0.15, 3, "channels_last")}
    assert sorted(layer.seed for layer in layers) == list(range(1, 13))
    # After the group's end: relu1 feeds the DropBlock, which feeds conv2.
    assert merge_inputs(new, "s2b1_conv2")[0].name == "s2b1_relu1_dropblock"
    # The shortcut's DropBlock sits on the Add's shortcut input only.
    feeding = merge_inputs(new, "s3b2_add")
    assert feeding[0].name == "s3b2_add_shortcut_dropblock"
    assert feeding[1].name == "s3b2_bn2_dropblock"
    assert merge_inputs(new, "s3b2_conv1")[0].name == "s3b1_out"
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    assert_same_inference(model, new, x)
    assert_weights_kept(model, new)


def test_dropblock_options_and_plan():
    model = conv_resnet()
    lines = []
    rows = keras_regkit.dropblock_plan(model, 0.1, 5, stages=1, shortcut=False,
                                       print_fn=lines.append)
    assert lines[0] == "DropBlock plan for 'conv_resnet': 4 inserted, 0 skipped"
    assert lines[1].split() == ["stage", "block", "position", "layer", "rate",
                                "block_size", "note"]
    assert [(r["stage"], r["block"], r["position"], r["layer"]) for r in rows] == [
        (3, 5, "after", "s3b1_relu1"), (3, 5, "after", "s3b1_bn2"),
        (3, 6, "after", "s3b2_relu1"), (3, 6, "after", "s3b2_bn2")]
    new = keras_regkit.insert_dropblock(model, 0.1, 5, stages=1, shortcut=False)
    assert sorted(layer.name for layer in drop_blocks(new)) == sorted(
        f"{r['layer']}_dropblock" for r in rows)
    # More stages than the model has: all of them.
    assert len(keras_regkit.dropblock_plan(model, stages=9, print_fn=None)) == 3 * 2 * 3
    # Inserting again skips what already has DropBlock.
    again = keras_regkit.dropblock_plan(new, 0.1, 5, stages=1, shortcut=False, print_fn=None)
    assert all(r["skipped"] and r["reason"] == "already followed by DropBlock2D" for r in again)


def test_dropblock_takes_the_convolutions_data_format():
    model = conv_resnet(data_format="channels_first")
    new = keras_regkit.insert_dropblock(model, 0.1, 3, stages=1)
    assert {layer.data_format for layer in drop_blocks(new)} == {"channels_first"}
    assert len(drop_blocks(new)) == 6


def test_remove_dropblock_round_trip():
    model = conv_resnet()
    new = keras_regkit.remove_dropblock(keras_regkit.insert_dropblock(model, 0.1, 3))
    assert [layer.name for layer in new.layers][1:] == [layer.name for layer in model.layers][1:]
    x = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype("float32")
    assert_same_inference(model, new, x)


def test_dropblock_and_droppath_together_train():
    model = keras_regkit.insert_droppath(conv_resnet((2, 4), blocks=1), 0.2)
    model = keras_regkit.insert_dropblock(model, 0.1, 3)
    assert len(drop_paths(model)) == 2 and len(drop_blocks(model)) == 6
    model.compile("adam", keras.losses.MeanSquaredError(), jit_compile=False)
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype("float32")
    history = model.fit(x, np.zeros((8, 2)), epochs=2, verbose=0,
                        callbacks=[keras_regkit.DropBlockSchedule()])
    assert np.all(np.isfinite(history.history["loss"]))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"rate": 1.0}, ValueError, "Received: rate=1.0"),
    ({"block_size": 0}, ValueError, "Received: block_size=0"),
    ({"stages": 0}, ValueError, "Received: stages=0"),
    ({"shortcut": "yes"}, TypeError, "Received: shortcut='yes'"),
])
def test_bad_dropblock_arguments_change_nothing(kwargs, error, match):
    model = conv_resnet(blocks=1)
    before = helpers.snapshot(model)
    with pytest.raises(error, match=match):
        keras_regkit.insert_dropblock(model, **kwargs)
    helpers.assert_unchanged(model, before)


def test_dropblock_needs_2d_residual_blocks():
    with pytest.raises(ValueError, match="no residual block on 2D feature maps"):
        keras_regkit.insert_dropblock(dense_resnet(2))


@pytest.mark.slow
def test_dropblock_on_resnet50_groups_3_and_4():
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3))
    rows = keras_regkit.dropblock_plan(model, print_fn=None)
    # conv4_x (6 blocks) and conv5_x (3 blocks): 3 conv groups + the shortcut each.
    assert len(rows) == 9 * 4 and not any(r["skipped"] for r in rows)
    assert {r["layer"].split("_")[0] for r in rows} == {"conv4", "conv5"}
    new = keras_regkit.insert_dropblock(model)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert_same_inference(model, new, x)


def test_exported_from_the_package():
    for name in ("insert_droppath", "droppath_plan", "remove_droppath",
                 "insert_dropblock", "dropblock_plan", "remove_dropblock"):
        assert name in keras_regkit.__all__
        assert getattr(keras_regkit, name) is getattr(keras_regkit.residual, name)
