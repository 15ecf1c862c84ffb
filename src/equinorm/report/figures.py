"""Figures in the paper's style (Figures 2-4): test accuracy and test loss against epoch, one line
per norm (median over seeds) with its inter-quartile band, the legend reading like the paper's
("EquiNorm (96.87 IQR 96.84-97.04)").

One row of panels per cell of runs (dataset, architecture, variant): the accuracy over every
epoch, the same zoomed on the last third of training (its own y range, so nothing is cropped
silently), and the loss over every epoch. Colours are Okabe & Ito's colour-blind safe palette with
a line style per norm; the legend sits under the panels, off the data; each row's title, centred
over it, names the global batch and width (:mod:`equinorm.report.setup`). Diverged runs are
counted in the legend and marked (x) at the epoch they diverged; the caption says whether the
curves leave them out from there or count them at chance (``diverged``, see
:func:`equinorm.report.stats.curves`). A cell without any epoch to draw gets no panel (the
caption names it). Experiments with the Figure-1 diagnostic also get the positive/negative
contribution plot.
"""

from __future__ import annotations

import math
import textwrap
from itertools import pairwise
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator, StrMethodFormatter
from matplotlib.transforms import offset_copy

from equinorm.data import dataset_info
from equinorm.report.collect import Results
from equinorm.report.paper import PAPER, norm_color, norm_label, norm_line, norm_sort_key
from equinorm.report.setup import describe
from equinorm.report.stats import cells, curves, divergences, finals, in_cell, iqr
from equinorm.report.tables import cell_title

FORMATS = ("png", "pdf")
ZOOM_FROM = 2 / 3  # the zoomed panel shows the last third of the epochs
EQ_LINEAR_REACH = 20.0  # the equilibrium panel is symlog past 20x EquiNorm's +-1
WIDTH = 7.0  # inches: a two-column paper's text width (scripts/report.py --width 3.3: a column)
#: type sized for print at WIDTH: 7-8 pt, as a paper's own figures
STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "lines.linewidth": 1.3,
    "lines.markersize": 4,
}


def wrap(text: str, width_in: float, size_pt: float = 8) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``size_pt`` (each line kept),
    at spaces only ("held-out", "25%-75%" and key=value pairs stay whole)."""
    chars = max(int(width_in * 72 / (0.55 * size_pt)), 20)  # an average glyph: ~0.55 em
    lines = text.split("\n")
    return "\n".join(textwrap.fill(line, chars, break_on_hyphens=False) for line in lines)


def tick_values(ax, values: list[str], log: bool, width_in: float) -> None:
    """Ticks at ``values`` (numbers as typed, sorted), labelled as typed, where the labels fit
    side by side on an axis of about ``width_in`` inches at 8 pt; else matplotlib's own."""
    xs = [float(v) for v in values]
    at = [math.log10(x) for x in xs] if log else xs
    span, wide = at[-1] - at[0], 0.07 * max(map(len, values)) + 0.15  # inches
    if span > 0 and min(b - a for a, b in pairwise(at)) / span * 0.8 * width_in >= wide:
        ax.set_xticks(xs, values)
        ax.minorticks_off()


def mark_all_diverged(ax, x: float, color) -> None:
    """Mark, at the bottom of ``ax``, a value at which every seed diverged (no point to draw);
    the axis is widened to it (beyond the drawn points it would stretch the figure instead)."""
    y = ax.dataLim.y0 if np.isfinite(ax.dataLim.y0) else 0.0
    ax.update_datalim([(x, y)])
    ax.autoscale_view()
    ax.annotate(
        "all diverged",
        (x, 0),
        xycoords=("data", "axes fraction"),
        xytext=(0, 4),
        textcoords="offset points",
        ha="center",
        fontsize=7,
        color=color,
        rotation=90,
    )


def legend_below(fig, ax, caption: str, order: list[str] | None = None) -> None:
    """Lay the figure out, then put the legend of ``ax`` (an axis, or several: each label once)
    under the panels, ``caption`` as its title; ``order``: the labels' order (others last)."""
    entries: dict[str, object] = {}
    for one in ax if isinstance(ax, list) else [ax]:
        for handle, label in zip(*one.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    labels = list(entries)
    if order is not None:
        rank = {label: i for i, label in enumerate(order)}
        labels.sort(key=lambda label: rank.get(label, len(rank)))
    handles = [entries[label] for label in labels]
    fig.tight_layout()
    fig.legend(
        handles,
        labels,
        loc="upper left",
        bbox_to_anchor=(0, 0),
        ncol=4,
        frameon=False,
        title=caption,
        title_fontsize=7,
        alignment="left",
    )


def save(fig, out_dir: Path, stem: str) -> list[Path]:
    """PNG and PDF, reproducible byte for byte (no creation date in the PDF)."""
    written = []
    for fmt in FORMATS:
        path = out_dir / f"{stem}.{fmt}"
        metadata = {"CreationDate": None} if fmt == "pdf" else {}
        fig.savefig(path, dpi=150, bbox_inches="tight", metadata=metadata)
        written.append(path)
    plt.close(fig)
    return written


def legend_label(norm: str, final: pd.Series | None, expected_seeds: int | None = None) -> str:
    diverged = int(final["diverged"]) if final is not None and "diverged" in final else 0
    tail = f", {diverged} diverged" if diverged else ""
    if final is None or not final["complete"]:
        return f"{norm_label(norm)} (no complete run{tail})"
    text = f"{norm_label(norm)} ({final['acc_median']:.2f}"
    if final["complete"] > 1:  # one run's IQR is its value twice
        text += f" IQR {final['acc_q25']:.2f}-{final['acc_q75']:.2f}"
    if expected_seeds is None or final["complete"] != expected_seeds:
        text += f", n={final['complete']}"
    return text + tail + ")"


CAPTIONS = {
    "exclude": "diverged runs (x: epoch of divergence) leave the curves from that epoch on",
    "chance": "diverged runs (x) count at chance accuracy and loss from their divergence on",
}


def _classes(dataset: str) -> int:
    return dataset_info(dataset).num_classes


def _fit(ax, curves_: list[pd.DataFrame], start: float, top: float | None = None) -> None:
    """y range holding every band point at epochs >= ``start`` (nothing cropped there)."""
    lo, hi = [], []
    for c in curves_:
        part = c[c["epoch"] >= start]
        lo += list(part["q25"].astype(float)) + list(part["median"].astype(float))
        hi += list(part["q75"].astype(float)) + list(part["median"].astype(float))
    lo, hi = [v for v in lo if np.isfinite(v)], [v for v in hi if np.isfinite(v)]
    if not lo:
        return
    span = max(max(hi) - min(lo), 0.2)
    low, high = min(lo) - 0.08 * span, max(hi) + 0.08 * span
    ax.set_ylim(low, min(high, top) if top is not None and max(hi) <= top else high)


def _draw(ax, c: pd.DataFrame, norm: str, label: str | None, at) -> None:
    color, style = norm_color(norm), norm_line(norm)
    finite = np.isfinite(c["median"].astype(float)).sum()
    one = "o" if finite == 1 else None  # a single epoch: a point, not an invisible line
    ax.plot(c["epoch"], c["median"], color=color, ls=style, lw=1.6, marker=one, label=label)
    ax.fill_between(c["epoch"], c["q25"], c["q75"], color=color, alpha=0.22, lw=0)
    if len(at):  # on the curve at the epoch it diverged (or its last point)
        y = np.interp(at, c["epoch"].astype(float), c["median"].astype(float))
        ax.plot(at, y, "x", color=color, ms=7, mew=1.8, zorder=5)


def _row(axes, key, results, experiment, cell, fin, expected, diverged, log_loss, width) -> None:
    """One cell's three panels (``axes``) and its legend (in the axes ``key``, under them)."""
    variant = cell[2]
    runs = results.runs[results.runs["experiment"] == experiment]
    sub = in_cell(results.history[results.history["experiment"] == experiment], cell)
    acc_c = curves(sub, "test_acc", diverged, _classes)
    loss_c = curves(sub, "test_loss", diverged, _classes)
    bad = divergences(sub)
    last = float(sub["epoch"].max())
    zoom_from = max(1.0, np.floor(last * ZOOM_FROM))
    ax_acc, ax_zoom, ax_loss = axes
    drawn = {"acc": [], "loss": []}
    here = in_cell(fin, cell)
    for norm in sorted(set(here["norm"]), key=norm_sort_key):
        match = here[here["norm"] == norm]
        label = legend_label(norm, match.iloc[0] if len(match) else None, expected)
        at = bad[bad["norm"] == norm]["epoch"]
        a, lo = acc_c[acc_c["norm"] == norm], loss_c[loss_c["norm"] == norm]
        if a.empty:
            ax_acc.plot([], [], color=norm_color(norm), ls=norm_line(norm), label=label)
            continue
        _draw(ax_acc, a, norm, label, at)
        _draw(ax_zoom, a[a["epoch"] >= zoom_from], norm, None, at[at >= zoom_from])
        _draw(ax_loss, lo, norm, None, at)
        drawn["acc"].append(a)
        drawn["loss"].append(lo)
    _fit(ax_acc, drawn["acc"], 0, top=100.0)
    _fit(ax_zoom, drawn["acc"], zoom_from)
    if log_loss:  # one scale for the whole figure (:func:`_log_loss`)
        ax_loss.set_yscale("log")
    else:
        _fit(ax_loss, drawn["loss"], 0)
    ax_zoom.set_xlim(zoom_from - 0.3, last + 0.3)
    if not any(np.isfinite(c["median"].astype(float)).any() for c in drawn["loss"]):
        ax_loss.set_xlim(ax_acc.get_xlim())  # e.g. an eval-mode net whose logits are NaN
        ax_loss.set_yticks([])
        ax_loss.text(0.5, 0.5, "no finite test loss", transform=ax_loss.transAxes, ha="center")
    finite = [c["epoch"][np.isfinite(c["median"].astype(float))] for c in drawn["acc"]]
    if len(set().union(*finite)) <= 1:  # one epoch at most: whole epochs, not a 0.1-wide axis
        for ax in (ax_acc, ax_loss):
            ax.set_xlim(0.5, last + 0.5)
    paper = PAPER.get(experiment)
    where = f" -- paper {paper.where}" if paper and not variant else ""
    setup = describe(in_cell(runs, cell))
    title = f"{experiment}: {cell_title(*cell)}{where}" + (f"; {setup}" if setup else "")
    # centred over a row (on its middle panel): the layout keeps a title's middle in the figure,
    # and a long left-aligned one's middle lies past its panel, squeezing every panel
    stacked = ax_zoom.get_subplotspec().rowspan != ax_acc.get_subplotspec().rowspan
    (ax_acc if stacked else ax_zoom).set_title(wrap(title, width), loc="left" if stacked else None)
    ax_acc.set_ylabel("Test accuracy (%)")
    ax_loss.set_ylabel("Test loss" + (" (log scale)" if log_loss else ""))
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("Epoch")
        ax.grid(alpha=0.3)
    ax_zoom.set_xlabel(f"Epoch (zoom: {zoom_from:g}-{last:g})")
    key.axis("off")
    _key_legend(key, *ax_acc.get_legend_handles_labels())


def _key_legend(key, handles: list, labels: list[str], ncol: int | None = None) -> None:
    """The row's legend, centred in its ``key`` axes under the panels; one line of entries
    until :func:`_fit_legend` measures it in the laid-out figure."""
    legend = key.legend(handles, labels, loc="center", ncol=ncol or max(1, len(labels)))
    legend.set_frame_on(False)
    legend.set_in_layout(False)  # its row is reserved by the grid; the panels keep the width


def _entries(legend) -> tuple[list, list[str]]:
    """A drawn legend's handles and labels, to draw it again in other columns."""
    return legend.legend_handles, [t.get_text() for t in legend.get_texts()]


def _fit_legend(fig, key) -> None:
    """Take columns off ``key``'s legend until it fits in the figure around the row's centre,
    measured once the figure is laid out (a column count guessed from the labels' length let
    the saved figure cut the last entries off: the legend is outside its tight bounding box)."""
    renderer = fig.canvas.get_renderer()
    box = key.get_window_extent(renderer)
    room = 2 * min(box.x0 + box.width / 2, fig.bbox.width - box.x0 - box.width / 2)
    handles, labels = _entries(key.get_legend())
    ncol = len(labels)
    while ncol > 1 and key.get_legend().get_window_extent(renderer).width > room:
        ncol -= 1
        _key_legend(key, handles, labels, ncol)


def _grid(fig, cells: int, columns: int, key: float) -> list[tuple[list, object]]:
    """Per cell: its three panels (a row, or stacked in one column) and a legend row under them
    (``key``: its height, in panel heights), all in one grid so the layout leaves room for each
    (the legend is as wide as the figure)."""
    per = 3 // columns  # rows of panels per cell
    ratios = ([1.0] * per + [key]) * cells
    widths = [1.15, 0.8, 1.15] if columns == 3 else None
    grid = fig.add_gridspec(len(ratios), columns, height_ratios=ratios, width_ratios=widths)
    out = []
    for i in range(cells):
        top = i * (per + 1)
        panels = [fig.add_subplot(grid[top + j // columns, j % columns]) for j in range(3)]
        out.append((panels, fig.add_subplot(grid[top + per, :])))
    return out


def _log_loss(curves_: pd.DataFrame) -> bool:
    """Log scale for the loss when early losses dwarf the final ones (both stay readable)."""
    low = curves_["q25"].astype(float) if len(curves_) else pd.Series(dtype=float)
    low = low[np.isfinite(low) & (low > 0)]
    return bool(len(low)) and curves_["q75"].astype(float).max() / low.min() > 20


def plot_experiment(
    results: Results,
    experiment: str,
    out_dir: Path,
    diverged: str = "exclude",
    width: float = WIDTH,
) -> list[Path]:
    """Write ``<out_dir>/<experiment>.{png,pdf}`` (and the equilibrium plot when there is one)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = results.runs[results.runs["experiment"] == experiment]
    hist = results.history[results.history["experiment"] == experiment]
    fin = finals(runs)
    paper = PAPER.get(experiment)
    expected = max(r.seeds for r in paper.results.values()) if paper and paper.results else None
    with_curves = set(cells(hist[np.isfinite(hist["test_acc"].astype(float))]))
    shown = [c for c in cells(runs) if c in with_curves]
    empty = [c for c in cells(runs) if c not in with_curves]
    begun = set(cells(hist))  # every run of such a cell diverged before an epoch ended
    lost = [c for c in empty if c in begun]
    empty = [c for c in empty if c not in begun]
    failed = [c for c in empty if (in_cell(runs, c)["status"] == "failed").all()]
    empty = [c for c in empty if c not in failed]
    written = []
    with plt.rc_context(STYLE):
        if shown:
            log_loss = _log_loss(curves(hist, "test_loss", diverged, _classes))
            columns = 3 if width >= 6 else 1  # a single column stacks a row's panels
            cell_height, key_height = (2.9, 0.18) if columns == 3 else (7.4, 0.35)
            if columns == 1:  # one entry a line: each past the demo's 3 adds 0.16 in, 7 pt type
                extra = 0.16 * max(0, max(in_cell(fin, c)["norm"].nunique() for c in shown) - 3)
                key_height += extra * (3 + key_height) / cell_height  # panels keep theirs
                cell_height += extra
            fig = plt.figure(figsize=(width, cell_height * len(shown)))
            keys = []
            grid = _grid(fig, len(shown), columns, key_height)
            for (panels, key), cell in zip(grid, shown, strict=True):
                args = (fin, expected, diverged, log_loss, width)
                _row(panels, key, results, experiment, cell, *args)
                keys.append(key)
            caption = "median over seeds; bands: 25%-75%"
            if not divergences(hist).empty:
                caption += "; " + CAPTIONS[diverged]
            if empty:
                caption += "; no epoch finished yet: " + ", ".join(cell_title(*c) for c in empty)
            if failed:  # the table names why
                caption += "; every run failed before an epoch ended: " + ", ".join(
                    cell_title(*c) for c in failed
                )
            if lost:
                caption += "; every run diverged in its first epoch: " + ", ".join(
                    cell_title(*c) for c in lost
                )
            fig.tight_layout()
            for key in keys:
                _fit_legend(fig, key)
            fig.text(0.0, -0.01, wrap(caption, width, 7), ha="left", va="top", fontsize=7)
            written += save(fig, out_dir, experiment)
        eq = results.equilibrium
        if not eq.empty and (eq["experiment"] == experiment).any():
            eq = eq[eq["experiment"] == experiment]
            written += plot_equilibrium(eq, experiment, out_dir, width)
    return written


def plot_equilibrium(
    eq: pd.DataFrame, experiment: str, out_dir: Path, width: float = WIDTH
) -> list[Path]:
    """The Figure-1 diagnostic: mean positive and negative contribution per output element, over
    the network's layers, per epoch (median over seeds, band 25%-75%), with EquiNorm's
    equilibrium at +-1 drawn and named; one panel per cell (dataset, arch, variant)."""
    shown = cells(eq)
    panel = min(width, 5.0)  # one panel: not wider than it needs
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(shown), 1, figsize=(panel, 3.6 * len(shown)), squeeze=False)
        for ax, cell in zip(axes[:, 0], shown, strict=True):
            title = f"{experiment}: positive vs negative weight contributions (paper Fig. 1)"
            if len(shown) > 1:
                title = f"{title}; {cell_title(*cell)}"
            _equilibrium_panel(ax, in_cell(eq, cell), wrap(title, panel))
        renderer = fig.canvas.get_renderer()
        # legend rows past the demo's four (3 norms in 2 columns) add to the figure's height,
        # not taken from the panel's
        rows = max(_legend_rows(ax, renderer, width * fig.dpi) for ax in axes[:, 0])
        fig.set_figheight((3.6 + 0.18 * max(0, rows - 4)) * len(shown))
        fig.tight_layout()
        renderer = fig.canvas.get_renderer()  # of the figure at its height
        if any(_covers_its_axis(ax, renderer) for ax in axes[:, 0]):
            for ax in axes[:, 0]:
                _legend_under_axis(fig, ax, renderer)
            fig.tight_layout()
        caption = (
            "Mean over the network's convolutions of the positive and the negative weights' "
            "output per output element; lines: median over seeds, bands: 25%-75%. EquiNorm holds "
            "+1 / -1 exactly with cyclic padding and stride 1; zero padding and strides pull it "
            "inside."
        )
        fig.text(0.0, -0.01, wrap(caption, panel, 7), ha="left", va="top", fontsize=7)
        return save(fig, out_dir, f"{experiment}_equilibrium")


def _equilibrium_panel(ax, eq: pd.DataFrame, title: str) -> None:
    per_run = eq.groupby(["norm", "seed", "epoch"])[["positive", "negative"]].mean().reset_index()
    reach = 0.0
    for norm, g in sorted(per_run.groupby("norm"), key=lambda kv: norm_sort_key(kv[0])):
        color = norm_color(norm)
        for part, style in (("positive", "-"), ("negative", "--")):
            stats = pd.DataFrame([{"epoch": e, **iqr(v[part])} for e, v in g.groupby("epoch")])
            band = stats[["q25", "q75"]].astype(float).abs().max().max()  # NaN if none finite
            reach = max(reach, band)  # max() keeps reach over a NaN
            ax.plot(
                stats["epoch"],
                stats["median"],
                style,
                color=color,
                label=f"{norm_label(norm)}, {part} weights",
            )
            ax.fill_between(
                stats["epoch"], stats["q25"], stats["q75"], color=color, alpha=0.2, lw=0
            )
    ax.axhline(1, color="0.35", lw=0.9, ls=":", label="+1 / -1: EquiNorm's equilibrium")
    ax.axhline(-1, color="0.35", lw=0.9, ls=":")
    ax.axhline(0, color="0.8", lw=0.6)
    ax.set_xlabel("Epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # a norm far from the equilibrium (WS's unit-variance kernels: tens) would flatten the others
    # to a line at 0: logarithmic past +-1, linear inside, where EquiNorm's lines are
    symlog = reach > EQ_LINEAR_REACH
    if symlog:
        ax.set_yscale("symlog", linthresh=1.0)
        ax.yaxis.get_major_locator().set_params(numticks=9)  # every other decade past 8 of them
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))  # 1, 10, 1e+06; not 10^0
    ax.set_ylabel("Contribution (symlog scale)" if symlog else "Contribution per output element")
    ax.set_title(title, loc="left")
    _under_panel(ax, *ax.get_legend_handles_labels(), ncol=2)
    ax.grid(alpha=0.3)


def _under_panel(ax, handles: list, labels: list[str], ncol: int) -> None:
    """An equilibrium panel's legend, centred 0.16 panel heights under it."""
    anchor = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.16)}
    ax.legend(handles, labels, frameon=False, ncol=ncol, **anchor)


def _legend_rows(ax, renderer, room: float) -> int:
    """Give ``ax``'s legend one column where two are wider than ``room`` (pixels: the page's
    width; ``--width 3.3``, one column of a paper); its rows."""
    legend = ax.get_legend()
    handles, labels = _entries(legend)
    if legend.get_window_extent(renderer).width > room:
        _under_panel(ax, handles, labels, ncol=1)
        return len(labels)
    return math.ceil(len(labels) / 2)


def _covers_its_axis(ax, renderer) -> bool:
    """Whether ``ax``'s legend, placed 0.16 panel heights under it, covers its x label once
    laid out: a tall legend squeezes its panel, and the offset with it."""
    return ax.get_legend().get_window_extent(renderer).y1 > ax.xaxis.get_tightbbox(renderer).y0


def _legend_under_axis(fig, ax, renderer) -> None:
    """Anchor ``ax``'s legend a fixed distance under its x label, whatever the panel's height."""
    drop = ax.get_window_extent(renderer).y0 - ax.xaxis.get_tightbbox(renderer).y0
    under = offset_copy(ax.transAxes, fig=fig, y=-(drop * 72 / fig.dpi + 4), units="points")
    ax.get_legend().set_bbox_to_anchor((0.5, 0.0), transform=under)
