"""The `keras-regkit` command line (also `python -m keras_regkit_cli`).

    keras-regkit cifar10 --variant l2+dropout --epochs 50 --out runs/l2_dropout
    keras-regkit cifar10 --quick --data-dir ../shared/tensorflow_datasets --out runs/quick
    keras-regkit compare runs/* --plot runs/compare.png
    keras-regkit sweep cifar10 --variant l2 --param l2 --values 1e-5,1e-4,1e-3,1e-2 --out runs/sweep

Bad input (an unknown variant, `--epochs 0`, an unwritable or non-empty
`--out`, missing or corrupt CIFAR-10 data, a bad `TF_CONFIG`, a run folder
`compare` cannot read) prints one line and exits with code 2 before anything
is written. Programming errors still raise. A run folder is written beside
`--out` and moved into place when complete (see `baselines._run_folder`).

`--help` and argument errors answer at once: this module, and all it imports
at the top, is Keras-free, and the console script's launcher
(`keras_regkit_cli`) defers `keras_regkit/__init__.py` until a command runs.
Only then does `main` keep TensorFlow's start-up lines off the terminal
(`_startup`) and import Keras. `python -m keras_regkit` runs the same command
line, but Python imports the package (Keras, TensorFlow and their start-up
lines) before it parses.
"""

import argparse
import dataclasses
import os
import re
import sys

from keras_regkit import _startup
from keras_regkit import _validation

# No model code and no tensorflow_datasets behind these: `--help` does not load them.
from keras_regkit.baselines._run_settings import RunSettings
from keras_regkit.baselines._settings import DEFAULT_VARIANT
from keras_regkit.baselines._settings import MAX_BLOCKS
from keras_regkit.baselines._settings import QUICK
from keras_regkit.baselines._settings import STRATEGIES
from keras_regkit.baselines._settings import SWEEP_PARAMS
from keras_regkit.baselines._settings import SWEEP_TUNERS
from keras_regkit.baselines._variants import VARIANTS

EXIT_USAGE = 2


def _positive_int(text):
    try:
        return _validation.positive_int(int(text), "value")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an integer >= 1 (and at most 2**63 - 1), got {text!r}") from None


def _seed(text):
    """Parses `--seed`; the range is `_validation.random_seed`'s."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    try:
        return _validation.random_seed(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _float_list(text):
    """Parses `--values`; their range is `check_sweep`'s to check."""
    try:
        values = [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"must hold at least one number, got {text!r}")
    return values


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-regkit",
        description="Regularization baselines for Keras 3 (keras_regkit).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "cifar10",
        help="train a CIFAR-10 baseline (VGG-like or ResNet-20) with one "
             "regularization variant",
        description=(
            "Train a CIFAR-10 baseline (the VGG-like net, or ResNet-20 for the "
            "resnet* variants) and write history.json, "
            "metrics.json, model.keras and curves.png into --out. The data is "
            "read with tensorflow-datasets from --data-dir or $TFDS_DATA_DIR "
            "and never downloaded."
        ),
    )
    # Defaults from RunSettings; None: not given (RunSettings or --quick decides).
    run.add_argument("--variant", default=DEFAULT_VARIANT, choices=tuple(VARIANTS),
                     help="regularization set-up (default: %(default)s)")
    run.add_argument("--epochs", type=_positive_int, default=None,
                     help=f"training epochs (default: {RunSettings.epochs}; "
                          f"{QUICK['epochs']} with --quick)")
    run.add_argument("--batch-size", type=_positive_int, default=None,
                     help=f"per-replica batch size (default: {RunSettings.batch_size}; "
                          f"{QUICK['batch_size']} with --quick)")
    run.add_argument("--out", required=True,
                     help="run folder to write (refused if not empty, unless --overwrite)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace a non-empty --out that holds an earlier run (or --quick "
                          "pair); it is replaced only when the new run is complete")
    run.add_argument("--train-limit", type=_positive_int, default=None,
                     help=f"use only the first N training images "
                          f"({QUICK['train_limit']} with --quick)")
    run.add_argument("--test-limit", type=_positive_int, default=None,
                     help=f"use only the first N test images "
                          f"({QUICK['test_limit']} with --quick)")
    run.add_argument("--data-dir", default=None,
                     help="tensorflow-datasets directory holding cifar10/ "
                          "(default: $TFDS_DATA_DIR)")
    run.add_argument("--augment", action="store_true",
                     help="random horizontal flip and 4-pixel pad-crop")
    run.add_argument("--batch-norm", action="store_true",
                     help="BatchNormalization after each convolution")
    run.add_argument("--standardize", action="store_true",
                     help="per-channel standardization instead of [0, 1] scaling")
    run.add_argument("--blocks", type=int, choices=tuple(range(1, MAX_BLOCKS + 1)),
                     default=RunSettings.blocks,
                     help="convolution blocks: 2 = classic, 3 = textbook (default: "
                          "%(default)s); VGG-like variants only, as is --batch-norm")
    run.add_argument("--strategy", choices=STRATEGIES, default=RunSettings.strategy,
                     help="tf.distribute strategy; multiworker reads TF_CONFIG")
    run.add_argument("--quick", action="store_true",
                     help=f"show the effect in a couple of minutes: train `none` and "
                          f"--variant side by side on {QUICK['train_limit']} training "
                          f"images, {QUICK['epochs']} epochs, batch {QUICK['batch_size']}, "
                          f"validated on {QUICK['test_limit']} test images; --out gets a "
                          "run folder for each and compare.png (explicit --epochs, "
                          "--train-limit, --test-limit, --batch-size win)")
    run.add_argument("--seed", type=_seed, default=None,
                     help="random seed, 0 to 2**32 - 1")
    run.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                     help="Keras progress output (default: %(default)s, progress bars)")

    sweep = commands.add_parser(
        "sweep",
        help="choose one regularization strength of a variant on validation data (KerasTuner)",
        description=(
            "Train a CIFAR-10 variant once per strength (grid) or per trial "
            "(bayesian, hyperband: log-uniform between the smallest and largest "
            "--values), score each on validation images carved from the train "
            "split (never the test split), and evaluate only the chosen one on the "
            "test split. Writes sweep.json, chosen.json and validation_curve.png "
            "into --out."
        ),
    )
    sweep.add_argument("dataset", choices=("cifar10",), help="the baseline to sweep")
    sweep.add_argument("--variant", default="l2", choices=tuple(VARIANTS),
                       help="the variant whose strength is swept (default: %(default)s)")
    sweep.add_argument("--param", required=True,
                       choices=tuple(SWEEP_PARAMS),
                       help="the strength: l2/l1 (loss coefficients), max_norm, "
                            "weight_decay (normalized decoupled decay), decoupled_l1")
    sweep.add_argument("--values", required=True, type=_float_list,
                       help="comma-separated values, e.g. 1e-5,1e-4,1e-3,1e-2")
    sweep.add_argument("--tuner", choices=SWEEP_TUNERS, default="grid",
                       help="KerasTuner search (default: %(default)s)")
    sweep.add_argument("--max-trials", type=_positive_int, default=None,
                       help="trials for bayesian (default: as many as --values)")
    sweep.add_argument("--epochs", type=_positive_int, default=15,
                       help="epochs per trial (default: %(default)s)")
    sweep.add_argument("--batch-size", type=_positive_int, default=128)
    sweep.add_argument("--train-limit", type=_positive_int, default=10000,
                       help="training images: the first N of the train split (default: %(default)s)")
    sweep.add_argument("--validation-size", type=_positive_int, default=2000,
                       help="validation images: the next N of the train split (default: %(default)s)")
    sweep.add_argument("--test-limit", type=_positive_int, default=None,
                       help="test images for the chosen value (default: all 10,000)")
    sweep.add_argument("--data-dir", default=None,
                       help="tensorflow-datasets directory (default: $TFDS_DATA_DIR)")
    sweep.add_argument("--out", default="runs/sweep",
                       help="output folder, refused if not empty unless --overwrite "
                            "(default: %(default)s)")
    sweep.add_argument("--overwrite", action="store_true",
                       help="replace a non-empty --out that holds an earlier sweep")
    sweep.add_argument("--seed", type=_seed, default=None, help="random seed, 0 to 2**32 - 1")
    sweep.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)

    compare = commands.add_parser(
        "compare",
        help="table (and plot) of finished run folders",
        description="Print a table of the runs' variants, test accuracy, "
                    "train-test gap, epochs and time; --plot draws all curves.",
    )
    compare.add_argument("runs", nargs="+", help="run folders written by `cifar10`")
    compare.add_argument("--plot", default=None, help="PNG file for all runs' curves")
    return parser


def _fail(message):
    """Prints `message` as one line, as argparse prints its errors; returns the exit code."""
    line = " ".join(str(message).split())
    print(f"keras-regkit: error: {line}", file=sys.stderr)
    return EXIT_USAGE


def _negative_values(argv):
    """`--values -1,1e-3` as `--values=-1,1e-3`: argparse would take `-1,1e-3`
    for an option and say only "expected one argument"; `check_sweep` then
    says what is wrong with the values."""
    argv = list(argv)
    for index, arg in enumerate(argv[:-1]):
        if arg == "--values" and re.match(r"-[\d.]", argv[index + 1]):
            argv[index:index + 2] = [f"--values={argv[index + 1]}"]
            break
    return argv


def run_settings(args):
    """The `RunSettings` of parsed `keras-regkit cifar10` arguments.

    Options not given take `RunSettings`'s defaults, or with `--quick` those
    of `RunSettings.quick` (`QUICK`); options given always win.
    """
    names = [field.name for field in dataclasses.fields(RunSettings)]
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    return RunSettings.quick(**given) if args.quick else RunSettings(**given)


def _run_cifar10(settings, args, argv):
    from keras_regkit.baselines import cifar10

    command = ["keras-regkit", *argv]
    if args.quick:
        return _run_quick(settings, args, command)
    result = cifar10.train(settings=settings, out=args.out, overwrite=args.overwrite,
                           verbose=args.verbose, command=command)
    metrics = result["metrics"]
    print(
        f"{metrics['variant']}: test accuracy {metrics['test_accuracy']:.4f}, "
        f"train accuracy {metrics['train_accuracy']:.4f}, "
        f"gap {metrics['gap']:+.4f}, test loss {metrics['test_loss']:.4f}, "
        f"{metrics['epochs']} epochs on {metrics['num_train']} images "
        f"in {metrics['train_seconds']:.1f} s; "
        + (f"wrote {result['out']}" if result["out"] else "outputs left to the chief")
    )
    return 0


def _run_quick(settings, args, command):
    """`--quick`: `none` and the variant on the same small subset, side by side.

    The pair and compare.png are written as one folder: whole or not at all.
    """
    from keras_regkit.baselines import _run_folder
    from keras_regkit.baselines import cifar10

    out = _run_folder.check_output_dir(args.out)
    _run_folder.check_replaceable(out, args.overwrite, "--quick run")
    with _run_folder.staged(out, args.overwrite, "--quick run") as staging:
        folders = []
        for name in dict.fromkeys(["none", settings.variant.name]):
            result = cifar10.train(
                settings=dataclasses.replace(settings, variant=name),
                out=os.path.join(staging, name), verbose=args.verbose, command=command,
            )
            folders.append(result["out"])
        print(f"Quick comparison: {settings.train_limit} training images, {settings.epochs} "
              f"epochs, validation = the first {settings.test_limit} test images")
        cifar10.compare_runs(folders, plot=os.path.join(staging, _run_folder.QUICK_PLOT))
    print(f"curves: {os.path.join(args.out, _run_folder.QUICK_PLOT)}")
    return 0


def _run_sweep(args, argv):
    from keras_regkit.baselines import _sweep

    try:
        _sweep.check_sweep(args.variant, args.param, args.values, args.tuner)
    except (ValueError, TypeError) as error:
        return _fail(str(error))
    import importlib.util

    if importlib.util.find_spec("keras_tuner") is None:
        return _fail("keras-regkit sweep needs KerasTuner: "
                     "`pip install 'keras_regkit[tuning]'` (or `pip install keras-tuner`).")
    _sweep.sweep(
        args.variant, args.param, args.values, tuner=args.tuner,
        max_trials=args.max_trials, epochs=args.epochs, batch_size=args.batch_size,
        train_limit=args.train_limit, validation_size=args.validation_size,
        test_limit=args.test_limit, data_dir=args.data_dir, out=args.out,
        overwrite=args.overwrite, seed=args.seed, verbose=args.verbose,
        command=["keras-regkit", *argv],
    )
    print(f"wrote {os.path.abspath(args.out)}")
    return 0


def _run_compare(args):
    from keras_regkit.baselines import _report

    _report.compare_runs(args.runs, plot=args.plot)  # checks --plot before reading
    if args.plot is not None:
        print(f"curves: {args.plot}")
    return 0


def main(argv=None, *, finish_import=None):
    """Runs the command line; returns the exit code (0, or 2 for bad input).

    Parses and checks the arguments without Keras. Then, as a command is to
    run, keeps TensorFlow's start-up lines off the terminal (unless
    `TF_CPP_MIN_LOG_LEVEL` is set, or `--verbose 2`) and calls `finish_import`:
    the console script's launcher (`keras_regkit_cli`) passes the import of
    `keras_regkit` it deferred; `None` when the package is imported already.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(_negative_values(argv))
    except SystemExit as exit_:  # argparse already printed the usage error (or the help)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    settings = None
    if args.command == "cifar10":
        try:
            settings = run_settings(args)
        except (ValueError, TypeError) as error:
            return _fail(str(error))

    _startup.quiet_tensorflow_start(verbose=getattr(args, "verbose", 1))
    if finish_import is not None:
        finish_import()  # runs keras_regkit/__init__.py: imports Keras
    from keras_regkit.baselines._data import CIFAR10NotFoundError
    from keras_regkit.baselines._errors import BaselineInputError

    try:
        if args.command == "cifar10":
            return _run_cifar10(settings, args, argv)
        if args.command == "sweep":
            return _run_sweep(args, argv)
        return _run_compare(args)
    except (BaselineInputError, CIFAR10NotFoundError) as error:
        return _fail(str(error))
    except ImportError as error:
        if "tensorflow-datasets" in str(error) or "matplotlib" in str(error):
            return _fail(str(error))
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
