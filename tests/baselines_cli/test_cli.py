"""Tests for the `keras-regkit` command line (keras_regkit.cli), run in-process where possible.

The data is `tfds.testing.mock_data` (random CIFAR-shaped images, offline);
the real CIFAR-10 is never needed.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import tomllib
import warnings

import keras
import numpy as np
import pytest

from keras_regkit import cli
from keras_regkit.baselines import cifar10
from tests import helpers

tfds = pytest.importorskip("tensorflow_datasets")

TINY = ["--epochs", "1", "--batch-size", "8", "--train-limit", "24",
        "--test-limit", "16", "--verbose", "0"]
METRIC_KEYS = {
    "variant", "test_accuracy", "test_loss", "train_accuracy", "train_loss", "gap",
    "epochs", "num_train", "num_test", "train_seconds", "wall_seconds", "arguments",
    "replicas", "global_batch_size", "variant_config", "versions",
}


def _run(args, num_examples=40):
    with tfds.testing.mock_data(num_examples=num_examples):
        return cli.main([str(a) for a in args])


def _check_png(path):
    import matplotlib.image

    data = pathlib.Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    assert image[..., :3].std() > 0.01  # not a blank canvas


def test_help_lists_every_variant_without_loading_the_model_code(tmp_path):
    """`--help` reads the names from the Keras-free settings, not the model code."""
    code = textwrap.dedent("""
        import contextlib, io, json, sys
        from keras_regkit import cli
        help_text = io.StringIO()
        with contextlib.redirect_stdout(help_text):
            code = cli.main(["cifar10", "--help"])
        loaded = sorted(name for name in sys.modules if name.startswith("keras_regkit.baselines")
                        or name.startswith("tensorflow_datasets"))
        print(json.dumps({"code": code, "help": help_text.getvalue(), "loaded": loaded}))
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=helpers.child_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["code"] == 0
    assert report["loaded"] == ["keras_regkit.baselines", "keras_regkit.baselines._run_settings",
                                "keras_regkit.baselines._settings",
                                "keras_regkit.baselines._variants"]
    flat = " ".join(report["help"].split())
    assert "{" + ",".join(cifar10.VARIANTS) + "}" in flat
    assert "{default,mirrored,multiworker}" in flat and "{1,2,3,4,5}" in flat
    assert "(default: 50; 12 with --quick)" in flat


def test_console_script_and_module_entry_points():
    """The script and `python -m keras_regkit_cli` go through the launcher (which parses
    before Keras is imported, tests/baselines_cli/test_cli_startup.py); `python -m keras_regkit` runs
    the same `cli.main` after the package import."""
    pyproject = tomllib.loads((helpers.REPO_ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["keras-regkit"] == "keras_regkit_cli:main"
    launcher_main = (helpers.REPO_ROOT / "keras_regkit_cli" / "__main__.py").read_text()
    assert "from keras_regkit_cli import main" in launcher_main
    main_source = (helpers.REPO_ROOT / "keras_regkit" / "__main__.py").read_text()
    assert "from keras_regkit.cli import main" in main_source


@pytest.mark.tensorflow_only
def test_train_and_compare_end_to_end(tmp_path, capsys):
    run_a, run_b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    assert _run(["cifar10", "--variant", "l2+dropout", "--out", run_a, "--seed", "1",
                 *TINY]) == 0
    assert _run(["cifar10", "--variant", "prox-l1", "--out", run_b, "--augment",
                 "--epochs", "2", *TINY[2:]]) == 0
    printed = capsys.readouterr().out
    assert "l2+dropout: test accuracy" in printed and str(run_a) in printed

    for run, variant, epochs in ((run_a, "l2+dropout", 1), (run_b, "prox-l1", 2)):
        assert sorted(os.listdir(run)) == sorted(cifar10.OUTPUT_FILES)
        history = json.loads((run / "history.json").read_text())
        assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy", "data_loss",
                                "penalty", "val_data_loss", "val_penalty"}
        np.testing.assert_allclose(
            np.add(history["data_loss"], history["penalty"]), history["loss"], rtol=1e-5)
        assert all(len(values) == epochs for values in history.values())
        metrics = json.loads((run / "metrics.json").read_text())
        assert METRIC_KEYS <= set(metrics)
        assert metrics["variant"] == variant and metrics["epochs"] == epochs
        assert (metrics["num_train"], metrics["num_test"]) == (24, 16)
        assert metrics["gap"] == pytest.approx(
            metrics["train_accuracy"] - metrics["test_accuracy"])
        assert metrics["test_accuracy"] == pytest.approx(history["val_accuracy"][-1])
        assert metrics["replicas"] == 1 and metrics["global_batch_size"] == 8
        assert metrics["wall_seconds"] >= metrics["train_seconds"] > 0
        _check_png(run / "curves.png")
    metrics_a = json.loads((run_a / "metrics.json").read_text())
    assert metrics_a["arguments"]["seed"] == 1
    assert metrics_a["penalty"] > 0
    assert json.loads((run_b / "metrics.json").read_text())["arguments"]["augment"]

    # The gap's train accuracy is measured at the end, dropout off, on the
    # un-augmented training subset: recompute it from the saved model.
    model = keras.saving.load_model(run_a / "model.keras")
    with tfds.testing.mock_data(num_examples=40):
        data = cifar10.load_cifar10(batch_size=8, train_limit=24)
        batches = [(x.numpy(), y.numpy()) for x, y in data.train_eval]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    predicted = np.argmax(model.predict(x, verbose=0), axis=-1)
    assert metrics_a["train_accuracy"] == pytest.approx(np.mean(predicted == y))
    # The saved model loads in a fresh process, safe mode, no custom_objects.
    fresh = helpers.load_in_fresh_process(run_a / "model.keras", x[:4])
    np.testing.assert_allclose(fresh["predictions"], model.predict(x[:4], verbose=0),
                               rtol=1e-5, atol=1e-6)

    plot = tmp_path / "compare.png"
    assert cli.main(["compare", str(run_a), str(run_b), "--plot", str(plot)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["run", "variant", "test"]
    for run, line in zip((run_a, run_b), lines[1:3]):
        metrics = json.loads((run / "metrics.json").read_text())
        cells = line.split()
        assert cells[0] == run.name and cells[1] == metrics["variant"]
        assert cells[2] == f"{metrics['test_accuracy']:.4f}"
        assert cells[4] == f"{metrics['gap']:+.4f}"
        assert cells[6] == f"{metrics['penalty_share']:.3f}"
        assert cells[7] == str(metrics["epochs"])
    _check_png(plot)
    # `compare runs/* --plot runs/compare.png` twice: the second glob also
    # matches the first plot, which is skipped, not read as a run; so is a log file.
    in_runs = run_a.parent / "compare.png"
    (run_a.parent / "log.txt").write_text("a log beside the run folders\n")
    for _ in range(2):
        glob = sorted(str(path) for path in run_a.parent.glob("*"))
        assert cli.main(["compare", *glob, "--plot", str(in_runs)]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 4  # header, 2 runs, curves
    assert str(in_runs) in glob
    _check_png(in_runs)


@pytest.mark.tensorflow_only
def test_mirrored_strategy_scales_the_global_batch(tmp_path):
    out = tmp_path / "mirrored"
    assert _run(["cifar10", "--variant", "l2", "--strategy", "mirrored", "--out", out,
                 *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["global_batch_size"] == 16
    assert metrics["arguments"]["strategy"] == "mirrored"


def _bad_inputs(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    empty = tmp_path / "empty_tfds"
    empty.mkdir()
    out = tmp_path / "out" / "run"
    return [
        (["cifar10", "--variant", "l3", "--out", out], "invalid choice: 'l3'", out),
        (["cifar10", "--epochs", "0", "--out", out], "must be an integer >= 1", out),
        (["cifar10", "--epochs", "-2", "--out", out], "--epochs", out),
        (["cifar10", "--batch-size", "0", "--out", out], "--batch-size", out),
        (["cifar10", "--train-limit", "zero", "--out", out], "--train-limit", out),
        (["cifar10", "--out", a_file / "run"], "lies under the file", a_file / "run"),
        (["cifar10", "--out", a_file], "is a file", None),
        (["cifar10", "--strategy", "multiworker", "--out", out], "TF_CONFIG", out),
        (["cifar10", "--out", out, "--data-dir", empty], "CIFAR-10 was not found", out),
        (["cifar10"], "--out", None),
        (["compare", tmp_path], "not a finished run folder", None),
        (["compare", tmp_path, "--plot", a_file / "x.png"], "not a writable folder", None),
        ([], "COMMAND", None),
        # `--values` is only parsed; its range is checked once, by `check_sweep`.
        (["sweep", "cifar10", "--param", "l2", "--values=1e-3,-1e-3", "--out", out],
         "`values` must be >= 0. Received: values=-0.001", out),
        (["sweep", "cifar10", "--param", "l2", "--values", "1e-3,inf", "--out", out],
         "`values` must be a finite number. Received: values=inf", out),
    ]


@pytest.mark.parametrize("case", range(15))
def test_bad_input_exits_2_and_writes_nothing(case, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    args, message, must_not_exist = _bad_inputs(tmp_path)[case]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert cli.main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    if must_not_exist is not None:
        assert not must_not_exist.exists()


def test_missing_data_via_python_m_prints_one_paragraph(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "keras_regkit", "cifar10", "--quick", "--out", str(out)],
        cwd=tmp_path, env=helpers.child_env(TFDS_DATA_DIR=str(tmp_path / "nowhere")), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines()
             if line.startswith("keras-regkit: error:")]
    assert len(lines) == 1
    for needle in ("CIFAR-10 was not found", str(tmp_path / "nowhere"), "--data-dir",
                   "TFDS_DATA_DIR", "internet"):
        assert needle in lines[0]
    assert not out.exists()


@pytest.mark.tensorflow_only
def test_multiworker_two_local_workers(tmp_path):
    """Two worker processes on 127.0.0.1 train together; only the chief writes."""
    out = tmp_path / "runs" / "multiworker"
    hosts = [f"127.0.0.1:{port}" for port in helpers.free_ports(2)]
    code = textwrap.dedent("""
        import sys
        import tensorflow_datasets as tfds
        from keras_regkit import cli
        with tfds.testing.mock_data(num_examples=32):
            sys.exit(cli.main(sys.argv[1:]))
    """)
    args = ["cifar10", "--variant", "l2", "--strategy", "multiworker", "--out", str(out),
            "--seed", "0", *TINY]
    runs = []
    for index in range(2):
        worker_tmp = tmp_path / f"tmp{index}"
        worker_tmp.mkdir()
        runs.append((args, helpers.child_env(
            TF_CONFIG=json.dumps({"cluster": {"worker": hosts},
                                  "task": {"type": "worker", "index": index}}),
            TMPDIR=str(worker_tmp))))
    results = helpers.run_together(code, runs, timeout=240)
    for returncode, _, stderr in results:
        assert returncode == 0, stderr[-4000:]
    outputs = [(stdout, stderr) for _, stdout, stderr in results]
    assert "wrote" in outputs[0][0] and "outputs left to the chief" in outputs[1][0]
    assert sorted(os.listdir(out)) == sorted(cifar10.OUTPUT_FILES)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["global_batch_size"] == 16
    assert metrics["arguments"]["strategy"] == "multiworker"
    # The non-chief worker's temporary run folder is gone.
    assert not [p for p in (tmp_path / "tmp1").iterdir()
                if p.name.startswith("keras_regkit_worker_")]


@pytest.mark.tensorflow_only
def test_quick_trains_none_and_the_variant_side_by_side(tmp_path, capsys):
    out = tmp_path / "quick"
    with tfds.testing.mock_data(num_examples=16):
        code = cli.main(["cifar10", "--quick", "--train-limit", "16", "--test-limit", "8",
                         "--epochs", "2", "--batch-size", "8", "--seed", "0",
                         "--verbose", "0", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Quick comparison: 16 training images, 2 epochs" in printed
    table = printed.split("\n", 1)[1]
    assert "penalty share" in table
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:3]}
    assert set(rows) == {"none", "l2+dropout"}
    none = json.loads((out / "none" / "metrics.json").read_text())
    regularized = json.loads((out / "l2+dropout" / "metrics.json").read_text())
    assert none["penalty_share"] == 0.0 and 0 < regularized["penalty_share"] < 1
    history = json.loads((out / "l2+dropout" / "history.json").read_text())
    np.testing.assert_allclose(
        np.add(history["data_loss"], history["penalty"]), history["loss"], rtol=1e-5)
    assert (out / "compare.png").stat().st_size > 0


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("variant, param", [("l2", "l2"), ("prox-l1", "weight_decay")])
def test_sweep_reloads_the_best_model_whole_and_without_a_warning(
        variant, param, tmp_path, capfd, monkeypatch):
    """The best trial's model is rebuilt with its optimizer built, so its checkpoint loads
    whole: no "Skipping variable loading for optimizer" (nothing a user can act on,
    issue 21 item 7), and the model holds exactly the checkpoint's weights and slots."""
    import h5py
    import keras_tuner

    reloaded = []
    get_best_models = keras_tuner.Tuner.get_best_models

    def spy(tuner, num_models=1):
        models = get_best_models(tuner, num_models)
        trial = tuner.oracle.get_best_trials(1)[0]
        [path] = pathlib.Path(tuner.get_trial_dir(trial.trial_id)).glob("*.weights.h5")
        saved = {}
        with h5py.File(path, "r") as file:
            file.visititems(lambda name, item: saved.__setitem__(name, np.asarray(item))
                            if isinstance(item, h5py.Dataset) else None)
        reloaded.append((models[0], saved))
        return models

    monkeypatch.setattr(keras_tuner.Tuner, "get_best_models", spy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = _run(["sweep", "cifar10", "--variant", variant, "--param", param,
                     "--values", "1e-4,1e-2", "--epochs", "1", "--batch-size", "8",
                     "--train-limit", "16", "--validation-size", "8", "--test-limit", "8",
                     "--seed", "0", "--verbose", "0", "--out", tmp_path / "sweep"],
                    num_examples=24)
    assert code == 0
    skipped = [str(w.message) for w in caught if "Skipping variable loading" in str(w.message)]
    assert skipped == []
    assert "Skipping variable loading" not in capfd.readouterr().err
    [(model, saved)] = reloaded
    # Every weight is one of the checkpoint's (Keras keys them by class, not layer name).
    layer_arrays = [array for name, array in saved.items() if name.startswith("layers/")]
    assert len(layer_arrays) == len(model.weights)
    for weight in model.weights:
        index = next(i for i, array in enumerate(layer_arrays)
                     if array.shape == tuple(weight.shape) and np.array_equal(array, weight))
        layer_arrays.pop(index)
    # The optimizer's variables too, in its own order: all of them, trained slots included
    # (a wrapper's inner optimizer saves its own under optimizer/inner_optimizer/).
    slots = {name: array for name, array in saved.items() if name.startswith("optimizer/vars/")}
    variables = model.optimizer.variables
    assert len(variables) == len(slots) > len(model.trainable_weights)
    for index, variable in enumerate(variables):
        np.testing.assert_array_equal(variable, slots[f"optimizer/vars/{index}"])
    assert any(np.any(array != 0) for array in slots.values() if array.ndim > 0)
