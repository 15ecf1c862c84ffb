"""Preemption: checkpoint at the next step boundary on SIGTERM/SIGUSR1 (and submitit's signal),
and on Ctrl-C (SIGINT).

A handler that only sets a flag is installed for these signals; the training loop polls it after
every step, writes a checkpoint (mid-epoch) and then hands the signal on: to the handler that was
installed before (submitit's, which requeues the job through the Hydra launcher's ``checkpoint``
and exits), or, if there was none (and always for SIGINT, whose default handler would print a
traceback), by raising :class:`Preempted` so that the process exits with 128 + signal number and
can be started again to resume. A second Ctrl-C before the checkpoint stops at once. A signal
that comes after the last poll (the last evaluation, the run's end) is handed on once the run has
ended: a Ctrl-C there stops a sweep too, rather than vanish as its next job starts.

A process that starts with SIGINT ignored keeps ignoring it, as Python itself does: a shell
without job control runs ``cmd &`` that way so that the terminal's Ctrl-C, which reaches its whole
process group, is not meant for it. (Catching it here made a backgrounded sweep's jobs stop while
the sweep itself, ignoring it, reported them "stopped" and exited 0.)
"""

from __future__ import annotations

import os
import signal
import threading

from equinorm.errors import EquinormError

__all__ = ["OutOfRequeues", "Preempted", "PreemptionGuard"]


class Preempted(Exception):
    def __init__(self, signum: int, ended: bool = False) -> None:
        done = "once its run had ended" if ended else "after writing a checkpoint"
        super().__init__(f"stopped by {signal.Signals(signum).name} {done}")
        self.signum, self.ended = signum, ended


def _signals() -> list[int]:
    sigs = [signal.SIGTERM, signal.SIGUSR1]
    if signal.getsignal(signal.SIGINT) != signal.SIG_IGN:  # ignored: not ours (``cmd &``)
        sigs.append(signal.SIGINT)
    if "SUBMITIT_EXECUTOR" in os.environ or "SLURM_JOB_ID" in os.environ:
        name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
        sig = getattr(signal, f"SIG{name}", None)
        if sig is not None and sig not in sigs:
            sigs.append(sig)
    return sigs


class PreemptionGuard:
    """Context manager; ``guard.requested`` is the signal number to act on, or None."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.requested == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: do not wait for the checkpoint
        self.requested = signum

    def __enter__(self) -> PreemptionGuard:
        if self.enabled:
            for sig in _signals():
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def hand_on(self, ended: bool = False) -> None:
        """After the checkpoint (or the run's end, ``ended``): run the previous handler of the
        signal, or raise Preempted."""
        signum = self.requested
        previous = self._previous.get(signum)
        self._restore()
        if callable(previous) and signum != signal.SIGINT:
            try:
                previous(signum, None)  # e.g. submitit: requeue (a finished run is then skipped)
            except Exception as exc:
                if "timed-out too many times" not in str(exc):
                    raise
                raise OutOfRequeues(exc) from exc
        raise Preempted(signum, ended)


class OutOfRequeues(EquinormError):
    """submitit's refusal to requeue a job at its time limit once more (``UncompletedJobError``
    from its signal handler, after the run's checkpoint): a setting to change, not a bug."""

    def __init__(self, exc: Exception) -> None:
        more = " (or hydra.launcher.max_num_timeout)" if "SLURM_JOB_ID" in os.environ else ""
        super().__init__(
            f"the job reached its time limit once more than submitit requeues it ({exc}): raise "
            f"hydra.launcher.timeout_min{more}; the run keeps its checkpoint, and running the "
            "sweep again resumes it"
        )
