"""Every helper that rebuilds a model keeps every rule on it (issue 20, item 1).

A rule set by `regularize`/`constrain` on a weight inside a composite layer
(here the projections of a `MultiHeadAttention`) is held by the variable and
the rule store only: the layer is rebuilt from its constructor arguments.
`insert_dropout`, `remove_dropout`, `insert_droppath`, `insert_dropblock` and
the removals copy layers from their configs, so they must set those rules
again, with the same values, and record them for `keras_regkit.load_model`.
"""

import warnings

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import _carry
from tests import helpers


def _residual_attention_net():
    """A functional net with a residual merge, a conv stage and a MultiHeadAttention."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    y = keras.layers.Conv2D(4, 3, padding="same", name="branch")(x)
    x = keras.layers.Add(name="merge")([x, y])
    x = keras.layers.Reshape((64, 4), name="tokens")(x)
    x = keras.layers.MultiHeadAttention(2, 2, name="attention")(x, x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, outputs, name="net")


def _ruled_net():
    model = _residual_attention_net()
    helpers.randomize(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", keras_regkit.RulesNeedRestoreWarning)
        keras_regkit.regularize(model, {"*/attention/*/kernel": keras_regkit.L2(0.01),
                                        "logits": keras_regkit.L1(0.1)})
        keras_regkit.constrain(model, {"*/attention/*/kernel": keras_regkit.MaxNorm(2.0)})
    return model


def _penalties(model):
    return sorted(float(loss) for loss in model.losses)


def _constraints(model):
    return sorted((v.path.split("/", 1)[-1], v.constraint.get_config()["max_value"])
                  for v in model.weights if v.constraint is not None)


REBUILDS = {
    "insert_dropout": lambda m: keras_regkit.insert_dropout(m, 0.2, after="pool"),
    "remove_dropout": lambda m: keras_regkit.remove_dropout(
        keras_regkit.insert_dropout(m, 0.2, after="pool")),
    "insert_droppath": lambda m: keras_regkit.insert_droppath(m, 0.1),
    "remove_droppath": lambda m: keras_regkit.remove_droppath(
        keras_regkit.insert_droppath(m, 0.1)),
    "insert_dropblock": lambda m: keras_regkit.insert_dropblock(
        m, 0.1, block_size=3, stages=1),
}


@pytest.mark.parametrize("rebuild", REBUILDS.values(), ids=list(REBUILDS))
def test_every_rebuild_keeps_every_rule_with_its_value(rebuild):
    model = _ruled_net()
    # 4 kernels of the attention (query, key, value, output) and the logits.
    assert len(model.losses) == 5
    new = rebuild(model)
    assert _penalties(new) == pytest.approx(_penalties(model), rel=1e-6)
    assert _constraints(new) == _constraints(model) and len(_constraints(new)) == 4
    assert len(model.losses) == 5  # the original is left as it was


def test_rebuilt_model_saves_the_carried_rules_for_load_model(tmp_path):
    model = _ruled_net()
    new = keras_regkit.insert_dropout(model, 0.2, after="pool")
    path = str(tmp_path / "rebuilt.keras")
    new.save(path)
    assert len(keras.saving.load_model(path).losses) == 1  # only `logits` in its config
    loaded = keras_regkit.load_model(path)
    assert _penalties(loaded) == pytest.approx(_penalties(model), rel=1e-6)
    assert _constraints(loaded) == _constraints(model)


def test_rules_survive_a_chain_of_helpers_and_a_fresh_process_reload(tmp_path):
    # A rule set, then dropout inserted, DropPath placed, then saved and loaded elsewhere.
    model = _ruled_net()
    new = keras_regkit.insert_droppath(keras_regkit.insert_dropout(model, 0.2, after="pool"), 0.1)
    path = str(tmp_path / "chain.keras")
    new.save(path)
    code = f"""
import keras_regkit
model = keras_regkit.load_model({path!r})
print(sorted(round(float(loss), 6) for loss in model.losses))
"""
    out = helpers.run_python(code)
    assert out.strip().splitlines()[-1] == str(sorted(round(p, 6) for p in _penalties(model)))


def test_a_removed_rule_stays_removed():
    model = _ruled_net()
    keras_regkit.regularize(model, {"*/attention/query/kernel": None})
    new = keras_regkit.insert_dropout(model, 0.2, after="pool")
    assert len(new.losses) == 4
    assert _penalties(new) == pytest.approx(_penalties(model), rel=1e-6)


def test_training_the_rebuilt_model_uses_the_carried_penalty():
    model = _ruled_net()
    new = keras_regkit.insert_dropout(model, 0.2, after="pool")
    new.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 8, 8, 3)).astype("float32"), np.zeros((4, 3), "float32")
    # evaluate's loss = mean squared error (inference: no dropout) + every penalty.
    logs = new.evaluate(x, y, return_dict=True, verbose=0)
    data = float(np.mean((new.predict(x, verbose=0) - y) ** 2))
    assert logs["loss"] == pytest.approx(data + sum(_penalties(model)), rel=1e-5)


def test_a_rule_with_no_copy_is_refused_by_name():
    model = _ruled_net()
    other = _residual_attention_net()
    with pytest.raises(ValueError, match=r"Cannot carry 9 rule\(s\).*attention/query/kernel"):
        _carry.carry_rules(model, other, layers=[], models=[])
    assert not other.losses  # nothing was set


class _Unserializable(keras.regularizers.Regularizer):  # no get_config, not registered
    def __call__(self, x):
        return 0.1 * keras.ops.sum(keras.ops.abs(x))


def test_a_rule_that_does_not_serialize_stays_out_of_the_copy_config(tmp_path):
    model = _residual_attention_net()
    with pytest.warns(UserWarning, match="cannot be stored"):
        keras_regkit.regularize(model, {"logits": _Unserializable()})
    new = keras_regkit.insert_dropout(model, 0.2, after="pool")
    assert _penalties(new) == pytest.approx(_penalties(model), rel=1e-6)
    assert new.get_layer("logits").kernel_regularizer is None  # as regularize left it
    new.save(tmp_path / "copy.keras")  # would raise NotImplementedError from get_config
