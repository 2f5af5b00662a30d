"""Where `keras_regkit.residual` puts DropPath and DropBlock2D layers (plans).

Each planner validates its arguments, reads the residual merges from
`_residual.merges(...)` and returns the rows of the plan table with the
insertions for `_graph.rebuild_model`; nothing is changed here.
"""

import keras

from keras_regkit import _graph
from keras_regkit import _layer_tree
from keras_regkit import _residual
from keras_regkit import _validation
from keras_regkit.dropout import CONVOLUTIONS
from keras_regkit.layers import DropBlock2D
from keras_regkit.layers import DropPath
from keras_regkit.layers import validate_block_size

SCHEDULES = ("linear", "uniform")


def model_levels(model, caller):
    """`_graph.levels(model)`, refusing what has no residual merge to find."""
    _layer_tree.check_model(model)
    if isinstance(model, keras.Sequential):
        raise TypeError(
            f"{caller}: `model` must be a functional model: in a Sequential "
            "model each layer feeds only the next, so it has no residual "
            "merge. Wrap it (`inputs = keras.Input(shape); "
            "keras.Model(inputs, sequential(inputs))`) if it holds residual "
            f"sub-models. Received: model={model!r}")
    if not _graph.is_graph_model(model):
        raise TypeError(
            f"{caller}: `model` must be a functional model; '{model.name}' is "
            f"a subclassed {type(model).__name__}, whose layer graph Keras "
            "cannot see. Apply the layer in its `call()` instead (`x + "
            "self.drop_path(branch, training=training)` with "
            "`self.drop_path = keras_regkit.DropPath(rate)` from `__init__`), "
            f"or build it functionally. Received: model={model!r}")
    return _graph.levels(model)


def _path(level, key):
    return level.path(level.nodes[key][0])


def _no_residual_error(caller, model, merges):
    adds = "; ".join(f"{_path(m.level, m.key)!r}: {m.skip}" for m in merges)
    return ValueError(
        f"{caller}: '{model.name}' has no residual merge: it looks for `Add` "
        "layers and `x + y` operations with one input on a shortcut (an "
        "ancestor of the other input, or a shorter path from where they split) "
        + (f"and found only these, not residual: {adds}. " if adds
           else "and found no Add at all. ")
        + f"Received: model={model!r}")


def droppath(model, max_rate, schedule, seed):
    """Validates; returns `(rows, before, replaced_ids, levels)`."""
    levels = model_levels(model, "insert_droppath")
    max_rate = _validation.rate(max_rate, "max_rate")
    _validation.one_of(schedule, "schedule", SCHEDULES)
    seed = _validation.seed(seed, "seed")
    merges = _residual.merges(levels)
    blocks = [m for m in merges if not m.skip]
    if not blocks:
        raise _no_residual_error("insert_droppath", model, merges)
    rows, before, replaced, number = [], {}, set(), 0
    for m in merges:
        row = {"block": None, "merge": _path(m.level, m.key), "branch": None,
               "shortcut": None, "rate": None, "replaces": None,
               "skipped": bool(m.skip), "reason": m.skip}
        rows.append(row)
        if m.skip:
            continue
        number += 1
        rate = max_rate * number / len(blocks) if schedule == "linear" else max_rate
        producer = m.level.nodes[m.branch][0]
        if (_residual.is_stochastic_depth(producer)
                and m.level.consumers.get(id(producer)) == [m.op]):
            replaced.add(id(producer))
            row["replaces"] = m.level.path(producer)
        row.update(block=number, branch=m.level.path(producer),
                   shortcut="projection" if m.projection else "identity", rate=rate)
        before[id(m.op)] = {m.branch_at: _graph.Insertion(
            DropPath, rate, {"seed": None if seed is None else seed + number,
                             **_dtype_of(m, producer)},
            f"{m.op.name}_droppath")}
    return rows, before, replaced, levels


def dropblock(model, rate, block_size, stages, shortcut, seed):
    """Validates; returns `(rows, insertions, before, levels)`."""
    levels = model_levels(model, "insert_dropblock")
    rate = _validation.rate(rate, "rate")
    block_size = validate_block_size(block_size)
    stages = _validation.positive_int(stages, "stages")
    _validation.boolean(shortcut, "shortcut")
    seed = _validation.seed(seed, "seed")
    merges = _residual.merges(levels)
    blocks = [m for m in merges if not m.skip]
    if not blocks:
        raise _no_residual_error("insert_dropblock", model, merges)
    found = []  # (block number, merge, data_format, channels) of 2D blocks
    for number, m in enumerate(blocks, start=1):
        output = _residual.output(m.level, m.key)
        if len(output.shape) != 4:
            continue
        convs = [m.level.nodes[k][0] for k in _residual.branch(m)
                 if isinstance(m.level.nodes[k][0], CONVOLUTIONS)]
        data_format = getattr(convs[0], "data_format", None) if convs else None
        if data_format not in ("channels_last", "channels_first"):
            data_format = keras.config.image_data_format()
        found.append((number, m, data_format, _residual.channels(output, data_format)))
    if not found:
        raise ValueError(
            f"insert_dropblock: '{model.name}' has no residual block on 2D "
            "feature maps (rank-4 tensors), where DropBlock2D works. "
            f"Received: model={model!r}")
    stage_of, stage = [], 0
    for i, (_, _, _, channels) in enumerate(found):
        if i and channels != found[i - 1][3]:
            stage += 1
        stage_of.append(stage + 1)
    first = max(1, stage_of[-1] - stages + 1)
    rows, insertions, before, count = [], {}, {}, 0
    orders = {}  # id(level) -> {node key: topological position}

    def spec(name, data_format, dtype=None):
        nonlocal count
        count += 1
        return _graph.Insertion(
            DropBlock2D, rate,
            {"block_size": block_size, "data_format": data_format,
             "seed": None if seed is None else seed + count, **(dtype or {})},
            name)

    for (number, m, data_format, _), stage in zip(found, stage_of):
        if stage < first:
            continue
        level = m.level
        ends = _residual.group_ends(m, data_format)
        points = [("after", k) for k in ends]
        if shortcut:
            points.append(("shortcut", m.shortcut))
        if id(level) not in orders:
            orders[id(level)] = {k: i for i, k in enumerate(_residual.topological(level))}
        points.sort(key=lambda point: orders[id(level)][point[1]])
        for position, k in points:
            op = level.nodes[k][0]
            name = level.path(m.op if position == "shortcut" else op)
            reason = ""
            if position == "shortcut" and isinstance(op, DropBlock2D):
                reason = f"the shortcut already ends in DropBlock2D {op.name!r}"
            elif position == "after" and id(op) in insertions:
                reason = "already chosen for an earlier block"
            elif position == "after" and all(
                    isinstance(c, DropBlock2D) for c in level.consumers.get(id(op), [None])):
                reason = "already followed by DropBlock2D"
            elif len(_residual.output(level, k).shape) != 4:
                reason = "output is not a 2D feature map"
            rows.append({"stage": stage, "block": number, "position": position,
                         "layer": name, "rate": None if reason else rate,
                         "block_size": None if reason else block_size,
                         "skipped": bool(reason), "reason": reason})
            if reason:
                continue
            if position == "after":
                insertions[id(op)] = spec(f"{op.name}_dropblock", data_format)
            else:
                before.setdefault(id(m.op), {})[m.shortcut_at] = spec(
                    f"{m.op.name}_shortcut_dropblock", data_format, _dtype_of(m, op))
    return rows, insertions, before, levels


def _dtype_of(m, producer):
    """`{"dtype": policy}` for a layer put before the merge `m`, fed by `producer`.

    Empty for an `Add` layer (the inserted layer takes the merge's policy);
    for a `x + y` operation, which has none, the policy of the layer feeding
    that input, so a mixed-precision model stays mixed.
    """
    if isinstance(m.op, keras.layers.Layer) or not isinstance(producer, keras.layers.Layer):
        return {}
    return {"dtype": producer.dtype_policy}
