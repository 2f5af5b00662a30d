"""λ search on KerasTuner: the search-space helpers and the CIFAR-10 sweep (mock data)."""

import json

import keras_tuner
import numpy as np
import pytest

import keras_regkit
from keras_regkit import cli
from keras_regkit.baselines import cifar10


def test_strength_and_regularizer_in_a_search_space():
    hp = keras_tuner.HyperParameters()
    regularizer = keras_regkit.tuning.regularizer(hp, "l1", kind="l1", values=[1e-3, 1e-4])
    assert isinstance(regularizer, keras_regkit.L1) and regularizer.l1 == 1e-4  # sorted
    assert hp.space[0].values == [1e-4, 1e-3]
    value = keras_regkit.tuning.strength(hp, "decay", 1e-5, 1e-1)
    assert value == pytest.approx(1e-5) and hp.space[1].sampling == "log"
    with pytest.raises(ValueError, match="Received: min_value=0.1, max_value=0.01"):
        keras_regkit.tuning.strength(hp, "bad", 0.1, 0.01)
    with pytest.raises(ValueError, match="must hold at least one value"):
        keras_regkit.tuning.strength(hp, "empty", values=[])
    with pytest.raises(ValueError, match="`values` must be >= 0"):
        keras_regkit.tuning.strength(hp, "neg", values=[-1.0])
    with pytest.raises(ValueError, match="Received: kind='l3'"):
        keras_regkit.tuning.regularizer(hp, "x", kind="l3")


def _images(dataset):
    return np.concatenate([np.asarray(x) for x, _ in dataset])


@pytest.mark.tensorflow_only
def test_validation_images_come_from_the_train_split_after_the_training_subset():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=30):
        data = cifar10.load_cifar10(batch_size=8, train_limit=12, validation_size=6)
        train_split = np.stack([image for image, _ in tfds.as_numpy(
            tfds.load("cifar10", split="train", as_supervised=True))]) / 255.0
        test_split = np.stack([image for image, _ in tfds.as_numpy(
            tfds.load("cifar10", split="test", as_supervised=True))]) / 255.0
        validation = _images(data.validation)
        train = _images(data.train_eval)
    assert (data.num_train, data.num_validation) == (12, 6)
    np.testing.assert_allclose(train, train_split[:12], atol=1e-6)
    np.testing.assert_allclose(validation, train_split[12:18], atol=1e-6)
    # Not one validation image is a test image.
    distances = np.abs(validation[:, None] - test_split[None]).reshape(6, len(test_split), -1)
    assert distances.max(axis=2).min() > 0


@pytest.mark.tensorflow_only
def test_grid_sweep_on_mock_data_writes_the_table_curve_and_choice(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    lines = []
    with tfds.testing.mock_data(num_examples=24):
        result = cifar10.sweep("l2", "l2", [1e-4, 1e-2], epochs=1, batch_size=8,
                               train_limit=16, validation_size=8, test_limit=8,
                               out=tmp_path / "sweep", seed=0, verbose=0, print_fn=lines.append)
    assert sorted(row["value"] for row in result["rows"]) == [1e-4, 1e-2]
    for row in result["rows"]:
        assert row["gap"] == pytest.approx(row["train_accuracy"] - row["val_accuracy"])
        assert row["best_val_accuracy"] >= row["val_accuracy"] - 1e-9
        assert 0 < row["penalty_share"] < 1
    # The larger λ has the larger share of the loss.
    shares = {row["value"]: row["penalty_share"] for row in result["rows"]}
    assert shares[1e-2] > shares[1e-4]
    chosen = result["chosen"]["l2"]
    best = max(row["best_val_accuracy"] for row in result["rows"])
    assert result["chosen_val_accuracy"] == best
    assert chosen in [row["value"] for row in result["rows"] if row["best_val_accuracy"] == best]
    assert result["split"] == {"train": "train[0:16]", "validation": "train[16:24]",
                               "test": "test[0:8] (chosen value only)"}
    assert json.loads((tmp_path / "sweep" / "chosen.json").read_text()) == {"l2": chosen}
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["rows"] == result["rows"]
    assert (tmp_path / "sweep" / "validation_curve.png").stat().st_size > 0
    assert lines[0].split()[:4] == ["l2", "epochs", "train", "acc"] and "chosen on validation" in lines[-1]


@pytest.mark.parametrize("argv, message", [
    (["--param", "l1", "--values", "1e-3"], "does not use `l1`"),
    (["--param", "l2", "--values=1e-3,-1e-3"], "`values` must be >= 0. Received: values=-0.001"),
    (["--param", "l2", "--values", ","], "must hold at least one number"),
    (["--param", "l3", "--values", "1e-3"], "invalid choice: 'l3'"),
    (["--param", "l2", "--values", "1e-3", "--tuner", "bayesian"], "two or more positive values"),
])
def test_sweep_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "sweep"
    code = cli.main(["sweep", "cifar10", "--variant", "l2", *argv, "--out", str(out)])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
