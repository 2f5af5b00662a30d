"""The layers and variables under a model: walked once, in one order.

`sub_layers` says which layers a layer owns (a model's `layers`, a composite
layer's attributes); `walk_layers`/`iter_layers` go depth first through them;
`variable_owners` and `unique_variables` name each variable once. Shared by
the rules, the graph rebuilds, the reports and the callbacks.
"""

import keras


def check_model(model, name="model"):
    """Raises `TypeError` unless `model` is a `keras.Model`."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`{name}` must be a `keras.Model`. Received: {name}={model!r} "
            f"of type {type(model).__name__}"
        )
    return model


def sub_layers(layer):
    """The layers `layer` owns directly, in the order Keras tracks them.

    For a model, its `layers` (the graph of a functional or Sequential model,
    the tracked layers of a subclassed one); for any layer, also the layers it
    holds as attributes, directly or in lists, tuples and dicts: the
    `EinsumDense` projections of a `MultiHeadAttention`, the `Dense` layers
    of a KerasHub `TransformerEncoder`, the sub-layers of a user-written
    composite layer.
    """
    found = {}

    def add(value, depth=0):
        if isinstance(value, keras.layers.Layer):
            if value is not layer:
                found.setdefault(id(value), value)
        elif isinstance(value, (list, tuple)) and depth < 3:
            for item in value:
                add(item, depth + 1)
        elif isinstance(value, dict) and depth < 3:
            for item in value.values():
                add(item, depth + 1)

    if isinstance(layer, keras.Model):
        # A model's `layers` is every layer it tracks (a Sequential model's
        # attributes also hold a private functional copy of its graph).
        add(list(getattr(layer, "layers", [])))
        return list(found.values())
    for name, value in vars(layer).items():
        if name in _NOT_CHILDREN:
            continue
        add(value)
    return list(found.values())


# Attributes that refer to other layers without owning them.
_NOT_CHILDREN = frozenset({"_inbound_nodes", "_outbound_nodes", "_parent_path"})


def walk_layers(model, recursive=True):
    """Yields `(layer, parents)` for each distinct layer under `model`, depth first.

    `parents` is the tuple of layers from `model` (first) down to the layer's
    direct owner. With `recursive=False`, only `model`'s own layers.
    """
    seen = {id(model)}

    def walk(container, parents):
        for layer in sub_layers(container):
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            yield layer, parents
            if recursive:
                yield from walk(layer, parents + (layer,))

    yield from walk(model, (model,))


def iter_layers(model, recursive=True):
    """Yields each distinct layer of `model`, depth first.

    With `recursive=True`, the layers inside nested models (a `Sequential` or
    functional model used as a layer, the layers tracked by a subclassed
    model) and inside composite layers (see `sub_layers`) come after the
    layer that holds them.
    """
    for layer, _ in walk_layers(model, recursive=recursive):
        yield layer


def variable_owners(model):
    """`{id(variable): layer}`: the innermost layer under `model` holding each variable."""
    owners = {}
    for layer in iter_layers(model):  # depth first: a holder comes before its inner layers
        for variable in layer.weights:
            owners[id(variable)] = layer
    return owners


def unique_variables(variables):
    """`variables` without repeats (a shared variable is listed once), in order."""
    seen = set()
    result = []
    for variable in variables:
        if id(variable) not in seen:
            seen.add(id(variable))
            result.append(variable)
    return result


def layer_names(model, recursive=True):
    """The names of the layers of `model`, for error messages."""
    return [layer.name for layer in iter_layers(model, recursive=recursive)]
