"""Tests for the named CIFAR-10 variants: what each builds, its description, the SAM variants."""

import math
import re

import keras
import numpy as np
import pytest

from keras_regkit import optimizers
from keras_regkit import regularizers
from keras_regkit.baselines import cifar10
from tests.baselines_cli.cifar10_problems import convs as _convs
from tests.baselines_cli.cifar10_problems import denses as _denses

pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")


# ---------------------------------------------------------------- the variants


def test_variant_names():
    assert list(cifar10.VARIANTS) == [
        "none", "l2", "dropout", "l2+dropout", "maxnorm+dropout",
        "adamw", "elastic-net", "prox-l1",
        "resnet", "resnet+droppath", "resnet+dropblock", "resnet+swa", "resnet+ema",
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
