"""The baselines' imports run one way, and the library never imports the baselines.

Read from the source with `ast` (nothing is imported): every `import` in a
baselines module, at module level or inside a function, names only modules
below it in `ORDER`; no `keras_regkit/*.py` but `cli.py` imports
`keras_regkit.baselines` at all. A deprecated function (one that warns with
`_moved(...)`, as the `Variant.build_*` methods of 0.1.0 do) may import what
it moved to, at call time: its imports are not counted.
"""

import ast

from tests import helpers

PACKAGE = helpers.REPO_ROOT / "keras_regkit"
BASELINES = "keras_regkit.baselines"
# Bottom first: a module may import only the modules before it
# (settings -> variants -> run settings -> model -> training -> sweep, cifar10; cli above all).
ORDER = [
    "_errors",
    "_settings",
    "_variants",
    "_run_settings",
    "_run_folder",
    "_report",
    "_pipeline",
    "_data",
    "_resnet",
    "_model",
    "_training",
    "_sweep",
    "cifar10",
]


# The call that marks a function as a deprecated shim (`_variants._moved`).
DEPRECATION_MARK = "_moved"


def _is_deprecated(function):
    """Whether `function` (an `ast.FunctionDef`) warns that it moved (calls `_moved`)."""
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
               and node.func.id == DEPRECATION_MARK for node in ast.walk(function))


def _imported(path, package, *, skip_deprecated=False):
    """The dotted names of the modules `path` imports, anywhere in the file.

    With `skip_deprecated`, the imports inside a deprecated function
    (`_is_deprecated`) are not counted.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = {id(inner) for node in ast.walk(tree)
               if skip_deprecated and isinstance(node, ast.FunctionDef) and _is_deprecated(node)
               for inner in ast.walk(node)}
    names = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names]  # `from pkg import mod`
    return names


def _baselines_imported(path, package):
    """The baselines modules (by short name) that `path` imports, deprecated shims aside."""
    prefix = BASELINES + "."
    return {name[len(prefix):].split(".")[0]
            for name in _imported(path, package, skip_deprecated=True)
            if name.startswith(prefix)}


def test_every_baselines_module_has_a_place_in_the_order():
    modules = {path.stem for path in (PACKAGE / "baselines").glob("*.py")} - {"__init__"}
    assert modules == set(ORDER)


def test_baselines_modules_import_only_those_below_them():
    wrong = []
    for rank, module in enumerate(ORDER):
        path = PACKAGE / "baselines" / f"{module}.py"
        for target in sorted(_baselines_imported(path, BASELINES)):
            if target not in ORDER[:rank]:
                wrong.append(f"{module} imports {target}")
        if {"keras_regkit.cli", "keras_regkit_cli"} & set(_imported(path, BASELINES)):
            wrong.append(f"{module} imports the command line")
    assert wrong == [], f"imports against the order {ORDER}: {wrong}"


def test_the_library_never_imports_the_baselines():
    wrong = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name == "cli.py":  # the top of the graph: the command line runs the baselines
            continue
        if any(name == BASELINES or name.startswith(BASELINES + ".")
               for name in _imported(path, "keras_regkit")):
            wrong.append(path.name)
    assert wrong == []
