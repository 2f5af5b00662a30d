"""Carrying every rule of a model over to a rebuilt copy of it.

`insert_dropout`, `remove_dropout`, `insert_droppath`, `insert_dropblock` and
the other helpers that rebuild a model (`_graph.rebuild_model`) copy each layer
from its config. A rule that the config holds comes along by itself; a rule
that only the variable holds (set by `regularize`/`constrain` on a layer that
its parent rebuilds from constructor arguments, inside `MultiHeadAttention`,
a KerasHub block, a composite layer) does not, and neither do the records
that let `keras_regkit.load_model` restore it. `carry_rules` sets both again
on the copy, or refuses with the rules it cannot carry: never silent.
"""

import keras

from keras_regkit import _layer_tree
from keras_regkit import _rule_store
from keras_regkit import _weights


def variable_pairs(pairs):
    """`{id(old variable): new variable}` over `(old layer, new layer)` copies.

    A layer copied from its config creates its weights in the same order and
    shapes (that is what `set_weights` relies on too); a layer whose copy
    differs maps none of its weights.
    """
    mapped = {}
    for old, new in pairs:
        # Operations of the graph (`x + y`, `x[0]`) are copied too; they hold none.
        old_weights = list(getattr(old, "weights", []))
        new_weights = list(getattr(new, "weights", []))
        if len(old_weights) != len(new_weights) or any(
                tuple(a.shape) != tuple(b.shape) for a, b in zip(old_weights, new_weights)):
            continue
        for a, b in zip(old_weights, new_weights):
            mapped.setdefault(id(a), b)
    return mapped


def carry_rules(old_model, new_model, layers, models):
    """Sets on `new_model` every regularizer/constraint and rule record of `old_model`.

    `layers` holds the `(old layer, new layer)` pairs copied from configs,
    `models` the `(old model, new model)` pairs of the graph models rebuilt.
    Raises a `ValueError` naming the ruled weights that have no copy (nothing
    is set then); `old_model` is never changed.
    """
    mapped = variable_pairs(layers)
    new_of = {id(old): new for old, new in list(layers) + list(models)}
    new_of[id(old_model)] = new_model
    changes, lost = [], []
    for variable in _layer_tree.unique_variables(old_model.weights):
        for kind in _weights.KINDS:
            value = getattr(variable, kind, None)
            copy = mapped.get(id(variable))
            if copy is None:
                if value is not None:
                    lost.append(f"{kind} {value!r} on '{variable.path}'")
            elif not _same_rule(value, getattr(copy, kind, None)):
                changes.append((copy, kind, value))
    if lost:
        raise ValueError(
            f"Cannot carry {len(lost)} rule(s) of model '{old_model.name}' over to "
            f"its rebuilt copy: their layers have no copy with the same weights: "
            f"{lost[:10]}. Nothing was changed.")
    owners = _layer_tree.variable_owners(new_model)
    for copy, kind, value in changes:
        # A value that does not serialize stays out of the copy's layer config
        # (where it would break `model.save`), as `regularize` keeps it out.
        _weights.attach(owners.get(id(copy), new_model), copy, copy.name, kind, value,
                        in_config=_rule_store.storable(value))
    _carry_records(old_model, new_of, mapped, owners)


def _carry_records(old_model, new_of, mapped, owners):
    """Re-records, on the copies of their holders, the rules each store recorded."""
    holders = [old_model] + [layer for layer in _layer_tree.iter_layers(old_model)
                             if isinstance(layer, keras.Model)]
    for holder in holders:
        store = _rule_store.store_of(holder, create=False)
        if store is None or not store.records:
            continue
        new_holder = new_of.get(id(holder), new_of[id(old_model)])
        weights = _layer_tree.unique_variables(holder.weights)
        planned = {kind: [] for kind in _weights.KINDS}
        for kind, index in store.records:
            copy = mapped.get(id(weights[index])) if index < len(weights) else None
            if copy is not None:
                planned[kind].append((owners.get(id(copy), new_holder), copy, copy.name,
                                      getattr(weights[index], kind, None)))
        new_store = _rule_store.store_of(new_holder)
        for kind, entries in planned.items():
            for record in _rule_store.records(new_holder, entries, kind)[0]:
                new_store.put(record)


def _same_rule(a, b):
    """Whether two rule values act alike: the same object, or equal class and config."""
    if a is b:
        return True
    if a is None or b is None or type(a) is not type(b):
        return False
    try:
        return a.get_config() == b.get_config()
    except Exception:
        return False
