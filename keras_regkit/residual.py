"""Stochastic depth and DropBlock placement on built residual networks.

A residual block adds a branch to a shortcut: `x + F(x)` (identity shortcut)
or `P(x) + F(x)` (projection shortcut). `insert_droppath` finds these merges
in a built functional model and puts `keras_regkit.DropPath` on each branch,
just before the merge and never on the shortcut, with rates rising linearly
with depth (Huang et al., 2016). `insert_dropblock` puts
`keras_regkit.DropBlock2D` after the convolutions of the branches of the last
stages, and on their shortcuts (Ghiasi et al., 2018). `droppath_plan` and
`dropblock_plan` show what would be inserted, changing nothing;
`remove_droppath` and `remove_dropblock` take the layers out again.

A residual merge is an `Add` layer, or a `x + y` operation of a functional
model (ConvNeXt's blocks), with two inputs of which one is the shortcut:
either one input is an ancestor of the other (`x + F(x)`), or both come from
one tensor and one path is shorter (the projection `P`). Adds whose inputs
share no ancestor, or split from it at the same depth, are not residual and
are listed as skipped. Nested functional models are searched too, in the
order they are called; blocks are numbered from the input on.

The copy is made by the same graph rebuild as `keras_regkit.insert_dropout`
(every layer re-created from its config and given the original's weights),
so in inference it computes the same outputs and the original is not
changed. Only functional models have merges to find: a Sequential or a
subclassed model is refused.

Reference: Huang et al., "Deep networks with stochastic depth", ECCV 2016;
Ghiasi et al., "DropBlock: a regularization method for convolutional
networks", NeurIPS 2018.
"""

import warnings

from keras_regkit import _graph
from keras_regkit import _residual_plans
from keras_regkit import _tables
from keras_regkit import _validation
from keras_regkit.layers import DropBlock2D
from keras_regkit.layers import DropPath

__all__ = [
    "dropblock_plan",
    "droppath_plan",
    "insert_dropblock",
    "insert_droppath",
    "remove_dropblock",
    "remove_droppath",
]

SCHEDULES = _residual_plans.SCHEDULES


# ---------------------------------------------------------------- public API


def insert_droppath(model, max_rate=0.1, schedule="linear", *, seed=None):
    """Returns a copy of `model` with `DropPath` on each residual branch.

    Each residual merge (see the module docstring) gets a `DropPath` on its
    branch input, right before the merge; the shortcut is never touched. With
    `schedule="linear"` the `l`-th of the `L` blocks (counted from the input)
    drops with rate `max_rate * l / L`, Huang et al.'s linear decay of the
    survival probability; with `"uniform"` every block gets `max_rate`.

    A branch that already ends in a stochastic-depth layer (a `DropPath`,
    Keras's ConvNeXt `StochasticDepth`, or a per-sample `Dropout` with
    `noise_shape=(None, 1, 1, 1)`, as `keras.applications.EfficientNet*` have)
    feeding only the merge has it replaced by the new `DropPath`: the plan says
    so. The layers are named `<merge>_droppath`. With `seed=s`, the `l`-th
    layer gets seed `s + l`.

    Args:
        model: A built functional `keras.Model`, possibly with nested models.
        max_rate: Float in `[0, 1)`, the rate of the deepest block.
        schedule: `"linear"` (default) or `"uniform"`.
        seed: Int or `None`, seeds of the inserted layers.

    Returns:
        A new functional model with the original's weights.

    Raises:
        TypeError: `model` is not a functional `keras.Model` (a Sequential or
            subclassed model).
        ValueError: bad `max_rate`/`schedule`, or `model` has no residual
            merge (the message lists the Adds that were not residual).

    Example:

    >>> import keras, keras_regkit
    >>> inputs = keras.Input((8,))
    >>> x = keras.layers.Dense(8, name="stem")(inputs)
    >>> for i in (1, 2):
    ...     branch = keras.layers.Dense(8, name=f"fc{i}")(x)
    ...     x = keras.layers.Add(name=f"add{i}")([x, branch])
    >>> model = keras.Model(inputs, x)
    >>> new = keras_regkit.insert_droppath(model, max_rate=0.2)
    >>> [(layer.name, layer.rate) for layer in new.layers
    ...  if isinstance(layer, keras_regkit.DropPath)]  # 0.2 * 1/2, 0.2 * 2/2
    [('add1_droppath', 0.1), ('add2_droppath', 0.2)]

    Reference: Huang et al. (2016), Section 3 ("linear decay rule").
    """
    rows, before, replaced, levels = _residual_plans.droppath(model, max_rate, schedule, seed)
    return _graph.rebuild_model(levels, insertions={}, before=before,
                                remove=lambda layer: id(layer) in replaced)


def droppath_plan(model, max_rate=0.1, schedule="linear", *, seed=None,
                  print_fn=print):
    """Shows where `insert_droppath` with the same arguments puts `DropPath`.

    Changes nothing. Prints a table (one `print_fn` call per line) unless
    `print_fn=None`, and returns one dict per `Add` merge, in depth order:
    `block` (1-based number, `None` if skipped), `merge` (name, `outer/inner`
    inside a nested model), `branch` (the layer feeding the branch input),
    `shortcut` (`"identity"` or `"projection"`), `rate` (`None` if skipped),
    `replaces` (the name of a stochastic-depth layer replaced, or `None`),
    `skipped` and `reason`. Raises what `insert_droppath` raises.

    Example:

    >>> import keras, keras_regkit
    >>> inputs = keras.Input((8,))
    >>> branch = keras.layers.Dense(8, name="fc")(inputs)
    >>> x = keras.layers.Add(name="add")([inputs, branch])
    >>> rows = keras_regkit.droppath_plan(keras.Model(inputs, x), 0.1)
    DropPath plan for 'functional...': 1 residual block, 0 skipped
    block  merge  branch  shortcut  rate  note
    1      add    fc      identity  0.1
    """
    _validation.print_fn(print_fn)
    rows, _, _, _ = _residual_plans.droppath(model, max_rate, schedule, seed)
    if print_fn is not None:
        inserted = sum(not row["skipped"] for row in rows)
        print_fn(f"DropPath plan for '{model.name}': {inserted} residual "
                 f"block{'s' if inserted != 1 else ''}, {len(rows) - inserted} skipped")
        _tables.print_table(
            ("block", "merge", "branch", "shortcut", "rate", "note"),
            [("-" if row["block"] is None else str(row["block"]), row["merge"],
              row["branch"] or "-", row["shortcut"] or "-",
              "-" if row["rate"] is None else f"{row['rate']:.4g}",
              f"skipped: {row['reason']}" if row["skipped"]
              else (f"replaces {row['replaces']!r}" if row["replaces"] else ""))
             for row in rows], print_fn)
    return rows


def remove_droppath(model):
    """Returns a copy of `model` without its `DropPath` layers.

    Every other layer is copied with its weights; in inference the outputs
    equal the original's. Warns if there is none. `model` is never modified;
    a `DropPath` inside a composite layer (not in the layer graph) cannot be
    reached and is refused with a `ValueError` naming it.

    Example:

    >>> import keras, keras_regkit
    >>> inputs = keras.Input((4,))
    >>> x = keras.layers.Add()([inputs, keras_regkit.DropPath(0.1)(inputs)])
    >>> model = keras_regkit.remove_droppath(keras.Model(inputs, x))
    >>> [type(layer).__name__ for layer in model.layers]
    ['InputLayer', 'Add']
    """
    return _remove(model, DropPath, "remove_droppath")


def insert_dropblock(model, rate=0.1, block_size=7, *, stages=2, shortcut=True,
                     seed=None):
    """Returns a copy of `model` with `DropBlock2D` in the last residual stages.

    Ghiasi et al.'s placement for ResNet: DropBlock in the last two groups
    (ResNet-50's groups 3 and 4, `conv4_x` and `conv5_x`), after every
    convolution of a block's branch and on the block's shortcut. Here a stage
    is a run of consecutive residual blocks (see the module docstring) on 2D
    feature maps whose outputs have the same number of channels; the last
    `stages` of them are chosen. In each chosen block, a `DropBlock2D(rate,
    block_size)` goes after the "group" of every convolution of the branch
    (the convolution, then the normalization and activation layers that
    follow it alone: after `Conv2D -> BatchNormalization -> ReLU`, after the
    ReLU), skipping convolutions whose output map is smaller than the
    block's (a squeeze-and-excitation gate); with `shortcut=True` another goes
    on the shortcut input of the merge. The rate is the same everywhere: ramp
    it up during training with `keras_regkit.DropBlockSchedule`.

    The layers are named `<layer>_dropblock` and `<merge>_shortcut_dropblock`
    and take the `data_format` of the block's convolutions. With `seed=s` the
    `i`-th inserted layer gets seed `s + i`.

    Args:
        model: A built functional `keras.Model`, possibly with nested models.
        rate: Float in `[0, 1)`, each layer's `rate`.
        block_size: Int `>= 1` or a pair `(height, width)` of them, each
            layer's `block_size`. Defaults to `7`
            (the paper's, for 224-pixel ImageNet inputs; smaller maps clip it).
        stages: Int `>= 1`, how many of the last stages get DropBlock
            (all of them if the model has fewer). Defaults to `2`.
        shortcut: Whether the shortcuts get DropBlock too (the paper's best).
        seed: Int or `None`, seeds of the inserted layers.

    Returns:
        A new functional model with the original's weights.

    Raises:
        TypeError: `model` is not a functional `keras.Model`.
        ValueError: a bad argument, or `model` has no residual block on 2D
            feature maps.

    Example:

    >>> import keras, keras_regkit
    >>> inputs = keras.Input((8, 8, 4))
    >>> x = inputs
    >>> for stage, channels in enumerate((4, 8)):
    ...     shortcut = keras.layers.Conv2D(channels, 1, name=f"proj{stage}")(x)
    ...     branch = keras.layers.Conv2D(channels, 3, padding="same", name=f"conv{stage}")(x)
    ...     branch = keras.layers.ReLU(name=f"relu{stage}")(branch)
    ...     x = keras.layers.Add(name=f"add{stage}")([shortcut, branch])
    >>> new = keras_regkit.insert_dropblock(keras.Model(inputs, x), stages=1, block_size=3)
    >>> [layer.name for layer in new.layers if isinstance(layer, keras_regkit.DropBlock2D)]
    ['add1_shortcut_dropblock', 'relu1_dropblock']
    """
    rows, insertions, before, levels = _residual_plans.dropblock(
        model, rate, block_size, stages, shortcut, seed)
    return _graph.rebuild_model(levels, insertions=insertions, before=before,
                                remove=_graph.remove_nothing)


def dropblock_plan(model, rate=0.1, block_size=7, *, stages=2, shortcut=True,
                   seed=None, print_fn=print):
    """Shows where `insert_dropblock` with the same arguments puts `DropBlock2D`.

    Changes nothing. Prints a table unless `print_fn=None`, and returns one
    dict per insertion point, in depth order: `stage` (1-based, counted over
    all stages of the model), `block` (1-based residual block number),
    `position` (`"after"` a layer or `"shortcut"` of a merge), `layer` (that
    layer's or merge's name), `rate`, `block_size`, `skipped` and `reason`.
    Raises what `insert_dropblock` raises.
    """
    _validation.print_fn(print_fn)
    rows, insertions, before, _ = _residual_plans.dropblock(model, rate, block_size, stages,
                                             shortcut, seed)
    if print_fn is not None:
        inserted = len(insertions) + sum(len(v) for v in before.values())
        print_fn(f"DropBlock plan for '{model.name}': {inserted} inserted, "
                 f"{len(rows) - inserted} skipped")
        _tables.print_table(
            ("stage", "block", "position", "layer", "rate", "block_size", "note"),
            [(str(row["stage"]), str(row["block"]), row["position"], row["layer"],
              "-" if row["skipped"] else f"{row['rate']:g}",
              "-" if row["skipped"] else str(row["block_size"]),
              f"skipped: {row['reason']}" if row["skipped"] else "")
             for row in rows], print_fn)
    return rows


def remove_dropblock(model):
    """Returns a copy of `model` without its `DropBlock2D` layers (see `remove_droppath`)."""
    return _remove(model, DropBlock2D, "remove_dropblock")


def _remove(model, layer_class, caller):
    levels = _residual_plans.model_levels(model, caller)
    _graph.check_removable(
        levels, model, caller, layer_class.__name__,
        lambda layer: isinstance(layer, layer_class) and layer.rate != 0,
        "Set their rate to 0 where the owning layer builds them, and build the model again.")
    if not any(isinstance(layer, layer_class)
               for level in levels for layer in level.layers):
        warnings.warn(f"{caller}: '{model.name}' has no {layer_class.__name__} "
                      "layer; returning an unchanged copy.", UserWarning, stacklevel=3)
    return _graph.rebuild_model(levels, insertions={}, remove=lambda layer: isinstance(
        layer, layer_class))
