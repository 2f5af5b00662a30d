"""Tests for the CIFAR-10 residual variants: ResNet layout, DropPath/DropBlock, a mock-data run."""

import keras
import numpy as np
import pytest

from keras_regkit.baselines import cifar10
from tests.baselines_cli.cifar10_problems import convs as _convs

pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")


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


def test_resnet_l2_is_on_every_convolution_and_the_dense_kernel():
    model = cifar10.build_resnet(8, l2=2e-3)
    convs = _convs(model)
    assert len(convs) == 7 + 2  # stem + 3 stages x 2 convs, + 2 projection shortcuts
    penalized = {layer.name: layer.kernel_regularizer.l2 for layer in model.layers
                 if getattr(layer, "kernel_regularizer", None) is not None}
    assert set(penalized) == {layer.name for layer in convs} | {model.layers[-1].name}
    assert set(penalized.values()) == {2e-3}
    assert all(getattr(layer, "kernel_regularizer", None) is None
               for layer in cifar10.build_resnet(8).layers)  # l2=0: none


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
        assert [type(c) for c in cifar10.build_callbacks(variant)] == [DropBlockSchedule]
    else:
        assert blocks == [] and cifar10.build_callbacks(variant) == []
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


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("name, key", [("resnet+swa", "val_swa_accuracy"),
                                       ("resnet+ema", "val_ema_accuracy")])
def test_averaging_variants_end_with_the_average_and_log_it(tmp_path, name, key):
    from keras_regkit import EMA, SWA

    variant = cifar10.VARIANTS[name]
    callbacks = cifar10.build_callbacks(variant, epochs=4)
    assert [type(c) for c in callbacks] == [SWA if variant.swa_start else EMA]
    if variant.swa_start:
        assert callbacks[0].start_epoch == 2  # the second half of 4 epochs
    with tfds.testing.mock_data(num_examples=24):
        result = cifar10.train(name, epochs=2, batch_size=8, train_limit=16, test_limit=8,
                               out=tmp_path / "run", verbose=0, seed=0)
    history, metrics = result["history"], result["metrics"]
    assert key in history and metrics["variant_config"]["architecture"] == "resnet"
    # The model written and scored is the average: its test accuracy is the last
    # epoch's averaged one (the same weights and test images).
    assert metrics["test_accuracy"] == pytest.approx(history[key][-1], abs=1e-6)


def test_averaging_fields_are_checked():
    with pytest.raises(ValueError, match="Received: swa_start=1.5"):
        cifar10.Variant("x", "x", swa_start=1.5)
    with pytest.raises(ValueError, match="Received: ema_decay=-0.1"):
        cifar10.Variant("x", "x", ema_decay=-0.1)
