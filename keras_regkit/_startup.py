"""Keeps TensorFlow's native start-up lines out of the `keras-regkit` terminal.

TensorFlow 2.21 writes its start-up notes (oneDNN, CUDA drivers, CPU
features, absl) from C++ straight to file descriptor 2, before and regardless
of Python's logging, `TF_CPP_MIN_LOG_LEVEL` included. The command line
(`keras_regkit.cli.main`, once its arguments are parsed) calls
`quiet_tensorflow_start` before anything imports Keras: it imports TensorFlow
and initializes its devices with descriptor 2 pointed at a temporary file,
then puts it back; if the import fails, what was written is replayed.

Importing `keras_regkit` never runs this: library users see TensorFlow as
usual, and the package reads no `sys.argv` and touches no descriptor.
Importing this module has no side effects.
"""

import os
import sys
import tempfile

LEVEL = "TF_CPP_MIN_LOG_LEVEL"


def quiet_tensorflow_start(verbose=1):
    """Imports TensorFlow (and its devices) with its start-up lines kept off the terminal.

    Does nothing when the user set `TF_CPP_MIN_LOG_LEVEL`: their level is
    respected. Otherwise sets it to `"2"`, so TensorFlow's later INFO and
    WARNING lines stay off too, and imports TensorFlow with descriptor 2
    captured, unless TensorFlow is imported already or `verbose` is 2 (a log
    of one line per epoch keeps the start-up lines that level 2 lets through).

    Returns whether it captured the start. A failing import (no TensorFlow,
    a broken install) puts back descriptor 2 and the environment, replays
    what TensorFlow wrote, and then fails again, visibly, where the package
    imports Keras.
    """
    if LEVEL in os.environ:
        return False
    os.environ[LEVEL] = "2"  # read by TensorFlow's logging when it starts
    if verbose == 2 or "tensorflow" in sys.modules:
        return False
    try:
        captured = tempfile.TemporaryFile()
    except OSError:
        return False
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
            del os.environ[LEVEL]
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", "replace"))
            return False
    return True
