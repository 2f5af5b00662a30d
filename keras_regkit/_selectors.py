"""Layer selectors shared by `regularize`, `constrain` and `insert_dropout`.

A selector picks layers of a model. It is one of:

- a glob pattern matched against `layer.name` (`"conv2d*"`, `"dense_1"`);
- a glob pattern with a `/`, matched against `variable.path` (see
  `path_matches`): it picks variables, not layers;
- a layer class, or a tuple of classes (`keras.layers.Dense`);
- a callable `layer -> bool`.
"""

import fnmatch
import inspect

import keras


def check_model(model, name="model"):
    """Raises `TypeError` unless `model` is a `keras.Model`."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`{name}` must be a `keras.Model`. Received: {name}={model!r} "
            f"of type {type(model).__name__}"
        )
    return model


def _is_layer_class(value):
    return inspect.isclass(value) and issubclass(value, keras.layers.Layer)


def as_predicate(selector, name="selector"):
    """Returns a callable `layer -> bool` for `selector`.

    Raises:
        TypeError: if `selector` is none of the accepted kinds.
    """
    if isinstance(selector, str):
        if not selector:
            raise ValueError(
                f"`{name}` must be a non-empty glob pattern. "
                f"Received: {name}={selector!r}"
            )
        return lambda layer: fnmatch.fnmatchcase(layer.name, selector)
    if _is_layer_class(selector):
        return lambda layer: isinstance(layer, selector)
    if (
        isinstance(selector, tuple)
        and selector
        and all(_is_layer_class(item) for item in selector)
    ):
        return lambda layer: isinstance(layer, selector)
    if isinstance(selector, keras.layers.Layer):
        raise TypeError(
            f"`{name}` must select layers, not be one: pass the layer's name "
            f"({selector.name!r}) or its class. Received: {name}={selector!r}"
        )
    if callable(selector) and not inspect.isclass(selector):
        return lambda layer: bool(selector(layer))
    raise TypeError(
        f"`{name}` must be a layer-name glob (str), a keras.layers.Layer "
        f"subclass, a tuple of such classes, or a callable layer -> bool. "
        f"Received: {name}={selector!r}"
    )


def is_path_pattern(selector):
    """Whether `selector` is a glob on `variable.path` (a string holding a `/`)."""
    return isinstance(selector, str) and "/" in selector


def path_matches(path, pattern):
    """Whether the variable path `path` matches the glob `pattern`.

    The one rule for every glob on `variable.path`: the path selectors of
    `regularize`/`constrain` and the `include`/`exclude` of
    `DecoupledWeightDecay`. Keras names a variable `model/layer/kernel` while
    a Sequential model is live but `layer/kernel` after `load_model`, so
    leading scopes may be missing on either side. `fnmatch` rules (`*` also
    matches `/`); a pattern matches when

    - it matches the whole path or a trailing part of it after a `/`:
      `"dense_2/kernel"` matches `"sequential/dense_2/kernel"`;
    - it starts with `"*/"`, and what follows matches as above (the `*/` may
      match nothing): `"*/attention/*"` matches `"attention/query/kernel"`;
    - it starts with literal scopes (a model's name) that the path lacks: with
      them dropped, the rest matches the whole path and still starts with a
      literal layer name and has a variable part. `"seqnet/d1/*"` matches
      `"d1/kernel"`; `"attention/*/kernel"` never shrinks to `"*/kernel"`, nor
      `"seqnet/kernel"` to `"kernel"`.

    >>> path_matches("transformer_layer_0/self_attention_layer/query/kernel",
    ...              "*/self_attention_layer/*/kernel")
    True
    >>> path_matches("transformer_layer_0/feedforward_output_dense/kernel",
    ...              "*/self_attention_layer/*/kernel")
    False
    >>> path_matches("attention/query/kernel", "*/attention/*")
    True
    >>> path_matches("d1/kernel", "seqnet/d1/*")
    True
    >>> path_matches("head/kernel", "*/attention/*/kernel")
    False
    >>> path_matches("transformer_layer_1/self_attention_layer/query/kernel",
    ...              "transformer_layer_0/self_attention_layer/*")
    False
    """
    parts = path.split("/")
    tails = ["/".join(parts[i:]) for i in range(len(parts))]
    forms = [pattern] + ([pattern[2:]] if pattern.startswith("*/") else [])
    if any(fnmatch.fnmatchcase(tail, form) for form in forms for tail in tails):
        return True
    return any(fnmatch.fnmatchcase(path, form) for form in _without_leading_scopes(pattern))


def _is_literal(part):
    return not any(ch in part for ch in "*?[")


def _without_leading_scopes(pattern):
    """`pattern` without 1, 2, ... leading literal scopes (see `path_matches`)."""
    parts = pattern.split("/")
    forms = []
    for i in range(1, len(parts) - 1):  # keep at least `layer/variable`
        if not (_is_literal(parts[i - 1]) and _is_literal(parts[i])):
            break
        forms.append("/".join(parts[i:]))
    return forms


def describe(selector):
    """A short human-readable form of a selector, for messages and plans."""
    if isinstance(selector, str):
        return repr(selector)
    if inspect.isclass(selector):
        return selector.__name__
    if isinstance(selector, tuple):
        return "(" + ", ".join(describe(item) for item in selector) + ")"
    return getattr(selector, "__name__", repr(selector))


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
