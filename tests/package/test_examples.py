"""Every script in examples/ runs in smoke mode and prints the result it promises.

The examples run in this process (one TensorFlow start-up for all of them), each
through its `main(argv)`; one also runs as a command, as a user would. CIFAR-10
comes from `tfds.testing.mock_data`, never from the real data set.
"""

import importlib.util
import re

import pytest

from tests import helpers

EXAMPLES = helpers.REPO_ROOT / "examples"


def _run(name, argv, capsys):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--smoke", *argv])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, out
    return result, dict(re.findall(r"(\w+)=(\S+)", lines[0]))


def test_every_example_is_tested():
    tested = {"drop_in_regularizers", "weight_decay_vs_l2", "finetune_pretrained",
              "elastic_net_regression", "sparsify_with_proximal_l1", "dropout_placement",
              "cifar10_recipes"}
    assert {path.stem for path in EXAMPLES.glob("*.py")} == tested


def test_examples_import_only_public_api():
    for path in EXAMPLES.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"keras_regkit(\.\w+)*\._|keras\.src", text), path.name


def test_drop_in_regularizers(capsys):
    _, printed = _run("drop_in_regularizers", [], capsys)
    assert float(printed["max_loss_diff"]) < 1e-6
    assert float(printed["max_weight_diff"]) < 1e-5


def test_weight_decay_vs_l2(capsys, tmp_path):
    _, printed = _run("weight_decay_vs_l2", ["--out", str(tmp_path)], capsys)
    assert float(printed["sgd_diff"]) < 1e-5      # the same weights under SGD
    assert float(printed["adam_diff"]) > 1e-3     # different under Adam
    assert (tmp_path / "decay_scaling.png").stat().st_size > 0


def test_finetune_pretrained(capsys, tmp_path):
    _, printed = _run("finetune_pretrained", ["--out", str(tmp_path)], capsys)
    assert int(printed["rules"]) > 0
    assert printed["restored"] == printed["rules"]
    assert float(printed["max_prediction_diff"]) < 1e-5


def test_elastic_net_regression(capsys):
    _, printed = _run("elastic_net_regression", [], capsys)
    assert float(printed["max_coef_diff_vs_sklearn"]) < 0.02
    assert float(printed["correction_ratio"]) == pytest.approx(
        float(printed["expected_ratio"]), abs=1e-3)


def test_sparsify_with_proximal_l1(capsys):
    _, printed = _run("sparsify_with_proximal_l1", [], capsys)
    assert int(printed["proximal_zeros"]) > int(printed["subgradient_zeros"])
    kept, total = map(int, printed["group_kept_units"].split("/"))
    assert 0 < kept < total


def test_dropout_placement(capsys):
    _, printed = _run("dropout_placement", [], capsys)
    assert int(printed["inserted"]) == 4
    assert int(printed["removed_left"]) == 0
    assert float(printed["max_diff"]) == 0.0


def test_cifar10_recipes_on_mock_data(capsys, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=16):
        _, printed = _run("cifar10_recipes", ["--out", str(tmp_path)], capsys)
    assert printed["runs"] == "2" and printed["plot"] == "True"
    assert (tmp_path / "none" / "metrics.json").exists()


def test_an_example_runs_as_a_command():
    out = helpers.run_python(
        "import runpy, sys\n"
        "sys.argv = ['dropout_placement.py', '--smoke']\n"
        "runpy.run_path('examples/dropout_placement.py', run_name='__main__')\n")
    assert "RESULT dropout inserted=4" in out
