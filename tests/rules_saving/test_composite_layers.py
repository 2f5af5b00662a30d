"""Rules inside composite layers: selection, units, and persistence through `.keras` files.

Composite layers (Keras's `MultiHeadAttention`, KerasHub blocks, user-written
layers with sub-layers) hold their weights in inner layers that a parent
rebuilds from constructor arguments when a model is loaded. The expected
values are written here with NumPy.
"""

import warnings

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import L1
from keras_regkit import L2
from keras_regkit import MaxNorm
from tests import helpers
from tests.helpers import ResidualBlock
from tests.helpers import randomize
from tests.rules_saving.rules_problems import kernels as kernels_of
from tests.rules_saving.rules_problems import l2


@keras.saving.register_keras_serializable(package="keras_regkit_tests")
class Projection(keras.layers.Layer):
    """A composite layer that keeps its `Dense` in `self.layer`, as a Keras
    `Wrapper` does, but rebuilds it from its own constructor arguments."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.layer = keras.layers.Dense(units, name="dense")

    def build(self, input_shape):
        self.layer.build(input_shape)

    def call(self, x):
        return self.layer(x)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _attention_model():
    """Functional: Dense -> ResidualBlock -> MultiHeadAttention -> Dense."""
    inputs = keras.Input((3, 4))
    x = keras.layers.Dense(4, name="embed")(inputs)
    x = ResidualBlock(4, name="block")(x)
    x = keras.layers.MultiHeadAttention(2, 2, name="attention")(x, x)
    outputs = keras.layers.Dense(1, name="head")(x)
    model = keras.Model(inputs, outputs, name="net")
    randomize(model)
    return model


def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", keras_regkit.RulesNeedRestoreWarning)
        return function(*args, **kwargs)


# --- selection reaches the layers inside composite layers --------------------


def test_class_selector_reaches_attention_projections_and_block_layers():
    model = _attention_model()
    _quiet(keras_regkit.regularize, model, {
        (keras.layers.Dense, keras.layers.EinsumDense): L2(0.01)})
    kernels = kernels_of(model)
    # embed, block/inner, block/outer, query, key, value, attention_output, head
    assert len(kernels) == 8
    assert all(isinstance(v.regularizer, L2) for v in kernels)
    assert len(model.losses) == 8  # each penalty once
    expected = sum(l2(v, 0.01) for v in kernels)
    np.testing.assert_allclose(float(sum(model.losses)), expected, rtol=1e-5)


def test_selecting_a_composite_layer_rules_every_weight_inside_it():
    model = _attention_model()
    _quiet(keras_regkit.regularize, model, {"attention": L1(0.1)}, target=["kernel", "bias"])
    inside = [v for v in model.weights if v.path.startswith("attention/")]
    assert len(inside) == 8
    assert all(isinstance(v.regularizer, L1) for v in inside)
    outside = [v for v in model.weights if not v.path.startswith("attention/")]
    assert all(getattr(v, "regularizer", None) is None for v in outside)
    expected = sum(0.1 * float(np.sum(np.abs(np.asarray(v)))) for v in inside)
    np.testing.assert_allclose(float(sum(model.losses)), expected, rtol=1e-5)


def test_variable_path_selector_with_repeating_inner_names():
    model = _attention_model()
    _quiet(keras_regkit.regularize, model, {
        "*/attention/*/kernel": L2(0.5),
        "*/attention/query/kernel": None,  # later rules win
        "block/inner/kernel": L2(0.25),
    })
    chosen = {v.path: type(v.regularizer).__name__ for v in model.weights
              if getattr(v, "regularizer", None) is not None}
    assert chosen == {
        "attention/key/kernel": "L2",
        "attention/value/kernel": "L2",
        "attention/attention_output/kernel": "L2",
        "block/inner/kernel": "L2",
    }
    with pytest.raises(ValueError, match=r"'\*/attn/\*' of `rules`.*matches no variable"):
        keras_regkit.regularize(model, {"*/attn/*": L2(0.1)})


def test_kernels_target_covers_every_kind_of_kernel_and_embeddings_opt_in():
    inputs = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(10, 4, name="embedding")(inputs)
    x = keras.layers.Reshape((6, 1, 4))(x)
    x = keras.layers.SeparableConv2D(4, (3, 1), padding="same", name="separable")(x)
    x = keras.layers.DepthwiseConv2D((3, 1), padding="same", name="depthwise")(x)
    x = keras.layers.Conv2DTranspose(2, (3, 1), padding="same", name="transposed")(x)
    x = keras.layers.Reshape((6, 2))(x)
    x = keras.layers.EinsumDense("abc,cd->abd", output_shape=(6, 3), name="einsum")(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(x))
    keras_regkit.regularize(model, {"*": L2(0.1)}, target="kernels")
    ruled = sorted(v.path for v in model.weights if getattr(v, "regularizer", None))
    assert ruled == sorted([
        "separable/depthwise_kernel", "separable/pointwise_kernel",
        "depthwise/kernel", "transposed/kernel", "einsum/kernel", "head/kernel"])
    keras_regkit.regularize(model, {"*": L2(0.1)}, target=["kernels", "embeddings"])
    assert isinstance(model.get_layer("embedding").embeddings.regularizer, L2)
    # The configs of a functional model's layers carry the kernels' rules.
    config = model.get_layer("separable").get_config()
    assert config["depthwise_regularizer"]["config"] == {"l2": 0.1}
    assert config["pointwise_regularizer"]["config"] == {"l2": 0.1}
    with pytest.raises(ValueError, match=r"none of which holds a kernel.*target='kernels'"):
        keras_regkit.regularize(model, {keras.layers.Flatten: L2(0.1)}, target="kernels")


def test_summary_lists_the_inner_variables():
    model = _attention_model()
    _quiet(keras_regkit.regularize, model, {keras.layers.EinsumDense: L2(0.01)})
    rows = keras_regkit.summary(model, print_fn=None)
    assert [(row["layer"], row["variable"]) for row in rows] == [
        ("query", "attention/query/kernel"),
        ("key", "attention/key/kernel"),
        ("value", "attention/value/kernel"),
        ("attention_output", "attention/attention_output/kernel"),
    ]
    inner = [v for v in model.weights if v.path.startswith("attention/") and v.name == "kernel"]
    expected = sum(l2(v, 0.01) for v in inner)
    np.testing.assert_allclose(sum(r["penalty"] for r in rows), expected, rtol=1e-5)


# --- the unit follows the layer ------------------------------------------------


def test_constrain_projects_each_depthwise_filter_on_its_own():
    inputs = keras.Input((5, 5, 4))
    layer = keras.layers.DepthwiseConv2D(3, name="dw")
    model = keras.Model(inputs, layer(inputs))
    layer.kernel.assign(np.ones((3, 3, 4, 1), "float32"))
    keras_regkit.constrain(model, {"dw": MaxNorm(1.0)})
    projected = np.asarray(layer.kernel.constraint(layer.kernel))
    # Each channel's 3x3 filter of ones has norm 3: scaled by 1/3, to norm 1.
    np.testing.assert_allclose(np.linalg.norm(projected[:, :, :, 0].reshape(9, 4), axis=0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(projected, np.full((3, 3, 4, 1), 1.0 / 3.0), rtol=1e-6)


def test_constrain_bounds_each_output_channel_of_a_transposed_convolution():
    inputs = keras.Input((4, 4, 3))
    layer = keras.layers.Conv2DTranspose(2, 3, name="up")
    model = keras.Model(inputs, layer(inputs))
    kernel = np.random.default_rng(1).normal(size=(3, 3, 2, 3)).astype("float32") * 3
    layer.kernel.assign(kernel)
    keras_regkit.constrain(model, {"up": MaxNorm(1.0)})
    projected = np.asarray(layer.kernel.constraint(layer.kernel))
    # Kernel (rows, cols, out, in): one output unit is projected[:, :, j, :].
    norms = np.sqrt(np.sum(np.square(projected), axis=(0, 1, 3)))
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    expected = kernel / np.sqrt(np.sum(np.square(kernel), axis=(0, 1, 3), keepdims=True))
    np.testing.assert_allclose(projected, expected, rtol=1e-5)


def test_constrain_uses_the_output_axes_of_attention_projections():
    model = _attention_model()
    _quiet(keras_regkit.constrain, model, {"*/attention/query/kernel": MaxNorm(0.5)})
    query = next(v for v in model.weights if v.path == "attention/query/kernel")
    assert query.constraint.axis == [0]  # "abc,cde->abde": kernel cde, reduce over c
    value = np.asarray(query)
    projected = np.asarray(query.constraint(query))
    norms = np.sqrt(np.sum(np.square(value), axis=0, keepdims=True))
    expected = np.where(norms > 0.5, value * 0.5 / norms, value)
    np.testing.assert_allclose(projected, expected, rtol=1e-5)


# --- persistence -----------------------------------------------------------------


def test_rules_inside_rebuilt_layers_warn_at_regularize_time():
    model = _attention_model()
    with pytest.warns(keras_regkit.RulesNeedRestoreWarning, match=r"block/inner/kernel") as caught:
        keras_regkit.regularize(model, {keras.layers.Dense: L2(0.01)})
    assert "keras_regkit.load_model" in str(caught[0].message)
    # Layers that a functional model rebuilds from their own config: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keras_regkit.regularize(model, {"head": L2(0.01), "embed": L2(0.01)})


def test_a_composite_layer_is_judged_by_type_not_by_its_attribute_names(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, Projection(3, name="projection")(inputs))
    randomize(model)
    with pytest.warns(keras_regkit.RulesNeedRestoreWarning, match=r"projection/dense/kernel"):
        keras_regkit.regularize(model, {"projection": L2(0.1)})
    path = tmp_path / "model.keras"
    model.save(path)
    assert keras.saving.load_model(path).losses == []  # the rebuilt Dense lost it
    loaded = keras_regkit.load_model(path)
    kernel = loaded.get_layer("projection").layer.kernel
    np.testing.assert_allclose([float(loss) for loss in loaded.losses], [l2(kernel, 0.1)],
                               rtol=1e-5)


def test_a_regularizer_that_cannot_be_stored_warns():
    class Unregistered(keras.regularizers.Regularizer):
        def __call__(self, x):
            return 0.5 * keras.ops.sum(x)

    model = _attention_model()
    with pytest.warns(UserWarning, match=r"'head/kernel'.*cannot be stored in a `.keras` file"):
        keras_regkit.regularize(model, {"head": Unregistered()})
    assert len(model.losses) == 1


def test_fresh_process_reload_keeps_every_rule_and_the_total_penalty(tmp_path):
    model = _attention_model()
    _quiet(keras_regkit.regularize, model, {
        (keras.layers.Dense, keras.layers.EinsumDense): L2(0.01),
        "*/attention/value/kernel": L1(0.02),
        "head": None,
    })
    _quiet(keras_regkit.constrain, model, {"*/attention/query/kernel": MaxNorm(0.5)})
    _quiet(keras_regkit.regularize, model, {"block": L2(0.03)}, target="bias")
    expected = {v.path: (type(v.regularizer).__name__, float(v.regularizer(v)))
                for v in model.weights if getattr(v, "regularizer", None) is not None}
    assert len(expected) == 9  # embed, inner, outer, q, k, v, o kernels + 2 block biases
    path = tmp_path / "model.keras"
    model.save(path)
    out = helpers.run_python(f"""
        import json, keras, numpy as np
        import keras_regkit, tests.helpers  # registers our classes and ResidualBlock
        plain = keras.saving.load_model({str(path)!r}, safe_mode=True)
        model = keras_regkit.load_model({str(path)!r}, safe_mode=True)
        rules = {{v.path: [type(v.regularizer).__name__, float(v.regularizer(v))]
                  for v in model.weights if getattr(v, "regularizer", None) is not None}}
        query = [v for v in model.weights if v.path == "attention/query/kernel"][0]
        print(json.dumps({{"plain": len(plain.losses), "losses": len(model.losses),
                          "total": float(sum(model.losses)), "rules": rules,
                          "constraint": query.constraint.get_config()}}))
        model.save({str(tmp_path / "again.keras")!r})  # a second generation keeps them
        again = keras_regkit.load_model({str(tmp_path / "again.keras")!r})
        print(len(again.losses))
    """)
    result, again = out.strip().splitlines()[-2:]
    import json

    result = json.loads(result)
    assert result["plain"] == 1  # only embed's config survives plain keras.saving
    assert result["losses"] == 9 and int(again) == 9
    assert {k: v[0] for k, v in result["rules"].items()} == {k: v[0] for k, v in expected.items()}
    for key, (_, penalty) in expected.items():
        np.testing.assert_allclose(result["rules"][key][1], penalty, rtol=1e-5)
    np.testing.assert_allclose(
        result["total"], sum(p for _, p in expected.values()), rtol=1e-5)
    assert result["constraint"] == {"max_value": 0.5, "axis": [0]}


def test_restore_rules_refuses_a_model_that_does_not_match(tmp_path):
    model = _attention_model()
    _quiet(keras_regkit.regularize, model, {"*/attention/*/kernel": L2(0.01)})
    path = tmp_path / "model.keras"
    model.save(path)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
    with pytest.raises(ValueError, match="4 rule\\(s\\) stored in .* does not have"):
        keras_regkit.restore_rules(other, path)
    assert other.get_layer("d").kernel.regularizer is None
    with pytest.raises(ValueError, match="must be a `.keras` file"):
        keras_regkit.restore_rules(model, tmp_path)


def test_load_model_gives_what_keras_gives_for_files_without_stored_rules(tmp_path):
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
    plain.save(tmp_path / "plain.keras")  # an archive without stored rules
    assert keras_regkit.load_model(tmp_path / "plain.keras").losses == []
    ruled = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
    randomize(ruled)
    keras_regkit.regularize(ruled, {"d": L2(0.1)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "legacy" HDF5
        ruled.save(tmp_path / "ruled.h5")  # not an archive: the layer config keeps the rule
    loaded = keras_regkit.load_model(tmp_path / "ruled.h5")
    kernel = loaded.get_layer("d").kernel
    np.testing.assert_allclose([float(loss) for loss in loaded.losses], [l2(kernel, 0.1)],
                               rtol=1e-5)
    with pytest.raises(ValueError, match="must be a `.keras` file"):
        keras_regkit.restore_rules(loaded, tmp_path / "ruled.h5")


def test_plain_keras_still_loads_a_file_with_stored_rules(tmp_path):
    model = _attention_model()
    _quiet(keras_regkit.regularize, model, {"*/attention/*/kernel": L2(0.01)})
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(2).normal(size=(2, 3, 4)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]


def test_group_prox_uses_the_unit_that_regularize_attached():
    inputs = keras.Input((4, 4, 2))
    layer = keras.layers.DepthwiseConv2D(3, use_bias=False, name="dw")
    model = keras.Model(inputs, layer(inputs))
    kernel = np.stack([np.full((3, 3), 1.0), np.full((3, 3), 0.1)], axis=2)[..., None]
    layer.kernel.assign(kernel.astype("float32"))  # filter norms 3 and 0.3
    keras_regkit.regularize(model, {"dw": keras_regkit.GroupLasso(0.0)})
    assert layer.kernel.regularizer.axis == [0, 1]
    learning_rate, group_l1 = 0.5, 1.0
    optimizer = keras_regkit.DecoupledWeightDecay(
        keras.optimizers.SGD(learning_rate), weight_decay=0.0, group_l1=group_l1)
    optimizer.apply([np.zeros_like(kernel, dtype="float32")], [layer.kernel])
    # Each channel's filter is its own group: w_j * max(0, 1 - lr * g / ||w_j||).
    norms = np.sqrt(np.sum(kernel ** 2, axis=(0, 1), keepdims=True))
    expected = kernel * np.maximum(0.0, 1 - learning_rate * group_l1 / norms)
    np.testing.assert_allclose(np.asarray(layer.kernel), expected, rtol=1e-6)
    assert np.all(np.asarray(layer.kernel)[:, :, 1] == 0)  # the small filter is zeroed


def test_the_newest_rule_wins_on_reload_and_unstorable_values_stay_out_of_configs(tmp_path):
    class Unregistered(keras.regularizers.Regularizer):
        def __call__(self, x):
            return 0.5 * keras.ops.sum(x)

    inner = keras.Sequential([keras.Input((4,)), ResidualBlock(4, name="block")], name="inner")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(inner(inputs)), name="outer")
    _quiet(keras_regkit.regularize, inner, {"block/inner/kernel": L2(0.1)})
    _quiet(keras_regkit.regularize, model, {"block/inner/kernel": None})  # newer: no penalty
    with pytest.warns(UserWarning, match="cannot be stored"):
        keras_regkit.regularize(model, {"head": L2(0.2)})  # stored, in the config
        keras_regkit.regularize(model, {"head": Unregistered()})  # newer, not storable
    assert model.get_layer("head").get_config()["kernel_regularizer"] is None
    path = tmp_path / "model.keras"
    model.save(path)  # an unserializable value in a config would make this raise
    loaded = keras_regkit.load_model(path)
    assert loaded.losses == []  # neither the older L2 on block/inner nor on head comes back


def test_restore_prefers_the_path_over_the_position(tmp_path):
    def build(order):
        inputs = keras.Input((8,))
        first, second = (keras.layers.Dense(8, name=name) for name in order)
        return keras.Model(inputs, second(first(inputs)))

    model = build(["a", "b"])
    keras_regkit.regularize(model, {"a": L2(0.1)})
    path = tmp_path / "model.keras"
    model.save(path)
    other = build(["b", "a"])  # the same layers in the other order: weights[0] is b/kernel
    keras_regkit.restore_rules(other, path)
    assert isinstance(other.get_layer("a").kernel.regularizer, L2)
    assert other.get_layer("b").kernel.regularizer is None
