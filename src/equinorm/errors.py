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
    worker's traceback in its message -- the last one; its type when it has no message. A
    ``KeyError``'s sentence without the quotes its ``str`` adds."""
    text = str(exc)
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[-1] if any("Traceback (most recent call last)" in x for x in lines) else lines[0]
    return _QUALIFIED.sub("", line)


# the machine's errors: a full disk, a quota or file size limit, a read-only or lost (NFS)
# mount, a failing disk
MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.ESTALE, errno.EIO}


# torch's words for a DataLoader worker ended by a signal, and the machine's reasons for the two
# signals it does not send itself
_WORKER_KILLED = re.compile(
    r"DataLoader worker \(pid (\d+)\) is killed by signal: (Killed|Bus error)"
)
_CPU_ALLOC = re.compile(r"DefaultCPUAllocator: can't allocate memory: [^.]*")  # torch's words
_WORKER_CAUSE = {
    "Killed": "SIGKILL: most often the kernel's out-of-memory killer; fewer dataset.workers or "
    "more memory for the job",
    "Bus error": "SIGBUS: the shared memory that workers hand batches through (/dev/shm) is full; "
    "a larger /dev/shm (docker run --shm-size) or fewer dataset.workers",
}


def out_of_memory(error: BaseException) -> EquinormError | None:
    """One line for a device that ran out of memory (torch's ``OutOfMemoryError``, named here
    so that this module imports no torch; on the CPU, its allocator's RuntimeError) or a
    DataLoader worker killed by the machine."""
    if type(error).__name__ == "OutOfMemoryError":
        head, free, _ = one_line(error).partition(" is free")  # torch's sentences up to there
        return EquinormError(
            f"{head}{free}: the run needs less memory: a smaller train.batch_size (in evaluation: "
            "train.eval_batch_size), or a device with more memory"
        )
    cpu = _CPU_ALLOC.search(str(error))
    if cpu:  # malloc refused (a request larger than the machine can give): a RuntimeError
        return EquinormError(
            f"the CPU's memory ran out ({cpu[0]}): the run needs less memory: a smaller "
            "train.batch_size (in evaluation: train.eval_batch_size), or more memory for the job"
        )
    killed = _WORKER_KILLED.search(str(error))
    if killed:
        pid, signal = killed.groups()
        cause = _WORKER_CAUSE[signal]
        return EquinormError(f"a DataLoader worker (pid {pid}) was killed ({cause})")
    return None


# torch.compile builds its kernels with a compiler: inductor's CPU kernels with a C++ one (CXX,
# g++ by default), Triton's GPU launchers with a C one (CC); torch's and Triton's words for none
_NO_COMPILER = re.compile(r"No working C\+\+ compiler found[^\n]*|Failed to find C compiler")


def no_compiler(error: BaseException) -> EquinormError | None:
    """One line for ``train.compile=true`` on a machine without a working compiler."""
    found = _NO_COMPILER.search(str(error))
    if found is None:
        return None
    return EquinormError(
        f"train.compile=true needs a compiler to build torch.compile's kernels ({found[0]}): "
        "install one (g++), name it in CXX (CPU kernels) or CC (GPU: Triton's), or set "
        "train.compile=false"
    )


def machine_error(exc: BaseException, where: str | None = None) -> EquinormError | None:
    """One line for an error of the machine, not of the code: ``exc`` an ``OSError`` that names
    its file, or one with an errno of MACHINE_ERRNOS anywhere in its chain (``torch.save``
    reports a full disk as a RuntimeError caused by one), memory that ran out
    (:func:`out_of_memory`) or a compiler that is not there (:func:`no_compiler`); ``where``: the
    folder being written, said when the error names no file. None for anything else: a bug keeps
    its traceback."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for i, error in enumerate(chain):
        if line := out_of_memory(error) or no_compiler(error):
            return line
        named = i == 0 and getattr(error, "filename", None)
        if isinstance(error, OSError) and (error.errno in MACHINE_ERRNOS or named):
            text = error.strerror or one_line(error)
            if error.filename:
                return EquinormError(f"{text}: {error.filename}")
            return EquinormError(f"{text} (writing under {where})" if where else text)
    return None
