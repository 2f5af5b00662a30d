"""The run settings of the CIFAR-10 baseline (`RunSettings`) and the renamed keywords.

One settings object, built from the command line or from Python, checked
once, recorded in the run folder; `l2` is the loss coefficient, `weight_decay=`
its deprecated name.
"""

import json
import re
import warnings

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
def test_checked_once_and_recorded_in_the_run_folder(tmp_path, monkeypatch):
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
    assert cifar10.load_run(tmp_path / "run")["metrics"]["arguments"] == settings.to_dict()
    assert result["metrics"]["global_batch_size"] == 8 and result["metrics"]["num_train"] == 16


def test_an_old_run_folder_is_still_compared(tmp_path):
    """A run folder as `train("l2", ...)` wrote it before the renames (commit 540a181):
    `weight_decay` in variant_config, no `penalty_share` in metrics.json, no
    `penalty`/`data_loss` logs in history.json (no monitor then)."""
    old = tmp_path / "old"
    old.mkdir()
    metrics = {
        "variant": "l2", "description": "L2 penalty 1e-3 on the conv and hidden Dense kernels",
        "test_accuracy": 0.25, "test_loss": 2.5, "train_accuracy": 0.75, "train_loss": 0.5,
        "gap": 0.5, "penalty": 0.1, "epochs": 1, "num_train": 16, "num_test": 8,
        "data_dir": "/data/tfds", "replicas": 1, "global_batch_size": 8,
        "train_seconds": 1.5, "wall_seconds": 4.0,
        "validation": "test split (the curves' val_* are test-set values)",
        "losses_include_penalty": True,
        "variant_config": {
            "name": "l2", "description": "L2 penalty 1e-3 on the conv and hidden Dense kernels",
            "weight_decay": 1e-3, "l1": 0.0, "regularize_dense": True, "dropout": False,
            "max_norm": None, "normalized_weight_decay": 0.0, "decoupled_l1": 0.0,
            "learning_rate": 1e-3},
        "optimizer": "Adam", "decoupled_weight_decay": None,
        "arguments": dict(zip(RECORDED_KEYS, ["l2", 1, 8, None, 16, 8, False, False, 2, False,
                                              "default", 0])),
        "command": ["keras-regkit", "cifar10", "--variant", "l2", "--out", "old"],
        "versions": {"keras_regkit": "0.1.0", "keras": "3.12.0", "tensorflow": "2.21.0",
                     "python": "3.11.7"},
    }
    (old / "metrics.json").write_text(json.dumps(metrics))
    (old / "history.json").write_text(json.dumps(
        {"accuracy": [0.5], "loss": [1.0], "val_accuracy": [0.25], "val_loss": [2.5]}))
    lines = []
    cifar10.compare_runs([old], print_fn=lines.append)
    header, row = lines[0].splitlines()
    assert row[header.index("penalty share"):].split()[0] == "-"  # not recorded then
    # Every other column from metrics.json.
    assert row.split() == ["old", "l2", "0.2500", "0.7500", "+0.5000", "2.5000", "-", "1",
                           "16", "1.5"]


# ---------------------------------------------------------------- the sweep


@pytest.mark.tensorflow_only
def test_the_sweep_is_seeded_like_train_and_records_how_it_was_run(tmp_path, capsys):
    """Weights and dropout too, not only the data and the tuner: the same seed from
    Python and from the command line gives the same numbers."""
    argv = ["sweep", "cifar10", "--variant", "l2+dropout", "--param", "l2", "--values", "1e-3",
            "--epochs", "1", "--batch-size", "8", "--train-limit", "16", "--validation-size",
            "8", "--test-limit", "8", "--seed", "3", "--verbose", "0"]
    with tfds.testing.mock_data(num_examples=24):
        from_python = cifar10.sweep("l2+dropout", "l2", [1e-3], epochs=1, batch_size=8,
                                    train_limit=16, validation_size=8, test_limit=8,
                                    out=tmp_path / "python", seed=3, verbose=0, print_fn=None)
        assert cli.main([*argv, "--out", str(tmp_path / "cli")]) == 0
    capsys.readouterr()
    from_cli = json.loads((tmp_path / "cli" / "sweep.json").read_text())

    def numbers(result):
        rows = [{k: v for k, v in row.items() if k != "seconds"} for row in result["rows"]]
        return rows, result["test_loss"], result["test_accuracy"]

    assert numbers(from_cli) == numbers(from_python)
    assert 0 < from_python["rows"][0]["penalty_share"] < 1  # the monitor's logs, as in `train`
    # Recorded as a run folder records them (metrics.json).
    assert from_cli["command"] == ["keras-regkit", *argv, "--out", str(tmp_path / "cli")]
    assert from_python["command"] is None
    assert from_python["arguments"] == {
        "variant": "l2+dropout", "param": "l2", "values": [1e-3], "tuner": "grid",
        "max_trials": None, "epochs": 1, "batch_size": 8, "train_limit": 16,
        "validation_size": 8, "test_limit": 8, "data_dir": None, "seed": 3}
    assert from_cli["arguments"] == from_python["arguments"]
    assert set(from_python["versions"]) == {"keras_regkit", "keras", "tensorflow", "python"}


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


@pytest.mark.parametrize("build, args, kwargs", [
    (cifar10.build_vgg_like, (), {"l2": 1e-4}),
    (cifar10.build_vgg_like, (1e-4,), {}),  # `l2` given by position
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


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"seed": "x"}, TypeError, "Received: seed='x'"),
        ({"epochs": 0}, ValueError, "Received: epochs=0"),
        ({"max_trials": 0}, ValueError, "Received: max_trials=0"),
    ],
)
def test_sweep_checks_its_run_arguments_before_writing(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        cifar10.sweep("l2", "l2", [1e-3], out=tmp_path / "sweep", **kwargs)
    assert not (tmp_path / "sweep").exists()


def test_variant_build_methods_of_0_1_0_still_work_with_a_warning():
    variant = cifar10.VARIANTS["adamw"]
    with pytest.warns(DeprecationWarning, match=r"`Variant.build_model\(\)` is deprecated"):
        model = variant.build_model()
    with pytest.warns(DeprecationWarning, match=r"`Variant.build_optimizer\(\)` is deprecated"):
        optimizer = variant.build_optimizer(batch_size=128, num_examples=50000, epochs=10)
    swa = cifar10.VARIANTS["resnet+swa"]
    with pytest.warns(DeprecationWarning, match=r"`Variant.build_callbacks\(\)` is deprecated"):
        callbacks = swa.build_callbacks(epochs=10)
    assert [(type(c), c.get_config()) for c in callbacks] == [
        (type(c), c.get_config()) for c in cifar10.build_callbacks(swa, epochs=10)]
    built = cifar10.build_variant(variant)
    assert [type(layer) for layer in model.layers] == [type(layer) for layer in built.layers]
    assert type(optimizer) is type(built.optimizer)
    assert optimizer.weight_decay == pytest.approx(
        variant.decoupled_weight_decay(batch_size=128, num_examples=50000, epochs=10))
