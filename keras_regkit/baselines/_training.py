"""Training entry point of the CIFAR-10 baseline: strategy, fit, evaluation, run folder."""

import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time

import keras

from keras_regkit import _validation
from keras_regkit.monitor import RegularizationMonitor
from keras_regkit.baselines import _model
from keras_regkit.baselines import _report
from keras_regkit.baselines import _run_folder
from keras_regkit.baselines._data import load_for_run
from keras_regkit.baselines._errors import StrategyConfigError
from keras_regkit.baselines._run_folder import check_output_dir
from keras_regkit.baselines._run_settings import RunSettings
from keras_regkit.baselines._settings import DEFAULT_VARIANT
from keras_regkit.baselines._settings import STRATEGIES

def _tf_config():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise StrategyConfigError(
            "--strategy multiworker needs the TF_CONFIG environment variable "
            '(JSON: {"cluster": {"worker": ["host:port", ...]}, '
            '"task": {"type": "worker", "index": i}}) set on every worker.'
        )
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        task_type, task_index = task["type"], int(task["index"])
        hosts = cluster[task_type]
        if not 0 <= task_index < len(hosts):
            raise IndexError(task_index)
    except (ValueError, KeyError, TypeError, IndexError) as error:
        raise StrategyConfigError(
            "TF_CONFIG must be JSON with a `cluster` of host lists and a `task` "
            f"{{type, index}} naming one of them ({type(error).__name__}: {error}). "
            f"Received: TF_CONFIG={raw!r}"
        ) from None
    return config


def make_strategy(name="default"):
    """Returns the `tf.distribute` strategy called `name`.

    - `"default"`: the default (single-device) strategy;
    - `"mirrored"`: `MirroredStrategy` over every visible GPU, or, with no GPU,
      every logical CPU device;
    - `"multiworker"`: `MultiWorkerMirroredStrategy` from `TF_CONFIG` (raises
      `StrategyConfigError` when it is missing or malformed). Create it at
      program start, before other TensorFlow work.
    """
    import tensorflow as tf

    _validation.one_of(name, "strategy", STRATEGIES)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy([device.name for device in gpus])
        # CPU devices: plain reduce-and-broadcast. (The collective all-reduce
        # would also work, but its instance keys restart with every new
        # strategy, and a second one in the same process collides with the
        # first.)
        cpus = tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(
            [device.name for device in cpus],
            cross_device_ops=tf.distribute.ReductionToOneDevice(),
        )
    _tf_config()
    return _multi_worker_strategy_class()()


def _multi_worker_strategy_class():
    import tensorflow as tf

    class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        """`MultiWorkerMirroredStrategy` whose `reduce` takes what Keras 3 passes it.

        Keras 3's TensorFlow trainer (keras-team/keras#20585) calls
        `strategy.reduce` on a whole `(x, y)` batch before building the
        metrics, and `strategy.reduce("MEAN", value, axis=0)` on the scalar
        loss and metric values of every step. The collective strategy reduces
        only single values, and `axis=0` is invalid for a scalar. Here each
        value of a structure is reduced on its own, and a scalar is averaged
        across replicas (`axis=None`), which is what `axis=0` means for a
        vector of per-replica values.
        """

        def reduce(self, reduce_op, value, axis):
            reduce_one = super().reduce

            def reduce_item(item):
                item_axis = axis
                if axis is not None:
                    local = self.experimental_local_results(item)[0]
                    if getattr(local, "shape", None) is not None and local.shape.rank == 0:
                        item_axis = None
                return reduce_one(reduce_op, item, item_axis)

            return tf.nest.map_structure(reduce_item, value)

    return MultiWorkerMirroredStrategy


def is_chief(strategy):
    """Whether this process writes the outputs (always, except non-chief workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and resolver.task_id == 0 and not has_chief


def _versions():
    import tensorflow as tf

    import keras_regkit

    return {
        "keras_regkit": keras_regkit.__version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "python": sys.version.split()[0],
    }


def _seed(seed):
    """Seeds the weights, dropout and every other Keras, NumPy and Python
    random draw (`keras.utils.set_random_seed`); `None` leaves them unseeded."""
    if seed is not None:
        keras.utils.set_random_seed(seed)


def _provenance(arguments, command):
    """How a run was started, as its output records it: the arguments, the
    command line (`None` from Python) and the versions."""
    return {"arguments": arguments, "command": command, "versions": _versions()}


def _penalty_share(history):
    """The last epoch's `penalty / loss` (`None` without the monitor's logs)."""
    if not history.get("penalty") or not history.get("loss"):
        return None
    loss = history["loss"][-1]
    return float(history["penalty"][-1] / loss) if loss else 0.0


def _settings(variant, settings, options):
    fields = {field.name for field in dataclasses.fields(RunSettings)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise TypeError(
            f"train() got unexpected keyword argument(s) {unknown}; the run settings "
            f"are {sorted(fields)}. Received: "
            + ", ".join(f"{key}={options[key]!r}" for key in unknown)
        )
    if settings is None:
        return RunSettings(DEFAULT_VARIANT if variant is None else variant, **options)
    if not isinstance(settings, RunSettings):
        raise TypeError(
            f"`settings` must be a RunSettings or None. Received: settings={settings!r}"
        )
    if variant is not None or options:
        keywords = {**({} if variant is None else {"variant": variant}), **options}
        given = ", ".join(f"{key}={value!r}" for key, value in keywords.items())
        raise ValueError(
            "Pass the run's settings either as `settings=RunSettings(...)` or as "
            f"keywords, not both. Received: settings={settings!r}, {given}"
        )
    return settings


def train(variant=None, *, settings=None, out=None, overwrite=True, verbose=1, command=None,
          **options):
    """Trains one baseline variant on CIFAR-10, evaluates it, and writes the run folder.

    The settings are checked (as a `RunSettings`), the run folder's
    writability and the data's presence are verified, and only then is `out`
    created: a bad argument or missing data leaves nothing behind. The folder
    is written beside `out` and renamed to `out` when complete, so a run that
    fails half-way leaves `out` as it was.
    `batch_size` is per replica; the global batch is
    `batch_size * strategy.num_replicas_in_sync`. Keras scales both the data
    loss and the regularization penalty by `1 / num_replicas` on each replica
    and sums the gradients, so the penalty counts once, as on one device.

    The validation curves are measured on the test subset. The train accuracy
    of the train-test gap is measured at the end, with dropout off, on the
    un-augmented training subset (not the running average of `fit`).

    Args:
        variant: Name in `VARIANTS` (or a `Variant`). Defaults to `"l2+dropout"`.
        settings: A whole `RunSettings`, instead of `variant` and `**options`.
        out: Run folder for history.json, metrics.json, model.keras and
            curves.png; `None` writes nothing. With `"multiworker"`, only the
            chief writes there (the others write to a temporary folder that is
            then removed).
        overwrite: Whether a non-empty `out` may be replaced (only an earlier
            run folder is; a folder with other files is refused). As Keras's
            `Model.save`, `True` by default here; the command line's default
            is to refuse (`--overwrite` allows it).
        verbose: Keras `fit` verbosity (1: progress bars).
        command: The command line, recorded in metrics.json.
        **options: The other `RunSettings` fields: `epochs`, `batch_size`,
            `data_dir`, `train_limit`, `test_limit`, `augment`, `batch_norm`,
            `blocks`, `standardize`, `strategy`, `seed` (see `RunSettings`
            for what they mean and their defaults).

    Returns:
        A dict with `metrics` (as written to metrics.json, the settings under
        `arguments`), `history` (per-epoch lists), `model` (the trained model),
        `out` (the folder written, or `None`) and `chief` (`False` on the
        workers that wrote nothing).
    """
    started = time.perf_counter()
    settings = _settings(variant, settings, options)
    if settings.strategy == "multiworker":
        _tf_config()
    out_path = None
    if out is not None:
        out_path = check_output_dir(out)
        _run_folder.check_replaceable(out_path, _validation.boolean(overwrite, "overwrite"))
    return _train(settings, out_path, overwrite=overwrite, verbose=verbose, command=command,
                  started=started)


def _train(settings, out_path, *, overwrite, verbose, command, started):
    variant = settings.variant
    distribution = make_strategy(settings.strategy)
    chief = is_chief(distribution)
    _seed(settings.seed)
    replicas = int(distribution.num_replicas_in_sync)
    data = load_for_run(settings, replicas)

    with distribution.scope():
        model = _model.build_variant(
            variant,
            batch_norm=settings.batch_norm,
            blocks=settings.blocks,
            batch_size=settings.batch_size * replicas,
            num_examples=data.num_train,
            epochs=settings.epochs,
        )
    fit_started = time.perf_counter()
    history = model.fit(
        data.train,
        epochs=settings.epochs,
        validation_data=data.test,
        shuffle=False,  # the tf.data pipeline shuffles
        verbose=verbose,
        callbacks=_model.build_callbacks(
            variant, epochs=settings.epochs, train_data=data.train_eval, validation_data=data.test,
        ) + [RegularizationMonitor(per_variable=False)],
    )
    train_seconds = time.perf_counter() - fit_started
    train_scores = model.evaluate(data.train_eval, verbose=0, return_dict=True)
    test_scores = model.evaluate(data.test, verbose=0, return_dict=True)
    train_loss, train_accuracy = train_scores["loss"], train_scores["accuracy"]
    test_loss, test_accuracy = test_scores["loss"], test_scores["accuracy"]
    penalty = float(keras.ops.sum(model.losses)) if model.losses else 0.0
    history = {
        key: [float(value) for value in values]
        for key, values in history.history.items()
    }
    metrics = {
        "variant": variant.name,
        "description": variant.description,
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "train_accuracy": float(train_accuracy),
        "train_loss": float(train_loss),
        "gap": float(train_accuracy) - float(test_accuracy),
        "penalty": penalty,
        "penalty_share": _penalty_share(history),
        "epochs": len(history.get("loss", [])),
        "num_train": data.num_train,
        "num_test": data.num_test,
        "data_dir": data.data_dir,
        "replicas": replicas,
        "global_batch_size": settings.batch_size * replicas,
        "train_seconds": train_seconds,
        "wall_seconds": None,  # set just before writing
        "validation": "test split (the curves' val_* are test-set values)",
        "losses_include_penalty": True,
        "variant_config": variant.to_dict(),
        "optimizer": type(model.optimizer).__name__,
        "decoupled_weight_decay": float(model.optimizer.weight_decay)
        if variant.decoupled
        else None,
        **_provenance(settings.to_dict(), command),
    }
    if out_path is not None and chief:
        with _run_folder.staged(out_path, overwrite) as staging:
            _report.write_run(staging, model=model, history=history, metrics=metrics,
                              started=started)
    elif out_path is not None:  # a worker writes too (collective ops), then throws it away
        target = tempfile.mkdtemp(prefix="keras_regkit_worker_")
        try:
            _report.write_run(target, model=model, history=history, metrics=metrics,
                              started=started)
        finally:
            shutil.rmtree(target, ignore_errors=True)
    else:
        metrics["wall_seconds"] = time.perf_counter() - started
    return {
        "metrics": metrics,
        "history": history,
        "model": model,
        "out": out_path if chief else None,
        "chief": chief,
    }
