"""Tests for dropout next to layers a copy cannot reach: subclassed blocks, composite layers, KerasHub."""

import keras
import numpy as np
import pytest
from keras import layers as L

import keras_regkit
from tests import helpers
from tests.layers.dropout_problems import assert_same_outputs
from tests.layers.dropout_problems import classes_and_rates
from tests.helpers import randomize


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
