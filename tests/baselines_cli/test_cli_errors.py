"""User errors of the `keras-regkit` command line, and run folders written whole or not at all.

Every user error exits with code 2 and one line on stderr (`keras-regkit: error: ...`, or
argparse's own usage and error), with no traceback, and leaves the files as they were
(issue 20, items 12-13). Run in-process (`cli.main`) on `tfds.testing.mock_data` or on
folders made by hand; two real subprocesses show what a user's terminal gets.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_regkit import cli
from keras_regkit.baselines import _report
from keras_regkit.baselines import cifar10
from tests import helpers

tfds = pytest.importorskip("tensorflow_datasets")

TINY = ["--epochs", "1", "--batch-size", "8", "--train-limit", "16", "--test-limit", "8",
        "--verbose", "0"]
SWEEP = ["sweep", "cifar10", "--param", "l2", "--epochs", "1", "--batch-size", "8",
         "--test-limit", "8", "--verbose", "0"]
METRICS = {"variant": "none", "test_accuracy": 0.5, "train_accuracy": 0.75, "gap": 0.25,
           "test_loss": 1.5, "penalty_share": 0.0, "epochs": 2, "num_train": 100,
           "train_seconds": 3.0}
HISTORY = {"loss": [2.0, 1.5], "accuracy": [0.5, 0.75], "val_loss": [2.1, 1.5],
           "val_accuracy": [0.4, 0.5]}


def _snapshot(root):
    """Every path under `root` with its bytes (`None` for a folder)."""
    return {str(path.relative_to(root)): path.read_bytes() if path.is_file() else None
            for path in sorted(root.rglob("*"))}


def _refused(args, capsys, *needles, num_examples=24, mock=True):
    """Runs the command line; asserts exit 2, one error line holding `needles`, no traceback."""
    args = [str(arg) for arg in args]
    if mock:
        with tfds.testing.mock_data(num_examples=num_examples):
            code = cli.main(args)
    else:
        code = cli.main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    # Ours is the only line; argparse's own error comes after its usage.
    assert err.strip() == lines[0] or err.startswith("usage:"), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _fake_run(folder, metrics=None, history=None):
    """A finished run folder made by hand (text values are written as they are)."""
    folder.mkdir(parents=True)
    for name, value in (("metrics.json", METRICS if metrics is None else metrics),
                        ("history.json", HISTORY if history is None else history)):
        (folder / name).write_text(value if isinstance(value, str) else json.dumps(value))
    (folder / "model.keras").write_bytes(b"old model")
    (folder / "curves.png").write_bytes(b"old curves")
    return folder


# ------------------------------------------------------------------ item 12: one line, exit 2


@pytest.mark.parametrize("seed", [-1, 2**70])
@pytest.mark.parametrize("command", [
    ["cifar10", *TINY],
    [*SWEEP, "--values", "1e-3", "--train-limit", "16", "--validation-size", "8"],
])
def test_a_seed_numpy_cannot_take_is_refused(tmp_path, capsys, command, seed):
    out = tmp_path / "out"
    _refused([*command, "--seed", seed, "--out", out], capsys, "--seed", f"seed={seed}")
    assert not out.exists()
    # The same check, once, behind the Python API.
    with pytest.raises(ValueError, match=f"Received: seed={seed}"):
        cifar10.RunSettings(seed=seed)


def test_integers_tensorflow_cannot_hold_are_refused(tmp_path, capsys):
    _refused(["cifar10", *TINY, "--train-limit", 10**23, "--out", tmp_path / "out"], capsys,
             "--train-limit", "2**63 - 1")
    with pytest.raises(ValueError, match="Received: batch_size=100000000000000000000"):
        cifar10.RunSettings(batch_size=10**20)
    assert not (tmp_path / "out").exists()


_INFO = {
    "name": "cifar10", "version": "3.0.2", "fileFormat": "tfrecord",
    "moduleName": "tensorflow_datasets.image_classification.cifar",
    "splits": [{"name": split, "numBytes": "1000", "shardLengths": ["10"],
                "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"}
               for split in ("train", "test")],
    "supervisedKeys": {"tuple": {"items": [{"featureKey": "image"}, {"featureKey": "label"}]}},
}
_FEATURES = {
    "pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
    "featuresDict": {"features": {
        "id": {"pythonClassName": "tensorflow_datasets.core.features.text_feature.Text",
               "text": {}},
        "image": {"pythonClassName": "tensorflow_datasets.core.features.image_feature.Image",
                  "image": {"dtype": "uint8", "shape": {"dimensions": ["32", "32", "3"]}}},
        "label": {"pythonClassName":
                  "tensorflow_datasets.core.features.class_label_feature.ClassLabel",
                  "classLabel": {"numClasses": "10"}},
    }},
}


def _corrupt_data_dir(root, kind):
    """A tensorflow-datasets folder whose cifar10 is there but cannot be read."""
    folder = root / "cifar10" / "3.0.2"
    folder.mkdir(parents=True)
    info = "{garbage" if kind == "bad dataset_info.json" else json.dumps(_INFO)
    (folder / "dataset_info.json").write_text(info)
    (folder / "features.json").write_text(json.dumps(_FEATURES))
    (folder / "label.labels.txt").write_text("\n".join(str(i) for i in range(10)) + "\n")
    for split in ("train", "test"):
        shard = folder / f"cifar10-{split}.tfrecord-00000-of-00001"
        if kind == "records framed around garbage":
            import tensorflow as tf

            with tf.io.TFRecordWriter(str(shard)) as writer:
                for _ in range(10):
                    writer.write(b"not an example")
        else:
            shard.write_bytes(np.random.default_rng(0).bytes(5000))
    return root


@pytest.mark.parametrize("kind", ["bad dataset_info.json", "random bytes in the shards",
                                  "records framed around garbage", "empty folder"])
def test_a_corrupt_or_empty_data_dir_is_one_line(tmp_path, capsys, monkeypatch, kind):
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    data_dir = tmp_path / "tfds"
    if kind == "empty folder":
        data_dir.mkdir()
    else:
        _corrupt_data_dir(data_dir, kind)
    before = _snapshot(tmp_path)
    out = tmp_path / "out"
    line = _refused(["cifar10", *TINY, "--data-dir", data_dir, "--out", out], capsys,
                    str(data_dir), "--data-dir", mock=False)
    if kind != "empty folder":
        assert "cannot be read" in line
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("train_limit", [24, 20])
def test_sweep_sizes_the_train_split_cannot_hold(tmp_path, capsys, train_limit):
    """24 mock images: 24 + 8 leaves no validation image, 20 + 8 only 4 of the 8."""
    out = tmp_path / "sweep"
    _refused([*SWEEP, "--values", "1e-3", "--train-limit", train_limit, "--validation-size",
              "8", "--out", out], capsys, "24 images", f"train_limit={train_limit}",
             "validation_size=8")
    assert not out.exists()


def test_sweep_negative_values_get_the_values_message(tmp_path, capsys):
    """`--values -1,1e-3` is read as the values (not as an unknown option)."""
    _refused([*SWEEP, "--values", "-1,1e-3", "--out", tmp_path / "sweep"], capsys,
             "`values` must be >= 0. Received: values=-1.0")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("name, metrics, history, needles", [
    ("string accuracy", {**METRICS, "test_accuracy": "high"}, None,
     ["metrics.json", "test_accuracy", "'high'"]),
    ("string share", {**METRICS, "penalty_share": "x"}, None, ["metrics.json", "penalty_share"]),
    ("bool accuracy", {**METRICS, "test_accuracy": True}, None, ["test_accuracy"]),
    ("list epochs", {**METRICS, "epochs": [2]}, None, ["metrics.json", "epochs"]),
    ("dict variant", {**METRICS, "variant": {"a": 1}}, None, ["metrics.json", "variant"]),
    ("list metrics", [METRICS], None, ["metrics.json"]),
    ("bad metrics JSON", "{bad json", None, ["metrics.json"]),
    ("list history", None, [HISTORY], ["history.json"]),
    ("string curve", None, {**HISTORY, "loss": "abc"}, ["history.json", "loss"]),
    ("number curve", None, {**HISTORY, "loss": 5}, ["history.json", "loss"]),
    ("null in curve", None, {**HISTORY, "loss": [None, 1.0]}, ["history.json", "loss"]),
    ("bad history JSON", None, "{bad json", ["history.json"]),
])
def test_compare_refuses_wrong_typed_run_files(tmp_path, capsys, name, metrics, history,
                                               needles):
    good = _fake_run(tmp_path / "good")
    bad = _fake_run(tmp_path / "bad", metrics, history)
    before = _snapshot(tmp_path)
    _refused(["compare", good, bad, "--plot", tmp_path / "compare.png"], capsys, str(bad),
             *needles, mock=False)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("plot, needle", [
    ("a_file/x.png", "not a writable folder"),
    ("x.png/", "x.png/"),
    ("good/history.json", "run folder"),
    ("/proc/keras_regkit_plot.png", "/proc"),
])
def test_compare_plot_that_cannot_or_must_not_be_written(tmp_path, capsys, monkeypatch, plot,
                                                         needle):
    if plot.startswith("/proc") and not os.path.isdir("/proc/self"):
        pytest.skip("needs Linux /proc")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("x")
    _fake_run(tmp_path / "good")
    before = _snapshot(tmp_path)
    _refused(["compare", "good", "--plot", plot], capsys, "plot", needle, mock=False)
    assert _snapshot(tmp_path) == before
    assert capsys.readouterr().out == ""  # refused before the table


# ------------------------------------------------------------------ item 13: whole or nothing


def test_a_non_empty_out_is_refused_without_overwrite(tmp_path, capsys):
    run = _fake_run(tmp_path / "runs" / "old")
    notes = tmp_path / "mine"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    before = _snapshot(tmp_path)
    _refused(["cifar10", *TINY, "--out", run], capsys, str(run), "--overwrite",
             num_examples=40)
    _refused(["cifar10", *TINY, "--quick", "--out", run.parent], capsys, str(run.parent),
             "--overwrite", num_examples=40)
    _refused([*SWEEP, "--values", "1e-3", "--train-limit", "16", "--validation-size", "8",
              "--out", run], capsys, str(run), "--overwrite", num_examples=40)
    # --overwrite replaces only what keras-regkit wrote, never a folder with other files.
    _refused(["cifar10", *TINY, "--out", notes, "--overwrite"], capsys, str(notes),
             "notes.txt", num_examples=40)
    assert _snapshot(tmp_path) == before


@pytest.mark.tensorflow_only
def test_a_run_that_fails_half_way_leaves_the_old_folder_as_it_was(tmp_path, capsys,
                                                                   monkeypatch):
    out = tmp_path / "runs" / "run"
    with tfds.testing.mock_data(num_examples=40):
        assert cli.main(["cifar10", "--variant", "l2", *TINY, "--out", str(out)]) == 0
        before = _snapshot(tmp_path)

        def disk_full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        # history.json and model.keras are written, then curves.png fails.
        with monkeypatch.context() as patch:
            patch.setattr(_report, "plot_history", disk_full)
            with pytest.raises(OSError, match="No space left"):
                cifar10.train("none", out=out, overwrite=True, epochs=1, batch_size=8,
                              train_limit=16, test_limit=8, verbose=0)
        assert _snapshot(tmp_path) == before  # no mix, no temporary folder left
        assert cli.main(["cifar10", "--variant", "none", *TINY, "--out", str(out),
                         "--overwrite"]) == 0
    capsys.readouterr()
    assert sorted(os.listdir(out.parent)) == ["run"]
    assert sorted(os.listdir(out)) == sorted(cifar10.OUTPUT_FILES)
    assert json.loads((out / "metrics.json").read_text())["variant"] == "none"


@pytest.mark.tensorflow_only
def test_quick_overwrite_replaces_the_whole_quick_folder(tmp_path, capsys):
    out = tmp_path / "quick"
    _fake_run(out / "none")
    _fake_run(out / "l2+dropout")
    (out / "compare.png").write_bytes(b"old plot")
    with tfds.testing.mock_data(num_examples=24):
        assert cli.main(["cifar10", "--quick", "--variant", "l2", *TINY, "--out", str(out),
                         "--overwrite"]) == 0
    assert "Quick comparison" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["compare.png", "l2", "none"]
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "none" / "metrics.json").read_text())["num_train"] == 16
    assert sorted(os.listdir(tmp_path)) == ["quick"]


def test_compare_refuses_unfinished_folders_clearly(tmp_path, capsys):
    good = _fake_run(tmp_path / "good")
    unfinished = tmp_path / "half"
    unfinished.mkdir()
    (unfinished / "history.json").write_text(json.dumps(HISTORY))
    staging = _fake_run(tmp_path / ".good.partial-x1y2")  # a run still being written
    _refused(["compare", good, unfinished], capsys, str(unfinished), "metrics.json",
             "not a finished run", mock=False)
    _refused(["compare", good, staging], capsys, str(staging), "unfinished run", mock=False)


# ------------------------------------------------------------------ what a terminal shows


def test_the_console_shows_one_line_and_no_traceback(tmp_path):
    """As a user runs it (`python -m keras_regkit_cli`, the console script's launcher): no
    TF_CPP_MIN_LOG_LEVEL, so TensorFlow's start-up lines are kept out too
    (keras_regkit._startup), and stderr is the error alone."""
    env = helpers.child_env(drop=("TF_CPP_MIN_LOG_LEVEL",))
    bad = _fake_run(tmp_path / "bad", {**METRICS, "test_accuracy": "high"})
    result = subprocess.run(
        [sys.executable, "-m", "keras_regkit_cli", "compare", str(bad)], cwd=tmp_path,
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"keras-regkit: error: {str(bad)!r}: metrics.json's test_accuracy must be a number. "
        "Received: test_accuracy='high'"]
    result = subprocess.run(
        [sys.executable, "-m", "keras_regkit_cli", "cifar10", "--seed", "-1", "--out",
         str(tmp_path / "out")], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1].startswith("keras-regkit cifar10: error: argument --seed")
    assert not (tmp_path / "out").exists()
