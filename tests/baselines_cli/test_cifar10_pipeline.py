"""Tests for the CIFAR-10 data pipeline and `load_cifar10`.

Never needs the real CIFAR-10: the data tests use synthetic `tf.data` input,
a stand-in for `tfds.load`, or `tfds.testing.mock_data` (offline).
"""

import numpy as np
import pytest

from keras_regkit.baselines import cifar10

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")


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
