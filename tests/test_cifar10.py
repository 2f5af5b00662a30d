"""Tests for keras_regkit.baselines.cifar10: the VGG-like model, the variants, the data pipeline.

Never needs the real CIFAR-10: the data tests use synthetic `tf.data` input,
a stand-in for `tfds.load`, or `tfds.testing.mock_data` (offline).
"""

import math
import re

import keras
import numpy as np
import pytest

from keras_regkit import constraints
from keras_regkit import optimizers
from keras_regkit import regularizers
from keras_regkit.baselines import cifar10

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")


def _layout(model):
    """(class name, key attributes) of each layer, for comparing with the recipe."""
    rows = []
    for layer in model.layers:
        name = type(layer).__name__
        if isinstance(layer, keras.layers.Conv2D):
            rows.append((name, layer.filters, tuple(layer.kernel_size), layer.padding,
                         layer.activation.__name__))
        elif isinstance(layer, keras.layers.Dense):
            rows.append((name, layer.units, layer.activation.__name__))
        elif isinstance(layer, keras.layers.Dropout):
            rows.append((name, layer.rate))
        elif isinstance(layer, keras.layers.MaxPooling2D):
            rows.append((name, tuple(layer.pool_size)))
        else:
            rows.append((name,))
    return rows


def _block(filters, batch_norm=False, dropout=True):
    conv = ("Conv2D", filters, (3, 3), "same", "relu")
    rows = [conv, ("BatchNormalization",)] * 2 if batch_norm else [conv, conv]
    rows.append(("MaxPooling2D", (2, 2)))
    if dropout:
        rows.append(("Dropout", 0.25))
    return rows


def _head(dropout=True):
    rows = [("Flatten",), ("Dense", 256, "relu")]
    if dropout:
        rows.append(("Dropout", 0.5))
    return rows + [("Dense", 10, "softmax")]


def _expected_params(filters, fc=256, classes=10, batch_norm=False):
    """Parameter count from the layer formulas (3x3 convs, 2x2 pools, 32x32x3 input)."""
    total, channels, side = 0, 3, 32
    for f in filters:
        for _ in range(2):
            total += 3 * 3 * channels * f + f
            if batch_norm:
                total += 4 * f
            channels = f
        side //= 2
    total += side * side * channels * fc + fc
    return total + fc * classes + classes


def _convs(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def _denses(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]


# ---------------------------------------------------------------- the model


def test_two_block_layout_is_the_classic_recipe():
    model = cifar10.build_vgg_like()
    expected = [("InputLayer",)] + _block(32) + _block(64) + _head()
    assert _layout(model) == expected
    assert model.output_shape == (None, 10)
    assert model.count_params() == _expected_params([32, 64])
    for conv in _convs(model):
        assert type(conv.kernel_regularizer) is regularizers.L2
        assert conv.kernel_regularizer.l2 == pytest.approx(1e-4)
        assert conv.kernel_constraint is None
    for dense in _denses(model):
        assert dense.kernel_regularizer is None and dense.kernel_constraint is None


def test_three_blocks_batch_norm_max_norm():
    model = cifar10.build_vgg_like(
        l2=5e-4, blocks=3, batch_norm=True, max_norm=2.5
    )
    expected = (
        [("InputLayer",)]
        + _block(32, batch_norm=True)
        + _block(64, batch_norm=True)
        + _block(128, batch_norm=True)
        + _head()
    )
    assert _layout(model) == expected
    assert model.get_layer("flatten").output.shape[-1] == 4 * 4 * 128
    assert model.count_params() == _expected_params([32, 64, 128], batch_norm=True)
    kernels = _convs(model) + _denses(model)
    assert len(kernels) == 8
    for layer in kernels:
        assert type(layer.kernel_constraint) is constraints.MaxNorm
        assert layer.kernel_constraint.max_value == pytest.approx(2.5)
    for conv in _convs(model):
        assert conv.kernel_regularizer.l2 == pytest.approx(5e-4)


@pytest.mark.parametrize(
    "l2, l1, expected",
    [
        (0.0, 0.0, None),
        (None, 0.0, None),
        (0.0, 1e-5, ("L1", {"l1": 1e-5})),
        (1e-4, 1e-5, ("ElasticNet", {"l1": 1e-5, "l2": 1e-4})),
    ],
)
def test_penalty_choice(l2, l1, expected):
    model = cifar10.build_vgg_like(l2=l2, l1=l1, dropout=False)
    assert [type(layer).__name__ for layer in model.layers].count("Dropout") == 0
    for conv in _convs(model):
        if expected is None:
            assert conv.kernel_regularizer is None
        else:
            assert type(conv.kernel_regularizer).__name__ == expected[0]
            assert conv.kernel_regularizer.get_config() == pytest.approx(expected[1])
    if expected is None:
        assert model.losses == []


def test_penalty_in_loss_matches_numpy():
    model = cifar10.build_vgg_like(l2=3e-3, dropout=False, regularize_dense=True)
    kernels = [layer.kernel.numpy() for layer in _convs(model)]
    kernels.append(model.get_layer("fc").kernel.numpy())
    expected = 3e-3 * sum(float(np.sum(k.astype(np.float64) ** 2)) for k in kernels)
    assert len(model.losses) == 5
    assert float(keras.ops.sum(model.losses)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"blocks": 0}, "Received: blocks=0"),
        ({"blocks": 6}, "Received: blocks=6"),
        ({"l2": -1.0}, "Received: l2=-1"),
        ({"max_norm": 0.0}, "Received: max_norm=0"),
        ({"l1": -0.5}, "Received: l1=-0.5"),
    ],
)
def test_invalid_model_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cifar10.build_vgg_like(**kwargs)


# ---------------------------------------------------------------- the variants


def test_variant_names():
    assert list(cifar10.VARIANTS) == [
        "none", "l2", "dropout", "l2+dropout", "maxnorm+dropout",
        "adamw", "elastic-net", "prox-l1",
        "resnet", "resnet+droppath", "resnet+dropblock",
        "sam", "sam+dropout",
    ]
    assert cifar10.DEFAULT_VARIANT == "l2+dropout"
    with pytest.raises(ValueError, match="Received: variant='l3'"):
        cifar10.get_variant("l3")


@pytest.mark.parametrize("name", [name for name, variant in cifar10.VARIANTS.items()
                                  if variant.architecture == "vgg" and not variant.sam_rho])
def test_each_variant_builds_compiles_and_trains(name):
    variant = cifar10.VARIANTS[name]
    model = cifar10.build_variant(name)
    convs, denses = _convs(model), _denses(model)
    dropouts = [layer.rate for layer in model.layers
                if isinstance(layer, keras.layers.Dropout)]
    assert dropouts == ([0.25, 0.25, 0.5] if variant.dropout else [])
    for conv in convs:
        penalty = conv.kernel_regularizer
        if variant.l2 and variant.l1:
            assert type(penalty) is regularizers.ElasticNet
            assert (penalty.l1, penalty.l2) == pytest.approx((variant.l1, variant.l2))
        elif variant.l2:
            assert type(penalty) is regularizers.L2
            assert penalty.l2 == pytest.approx(variant.l2)
        else:
            assert penalty is None
    fc_penalty = model.get_layer("fc").kernel_regularizer
    if variant.regularize_dense and variant.l2:
        assert type(fc_penalty) is type(convs[0].kernel_regularizer)
        assert fc_penalty.get_config() == pytest.approx(convs[0].kernel_regularizer.get_config())
    else:
        assert fc_penalty is None
    assert model.get_layer("predictions").kernel_regularizer is None
    for layer in convs + denses:
        if variant.max_norm:
            assert layer.kernel_constraint.max_value == pytest.approx(3.0)
        else:
            assert layer.kernel_constraint is None
    optimizer = model.optimizer
    if variant.normalized_decay or variant.decoupled_l1:
        assert isinstance(optimizer, optimizers.DecoupledWeightDecay)
        config = optimizer.get_config()
        # Loshchilov & Hutter's normalized decay for the default run
        # (batch 128, 50,000 images, 50 epochs): lambda_norm * sqrt(b / (B T)).
        expected = variant.normalized_decay * math.sqrt(128 / (50000 * 50))
        assert config["weight_decay"] == pytest.approx(expected)
        assert config["decay_scaling"] == "schedule"
        assert config["l1"] == pytest.approx(variant.decoupled_l1)
        assert type(optimizer.inner_optimizer) is keras.optimizers.Adam
    else:
        assert type(optimizer) is keras.optimizers.Adam
        assert float(optimizer.learning_rate) == pytest.approx(1e-3)
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 3), dtype=np.float32)
    y = np.array([0, 1, 2, 3])
    loss = model.train_on_batch(x, y)
    loss = loss[0] if isinstance(loss, (list, tuple)) else loss
    assert np.isfinite(loss)


# What a variant's one-line description (`--help`, the README table) says, read
# back from the text: (regex, fields its groups give). Whatever a description
# does not mention must be off.
_DESCRIBED = [
    (r"\bL2 (?:penalty )?(\d\S*) on the conv", ["l2"]),
    (r"elastic-net penalty \(l1=(\S+), l2=(\S+)\)", ["l1", "l2"]),
    (r"max-norm c=(\S+) on every kernel", ["max_norm"]),
    (r"lambda_norm=([\d.]+)", ["normalized_decay"]),
    (r"proximal L1 step \(l1=([\d.]+)\)", ["decoupled_l1"]),
    (r"rho=([\d.]+)", ["sam_rho"]),
    (r"DropPath, rates rising linearly with depth to ([\d.]+)", ["droppath"]),
    (r"DropBlock \(rate ([\d.]+) ramped, block (\d+)\)", ["dropblock", "dropblock_size"]),
]


def _described(description):
    fields = {
        "l2": 0.0, "l1": 0.0, "max_norm": None, "normalized_decay": 0.0,
        "decoupled_l1": 0.0, "sam_rho": 0.0, "droppath": 0.0, "dropblock": 0.0,
        "regularize_dense": "hidden Dense kernels" in description,
        "dropout": "VGG dropout" in description,
        "architecture": "resnet" if description.startswith("ResNet-20") else "vgg",
    }
    for pattern, names in _DESCRIBED:
        match = re.search(pattern, description)
        if match:
            fields.update({name: float(value) for name, value in zip(names, match.groups())})
    return fields


def test_named_variants_match_their_descriptions():
    for name, variant in cifar10.VARIANTS.items():
        for field, value in _described(variant.description).items():
            assert getattr(variant, field) == pytest.approx(value), (name, field)


def test_decoupled_decay_follows_the_run():
    """The decay a step applies: lambda_norm * sqrt(b / (B * T)) for this run."""
    model = cifar10.build_variant("adamw", batch_size=64, num_examples=10000, epochs=15)
    lambda_norm = _described(cifar10.VARIANTS["adamw"].description)["normalized_decay"]
    expected = lambda_norm * math.sqrt(64 / (10000 * 15))
    assert model.optimizer.weight_decay == pytest.approx(expected)
    # One step at a zero gradient: Adam moves nothing, the decay `w - decay * w` remains.
    kernel = keras.Variable(np.ones((2, 2)), dtype="float64", name="kernel")
    model.optimizer.apply([np.zeros((2, 2))], [kernel])
    np.testing.assert_allclose(kernel.numpy(), 1 - expected, rtol=1e-7)


@pytest.mark.parametrize("name", ["sam", "sam+dropout"])
def test_sam_variants_wrap_the_vgg_network(name):
    import keras_regkit

    variant = cifar10.VARIANTS[name]
    model = cifar10.build_variant(name)
    assert isinstance(model, keras_regkit.SharpnessAwareMinimization)
    assert (model.rho, model.adaptive, model.num_batch_splits) == (0.05, False, None)
    net = model.model
    dropouts = [layer.rate for layer in net.layers if isinstance(layer, keras.layers.Dropout)]
    assert dropouts == ([0.25, 0.25, 0.5] if name == "sam+dropout" else [])
    assert variant.l2 == 0 and variant.l1 == 0 and not variant.max_norm
    assert all(layer.kernel_regularizer is None for layer in _convs(net) + _denses(net))
    assert type(model.optimizer) is keras.optimizers.Adam
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 3), dtype=np.float32)
    before = net.get_layer("fc").kernel.numpy()
    loss = model.train_on_batch(x, np.array([0, 1, 2, 3]))
    assert np.isfinite(loss[0] if isinstance(loss, (list, tuple)) else loss)
    assert not np.allclose(before, net.get_layer("fc").kernel.numpy())


@pytest.mark.tensorflow_only
def test_sam_variant_trains_on_mock_data_and_saves(tmp_path):
    import keras_regkit

    with tfds.testing.mock_data(num_examples=16):
        result = cifar10.train("sam", epochs=1, batch_size=8, train_limit=16, test_limit=8,
                               out=tmp_path / "sam", seed=0, verbose=0)
    metrics = result["metrics"]
    assert metrics["variant"] == "sam" and metrics["epochs"] == 1
    assert metrics["variant_config"]["sam_rho"] == 0.05 and metrics["penalty"] == 0.0
    loaded = keras.saving.load_model(tmp_path / "sam" / "model.keras")
    assert isinstance(loaded, keras_regkit.SharpnessAwareMinimization) and loaded.rho == 0.05
    x = np.random.default_rng(1).random((2, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0),
                               result["model"].predict(x, verbose=0), atol=1e-6)


# ---------------------------------------------------------------- the data pipeline


def _synthetic(n, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    return images, labels


def _collect(dataset):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.tensorflow_only
def test_pipeline_scales_batches_and_keeps_order():
    images, labels = _synthetic(10)
    raw = tf.data.Dataset.from_tensor_slices((images, labels))
    batches = list(cifar10.make_pipeline(raw, batch_size=4))
    assert [tuple(x.shape) for x, _ in batches] == [(4, 32, 32, 3)] * 2 + [(2, 32, 32, 3)]
    assert batches[0][0].dtype == tf.float32 and batches[0][1].dtype == tf.int32
    x, y = _collect(batches)
    np.testing.assert_allclose(x, images.astype(np.float32) / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(y, labels)
    assert x.min() >= 0.0 and x.max() <= 1.0


@pytest.mark.tensorflow_only
def test_pipeline_training_shuffles_a_permutation():
    images, labels = _synthetic(64)
    raw = tf.data.Dataset.from_tensor_slices((images, np.arange(64)))
    x, order = _collect(cifar10.make_pipeline(raw, 16, training=True, seed=3))
    assert sorted(order.tolist()) == list(range(64))
    assert order.tolist() != list(range(64))
    np.testing.assert_allclose(x, images[order].astype(np.float32) / 255.0, atol=1e-7)


def _crops_and_flips(image, pad=4):
    """Every image the flip + pad-crop augmentation may produce (NumPy reference)."""
    size = image.shape[0]
    out = []
    for candidate in (image, image[:, ::-1]):
        padded = np.zeros((size + 2 * pad, size + 2 * pad, 3), image.dtype)
        padded[pad:pad + size, pad:pad + size] = candidate
        for top in range(2 * pad + 1):
            for left in range(2 * pad + 1):
                out.append(padded[top:top + size, left:left + size])
    return np.stack(out)


@pytest.mark.tensorflow_only
def test_augmentation_is_a_flip_and_pad_crop_of_each_image():
    images, _ = _synthetic(6, seed=1)
    raw = tf.data.Dataset.from_tensor_slices((images, np.arange(6)))
    pipeline = cifar10.make_pipeline(raw, 6, training=True, augment=True, seed=5)
    changed = 0
    epochs = []
    for _ in range(2):  # two epochs: fresh randomness each
        x, order = _collect(pipeline)
        epochs.append(x[np.argsort(order)])
        assert x.shape == (6, 32, 32, 3) and x.dtype == np.float32
        for image, index in zip(x, order):
            as_uint8 = np.round(image * 255.0).astype(np.uint8)
            candidates = _crops_and_flips(images[index])
            assert np.any(np.all(candidates == as_uint8, axis=(1, 2, 3)))
            changed += not np.array_equal(as_uint8, images[index])
    assert changed >= 6  # 1 in 162 chance per image of being unchanged
    assert not np.array_equal(epochs[0], epochs[1])  # re-drawn every epoch
    # Evaluation pipelines never augment.
    x, _ = _collect(cifar10.make_pipeline(raw, 6, augment=True))
    np.testing.assert_allclose(x, images / 255.0, atol=1e-7)


@pytest.fixture
def fake_tfds(monkeypatch):
    """Replaces `tfds.load` with synthetic CIFAR-shaped splits; records its arguments."""
    calls = []
    train, test = _synthetic(50, seed=2), _synthetic(20, seed=3)

    def load(name, **kwargs):
        calls.append(dict(name=name, **kwargs))
        assert kwargs["split"] == ["train", "test"] and kwargs["as_supervised"]
        return [tf.data.Dataset.from_tensor_slices(split) for split in (train, test)]

    monkeypatch.setattr(tfds, "load", load)
    return {"calls": calls, "train": train, "test": test}


@pytest.mark.tensorflow_only
def test_load_cifar10_limits_and_data_dir(fake_tfds, tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "from_env"))
    data = cifar10.load_cifar10(batch_size=8, data_dir=tmp_path / "given",
                                train_limit=30, test_limit=12)
    call = fake_tfds["calls"][-1]
    assert call["name"] == "cifar10" and call["download"] is False
    assert call["data_dir"] == str(tmp_path / "given")
    assert (data.num_train, data.num_test) == (30, 12)
    x, y = _collect(data.train_eval)
    np.testing.assert_allclose(x, fake_tfds["train"][0][:30] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y, fake_tfds["train"][1][:30])
    assert _collect(data.train)[0].shape == (30, 32, 32, 3)
    assert _collect(data.test)[0].shape == (12, 32, 32, 3)
    cifar10.load_cifar10(batch_size=8)
    assert fake_tfds["calls"][-1]["data_dir"] == str(tmp_path / "from_env")


@pytest.mark.tensorflow_only
def test_load_cifar10_standardize(fake_tfds):
    data = cifar10.load_cifar10(batch_size=16, standardize=True, train_limit=40)
    pixels = fake_tfds["train"][0][:40].astype(np.float64).reshape(-1, 3) / 255.0
    np.testing.assert_allclose(data.mean, pixels.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(data.std, pixels.std(axis=0), rtol=1e-6)
    x, _ = _collect(data.train_eval)
    flat = x.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(flat.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(flat.std(axis=0), 1.0, atol=1e-4)
    x_test, _ = _collect(data.test)  # test data uses the training statistics
    expected = (fake_tfds["test"][0] / 255.0 - pixels.mean(axis=0)) / pixels.std(axis=0)
    np.testing.assert_allclose(x_test, expected, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "Received: batch_size=0"),
    ({"train_limit": 0}, "Received: train_limit=0"),
    ({"test_limit": -1}, "Received: test_limit=-1"),
])
def test_load_cifar10_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cifar10.load_cifar10(**kwargs)


@pytest.mark.tensorflow_only
def test_load_cifar10_with_tfds_mock_data():
    with tfds.testing.mock_data(num_examples=24):
        data = cifar10.load_cifar10(batch_size=10, train_limit=20, augment=True)
        assert (data.num_train, data.num_test) == (20, 24)
        x, y = _collect(data.train)
    assert x.shape == (20, 32, 32, 3) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5
    assert y.dtype == np.int32 and set(y.tolist()) <= set(range(10))


def test_missing_data_raises_one_paragraph(tmp_path, monkeypatch):
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    empty = tmp_path / "no_data_here"
    with pytest.raises(cifar10.CIFAR10NotFoundError,
                       match="^CIFAR-10 was not found in the tensorflow-datasets directory") as info:
        cifar10.load_cifar10(data_dir=empty)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "\n" not in message
    for needle in (str(empty), "--data-dir", "TFDS_DATA_DIR", "download_and_prepare"):
        assert needle in message
    assert not empty.exists()  # looking for the data created nothing
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env_dir"))
    with pytest.raises(cifar10.CIFAR10NotFoundError, match="env_dir"):
        cifar10.load_cifar10()


# ---------------------------------------------------------------- distribution


@pytest.mark.tensorflow_only
def test_mirrored_strategy_counts_the_penalty_once():
    strategy = cifar10.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2  # conftest's two logical CPUs
    rng = np.random.default_rng(0)
    x = rng.random((8, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, size=8)

    def build():
        model = cifar10.build_vgg_like(l2=0.05, dropout=False, blocks=1)
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss="sparse_categorical_crossentropy")
        return model

    single = build()
    with strategy.scope():
        mirrored = build()
    mirrored.set_weights(single.get_weights())
    probs = single.predict(x, verbose=0).astype(np.float64)
    cross_entropy = -np.mean(np.log(probs[np.arange(8), y]))
    penalty = 0.05 * sum(np.sum(layer.kernel.numpy().astype(np.float64) ** 2)
                         for layer in _convs(single))
    assert penalty > 0.1 * cross_entropy  # large enough to be seen twice

    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    losses = [model.fit(data, epochs=1, shuffle=False, verbose=0).history["loss"][0]
              for model in (single, mirrored)]
    np.testing.assert_allclose(losses, cross_entropy + penalty, rtol=1e-4)
    for a, b in zip(single.get_weights(), mirrored.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_multiworker_strategy_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        cifar10.make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}, '
                                    '"task": {"type": "worker", "index": 3}}')
    with pytest.raises(ValueError, match="Received: TF_CONFIG="):
        cifar10.make_strategy("multiworker")
    with pytest.raises(ValueError, match="Received: strategy='tpu'"):
        cifar10.make_strategy("tpu")


# ---------------------------------------------------------------- the residual variants


def _resnet_params(depth, classes=10):
    """Parameter count of He et al.'s CIFAR ResNet from the layer formulas.

    3x3 convolutions without bias, 4 BatchNorm numbers per channel, a 1x1
    projection (+ BN) shortcut where the channels change, Dense(64 -> 10).
    """
    n = (depth - 2) // 6
    total, channels = 3 * 3 * 3 * 16 + 4 * 16, 16
    for filters in (16, 32, 64):
        for block in range(n):
            total += 3 * 3 * channels * filters + 3 * 3 * filters * filters + 2 * 4 * filters
            if channels != filters:
                total += channels * filters + 4 * filters
            channels = filters
    return total + 64 * classes + classes


@pytest.mark.parametrize("depth", [20, 8])
def test_resnet_layout(depth):
    model = cifar10.build_resnet(depth)
    assert model.count_params() == _resnet_params(depth)
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == 3 * (depth - 2) // 6
    convs = [layer for layer in _convs(model) if "shortcut" not in layer.name]
    assert len(convs) == depth - 1  # + the Dense layer: depth weighted layers
    assert [model.get_layer(f"stage{s}_block1_add").output.shape[1:] for s in (1, 2, 3)] == [
        (32, 32, 16), (16, 16, 32), (8, 8, 64)]
    with pytest.raises(ValueError, match="Received: depth=21"):
        cifar10.build_resnet(21)


@pytest.mark.parametrize("name", ["resnet", "resnet+droppath", "resnet+dropblock"])
def test_resnet_variants_build_and_train(name):
    from keras_regkit import DropBlock2D, DropBlockSchedule, DropPath

    variant = cifar10.VARIANTS[name]
    model = cifar10.build_variant(name)
    paths = [layer.rate for layer in model.layers if isinstance(layer, DropPath)]
    blocks = [layer for layer in model.layers if isinstance(layer, DropBlock2D)]
    if variant.droppath:  # 9 blocks, rates 0.1 * l / 9
        assert paths == pytest.approx([0.1 * l / 9 for l in range(1, 10)])
    else:
        assert paths == []
    if variant.dropblock:  # stages 2 and 3: 6 blocks x (2 conv groups + shortcut)
        assert len(blocks) == 18
        assert {(b.rate, b.block_size) for b in blocks} == {(0.1, 5)}
        assert {b.name.split("_")[0] for b in blocks} == {"stage2", "stage3"}
        assert [type(c) for c in variant.build_callbacks()] == [DropBlockSchedule]
    else:
        assert blocks == [] and variant.build_callbacks() == []
    assert type(model.optimizer) is keras.optimizers.Adam
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    out = np.asarray(model(x, training=True))  # (training steps: the mock-data run below)
    assert out.shape == (4, 10) and np.allclose(out.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.tensorflow_only
def test_resnet_dropblock_run_with_mock_data_ramps_the_rate(tmp_path, monkeypatch):
    from keras_regkit import DropBlockSchedule

    factors_seen = []
    ramp = DropBlockSchedule.on_epoch_begin

    def spy(self, epoch, logs=None):
        ramp(self, epoch, logs)
        factors_seen.append(float(self._layers[0].rate_factor.numpy()))

    monkeypatch.setattr(DropBlockSchedule, "on_epoch_begin", spy)
    with tfds.testing.mock_data(num_examples=24):
        result = cifar10.train("resnet+dropblock", epochs=2, batch_size=8, train_limit=16,
                               test_limit=8, out=tmp_path / "run", verbose=0, seed=0)
    metrics = result["metrics"]
    assert metrics["variant"] == "resnet+dropblock" and metrics["epochs"] == 2
    assert metrics["variant_config"]["architecture"] == "resnet"
    assert metrics["variant_config"]["dropblock"] == 0.1
    assert factors_seen == [0.5, 1.0]  # the ramp over the run's 2 epochs
    factors = {float(w.numpy()) for w in result["model"].weights if w.name == "rate_factor"}
    assert factors == {1.0}  # all 18 layers at the full rate in the last epoch
    assert (tmp_path / "run" / "model.keras").exists()
