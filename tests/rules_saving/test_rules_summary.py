"""Tests for keras_regkit.summary and sparsity: rows, printed tables, zero counts like NumPy."""

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import L1, L2, MaxNorm
from tests.rules_saving.rules_problems import l1 as _l1
from tests.rules_saving.rules_problems import l2 as _l2
from tests.rules_saving.rules_problems import mlp as _mlp

Dense = keras.layers.Dense
Conv2D = keras.layers.Conv2D


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
    rng = np.random.default_rng(3)
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
    rng = np.random.default_rng(5)
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
