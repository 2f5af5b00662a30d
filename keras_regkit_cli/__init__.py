"""The `keras-regkit` console script, which answers `--help` and argument errors at once.

`import keras_regkit` imports Keras and TensorFlow (seconds): it must, to
register every class with Keras's serialization. Parsing the command line
needs neither. So `main` puts the `keras_regkit` package module in
`sys.modules` without running its `__init__.py`, imports `keras_regkit.cli`
(Keras-free, with all it imports at the top) and runs `cli.main`, handing it
the deferred import: once the arguments are parsed and checked and a command
is to run, `cli.main` quiets TensorFlow's start and completes the import, so
the command runs with the whole package, as after a plain `import keras_regkit`.

A package of its own, because `python -m keras_regkit` cannot do this: it
imports the package before it runs `keras_regkit/__main__.py`.
`python -m keras_regkit_cli` runs this launcher.
"""

import importlib.util
import sys

PACKAGE = "keras_regkit"


def main(argv=None):
    """Runs `keras-regkit` with `argv` (default: `sys.argv[1:]`); returns the exit code."""
    deferred = None if PACKAGE in sys.modules else DeferredImport(PACKAGE)
    try:
        from keras_regkit import cli

        return cli.main(argv, finish_import=deferred)
    finally:
        if deferred is not None:
            deferred.discard_unless_done()


class DeferredImport:
    """A package in `sys.modules` whose `__init__.py` has not run yet.

    Calling it runs `__init__.py` (once). If that fails, the half-made package
    leaves `sys.modules`, as after any failed import.
    """

    def __init__(self, name):
        spec = importlib.util.find_spec(name)
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        self.name = name
        self.spec = spec
        self.package = importlib.util.module_from_spec(spec)
        self.done = False
        sys.modules[name] = self.package

    def __call__(self):
        if self.done:
            return
        try:
            self.spec.loader.exec_module(self.package)
        except BaseException:
            if sys.modules.get(self.name) is self.package:
                del sys.modules[self.name]
            raise
        self.done = True

    def discard_unless_done(self):
        """When no command ran (`--help`, a bad argument), removes the half-made package
        and the submodules imported under it, so that an in-process caller's later
        `import keras_regkit` runs `__init__.py` as usual."""
        if self.done or sys.modules.get(self.name) not in (None, self.package):
            return
        prefix = self.name + "."
        for name in [name for name in sys.modules if name == self.name or name.startswith(prefix)]:
            del sys.modules[name]
