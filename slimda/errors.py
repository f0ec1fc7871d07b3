"""User-facing errors.

Anything a user can cause (bad data, a malformed option, a missing file) raises a ``SlimdaError`` whose
message says what was wrong and how to fix it. The CLI prints the message and exits with status 2
instead of showing a traceback.
"""


class SlimdaError(Exception):
    """An error caused by the user's input, with a message meant for them."""


class DataError(SlimdaError):
    """A data set, folder or image that cannot be used."""


class ConfigError(SlimdaError):
    """An invalid option, width configuration or budget."""
