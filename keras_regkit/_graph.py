"""Reading and rebuilding the layer graph of Sequential and functional models.

Used by `keras_regkit.dropout`, `keras_regkit.residual` and
`schedulable_dropout`. Keras keeps the graph on
`KerasTensor._keras_history` and `Layer._inbound_nodes` (what
`keras.models.clone_model` walks too), private attributes read only through
`_private_api`; this module only reads them. It also
finds the layers hidden inside composite layers (`hidden_layers`), which no
rebuild of the graph can reach.
"""

import collections

import keras

from keras_regkit import _carry
from keras_regkit import _layer_tree
from keras_regkit import _private_api

DROPOUT_LAYERS = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
)


def is_graph_model(layer):
    """Whether `layer` is a Sequential or functional model (has a layer graph)."""
    if isinstance(layer, keras.Sequential):
        return True
    # The functional class is not public API; recognize it by name.
    return isinstance(layer, keras.Model) and any(
        cls.__name__ == "Functional" and cls.__module__.startswith("keras")
        for cls in type(layer).__mro__)


class _Level:
    """One Sequential/functional model of the hierarchy and its layer graph.

    Keras keeps the graph on the tensors and layers themselves, read here
    through `_private_api.keras_history` and `_private_api.inbound_node`
    (what `clone_model` walks too); read-only.
    """

    def __init__(self, model, prefix, is_output):
        self.model = model
        self.prefix = prefix
        self.is_output = is_output
        self.layers = [layer for layer in model.layers
                       if not isinstance(layer, keras.layers.InputLayer)]
        nodes, consumers, first_outputs = {}, {}, {}
        outputs = [self._key(t) for t in keras.tree.flatten(model.outputs)]
        stack = list(outputs)
        while stack:
            key, op, index = stack.pop()
            if key in nodes:
                continue
            node = _private_api.inbound_node(op, index)
            parents = [self._key(t) for t in node.input_tensors]
            for parent in parents:
                consumers.setdefault(parent[0][0], []).append(op)
            stack.extend(parents)
            nodes[key] = (op, [parent[0] for parent in parents])
            first_outputs.setdefault(id(op), node.output_tensors)
        self.consumers = consumers
        self.nodes = nodes  # (id(op), node index) -> (op, parent node keys)
        self.output_tensors = first_outputs
        self.output_reasons = self._output_reasons(nodes, [o[0] for o in outputs])

    @staticmethod
    def _key(tensor):
        op, index = _private_api.keras_history(tensor)
        return (id(op), index), op, index

    @staticmethod
    def _output_reasons(nodes, outputs):
        """`{id(layer): reason}` for the layers that count as output layers."""
        reasons, seen = {}, set()
        queue = collections.deque((key, ()) for key in outputs)
        while queue:  # breadth first: "produces a model output" wins
            key, chain = queue.popleft()
            op, parents = nodes[key]
            if isinstance(op, keras.layers.InputLayer) or key in seen:
                continue
            seen.add(key)
            reasons.setdefault(id(op), "reaches a model output only through weightless "
                               + " -> ".join(repr(name) for name in chain)
                               if chain else "produces a model output")
            if not getattr(op, "weights", None) and len(parents) == 1:  # ops have none
                queue.append((parents[0], (op.name,) + chain))
        return reasons

    def path(self, layer):
        return f"{self.prefix}{layer.name}"


def levels(model):
    """The graph models of `model`'s hierarchy, outermost first (validated)."""
    _layer_tree.check_model(model)
    if not is_graph_model(model):
        raise TypeError(
            f"`model` must be a Sequential or functional model; '{model.name}' "
            f"is a subclassed {type(model).__name__}, whose layer graph Keras "
            "cannot see. Add dropout in its `call()` instead (create "
            "`keras.layers.Dropout(rate)` in `__init__` and apply it with "
            "`training=training`), or build it as a functional model "
            "(`keras.Model(inputs, outputs)`) and pass that.")
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None
    if not outputs:
        raise ValueError(
            f"`model` must be built: '{model.name}' has no inputs yet. Start "
            "it with `keras.Input(shape)` or call it on data first.")
    levels, seen = [], set()

    def visit(sub, prefix, is_output):
        level = _Level(sub, prefix, is_output)
        levels.append(level)
        for layer in level.layers:
            if is_graph_model(layer) and id(layer) not in seen:
                seen.add(id(layer))
                visit(layer, f"{prefix}{layer.name}/",
                      is_output and id(layer) in level.output_reasons)

    visit(model, "", True)
    return levels


# A layer that `rebuild_model` puts into the copy: `layer_class(rate, name=name,
# **kwargs)`, with a name made unique from `name` (default: the name of the
# layer it follows or feeds, plus `_dropout`).
Insertion = collections.namedtuple(
    "Insertion", ["layer_class", "rate", "kwargs", "name"], defaults=(None,))


def is_dropout(layer):
    """Whether `layer` is one of Keras's dropout layers (`DROPOUT_LAYERS`)."""
    return isinstance(layer, DROPOUT_LAYERS)


def remove_nothing(layer):
    """`False`: the `remove` predicate of a rebuild that takes nothing out."""
    return False


# A layer inside a composite (non-graph) layer of the graph, which a rebuild
# cannot reach: `owner` is the graph's layer that holds it, `path` is
# `owner_path/.../name` along the attributes that hold it.
Hidden = collections.namedtuple("Hidden", ["path", "layer", "owner_path", "owner"])

def hidden_layers(levels):
    """The layers that the graph's composite layers hold, depth first.

    A composite layer (a subclassed layer or model, `MultiHeadAttention`, a
    KerasHub `TransformerEncoder`, a wrapper such as `TimeDistributed`) calls
    its sub-layers from its own `call()`, so they are not in any layer graph
    and `rebuild_model` copies the composite as one layer from its config.
    Its sub-layers are found by `_layer_tree.sub_layers`, recursively. Layers
    of the graph themselves (even if a composite also holds them) are not
    hidden. Returns a list of `Hidden`.
    """
    seen = {id(layer) for level in levels for layer in level.model.layers}
    seen.update(id(level.model) for level in levels)
    hidden = []
    for level in levels:
        for owner in level.layers:
            if is_graph_model(owner):
                continue  # a level of its own: its layers are reachable
            owner_path = level.path(owner)
            for path, layer in _owned_layers(owner, owner_path, seen):
                hidden.append(Hidden(path, layer, owner_path, owner))
    return hidden


def _owned_layers(layer, path, seen):
    """Yields `(path, sub_layer)` for the layers `layer` holds, recursively."""
    for sub in _layer_tree.sub_layers(layer):
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        sub_path = f"{path}/{sub.name}"
        yield sub_path, sub
        yield from _owned_layers(sub, sub_path, seen)


def rebuild_model(levels, insertions, remove, *, before=None, replace=None):
    """Copies the model of `levels` with `insertions`, and the `remove`d layers out.

    `insertions` maps `id(layer)` to an `Insertion`: a layer put after each
    call of that layer. `before` maps `id(layer)` to `{position: Insertion}`:
    a layer put on the `position`-th tensor input of each call (a residual
    merge's branch). `remove` is a predicate `layer -> bool` picking the
    one-input layers to take out (`is_dropout`, `remove_nothing`).
    `replace` is `None` or a function `layer -> new layer or None`, asked
    for each layer that is not a Sequential/functional model: a layer it
    returns (new, unbuilt) stands in the copy where `layer` stood and keeps
    its own initial weights (only the trainable flag is copied over); `None`
    copies `layer` from its config, as without `replace`.

    Every other layer of the copy is built from its layer's config and gets
    its weights and trainable flag; nested Sequential/functional models are
    rebuilt the same way, and a compiled model's copy is compiled from its
    compile config (a fresh optimizer). The copy has every rule of the model
    (`_carry.carry_rules`): those its layer configs hold and those only its
    variables and rule records hold.
    """
    before = before or {}
    replaced = set()  # id(new layer) for the layers `replace` gave
    model = levels[0].model
    used = {layer.name for level in levels for layer in level.model.layers}
    used.add(model.name)
    copies, originals = {}, {}  # id(original) -> copy, id(copy) -> original

    def new_dropout(layer, spec):
        base, suffix = spec.name or f"{layer.name}_dropout", 0
        name = base
        while name in used:
            suffix += 1
            name = f"{base}_{suffix}"
        used.add(name)
        # The layer's dtype policy: no cast of, say, mixed-precision outputs
        # (a spec's own `dtype` wins: an operation such as `x + y` has none).
        kwargs = {"dtype": getattr(layer, "dtype_policy", None), **spec.kwargs}
        return spec.layer_class(spec.rate, name=name, **kwargs)

    def copy(layer):
        if id(layer) in copies:
            return copies[id(layer)]
        if is_graph_model(layer):
            new = rebuild(layer)
        else:
            try:
                new = replace(layer) if replace is not None else None
                if new is None:
                    new = layer.__class__.from_config(layer.get_config())
                else:
                    replaced.add(id(new))
            except Exception as error:
                raise TypeError(
                    f"Cannot copy layer {layer.name!r} ({type(layer).__name__}) "
                    f"from its config: {error}") from error
        copies[id(layer)] = new
        originals[id(new)] = layer
        return new

    def call(new_layer, *args, **kwargs):
        layer = originals[id(new_layer)]
        if remove(layer):
            return args[0] if args else kwargs["inputs"]
        if id(layer) in before:
            args, kwargs = _insert_before(
                args, kwargs, {position: new_dropout(layer, spec)
                               for position, spec in before[id(layer)].items()})
        outputs = new_layer(*args, **kwargs)
        spec = insertions.get(id(layer))
        if spec is not None:
            outputs = keras.tree.map_structure(
                lambda tensor: new_dropout(layer, spec)(tensor), outputs)
        return outputs

    def rebuild(sub):
        if not isinstance(sub, keras.Sequential):
            return keras.models.clone_model(
                sub, clone_function=copy, call_function=call)
        stack = []
        for layer in sub.layers:
            if remove(layer):
                continue
            stack.append(copy(layer))
            if id(layer) in insertions:
                stack.append(new_dropout(layer, insertions[id(layer)]))
        source = sub.inputs[0]
        new = keras.Sequential(
            [keras.Input(batch_shape=source.shape, dtype=source.dtype,
                         name=_private_api.keras_history(source)[0].name)] + stack,
            name=sub.name, trainable=sub.trainable)
        if sub.compiled:
            new.compile_from_config(sub.get_compile_config())
        return new

    new_model = rebuild(model)
    copies[id(model)] = new_model
    for level in levels:  # outermost first: a model's flag resets its layers'
        copies[id(level.model)].trainable = level.model.trainable
        for layer in level.layers:
            if remove(layer):
                continue
            new = copies[id(layer)]
            if not is_graph_model(layer):
                new.trainable = layer.trainable
                if id(new) not in replaced:
                    new.set_weights(layer.get_weights())
    pairs = [(originals[id(new)], new) for new in copies.values() if id(new) in originals]
    _carry.carry_rules(
        model, new_model,
        layers=[(old, new) for old, new in pairs if not is_graph_model(old)],
        models=[(old, new) for old, new in pairs if is_graph_model(old)])
    return new_model


def _insert_before(args, kwargs, new_layers):
    """Applies `new_layers[position]` to the `position`-th tensor of a call's inputs."""
    flat = keras.tree.flatten((args, kwargs))
    position = 0
    for index, item in enumerate(flat):
        if isinstance(item, keras.KerasTensor):
            if position in new_layers:
                flat[index] = new_layers[position](item)
            position += 1
    return keras.tree.pack_sequence_as((args, kwargs), flat)


HIDDEN_WHY = ("A composite layer runs them from its own `call()`, not through the "
              "model's layer graph, so a copy of the graph cannot reach them.")


def describe_hidden(hidden, rates=False):
    """`'a/b' (Dense), ... inside 'a' (Block); ...`: the layers, grouped by owner."""
    groups = {}
    for h in hidden:
        detail = h.layer.__class__.__name__
        if rates:
            detail += f", rate {getattr(h.layer, 'rate', None)}"
        groups.setdefault(id(h.owner), (h, []))[1].append(f"{h.path!r} ({detail})")
    return "; ".join(
        f"{', '.join(items)} inside {h.owner_path!r} ({h.owner.__class__.__name__})"
        for h, items in groups.values())


def check_removable(levels, model, caller, noun, is_target, advice):
    """Raises a `ValueError` if a layer to remove sits inside a composite layer."""
    hidden = [h for h in hidden_layers(levels) if is_target(h.layer)]
    if hidden:
        raise ValueError(
            f"{caller}: cannot remove {len(hidden)} {noun} layer(s) of "
            f"'{model.name}' that sit inside composite layers: "
            f"{describe_hidden(hidden, rates=True)}. {HIDDEN_WHY} Nothing was "
            f"changed. {advice} Received: model={model!r}")
