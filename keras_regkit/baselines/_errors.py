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


def renamed_keyword(old, new):
    """Decorator: the keyword `old=` still sets `new`, with a `DeprecationWarning`.

    Giving both is a `ValueError`. Used where the loss's L2 coefficient was
    called `weight_decay`, the name Keras gives to decoupled decay.
    """

    def decorate(function):
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            if old in kwargs:
                value = kwargs.pop(old)
                given = signature.bind_partial(*args, **kwargs).arguments
                if new in given:
                    raise ValueError(
                        f"`{old}` is the deprecated name of `{new}`: pass `{new}` only. "
                        f"Received: {new}={given[new]!r}, {old}={value!r}"
                    )
                warnings.warn(
                    f"`{function.__name__}({old}=...)` is deprecated; use `{new}=` "
                    f"(the L2 coefficient of the loss; in Keras, `weight_decay` "
                    "means decoupled decay).",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = value
            return function(*args, **kwargs)

        return wrapper

    return decorate
