"""Reporting (paper section 6.5): collect runs -> median/IQR statistics -> figures and tables."""

from equinorm.report.cli import write_report
from equinorm.report.collect import Results, collect
from equinorm.report.stats import curves, finals, iqr, paired_difference

__all__ = ["Results", "collect", "curves", "finals", "iqr", "paired_difference", "write_report"]
