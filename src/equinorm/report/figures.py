"""Figures in the paper's style (Figures 2-4): test accuracy and test loss against epoch, one line
per norm (median over seeds) with its inter-quartile band, the legend reading like the paper's
("EquiNorm (96.87 IQR 96.84-97.04)"). Diverged runs are counted in the legend and marked (x) at
the epoch they diverged; the caption says whether the curves leave them out from there or count
them at chance (``diverged``, see :func:`equinorm.report.stats.curves`). Experiments with the
Figure-1 diagnostic also get the positive/negative contribution plot.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from equinorm.data import dataset_info
from equinorm.report.collect import Results
from equinorm.report.paper import NORM_COLORS, PAPER, norm_label, norm_sort_key
from equinorm.report.setup import describe
from equinorm.report.stats import curves, divergences, finals, iqr

FORMATS = ("png", "pdf")


def legend_label(norm: str, final: pd.Series | None, expected_seeds: int | None = None) -> str:
    diverged = int(final["diverged"]) if final is not None and "diverged" in final else 0
    tail = f", {diverged} diverged" if diverged else ""
    if final is None or not final["complete"]:
        return f"{norm_label(norm)} (no complete run{tail})"
    text = (
        f"{norm_label(norm)} ({final['acc_median']:.2f} IQR "
        f"{final['acc_q25']:.2f}-{final['acc_q75']:.2f}"
    )
    if expected_seeds is None or final["complete"] != expected_seeds:
        text += f", n={final['complete']}"
    return text + tail + ")"


CAPTIONS = {
    "exclude": "diverged runs (x: epoch of divergence) leave the curves from that epoch on",
    "chance": "diverged runs (x) count at chance accuracy and loss from their divergence on",
}


def _classes(dataset: str) -> int:
    return dataset_info(dataset).num_classes


def _panel_groups(results: Results, experiment: str):
    """(dataset, arch) combinations of an experiment: normally exactly one."""
    runs = results.runs[results.runs["experiment"] == experiment]
    return sorted({(d, a) for d, a in zip(runs["dataset"], runs["arch"], strict=True)})


def _zoom(ax, ends_lo: list[float], ends_hi: list[float], top: float | None, floor: float | None):
    if not ends_lo:
        return
    lo, hi = min(ends_lo), max(ends_hi)
    span = max(hi - lo, 0.5)
    low, high = lo - 3 * span, hi + 1.5 * span
    if floor is not None:
        low = max(floor, low)
    if top is not None:
        high = min(top, high)
    ax.set_ylim(low, high)


def plot_experiment(
    results: Results, experiment: str, out_dir: Path, diverged: str = "exclude"
) -> list[Path]:
    """Write ``<out_dir>/<experiment>.{png,pdf}`` (and the equilibrium plot when there is one)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    hist = results.history[results.history["experiment"] == experiment]
    fin = finals(results.runs[results.runs["experiment"] == experiment])
    paper = PAPER.get(experiment)
    expected = max(r.seeds for r in paper.results.values()) if paper and paper.results else None
    groups = _panel_groups(results, experiment)
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 4.2 * len(groups)), squeeze=False)
    for row, (dataset, arch) in enumerate(groups):
        sub = hist[(hist["dataset"] == dataset) & (hist["arch"] == arch)]
        acc_c = curves(sub, "test_acc", diverged, _classes)
        loss_c = curves(sub, "test_loss", diverged, _classes)
        bad = divergences(sub)
        ends = {"acc": ([], []), "loss": ([], [])}
        norms = sorted(
            set(
                results.runs[
                    (results.runs["experiment"] == experiment)
                    & (results.runs["dataset"] == dataset)
                    & (results.runs["arch"] == arch)
                ]["norm"]
            ),
            key=norm_sort_key,
        )
        for norm in norms:
            color = NORM_COLORS.get(norm)
            match = fin[(fin["dataset"] == dataset) & (fin["arch"] == arch) & (fin["norm"] == norm)]
            label = legend_label(norm, match.iloc[0] if len(match) else None, expected)
            for ax, c, key in ((axes[row, 0], acc_c, "acc"), (axes[row, 1], loss_c, "loss")):
                c = c[c["norm"] == norm]
                if c.empty:
                    ax.plot([], [], color=color, label=label)
                    continue
                ax.plot(c["epoch"], c["median"], color=color, lw=1.6, label=label)
                ax.fill_between(c["epoch"], c["q25"], c["q75"], color=color, alpha=0.25, lw=0)
                ends[key][0].append(float(c["q25"].iloc[-1]))
                ends[key][1].append(float(c["q75"].iloc[-1]))
                at = bad[bad["norm"] == norm]["epoch"]
                if len(at):  # on the curve at the epoch it diverged (or its last point)
                    y = np.interp(at, c["epoch"].astype(float), c["median"].astype(float))
                    ax.plot(at, y, "x", color=color, ms=7, mew=1.8, zorder=5)
        ax_acc, ax_loss = axes[row]
        _zoom(ax_acc, *ends["acc"], top=100.0, floor=0.0)
        if ends["loss"][1]:
            peak = np.nanmax(loss_c["q75"]) if len(loss_c) else max(ends["loss"][1])
            ax_loss.set_ylim(0, min(float(peak) * 1.05, 4 * max(ends["loss"][1])))
        where = f" -- paper {paper.where}" if paper else ""
        cell = results.runs[
            (results.runs["experiment"] == experiment)
            & (results.runs["dataset"] == dataset)
            & (results.runs["arch"] == arch)
        ]
        setup = describe(cell)
        title = f"{experiment}: {dataset} / {arch}{where}" + (f"\n{setup}" if setup else "")
        ax_acc.set_title(title, loc="left", fontsize=10)
        ax_acc.set_ylabel("Test accuracy (%)")
        ax_loss.set_ylabel("Test loss")
        for ax in axes[row]:
            ax.set_xlabel("Epoch")
            ax.grid(alpha=0.3)
        ax_acc.legend(loc="lower right", fontsize=8, frameon=False)
    caption = "median over seeds; bands: 25%-75%"
    if not divergences(hist).empty:
        caption += "; " + CAPTIONS[diverged]
    fig.text(0.99, 0.01, caption, ha="right", fontsize=7, color="0.4")
    fig.tight_layout()
    for fmt in FORMATS:
        path = out_dir / f"{experiment}.{fmt}"
        fig.savefig(path, dpi=150)
        written.append(path)
    plt.close(fig)
    eq = results.equilibrium
    if not eq.empty and (eq["experiment"] == experiment).any():
        written += plot_equilibrium(eq[eq["experiment"] == experiment], experiment, out_dir)
    return written


def plot_equilibrium(eq: pd.DataFrame, experiment: str, out_dir: Path) -> list[Path]:
    """The Figure-1 diagnostic: mean positive and negative contribution per output element, over
    the network's layers, per epoch (median over seeds, band 25%-75%)."""
    per_run = eq.groupby(["norm", "seed", "epoch"])[["positive", "negative"]].mean().reset_index()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for norm, g in sorted(per_run.groupby("norm"), key=lambda kv: norm_sort_key(kv[0])):
        color = NORM_COLORS.get(norm)
        for part, style in (("positive", "-"), ("negative", "--")):
            stats = pd.DataFrame([{"epoch": e, **iqr(v[part])} for e, v in g.groupby("epoch")])
            ax.plot(
                stats["epoch"],
                stats["median"],
                style,
                color=color,
                label=f"{norm_label(norm)} ({part} weights)",
            )
            ax.fill_between(
                stats["epoch"], stats["q25"], stats["q75"], color=color, alpha=0.2, lw=0
            )
    ax.axhline(1, color="0.5", lw=0.8)
    ax.axhline(-1, color="0.5", lw=0.8)
    ax.axhline(0, color="0.8", lw=0.6)
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Contribution per output element")
    ax.set_title(
        f"{experiment}: positive vs negative weight contributions (paper Fig. 1)",
        loc="left",
        fontsize=10,
    )
    ax.legend(fontsize=7, frameon=False, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written = []
    for fmt in FORMATS:
        path = out_dir / f"{experiment}_equilibrium.{fmt}"
        fig.savefig(path, dpi=150)
        written.append(path)
    plt.close(fig)
    return written
