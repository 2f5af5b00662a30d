"""Dropout placement on built Sequential and functional models.

`insert_dropout` returns a copy of a model with dropout layers after chosen
layers, following the usual recipes: after hidden dense layers (rate 0.3-0.5),
0.25 after pooling in VGG-like convnets, never after the output layer, and
spatial dropout (whole feature maps) rather than plain dropout right after a
convolution. `dropout_plan` shows where dropout would go, changing nothing;
`remove_dropout` takes it out again.

The copy is built with `keras.models.clone_model`: every layer is re-created
from its config and then given the original's weights, so the original stays
usable and unchanged, and in inference mode the copy computes exactly the
same outputs. Branches, skip connections, several inputs and outputs and
shared layers keep their structure. Nested Sequential/functional sub-models
are rebuilt recursively (selectors see their layers too); a composite layer -
a nested subclassed model, a layer subclass that owns sub-layers,
`MultiHeadAttention`, a KerasHub `TransformerEncoder` - is copied as one
layer. The layers inside it run from its own `call()`, not through the layer
graph, so no copy of the graph can put dropout after them or take theirs
out: a selector (or policy) that picks one of them, and `remove_dropout` on
a model with a non-zero-rate dropout layer inside one, are refused, naming
those layers and the composite layer that owns them. A subclassed top-level
model has no layer graph to rebuild and is refused.

Output layers are never followed by dropout when `skip_output=True`: a layer
whose output is a model output, and a layer that reaches a model output only
through a chain of weightless one-input layers (`Dense` -> `Activation` ->
output, or through `Flatten`, `Reshape`, an existing `Dropout`). Merges stop the
chain: in `Concatenate([head_a, head_b])` -> output, the heads count as hidden.

Reference: Srivastava et al., "Dropout: a simple way to prevent neural networks
from overfitting", JMLR 2014; Tompson et al., "Efficient object localization
using convolutional networks", CVPR 2015 (spatial dropout).
"""

import collections.abc
import warnings

import keras

from keras_regkit import _graph
from keras_regkit import _selectors
from keras_regkit import _tables
from keras_regkit import _validation

__all__ = ["dropout_plan", "insert_dropout", "remove_dropout"]

POLICIES = ("dense", "vgg")
VGG_POOLING_RATE = 0.25

DROPOUT_LAYERS = _graph.DROPOUT_LAYERS
CONVOLUTIONS = (
    keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
    keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose,
    keras.layers.SeparableConv1D, keras.layers.SeparableConv2D,
    keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
)
# Local pooling only: global pooling ends the convolutional part, and the
# dense layers after it get the dense rate (select it with `after` if wanted).
POOLING = (
    keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D, keras.layers.AveragePooling2D, keras.layers.AveragePooling3D,
)
_SPATIAL = {3: keras.layers.SpatialDropout1D, 4: keras.layers.SpatialDropout2D,
            5: keras.layers.SpatialDropout3D}


def insert_dropout(model, rate=0.5, *, after=None, policy=None, spatial=False,
                   skip_output=True):
    """Returns a copy of `model` with dropout layers after the selected layers.

    Choose the layers with exactly one of `after` or `policy`:

    - `after`: a layer-name glob (`"dense*"`), a layer class, a tuple of
      classes, a callable `layer -> bool` (each with rate `rate`); or a dict
      `{selector: rate_or_None}` for per-layer rates, where later entries win
      and `None` excludes (`{keras.layers.Dense: 0.5, "fc2": 0.3}`).
    - `policy="dense"`: after every hidden `Dense`, at rate `rate`.
    - `policy="vgg"`: `0.25` after every local pooling layer (Max/Average
      Pooling 1D/2D/3D; not global pooling) and `rate` (default `0.5`) after
      every hidden `Dense` - the VGG-like recipe.

    With `spatial=True`, a layer whose output is a feature map (rank 3, 4 or 5:
    batch, spatial axes, channels) gets `SpatialDropout1D/2D/3D`, which drops
    whole channels and honours the layer's `data_format`; other layers get
    `Dropout`. Plain `Dropout` right after a convolution raises a `UserWarning`:
    neighbouring activations of a feature map are strongly correlated, so
    dropping single ones barely regularizes (Tompson et al., 2015).

    Output layers (see the module docstring) are skipped even when selected,
    unless `skip_output=False`; so are dropout layers and layers whose every
    consumer is already a dropout layer. Layers of nested Sequential/functional
    sub-models are selectable; input layers are not. Layers inside a composite
    layer (see the module docstring) are not reachable: if a selector picks
    one (with a rate that is not `None`), the call is refused. Set the
    dropout through that layer's own constructor argument instead (KerasHub
    backbones and layers take `dropout=`, `MultiHeadAttention` takes
    `dropout=`), select the composite layer itself, or map the inner layers'
    names to `None` in a dict `after`. Dropout layers are named
    `<layer>_dropout` (a suffix keeps names unique); a shared layer gets one
    after each of its calls.

    The copy has the original's weights (copied, not shared) and trainable
    flags; in inference mode its outputs equal the original's. If `model` was
    compiled, the copy is compiled from the same compile config with a fresh
    optimizer, as `keras.models.clone_model` does. A functional subclass whose
    constructor is not `(inputs, outputs)` comes back as a plain functional
    model. Everything is checked first; `model` is never modified.

    Args:
        model: A built Sequential or functional `keras.Model`.
        rate: Float in `[0, 1)`, the rate for `after` selectors and for the
            dense layers of a policy. Unused with a dict `after`.
        after: Selector or dict of selector -> rate, see above.
        policy: `"dense"` or `"vgg"`.
        spatial: Whether feature maps get spatial dropout.
        skip_output: Whether output layers are skipped.

    Returns:
        A new model (Sequential stays Sequential).

    Raises:
        TypeError: `model` is not a Sequential/functional model, or a selector
            is of the wrong kind.
        ValueError: bad rate, unknown policy, both or neither of `after` and
            `policy`, a selector that matches no layer (the message lists the
            layer names), a selected layer inside a composite layer (the
            message names it and its owner), or an unbuilt model.

    Example:

    >>> import keras, keras_regkit
    >>> model = keras.Sequential([keras.Input((8,)),
    ...     keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    >>> new = keras_regkit.insert_dropout(model, policy="dense")
    >>> [(layer.__class__.__name__, getattr(layer, "rate", None))
    ...  for layer in new.layers]
    [('Dense', None), ('Dropout', 0.5), ('Dense', None)]

    Reference: Srivastava et al. (2014); Tompson et al. (2015).
    """
    rows, insertions, levels = _plan(model, rate, after, policy, spatial, skip_output)
    if not insertions:
        warnings.warn(
            f"insert_dropout: no dropout inserted into '{model.name}': every "
            "selected layer was skipped (" + "; ".join(
                f"{row['layer']}: {row['reason']}" for row in rows) + ").",
            UserWarning, stacklevel=2)
    return _graph.rebuild_model(levels, insertions=insertions, remove=_graph.remove_nothing)


def dropout_plan(model, rate=0.5, *, after=None, policy=None, spatial=False,
                 skip_output=True, print_fn=print):
    """Shows where `insert_dropout` with the same arguments would put dropout.

    Changes nothing. Prints a table (one call of `print_fn` per line) unless
    `print_fn=None`, and returns one dict per selected layer, in layer order:
    `layer` (name; `outer/inner` inside a nested model), `layer_class`, `rule`
    (the selector or policy part that chose it), `dropout` (class name, or
    `None` when skipped), `rate` (`None` when skipped), `skipped` (bool) and
    `reason` (why it is skipped, else `""`). Raises exactly what
    `insert_dropout` raises, and warns the same.

    Example:

    >>> import keras, keras_regkit
    >>> model = keras.Sequential([keras.Input((8,)),
    ...     keras.layers.Dense(16, name="hidden"), keras.layers.Dense(3, name="out")])
    >>> rows = keras_regkit.dropout_plan(model, 0.3, after=keras.layers.Dense)
    Dropout plan for 'sequential...': 1 inserted, 1 skipped
    layer   class  dropout  rate  note
    hidden  Dense  Dropout  0.3
    out     Dense  -        -     skipped: produces a model output
    >>> [(row["layer"], row["rate"], row["skipped"]) for row in rows]
    [('hidden', 0.3, False), ('out', None, True)]
    """
    _validation.print_fn(print_fn)
    rows, insertions, _ = _plan(model, rate, after, policy, spatial, skip_output)
    if print_fn is not None:
        _print_plan(model, rows, len(insertions), print_fn)
    return rows


def remove_dropout(model):
    """Returns a copy of `model` without its dropout layers.

    Removes `Dropout`, `SpatialDropout1D/2D/3D`, `GaussianDropout` and
    `AlphaDropout` layers (and their subclasses), nested models' included;
    every other layer is copied with its weights, so in inference mode the
    outputs equal the original's. Warns if there is nothing to remove.
    `model` is never modified.

    A dropout layer inside a composite layer (see the module docstring), such
    as those of a KerasHub `TransformerEncoder`, cannot be taken out: if one
    has a non-zero rate, `remove_dropout` raises a `ValueError` naming it and
    its owner. Build that layer with `dropout=0.0` instead. Dropout layers
    with rate 0 inside composite layers (`MultiHeadAttention` always has one)
    do nothing and are left as they are.

    Example:

    >>> import keras, keras_regkit
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...     keras.layers.Dropout(0.5), keras.layers.Dense(2)])
    >>> [layer.__class__.__name__ for layer in keras_regkit.remove_dropout(model).layers]
    ['Dense', 'Dense']
    """
    levels = _graph.levels(model)
    _graph.check_removable(
        levels, model, "remove_dropout", "dropout",
        lambda layer: isinstance(layer, DROPOUT_LAYERS) and getattr(layer, "rate", None) != 0,
        "Set their rate to 0 through the owning layer's own constructor argument "
        "(KerasHub backbones and layers take `dropout=`, e.g. "
        "`keras_hub.models.BertBackbone(..., dropout=0.0)`; "
        "`keras.layers.MultiHeadAttention(..., dropout=0.0)`) and build the model again.")
    found = [layer for level in levels for layer in level.layers
             if isinstance(layer, DROPOUT_LAYERS)]
    if not found:
        warnings.warn(f"remove_dropout: '{model.name}' has no dropout layer; "
                      "returning an unchanged copy.", UserWarning, stacklevel=2)
    return _graph.rebuild_model(levels, insertions={}, remove=_graph.is_dropout)


# ---------------------------------------------------------------- planning


def _rules(rate, after, policy):
    """Returns `[(predicate, rate_or_None, label)]`, validated."""
    rate = _validation.rate(rate, name="rate")
    if (after is None) == (policy is None):
        raise ValueError(
            "Pass exactly one of `after` (which layers) and `policy` "
            f"({', '.join(map(repr, POLICIES))}). Received: after={after!r}, "
            f"policy={policy!r}")
    if policy is not None:
        _validation.one_of(policy, "policy", POLICIES)
        dense = (lambda layer: isinstance(layer, keras.layers.Dense), rate,
                 f"policy={policy!r}: Dense")
        if policy == "dense":
            return [dense]
        return [(lambda layer: isinstance(layer, POOLING), VGG_POOLING_RATE,
                 "policy='vgg': pooling"), dense]
    if isinstance(after, collections.abc.Mapping):
        if not after:
            raise ValueError("`after` must not be an empty dict. Received: after={}")
        rules = []
        for selector, value in after.items():
            label = _selectors.describe(selector)
            predicate = _selectors.as_predicate(selector, name=f"after key {label}")
            if value is not None:
                value = _validation.rate(value, name=f"after[{label}]")
            rules.append((predicate, value, label))
        return rules
    return [(_selectors.as_predicate(after, name="after"), rate,
             _selectors.describe(after))]


def _dropout_for(layer, tensors, spatial):
    """The `_graph.Insertion` layer class and kwargs for dropout after `layer`."""
    ranks = {len(t.shape) for t in tensors}
    if not (spatial and len(ranks) == 1 and min(ranks) in _SPATIAL):
        return keras.layers.Dropout, {}
    rank = min(ranks)
    data_format = getattr(layer, "data_format", None)
    if data_format not in ("channels_first", "channels_last"):
        data_format = "channels_last"
    if rank == 3:  # SpatialDropout1D has no data_format: channels_last only
        if data_format == "channels_first":
            return keras.layers.Dropout, {"noise_shape": (None, None, 1)}
        return keras.layers.SpatialDropout1D, {}
    return _SPATIAL[rank], {"data_format": data_format}


def _plan(model, rate, after, policy, spatial, skip_output):
    """Validates everything; returns `(rows, {id(layer): _Insertion}, levels)`."""
    levels = _graph.levels(model)
    rules = _rules(rate, after, policy)
    spatial = _validation.boolean(spatial, "spatial")
    skip_output = _validation.boolean(skip_output, "skip_output")
    candidates, seen = [], set()
    for level in levels:
        for layer in level.layers:
            if id(layer) not in seen:
                seen.add(id(layer))
                candidates.append((level, layer))
    names = [level.path(layer) for level, layer in candidates]
    hidden = [h for h in _graph.hidden_layers(levels)
              if not isinstance(h.layer, (keras.layers.InputLayer,) + DROPOUT_LAYERS)]
    chosen = {}  # id(layer) -> (rate, label); later rules win
    hidden_chosen = {}  # id(layer) -> (Hidden, rate, label), for the refusal
    for predicate, value, label in rules:
        hits = [layer for _, layer in candidates if predicate(layer)]
        hidden_hits = [h for h in hidden if predicate(h.layer)]
        if not hits and not hidden_hits and policy is None:
            raise ValueError(
                f"`after` selector {label} matches no layer of '{model.name}'. "
                f"Its layers are: {', '.join(names)}")
        for layer in hits:
            chosen[id(layer)] = (value, label)
        for h in hidden_hits:
            hidden_chosen[id(h.layer)] = (h, value, label)
    unreachable = [(h, label) for h, value, label in hidden_chosen.values()
                   if value is not None]
    if unreachable:
        raise _unreachable_error(model, unreachable, rate, after, policy)
    if not chosen and policy is not None:
        raise ValueError(
            f"policy={policy!r} selects no layer of '{model.name}' (it looks for "
            f"{'local pooling and ' if policy == 'vgg' else ''}Dense layers). "
            f"Its layers are: {', '.join(names)}")
    rows, insertions, plain_after_conv = [], {}, []
    for level, layer in candidates:
        if id(layer) not in chosen:
            continue
        value, label = chosen[id(layer)]
        tensors = level.output_tensors.get(id(layer), [])
        followers = level.consumers.get(id(layer), [])
        reason = ""
        if value is None:
            reason = f"rate None for {label}"
        elif isinstance(layer, DROPOUT_LAYERS):
            reason = "is a dropout layer"
        elif skip_output and level.is_output and id(layer) in level.output_reasons:
            reason = level.output_reasons[id(layer)]
            if level.prefix:
                reason += f" of nested model {level.prefix[:-1]!r}, an output layer"
        elif followers and all(isinstance(f, DROPOUT_LAYERS) for f in followers):
            reason = f"already followed by {followers[0].__class__.__name__} {followers[0].name!r}"
        elif not tensors:
            reason = "not connected to the model's outputs"
        elif not all(keras.backend.is_float_dtype(t.dtype) for t in tensors):
            reason = "output is not a floating-point tensor"
        row = {"layer": level.path(layer), "layer_class": layer.__class__.__name__,
               "rule": label, "dropout": None, "rate": None,
               "skipped": bool(reason), "reason": reason}
        if not reason:
            layer_class, kwargs = _dropout_for(layer, tensors, spatial)
            insertions[id(layer)] = _graph.Insertion(layer_class, value, kwargs)
            row.update(dropout=layer_class.__name__, rate=value)
            plain = layer_class is keras.layers.Dropout and not kwargs
            if plain and isinstance(layer, CONVOLUTIONS):
                plain_after_conv.append(level.path(layer))
        rows.append(row)
    if plain_after_conv:
        warnings.warn(
            "Plain Dropout after convolution layer(s) "
            f"{', '.join(map(repr, plain_after_conv))}: neighbouring activations "
            "of a feature map are strongly correlated, so dropping single "
            "activations barely regularizes (Tompson et al., 2015). Pass "
            "spatial=True to drop whole feature maps (SpatialDropout1D/2D/3D), "
            "or put dropout after pooling or dense layers.",
            UserWarning, stacklevel=3)
    return rows, insertions, levels


def _unreachable_error(model, unreachable, rate, after, policy):
    """The `ValueError` for selected layers inside composite layers."""
    example = unreachable[0][0].layer.name
    labels = ", ".join(dict.fromkeys(label for _, label in unreachable))
    if policy is not None:
        leave_out = (
            f"pass `after=` instead of policy={policy!r}, as a dict that maps these "
            f"layers' names to None (e.g. after={{keras.layers.Dense: {rate:g}, "
            f"{example!r}: None}})")
    else:
        leave_out = (
            "leave these layers out by mapping their names to None in a dict "
            f"`after` (e.g. after={{<selector>: <rate>, {example!r}: None}})")
    return ValueError(
        f"Cannot put dropout after {len(unreachable)} layer(s) of '{model.name}' "
        f"(selected by {labels}) that sit inside composite layers: "
        f"{_graph.describe_hidden([h for h, _ in unreachable])}. {_graph.HIDDEN_WHY} Nothing "
        "was changed. Set the dropout through the owning layer's own constructor "
        "argument (KerasHub backbones and layers take `dropout=`, e.g. "
        "`keras_hub.models.BertBackbone(..., dropout=0.1)`; "
        "`keras.layers.MultiHeadAttention(..., dropout=0.1)`), select the owning "
        f"layer itself to put dropout after its output, or {leave_out}. "
        f"Received: {_describe_choice(after, policy)}")


def _describe_choice(after, policy):
    """`policy='dense'`, `after=Dense` or `after={Dense: 0.5, 'fc*': None}`."""
    if policy is not None:
        return f"policy={policy!r}"
    if isinstance(after, collections.abc.Mapping):
        return "after={" + ", ".join(
            f"{_selectors.describe(key)}: {value!r}" for key, value in after.items()) + "}"
    return f"after={_selectors.describe(after)}"


def _print_plan(model, rows, inserted, print_fn):
    print_fn(f"Dropout plan for '{model.name}': {inserted} inserted, "
             f"{len(rows) - inserted} skipped")
    _tables.print_table(
        ("layer", "class", "dropout", "rate", "note"),
        [(row["layer"], row["layer_class"], row["dropout"] or "-",
          "-" if row["rate"] is None else f"{row['rate']:g}",
          f"skipped: {row['reason']}" if row["skipped"] else "")
         for row in rows], print_fn)
