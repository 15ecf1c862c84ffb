"""Files written whole or not at all: the one way this suite writes a file that others read.

A reader (a report, a resumed run, another sweep's skip decision) never sees half a file: the
text goes to a temporary file beside the target, which then replaces it in one ``os.replace``.
A write that fails (a full disk or quota, a lost mount) removes its temporary file and re-raises:
a failed checkpoint of a large network left hundreds of MB behind on a disk already full.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def replacing(
    path: Path, mode: str = "w", *, durable: bool = False, previous: Path | None = None, **kw
) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing (``mode``, ``open``'s ``kw``); on
    success it replaces ``path``. ``durable``: flushed to the disk first, and the directory
    after (a checkpoint survives a power cut); ``previous``: where the replaced file is moved
    first (a kill between the two renames leaves it there)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode, **kw) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        with contextlib.suppress(OSError):  # not every file system syncs a directory
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def write_text(path: Path, text: str) -> None:
    """``path`` holds ``text``, whole (see :func:`replacing`)."""
    with replacing(path) as f:
        f.write(text)


def leftovers(folder: Path) -> list[Path]:
    """The temporary files of writes that a killed process never finished (SIGKILL cannot be
    cleaned up after); only the folder's owner may remove them."""
    return sorted(Path(folder).glob(".*.tmp-*"))


__all__ = ["leftovers", "replacing", "write_text"]
