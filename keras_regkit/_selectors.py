"""Layer selectors shared by `regularize`, `constrain` and `insert_dropout`.

A selector picks layers of a model. It is one of:

- a glob pattern matched against `layer.name` (`"conv2d*"`, `"dense_1"`);
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


def describe(selector):
    """A short human-readable form of a selector, for messages and plans."""
    if isinstance(selector, str):
        return repr(selector)
    if inspect.isclass(selector):
        return selector.__name__
    if isinstance(selector, tuple):
        return "(" + ", ".join(describe(item) for item in selector) + ")"
    return getattr(selector, "__name__", repr(selector))


def iter_layers(model, recursive=True):
    """Yields each distinct layer of `model`, depth first.

    With `recursive=True`, the layers of nested models (a `Sequential` or
    functional model used as a layer, or the `layers` tracked by a
    subclassed model) come after the nested model itself.
    """
    seen = set()

    def walk(container):
        for layer in getattr(container, "layers", []):
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            yield layer
            if recursive and hasattr(layer, "layers"):
                yield from walk(layer)

    yield from walk(model)


def layer_names(model, recursive=True):
    """The names of the layers of `model`, for error messages."""
    return [layer.name for layer in iter_layers(model, recursive=recursive)]
