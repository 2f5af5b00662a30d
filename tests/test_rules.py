"""Tests for keras_regkit.rules: regularize, constrain, summary, sparsity."""

import json
import zipfile

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import L1, L2, MaxNorm
from tests.helpers import load_in_fresh_process

Dense = keras.layers.Dense
Conv2D = keras.layers.Conv2D


def _rng(seed=0):
    return np.random.default_rng(seed)


def _randomize(model, seed=0):
    """Random non-zero weights, so penalties are not those of the initializer."""
    rng = _rng(seed)
    for variable in model.weights:
        if variable.trainable:
            variable.assign(rng.normal(size=variable.shape).astype("float32"))


def _mlp(name="net", use_bias=True):
    model = keras.Sequential(
        [
            keras.Input((4,)),
            Dense(5, name="hidden_1", use_bias=use_bias),
            Dense(3, name="hidden_2", use_bias=use_bias),
            Dense(2, name="out", use_bias=use_bias),
        ],
        name=name,
    )
    _randomize(model)
    return model


def _l2(w, factor):
    return factor * np.sum(np.square(np.asarray(w, dtype="float64")))


def _l1(w, factor):
    return factor * np.sum(np.abs(np.asarray(w, dtype="float64")))


def _losses(model):
    return [float(loss) for loss in model.losses]


def _state(model):
    """Every variable's regularizer/constraint and every layer's config."""
    return (
        [(v.path, v.regularizer, v.constraint) for v in model.weights],
        [json.dumps(layer.get_config(), sort_keys=True, default=str)
         for layer in model.layers],
    )


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
    _randomize(model)
    rules = [((Conv2D, Dense), L2(0.01)), (Dense, L1(0.2)), ("logits", None)]
    keras_regkit.regularize(model, rules)
    conv, fc, logits = (model.get_layer(n) for n in ("conv", "fc", "logits"))
    assert isinstance(conv.kernel.regularizer, L2)
    assert isinstance(fc.kernel.regularizer, L1)
    assert logits.kernel.regularizer is None and logits.kernel_regularizer is None
    np.testing.assert_allclose(
        _losses(model), [_l2(conv.kernel, 0.01), _l1(fc.kernel, 0.2)], rtol=1e-5
    )


def _nested_model():
    block = keras.Sequential(
        [keras.Input((4,)), Dense(3, name="inner_dense"), Dense(3, name="inner_out")],
        name="block",
    )
    inputs = keras.Input((4,))
    outputs = Dense(2, name="head")(block(inputs))
    model = keras.Model(inputs, outputs, name="outer")
    _randomize(model)
    return model


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
    _randomize(model)
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

    x = _rng(1).normal(size=(16, 4)).astype("float32")
    y = 10 * _rng(2).normal(size=(16, 2)).astype("float32")
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
    _randomize(model)
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


# --- summary and sparsity ---------------------------------------------------------


def test_summary_rows_and_printing(capsys):
    model = _mlp()
    model.get_layer("out").trainable = False
    keras_regkit.regularize(model, {"hidden_1": L2(0.1), "out": L1(0.2)})
    keras_regkit.constrain(model, {"hidden_*": MaxNorm(2.0)})
    lines = []
    rows = keras_regkit.summary(model, print_fn=lines.append)
    first, second, frozen = rows
    assert [row["variable"] for row in rows] == [
        model.get_layer(name).kernel.path for name in ("hidden_1", "hidden_2", "out")]
    assert first["layer"] == "hidden_1" and first["shape"] == (4, 5)
    assert first["regularizer"] == "L2" and first["regularizer_config"] == {"l2": 0.1}
    np.testing.assert_allclose(
        first["penalty"], _l2(model.get_layer("hidden_1").kernel, 0.1), rtol=1e-5)
    assert first["constraint"] == "MaxNorm"
    assert first["constraint_config"]["max_value"] == 2.0
    assert second["regularizer"] is None and second["penalty"] is None
    assert second["constraint"] == "MaxNorm"
    assert frozen["trainable"] is False and frozen["regularizer"] == "L1"
    np.testing.assert_allclose(
        frozen["penalty"], _l1(model.get_layer("out").kernel, 0.2), rtol=1e-5)
    # The table: a header, one line per row, the total of trainable penalties.
    assert lines[0].split() == [
        "layer", "variable", "shape", "regularizer", "penalty", "constraint"]
    assert "L2(l2=0.1)" in lines[1] and "MaxNorm(max_value=2" in lines[1]
    assert "(frozen)" in lines[3]
    assert lines[-1].startswith(f"Total penalty: {first['penalty']:.6g} (1 variable)")

    assert keras_regkit.summary(model, print_fn=None) == rows
    assert keras_regkit.sparsity(model, print_fn=None)
    assert capsys.readouterr().out == ""
    assert keras_regkit.summary(_mlp("plain"), print_fn=lines.append) == []
    assert lines[-1] == "No regularized or constrained variables in 'plain'."


def test_sparsity_counts_match_numpy():
    inputs = keras.Input((6, 6, 2))
    x = Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(x)
    outputs = Dense(3, name="fc")(x)
    model = keras.Model(inputs, outputs, name="sparse")
    rng = _rng(3)
    arrays = {}
    for variable in model.trainable_weights:
        w = rng.normal(size=variable.shape) * (rng.random(variable.shape) < 0.6)
        if len(variable.shape) >= 2:
            w[..., 1] = 0.0  # one whole unit / filter
        variable.assign(w.astype("float32"))
        arrays[variable.path] = w
    model.get_layer("bn").trainable = False  # gamma/beta leave the report

    lines = []
    rows = keras_regkit.sparsity(model, print_fn=lines.append)
    body, total = rows[:-1], rows[-1]
    assert [row["variable"] for row in body] == [
        getattr(model.get_layer(layer), name).path
        for layer in ("conv", "fc") for name in ("kernel", "bias")]
    assert [row["layer"] for row in body] == ["conv", "conv", "fc", "fc"]
    for row in body:
        w = arrays[row["variable"]]
        assert row["size"] == w.size and row["shape"] == w.shape
        assert row["zeros"] == np.sum(w == 0)
        assert row["fraction"] == pytest.approx(np.mean(w == 0))
        if w.ndim >= 2:
            dead = sum(not np.any(w[..., j]) for j in range(w.shape[-1]))
            assert row["units"] == w.shape[-1] and row["zero_units"] == dead >= 1
        else:
            assert row["units"] is None and row["zero_units"] is None
    everything = np.concatenate([arrays[row["variable"]].ravel() for row in body])
    assert total["layer"] == "(total)" and total["size"] == everything.size
    assert total["zeros"] == np.sum(everything == 0)
    assert total["fraction"] == pytest.approx(np.mean(everything == 0))
    assert total["zero_units"] == body[0]["zero_units"] + body[2]["zero_units"]
    assert len(lines) == 1 + len(rows) and lines[-1].startswith("(total)")


class _Scale(keras.layers.Layer):
    """A layer with a 0-D trainable weight (which `sparsity` leaves out)."""

    def build(self, input_shape):
        self.factor = self.add_weight(shape=(), initializer="ones", name="factor")

    def call(self, x):
        return x * self.factor


def test_sparsity_counts_units_of_each_layer_kind_like_numpy():
    inputs = keras.Input((6, 6, 2))
    x = Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    x = keras.layers.Conv2DTranspose(3, 3, padding="same", name="up")(x)
    x = keras.layers.SeparableConv2D(5, 3, padding="same", name="sep")(x)
    x = keras.layers.Reshape((36, 5))(x)
    x = keras.layers.EinsumDense("abc,cde->abde", output_shape=(36, 2, 3), name="einsum")(x)
    x = Dense(3, name="fc")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, _Scale(name="scale")(x), name="kinds")
    # The axes of one unit's fan-in, by layer kind, and one unit to zero (its
    # index on the other axes): written here from the kernels' layouts.
    kernels = {
        "conv/kernel": ((0, 1, 2), (3,)),  # (3, 3, in, out): a filter
        "dw/kernel": ((0, 1), (1, 1)),  # (3, 3, in, multiplier): a (channel, multiplier)
        "up/kernel": ((0, 1, 3), (2,)),  # (3, 3, out, in): an output channel
        "sep/depthwise_kernel": ((0, 1), (2, 0)),
        "sep/pointwise_kernel": ((0, 1, 2), (4,)),
        "einsum/kernel": ((0,), (1, 2)),  # "cde": c is contracted, (d, e) is a unit
        "fc/kernel": ((0,), (2,)),
    }
    rng = _rng(5)
    arrays = {}
    for variable in model.trainable_weights:
        w = rng.normal(size=variable.shape) * (rng.random(variable.shape) < 0.6)
        name = "/".join(variable.path.split("/")[-2:])  # layer/weight
        if name in kernels:
            axes, unit = kernels[name]
            index = [slice(None)] * w.ndim
            for axis, i in zip([a for a in range(w.ndim) if a not in axes], unit):
                index[axis] = i
            w[tuple(index)] = 0.0
        variable.assign(w.astype("float32"))
        arrays[name] = w

    lines = []
    rows = keras_regkit.sparsity(model, print_fn=lines.append)
    body, total = rows[:-1], rows[-1]
    by_name = {"/".join(row["variable"].split("/")[-2:]): row for row in body}
    assert "scale/factor" in arrays and set(by_name) == set(arrays) - {"scale/factor"}
    expected_units = expected_dead = 0
    for name, row in by_name.items():
        w = arrays[name]
        assert (row["shape"], row["size"]) == (w.shape, w.size)
        assert row["zeros"] == np.sum(w == 0)
        assert row["fraction"] == pytest.approx(np.mean(w == 0))
        if w.ndim == 1:
            assert row["units"] is None and row["zero_units"] is None, name
            continue
        dead = np.all(w == 0, axis=kernels[name][0])
        assert (row["units"], row["zero_units"]) == (dead.size, np.sum(dead)), name
        assert row["zero_units"] >= 1  # the planted unit
        expected_units += dead.size
        expected_dead += np.sum(dead)
    everything = np.concatenate([arrays[name].ravel() for name in by_name])
    assert (total["size"], total["zeros"]) == (everything.size, np.sum(everything == 0))
    assert total["fraction"] == pytest.approx(np.mean(everything == 0))
    assert (total["units"], total["zero_units"]) == (expected_units, expected_dead)
    # The printed table: size, zeros and zero units/units at the end of each line.
    assert len(lines) == 1 + len(rows)
    for line, row in zip(lines[1:], rows):
        units = "-" if row["units"] is None else f"{row['zero_units']}/{row['units']}"
        size, zeros, _, printed_units = line.split()[-4:]
        assert (int(size), int(zeros), printed_units) == (row["size"], row["zeros"], units)


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

    x = _rng(4).normal(size=(2, 64, 64, 3)).astype("float32")
    loaded = load_in_fresh_process(path, x)
    np.testing.assert_allclose(loaded["losses"], _losses(model), rtol=1e-6)
    np.testing.assert_allclose(
        loaded["predictions"], model.predict(x, verbose=0), rtol=1e-4, atol=1e-6)
