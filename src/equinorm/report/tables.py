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
from equinorm.report.stats import cells, finals, in_cell, paired_values
from equinorm.report.verdict import EXPLAINED, overlap, paired

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


def _number(value: float, digits: int) -> str:
    """Fixed point; from 1e5 on (a test loss blown up by bad running statistics) exponent form."""
    return f"{value:.{digits}{'e' if abs(value) >= 1e5 else 'f'}}"


def _range(m: float, lo: float, hi: float, digits: int = 2) -> str:
    return f"{_number(m, digits)} ({_number(lo, digits)}-{_number(hi, digits)})"


def _loss(f) -> str:
    """The test loss over complete runs, saying how many of them it leaves out as not finite
    (a network that overflows in evaluation mode only)."""
    left_out = int(f["complete"]) - int(f["loss_n"])
    if not f["loss_n"]:
        return "not finite"
    text = _range(f["loss_median"], f["loss_q25"], f["loss_q75"], 3)
    return text + (f"; {left_out} not finite" if left_out else "")


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
        cell = in_cell(runs, (dataset, arch, variant))
        by_norm = {f["norm"]: f for _, f in in_cell(fin, (dataset, arch, variant)).iterrows()}
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
            _loss(f) if done else "-",
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
    return (
        f"Warning: these runs come from different commits: {listed} "
        "(equinorm-report --commit with one of these labels keeps its runs)."
    )


def resumed_note(runs: pd.DataFrame) -> list[str]:
    """One line per run resumed under other execution settings than it started with."""
    changed = runs[runs["resumed_under"].fillna("") != ""]
    return [
        f"Note: {norm_label(r['norm'])} seed {r['seed']} was resumed with {r['resumed_under']}: "
        "its last digits differ from an uninterrupted run's."
        for _, r in changed.sort_values(["norm", "seed"]).iterrows()
    ]


def _failures(runs: pd.DataFrame) -> list[str]:
    """A line per failed run (its error) and per run whose history could not be read."""
    failed = runs[runs["status"] == "failed"]
    unread = runs[runs["unread"].fillna("") != ""]
    return [
        *(
            f"Failed: {norm_label(r['norm'])} seed {r['seed']}: {r['error']}"
            for _, r in failed.sort_values(["norm", "seed"]).iterrows()
        ),
        *(
            f"Unreadable: {norm_label(r['norm'])} seed {r['seed']}: {r['unread']} "
            "(counted in the table, left out of the curves)"
            for _, r in unread.sort_values(["norm", "seed"]).iterrows()
        ),
    ]


def _sections(results: Results, experiment: str):
    """(title with the setup, the cell's runs, its table rows) per cell of the experiment."""
    runs = results.runs[results.runs["experiment"] == experiment]
    rows = table_rows(results, experiment)
    for cell in cells(runs):
        sub = in_cell(runs, cell)
        setup = describe(sub)
        title = cell_title(*cell) + (f" ({setup})" if setup else "")
        mine = [r["cells"] for r in rows if (r["dataset"], r["arch"], r["variant"]) == cell]
        yield title, sub, mine


def markdown_table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> list[str]:
    """A Markdown table, its first ``text_columns`` left-aligned, the numbers right-aligned."""
    align = "|".join(["---"] * text_columns + ["---:"] * (len(header) - text_columns))
    return [f"| {' | '.join(header)} |", f"|{align}|", *(f"| {' | '.join(r)} |" for r in rows)]


def markdown(results: Results, experiment: str) -> str:
    paper = PAPER.get(experiment)
    lines = [f"# {experiment}", ""]
    if paper:
        lines += [f"Paper: {paper.where}." + (f" {paper.note}." if paper.note else ""), ""]
    lines += [
        "Final test accuracy over seeds: median (25%-75%); paper: median (25%-75%) where reported.",
        EXPLAINED,
        "",
    ]
    sections = list(_sections(results, experiment))
    for title, sub, rows in sections:
        lines += [f"## {title}" if len(sections) > 1 else title, ""]
        lines += [*markdown_table(HEADER, rows), ""]
        notes = [commit_note(sub), *resumed_note(sub), *_failures(sub)]
        lines += [n for n in notes if n] + ([""] if any(notes) else [])
    return "\n".join(lines).rstrip() + "\n"


_TEX_ESCAPES = {"%": r"\%", "_": r"\_", "&": r"\&", "#": r"\#", "$": r"\$"}


def tex(text) -> str:
    """Plain text as LaTeX: special characters escaped, number ranges with en dashes, minus
    signs in math mode."""
    out = "".join(_TEX_ESCAPES.get(c, c) for c in str(text))
    out = re.sub(r"(?<=[\d%])-(?=\d)", "--", out)  # 96.84-97.04, 25%-75%
    return re.sub(r"(?<![\w.-])-(?=\d)", "$-$", out)  # -0.28


def tex_table(
    comment: str,
    header: list[str],
    blocks: list[tuple[str | None, list[list[str]]]],
    text_columns=1,
) -> str:
    """A booktabs tabular (``\\usepackage{booktabs}``) headed by a ``%`` comment: one block of
    rows per (title or None, rows), a title spanning the columns."""
    n = len(header)
    lines = [
        f"% {tex(comment)}",
        rf"\begin{{tabular}}{{{'l' * text_columns}{'r' * (n - text_columns)}}}",
        r"\toprule",
        " & ".join(tex(h) for h in header) + r" \\",
    ]
    for title, rows in blocks:
        lines.append(r"\midrule")
        if title is not None:
            lines.append(rf"\multicolumn{{{n}}}{{l}}{{\emph{{{tex(title)}}}}} \\")
        lines += [" & ".join(tex(c) for c in r) + r" \\" for r in rows]
    return "\n".join([*lines, r"\bottomrule", r"\end{tabular}"]) + "\n"


def latex(results: Results, experiment: str) -> str:
    """The experiment's table in LaTeX, one block per cell of runs."""
    blocks = [(title, rows) for title, _, rows in _sections(results, experiment)]
    note = f"{experiment}: final test accuracy, {TEX_NOTE}. {EXPLAINED}"
    return tex_table(note, TEX_HEADER, blocks)


def write_tables(results: Results, experiment: str, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, tex_path = out_dir / f"{experiment}.md", out_dir / f"{experiment}.tex"
    md.write_text(markdown(results, experiment))
    tex_path.write_text(latex(results, experiment))
    return [md, tex_path]


__all__ = [
    "commit_note",
    "latex",
    "markdown",
    "markdown_table",
    "resumed_note",
    "table_rows",
    "tex",
    "tex_table",
    "write_tables",
]
