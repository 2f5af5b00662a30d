"""Tests for keras_regkit.dropout_plan and layer selection: rows, rates, selectors, skips, bad arguments."""

import keras
import numpy as np
import pytest
from keras import layers as L

import keras_regkit
from tests import helpers
from tests.layers.dropout_problems import classes_and_rates
from tests.layers.dropout_problems import vgg_like


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


def test_shared_weightless_layer_on_two_output_paths():
    a, b = keras.Input((4,)), keras.Input((4,))
    act = L.Activation("tanh", name="act")
    model = keras.Model([a, b], [act(L.Dense(3, name="h1")(a)), act(L.Dense(3, name="h2")(b))])
    rows = keras_regkit.dropout_plan(model, after=L.Dense, print_fn=None)
    assert [(r["layer"], r["reason"]) for r in rows] == [
        ("h1", "reaches a model output only through weightless 'act'"),
        ("h2", "reaches a model output only through weightless 'act'")]
