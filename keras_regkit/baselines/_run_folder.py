"""Where a run's outputs go: checking `--out` (or `--plot`), then writing it whole or not at all.

A run (or a `--quick` pair, or a sweep) is written into a new hidden folder
beside `out`, `.NAME.partial-XXXXXXXX`, and renamed to `out` only once every
file is there. A run that fails or is stopped half-way removes that folder and
leaves `out` as it was: never old and new files mixed, looking finished.

A non-empty `out` is refused unless `overwrite=True` (`--overwrite`), and even
then only when it holds nothing but what keras-regkit writes, so a mistyped
`--out .` cannot delete someone's files. The old folder is replaced only when
the new one is complete.
"""

import contextlib
import os
import shutil
import tempfile

from keras_regkit.baselines._errors import OutputDirError

RUN_FILES = ("history.json", "metrics.json", "model.keras", "curves.png")
SWEEP_FILES = ("sweep.json", "chosen.json", "validation_curve.png", "tuner")
QUICK_PLOT = "compare.png"
PARTIAL = ".partial-"  # in the name of a folder still being written


def check_output_dir(out):
    """Checks that the run folder `out` can be created and written; creates nothing.

    Returns the absolute path. Raises `OutputDirError` if `out` is a file,
    lies under a file, or its nearest existing folder is not writable.
    """
    if not isinstance(out, (str, os.PathLike)) or not os.fspath(out):
        raise OutputDirError(
            f"The run folder must be a non-empty path. Received: out={out!r}"
        )
    path = os.path.abspath(os.path.expanduser(os.fspath(out)))
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        where = "is a file" if probe == path else f"lies under the file {probe!r}"
        raise OutputDirError(
            f"Cannot write the run folder {os.fspath(out)!r}: it {where}. "
            "Choose another --out."
        )
    _check_writable(probe, f"the run folder {os.fspath(out)!r}", "--out")
    return path


def _check_writable(folder, what, flag):
    try:
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"no write permission on {folder!r}")
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OutputDirError(f"Cannot write {what}: {error}. Choose another {flag}.") from None


def _is_run(names, folder=None):
    return set(names) <= set(RUN_FILES)


def _is_quick(names, folder):
    return all(
        name == QUICK_PLOT
        or (os.path.isdir(os.path.join(folder, name))
            and _is_run(os.listdir(os.path.join(folder, name))))
        for name in names
    )


def _is_sweep(names, folder=None):
    return set(names) <= set(SWEEP_FILES)


# What an earlier output folder of each kind may hold: `--overwrite` replaces
# nothing else.
KINDS = {"run": _is_run, "--quick run": _is_quick, "sweep": _is_sweep}


def check_replaceable(out, overwrite, kind="run"):
    """Checks the output folder `out` (absolute, see `check_output_dir`) may be written.

    A missing or empty folder may. A non-empty one only with `overwrite=True`,
    and only when all it holds is what a `kind` ("run", "--quick run", "sweep")
    writes there; otherwise `OutputDirError` names the folder and the flag.
    """
    if not os.path.isdir(out):
        return
    names = sorted(os.listdir(out))
    if not names:
        return
    if not overwrite:
        raise OutputDirError(
            f"The output folder {out!r} is not empty; pass --overwrite (Python: "
            "overwrite=True) to replace it, or choose another --out."
        )
    ours = KINDS[kind]
    if not ours(names, out):
        strange = [name for name in names if not ours([name], out)]
        raise OutputDirError(
            f"The output folder {out!r} holds what a {kind} does not write "
            f"({', '.join(repr(name) for name in strange[:3])}); --overwrite replaces only "
            f"an earlier {kind}'s folder. Choose another --out."
        )


@contextlib.contextmanager
def staged(out, overwrite=True, kind="run"):
    """Yields a new empty folder beside `out` to write into; moves it to `out` at the end.

    `out` is absolute and checked (`check_output_dir`, `check_replaceable`).
    If the block raises, the new folder (and any parent folder made for it)
    is removed and `out` is left as it was. At the end `out`, if there, is
    moved aside, the new folder renamed to `out`, and the old one deleted.
    """
    parent = os.path.dirname(out)
    made = []
    probe = parent
    while not os.path.exists(probe):
        made.append(probe)
        probe = os.path.dirname(probe)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}{PARTIAL}", dir=parent)
    try:
        yield staging
        check_replaceable(out, overwrite, kind)  # nothing else wrote it meanwhile
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in made:  # innermost first
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise


def _publish(staging, out):
    """Renames `staging` to `out`, replacing `out`'s old folder if there is one."""
    if not os.path.lexists(out):
        os.rename(staging, out)
        return
    folder, name = os.path.split(staging)
    old = os.path.join(folder, name.replace(PARTIAL, ".replaced-", 1))
    os.rename(out, old)
    try:
        os.rename(staging, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_plot_path(plot, runs=()):
    """Checks the PNG file `plot` can be written and overwrites nothing it must not.

    Refuses (`OutputDirError`) a folder, a name not ending in `.png`, a file
    inside one of the run folders `runs` (their curves and history), and a
    folder that cannot be written. Creates nothing; returns the absolute path.
    """
    text = os.fspath(plot)
    path = os.path.abspath(text)
    parent = os.path.dirname(path)
    if os.path.isdir(path) or text.endswith(("/", os.sep)):
        raise OutputDirError(f"Cannot write the plot {text!r}: it is a folder.")
    if parent in {os.path.abspath(os.fspath(run)) for run in runs}:
        raise OutputDirError(
            f"Cannot write the plot {text!r}: it would overwrite a file of the run "
            f"folder {parent!r}. Choose a file outside the run folders."
        )
    if not path.lower().endswith(".png"):
        raise OutputDirError(f"Cannot write the plot {text!r}: its name must end in .png.")
    if not os.path.isdir(parent):
        raise OutputDirError(f"Cannot write the plot {text!r}: {parent!r} is not a writable "
                             "folder.")
    _check_writable(parent, f"the plot {text!r}", "--plot")
    return path


__all__ = ["check_output_dir", "check_plot_path", "check_replaceable", "staged"]
