"""User-facing errors: one line that names the problem and the fix.

The command-line entry points print these without a traceback and exit non-zero; anything else is
a bug and keeps its traceback.
"""


class EquinormError(Exception):
    """An error the user can act on (bad config value, missing data, locked run, ...)."""


class ConfigError(EquinormError, ValueError):
    """A config value is invalid; the message names the key and the valid choices."""


class DatasetError(EquinormError):
    """A dataset is missing, incomplete or corrupt; the message names the file or root."""
