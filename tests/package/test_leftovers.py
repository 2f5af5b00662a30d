"""`_leftovers.Leftovers`: the undo registry the monitor and the schedule share."""

import gc

from keras_regkit._leftovers import Leftovers


class _Model:
    """Stands for a Keras model: weakly referenceable, holds what is installed."""

    installed = None


def _install(model, name, log):
    previous = model.installed
    model.installed = name

    def undo():
        log.append(f"undo {name}")
        model.installed = previous

    return undo


def test_a_leftover_is_undone_by_the_next_run_and_an_old_restore_changes_nothing():
    registry, model, log = Leftovers(), _Model(), []
    first = registry.keep(model, _install(model, "first", log))  # its run raised
    registry.undo(model)  # the next run begins
    second = registry.keep(model, _install(model, "second", log))
    registry.release(model, first)  # the first callback's restore(): already undone
    assert model.installed == "second" and log == ["undo first"]
    registry.release(model, second)
    registry.undo(model)  # nothing left
    assert model.installed is None and log == ["undo first", "undo second"]


def test_the_registry_does_not_keep_a_model_alive():
    registry, model = Leftovers(), _Model()
    registry.keep(model, lambda: None)
    del model
    gc.collect()
    assert len(registry._by_model) == 0
