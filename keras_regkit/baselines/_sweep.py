"""A λ sweep of one baseline variant on KerasTuner: the validation curve.

The strength is chosen on validation images carved from the CIFAR-10 train
split (`load_cifar10(validation_size=...)`), never on the test split; the test
accuracy is measured once, for the chosen value only.
"""

import dataclasses
import os
import time

from keras_regkit import _tables
from keras_regkit import _validation
from keras_regkit import tuning
from keras_regkit.baselines import _model
from keras_regkit.baselines import _report
from keras_regkit.baselines import _run_folder
from keras_regkit.baselines import _training
from keras_regkit.baselines._data import load_cifar10
from keras_regkit.baselines._settings import SWEEP_PARAMS
from keras_regkit.baselines._settings import SWEEP_TUNERS
from keras_regkit.baselines._variants import get_variant
from keras_regkit.monitor import RegularizationMonitor


def check_sweep(variant, param, values, tuner):
    """Validates a sweep's set-up; returns `(Variant, field, sorted values)`."""
    base = get_variant(variant)
    if param not in SWEEP_PARAMS:
        raise ValueError(
            f"`param` must be one of {sorted(SWEEP_PARAMS)}. Received: param={param!r}"
        )
    field = SWEEP_PARAMS[param]
    if not getattr(base, field):
        used = [name for name, attribute in SWEEP_PARAMS.items() if getattr(base, attribute)]
        raise ValueError(
            f"Variant {base.name!r} does not use `{param}` (its `{field}` is "
            f"{getattr(base, field)!r}); it uses {used or 'none of them'}. "
            f"Received: param={param!r}"
        )
    values = tuning.check_values(values, "values")
    if param == "max_norm" and min(values) <= 0:
        raise ValueError(f"`values` of max_norm must be > 0. Received: values={values!r}")
    if tuner not in SWEEP_TUNERS:
        raise ValueError(f"`tuner` must be one of {SWEEP_TUNERS}. Received: tuner={tuner!r}")
    if tuner != "grid" and (len(values) < 2 or min(values) <= 0):
        raise ValueError(
            f"The {tuner} tuner searches log-uniformly between the smallest and "
            f"largest of `values`: give two or more positive values. "
            f"Received: values={values!r}"
        )
    return base, field, values


def sweep(
    variant="l2",
    param="l2",
    values=(1e-5, 1e-4, 1e-3, 1e-2),
    *,
    tuner="grid",
    max_trials=None,
    epochs=15,
    batch_size=128,
    train_limit=10000,
    validation_size=2000,
    test_limit=None,
    data_dir=None,
    out="runs/sweep",
    overwrite=True,
    seed=None,
    verbose=1,
    print_fn=print,
    command=None,
):
    """Sweeps one strength of a baseline variant with KerasTuner; picks it on validation.

    Every value (grid) or every trial (`"bayesian"`, `"hyperband"`: a
    log-uniform range from the smallest to the largest of `values`) trains
    the variant with that strength on the first `train_limit` training images
    and is scored by its validation accuracy on the next `validation_size`
    images of the train split. KerasTuner ranks a trial by its best epoch's
    validation accuracy (`best val acc`) and keeps that epoch's weights; the
    table also shows the last epoch's train and validation accuracy and their
    gap, and `penalty share` (penalty / loss in the last epoch). Then the
    chosen model (the best trial, at its best epoch) is evaluated once on the
    test split.

    `seed` seeds the weights and dropout (as `train` does), the data's
    shuffling, and the tuner's search.

    Writes into `out`: `sweep.json` (the rows, the split, the chosen value
    and its test accuracy; the arguments, the command line `command` and the
    versions, as a run folder's metrics.json), `chosen.json` (`{param: value}`), and
    `validation_curve.png` (λ on a log axis; train and validation accuracy),
    plus KerasTuner's own folder `tuner/`. Prints the table. As a run folder
    (`train`), `out` is written whole or not at all; a non-empty `out` is
    replaced only with `overwrite=True` (the command line's `--overwrite`)
    and only if it holds an earlier sweep's files.

    Returns:
        The dict written to `sweep.json`.
    """
    base, field, values = check_sweep(variant, param, values, tuner)
    epochs = _validation.positive_int(epochs, "epochs")
    max_trials = _validation.optional_positive_int(max_trials, "max_trials")
    seed = _validation.random_seed(seed)
    out = _run_folder.check_output_dir(out)
    overwrite = _validation.boolean(overwrite, "overwrite")
    _run_folder.check_replaceable(out, overwrite, "sweep")
    arguments = {
        "variant": base.name, "param": param, "values": values, "tuner": tuner,
        "max_trials": max_trials, "epochs": epochs, "batch_size": batch_size,
        "train_limit": train_limit, "validation_size": validation_size,
        "test_limit": test_limit, "data_dir": None if data_dir is None else os.fspath(data_dir),
        "seed": seed,
    }
    import keras_tuner

    _training._seed(seed)
    data = load_cifar10(
        batch_size=batch_size, data_dir=data_dir, train_limit=train_limit,
        test_limit=test_limit, validation_size=validation_size, seed=seed,
    )
    rows = []

    class VariantHyperModel(keras_tuner.HyperModel):
        # True while KerasTuner rebuilds the best trial's model to load its checkpoint.
        reloading = False

        def build(self, hp):
            if tuner == "grid":
                value = tuning.strength(hp, param, values=values)
            else:
                value = tuning.strength(hp, param, min(values), max(values))
            chosen = dataclasses.replace(base, **{field: value})
            model = _model.build_variant(
                chosen, batch_size=batch_size, num_examples=data.num_train, epochs=epochs)
            if self.reloading:
                # The checkpoint holds the optimizer's slots too (`fit` built them); an
                # unbuilt optimizer has none to load them into, and Keras warns
                # "Skipping variable loading for optimizer" (the weights load anyway).
                model.optimizer.build(model.trainable_variables)
            return model

        def fit(self, hp, model, *args, **kwargs):
            callbacks = list(kwargs.pop("callbacks", [])) + [
                RegularizationMonitor(per_variable=False)]
            started = time.perf_counter()
            history = model.fit(*args, callbacks=callbacks, **kwargs)
            train_accuracy = model.evaluate(data.train_eval, verbose=0, return_dict=True)["accuracy"]
            logs = {key: series[-1] for key, series in history.history.items()}
            rows.append({
                "value": hp.get(param),
                "epochs": len(history.history["loss"]),
                "train_accuracy": float(train_accuracy),
                "val_accuracy": float(logs["val_accuracy"]),
                "gap": float(train_accuracy - logs["val_accuracy"]),
                "penalty_share": _training._penalty_share(history.history),
                "seconds": time.perf_counter() - started,
            })
            return history

    with _run_folder.staged(out, overwrite, "sweep") as staging:
        common = dict(objective="val_accuracy", directory=staging, project_name="tuner",
                      overwrite=True, seed=seed)
        trials = max_trials or len(values)
        hypermodel = VariantHyperModel()
        if tuner == "grid":
            search = keras_tuner.GridSearch(hypermodel, max_trials=trials, **common)
        elif tuner == "bayesian":
            search = keras_tuner.BayesianOptimization(hypermodel, max_trials=trials, **common)
        else:
            search = keras_tuner.Hyperband(hypermodel, max_epochs=epochs, **common)
        search.search(data.train, epochs=epochs, validation_data=data.validation,
                      shuffle=False, verbose=verbose)
        _add_trial_scores(rows, search.oracle.trials.values(), param)
        best_trial = search.oracle.get_best_trials(1)[0]
        if best_trial.score is None:
            raise RuntimeError("Every KerasTuner trial failed; see the errors above.")
        chosen_value = best_trial.hyperparameters.get(param)
        hypermodel.reloading = True
        best_model = search.get_best_models(1)[0]  # the best trial's best-epoch weights
        scores = best_model.evaluate(data.test, verbose=0, return_dict=True)
        result = {
            "variant": base.name,
            "param": param,
            "field": field,
            "tuner": tuner,
            "rows": rows,
            "chosen": {param: chosen_value},
            "chosen_val_accuracy": float(best_trial.score),
            "test_accuracy": float(scores["accuracy"]),
            "test_loss": float(scores["loss"]),
            "split": {
                "train": f"train[0:{data.num_train}]",
                "validation": f"train[{data.num_train}:{data.num_train + data.num_validation}]",
                "test": f"test[0:{data.num_test}] (chosen value only)",
            },
            "epochs": epochs,
            "batch_size": batch_size,
            **_training._provenance(arguments, command),
        }
        _report._write_json(os.path.join(staging, "sweep.json"), result)
        _report._write_json(os.path.join(staging, "chosen.json"), {param: chosen_value})
        plot_validation_curve(rows, param, os.path.join(staging, "validation_curve.png"))
    if print_fn is not None:
        for line in format_sweep(result):
            print_fn(line)
    return result


def _add_trial_scores(rows, trials, param):
    """Puts each trial's score (its best epoch's validation accuracy: what
    KerasTuner ranks by, and the epoch whose weights it keeps) into its row."""
    trials = [t for t in trials if t.score is not None]
    for row in rows:
        for trial in trials:
            if trial.hyperparameters.get(param) == row["value"] and "best_val_accuracy" not in row:
                row["best_val_accuracy"] = float(trial.score)
                trials.remove(trial)
                break


def format_sweep(result):
    """The lines of the sweep's table, then the choice and its test accuracy."""
    param = result["param"]
    headers = [param, "epochs", "train acc", "val acc", "gap", "best val acc",
               "penalty share", "time (s)"]
    lines = [[
        f"{row['value']:.3g}", str(row["epochs"]), f"{row['train_accuracy']:.4f}",
        f"{row['val_accuracy']:.4f}", f"{row['gap']:+.4f}",
        f"{row['best_val_accuracy']:.4f}" if "best_val_accuracy" in row else "-",
        f"{row['penalty_share']:.3f}", f"{row['seconds']:.1f}",
    ] for row in sorted(result["rows"], key=lambda r: (r["value"], r["epochs"]))]
    table = []
    _tables.print_table(headers, lines, print_fn=table.append)
    chosen = result["chosen"][param]
    table.append(
        f"chosen on validation ({result['split']['validation']}): {param}={chosen:.3g}, "
        f"validation accuracy {result['chosen_val_accuracy']:.4f}; "
        f"test accuracy {result['test_accuracy']:.4f} ({result['split']['test']})"
    )
    return table


def plot_validation_curve(rows, param, path):
    """λ on a log axis (linear if a value is 0); train and validation accuracy."""
    figure = _report._figure(width=6.0, height=4.2)
    axes = figure.subplots(1, 1)
    points = sorted((row["value"], row["train_accuracy"], row["val_accuracy"]) for row in rows)
    xs = [p[0] for p in points]
    axes.plot(xs, [p[1] for p in points], "o-", label="train")
    axes.plot(xs, [p[2] for p in points], "s--", label="validation")
    if all(x > 0 for x in xs):
        axes.set_xscale("log")
    axes.set_xlabel(param)
    axes.set_ylabel("accuracy")
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title(f"validation curve ({len(rows)} trials)")
    figure.tight_layout()
    figure.savefig(path)
    return path


__all__ = ["check_sweep", "format_sweep", "plot_validation_curve", "sweep"]
