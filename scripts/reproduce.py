"""Reproduce a group of the paper's experiments: sweeps (resumable), then the report.

    python scripts/reproduce.py cifar10 [--nproc N] [--plan] [-- hydra overrides...]

A thin wrapper over equinorm.launch.reproduce (see there; `make help` lists the targets).
"""

import sys

from equinorm.entry import run

if __name__ == "__main__":
    sys.exit(run("equinorm.launch.reproduce"))
