"""``python -m equinorm.report``: the report's command line (:mod:`equinorm.report.cli`), as
``equinorm-report`` and ``scripts/report.py``."""

import sys

from equinorm.report.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m equinorm.report"))
