"""Errors for bad input to the baseline (the command line turns them into exit
code 2)."""


class BaselineInputError(ValueError):
    """Bad input to the baseline, found before anything was written."""


class OutputDirError(BaselineInputError):
    """The run folder cannot be created or written."""


class StrategyConfigError(BaselineInputError):
    """The distribution strategy cannot be set up as asked (e.g. no `TF_CONFIG`)."""


class RunFolderError(BaselineInputError):
    """A folder given to `compare` is not a finished run."""

