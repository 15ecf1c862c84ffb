"""Median and inter-quartile statistics over seeds (paper section 6.5).

The paper reports the median and the 25%/75% percentiles (never mean +- 2 std), point-wise per
epoch in its plots. Percentiles use numpy's default linear interpolation. Per-epoch curves use
every run that reached the epoch and did not diverge; final numbers use complete runs only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

GROUP = ["experiment", "dataset", "arch", "norm"]


def iqr(values) -> dict:
    """``median``, ``q25``, ``q75`` and ``n`` of the finite values (NaN when there are none)."""
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"median": np.nan, "q25": np.nan, "q75": np.nan, "n": 0}
    q25, median, q75 = np.percentile(v, [25, 50, 75])
    return {"median": float(median), "q25": float(q25), "q75": float(q75), "n": len(v)}


def curves(history: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per group and epoch: median/q25/q75/n of ``metric`` over seeds (diverged runs excluded)."""
    cols = [*GROUP, "epoch", "median", "q25", "q75", "n"]
    if history.empty or metric not in history:
        return pd.DataFrame(columns=cols)
    ok = history[history["status"] != "diverged"]
    rows = [
        {**dict(zip([*GROUP, "epoch"], key, strict=True)), **iqr(g[metric])}
        for key, g in ok.groupby([*GROUP, "epoch"], sort=True)
    ]
    return pd.DataFrame(rows, columns=cols)


def finals(runs: pd.DataFrame) -> pd.DataFrame:
    """Per group: final test accuracy and loss over complete runs, and the run counts."""
    rows = []
    for key, g in runs.groupby(GROUP, sort=True):
        done = g[g["status"] == "complete"]
        acc, loss = iqr(done["test_acc"]), iqr(done["test_loss"])
        rows.append(
            {
                **dict(zip(GROUP, key, strict=True)),
                "acc_median": acc["median"],
                "acc_q25": acc["q25"],
                "acc_q75": acc["q75"],
                "loss_median": loss["median"],
                "loss_q25": loss["q25"],
                "loss_q75": loss["q75"],
                "complete": int((g["status"] == "complete").sum()),
                "diverged": int((g["status"] == "diverged").sum()),
                "unfinished": int((g["status"] == "unfinished").sum()),
                "seeds": sorted(int(s) for s in g["seed"]),
            }
        )
    return pd.DataFrame(rows)


def paired_difference(
    runs: pd.DataFrame, a: str = "equi", b: str = "bn", metric: str = "test_acc"
) -> pd.DataFrame:
    """Per experiment: ``metric`` of norm ``a`` minus norm ``b``, paired by seed (both complete)."""
    done = runs[runs["status"] == "complete"]
    rows = []
    for key, g in done.groupby(["experiment", "dataset", "arch"], sort=True):
        left = g[g["norm"] == a].set_index("seed")[metric]
        right = g[g["norm"] == b].set_index("seed")[metric]
        both = left.index.intersection(right.index)
        if len(both):
            d = iqr((left[both] - right[both]).to_numpy())
            rows.append({"experiment": key[0], "dataset": key[1], "arch": key[2], **d})
    return pd.DataFrame(
        rows, columns=["experiment", "dataset", "arch", "median", "q25", "q75", "n"]
    )
