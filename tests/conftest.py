"""Test session set-up: quiet logs, and two logical CPU devices for tf.distribute.

The split must happen before TensorFlow initializes its devices, so it runs at
import time of this file, before any test module builds a tensor.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# For KERAS_BACKEND=jax: two host devices, mirroring the TensorFlow split below.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import keras  # noqa: E402
import pytest  # noqa: E402

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    _cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        _cpus[0],
        [tf.config.LogicalDeviceConfiguration()] * 2,
    )


@pytest.fixture(autouse=True)
def _clean_keras_state():
    """Each test starts from default Keras global state."""
    keras.utils.clear_session()
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


def pytest_collection_modifyitems(config, items):
    """Tests marked `tensorflow_only` are skipped on other backends."""
    if keras.backend.backend() == "tensorflow":
        return
    skip = pytest.mark.skip(reason="needs the TensorFlow backend (tf.data/tf.distribute)")
    for item in items:
        if "tensorflow_only" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "tensorflow_only: uses tf.data, tfds or tf.distribute; skipped on other backends",
    )
    config.addinivalue_line(
        "markers", "slow: builds keras.applications networks; deselect with -m 'not slow'",
    )
