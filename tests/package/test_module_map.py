"""docs/internals.md, the map of the source, names every module and test folder."""

import re

from tests.helpers import REPO_ROOT

_MAP = REPO_ROOT / "docs" / "internals.md"


def _sections():
    """`{heading: text}` of the map's `##` sections."""
    parts = re.split(r"^## (.+)$", _MAP.read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def _named(text):
    return set(re.findall(r"`([\w./]+)`", text))


def _missing(folder, text):
    named = _named(text)
    return sorted(path.name for path in folder.glob("*.py")
                  if path.name != "__init__.py" and path.name not in named)


def test_every_library_module_is_on_the_map():
    sections = _sections()
    library = next(text for heading, text in sections.items() if "`keras_regkit/`" in heading)
    baselines = next(text for heading, text in sections.items() if "baselines/" in heading)
    assert _missing(REPO_ROOT / "keras_regkit", library) == []
    assert _missing(REPO_ROOT / "keras_regkit" / "baselines", baselines) == []
    assert "keras_regkit_cli/" in _named(library)


def test_every_test_folder_is_on_the_map():
    tests = next(text for heading, text in _sections().items() if "`tests/`" in heading)
    folders = sorted(f"tests/{path.name}/" for path in (REPO_ROOT / "tests").iterdir()
                     if path.is_dir() and (path / "__init__.py").exists())
    assert [folder for folder in folders if folder not in _named(tests)] == []
