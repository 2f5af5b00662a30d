"""Run folders of the CIFAR-10 baseline: writing them, reading them, comparing them.

A run folder holds history.json (per-epoch `loss`, `accuracy`, `val_loss`,
`val_accuracy`), metrics.json (written last: its presence marks a finished
run), model.keras and curves.png. Plots use matplotlib's Agg canvas directly,
so no display and no global backend switch is needed.
"""

import json
import numbers
import os
import time

from keras_regkit import _tables
from keras_regkit.baselines import _run_folder
from keras_regkit.baselines._errors import OutputDirError
from keras_regkit.baselines._errors import RunFolderError

TABLE_COLUMNS = (
    ("run", "{}"),
    ("variant", "{}"),
    ("test acc", "{:.4f}"),
    ("train acc", "{:.4f}"),
    ("gap", "{:+.4f}"),
    ("test loss", "{:.4f}"),
    ("penalty share", "{:.3f}"),
    ("epochs", "{}"),
    ("train images", "{}"),
    ("time (s)", "{:.1f}"),
)


def _figure(width=11.0, height=4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _epoch_axis(axes, metric):
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)


def _write_json(path, value):
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, sort_keys=False, allow_nan=True)
        handle.write("\n")


def plot_history(history, path, title=None):
    """Draws train/validation accuracy and loss per epoch into the PNG `path`."""
    figure = _figure()
    panels = figure.subplots(1, 2)
    for axes, metric in zip(panels, ("accuracy", "loss")):
        for key, label, style in (
            (metric, "train (running average during the epoch)", "-"),
            (f"val_{metric}", "validation (test split)", "--"),
        ):
            values = history.get(key)
            if values:
                epochs = range(1, len(values) + 1)
                axes.plot(epochs, values, style, marker="o", markersize=3, label=label)
        _epoch_axis(axes, metric)
        axes.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, format="png")


def write_run(directory, *, model, history, metrics, started=None):
    """Writes history.json, model.keras, curves.png, then metrics.json into `directory`."""
    _write_json(os.path.join(directory, "history.json"), history)
    model.save(os.path.join(directory, "model.keras"))
    title = (
        f"{metrics['variant']}: test acc {metrics['test_accuracy']:.4f}, "
        f"gap {metrics['gap']:+.4f}"
    )
    plot_history(history, os.path.join(directory, "curves.png"), title=title)
    if started is not None:
        metrics["wall_seconds"] = time.perf_counter() - started
    _write_json(os.path.join(directory, "metrics.json"), metrics)


# metrics.json's values that `format_table` and `plot_runs` read, by kind
# (`None` or absent: shown as `-`); other keys are not read.
_NUMBERS = ("test_accuracy", "train_accuracy", "gap", "test_loss", "penalty_share",
            "train_seconds")
_COUNTS = ("epochs", "num_train")


def _read_json(path, what):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:  # UnicodeDecodeError and JSONDecodeError too
        raise RunFolderError(
            f"{what} cannot be read ({error.__class__.__name__}: {error})."
        ) from None


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_metrics(metrics, where):
    if not isinstance(metrics, dict):
        raise RunFolderError(
            f"{where}: metrics.json must hold a JSON object. "
            f"Received: a {type(metrics).__name__}"
        )
    if "test_accuracy" not in metrics:
        raise RunFolderError(f"{where}: metrics.json has no test_accuracy.")
    for key in _NUMBERS + _COUNTS + ("variant",):
        value = metrics.get(key)
        if key == "variant":
            expected, ok = "a string", value is None or isinstance(value, str)
        elif key in _COUNTS:
            expected, ok = "an integer", value is None or (
                isinstance(value, numbers.Integral) and not isinstance(value, bool))
        else:
            expected, ok = "a number", (value is None and key != "test_accuracy") or (
                _is_number(value))
        if not ok:
            raise RunFolderError(
                f"{where}: metrics.json's {key} must be {expected}. Received: {key}={value!r}"
            )


def _check_history(history, where):
    if not isinstance(history, dict):
        raise RunFolderError(
            f"{where}: history.json must hold a JSON object of per-epoch lists. "
            f"Received: a {type(history).__name__}"
        )
    for key, values in history.items():
        if not isinstance(values, list) or not all(_is_number(value) for value in values):
            raise RunFolderError(
                f"{where}: history.json's {key} must be a list of numbers. "
                f"Received: {key}={values!r:.80}"
            )


def load_run(directory):
    """Reads a finished run folder: `{"name", "path", "metrics", "history"}`.

    Raises:
        RunFolderError: if `directory` is not a finished run folder (no
            metrics.json, which a run writes last; or the temporary folder of
            a run still being written), or its metrics.json or history.json
            cannot be read or hold values of the wrong type.
    """
    path = os.fspath(directory)
    name = os.path.basename(os.path.normpath(path))
    if name.startswith(".") and _run_folder.PARTIAL in name:
        raise RunFolderError(
            f"{path!r} is the temporary folder of an unfinished run (still being "
            "written, or stopped before it finished); compare finished run folders."
        )
    metrics_path = os.path.join(path, "metrics.json")
    if not os.path.isfile(metrics_path):
        raise RunFolderError(
            f"{path!r} is not a finished run folder: it has no metrics.json (a run "
            "writes it last)."
        )
    metrics = _read_json(metrics_path, f"{path!r}: metrics.json")
    _check_metrics(metrics, repr(path))
    history = {}
    history_path = os.path.join(path, "history.json")
    if os.path.exists(history_path):
        history = _read_json(history_path, f"{path!r}: history.json")
        _check_history(history, repr(path))
    return {"name": name, "path": path, "metrics": metrics, "history": history}


def _row(run):
    metrics = run["metrics"]
    values = (
        run["name"],
        metrics.get("variant"),
        metrics.get("test_accuracy"),
        metrics.get("train_accuracy"),
        metrics.get("gap"),
        metrics.get("test_loss"),
        metrics.get("penalty_share"),
        metrics.get("epochs"),
        metrics.get("num_train"),
        metrics.get("train_seconds"),
    )
    cells = []
    for (_, fmt), value in zip(TABLE_COLUMNS, values):
        cells.append("-" if value is None else fmt.format(value))
    return cells


def format_table(runs):
    """A plain-text table of runs: test/train accuracy, gap, loss, epochs, time.

    Example:

    >>> run = {"name": "a", "metrics": {"variant": "none", "test_accuracy": 0.5,
    ...        "train_accuracy": 0.75, "gap": 0.25, "test_loss": 1.5, "epochs": 2,
    ...        "num_train": 100, "train_seconds": 3.0}}
    >>> print(format_table([run]))
    run  variant  test acc  train acc  gap      test loss  penalty share  epochs  train images  time (s)
    a    none     0.5000    0.7500     +0.2500  1.5000     -              2       100           3.0
    """
    lines = []
    _tables.print_table([name for name, _ in TABLE_COLUMNS], [_row(run) for run in runs],
                        print_fn=lines.append)
    return "\n".join(lines)


def plot_runs(runs, path):
    """Draws every run's accuracy and loss curves (train solid, validation dashed) into one PNG."""
    figure = _figure(12.0, 4.8)
    panels = figure.subplots(1, 2)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for run, color in zip(runs, colors):
        variant = run["metrics"].get("variant")
        label = run["name"] if run["name"] == variant else f"{run['name']} ({variant})"
        for axes, metric in zip(panels, ("accuracy", "loss")):
            for key, style, suffix in ((metric, "-", " train"), (f"val_{metric}", "--", " val")):
                values = run["history"].get(key)
                if values:
                    axes.plot(range(1, len(values) + 1), values, style, color=color,
                              label=label + suffix)
    for axes, metric in zip(panels, ("accuracy", "loss")):
        _epoch_axis(axes, metric)
    panels[0].legend(fontsize="small")
    figure.suptitle("CIFAR-10 baseline: train (solid) and validation/test (dashed)")
    figure.tight_layout()
    figure.savefig(path, format="png")


def compare_runs(directories, *, plot=None, print_fn=print):
    """Prints the table of the run folders `directories` and optionally plots them.

    Args:
        directories: Run folders written by `train`. Files among them (the
            `plot` path itself, logs) are skipped, so that a glob such as
            `runs/*` may match an earlier `runs/compare.png` or a `log.txt`.
        plot: Path of a PNG to draw all runs' curves into, or `None`.
        print_fn: Where the table goes.

    Returns:
        The loaded runs (see `load_run`).

    Raises:
        RunFolderError: if no folder is given or one is not a finished run.
        OutputDirError: if `plot` cannot be written, or is a folder, or a
            file in one of the run folders (checked before anything is read).
    """
    directories = list(directories)
    if plot is not None:
        plot_path = os.path.abspath(os.fspath(plot))
        directories = [d for d in directories if os.path.abspath(os.fspath(d)) != plot_path]
    # A glob such as `runs/*` also matches files beside the run folders (logs).
    directories = [d for d in directories if not os.path.isfile(os.fspath(d))]
    if plot is not None:
        _run_folder.check_plot_path(plot, directories)
    if not directories:
        raise RunFolderError("No run folder given to compare.")
    runs = [load_run(directory) for directory in directories]
    print_fn(format_table(runs))
    if plot is not None:
        try:
            plot_runs(runs, os.fspath(plot))
        except OSError as error:  # e.g. a full disk, found only when writing
            raise OutputDirError(f"Cannot write the plot {os.fspath(plot)!r}: {error}.") from None
    return runs
