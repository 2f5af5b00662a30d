"""Changes a callback makes to a model for one run, and their undo.

`RegularizationMonitor` (its split `compute_loss`) and `RegularizationSchedule`
(rate factors, scaled penalties, a scheduled decay) change the model when a
run begins and undo it when the run ends. Keras does not tell callbacks when
`fit` raises, so each keeps the undo of what it installed in a `Leftovers`
registry: the next run of the same kind undoes a leftover first, and the
callback's `restore()` releases it.
"""

import weakref


class Leftovers:
    """`model -> undo` of the one change of a kind installed on it now."""

    def __init__(self):
        self._by_model = weakref.WeakKeyDictionary()

    def undo(self, model):
        """Undoes what an earlier run left installed on `model`, if anything."""
        leftover = self._by_model.pop(model, None)
        if leftover is not None:
            leftover()

    def keep(self, model, undo):
        """Registers `undo` for `model`; returns it, made to run at most once."""
        done = []

        def once():
            if not done:
                done.append(True)
                undo()

        self._by_model[model] = once
        return once

    def release(self, model, undo):
        """Runs `undo` (from `keep`), and forgets it if it is still `model`'s."""
        if model is not None and self._by_model.get(model) is undo:
            del self._by_model[model]
        undo()
