"""Which variables `DecoupledWeightDecay` decays: roles, patterns, warnings."""

import warnings

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import DecoupledWeightDecay
from tests.optimizers.optimizer_problems import attention_model as _attention_model
from tests.optimizers.optimizer_problems import decayed_paths as _decayed_paths
from tests.optimizers.optimizer_problems import net as _net


def test_default_mask_decays_kernels_but_not_biases_or_norm_parameters():
    assert _decayed_paths() == ["net/dense_a/kernel", "net/dense_b/kernel"]


def test_default_mask_leaves_2d_attention_biases_and_norm_parameters_alone():
    model = _attention_model()
    variables = model.trainable_variables
    shapes = {v.path: tuple(v.shape) for v in variables}
    # MultiHeadAttention's query/key/value biases are (heads, head_size): 2-D.
    assert shapes["attention/query/bias"] == (2, 4)
    before = {v.path: np.array(v) + 1.0 for v in variables}
    _decayed_paths(variables)  # adds the same 1.0 first
    decayed = [
        "embed/embeddings",
        "attention/query/kernel",
        "attention/key/kernel",
        "attention/value/kernel",
        "attention/attention_output/kernel",
        "head/kernel",
    ]
    kept = [
        "attention/query/bias",
        "attention/key/bias",
        "attention/value/bias",
        "attention/attention_output/bias",
        "norm/gamma",
        "norm/beta",
        "head/bias",
    ]
    assert sorted(shapes) == sorted(decayed + kept)
    after = {v.path: np.array(v) for v in variables}
    for path in decayed:  # w - lr * lam * w, with lr = 0.1, lam = 0.5
        np.testing.assert_allclose(after[path], before[path] - 0.1 * 0.5 * before[path],
                                   rtol=1e-6, err_msg=path)
    for path in kept:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)


def test_include_and_exclude_still_override_the_role_based_default():
    variables = _attention_model().trainable_variables
    # With `include`, the patterns alone decide: biases and norm parameters too.
    assert _decayed_paths(variables, include=["attention/query/*", "norm/gamma"]) == [
        "attention/query/kernel", "attention/query/bias", "norm/gamma"]
    assert _decayed_paths(variables, exclude=["embed/*", "attention/*"]) == ["head/kernel"]


@pytest.mark.parametrize("pattern, expected", [
    # A leading `*/` may match nothing (the functional model has no scope).
    ("*/attention/*", [f"attention/{projection}/{weight}"
                       for projection in ("query", "key", "value", "attention_output")
                       for weight in ("kernel", "bias")]),
    # A leading literal scope (a model name) may be dropped.
    ("modelname/head/*", ["head/kernel", "head/bias"]),
    # A trailing part of the path.
    ("query/kernel", ["attention/query/kernel"]),
    # Dropping scopes never leaves a bare wildcard layer: not every kernel.
    ("*/attention/*/kernel", [f"attention/{projection}/kernel"
                              for projection in ("query", "key", "value", "attention_output")]),
    ("attention/*/kernel", [f"attention/{projection}/kernel"
                            for projection in ("query", "key", "value", "attention_output")]),
])
def test_the_optimizer_and_regularize_read_a_path_pattern_alike(pattern, expected):
    variables = _attention_model().trainable_variables
    assert sorted(_decayed_paths(variables, include=[pattern])) == sorted(expected)
    model = _attention_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the rules-need-restore notice
        keras_regkit.regularize(model, {pattern: keras_regkit.L2(0.1)})
    regularized = [v.path for v in model.trainable_variables
                   if getattr(v, "regularizer", None) is not None]
    assert sorted(regularized) == sorted(expected)


def test_default_mask_on_a_kerashub_bert_backbone():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=8)
    variables = backbone.trainable_variables
    decayed = set(_decayed_paths(variables))
    blocks = [f"transformer_layer_{i}" for i in range(2)]
    # The kernels and embeddings, and nothing else.
    assert decayed == (
        {"token_embedding/embeddings", "position_embedding/embeddings",
         "segment_embedding/embeddings", "pooled_dense/kernel"}
        | {f"{block}/self_attention_layer/{projection}/kernel" for block in blocks
           for projection in ("query", "key", "value", "attention_output")}
        | {f"{block}/{dense}/kernel" for block in blocks
           for dense in ("feedforward_intermediate_dense", "feedforward_output_dense")}
    )
    by_name = {}
    for v in variables:
        by_name.setdefault(v.path.rsplit("/", 1)[-1], set()).add(v.path)
    assert set(by_name) == {"kernel", "embeddings", "bias", "gamma", "beta"}
    assert by_name["kernel"] | by_name["embeddings"] == decayed
    assert not decayed & (by_name["bias"] | by_name["gamma"] | by_name["beta"])
    # Among them the 2-D attention biases and every LayerNorm parameter.
    assert "transformer_layer_0/self_attention_layer/query/bias" in by_name["bias"]
    assert "embeddings_layer_norm/gamma" in by_name["gamma"]


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"exclude": "dense_b/*"}, ["net/dense_a/kernel"]),
        ({"exclude": ["*kernel"]}, []),
        ({"include": "*/bias"}, ["net/dense_a/bias", "net/dense_b/bias"]),
        ({"include": ["norm/*", "dense_a/*"], "exclude": "*/beta"},
         ["net/dense_a/kernel", "net/dense_a/bias", "net/norm/gamma"]),
        ({"include": "net/dense_b/kernel"}, ["net/dense_b/kernel"]),
    ],
)
def test_include_and_exclude_patterns(kwargs, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the all-excluded case warns
        assert _decayed_paths(**kwargs) == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"include": ["dense_a/*", "conv*/kernel"]}, r"include='conv\*/kernel'"),
        ({"exclude": "nomatch"}, r"exclude='nomatch'"),
        ({"exclude": "*"}, r"no variable is selected"),
    ],
)
def test_patterns_that_match_nothing_warn(kwargs, message):
    with pytest.warns(UserWarning, match=message):
        _decayed_paths(**kwargs)


@pytest.mark.parametrize(
    "regularizer, warns",
    [
        (keras.regularizers.L2(0.01), True),
        (keras.regularizers.L1L2(l1=0.01, l2=0.01), True),
        (keras_regkit.L2(0.01), True),
        (keras_regkit.ElasticNet(0.01, 0.01), True),
        (keras.regularizers.L1(0.01), False),
        (keras.regularizers.L1L2(l1=0.01, l2=0.0), False),
    ],
)
def test_l2_regularizer_on_a_decayed_variable_warns(regularizer, warns):
    model = _net(kernel_regularizer=regularizer)
    optimizer = DecoupledWeightDecay(keras.optimizers.SGD(0.1), 0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer.build(model.trainable_variables)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    doubled = [m for m in messages if "regularized twice" in m]
    assert bool(doubled) == warns, messages
    if warns:
        assert "net/dense_a/kernel" in doubled[0] and "dense_b" not in doubled[0]
    # Excluding the variable silences it.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        DecoupledWeightDecay(keras.optimizers.SGD(0.1), 0.5, exclude="dense_a/*").build(
            model.trainable_variables
        )
