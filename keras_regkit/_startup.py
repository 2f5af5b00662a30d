"""Keeps TensorFlow's native start-up lines out of the `keras-regkit` terminal.

TensorFlow 2.21 writes its start-up notes (oneDNN, CUDA drivers, CPU
features, absl) from C++ straight to file descriptor 2, before and regardless
of Python's logging, `TF_CPP_MIN_LOG_LEVEL` included. For the command line
only, this module imports TensorFlow and initializes its devices with
descriptor 2 pointed at a temporary file, then puts it back; if the import
fails, what was written is replayed. Library users see TensorFlow as usual.
It runs when the package is imported (it is imported first), since the
`keras-regkit` script imports the package before it can parse anything, and
`python -m keras_regkit` imports it before running `__main__` (`sys.argv[0]`
is then still `"-m"`; `sys.orig_argv` names the module).
"""

import os
import sys
import tempfile

COMMAND = "keras-regkit"
MODULE = "keras_regkit"


def _is_command_line(argv, orig_argv):
    """Whether `argv` is the `keras-regkit` script's or `python -m keras_regkit`'s."""
    if not argv:
        return False
    if os.path.basename(argv[0]) == COMMAND:
        return True
    if argv[0] != "-m" or len(orig_argv) < len(argv):
        return False
    # The module's name comes just before the arguments: `-m keras_regkit`, `-mkeras_regkit`.
    module = orig_argv[-len(argv)]
    return module == MODULE or (module.startswith("-") and module.endswith("m" + MODULE))


def _wants_quiet(argv, orig_argv=()):
    if not _is_command_line(argv, orig_argv):
        return False
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:  # the user asked for a level: respect it
        return False
    arguments = argv[1:]
    for i, argument in enumerate(arguments):
        if argument == "--verbose=2" or (
            argument == "--verbose" and arguments[i + 1:i + 2] == ["2"]
        ):
            return False
    return True


def quiet_tensorflow_start(argv=None, orig_argv=None):
    """Imports TensorFlow (and its devices) silently when run as `keras-regkit`
    or `python -m keras_regkit`.

    Returns whether it did. Anything that goes wrong (no temporary file, no
    TensorFlow, a failing import) leaves things as they were and replays what
    TensorFlow wrote; a failing import then happens again, visibly, where the
    package imports Keras.
    """
    argv = sys.argv if argv is None else argv
    orig_argv = getattr(sys, "orig_argv", ()) if orig_argv is None else orig_argv
    if "tensorflow" in sys.modules or not _wants_quiet(argv, orig_argv):
        return False
    try:
        captured = tempfile.TemporaryFile()
    except OSError:
        return False
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"  # read by TensorFlow's logging when it starts
    with captured:
        sys.stderr.flush()
        saved = os.dup(2)
        imported = False
        try:
            os.dup2(captured.fileno(), 2)
            try:
                import tensorflow as tf

                tf.config.list_physical_devices()
                imported = True
            except Exception:  # ImportError, or a broken install
                imported = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        if not imported:
            del os.environ["TF_CPP_MIN_LOG_LEVEL"]
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", "replace"))
            return False
    return True


quiet_tensorflow_start()  # on import, before the package imports Keras
