"""A refused call changes nothing: the model or optimizer it was given is as it was.

The calls that change a model (`regularize`, `constrain`) or derive one from
it (`insert_dropout`), and the optimizer wrapper, fail part-way through their
arguments here (the first rule valid, the second not) and must leave their
input exactly as it was (`helpers.snapshot`). The messages of every refusal:
`test_bad_inputs.py`.
"""

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import L1
from keras_regkit import L2
from keras_regkit import DecoupledWeightDecay
from keras_regkit import GroupLasso
from keras_regkit import MaxNorm
from tests import helpers
from tests.package.test_bad_inputs import _models
from tests.package.test_bad_inputs import _NotScalar

Dense = keras.layers.Dense


class _Raises(keras.regularizers.Regularizer):
    """A broken regularizer: raises when called."""

    def __call__(self, x):
        raise RuntimeError("boom")


# Each row: function, rules, keyword arguments, error type, and a message regex
# that names the second rule's selector or layer (the first rule is valid).
FAILING_RULES = [
    pytest.param(
        keras_regkit.regularize, [("dense_a", L2(0.5)), ("conv*", L2())], {},
        ValueError, r"^Rule 'conv\*' of `rules` matches no layer of model 'net'",
        id="regularize-second-rule-matches-nothing",
    ),
    pytest.param(
        keras_regkit.regularize, [("dense_a", L2(0.5)), ("dense_b", "l2")], {},
        TypeError, r"^The value of rule 'dense_b' must be a `keras.regularizers.Regularizer`"
        r".*Received: 'l2' of type str",
        id="regularize-second-value-not-regularizer",
    ),
    pytest.param(
        keras_regkit.regularize, [(Dense, L2(0.5)), ("dense_b", _NotScalar())], {},
        ValueError, r"for 'kernel' of layer 'dense_b' .* must return a scalar",
        id="regularize-second-regularizer-broken",
    ),
    # `target` applies to every layer rule; a rule on a variable path ignores it,
    # so the first rule is valid and only `logits` lacks the 'gamma' weight.
    pytest.param(
        keras_regkit.regularize, [("dense_a/kernel", L2(0.5)), ("logits", GroupLasso(0.1))],
        {"target": ["kernel", "gamma"]}, ValueError,
        r"^Layer 'logits' \(Dense, selected by rule 'logits'\) has no 'gamma' weight",
        id="regularize-second-target-missing",
    ),
    pytest.param(
        keras_regkit.constrain, [("dense_a", MaxNorm(0.1)), ("dense_b", MaxNorm(1.0, axis=4))],
        {}, ValueError, r"for 'kernel' of layer 'dense_b' .*Received: axis=4",
        id="constrain-second-axis-out-of-rank",
    ),
    pytest.param(
        keras_regkit.regularize, [("dense_a", L2(0.5)), (3.5, L2(0.3))], {},
        TypeError, r"Received: selector=3.5", id="regularize-second-selector-not-str",
    ),
    pytest.param(
        keras_regkit.regularize, [("dense_a", L2(0.5)), ("logits", _Raises())], {},
        ValueError, r"for 'kernel' of layer 'logits' .* failed on a zero tensor.*RuntimeError: boom",
        id="regularize-second-regularizer-raises",
    ),
    pytest.param(
        keras_regkit.constrain, [("dense_a", MaxNorm(0.1)), ("nothing*", MaxNorm(1.0))], {},
        ValueError, r"^Rule 'nothing\*' of `rules` matches no layer of model 'net'",
        id="constrain-second-rule-matches-nothing",
    ),
    pytest.param(
        keras_regkit.constrain, [(Dense, None), ("logits", L1(0.1))], {},
        TypeError, r"^The value of rule 'logits' must be a `keras.constraints.Constraint`"
        r".*of type L1",
        id="constrain-second-value-not-constraint",
    ),
]


@pytest.mark.parametrize(("function", "rules", "kwargs", "error", "message"), FAILING_RULES)
def test_failed_rules_change_nothing(function, rules, kwargs, error, message):
    """The first rule is valid and would change the model; the second fails."""
    function(_models()["seq"], rules[:1], **kwargs)  # the first rule alone is accepted
    model = _models()["seq"]
    # A model with some state already: one regularizer and one constraint.
    keras_regkit.regularize(model, {"dense_b": L1(0.25)})
    keras_regkit.constrain(model, {"logits": MaxNorm(2.0)})
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((2, 4), "float32")
    y = np.zeros((2, 2), "float32")
    model.train_on_batch(x, y)
    before = helpers.snapshot(model)
    with pytest.raises(error, match=message):
        function(model, rules, **kwargs)
    helpers.assert_unchanged(model, before)
    # Still trains with the old penalty: one regularizer in the losses.
    model.train_on_batch(x, y)
    assert len(model.losses) == 1
    assert model.get_layer("dense_b").kernel.regularizer.l1 == 0.25


@pytest.mark.parametrize(
    "kwargs, message",
    [
        pytest.param({"rate": 1.0, "after": Dense},
                     r"`rate` must be in the interval \[0, 1\)\. Received: rate=1.0",
                     id="rate-one"),
        pytest.param({"after": {"dense_a": 0.2, "conv*": 0.3}},
                     r"^`after` selector 'conv\*' matches no layer of 'net'",
                     id="second-selector-no-match"),
        pytest.param({"after": {"dense_a": 0.2, "dense_b": 2.0}},
                     r"Received: after\['dense_b'\]=2.0", id="second-rate-bad"),
        pytest.param({"policy": "nope"}, r"Received: policy='nope'", id="unknown-policy"),
    ],
)
def test_failed_insert_dropout_leaves_model_alone(kwargs, message):
    model = _models()["seq"]
    before = helpers.snapshot(model)
    layer_ids = [id(layer) for layer in model.layers]
    with pytest.raises(ValueError, match=message):
        keras_regkit.insert_dropout(model, **kwargs)
    helpers.assert_unchanged(model, before)
    assert [id(layer) for layer in model.layers] == layer_ids


def test_failed_optimizer_wrapper_leaves_inner_alone():
    inner = keras.optimizers.Adam(learning_rate=1e-3)
    config = inner.get_config()
    for bad, message in (
        ({"weight_decay": -1.0}, r"Received: weight_decay=-1.0"),
        ({"weight_decay": 1e-4, "decay_scaling": "x"}, r"Received: decay_scaling='x'"),
    ):
        with pytest.raises(ValueError, match=message):
            DecoupledWeightDecay(inner, **bad)
    assert inner.get_config() == config
    assert not inner.built
    # And the same inner optimizer is still accepted afterwards.
    DecoupledWeightDecay(inner, weight_decay=1e-4)
