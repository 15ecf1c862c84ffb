"""Time to target (AlgoPerf's measure, docs/tuning.md): the epoch, and the training seconds, at
which each seed's test accuracy first reaches a target, per norm, median and quartiles over the
seeds that reach it -- a seed that ends (complete or diverged) without reaching it is a miss,
counted, never dropped.

The target of a cell of runs is the BatchNorm runs' median final test accuracy minus one point
(``scripts/report.py --target ACC`` sets it for every cell); a cell without BatchNorm runs and
no ``--target`` has none. Seconds are the sum of the epochs' measured time (training and the
end-of-epoch evaluation) up to that epoch. Writes ``<experiment>_time_to_target.{md,tex}``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from equinorm.report.collect import KEYS, Results
from equinorm.report.paper import norm_label, norm_sort_key
from equinorm.report.stats import cells, in_cell, iqr, settled
from equinorm.report.tables import BASELINE, cell_title, markdown_table, tex_table

MARGIN = 1.0  # points below the baseline's median final accuracy
HEADER = [
    "Norm",
    "Reached / ended",
    "Epoch: median (25%-75%)",
    "Seconds: median (25%-75%)",
    "Misses",
]


def target_of(cell_runs: pd.DataFrame, target: float | None) -> float | None:
    if target is not None:
        return target
    done = cell_runs[(cell_runs["norm"] == BASELINE) & (cell_runs["status"] == "complete")]
    return float(np.median(done["test_acc"])) - MARGIN if len(done) else None


def reached(history: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per run (KEYS): the first epoch whose test accuracy is >= ``target`` and the seconds
    spent by then; NaN when it never is."""
    rows = []
    for key, g in history.groupby(KEYS, sort=True):
        g = g.sort_values("epoch")
        seconds = g["epoch_time_s"].astype(float).fillna(0).cumsum()
        # the target is a median (of two: a mean), an accuracy equal to it in images may sit
        # below it in its last bits
        hit = np.flatnonzero(settled(g["test_acc"].astype(float).to_numpy()) >= settled(target))
        first = hit[0] if len(hit) else None
        rows.append(
            {
                **dict(zip(KEYS, key, strict=True)),
                "at_epoch": float(g["epoch"].iloc[first]) if first is not None else np.nan,
                "seconds": float(seconds.iloc[first]) if first is not None else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=[*KEYS, "at_epoch", "seconds"])


def _range(s: dict, digits: int) -> str:
    if not s["n"]:
        return "-"
    return f"{s['median']:.{digits}f} ({s['q25']:.{digits}f}-{s['q75']:.{digits}f})"


def rows_for(cell_runs: pd.DataFrame, history: pd.DataFrame, target: float) -> list[list[str]]:
    """A row per norm over its runs that ended (complete or diverged; the main table counts the
    others): how many reached the target, when, and the misses."""
    hits = reached(history, target)
    ended = cell_runs[cell_runs["status"].isin(["complete", "diverged"])]
    table = []
    for norm in sorted(ended["norm"].unique(), key=norm_sort_key):
        mine = ended[ended["norm"] == norm].merge(hits, on=KEYS, how="left")
        got = mine[mine["at_epoch"].notna()]
        table.append(
            [
                norm_label(norm),
                f"{len(got)} / {len(mine)}",
                _range(iqr(got["at_epoch"]), 1),
                _range(iqr(got["seconds"]), 1),
                str(len(mine) - len(got)),
            ]
        )
    return table


def write_time_to_target(
    results: Results, experiment: str, out_dir: Path, target: float | None = None
) -> list[Path]:
    runs = results.runs[results.runs["experiment"] == experiment]
    history = results.history[results.history["experiment"] == experiment]
    blocks, md = [], [f"# {experiment}: time to target", ""]
    md += [
        "The epoch and the training seconds (epochs' measured time, evaluation included) at which "
        "a seed's test accuracy first reaches the target; median (25%-75%) over the seeds that "
        "reach it. Reached / ended: of the seeds that finished (complete or diverged), those that "
        "reached it; a finished seed that never reached it is a miss.",
        "",
    ]
    for cell in cells(runs):
        sub = in_cell(runs, cell)
        goal = target_of(sub, target)
        title = cell_title(*cell)
        if goal is None:
            md += [f"## {title}", "", "No BatchNorm run completed: no target (--target ACC).", ""]
            continue
        how = "set by --target" if target is not None else f"BatchNorm's median - {MARGIN:g}"
        title = f"{title}: target {goal:.2f} % ({how})"
        rows = rows_for(sub, in_cell(history, cell), goal)
        blocks.append((title, rows))
        md += [f"## {title}", "", *markdown_table(HEADER, rows), ""]
    if not blocks:
        return []
    tables = Path(out_dir)
    tables.mkdir(parents=True, exist_ok=True)
    stem = tables / f"{experiment}_time_to_target"
    stem.with_suffix(".md").write_text("\n".join(md).rstrip() + "\n")
    note = f"{experiment}: epochs and seconds to the target test accuracy; misses counted"
    stem.with_suffix(".tex").write_text(tex_table(note, HEADER, blocks))
    return [stem.with_suffix(".md"), stem.with_suffix(".tex")]


__all__ = ["reached", "rows_for", "target_of", "write_time_to_target"]
