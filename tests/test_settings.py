"""The run settings of the CIFAR-10 baseline (`RunSettings`) and the renamed keywords.

One settings object, built from the command line or from Python, checked
once, recorded in the run folder; `l2` is the loss coefficient, `weight_decay=`
its deprecated name.
"""

import json
import re
import warnings

import keras
import pytest

from keras_regkit import _validation
from keras_regkit import cli
from keras_regkit.baselines import cifar10
from keras_regkit.baselines.cifar10 import RunSettings

tfds = pytest.importorskip("tensorflow_datasets")

# What a run folder has always recorded under `arguments` (metrics.json).
RECORDED_KEYS = ["variant", "epochs", "batch_size", "data_dir", "train_limit", "test_limit",
                 "augment", "batch_norm", "blocks", "standardize", "strategy", "seed"]


def _from_cli(*argv):
    return cli.run_settings(cli.build_parser().parse_args(["cifar10", "--out", "x", *argv]))


# ---------------------------------------------------------------- one settings object


def test_command_line_and_python_give_equal_settings():
    from_cli = _from_cli("--variant", "l2", "--epochs", "3", "--batch-size", "16",
                         "--train-limit", "100", "--test-limit", "50", "--data-dir", "tfds",
                         "--augment", "--batch-norm", "--blocks", "3", "--standardize",
                         "--strategy", "mirrored", "--seed", "7")
    from_python = RunSettings("l2", epochs=3, batch_size=16, train_limit=100, test_limit=50,
                              data_dir="tfds", augment=True, batch_norm=True, blocks=3,
                              standardize=True, strategy="mirrored", seed=7)
    assert from_cli == from_python
    assert from_cli.variant is cifar10.VARIANTS["l2"]
    # Nothing given: the defaults the README documents.
    assert _from_cli() == RunSettings()
    assert RunSettings().to_dict() == {
        "variant": "l2+dropout", "epochs": 50, "batch_size": 128, "data_dir": None,
        "train_limit": None, "test_limit": None, "augment": False, "batch_norm": False,
        "blocks": 2, "standardize": False, "strategy": "default", "seed": None}


def test_quick_defaults_come_from_the_settings():
    quick = _from_cli("--quick", "--variant", "l2")
    assert quick == RunSettings.quick("l2")
    # The README's quick run: 1000 training and 1000 test images, 12 epochs, batch 32.
    assert (quick.train_limit, quick.test_limit, quick.epochs, quick.batch_size) == (
        1000, 1000, 12, 32)
    given = _from_cli("--quick", "--epochs", "2", "--train-limit", "16")
    assert (given.epochs, given.train_limit, given.test_limit) == (2, 16, 1000)
    assert given == RunSettings.quick(epochs=2, train_limit=16)


@pytest.mark.parametrize("name, value, error", [
    ("variant", "l3", ValueError),
    ("epochs", 0, ValueError),
    ("epochs", 2.0, TypeError),
    ("batch_size", -1, ValueError),
    ("train_limit", 0, ValueError),
    ("test_limit", "10", TypeError),
    ("data_dir", "", TypeError),
    ("augment", 1, TypeError),
    ("batch_norm", None, TypeError),
    ("blocks", 6, ValueError),
    ("standardize", "yes", TypeError),
    ("strategy", "tpu", ValueError),
    ("seed", True, TypeError),
])
def test_each_bad_value_is_refused_naming_it(name, value, error):
    received = re.escape(f"Received: {name}={value!r}")
    with pytest.raises(error, match=received):
        RunSettings(**{name: value})
    with pytest.raises(error, match=received):
        cifar10.train(**{name: value})  # the keywords of `train` are the same checks


def test_settings_or_keywords_not_both(tmp_path):
    settings = RunSettings("l2", epochs=1)
    with pytest.raises(ValueError, match="not both.*Received: .*epochs=2"):
        cifar10.train(settings=settings, epochs=2, out=tmp_path / "run")
    with pytest.raises(ValueError, match="not both.*variant='none'"):
        cifar10.train("none", settings=settings, out=tmp_path / "run")
    with pytest.raises(TypeError, match="Received: settings="):
        cifar10.train(settings={"epochs": 1}, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.tensorflow_only
def test_checked_once_recorded_in_the_run_folder_and_read_back(tmp_path, monkeypatch):
    checked = []
    positive_int = _validation.positive_int

    def counting(value, name):
        checked.append(name)
        return positive_int(value, name)

    monkeypatch.setattr(_validation, "positive_int", counting)
    with tfds.testing.mock_data(num_examples=16):
        result = cifar10.train("l2", epochs=1, batch_size=8, train_limit=16, test_limit=8,
                               seed=0, out=tmp_path / "run", verbose=0)
    # Checked where the settings are built; trusted by the pipeline and the model.
    assert (checked.count("batch_size"), checked.count("epochs")) == (1, 1)
    assert checked.count("train_limit") == 1 and checked.count("blocks") == 2  # + build_vgg_like
    settings = RunSettings("l2", epochs=1, batch_size=8, train_limit=16, test_limit=8, seed=0)

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert list(metrics["arguments"]) == RECORDED_KEYS
    assert metrics["arguments"]["variant"] == "l2" and metrics["arguments"]["batch_size"] == 8
    assert RunSettings.from_dict(cifar10.load_run(tmp_path / "run")["metrics"]["arguments"]) \
        == settings
    assert result["metrics"]["global_batch_size"] == 8 and result["metrics"]["num_train"] == 16


def test_an_old_run_folder_is_still_compared(tmp_path):
    """Run folders written before the renames (`weight_decay` in variant_config)."""
    old = tmp_path / "old"
    old.mkdir()
    metrics = {
        "variant": "l2", "test_accuracy": 0.25, "test_loss": 2.5, "train_accuracy": 0.75,
        "train_loss": 0.5, "gap": 0.5, "penalty": 0.1, "penalty_share": 0.2, "epochs": 1,
        "num_train": 16, "train_seconds": 1.5,
        "variant_config": {"name": "l2", "weight_decay": 1e-3, "normalized_weight_decay": 0.0},
        "arguments": dict(zip(RECORDED_KEYS, ["l2", 1, 8, None, 16, 8, False, False, 2, False,
                                              "default", 0])),
    }
    (old / "metrics.json").write_text(json.dumps(metrics))
    (old / "history.json").write_text(json.dumps({"loss": [1.0], "val_loss": [2.0]}))
    lines = []
    cifar10.compare_runs([old], print_fn=lines.append)
    row = lines[0].splitlines()[1].split()
    assert row == ["old", "l2", "0.2500", "0.7500", "+0.5000", "2.5000", "0.200", "1", "16",
                   "1.5"]
    assert RunSettings.from_dict(metrics["arguments"]) == RunSettings(
        "l2", epochs=1, batch_size=8, train_limit=16, test_limit=8, seed=0)


# ---------------------------------------------------------------- l2, not weight_decay


def _penalties(model):
    return {layer.name: layer.kernel_regularizer.l2 for layer in model.layers
            if getattr(layer, "kernel_regularizer", None) is not None}


def test_weight_decay_keyword_still_builds_the_same_vgg_like_with_a_warning():
    with pytest.warns(DeprecationWarning, match=r"weight_decay=\.\.\.\)` is deprecated; use `l2="):
        old = cifar10.build_vgg_like(weight_decay=3e-3, dropout=False)
    new = cifar10.build_vgg_like(l2=3e-3, dropout=False)
    expected = {f"block{b}_conv{i}": 3e-3 for b in (1, 2) for i in (1, 2)}
    assert _penalties(old) == pytest.approx(expected) and _penalties(new) == pytest.approx(expected)
    assert old.to_json() == new.to_json()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cifar10.build_vgg_like(l2=1e-4)  # the new name warns nothing


def test_weight_decay_keyword_still_builds_the_same_resnet_with_a_warning():
    with pytest.warns(DeprecationWarning, match="use `l2="):
        old = cifar10.build_resnet(8, weight_decay=2e-3)
    convs = [layer for layer in old.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 7 + 2  # stem + 3 stages x 2 convs, + 2 projection shortcuts
    assert set(_penalties(old).values()) == {2e-3}
    assert len(_penalties(old)) == len(convs) + 1  # and the Dense kernel
    assert old.to_json() == cifar10.build_resnet(8, l2=2e-3).to_json()


@pytest.mark.parametrize("build, args, kwargs", [
    (cifar10.build_vgg_like, (), {"l2": 1e-4}),
    (cifar10.build_vgg_like, (1e-4,), {}),  # `l2` given by position
    (cifar10.build_resnet, (8,), {"l2": 1e-4}),
])
def test_l2_and_weight_decay_together_are_refused(build, args, kwargs):
    with pytest.raises(ValueError, match=r"Received: l2=0.0001, weight_decay=0.001"):
        build(*args, weight_decay=1e-3, **kwargs)


def test_variant_fields_are_named_for_what_they_are():
    l2, adamw = cifar10.VARIANTS["l2"], cifar10.VARIANTS["adamw"]
    assert (l2.l2, l2.normalized_decay) == (1e-3, 0.0)
    assert (adamw.l2, adamw.normalized_decay) == (0.0, 0.05)
    assert "weight_decay" not in l2.to_dict() and "normalized_weight_decay" not in l2.to_dict()
    with pytest.warns(DeprecationWarning, match="use `Variant.l2`"):
        assert l2.weight_decay == 1e-3
    with pytest.warns(DeprecationWarning, match="use `Variant.normalized_decay`"):
        assert adamw.normalized_weight_decay == 0.05


def test_variant_takes_its_old_keywords_with_a_warning():
    with pytest.warns(DeprecationWarning, match=r"`Variant\(weight_decay=\.\.\.\)` is deprecated"):
        old = cifar10.Variant("x", "old names", weight_decay=1e-3)
    with pytest.warns(DeprecationWarning, match=r"use `normalized_decay=`.*not a loss term"):
        decoupled = cifar10.Variant("y", "old names", normalized_weight_decay=0.05)
    assert old == cifar10.Variant("x", "old names", l2=1e-3)
    assert decoupled == cifar10.Variant("y", "old names", normalized_decay=0.05)
    with pytest.raises(ValueError, match=r"pass `l2` only. Received: l2=0.2, weight_decay=0.1"):
        cifar10.Variant("x", "both", l2=0.2, weight_decay=0.1)
    with pytest.raises(ValueError, match=r"Received: l2=0.2, weight_decay=0.1"):
        cifar10.Variant("x", "both", 0.2, weight_decay=0.1)  # `l2` given by position


def test_a_misspelled_train_keyword_is_named(tmp_path):
    for kwargs in ({"epoch": 3}, {"settings": RunSettings("l2"), "epoch": 3}):
        with pytest.raises(TypeError, match=r"train\(\) got unexpected keyword argument\(s\) "
                                            r"\['epoch'\].*Received: epoch=3"):
            cifar10.train(out=tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()
