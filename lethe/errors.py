"""Errors that the CLI reports as one line, without a traceback."""


class LetheError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class TrainingDiverged(LetheError):
    """The loss or gradient became NaN/inf; the last good weights were kept."""
