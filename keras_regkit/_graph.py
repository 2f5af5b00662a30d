"""Reading and rebuilding the layer graph of Sequential and functional models.

Used by `keras_regkit.dropout`. Keras keeps the graph on
`KerasTensor._keras_history` and `Layer._inbound_nodes` (what
`keras.models.clone_model` walks too); this module only reads them.
"""

import collections

import keras

from keras_regkit import _selectors

_L = keras.layers
DROPOUT_LAYERS = (_L.Dropout, _L.SpatialDropout1D, _L.SpatialDropout2D,
                  _L.SpatialDropout3D, _L.GaussianDropout, _L.AlphaDropout)


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

    Keras keeps the graph on `KerasTensor._keras_history` and
    `Layer._inbound_nodes` (what `clone_model` walks too); read-only here.
    """

    def __init__(self, model, prefix, is_output):
        self.model = model
        self.prefix = prefix
        self.is_output = is_output
        self.layers = [layer for layer in model.layers
                       if not isinstance(layer, _L.InputLayer)]
        nodes, consumers, first_outputs = {}, {}, {}
        outputs = [self._key(t) for t in keras.tree.flatten(model.outputs)]
        stack = list(outputs)
        while stack:
            key, op, index = stack.pop()
            if key in nodes:
                continue
            node = op._inbound_nodes[index]
            parents = [self._key(t) for t in node.input_tensors]
            for parent in parents:
                consumers.setdefault(parent[0][0], []).append(op)
            stack.extend(parents)
            nodes[key] = (op, [parent[0] for parent in parents])
            first_outputs.setdefault(id(op), node.output_tensors)
        self.consumers = consumers
        self.output_tensors = first_outputs
        self.output_reasons = self._output_reasons(nodes, [o[0] for o in outputs])

    @staticmethod
    def _key(tensor):
        op, index = tensor._keras_history[0], tensor._keras_history[1]
        return (id(op), index), op, index

    @staticmethod
    def _output_reasons(nodes, outputs):
        """`{id(layer): reason}` for the layers that count as output layers."""
        reasons, seen = {}, set()
        queue = collections.deque((key, ()) for key in outputs)
        while queue:  # breadth first: "produces a model output" wins
            key, chain = queue.popleft()
            op, parents = nodes[key]
            if isinstance(op, _L.InputLayer) or key in seen:
                continue
            seen.add(key)
            reasons.setdefault(id(op), "reaches a model output only through weightless "
                               + " -> ".join(repr(name) for name in chain)
                               if chain else "produces a model output")
            if not op.weights and len(parents) == 1:
                queue.append((parents[0], (op.name,) + chain))
        return reasons

    def path(self, layer):
        return f"{self.prefix}{layer.name}"


def levels(model):
    """The graph models of `model`'s hierarchy, outermost first (validated)."""
    _selectors.check_model(model)
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


def rebuild_model(levels, insertions, remove):
    """Copies the model of `levels` with `insertions`, or dropout `remove`d."""
    model = levels[0].model
    used = {layer.name for level in levels for layer in level.model.layers}
    used.add(model.name)
    copies, originals = {}, {}  # id(original) -> copy, id(copy) -> original

    def new_dropout(layer, spec):
        base, suffix = f"{layer.name}_dropout", 0
        name = base
        while name in used:
            suffix += 1
            name = f"{base}_{suffix}"
        used.add(name)
        # The layer's dtype policy: no cast of, say, mixed-precision outputs.
        return spec.layer_class(spec.rate, name=name, dtype=layer.dtype_policy,
                                **spec.kwargs)

    def copy(layer):
        if id(layer) in copies:
            return copies[id(layer)]
        if is_graph_model(layer):
            new = rebuild(layer)
        else:
            try:
                new = layer.__class__.from_config(layer.get_config())
            except Exception as error:
                raise TypeError(
                    f"Cannot copy layer {layer.name!r} ({type(layer).__name__}) "
                    f"from its config: {error}") from error
        copies[id(layer)] = new
        originals[id(new)] = layer
        return new

    def call(new_layer, *args, **kwargs):
        layer = originals[id(new_layer)]
        if remove and isinstance(layer, DROPOUT_LAYERS):
            return args[0] if args else kwargs["inputs"]
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
            if remove and isinstance(layer, DROPOUT_LAYERS):
                continue
            stack.append(copy(layer))
            if id(layer) in insertions:
                stack.append(new_dropout(layer, insertions[id(layer)]))
        source = sub.inputs[0]
        new = keras.Sequential(
            [keras.Input(batch_shape=source.shape, dtype=source.dtype,
                         name=source._keras_history[0].name)] + stack,
            name=sub.name, trainable=sub.trainable)
        if sub.compiled:
            new.compile_from_config(sub.get_compile_config())
        return new

    new_model = rebuild(model)
    copies[id(model)] = new_model
    for level in levels:  # outermost first: a model's flag resets its layers'
        copies[id(level.model)].trainable = level.model.trainable
        for layer in level.layers:
            if remove and isinstance(layer, DROPOUT_LAYERS):
                continue
            new = copies[id(layer)]
            if not is_graph_model(layer):
                new.trainable = layer.trainable
                new.set_weights(layer.get_weights())
    return new_model
