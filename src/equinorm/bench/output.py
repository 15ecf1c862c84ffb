"""Benchmark rows on disk and in a figure: every row carries the machine, versions and date.

Rows are written the moment a group of them is measured (the file rewritten atomically, earlier
rows kept with ``append``), so a benchmark stopped at any point -- a GPU lease running out --
leaves every row it finished.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from equinorm import atomic
from equinorm.bench.env import environment


def read_rows(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def write_rows(path: Path, device: torch.device, rows: list[dict], append: bool = False) -> Path:
    """Write ``rows`` (each with the machine's description) to the CSV ``path``; with ``append``
    after the rows already there."""
    env = environment(device) | {"device_type": device.type}
    rows = [env | row for row in rows]
    if append:
        rows = read_rows(path) + rows
    fields = list(dict.fromkeys(k for row in rows for k in row))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _compiled(row: dict) -> bool:
    return str(row["compile"]).lower() in ("true", "1")


def label(row: dict) -> str:
    """``equi``, ``equi (reference)``, ``bn``: a norm and its implementation where it has two."""
    impl = row.get("impl") or ""
    return row["norm"] + (f" ({impl})" if impl and impl != "fused" else "")


def plot(rows: list[dict], title: str, path: Path) -> Path:
    """Step time relative to BatchNorm per arch and norm, a panel per eager / compiled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = list(dict.fromkeys(r["arch"] for r in rows))
    modes = list(dict.fromkeys(_compiled(r) for r in rows))
    fig, axes = plt.subplots(
        len(modes), 1, figsize=(max(6.0, 1.8 + 1.9 * len(archs)), 3.8 * len(modes)), squeeze=False
    )
    for ax, mode in zip(axes[:, 0], modes, strict=True):
        panel = [r for r in rows if _compiled(r) == mode]  # its own archs and norms: no empty slot
        keys = (r["arch"] for r in panel), (label(r) for r in panel)
        _panel(ax, panel, *(list(dict.fromkeys(k)) for k in keys))
        ax.set_xlim(-0.5, len(archs) - 0.5)  # each slot as wide as in the fullest panel
        ax.set_title(f"{title}, {'torch.compile' if mode else 'eager'}", fontsize=9, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def _panel(ax, rows: list[dict], archs: list[str], labels: list[str]) -> None:
    from equinorm.report.paper import norm_color, norm_label

    width = 0.8 / len(labels)
    top = 1.0
    for i, name in enumerate(labels):
        xs, ys, texts = [], [], []
        for j, arch in enumerate(archs):
            r = next((r for r in rows if r["arch"] == arch and label(r) == name), None)
            ratio = _number(r["ratio_to_bn"]) if r else None
            if ratio is not None:
                xs.append(j + (i - (len(labels) - 1) / 2) * width)
                ys.append(ratio)
                texts.append(f"{ratio:.2f}")
                top = max(top, ratio)
        norm, _, impl = name.partition(" ")
        bars = ax.bar(
            xs,
            ys,
            width,
            color=norm_color(norm),
            hatch="//" if impl else None,
            edgecolor="white" if impl else None,
            label=norm_label(norm) + (f" {impl}" if impl else ""),
        )
        ax.bar_label(bars, texts, fontsize=6, rotation=90, padding=2)
    ax.axhline(1.0, color="0.3", lw=0.8)
    ax.set_xticks(range(len(archs)))
    widths = {r["arch"]: r["width_mult"] for r in rows}
    ax.set_xticklabels([f"{a}\n(width x{widths.get(a, '?')})" for a in archs], fontsize=8)
    ax.set_ylabel("training-step time / BatchNorm's")
    ax.legend(fontsize=7, ncol=3, frameon=False, loc="upper left")
    ax.set_ylim(0, top * 1.3)
