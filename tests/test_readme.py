"""The README's code blocks run as written."""

import re

import pytest

from tests import helpers


def _python_block(heading):
    text = (helpers.REPO_ROOT / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_keras_hub_fine_tuning_example_runs(tmp_path):
    pytest.importorskip("keras_hub")
    code = _python_block("Fine-tuning a pretrained transformer (KerasHub)")
    helpers.run_python(f"import os\nos.chdir({str(tmp_path)!r})\n" + code)
    assert (tmp_path / "finetuned.keras").exists()


def test_quick_start_runs_without_warnings():
    """A newcomer's first run, up to a training step (the optimizer builds there), warns of nothing."""
    code = _python_block("Quick start")
    one_step = (
        "\nimport numpy as np\n"
        "model.fit(np.random.rand(4, 32, 32, 3).astype('float32'),"
        " np.random.randint(0, 10, 4), epochs=1, verbose=0)\n"
        "print('STEP_OK')\n"
    )
    out = helpers.run_python(
        "import warnings\nwarnings.simplefilter('error', UserWarning)\n" + code + one_step)
    assert "STEP_OK" in out
