"""The commands' entry points (``equinorm-train``, ``-report``, ``-tune``, ``-evaluate``,
``python -m equinorm.train`` and ``scripts/``): each loads its command's module, which takes seconds
(torch, pandas, matplotlib), then runs its ``main``. A Ctrl-C while it loads is one line and exit
130, not a traceback through importlib; once running, each command says its own line."""

from __future__ import annotations

import importlib
import signal
import sys


def run(module: str, *args, **kwargs):
    """``<module>.main(*args, **kwargs)``'s exit status; 130 for a Ctrl-C while it loads."""
    try:
        main = importlib.import_module(module).main
    except KeyboardInterrupt:
        print("equinorm: interrupted (Ctrl-C) while loading; nothing was written", file=sys.stderr)
        return 128 + signal.SIGINT
    return main(*args, **kwargs)


def train():
    return run("equinorm.train.app")


def report():
    return run("equinorm.report.cli")


def tune():
    return run("equinorm.launch.tune")


def evaluate():
    return run("equinorm.train.evaluate")
