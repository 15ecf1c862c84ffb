"""Tables per experiment (Markdown and LaTeX with booktabs), one section per cell of runs
(dataset, architecture and variant -- the overrides that set it apart from the experiment's own
config). Per norm: the final test accuracy over seeds (median and 25%-75%), the paper's number with
the difference and the verdict (:mod:`equinorm.report.verdict`), the paired difference against
BatchNorm with its bootstrap CI and Wilcoxon p-value, the final test loss, and the seeds complete /
diverged / failed / unfinished / missing of those the experiment's sweep expects
(:mod:`equinorm.report.expected`; a norm it expects without any run gets a row). Each section
names the setup its runs share (:mod:`equinorm.report.setup`) and warns when they came from
different commits.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from equinorm.report.collect import Results
from equinorm.report.expected import expected_seeds
from equinorm.report.paper import PAPER, norm_label, norm_sort_key
from equinorm.report.setup import describe
from equinorm.report.stats import finals, paired_values
from equinorm.report.verdict import overlap, paired

BASELINE = "bn"  # the paper compares every norm with BatchNorm
HEADER = [
    "Norm",
    "Test acc. (%), ours",
    "Paper",
    "Ours - paper",
    "Verdict",
    "Minus BatchNorm, paired: median [95% CI], Wilcoxon p",
    "Test loss, ours",
    "Seeds: complete / diverged / failed / unfinished / missing (expected)",
]
# the LaTeX header is short (its caption line explains it); the Markdown one explains itself
TEX_HEADER = [
    "Norm",
    "Ours (%)",
    "Paper",
    "Ours - paper",
    "Verdict",
    "Minus BN, paired",
    "Test loss",
    "Seeds c/d/f/u/m (exp.)",
]
TEX_NOTE = (
    "median (25%-75%) over seeds; paired: median [95% bootstrap CI], Wilcoxon p over the seeds "
    "complete for both; seeds complete / diverged / failed / unfinished / missing (expected)"
)
COUNTS = ("complete", "diverged", "failed", "unfinished", "missing")


def _range(m: float, lo: float, hi: float, digits: int = 2) -> str:
    return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def cells(runs: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(dataset, arch, variant) of the runs, the experiment's own config first."""
    found = {
        (d, a, v) for d, a, v in zip(runs["dataset"], runs["arch"], runs["variant"], strict=True)
    }
    return sorted(found, key=lambda c: (c[0], c[1], c[2] != "", c[2]))


def cell_title(dataset: str, arch: str, variant: str) -> str:
    return f"{dataset} / {arch}" + (f" / {variant}" if variant else "")


def _seed_counts(f, expected: tuple[int, ...] | None) -> dict:
    seen = set(f["seeds"]) if f is not None else set()
    counts = {k: int(f[k]) if f is not None else 0 for k in COUNTS[:-1]}
    counts["missing"] = len(set(expected) - seen) if expected else 0
    counts["expected"] = len(expected) if expected else None
    return counts


def _counts_text(counts: dict) -> str:
    text = " / ".join(str(counts[k]) for k in COUNTS)
    return text + (f" ({counts['expected']})" if counts["expected"] else "")


def table_rows(results: Results, experiment: str) -> list[dict]:
    """One dict per (dataset, arch, variant, norm) with the cells as strings and the numbers."""
    runs = results.runs[results.runs["experiment"] == experiment]
    fin = finals(runs)
    paper = PAPER.get(experiment)
    expected = expected_seeds(experiment) or {}
    rows = []
    for dataset, arch, variant in cells(runs):
        cell = runs[
            (runs["dataset"] == dataset) & (runs["arch"] == arch) & (runs["variant"] == variant)
        ]
        here = fin[
            (fin["dataset"] == dataset) & (fin["arch"] == arch) & (fin["variant"] == variant)
        ]
        by_norm = {f["norm"]: f for _, f in here.iterrows()}
        norms = set(by_norm) | (set(expected) if variant == "" else set())
        for norm in sorted(norms, key=norm_sort_key):
            f = by_norm.get(norm)
            rows.append(_row(dataset, arch, variant, norm, f, cell, paper, expected.get(norm)))
    return rows


def _row(dataset, arch, variant, norm, f, cell, paper, expected) -> dict:
    paper = None if variant else paper  # a variant is not the paper's setup
    ref = paper.results.get(norm) if paper else None
    done = f is not None and f["complete"] > 0
    ours = {"median": math.nan, "q25": math.nan, "q75": math.nan, "n": 0}
    if done:
        ours = {k: f[f"acc_{k}"] for k in ("median", "q25", "q75")} | {"n": int(f["complete"])}
    diff = ours["median"] - ref.median if (done and ref) else math.nan
    versus = "-"
    if norm != BASELINE and done:
        pair = paired(paired_values(cell, norm, BASELINE))
        ref_bn = paper.results.get(BASELINE) if paper else None
        paper_diff = ref.median - ref_bn.median if (ref and ref_bn) else None
        versus = pair.text(paper_diff) if pair else "no seed complete for both"
    counts = _seed_counts(f, expected)
    if f is None:
        text = "no runs"
    elif done:
        text = _range(ours["median"], ours["q25"], ours["q75"])
    else:
        text = "no complete run"
    return {
        "dataset": dataset,
        "arch": arch,
        "variant": variant,
        "norm": norm,
        "cells": [
            norm_label(norm),
            text,
            ref.text() if ref else "-",
            f"{diff:+.2f}" if not math.isnan(diff) else "-",
            overlap(ours, ref),
            versus,
            _range(f["loss_median"], f["loss_q25"], f["loss_q75"], 3) if done else "-",
            _counts_text(counts),
        ],
        "acc_median": ours["median"],
        "acc_q25": ours["q25"],
        "acc_q75": ours["q75"],
        "paper": ref.median if ref else None,
        "diff": diff,
        **counts,
    }


def commit_note(runs: pd.DataFrame) -> str:
    """'' when the runs came from one commit; else which commits, with their run counts."""
    labels = runs["commit"].fillna("unknown")
    if labels.nunique() <= 1:
        return ""
    counts = labels.value_counts().sort_index()
    listed = ", ".join(f"{label} ({n} run{'s' * (n > 1)})" for label, n in counts.items())
    return f"Warning: these runs come from different commits: {listed}."


def _failures(runs: pd.DataFrame) -> list[str]:
    failed = runs[runs["status"] == "failed"]
    return [
        f"Failed: {norm_label(r['norm'])} seed {r['seed']}: {r['error']}"
        for _, r in failed.sort_values(["norm", "seed"]).iterrows()
    ]


def markdown(results: Results, experiment: str) -> str:
    paper = PAPER.get(experiment)
    runs = results.runs[results.runs["experiment"] == experiment]
    lines = [f"# {experiment}", ""]
    if paper:
        lines += [f"Paper: {paper.where}." + (f" {paper.note}." if paper.note else ""), ""]
    lines += [
        "Final test accuracy over seeds: median (25%-75%); paper: median (25%-75%) where reported.",
        "",
    ]
    rows = table_rows(results, experiment)
    sections = cells(runs)
    for dataset, arch, variant in sections:
        sub = runs[
            (runs["dataset"] == dataset) & (runs["arch"] == arch) & (runs["variant"] == variant)
        ]
        setup = describe(sub)
        title = cell_title(dataset, arch, variant) + (f" ({setup})" if setup else "")
        lines += [f"## {title}" if len(sections) > 1 else title, ""]
        lines.append("| " + " | ".join(HEADER) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 1)) + "|")
        for r in rows:
            if (r["dataset"], r["arch"], r["variant"]) == (dataset, arch, variant):
                lines.append("| " + " | ".join(r["cells"]) + " |")
        lines.append("")
        notes = [commit_note(sub), *_failures(sub)]
        lines += [n for n in notes if n] + ([""] if any(notes) else [])
    return "\n".join(lines).rstrip() + "\n"


_TEX_ESCAPES = {"%": r"\%", "_": r"\_", "&": r"\&", "#": r"\#", "$": r"\$"}


def tex(text) -> str:
    """Plain text as LaTeX: special characters escaped, number ranges with en dashes, minus
    signs in math mode."""
    out = "".join(_TEX_ESCAPES.get(c, c) for c in str(text))
    out = re.sub(r"(?<=[\d%])-(?=\d)", "--", out)  # 96.84-97.04, 25%-75%
    return re.sub(r"(?<![\w.-])-(?=\d)", "$-$", out)  # -0.28


def latex(results: Results, experiment: str) -> str:
    """A booktabs table (``\\usepackage{booktabs}``) with one block per cell of runs."""
    runs = results.runs[results.runs["experiment"] == experiment]
    sections = cells(runs)
    rows = table_rows(results, experiment)
    n = len(HEADER)
    lines = [
        "% " + tex(f"{experiment}: final test accuracy, {TEX_NOTE}."),
        r"\begin{tabular}{l" + "r" * (n - 1) + "}",
        r"\toprule",
        " & ".join(tex(h) for h in TEX_HEADER) + r" \\",
    ]
    for dataset, arch, variant in sections:
        sub = runs[
            (runs["dataset"] == dataset) & (runs["arch"] == arch) & (runs["variant"] == variant)
        ]
        setup = describe(sub)
        title = cell_title(dataset, arch, variant) + (f" ({setup})" if setup else "")
        lines += [r"\midrule", rf"\multicolumn{{{n}}}{{l}}{{\emph{{{tex(title)}}}}} \\"]
        for r in rows:
            if (r["dataset"], r["arch"], r["variant"]) == (dataset, arch, variant):
                lines.append(" & ".join(tex(c) for c in r["cells"]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_tables(results: Results, experiment: str, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, tex_path = out_dir / f"{experiment}.md", out_dir / f"{experiment}.tex"
    md.write_text(markdown(results, experiment))
    tex_path.write_text(latex(results, experiment))
    return [md, tex_path]


__all__ = ["cells", "commit_note", "latex", "markdown", "table_rows", "tex", "write_tables"]
