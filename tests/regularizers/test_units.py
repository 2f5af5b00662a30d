"""Tests for keras_regkit._units (what one unit of a weight is) and its use in `sparsity`.

The expected axes are written by hand from each layer's kernel layout, and
checked against what the layer computes: a kernel that is zero except for
one unit's fan-in vector must feed exactly one output unit.
"""

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import MaxNorm
from keras_regkit._units import reduction_axes
from keras_regkit._units import unit_axes


def _built(layer, input_shape):
    layer.build(input_shape)
    return layer


def _layers():
    """`(id, layer, input_shape, variable attribute, expected axes)`, written by hand."""
    return [
        # (rows, cols, in=4, multiplier=2): one filter per (channel, multiplier).
        ("depthwise2d", keras.layers.DepthwiseConv2D(3, depth_multiplier=2,
                                                     use_bias=False),
         (1, 5, 5, 4), "kernel", [0, 1]),
        ("depthwise1d", keras.layers.DepthwiseConv1D(3, use_bias=False),
         (1, 6, 4), "kernel", [0]),
        # (rows, cols, out=5, in=4): one output channel is W[..., j, :].
        ("transpose2d", keras.layers.Conv2DTranspose(5, 3, use_bias=False),
         (1, 4, 4, 4), "kernel", [0, 1, 3]),
        ("transpose1d", keras.layers.Conv1DTranspose(5, 3, use_bias=False),
         (1, 4, 4), "kernel", [0, 2]),
        ("transpose3d", keras.layers.Conv3DTranspose(2, 2, use_bias=False),
         (1, 3, 3, 3, 3), "kernel", [0, 1, 2, 4]),
        # MultiHeadAttention's query projection: kernel "cde" (dim, heads, size).
        ("einsum_query", keras.layers.EinsumDense(
            "abc,cde->abde", output_shape=(None, 2, 3)),
         (1, 5, 6), "kernel", [0]),
        # Its output projection: kernel "cde" (heads, size, dim).
        ("einsum_output", keras.layers.EinsumDense(
            "abcd,cde->abe", output_shape=(None, 6)),
         (1, 5, 2, 3), "kernel", [0, 1]),
        # A kernel letter shared with the input and output (per-head weights):
        # unit (b, d) has fan-in W[b, :, d], so only c is reduced.
        ("einsum_shared", keras.layers.EinsumDense(
            "abc,bcd->abd", output_shape=(3, 4)),
         (1, 3, 5), "kernel", [1]),
        ("dense", keras.layers.Dense(3, use_bias=False), (1, 6), "kernel", [0]),
        ("conv2d", keras.layers.Conv2D(5, 3, use_bias=False),
         (1, 5, 5, 4), "kernel", [0, 1, 2]),
    ]


@pytest.mark.parametrize("case", range(len(_layers())), ids=[c[0] for c in _layers()])
def test_unit_is_the_fan_in_of_one_output_unit(case):
    _, layer, input_shape, attribute, expected = _layers()[case]
    _built(layer, input_shape)
    variable = getattr(layer, attribute)
    axes = unit_axes(layer, variable)
    assert axes == expected
    # Behaviour: ones on one unit's fan-in, zeros elsewhere, positive inputs:
    # exactly one output unit (trailing output axes, flattened) is non-zero.
    shape = tuple(variable.shape)
    others = [a for a in range(len(shape)) if a not in expected]
    n_units = int(np.prod([shape[a] for a in others]))
    x = np.random.default_rng(0).uniform(0.5, 1.0, size=input_shape).astype("float32")
    touched = []
    for unit in np.ndindex(*[shape[a] for a in others]):
        w = np.zeros(shape, dtype="float32")
        index = [slice(None)] * len(shape)
        for a, i in zip(others, unit):
            index[a] = i
        w[tuple(index)] = 1.0
        variable.assign(w)
        out = np.asarray(layer(x)).reshape(-1, n_units)
        live = np.flatnonzero(np.any(out != 0, axis=0))
        assert len(live) == 1, (unit, live)
        touched.append(int(live[0]))
    assert sorted(touched) == list(range(n_units))  # each output unit once


def test_separable_conv_depthwise_and_pointwise_kernels():
    layer = _built(keras.layers.SeparableConv2D(5, 3, depth_multiplier=2), (1, 6, 6, 4))
    assert tuple(layer.depthwise_kernel.shape) == (3, 3, 4, 2)
    assert unit_axes(layer, layer.depthwise_kernel) == [0, 1]
    assert tuple(layer.pointwise_kernel.shape) == (1, 1, 8, 5)
    assert unit_axes(layer, layer.pointwise_kernel) == [0, 1, 2]
    assert unit_axes(layer, layer.bias) == []
    one_d = _built(keras.layers.SeparableConv1D(5, 3), (1, 6, 4))
    assert unit_axes(one_d, one_d.depthwise_kernel) == [0]
    assert unit_axes(one_d, one_d.pointwise_kernel) == [0, 1]


def test_embedding_keeps_all_but_last():
    layer = _built(keras.layers.Embedding(10, 3), (None,))
    assert unit_axes(layer, layer.embeddings) == [0]


def test_multi_head_attention_projections():
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3)
    mha(np.zeros((1, 4, 6)), np.zeros((1, 4, 6)))
    query, output = mha._query_dense, mha._output_dense
    assert unit_axes(query, query.kernel) == [0]  # (6, 2, 3): reduce over the input dim
    assert unit_axes(output, output.kernel) == [0, 1]  # (2, 3, 6): over heads and size
    # Given the composite layer, the projection that holds the variable decides.
    assert unit_axes(mha, query.kernel) == [0]
    assert unit_axes(mha, output.kernel) == [0, 1]


def test_wrappers_and_models_look_inside():
    inner = keras.layers.DepthwiseConv2D(3, use_bias=False)
    wrapped = keras.layers.TimeDistributed(inner)
    model = keras.Sequential([keras.Input((2, 5, 5, 4)), wrapped])
    assert unit_axes(wrapped, inner.kernel) == [0, 1]
    assert unit_axes(model, inner.kernel) == [0, 1]
    # Identified by name when the variable is not the attribute itself.
    transposed = _built(keras.layers.Conv2DTranspose(5, 3), (1, 4, 4, 4))
    stand_in = keras.Variable(np.zeros((3, 3, 5, 4)), name="kernel")
    assert unit_axes(transposed, stand_in) == [0, 1, 3]
    assert unit_axes(transposed, keras.Variable(np.zeros((3, 3, 5, 4)), name="other")) == [
        0, 1, 2]


def test_defaults_and_bad_arguments():
    conv = _built(keras.layers.DepthwiseConv2D(3), (1, 5, 5, 4))
    assert unit_axes(conv, conv.bias) == []  # 1-D: each element
    assert unit_axes(conv, keras.Variable(np.float32(1.0))) == []
    odd = keras.layers.EinsumDense("ab,bc->ac", output_shape=3)
    odd.build((None, 4))
    assert unit_axes(odd, odd.kernel) == [0]
    with pytest.raises(TypeError, match="`layer` must be a keras.layers.Layer. Received: layer=3"):
        unit_axes(3, conv.kernel)
    with pytest.raises(TypeError, match="Received: variable='kernel'"):
        unit_axes(conv, "kernel")


def test_reduction_axes():
    assert reduction_axes("auto", 4) == [0, 1, 2]
    assert reduction_axes("auto", 1) == [] and reduction_axes("auto", 0) == []
    assert reduction_axes([-1, 0], 3) == [0, 2]
    with pytest.raises(ValueError, match=r"rank 2. Received: axis=\[0, 2\]"):
        reduction_axes([0, 2], 2)


# --- MaxNorm with the unit of the layer ----------------------------------------


def test_max_norm_with_unit_axes_bounds_each_depthwise_filter():
    layer = _built(keras.layers.DepthwiseConv2D(3, use_bias=False), (1, 5, 5, 4))
    ones = np.ones((3, 3, 4, 1), dtype="float32")
    projected = np.asarray(MaxNorm(1.0, axis=unit_axes(layer, layer.kernel))(ones))
    # NumPy: each (channel, multiplier) filter has norm 3 -> scaled by 1/3.
    norms = np.sqrt((projected.astype("float64") ** 2).sum(axis=(0, 1)))
    np.testing.assert_allclose(norms, np.ones((4, 1)), rtol=1e-6)
    np.testing.assert_allclose(projected, ones / 3.0, rtol=1e-6)
    # A bare MaxNorm keeps the documented all-but-last rule: the 4 filters
    # (norm sqrt(36) = 6 together) are projected jointly, each to norm 0.5.
    joint = np.asarray(MaxNorm(1.0)(ones))
    np.testing.assert_allclose(
        np.sqrt((joint.astype("float64") ** 2).sum(axis=(0, 1))), 0.5, rtol=1e-6)


def test_max_norm_with_unit_axes_bounds_each_transposed_output_channel():
    layer = _built(keras.layers.Conv2DTranspose(5, 3, use_bias=False), (1, 4, 4, 4))
    w = np.ones((3, 3, 5, 4), dtype="float32")  # output channel fan-in: sqrt(36) = 6
    w[:, :, 1, :] *= 0.1  # this one inside the ball (0.6)
    projected = np.asarray(MaxNorm(0.8, axis=unit_axes(layer, layer.kernel))(w))
    fan_in = np.sqrt((projected.astype("float64") ** 2).sum(axis=(0, 1, 3)))
    assert np.all(fan_in <= 0.8 * (1 + 1e-6))
    np.testing.assert_allclose(fan_in, [0.8, 0.6, 0.8, 0.8, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(projected[:, :, 1, :], w[:, :, 1, :])
    # The bare rule bounds each input channel's slice instead: with 2 output
    # and 4 input channels, each output channel keeps half of 4 unit-norm
    # slices, a fan-in norm of sqrt(4 / 2) = 1.41 > 1.
    bare = np.asarray(MaxNorm(1.0)(np.ones((3, 3, 2, 4), "float32")))
    fan_in = np.sqrt((bare.astype("float64") ** 2).sum(axis=(0, 1, 3)))
    np.testing.assert_allclose(fan_in, [np.sqrt(2.0)] * 2, rtol=1e-6)


# --- sparsity -------------------------------------------------------------------


def test_sparsity_counts_depthwise_filters():
    model = keras.Sequential(
        [keras.Input((5, 5, 4)), keras.layers.DepthwiseConv2D(3, name="dw")], name="net")
    kernel = model.get_layer("dw").kernel
    w = np.random.default_rng(1).normal(size=(3, 3, 4, 1)).astype("float32") + 5.0
    w[:, :, 2, 0] = 0.0  # one channel's filter
    kernel.assign(w)
    rows = keras_regkit.sparsity(model, print_fn=None)
    row = next(r for r in rows if r["variable"] == kernel.path)
    dead = np.all(w == 0, axis=(0, 1))  # NumPy: per (channel, multiplier)
    assert (row["zero_units"], row["units"]) == (int(dead.sum()), dead.size) == (1, 4)
    assert row["zeros"] == 9
    assert rows[-1]["units"] == 4 and rows[-1]["zero_units"] == 1


def test_sparsity_counts_transposed_channels_and_attention_projections():
    inputs = keras.Input((4, 6))
    x = keras.layers.MultiHeadAttention(2, 3, name="mha")(inputs, inputs)
    x = keras.layers.Reshape((4, 6, 1))(x)
    outputs = keras.layers.Conv2DTranspose(5, 3, name="up")(x)
    model = keras.Model(inputs, outputs)
    mha = model.get_layer("mha")
    up = model.get_layer("up").kernel  # (3, 3, 5, 1)
    w = np.ones((3, 3, 5, 1), dtype="float32")
    w[:, :, 3, :] = 0.0  # output channel 3
    up.assign(w)
    query = np.ones((6, 2, 3), dtype="float32")
    query[:, 1, 2] = 0.0  # head 1, size index 2
    mha._query_dense.kernel.assign(query)
    rows = {r["variable"]: r for r in keras_regkit.sparsity(model, print_fn=None)}
    assert (rows[up.path]["zero_units"], rows[up.path]["units"]) == (1, 5)
    q = rows[mha._query_dense.kernel.path]
    assert (q["zero_units"], q["units"]) == (1, 6)  # 2 heads x 3
