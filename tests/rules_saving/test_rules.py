"""Tests for keras_regkit.regularize and constrain: model and selector kinds, compiled models, targets."""

import warnings
import zipfile

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import L1, L2, MaxNorm
from tests.helpers import load_in_fresh_process
from tests.helpers import randomize
from tests.rules_saving.rules_problems import l1 as _l1
from tests.rules_saving.rules_problems import l2 as _l2
from tests.rules_saving.rules_problems import mlp as _mlp
from tests.rules_saving.rules_problems import nested_model as _nested_model

Dense = keras.layers.Dense
Conv2D = keras.layers.Conv2D


def _losses(model):
    return [float(loss) for loss in model.losses]


# --- model kinds and selector kinds -----------------------------------------


def test_sequential_glob_selector_penalties_and_config():
    model = _mlp()
    reg = L2(0.1)
    assert keras_regkit.regularize(model, {"hidden_*": reg}) is model
    k1, k2 = model.get_layer("hidden_1").kernel, model.get_layer("hidden_2").kernel
    np.testing.assert_allclose(_losses(model), [_l2(k1, 0.1), _l2(k2, 0.1)], rtol=1e-5)
    for name in ("hidden_1", "hidden_2"):
        layer = model.get_layer(name)
        assert layer.kernel.regularizer is reg and layer.kernel_regularizer is reg
        assert layer.get_config()["kernel_regularizer"]["config"] == {"l2": 0.1}
        assert layer.bias.regularizer is None
    out = model.get_layer("out")
    assert out.kernel.regularizer is None and out.get_config()["kernel_regularizer"] is None


def test_functional_class_and_tuple_selectors_with_later_rule_winning():
    inputs = keras.Input((6, 6, 2))
    x = Conv2D(3, 3, name="conv")(inputs)
    x = keras.layers.Flatten(name="flat")(x)
    x = Dense(4, name="fc")(x)
    outputs = Dense(2, name="logits")(x)
    model = keras.Model(inputs, outputs, name="func")
    randomize(model)
    rules = [((Conv2D, Dense), L2(0.01)), (Dense, L1(0.2)), ("logits", None)]
    keras_regkit.regularize(model, rules)
    conv, fc, logits = (model.get_layer(n) for n in ("conv", "fc", "logits"))
    assert isinstance(conv.kernel.regularizer, L2)
    assert isinstance(fc.kernel.regularizer, L1)
    assert logits.kernel.regularizer is None and logits.kernel_regularizer is None
    np.testing.assert_allclose(
        _losses(model), [_l2(conv.kernel, 0.01), _l1(fc.kernel, 0.2)], rtol=1e-5
    )


def test_callable_selector_reaches_nested_model_and_survives_save(tmp_path):
    model = _nested_model()
    keras_regkit.regularize(model, {lambda layer: layer.name.startswith("inner_"): L2(0.5)})
    inner = model.get_layer("block")
    expected = [_l2(inner.get_layer(n).kernel, 0.5) for n in ("inner_dense", "inner_out")]
    np.testing.assert_allclose(_losses(model), expected, rtol=1e-5)
    assert model.get_layer("head").kernel.regularizer is None
    # The nested layers' configs carry it: an in-process save/load keeps it.
    path = tmp_path / "nested.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    loaded_inner = loaded.get_layer("block").get_layer("inner_dense")
    assert isinstance(loaded_inner.kernel.regularizer, L2)
    assert loaded_inner.kernel.regularizer.get_config() == {"l2": 0.5}
    np.testing.assert_allclose(_losses(loaded), expected, rtol=1e-5)


def test_subclassed_model():
    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="subclassed")
            self.hidden = Dense(4, name="hidden")
            self.out = Dense(1, name="out")

        def call(self, x):
            return self.out(self.hidden(x))

    model = Net()
    model(np.zeros((1, 3), "float32"))
    randomize(model)
    keras_regkit.regularize(model, {"hidden": L2(0.1)})
    np.testing.assert_allclose(_losses(model), [_l2(model.hidden.kernel, 0.1)], rtol=1e-5)
    assert model.hidden.get_config()["kernel_regularizer"] is not None


# --- compiled models: cached train functions are reset ----------------------


def test_fit_then_regularize_then_fit_applies_the_penalty():
    model = _mlp(use_bias=False)
    lr, factor = 0.1, 0.25
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    # Zero inputs and targets: the data loss and its gradient are exactly 0.
    x, y = np.zeros((8, 4), "float32"), np.zeros((8, 2), "float32")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert model.train_function is not None  # traced without any penalty
    w0 = model.get_layer("hidden_1").kernel.numpy().copy()
    others = [model.get_layer(n).kernel.numpy().copy() for n in ("hidden_2", "out")]

    keras_regkit.regularize(model, {"hidden_1": L2(factor)})
    np.testing.assert_allclose(model.evaluate(x, y, verbose=0), _l2(w0, factor), rtol=1e-5)
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    # SGD on l2*sum(w^2): w <- w - lr * 2 * l2 * w.
    np.testing.assert_allclose(history.history["loss"][0], _l2(w0, factor), rtol=1e-5)
    w1 = model.get_layer("hidden_1").kernel.numpy()
    np.testing.assert_allclose(w1, w0 * (1 - 2 * lr * factor), rtol=1e-5)
    for name, before in zip(("hidden_2", "out"), others):
        np.testing.assert_array_equal(model.get_layer(name).kernel.numpy(), before)

    # Removing it also reaches the traced function: the weights stop moving.
    keras_regkit.regularize(model, {"hidden_1": None})
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    np.testing.assert_array_equal(model.get_layer("hidden_1").kernel.numpy(), w1)


def test_constrain_is_applied_by_fit_after_a_first_fit():
    def build():
        model = _mlp()
        model.compile(optimizer=keras.optimizers.SGD(5.0), loss="mse")
        return model

    x = np.random.default_rng(1).normal(size=(16, 4)).astype("float32")
    y = 10 * np.random.default_rng(2).normal(size=(16, 2)).astype("float32")
    constrained, free = build(), build()
    free.set_weights(constrained.get_weights())
    for model in (constrained, free):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    keras_regkit.constrain(constrained, {Dense: MaxNorm(1.0)})
    for model in (constrained, free):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)

    def column_norms(model):
        return np.concatenate([
            np.linalg.norm(model.get_layer(n).kernel.numpy(), axis=0)
            for n in ("hidden_1", "hidden_2", "out")
        ])

    assert column_norms(free).max() > 1.5  # the step does leave the ball...
    assert column_norms(constrained).max() <= 1.0 + 1e-5  # ...and is projected back
    layer = constrained.get_layer("hidden_1")
    assert isinstance(layer.kernel_constraint, MaxNorm)
    assert layer.get_config()["kernel_constraint"]["config"]["max_value"] == 1.0
    assert layer.bias.constraint is None


# --- targets -------------------------------------------------------------------


def test_bias_target_and_target_list():
    model = _mlp()
    keras_regkit.regularize(model, {Dense: L1(0.1)}, target="bias")
    biases = [model.get_layer(n).bias for n in ("hidden_1", "hidden_2", "out")]
    np.testing.assert_allclose(_losses(model), [_l1(b, 0.1) for b in biases], rtol=1e-5)
    layer = model.get_layer("out")
    assert layer.get_config()["bias_regularizer"] is not None
    assert layer.kernel_regularizer is None

    keras_regkit.regularize(model, {"out": L2(0.2)}, target=["kernel", "bias"])
    assert layer.kernel.regularizer is layer.bias.regularizer is layer.kernel_regularizer
    assert layer.bias_regularizer is layer.kernel_regularizer
    assert len(model.losses) == 4


def test_wrapped_and_other_weight_targets_map_to_layer_configs(tmp_path):
    tokens = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(10, 4, name="embed")(tokens)
    x = keras.layers.LSTM(3, return_sequences=True, name="lstm")(x)
    x = keras.layers.TimeDistributed(Dense(3), name="td")(x)
    outputs = keras.layers.Bidirectional(keras.layers.GRU(2), name="bi")(x)
    model = keras.Model(tokens, outputs, name="seq")
    randomize(model)
    with warnings.catch_warnings():  # the configs keep every rule: no warning
        warnings.simplefilter("error", keras_regkit.RulesNeedRestoreWarning)
        keras_regkit.regularize(model, {"embed": L2(0.1)}, target="embeddings")
        keras_regkit.regularize(model, {"lstm": L2(0.2)}, target="recurrent_kernel")
        keras_regkit.regularize(model, {"bi": L1(0.3)})  # both directions' kernels
        keras_regkit.regularize(model, {"td": L2(0.4)})  # the wrapped Dense
    lstm, bi, td = (model.get_layer(n) for n in ("lstm", "bi", "td"))
    assert td.get_config()["layer"]["config"]["kernel_regularizer"]["config"] == {"l2": 0.4}
    assert model.get_layer("embed").get_config()["embeddings_regularizer"] is not None
    assert lstm.get_config()["recurrent_regularizer"]["config"] == {"l2": 0.2}
    assert lstm.get_config()["kernel_regularizer"] is None
    for direction in ("layer", "backward_layer"):
        assert bi.get_config()[direction]["config"]["kernel_regularizer"] is not None
    expected = [
        _l2(model.get_layer("embed").embeddings, 0.1),
        _l2(lstm.cell.recurrent_kernel, 0.2),
        _l2(td.layer.kernel, 0.4),
        _l1(bi.forward_layer.cell.kernel, 0.3),
        _l1(bi.backward_layer.cell.kernel, 0.3),
    ]
    np.testing.assert_allclose(sorted(_losses(model)), sorted(expected), rtol=1e-5)
    path = tmp_path / "seq.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(sorted(_losses(loaded)), sorted(expected), rtol=1e-5)

    conv = keras.Sequential([
        keras.Input((5, 5, 2)),
        keras.layers.DepthwiseConv2D(3, name="dw"),  # weight `kernel`, config `depthwise_*`
        keras.layers.SeparableConv2D(2, 1, name="sep"),
    ])
    keras_regkit.constrain(conv, {"dw": MaxNorm(2.0)})
    keras_regkit.regularize(conv, {"dw": L2(0.1)})
    keras_regkit.regularize(
        conv, {"sep": L1(0.2)}, target=["depthwise_kernel", "pointwise_kernel"])
    config = conv.get_layer("dw").get_config()
    assert config["depthwise_constraint"]["config"]["max_value"] == 2.0
    assert config["depthwise_regularizer"]["config"] == {"l2": 0.1}
    config = conv.get_layer("sep").get_config()
    assert config["depthwise_regularizer"]["config"] == {"l1": 0.2}
    assert config["pointwise_regularizer"]["config"] == {"l1": 0.2}
    assert len(conv.losses) == 3


def test_layer_without_config_setting_warns_but_penalizes():
    class Scale(keras.layers.Layer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.kernel

    model = keras.Sequential([keras.Input((3,)), Scale(name="scale")])
    with pytest.warns(
        keras_regkit.RulesNeedRestoreWarning, match=r"scale/variable.*no `<weight>_regularizer`"
    ):
        keras_regkit.regularize(model, {"scale": L2(0.5)})
    np.testing.assert_allclose(_losses(model), [0.5 * 3], rtol=1e-6)


def test_removal_with_none_clears_variable_and_config():
    model = _mlp()
    keras_regkit.regularize(model, {Dense: L2(0.1)}, target=["kernel", "bias"])
    keras_regkit.constrain(model, {Dense: MaxNorm(2.0)})
    keras_regkit.regularize(model, {"hidden_1": None}, target=["kernel", "bias"])
    keras_regkit.constrain(model, {"hidden_*": None})
    layer = model.get_layer("hidden_1")
    config = layer.get_config()
    assert layer.kernel.regularizer is None and layer.bias.regularizer is None
    assert config["kernel_regularizer"] is None and config["bias_regularizer"] is None
    assert layer.kernel.constraint is None and config["kernel_constraint"] is None
    assert model.get_layer("out").kernel.constraint is not None
    assert len(model.losses) == 4  # hidden_2 and out, kernel and bias


# --- a pretrained-style application model ------------------------------------------


def test_resnet50_every_conv_and_dense_kernel_and_fresh_process_load(tmp_path):
    model = keras.applications.ResNet50(
        weights=None, input_shape=(64, 64, 3), classes=10)
    factor = 1e-4
    kernels = [layer.kernel for layer in model.layers if isinstance(layer, (Conv2D, Dense))]
    assert len(kernels) == 54  # 53 convolutions + the classifier
    keras_regkit.regularize(model, {(Conv2D, Dense): L2(factor)})

    assert len(model.losses) == len(kernels)
    regularized = [v for v in model.trainable_weights if v.regularizer is not None]
    assert {id(v) for v in regularized} == {id(k) for k in kernels}
    np.testing.assert_allclose(
        _losses(model), [_l2(v, factor) for v in regularized], rtol=1e-5)
    assert len(keras_regkit.summary(model, print_fn=None)) == len(kernels)

    path = tmp_path / "resnet50.keras"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode()
    assert config.count('"registered_name": "keras_regkit>L2"') == len(kernels)

    x = np.random.default_rng(4).normal(size=(2, 64, 64, 3)).astype("float32")
    loaded = load_in_fresh_process(path, x)
    np.testing.assert_allclose(loaded["losses"], _losses(model), rtol=1e-6)
    np.testing.assert_allclose(
        loaded["predictions"], model.predict(x, verbose=0), rtol=1e-4, atol=1e-6)
