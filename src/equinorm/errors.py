"""User-facing errors: one line that names the problem and the fix.

The command-line entry points print these without a traceback and exit non-zero; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import re


class EquinormError(Exception):
    """An error the user can act on (bad config value, missing data, locked run, ...)."""


class ConfigError(EquinormError, ValueError):
    """A config value is invalid; the message names the key and the valid choices."""


class DatasetError(EquinormError):
    """A dataset is missing, incomplete or corrupt; the message names the file or root."""


# "equinorm.errors.DatasetError: " heading the last line of a traceback re-raised from a
# DataLoader worker (torch puts the worker's whole traceback into the message)
_QUALIFIED = re.compile(r"^(?:[A-Za-z_][\w]*\.)+[A-Za-z_]\w*(?:Error|Exception): ")


def one_line(exc: BaseException) -> str:
    """An exception's sentence: its message's first line, or -- for an error re-raised with a
    worker's traceback in its message -- the last one; its type when it has no message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[-1] if any("Traceback (most recent call last)" in x for x in lines) else lines[0]
    return _QUALIFIED.sub("", line)


# the machine's errors: a full disk, a quota or file size limit, a read-only or lost (NFS)
# mount, a failing disk
MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.ESTALE, errno.EIO}


def machine_error(exc: BaseException, where: str | None = None) -> EquinormError | None:
    """One line for an error of the machine, not of the code: ``exc`` an ``OSError`` that names
    its file, or one with an errno of MACHINE_ERRNOS anywhere in its chain (``torch.save``
    reports a full disk as a RuntimeError caused by one); ``where``: the folder being written,
    said when the error names no file. None for anything else: a bug keeps its traceback."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for i, error in enumerate(chain):
        named = i == 0 and getattr(error, "filename", None)
        if isinstance(error, OSError) and (error.errno in MACHINE_ERRNOS or named):
            text = error.strerror or one_line(error)
            if error.filename:
                return EquinormError(f"{text}: {error.filename}")
            return EquinormError(f"{text} (writing under {where})" if where else text)
    return None
