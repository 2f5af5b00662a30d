"""Tests for the errors of regularize/constrain: bad selectors, values, targets; nothing changed on failure."""

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import L2, MaxNorm
from tests.rules_saving.rules_problems import mlp as _mlp
from tests.rules_saving.rules_problems import nested_model as _nested_model

Dense = keras.layers.Dense


# --- errors ------------------------------------------------------------------------


def test_selector_matching_nothing_lists_layer_names():
    model = _nested_model()
    with pytest.raises(ValueError, match="'conv\\*' of `rules` matches no layer") as info:
        keras_regkit.regularize(model, {"conv*": L2(0.1)})
    for name in ("block", "inner_dense", "inner_out", "head"):
        assert repr(name) in str(info.value)


def test_missing_weight_names_layer_and_target():
    model = _mlp()
    with pytest.raises(ValueError, match="Layer 'hidden_1'.*no 'embeddings' weight"):
        keras_regkit.regularize(model, {"hidden_1": L2(0.1)}, target="embeddings")
    no_bias = _mlp(use_bias=False)
    with pytest.raises(ValueError, match="Layer 'out'.*no 'bias' weight.*target='bias'"):
        keras_regkit.constrain(no_bias, {"out": MaxNorm(1.0)}, target="bias")
    # A nested model selected as a whole stands for the layers inside it ...
    nested = keras_regkit.regularize(_nested_model(), {"block": L2(0.1)})
    block = nested.get_layer("block")
    assert [type(v.regularizer) for v in block.weights] == [L2, type(None)] * 2
    assert nested.get_layer("head").kernel.regularizer is None
    # ... and raises, naming it, when none of them has the weight.
    with pytest.raises(ValueError, match="Layer 'block'.*no 'embeddings' weight"):
        keras_regkit.regularize(_nested_model(), {keras.Model: L2(0.1)}, target="embeddings")


@pytest.mark.parametrize("value", ["l2", lambda w: 0.0, 0.01, MaxNorm(1.0)])
def test_regularize_rejects_non_regularizer_values(value):
    with pytest.raises(TypeError, match="must be a `keras.regularizers.Regularizer`"):
        keras_regkit.regularize(_mlp(), {"out": value})


@pytest.mark.parametrize("value", ["max_norm", L2(0.1), lambda w: w])
def test_constrain_rejects_non_constraint_values(value):
    with pytest.raises(TypeError, match="must be a `keras.constraints.Constraint`"):
        keras_regkit.constrain(_mlp(), {"out": value})


def test_bad_selector_model_rules_and_target_types():
    model = _mlp()
    with pytest.raises(TypeError, match="Received: selector=42"):
        keras_regkit.regularize(model, {42: L2(0.1)})
    with pytest.raises(TypeError, match="must select layers, not be one"):
        keras_regkit.regularize(model, [(model.get_layer("out"), L2(0.1))])
    with pytest.raises(ValueError, match="non-empty glob"):
        keras_regkit.regularize(model, {"": L2(0.1)})
    with pytest.raises(TypeError, match="must be a `keras.Model`"):
        keras_regkit.regularize(Dense(2), {"out": L2(0.1)})
    with pytest.raises(TypeError, match="must be a `keras.Model`"):
        keras_regkit.constrain("model", {"out": MaxNorm()})
    with pytest.raises(TypeError, match="must be a `keras.Model`"):
        keras_regkit.summary(np.zeros(3))
    with pytest.raises(TypeError, match="`rules` must be a dict"):
        keras_regkit.regularize(model, {"out"})
    with pytest.raises(TypeError, match="pairs"):
        keras_regkit.regularize(model, ("out", L2(0.1)))
    with pytest.raises(ValueError, match="at least one rule"):
        keras_regkit.regularize(model, {})
    with pytest.raises(TypeError, match="Received: target=3"):
        keras_regkit.regularize(model, {"out": L2(0.1)}, target=3)
    with pytest.raises(ValueError, match="Received: target=\\[\\]"):
        keras_regkit.regularize(model, {"out": L2(0.1)}, target=[])
    with pytest.raises(ValueError, match="Received: target=''"):
        keras_regkit.regularize(model, {"out": L2(0.1)}, target="")
    with pytest.raises(TypeError, match="print_fn"):
        keras_regkit.sparsity(model, print_fn="stdout")


def test_dry_run_failures_raise_before_mutation():
    model = _mlp()
    with pytest.raises(ValueError, match="'hidden_1'.*shape \\(4, 5\\).*axis"):
        keras_regkit.constrain(model, {"hidden_1": MaxNorm(1.0, axis=5)})

    class PerWeight(keras.regularizers.Regularizer):
        def __call__(self, w):
            return w  # not a scalar

    with pytest.raises(ValueError, match="must return a scalar"):
        keras_regkit.regularize(model, {"out": PerWeight()})

    class Flatten(keras.constraints.Constraint):
        def __call__(self, w):
            return keras.ops.reshape(w, (-1,))

    with pytest.raises(ValueError, match="same shape"):
        keras_regkit.constrain(model, {"out": Flatten()})
    assert model.losses == [] and all(v.constraint is None for v in model.weights)
