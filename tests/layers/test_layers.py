"""Tests for keras_regkit.layers: DropPath, DropBlock2D, DropBlockSchedule.

The references are NumPy, written from the papers: the kept fraction of
DropBlock is compared with its exact mean and variance under the seed
probability gamma (each unit is kept iff none of the seeds whose block covers
it fired), not with the layer's own output.
"""

import itertools

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import DropBlock2D
from keras_regkit import DropBlockSchedule
from keras_regkit import DropPath
from tests import helpers


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


# ---------------------------------------------------------------- DropPath


def test_droppath_kept_fraction_within_3_sigma_over_many_draws():
    rate, n, draws = 0.3, 4000, 5
    layer = DropPath(rate, seed=0)
    x = np.ones((n, 3), "float32")
    kept = np.concatenate([_np(layer(x, training=True))[:, 0] > 0 for _ in range(draws)])
    sigma = np.sqrt(rate * (1 - rate) / kept.size)  # binomial
    assert abs(kept.mean() - (1 - rate)) < 3 * sigma


def test_droppath_is_per_sample_with_exact_scaling():
    rate = 0.3
    x = np.random.default_rng(0).normal(size=(64, 4, 4, 2)).astype("float32")
    out = _np(DropPath(rate, seed=1)(x, training=True))
    rows = out.reshape(64, -1)
    dropped = np.all(rows == 0, axis=1)
    expected = x * np.float32(1 / (1 - rate))  # x times 1 / (1 - rate), in float32
    np.testing.assert_array_equal(out[~dropped], expected[~dropped])
    # Per sample, not per batch: both kinds in one batch (fails w.p. ~1e-10).
    assert 0 < dropped.sum() < 64


def test_droppath_with_rate_0_is_the_identity_in_training():
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    np.testing.assert_array_equal(_np(DropPath(0.0)(x, training=True)), x)


@pytest.mark.tensorflow_only
def test_droppath_gradient_is_the_mask_over_keep():
    import tensorflow as tf

    x = tf.Variable(np.random.default_rng(0).normal(size=(16, 3)).astype("float32"))
    weights = np.arange(1, 49, dtype="float32").reshape(16, 3)
    with tf.GradientTape() as tape:
        out = DropPath(0.25, seed=3)(x, training=True)
        value = tf.reduce_sum(out * weights)
    grad = tape.gradient(value, x).numpy()
    kept = np.any(out.numpy() != 0, axis=1, keepdims=True)
    np.testing.assert_allclose(grad, np.where(kept, weights / 0.75, 0.0), rtol=1e-6)


# ---------------------------------------------------------------- DropBlock2D


def _kept_moments(height, width, block_h, block_w, gamma):
    """Exact mean and variance of the kept fraction of one map (NumPy).

    Seeds sit at the top-left corners `(i, j)` of the blocks that fit (the
    valid region); unit `p` is kept iff no seed of `S_p` (those covering it)
    fires, so P(p kept) = (1 - gamma)^|S_p| and
    P(p and q kept) = (1 - gamma)^|S_p u S_q|.
    """
    covers = []
    for y, x in itertools.product(range(height), range(width)):
        covers.append({(i, j) for i in range(max(0, y - block_h + 1), min(y, height - block_h) + 1)
                       for j in range(max(0, x - block_w + 1), min(x, width - block_w) + 1)})
    q = 1.0 - gamma
    p_kept = np.array([q ** len(s) for s in covers])
    joint = np.array([[q ** len(a | b) for b in covers] for a in covers])
    n = len(covers)
    mean = p_kept.mean()
    variance = (joint - np.outer(p_kept, p_kept)).sum() / n**2
    return mean, variance


def _paper_gamma(rate, height, width, block):
    """Ghiasi et al.'s gamma, eq. (1), extended to non-square maps."""
    return rate / block**2 * (height * width) / ((height - block + 1) * (width - block + 1))


def _maps(out, data_format):
    """(num_maps, H, W) view of a batch, one map per sample and channel."""
    if data_format == "channels_last":
        out = np.moveaxis(out, -1, 1)
    return out.reshape(-1, out.shape[2], out.shape[3])


@pytest.mark.parametrize("data_format, height, width", [
    ("channels_last", 8, 8), ("channels_first", 8, 8), ("channels_last", 6, 10)])
def test_dropblock_kept_fraction_within_3_sigma(data_format, height, width):
    rate, block = 0.2, 3
    shape = (256, height, width, 4) if data_format == "channels_last" else (256, 4, height, width)
    layer = DropBlock2D(rate, block_size=block, data_format=data_format, seed=0)
    gamma = _paper_gamma(rate, height, width, block)
    assert layer.gamma(height, width) == pytest.approx(gamma, rel=1e-12)
    maps = np.concatenate([_maps(_np(layer(np.ones(shape, "float32"), training=True)),
                                 data_format) for _ in range(2)])
    fractions = (maps > 0).mean(axis=(1, 2))
    mean, variance = _kept_moments(height, width, block, block, gamma)
    sigma = np.sqrt(variance / len(fractions))
    assert abs(fractions.mean() - mean) < 3 * sigma
    # The paper's approximation: about 1 - rate are kept (overlaps keep a bit more).
    assert 1 - rate < mean < 1 - rate + 0.05


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_dropblock_drops_whole_blocks_inside_the_valid_region(data_format):
    height, width, block = 9, 7, 3
    shape = (64, height, width, 3) if data_format == "channels_last" else (64, 3, height, width)
    out = _np(DropBlock2D(0.15, block, data_format=data_format, seed=2)(
        np.ones(shape, "float32"), training=True))
    maps = _maps(out, data_format)
    dropped_any = 0
    for dropped in maps == 0:
        # Every dropped unit lies in a fully dropped block whose corner is in
        # the valid region, and the union of those blocks is the dropped set.
        union = np.zeros_like(dropped)
        for i, j in itertools.product(range(height - block + 1), range(width - block + 1)):
            if dropped[i:i + block, j:j + block].all():
                union[i:i + block, j:j + block] = True
        np.testing.assert_array_equal(union, dropped)
        dropped_any += dropped.any()
    assert dropped_any > 10


def test_block_larger_than_the_map_drops_whole_channels():
    rate, maps_per_draw = 0.3, 2000
    layer = DropBlock2D(rate, block_size=7, seed=5)
    assert layer.gamma(3, 5) == pytest.approx(rate)  # one valid position
    out = _np(layer(np.ones((maps_per_draw // 4, 3, 5, 4), "float32"), training=True))
    maps = _maps(out, "channels_last")
    kept = np.array([m.all() for m in maps > 0])
    dropped = np.array([not m.any() for m in maps > 0])
    assert np.all(kept | dropped)  # all or nothing
    sigma = np.sqrt(rate * (1 - rate) / kept.size)
    assert abs(kept.mean() - (1 - rate)) < 3 * sigma


def test_dropblock_with_rate_0_is_the_identity_in_training():
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 3)).astype("float32")
    np.testing.assert_array_equal(_np(DropBlock2D(0.0, 3)(x, training=True)), x)


def test_dropblock_rate_factor_scales_the_rate():
    x = np.ones((16, 8, 8, 2), "float32")
    layer = DropBlock2D(0.5, 3, seed=0)
    layer.build(x.shape)
    layer.rate_factor.assign(0.0)
    np.testing.assert_array_equal(_np(layer(x, training=True)), x)
    layer.rate_factor.assign(1.0)
    assert (_np(layer(x, training=True)) == 0).mean() > 0.2


@pytest.mark.tensorflow_only
def test_dropblock_reads_the_factor_inside_a_traced_function():
    import tensorflow as tf

    x = np.ones((16, 8, 8, 2), "float32")
    layer = DropBlock2D(0.5, 3, seed=0)
    layer.build(x.shape)
    step = tf.function(lambda t: layer(t, training=True))
    layer.rate_factor.assign(0.0)
    np.testing.assert_array_equal(step(x).numpy(), x)
    layer.rate_factor.assign(1.0)  # same trace: no retracing needed
    assert (step(x).numpy() == 0).mean() > 0.2


@pytest.mark.tensorflow_only
def test_dropblock_gradient_is_mask_times_scale():
    import tensorflow as tf

    x = tf.Variable(np.random.default_rng(0).uniform(1, 2, (4, 8, 8, 2)).astype("float32"))
    with tf.GradientTape() as tape:
        out = DropBlock2D(0.3, 3, seed=1)(x, training=True)
        value = tf.reduce_sum(out)
    grad = tape.gradient(value, x).numpy()
    kept = out.numpy() != 0
    np.testing.assert_allclose(grad, np.where(kept, kept.size / kept.sum(), 0.0), rtol=1e-5)


def test_dropblock_refuses_a_tensor_that_is_not_a_batch_of_maps():
    with pytest.raises(ValueError, match="ndim=4"):
        DropBlock2D(0.1, 3)(np.ones((2, 8, 8), "float32"))


# ---------------------------------------------------------------- DropBlockSchedule


def _model_with_dropblock(nested=False):
    inputs = keras.Input((6, 6, 2))
    x = DropBlock2D(0.2, 3, name="drop")(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    if nested:
        outer_in = keras.Input((6, 6, 2))
        model = keras.Model(outer_in, model(outer_in))
    model.compile("sgd", "mse")
    return model


def _factors(model, layer, **fit_kwargs):
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: seen.append(float(_np(layer.rate_factor))))
    schedule = fit_kwargs.pop("schedule")
    model.fit(np.ones((4, 6, 6, 2)), np.ones((4, 1)), verbose=0,
              callbacks=[schedule, record], **fit_kwargs)
    return seen


def test_schedule_ramps_linearly_over_the_fit():
    model = _model_with_dropblock()
    seen = _factors(model, model.get_layer("drop"), epochs=4, schedule=DropBlockSchedule())
    assert seen == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_schedule_ramp_length_initial_epoch_and_nested_models():
    model = _model_with_dropblock(nested=True)
    layer = model.layers[1].get_layer("drop")
    seen = _factors(model, layer, epochs=3, schedule=DropBlockSchedule(epochs=2))
    assert seen == pytest.approx([0.5, 1.0, 1.0])
    seen = _factors(model, layer, epochs=3, initial_epoch=1,
                    schedule=DropBlockSchedule(epochs=4))
    assert seen == pytest.approx([0.5, 0.75])


def test_schedule_without_dropblock_layers_is_refused():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="has no DropBlock2D layer"):
        model.fit(np.ones((2, 3)), np.ones((2, 1)), verbose=0,
                  callbacks=[DropBlockSchedule()])


# ---------------------------------------------------------------- serialization


def test_schedule_config_round_trip():  # the layers: test_layer_checklist.py
    assert helpers.config_round_trip(DropBlockSchedule(epochs=7)).epochs == 7


def test_data_format_defaults_to_the_keras_setting():
    assert DropBlock2D(0.1).data_format == keras.config.image_data_format()
    assert DropBlock2D(0.1).block_size == 7


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("make, error, match", [
    (lambda: DropPath(1.0), ValueError, r"`rate` must be in the interval \[0, 1\). Received: rate=1.0"),
    (lambda: DropPath(-0.1), ValueError, "Received: rate=-0.1"),
    (lambda: DropPath("0.1"), TypeError, "Received: rate='0.1'"),
    (lambda: DropPath(0.1, seed=1.5), TypeError, "Received: seed=1.5"),
    (lambda: DropPath(0.1, seed=True), TypeError, "Received: seed=True"),
    (lambda: DropBlock2D(1.5), ValueError, "Received: rate=1.5"),
    (lambda: DropBlock2D(0.1, block_size=0), ValueError, "Received: block_size=0"),
    (lambda: DropBlock2D(0.1, block_size=2.0), TypeError, "Received: block_size=2.0"),
    (lambda: DropBlock2D(0.1, data_format="NHWC"), ValueError, "Received: data_format='NHWC'"),
    (lambda: DropBlock2D(0.1).gamma(0, 4), ValueError, "Received: height=0"),
    (lambda: DropBlockSchedule(epochs=0), ValueError, "Received: epochs=0"),
    (lambda: DropBlockSchedule(epochs=2.5), TypeError, "Received: epochs=2.5"),
])
def test_bad_arguments_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_exported_from_the_package():
    for name in ("DropPath", "DropBlock2D", "DropBlockSchedule"):
        assert name in keras_regkit.__all__
        assert getattr(keras_regkit, name) is getattr(keras_regkit.layers, name)
