"""Our result against the paper's (section 6.5: median and 25%/75% percentiles of 10 seeds).

Two questions per norm, as a reviewer asks them:

1. Do the numbers overlap? The paper's median inside our inter-quartile range, or ours inside
   the paper's (where the paper gives one): ``agrees``; neither: ``differs``.
2. Does the comparison the paper makes hold? Against BatchNorm, paired by seed (the same seed
   draws the same data order, augmentation and mixup for every norm): the median difference
   with a 95% percentile-bootstrap confidence interval and the Wilcoxon signed-rank p-value
   (two-sided, exact for small samples; scipy), beside the paper's difference of medians.

The bootstrap uses a fixed generator, so a report is byte-identical when the runs are. Below
:data:`MIN_SEEDS` seeds (or pairs) neither question is answered ("n too small"): an IQR of one or
two values and a bootstrap of two differences say nothing. The two tests can disagree on few seeds
(with n pairs the exact signed-rank p is at least 2/2^n: 0.062 at n = 5, while the bootstrap CI is
optimistic there); the table says so rather than pick one (:data:`EXPLAINED`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from equinorm.report.paper import PaperResult
from equinorm.report.stats import settled

RESAMPLES = 10_000
LEVEL = 0.95
MIN_SEEDS = 3
ALPHA = 1 - LEVEL
#: the caption line that explains the verdict and the paired columns
EXPLAINED = (
    "Verdict: agrees when the paper's median lies in our 25%-75% range or ours in the paper's. "
    "Paired: the median over seeds of (norm - BatchNorm) on the same seed, its 95% "
    "percentile-bootstrap CI and the two-sided exact Wilcoxon signed-rank p; with n pairs p is "
    "at least 2/2^n (0.062 at n = 5), so on few seeds a CI excluding 0 beside p > 0.05 means "
    f"more seeds are needed. Below {MIN_SEEDS} seeds neither is given (n too small)."
)


@dataclass(frozen=True)
class Paired:
    """The paired difference of one norm against another over the seeds both completed."""

    n: int
    median: float
    ci_low: float
    ci_high: float
    p_value: float | None  # Wilcoxon signed-rank; None below 2 pairs

    def text(self, paper_diff: float | None = None) -> str:
        if self.n < MIN_SEEDS:
            return f"{self.median:+.2f}, n = {self.n}: n too small for a CI or a test"
        p = "p n/a" if self.p_value is None else f"p = {self.p_value:.2g}"
        out = f"{self.median:+.2f} [{self.ci_low:+.2f}, {self.ci_high:+.2f}], {p}, n = {self.n}"
        excludes_zero = self.ci_low > 0 or self.ci_high < 0
        if self.p_value is not None and excludes_zero != (self.p_value < ALPHA):
            out += " (CI and test disagree: more seeds needed)"
        if paper_diff is not None:
            inside = self.ci_low <= paper_diff <= self.ci_high
            out += f"; paper {paper_diff:+.2f} ({'inside' if inside else 'outside'} the CI)"
        return out


def bootstrap_median_ci(d: np.ndarray, level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median of ``d``."""
    rng = np.random.default_rng(seed)
    samples = rng.choice(d, size=(RESAMPLES, len(d)), replace=True)
    medians = np.median(samples, axis=1)
    lo, hi = np.percentile(medians, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def wilcoxon_p(d: np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of ``d`` (1.0 when every difference is zero)."""
    if len(d) < 2:
        return None
    if not np.any(d):
        return 1.0
    return float(stats.wilcoxon(d, zero_method="zsplit").pvalue)


def paired(d: np.ndarray) -> Paired | None:
    d = np.asarray(d, dtype=float)
    d = settled(d[np.isfinite(d)])  # equal differences tie, as the signed-rank test ranks them
    if not len(d):
        return None
    lo, hi = bootstrap_median_ci(d)
    return Paired(len(d), float(np.median(d)), lo, hi, wilcoxon_p(d))


def overlap(ours: dict, paper: PaperResult | None) -> str:
    """``agrees (...)`` / ``differs`` / ``-`` for our median/IQR (:func:`stats.iqr`) and the
    paper's number."""
    if paper is None or not ours.get("n") or math.isnan(ours["median"]):
        return "-"
    if ours["n"] < MIN_SEEDS:
        return f"n too small (n = {ours['n']})"
    reasons = []
    q25, median, q75 = settled([ours["q25"], ours["median"], ours["q75"]])  # interpolated
    if q25 <= paper.median <= q75:
        reasons.append("paper's median in our IQR")
    if paper.q25 is not None and paper.q25 <= median <= paper.q75:
        reasons.append("our median in the paper's IQR")
    return f"agrees ({'; '.join(reasons)})" if reasons else "differs"


__all__ = [
    "EXPLAINED",
    "MIN_SEEDS",
    "Paired",
    "bootstrap_median_ci",
    "overlap",
    "paired",
    "wilcoxon_p",
]
