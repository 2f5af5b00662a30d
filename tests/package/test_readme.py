"""The README and the documentation site: their code runs, their links hold.

The README is the front page; the guides in docs/ carry the longer examples.
The blocks run here are those that stand alone (the others continue a model
from the text around them, `model.fit(x, y, ...)`).
"""

import re

import pytest

import keras_regkit
from tests import helpers

DOCS = helpers.REPO_ROOT / "docs"


def _python_block(heading, path="README.md"):
    """The first ```python block of the section `heading` (any level) of `path`."""
    text = (helpers.REPO_ROOT / path).read_text()
    match = re.search(rf"^(#+) {re.escape(heading)}\n", text, re.M)
    assert match, f"no heading {heading!r} in {path}"
    section = text[match.end():]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block, f"no python block after {heading!r} in {path}"
    before = re.sub(r"```.*?```", "", section[:block.start()], flags=re.S)
    level = len(match.group(1))
    assert not re.search(rf"^#{{1,{level}}} ", before, re.M), (
        f"the section {heading!r} of {path} has no python block of its own")
    return block.group(1)


def test_keras_hub_fine_tuning_example_runs(tmp_path):
    pytest.importorskip("keras_hub")
    code = _python_block("Fine-tuning a pretrained transformer (KerasHub)", "docs/guides/rules.md")
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


# (page, heading): the guides' stand-alone examples.
GUIDE_EXAMPLES = [
    ("docs/guides/rules.md", "Rules on built and pretrained models"),
    ("docs/guides/dropout.md", "Dropout placement"),
    ("docs/guides/droppath-dropblock.md", "Into a built network"),
    ("docs/guides/sam.md", "SAM and ASAM"),
    ("docs/guides/averaging.md", "Weight averaging: SWA, EMA, batch-norm recalibration"),
    ("docs/guides/schedules.md", "Regularization that changes during training"),
]


def test_guide_examples_run(tmp_path):
    """Each block runs in its own namespace, one process for all (one Keras import)."""
    blocks = [_python_block(heading, path) for path, heading in GUIDE_EXAMPLES]
    try:
        import keras_tuner  # noqa: F401
        blocks.append(_python_block(
            "Choosing the strength on a validation curve", "docs/guides/monitor.md")
            + "build(keras_tuner.HyperParameters())\n")
    except ImportError:
        pass
    program = f"import os\nos.chdir({str(tmp_path)!r})\n"
    for i, block in enumerate(blocks):
        program += f"exec({block!r}, {{}})\nprint('BLOCK_OK', {i})\n"
    out = helpers.run_python(program)
    assert out.count("BLOCK_OK") == len(blocks)


def test_every_public_name_is_in_the_api_reference():
    rendered = set()
    for page in (DOCS / "api").glob("*.md"):
        rendered |= set(re.findall(r"^::: keras_regkit\.([\w.]+)", page.read_text(), re.M))
    missing = sorted(set(keras_regkit.__all__) - rendered)
    assert not missing, f"not in any docs/api/*.md ':::' block: {missing}"


def _slug(heading):
    """Python-Markdown's (and, for ASCII headings, GitHub's) anchor of a heading."""
    text = re.sub(r"[^\w\s-]", "", heading.encode("ascii", "ignore").decode()).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def test_readme_links_hold():
    """Every relative link of the README names a file that exists, and a heading in it."""
    page = "README.md"
    text = (helpers.REPO_ROOT / page).read_text()
    links = re.findall(r"\]\(((?!https?:)[^)#\s]+)(?:#([^)\s]+))?\)", text)
    assert links
    for target, anchor in links:
        path = helpers.REPO_ROOT / target
        assert path.exists() or target == "docs/faults.md", f"{page} links to missing {target}"
        if anchor and path.is_file():
            headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
            assert anchor in {_slug(h) for h in headings}, f"{page}: no #{anchor} in {target}"


def test_the_docs_show_the_readme_set_up_and_quick_start():
    """Getting started includes the README's blocks (pymdownx.snippets): one text, not two."""
    readme = (helpers.REPO_ROOT / "README.md").read_text()
    started = (DOCS / "getting-started.md").read_text()
    for section in ("setup", "quickstart"):
        assert f"--8<-- [start:{section}]" in readme and f"--8<-- [end:{section}]" in readme
        assert f'--8<-- "README.md:{section}"' in started
