"""Tables per experiment (Markdown and LaTeX): per norm, the final test accuracy over seeds (median
and 25%-75%), the paper's number beside it with the difference, the final test loss, the number of
complete / diverged / unfinished seeds, the paired per-seed difference EquiNorm - BatchNorm, and the
setup the runs share (global batch, width; :mod:`equinorm.report.setup`).
"""

from __future__ import annotations

import math
from pathlib import Path

from equinorm.report.collect import Results
from equinorm.report.paper import PAPER, norm_label, norm_sort_key
from equinorm.report.setup import describe
from equinorm.report.stats import finals, paired_difference

HEADER = [
    "Norm",
    "Test acc. (%), ours",
    "Paper",
    "Ours - paper",
    "Test loss, ours",
    "Seeds: complete / diverged / unfinished",
]


def _range(m: float, lo: float, hi: float, digits: int = 2) -> str:
    return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def table_rows(results: Results, experiment: str) -> list[dict]:
    """One dict per (dataset, arch, norm) with the table's cells as strings and the numbers."""
    fin = finals(results.runs[results.runs["experiment"] == experiment])
    paper = PAPER.get(experiment)
    rows = []
    fin = fin.assign(_order=fin["norm"].map(norm_sort_key)).sort_values(
        ["dataset", "arch", "_order"]
    )
    for _, f in fin.iterrows():
        ref = paper.results.get(f["norm"]) if paper else None
        done = f["complete"] > 0
        ours = _range(f["acc_median"], f["acc_q25"], f["acc_q75"]) if done else "no complete run"
        diff = f["acc_median"] - ref.median if (done and ref) else math.nan
        rows.append(
            {
                "dataset": f["dataset"],
                "arch": f["arch"],
                "norm": f["norm"],
                "cells": [
                    norm_label(f["norm"]),
                    ours,
                    ref.text() if ref else "-",
                    f"{diff:+.2f}" if not math.isnan(diff) else "-",
                    _range(f["loss_median"], f["loss_q25"], f["loss_q75"], 3) if done else "-",
                    f"{f['complete']} / {f['diverged']} / {f['unfinished']}",
                ],
                "acc_median": f["acc_median"],
                "acc_q25": f["acc_q25"],
                "acc_q75": f["acc_q75"],
                "paper": ref.median if ref else None,
                "diff": diff,
                "complete": f["complete"],
                "diverged": f["diverged"],
                "unfinished": f["unfinished"],
            }
        )
    return rows


def _paired_text(results: Results, experiment: str) -> list[str]:
    runs = results.runs[results.runs["experiment"] == experiment]
    if not {"equi", "bn"} <= set(runs["norm"]):
        return []
    pairs = paired_difference(runs)
    if pairs.empty:
        return ["Paired difference EquiNorm - BatchNorm: no seed is complete for both."]
    out = []
    for _, p in pairs.iterrows():
        out.append(
            f"Paired difference EquiNorm - BatchNorm ({p['dataset']} / {p['arch']}, same "
            f"seeds): {p['median']:+.2f} ({p['q25']:+.2f} to {p['q75']:+.2f}), "
            f"n = {p['n']}."
        )
    return out


def markdown(results: Results, experiment: str) -> str:
    paper = PAPER.get(experiment)
    lines = [f"# {experiment}", ""]
    if paper:
        lines += [f"Paper: {paper.where}." + (f" {paper.note}." if paper.note else ""), ""]
    lines += [
        "Final test accuracy over seeds: median (25%-75%); paper: median (25%-75%) where reported.",
        "",
    ]
    rows = table_rows(results, experiment)
    combos = sorted({(r["dataset"], r["arch"]) for r in rows})
    runs = results.runs[results.runs["experiment"] == experiment]
    for dataset, arch in combos:
        setup = describe(runs[(runs["dataset"] == dataset) & (runs["arch"] == arch)])
        title = f"{dataset} / {arch}" + (f" ({setup})" if setup else "")
        lines += [f"## {title}" if len(combos) > 1 else title, ""]
        lines.append("| " + " | ".join(HEADER) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 1)) + "|")
        for r in rows:
            if (r["dataset"], r["arch"]) == (dataset, arch):
                lines.append("| " + " | ".join(r["cells"]) + " |")
        lines.append("")
    lines += _paired_text(results, experiment)
    return "\n".join(lines).rstrip() + "\n"


def _tex(text) -> str:
    return str(text).replace("%", r"\%").replace("_", r"\_")


def latex(results: Results, experiment: str) -> str:
    lines = [
        r"\begin{tabular}{lrrrrr}",
        r"\toprule",
        " & ".join(_tex(h) for h in HEADER) + r" \\",
        r"\midrule",
    ]
    for r in table_rows(results, experiment):
        cells = [
            _tex(c).replace("-", "--") if i in (1, 2, 4) else _tex(c)
            for i, c in enumerate(r["cells"])
        ]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    note = " ".join(_paired_text(results, experiment))
    runs = results.runs[results.runs["experiment"] == experiment]
    setup = describe(runs)
    setup = f" Setup: {_tex(setup)}." if setup else ""
    head = f"% {_tex(experiment)}: final test accuracy, median (25\\%--75\\%) over seeds."
    caption = f"{head}{setup} {note}"
    return caption + "\n" + "\n".join(lines) + "\n"


def write_tables(results: Results, experiment: str, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, tex = out_dir / f"{experiment}.md", out_dir / f"{experiment}.tex"
    md.write_text(markdown(results, experiment))
    tex.write_text(latex(results, experiment))
    return [md, tex]


__all__ = ["latex", "markdown", "table_rows", "write_tables"]
