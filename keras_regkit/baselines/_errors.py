"""Errors for bad input to the baseline (the command line turns them into exit
code 2), and the check that keeps a renamed keyword working."""

import functools
import inspect
import warnings


class BaselineInputError(ValueError):
    """Bad input to the baseline, found before anything was written."""


class OutputDirError(BaselineInputError):
    """The run folder cannot be created or written."""


class StrategyConfigError(BaselineInputError):
    """The distribution strategy cannot be set up as asked (e.g. no `TF_CONFIG`)."""


class RunFolderError(BaselineInputError):
    """A folder given to `compare` is not a finished run."""


_L2_REASON = "the L2 coefficient of the loss; in Keras, `weight_decay` means decoupled decay"


def renamed_keyword(old, new, reason=_L2_REASON):
    """Decorator: the keyword `old=` still sets `new`, with a `DeprecationWarning`.

    Giving both is a `ValueError`. Used where the loss's L2 coefficient was
    called `weight_decay`, the name Keras gives to decoupled decay; `reason`
    is the warning's explanation of `new`.
    """

    def decorate(function):
        signature = inspect.signature(function)

        name = function.__qualname__.removesuffix(".__init__")

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
                    f"`{name}({old}=...)` is deprecated; use `{new}=` "
                    f"({reason}).",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = value
            return function(*args, **kwargs)

        return wrapper

    return decorate
