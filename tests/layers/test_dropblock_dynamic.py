"""DropBlock2D on maps of unknown size (`keras.Input((None, None, C))`) and
with a rectangular `block_size=(height, width)`.

"Unknown size" is what a traced step sees: on TensorFlow a function traced
with `None` spatial sizes (as `fit` on a tf.data pipeline of several image
sizes does); on JAX shapes are always concrete, so there it is the same model
under `jax.jit`. The references are NumPy: the kept fraction's exact mean and
variance (from `tests/layers/test_layers.py`, written from the paper) with the block
clipped to the map, and unions of whole `block_h x block_w` rectangles.
"""

import functools
import itertools
import re

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import DropBlock2D
from tests import helpers
from tests.layers.test_layers import _kept_moments
from tests.layers.test_layers import _maps

CHANNELS = 3
# Smaller than a 7 x 7 block, larger, and smaller on one axis only.
SIZES = [(4, 4), (16, 16), (5, 12)]


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _unknown_size_model(layer):
    inputs = keras.Input((None, None, CHANNELS))
    return keras.Model(inputs, layer(inputs, training=True))


def _unknown_size_step(layer, jit_compile):
    """`x -> layer(x, training=True)` compiled once for every spatial size."""
    model = _unknown_size_model(layer)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        spec = tf.TensorSpec((None, None, None, CHANNELS), "float32")
        step = tf.function(model, input_signature=[spec], jit_compile=jit_compile)
        return lambda x: step(x).numpy()
    if keras.backend.backend() == "jax" and jit_compile:
        import jax

        step = jax.jit(lambda state, x: model.stateless_call([], state, x))

        def call(x):
            out, state = step([v.value for v in model.non_trainable_variables], x)
            for variable, value in zip(model.non_trainable_variables, state):
                variable.assign(value)  # the seed generator advances
            return _np(out)

        return call
    return lambda x: _np(model(x))


@functools.lru_cache(maxsize=None)
def _moments(height, width, block_h, block_w, gamma):
    return _kept_moments(height, width, block_h, block_w, gamma)


def _paper_gamma(rate, height, width, block_h, block_w):
    """Ghiasi et al.'s gamma, eq. (1), for a block clipped to the map."""
    block_h, block_w = min(block_h, height), min(block_w, width)
    return rate * height * width / (
        block_h * block_w * (height - block_h + 1) * (width - block_w + 1))


# ---------------------------------------------------------------- training


def _batches(sizes, steps, batch=4):
    rng = np.random.default_rng(0)
    for step in range(steps):
        height, width = sizes[step % len(sizes)]
        x = rng.normal(size=(batch, height, width, CHANNELS)).astype("float32")
        yield x, x.mean(axis=(1, 2, 3))[:, None]


def _small_convnet():
    inputs = keras.Input((None, None, CHANNELS))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = DropBlock2D(0.3, block_size=7, seed=0, name="drop")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1)(x))


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_on_a_generator_of_maps_smaller_and_larger_than_the_block(jit_compile):
    model = _small_convnet()
    model.compile("sgd", "mse", jit_compile=jit_compile)
    steps = 2 * len(SIZES)
    history = model.fit(_batches(SIZES, steps), steps_per_epoch=steps, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.tensorflow_only
def test_fit_on_a_tf_data_pipeline_of_several_image_sizes():
    import tensorflow as tf

    steps = 2 * len(SIZES)
    data = tf.data.Dataset.from_generator(
        lambda: _batches(SIZES, steps),
        output_signature=(tf.TensorSpec((None, None, None, CHANNELS), "float32"),
                          tf.TensorSpec((None, 1), "float32")))
    model = _small_convnet()
    model.compile("sgd", "mse", jit_compile=True)
    history = model.fit(data, epochs=2, verbose=0,
                        callbacks=[keras_regkit.DropBlockSchedule()])
    assert np.isfinite(history.history["loss"]).all()


# ---------------------------------------------------------------- drop rate


def test_unknown_size_drops_exactly_what_a_known_size_drops_under_one_seed():
    for height, width in SIZES:
        x = np.ones((8, height, width, CHANNELS), "float32")
        known = _np(DropBlock2D(0.3, 7, seed=3)(x, training=True))
        unknown = _unknown_size_step(DropBlock2D(0.3, 7, seed=3), jit_compile=False)(x)
        np.testing.assert_array_equal(unknown, known, err_msg=f"{height} x {width}")
        assert 0 < (known == 0).mean() < 0.6


@pytest.mark.parametrize("jit_compile", [False, True])
def test_unknown_size_kept_fraction_within_4_sigma_of_the_clipped_block(jit_compile):
    rate, block, batch, draws = 0.3, 7, 128, 3
    layer = DropBlock2D(rate, block, seed=1)
    step = _unknown_size_step(layer, jit_compile)  # one step, one layer: all sizes
    for height, width in SIZES:
        gamma = _paper_gamma(rate, height, width, block, block)
        assert layer.gamma(height, width) == pytest.approx(gamma, rel=1e-12)
        x = np.ones((batch, height, width, CHANNELS), "float32")
        maps = np.concatenate([_maps(step(x), "channels_last") for _ in range(draws)])
        fractions = (maps > 0).mean(axis=(1, 2))
        mean, variance = _moments(height, width, min(block, height), min(block, width), gamma)
        sigma = np.sqrt(variance / len(fractions))
        assert abs(fractions.mean() - mean) < 4 * sigma, (height, width)
        if height < block and width < block:  # whole channels, as SpatialDropout2D
            flat = maps.reshape(len(maps), -1) > 0
            assert np.all(flat.all(axis=1) | ~flat.any(axis=1))


# ---------------------------------------------------------------- rectangular blocks


def _rectangles(dropped, block_h, block_w):
    """The union of the whole `block_h x block_w` rectangles inside `dropped`."""
    height, width = dropped.shape
    block_h, block_w = min(block_h, height), min(block_w, width)
    union = np.zeros_like(dropped)
    for i, j in itertools.product(range(height - block_h + 1), range(width - block_w + 1)):
        if dropped[i:i + block_h, j:j + block_w].all():
            union[i:i + block_h, j:j + block_w] = True
    return union


@pytest.mark.parametrize("unknown", [False, True])
def test_a_pair_block_size_drops_rectangles(unknown):
    rate, (block_h, block_w), size = 0.1, (2, 5), 12
    layer = DropBlock2D(rate, block_size=(block_h, block_w), seed=0)
    assert layer.gamma(size, size) == pytest.approx(0.1 * 144 / (2 * 5 * 11 * 8))
    x = np.ones((64, size, size, CHANNELS), "float32")
    out = _unknown_size_step(layer, False)(x) if unknown else _np(layer(x, training=True))
    single = 0
    for dropped in _maps(out, "channels_last") == 0:
        np.testing.assert_array_equal(_rectangles(dropped, block_h, block_w), dropped)
        if dropped.sum() == block_h * block_w:  # one block alone: its shape
            rows, cols = np.nonzero(dropped)
            assert (np.ptp(rows) + 1, np.ptp(cols) + 1) == (block_h, block_w)
            single += 1
    assert single > 20


@pytest.mark.parametrize("jit_compile", [False, True])
def test_a_pair_block_size_is_clipped_per_axis_on_an_unknown_size(jit_compile):
    rate, block, (height, width) = 0.3, (3, 9), (6, 6)  # width clipped: 3 x 6 stripes
    layer = DropBlock2D(rate, block_size=block, seed=2)
    gamma = 0.3 * 36 / (3 * 6 * 4 * 1)
    assert layer.gamma(height, width) == pytest.approx(gamma)
    x = np.ones((128, height, width, CHANNELS), "float32")
    maps = _maps(_unknown_size_step(layer, jit_compile)(x), "channels_last")
    for dropped in maps == 0:
        np.testing.assert_array_equal(_rectangles(dropped, *block), dropped)
    mean, variance = _moments(height, width, 3, 6, gamma)
    fractions = (maps > 0).mean(axis=(1, 2))
    assert abs(fractions.mean() - mean) < 4 * np.sqrt(variance / len(fractions))


def test_a_pair_block_size_round_trips_through_json_and_keras_files(tmp_path):
    layer = DropBlock2D(0.1, block_size=(3, 5), seed=4)
    assert layer.block_size == [3, 5]  # a list, as JSON gives it back
    assert helpers.config_round_trip(layer).block_size == [3, 5]
    old = DropBlock2D(0.1, block_size=5).get_config()
    assert DropBlock2D.from_config(old).block_size == 5  # an int stays an int
    model = _unknown_size_model(DropBlock2D(0.1, block_size=(2, 4), name="drop"))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.get_layer("drop").block_size == [2, 4]


def test_insert_dropblock_and_its_plan_take_a_pair():
    inputs = keras.Input((8, 8, 4))
    shortcut = keras.layers.Conv2D(4, 1)(inputs)
    branch = keras.layers.ReLU()(keras.layers.Conv2D(4, 3, padding="same")(inputs))
    model = keras.Model(inputs, keras.layers.Add()([shortcut, branch]))
    lines = []
    rows = keras_regkit.dropblock_plan(model, block_size=(3, 1), print_fn=lines.append)
    inserted = [row for row in rows if not row["skipped"]]
    assert inserted and all(row["block_size"] == [3, 1] for row in inserted)
    assert all("[3, 1]" in line for line in lines[2:])
    new = keras_regkit.insert_dropblock(model, block_size=(3, 1))
    blocks = [layer for layer in new.layers if isinstance(layer, DropBlock2D)]
    assert blocks and all(layer.block_size == [3, 1] for layer in blocks)
    with pytest.raises(ValueError, match=re.escape("Received: block_size=(3, 0)") + "$"):
        keras_regkit.insert_dropblock(model, block_size=(3, 0))


@pytest.mark.parametrize("block_size, error", [
    ((3,), ValueError),
    ([3, 4, 5], ValueError),
    ((3, 0), ValueError),
    ((-1, 3), ValueError),
    ((3, 2.5), TypeError),
    ((True, 3), TypeError),
    (2.0, TypeError),
    ("7", TypeError),
    (None, TypeError),
])
def test_bad_block_size_is_refused(block_size, error):
    expected = re.escape(f"Received: block_size={block_size!r}") + "$"
    with pytest.raises(error, match=expected) as raised:
        DropBlock2D(0.1, block_size=block_size)
    assert "`block_size`" in str(raised.value)
