"""Layer selectors shared by `regularize`, `constrain` and `insert_dropout`.

A selector picks layers of a model. It is one of:

- a glob pattern matched against `layer.name` (`"conv2d*"`, `"dense_1"`);
- a glob pattern with a `/`, matched against `variable.path`: it picks
  variables, not layers (`_path_globs`);
- a layer class, or a tuple of classes (`keras.layers.Dense`);
- a callable `layer -> bool`.

Walking a model's layers is `_layer_tree`'s.
"""

import fnmatch
import inspect

import keras


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
