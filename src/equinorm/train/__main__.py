"""``python -m equinorm.train``: see :mod:`equinorm.train.app` (``--help`` answers before torch
loads)."""

import sys

if __name__ == "__main__":
    from equinorm.experiment.usage import maybe_help

    if maybe_help(sys.argv[1:]):
        sys.exit(0)
    from equinorm.entry import run

    sys.exit(run("equinorm.train.app"))
