"""Median and inter-quartile statistics over seeds (paper section 6.5).

The paper reports the median and the 25%/75% percentiles (never mean +- 2 std), point-wise per
epoch in its plots. Percentiles use numpy's default linear interpolation. Final numbers use
complete runs only. Per-epoch curves use every run that reached the epoch; a diverged run counts
until it diverged and then either leaves the curve (``diverged="exclude"``: the curve's ``n``
drops, and the figure marks the epoch) or stays in it at chance (``diverged="chance"``:
accuracy 100/classes and loss ln(classes) from its divergence to the group's last epoch), so
that a norm that diverges more is never flattered silently.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CELL = ["dataset", "arch", "variant"]  # a cell of runs within an experiment (a table section)
GROUP = ["experiment", *CELL, "norm"]  # one line of a figure, one row of a table (over seeds)


def cells(runs: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The (dataset, arch, variant) cells of ``runs``, the experiment's own config first."""
    found = set(zip(*(runs[c] for c in CELL), strict=True))
    return sorted(found, key=lambda c: (c[0], c[1], c[2] != "", c[2]))


def in_cell(frame: pd.DataFrame, cell: tuple[str, str, str]) -> pd.DataFrame:
    """The rows of ``frame`` (runs, history, finals) in ``cell``."""
    mask = np.logical_and.reduce([frame[c] == v for c, v in zip(CELL, cell, strict=True)])
    return frame[mask]


def settled(values):
    """``values`` (accuracies in %, or their differences) without their float noise: equal in
    images, equal here. A mean of two, an interpolated quartile or a difference differs from an
    equal accuracy in its last bits (93.9 - 93.02 is 0.8800000000000097); rounded to 1e-9, far
    below one image of any test set (0.002 or more), they tie as they should."""
    return np.round(values, 9)


def left_out(status: pd.Series) -> list[str]:
    """The seeds a median over complete ones leaves out, by status: ``['1 diverged', '2 failed']``
    (a norm that diverges more is not flattered by a median over its survivors)."""
    others = status[status != "complete"].value_counts().sort_index()
    return [f"{n} {s}" for s, n in others.items()]


def iqr(values) -> dict:
    """``median``, ``q25``, ``q75`` and ``n`` of the finite values (NaN when there are none)."""
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"median": np.nan, "q25": np.nan, "q75": np.nan, "n": 0}
    q25, median, q75 = np.percentile(v, [25, 50, 75])
    return {"median": float(median), "q25": float(q25), "q75": float(q75), "n": len(v)}


DIVERGED = ("exclude", "chance")


def chance_level(metric: str, classes: int) -> float:
    """What a model that predicts uniformly scores: ``100/classes`` % or a loss of ln(classes)."""
    return 100.0 / classes if metric.endswith("acc") else float(np.log(classes))


def curves(
    history: pd.DataFrame, metric: str, diverged: str = "exclude", classes=None
) -> pd.DataFrame:
    """Per group and epoch: median/q25/q75/n of ``metric`` over seeds (module docstring for the
    diverged runs; ``classes(dataset)`` gives the class count that ``chance`` needs)."""
    if diverged not in DIVERGED:
        raise ValueError(f"diverged={diverged!r} is not one of {', '.join(DIVERGED)}")
    cols = [*GROUP, "epoch", "median", "q25", "q75", "n"]
    if history.empty or metric not in history:
        return pd.DataFrame(columns=cols)
    ok = history
    if diverged == "chance":
        ok = _diverged_at_chance(history, metric, classes)
    rows = [
        {**dict(zip([*GROUP, "epoch"], key, strict=True)), **iqr(g[metric])}
        for key, g in ok.groupby([*GROUP, "epoch"], sort=True)
    ]
    return pd.DataFrame(rows, columns=cols)


def _diverged_at_chance(history: pd.DataFrame, metric: str, classes) -> pd.DataFrame:
    parts = [history]
    for key, g in history[history["status"] == "diverged"].groupby([*GROUP, "seed"]):
        last = history[(history[GROUP] == pd.Series(key[:-1], index=GROUP)).all(axis=1)]
        end = int(last["epoch"].max())
        bad_epochs = g.loc[~np.isfinite(g[metric].astype(float)), "epoch"]
        first_bad = int(bad_epochs.min()) if len(bad_epochs) else int(g["epoch"].max()) + 1
        epochs = range(first_bad, end + 1)
        if not len(epochs):
            continue
        fill = pd.DataFrame({"epoch": list(epochs)})
        for col, value in zip([*GROUP, "seed"], key, strict=True):
            fill[col] = value
        fill["status"] = "diverged"
        fill[metric] = chance_level(metric, classes(key[1]))
        parts.append(fill)
    out = pd.concat(parts, ignore_index=True)
    # one row per run and epoch: the chance value replaces the NaN of the divergence epoch
    out = out[np.isfinite(out[metric].astype(float))]
    return out.drop_duplicates([*GROUP, "seed", "epoch"], keep="last")


def divergences(history: pd.DataFrame) -> pd.DataFrame:
    """One row per diverged run: its group, seed and the epoch it diverged in."""
    bad = history[
        (history["status"] == "diverged") & ~np.isfinite(history["test_acc"].astype(float))
    ]
    return bad.groupby([*GROUP, "seed"], as_index=False)["epoch"].min()


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
                "loss_n": loss["n"],  # complete runs whose test loss is finite
                "complete": int((g["status"] == "complete").sum()),
                "diverged": int((g["status"] == "diverged").sum()),
                "failed": int((g["status"] == "failed").sum()),
                "unfinished": int((g["status"] == "unfinished").sum()),
                "seeds": sorted(int(s) for s in g["seed"]),
            }
        )
    return pd.DataFrame(rows)


def paired_difference(
    runs: pd.DataFrame, a: str = "equi", b: str = "bn", metric: str = "test_acc"
) -> pd.DataFrame:
    """Per cell of runs: ``metric`` of norm ``a`` minus norm ``b``, paired by seed (both
    complete): median and quartiles over the seeds."""
    rows = []
    cell = ["experiment", *CELL]
    for key, g in runs.groupby(cell, sort=True):
        d = paired_values(g, a, b, metric)
        if len(d):
            rows.append({**dict(zip(cell, key, strict=True)), **iqr(d)})
    return pd.DataFrame(rows, columns=[*cell, "median", "q25", "q75", "n"])


def paired_values(cell: pd.DataFrame, a: str, b: str, metric: str = "test_acc") -> np.ndarray:
    """Per seed complete in both: ``metric`` of norm ``a`` minus norm ``b`` (seed order)."""
    done = cell[cell["status"] == "complete"]
    left = done[done["norm"] == a].set_index("seed")[metric]
    right = done[done["norm"] == b].set_index("seed")[metric]
    both = left.index.intersection(right.index).sort_values()
    return (left[both] - right[both]).to_numpy(dtype=float)
