"""Renamed keywords: the old name keeps working, with a `DeprecationWarning`.

No Keras here: the baselines' plain-data modules use it without loading
model code.
"""

import functools
import inspect
import warnings


def renamed_keyword(old, new, reason=None):
    """Decorator: the keyword `old=` still sets `new`, with a `DeprecationWarning`.

    Giving both is a `ValueError`. `reason`, if given, is the warning's
    explanation of `new`. Decorators stack (one per renamed keyword); on a
    classmethod, apply it to the function, under `@classmethod`.

    Example:

    >>> import warnings
    >>> @renamed_keyword("lam", "strength", reason="the textbook's λ")
    ... def scale(strength, num_examples):
    ...     return strength / num_examples
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     scale(lam=3.0, num_examples=4)
    0.75
    >>> print(caught[0].message)
    `scale(lam=...)` is deprecated; use `strength=` (the textbook's λ).
    >>> scale(1.0, 4, lam=2.0)
    Traceback (most recent call last):
    ...
    ValueError: `lam` is the deprecated name of `strength`: pass `strength` only. Received: strength=1.0, lam=2.0
    """

    def decorate(function):
        signature = inspect.signature(function)
        name = function.__qualname__.removesuffix(".__init__")
        explanation = "" if reason is None else f" ({reason})"

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            if old in kwargs:
                value = kwargs.pop(old)
                # Positional arguments bound by name; keywords as given (another
                # renamed keyword of a stacked decorator is not in `signature`).
                given = {**signature.bind_partial(*args).arguments, **kwargs}
                if new in given:
                    raise ValueError(
                        f"`{old}` is the deprecated name of `{new}`: pass `{new}` only. "
                        f"Received: {new}={given[new]!r}, {old}={value!r}"
                    )
                warnings.warn(
                    f"`{name}({old}=...)` is deprecated; use `{new}=`{explanation}.",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = value
            return function(*args, **kwargs)

        return wrapper

    return decorate
