"""Tests for the shared argument checks and layer selectors."""

import math

import keras
import numpy as np
import pytest

from keras_regkit import _layer_tree
from keras_regkit import _selectors
from keras_regkit import _validation


@pytest.mark.parametrize("value", [0, 0.0, 1, 2.5, np.float32(0.5), np.int64(3)])
def test_non_negative_accepts_and_returns_float(value):
    result = _validation.non_negative(value, "factor")
    assert isinstance(result, float) and result == float(value)


@pytest.mark.parametrize(
    "value, error, message",
    [
        (-1, ValueError, "`factor` must be >= 0. Received: factor=-1.0"),
        (math.nan, ValueError, "finite"),
        (math.inf, ValueError, "finite"),
        (True, TypeError, "Received: factor=True"),
        ("0.1", TypeError, "Received: factor='0.1'"),
        (None, TypeError, "Received: factor=None"),
        ([0.1], TypeError, r"Received: factor=\[0.1\]"),
    ],
)
def test_non_negative_refuses(value, error, message):
    with pytest.raises(error, match=message):
        _validation.non_negative(value, "factor")


def test_positive_refuses_zero():
    with pytest.raises(ValueError, match="`max_value` must be > 0. Received: max_value=0.0"):
        _validation.positive(0, "max_value")


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
def test_rate_refuses_outside_unit_interval(value):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        _validation.rate(value)


def test_positive_int():
    assert _validation.positive_int(3, "epochs") == 3
    with pytest.raises(ValueError, match="Received: epochs=0"):
        _validation.positive_int(0, "epochs")
    with pytest.raises(TypeError, match="Received: epochs=2.0"):
        _validation.positive_int(2.0, "epochs")
    with pytest.raises(TypeError, match="Received: epochs=True"):
        _validation.positive_int(True, "epochs")


def test_non_negative_int():
    assert _validation.non_negative_int(0, "start_epoch") == 0
    result = _validation.non_negative_int(np.int64(4), "start_epoch")
    assert type(result) is int and result == 4
    with pytest.raises(ValueError, match="`start_epoch` must be >= 0. Received: start_epoch=-1"):
        _validation.non_negative_int(-1, "start_epoch")
    for value in (2.0, True, None, "3"):
        with pytest.raises(TypeError, match=f"must be an integer >= 0. Received: start_epoch={value!r}"):
            _validation.non_negative_int(value, "start_epoch")


def test_boolean():
    assert _validation.boolean(False, "spatial") is False
    for value in (0, 1, None, "True", np.bool_(True)):
        with pytest.raises(TypeError, match=f"`spatial` must be True or False. Received: spatial={value!r}"):
            _validation.boolean(value, "spatial")


@pytest.mark.parametrize("value", [0, 0.0, 0.5, 1, 1.0])
def test_fraction_accepts_closed_unit_interval(value):
    assert _validation.fraction(value, "l1_ratio") == float(value)


@pytest.mark.parametrize("value", [-1e-9, 1.0000001, 2])
def test_fraction_refuses_outside(value):
    with pytest.raises(ValueError, match=r"`l1_ratio` must be in the interval \[0, 1\]. Received: l1_ratio="):
        _validation.fraction(value, "l1_ratio")


def test_optional_positive_int_and_at_most():
    assert _validation.optional_positive_int(None, "train_limit") is None
    assert _validation.optional_positive_int(np.int64(7), "train_limit") == 7
    with pytest.raises(ValueError, match="Received: train_limit=0"):
        _validation.optional_positive_int(0, "train_limit")
    assert _validation.positive_int_at_most(5, "blocks", 5) == 5
    with pytest.raises(ValueError, match="`blocks` must be between 1 and 5. Received: blocks=6"):
        _validation.positive_int_at_most(6, "blocks", 5)
    with pytest.raises(ValueError, match="Received: blocks=0"):
        _validation.positive_int_at_most(0, "blocks", 5)


def test_print_fn():
    assert _validation.print_fn(None) is None
    assert _validation.print_fn(print) is print
    with pytest.raises(TypeError, match="`print_fn` must be a callable or None. Received: print_fn='x'"):
        _validation.print_fn("x")


def test_one_of():
    assert _validation.one_of("none", "decay_scaling", ("none", "schedule")) == "none"
    with pytest.raises(ValueError, match="'none', 'schedule'. Received: decay_scaling='x'"):
        _validation.one_of("x", "decay_scaling", ("none", "schedule"))


def test_patterns_normalizes_to_list():
    assert _validation.patterns(None, "exclude") == []
    assert _validation.patterns("*/bias", "exclude") == ["*/bias"]
    assert _validation.patterns(("a*", "b"), "exclude") == ["a*", "b"]
    with pytest.raises(TypeError, match="Received: exclude=3"):
        _validation.patterns(3, "exclude")
    with pytest.raises(TypeError, match="non-empty strings"):
        _validation.patterns(["ok", ""], "exclude")


def _nested_model():
    inner = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="inner_dense")], name="inner"
    )
    inputs = keras.Input((4,))
    x = inner(inputs)
    outputs = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs, name="outer")


def test_iter_layers_recurses_into_nested_models():
    names = _layer_tree.layer_names(_nested_model())
    assert names[-3:] == ["inner", "inner_dense", "head"]
    top = _layer_tree.layer_names(_nested_model(), recursive=False)
    assert "inner_dense" not in top and "inner" in top


def test_as_predicate_kinds():
    model = _nested_model()
    layers = list(_layer_tree.iter_layers(model))
    by_glob = _selectors.as_predicate("*dense")
    by_class = _selectors.as_predicate(keras.layers.Dense)
    by_tuple = _selectors.as_predicate((keras.layers.Dense, keras.Sequential))
    by_callable = _selectors.as_predicate(lambda layer: layer.name == "head")
    assert [l.name for l in layers if by_glob(l)] == ["inner_dense"]
    assert [l.name for l in layers if by_class(l)] == ["inner_dense", "head"]
    assert [l.name for l in layers if by_tuple(l)] == ["inner", "inner_dense", "head"]
    assert [l.name for l in layers if by_callable(l)] == ["head"]


@pytest.mark.parametrize("selector", [3, keras.layers.Dense(2), (keras.layers.Dense, 3), ()])
def test_as_predicate_refuses_bad_selectors(selector):
    with pytest.raises(TypeError, match="Received: selector="):
        _selectors.as_predicate(selector)


def test_as_predicate_refuses_empty_glob():
    with pytest.raises(ValueError, match="Received: selector=''"):
        _selectors.as_predicate("")


def test_check_model():
    with pytest.raises(TypeError, match="Received: model=3"):
        _layer_tree.check_model(3)
    with pytest.raises(TypeError, match="keras.Model"):
        _layer_tree.check_model(keras.layers.Dense(2))
