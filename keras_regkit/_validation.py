"""Argument checks shared by every public object.

Each check returns the normalized plain-Python value or raises a
`ValueError`/`TypeError` that names the argument, says what was expected and
shows what was received (`Received: factor=-1`).
"""

import math
import numbers
import os

# The largest integer a TensorFlow int64 holds: counts and sizes beyond it
# (`train_limit=10**23`) cannot become a tensor.
MAX_INT = 2**63 - 1
# `keras.utils.set_random_seed` seeds NumPy, which takes 0 to 2**32 - 1.
MAX_SEED = 2**32 - 1


def _received(name, value):
    return f"Received: {name}={value!r}"


def number(value, name):
    """Returns `value` as a finite Python float, refusing bools and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        # NumPy scalars are `numbers.Real`; tensors and strings are not.
        raise TypeError(
            f"`{name}` must be a real number (int or float). "
            f"{_received(name, value)} of type {type(value).__name__}"
        )
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(
            f"`{name}` must be a finite number. {_received(name, value)}"
        )
    return value


def non_negative(value, name):
    """Returns `value` as a float `>= 0`."""
    value = number(value, name)
    if value < 0:
        raise ValueError(f"`{name}` must be >= 0. {_received(name, value)}")
    return value


def positive(value, name):
    """Returns `value` as a float `> 0`."""
    value = number(value, name)
    if value <= 0:
        raise ValueError(f"`{name}` must be > 0. {_received(name, value)}")
    return value


def rate(value, name="rate"):
    """Returns `value` as a float in `[0, 1)` (a dropout rate)."""
    value = number(value, name)
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"`{name}` must be in the interval [0, 1). {_received(name, value)}"
        )
    return value


def _int_at_least(value, name, low):
    """Returns `value` as an int `>= low`, refusing bools and floats."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be an integer >= {low}. {_received(name, value)} "
            f"of type {type(value).__name__}"
        )
    if value < low:
        raise ValueError(f"`{name}` must be >= {low}. {_received(name, value)}")
    return int(value)


def non_negative_int(value, name):
    """Returns `value` as an int `>= 0` (a step or epoch count), refusing bools and floats."""
    return _int_at_least(value, name, 0)


def positive_int(value, name):
    """Returns `value` as an int `>= 1` (and at most `MAX_INT`), refusing bools and floats."""
    value = _int_at_least(value, name, 1)
    if value > MAX_INT:
        raise ValueError(
            f"`{name}` must be at most 2**63 - 1 (TensorFlow's int64). {_received(name, value)}"
        )
    return value


def one_of(value, name, choices):
    """Returns `value` if it is one of `choices`."""
    if not isinstance(value, str) or value not in choices:
        expected = ", ".join(repr(c) for c in choices)
        raise ValueError(
            f"`{name}` must be one of {expected}. {_received(name, value)}"
        )
    return value


def axis(value, name="axis"):
    """Returns `"auto"`, an int, or a non-empty list of distinct ints.

    The `axis` of `MaxNorm` and `GroupLasso`: the axes that form one unit
    vector. Tuples become lists, so configs round-trip through JSON.
    """
    if isinstance(value, str):
        return one_of(value, name, ("auto",))
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (list, tuple)):
        items = list(value)
        if items and all(
            isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in items
        ):
            items = [int(a) for a in items]
            if len(set(items)) == len(items):
                return items
            raise ValueError(
                f"`{name}` must not repeat an axis. {_received(name, value)}"
            )
    raise TypeError(
        f'`{name}` must be "auto", an int, or a non-empty list of ints. '
        f"{_received(name, value)} of type {type(value).__name__}"
    )


def patterns(value, name):
    """Returns glob patterns as a list of strings (`None` -> `[]`).

    A single string is one pattern. Lists keep JSON round trips exact.
    """
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    try:
        items = list(value)
    except TypeError:
        raise TypeError(
            f"`{name}` must be a string or a list of strings. "
            f"{_received(name, value)}"
        ) from None
    for item in items:
        if not isinstance(item, str) or not item:
            raise TypeError(
                f"`{name}` must contain only non-empty strings. "
                f"{_received(name, value)}"
            )
    return items


def seed(value, name="seed"):
    """Returns `value` as an int or `None` (a random seed), refusing bools."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be an int or None. {_received(name, value)} "
            f"of type {type(value).__name__}"
        )
    return int(value)


def random_seed(value, name="seed"):
    """Returns `value` as an int from 0 to `MAX_SEED`, or `None`: a seed for
    `keras.utils.set_random_seed` (which seeds Python, NumPy and the backend)."""
    value = seed(value, name)
    if value is not None and not 0 <= value <= MAX_SEED:
        raise ValueError(
            f"`{name}` must be between 0 and 2**32 - 1 ({MAX_SEED}), as NumPy's seed. "
            f"{_received(name, value)}"
        )
    return value


def boolean(value, name):
    """Returns `value` if it is `True` or `False` (not 0/1, not `None`)."""
    if not isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be True or False. {_received(name, value)} "
            f"of type {type(value).__name__}"
        )
    return value


def fraction(value, name):
    """Returns `value` as a float in the closed interval `[0, 1]`."""
    value = number(value, name)
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"`{name}` must be in the interval [0, 1]. {_received(name, value)}"
        )
    return value


def optional_positive_int(value, name):
    """Returns `None` or `value` as an int `>= 1` (a limit that may be off)."""
    return None if value is None else positive_int(value, name)


def positive_int_at_most(value, name, high):
    """Returns `value` as an int with `1 <= value <= high`."""
    value = positive_int(value, name)
    if value > high:
        raise ValueError(
            f"`{name}` must be between 1 and {high}. {_received(name, value)}"
        )
    return value


def print_fn(value, name="print_fn"):
    """Returns `value` if it is a callable or `None` (Keras's `print_fn`)."""
    if value is not None and not callable(value):
        raise TypeError(
            f"`{name}` must be a callable or None. {_received(name, value)}"
        )
    return value


def optional_path(value, name):
    """Returns `None`, or `value` as a non-empty `str` path (from `str` or `os.PathLike`)."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise TypeError(
            f"`{name}` must be a non-empty path (str or os.PathLike) or None. "
            f"{_received(name, value)}"
        )
    return os.fspath(value)
