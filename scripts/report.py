"""Figures and tables of the paper's form from a results tree: a thin wrapper over equinorm.report.

python scripts/report.py                     # results/ -> results/figures, results/tables
python scripts/report.py --results /scratch/equinorm-results --experiment cifar10_wrn_short
"""

import sys

from equinorm.entry import run

if __name__ == "__main__":
    sys.exit(run("equinorm.report.cli"))
