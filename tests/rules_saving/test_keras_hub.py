"""Rules on KerasHub backbones built from config (no downloaded weights).

KerasHub backbones rebuild every inner layer from constructor arguments when
loaded, and their attention and feed-forward layers sit inside composite
`TransformerEncoder` blocks: the case `regularize` must reach and
`keras_regkit.load_model` must restore.
"""

import json

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import L2
from tests import helpers
from tests.rules_saving.rules_problems import kernels as kernels_of
from tests.rules_saving.rules_problems import l2

keras_hub = pytest.importorskip("keras_hub")

pytestmark = pytest.mark.filterwarnings(
    "ignore::keras_regkit.RulesNeedRestoreWarning"
)


def _bert_classifier():
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=8, dropout=0.0,
    )
    pooled = backbone(backbone.input)["pooled_output"]
    outputs = keras.layers.Dense(3, name="head")(pooled)
    return keras.Model(backbone.input, outputs, name="classifier")


def _vit():
    return keras_hub.models.ViTBackbone(
        image_shape=(8, 8, 3), patch_size=4, num_layers=2, num_heads=2,
        hidden_dim=8, mlp_dim=16,
    )


def _bert_inputs(batch=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "token_ids": rng.integers(0, 50, size=(batch, 8)).astype("int32"),
        "segment_ids": np.zeros((batch, 8), "int32"),
        "padding_mask": np.ones((batch, 8), "int32"),
    }


def test_bert_every_kernel_is_regularized_by_class_and_by_kernels_target():
    model = _bert_classifier()
    kernels = kernels_of(model)
    assert len(kernels) == 14  # 2 blocks x (q, k, v, output, 2 feed-forward) + pooled + head
    keras_regkit.regularize(
        model, {(keras.layers.Dense, keras.layers.EinsumDense): L2(1e-2)})
    assert [v.path for v in kernels if isinstance(v.regularizer, L2)] == [v.path for v in kernels]
    assert len(model.losses) == 14
    expected = sum(l2(v, 1e-2) for v in kernels)
    np.testing.assert_allclose(float(sum(model.losses)), expected, rtol=1e-5)

    other = _bert_classifier()
    keras_regkit.regularize(other, {"*": L2(1e-2)}, target="kernels")
    assert sum(isinstance(getattr(v, "regularizer", None), L2) for v in other.weights) == 14
    # Embeddings are opt in.
    keras_regkit.regularize(other, {"*": L2(1e-2)}, target=["kernels", "embeddings"])
    assert sum(isinstance(getattr(v, "regularizer", None), L2) for v in other.weights) == 17


def test_bert_per_block_rules_by_block_name_and_variable_path():
    model = _bert_classifier()
    keras_regkit.regularize(model, [
        ("transformer_layer_0", L2(1e-4)),  # a block stands for every kernel inside it
        ("transformer_layer_1", L2(1e-3)),
        ("*/self_attention_layer/query/kernel", L2(1e-2)),  # both blocks' queries
    ])
    factors = {v.path: v.regularizer.l2 for v in model.weights
               if getattr(v, "regularizer", None) is not None}
    assert len(factors) == 12
    assert factors["transformer_layer_0/feedforward_output_dense/kernel"] == 1e-4
    assert factors["transformer_layer_1/self_attention_layer/key/kernel"] == 1e-3
    assert factors["transformer_layer_0/self_attention_layer/query/kernel"] == 1e-2
    assert factors["transformer_layer_1/self_attention_layer/query/kernel"] == 1e-2


def test_bert_rules_survive_a_fresh_process_reload(tmp_path):
    model = _bert_classifier()
    keras_regkit.regularize(
        model, {(keras.layers.Dense, keras.layers.EinsumDense): L2(1e-2)})
    expected = float(sum(model.losses))
    path = tmp_path / "bert.keras"
    model.save(path)
    out = helpers.run_python(f"""
        import json, keras
        import keras_hub, keras_regkit
        plain = keras.saving.load_model({str(path)!r}, safe_mode=True)
        model = keras_regkit.load_model({str(path)!r}, safe_mode=True)
        ruled = [v.path for v in model.weights if getattr(v, "regularizer", None) is not None]
        print(json.dumps({{"plain": len(plain.losses), "losses": len(model.losses),
                          "total": float(sum(model.losses)), "ruled": ruled}}))
    """)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["plain"] == 1  # only `head`: the backbone rebuilds its layers
    assert result["losses"] == 14
    assert sorted(result["ruled"]) == sorted(v.path for v in kernels_of(model))
    np.testing.assert_allclose(result["total"], expected, rtol=1e-5)


def test_bert_fit_step_has_the_penalties_in_the_loss_with_decoupled_decay():
    model = _bert_classifier()
    keras_regkit.regularize(
        model, {(keras.layers.Dense, keras.layers.EinsumDense): L2(1e-2)})
    model.compile(
        keras_regkit.DecoupledWeightDecay(keras.optimizers.Adam(1e-3), weight_decay=1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = _bert_inputs(), np.array([0, 1, 2, 0])
    # The loss `fit` reports for one batch is measured at the weights before the step.
    logits = np.asarray(model(x, training=True), "float64")
    log_softmax = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
    data_loss = -np.mean(log_softmax[np.arange(4), y])
    penalty = sum(l2(v, 1e-2) for v in kernels_of(model))
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], data_loss + penalty, rtol=1e-4)
    assert all(np.all(np.isfinite(np.asarray(v))) for v in model.weights)


def test_vit_every_kernel_is_regularized_and_survives_reload(tmp_path):
    model = _vit()
    keras_regkit.regularize(model, {"*": L2(1e-2)}, target="kernels")
    kernels = kernels_of(model)
    assert len(kernels) == 13  # patch convolution + 2 blocks x (q, k, v, output, 2 mlp)
    assert all(isinstance(v.regularizer, L2) for v in kernels)
    expected = float(sum(model.losses))
    np.testing.assert_allclose(expected, sum(l2(v, 1e-2) for v in kernels), rtol=1e-5)
    path = tmp_path / "vit.keras"
    model.save(path)
    out = helpers.run_python(f"""
        import keras_hub, keras_regkit
        model = keras_regkit.load_model({str(path)!r})
        print(len(model.losses), float(sum(model.losses)))
    """)
    count, total = out.strip().splitlines()[-1].split()
    assert int(count) == 13
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)
