"""Figures and tables for every experiment of a results tree.

``python -m equinorm.report --results DIR`` writes ``DIR/figures/<experiment>.{png,pdf}``
(plus ``<experiment>_equilibrium.*`` where the Figure-1 diagnostic was logged, and
``<experiment>_hparam_<key>.*`` for every key swept, :mod:`equinorm.report.hparams`),
``DIR/tables/<experiment>.{md,tex}`` and
``<experiment>_time_to_target.{md,tex}`` (:mod:`equinorm.report.target`), and prints each table.
An experiment with a tuning study gets its tuned table and sensitivity figure
(:mod:`equinorm.report.tuning`); its tuning runs stay out of the other files. Runs measured
another way (a validation split, a debug run) are in their hparam comparisons only.
Incomplete sweeps are the normal case: missing, failed, unfinished and diverged runs are counted
and shown. Runs of one experiment made by different commits are warned about (stderr and the
table); ``--commit SHA`` keeps only the runs every attempt of which ran that commit clean
(``SHA+dirty``: with uncommitted changes, ``SHA+dirty.5f3a9c1``: with those, by their diff's
hash). A run resumed under other execution settings (threads,
device, ``train.channels_last``, ``train.compile``, ``norm.impl``) is named too: its last digits
differ from an uninterrupted run's.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from equinorm.argtypes import number
from equinorm.report.collect import KEYS, Results, collect
from equinorm.report.figures import WIDTH, plot_experiment
from equinorm.report.hparams import PROTOCOL, write_comparisons
from equinorm.report.output import publish, retire, staging
from equinorm.report.tables import commit_note, markdown, resumed_note, write_tables
from equinorm.report.target import write_time_to_target
from equinorm.report.tuning import markdown as tuned_markdown
from equinorm.report.tuning import read_study, stage1, write_tuning


class ReportError(Exception):
    """A request the report cannot honour: one line, exit 2."""


class NoRuns(Exception):
    """Nothing to draw: one line, exit 1."""


def only_commit(results: Results, commit: str) -> Results:
    """The runs whose every attempt ran ``commit`` (a hash or a prefix of 7+ hex digits; with
    ``+dirty``: the runs of that commit with uncommitted changes, ``+dirty.5f3a9c1`` with those
    changes (their diff's hash, as the tables name it), else only its clean ones)."""
    match = re.fullmatch(r"([0-9a-f]{7,40})(\+dirty(\.[0-9a-f]{1,64})?)?", commit.strip().lower())
    if match is None:
        raise ReportError(
            f"--commit {commit}: give 7 to 40 hex digits of a hash, then +dirty or "
            "+dirty.<diff hash> if you like"
        )
    prefix, dirty = match.group(1), match.group(2) or ""
    labels = results.runs["commit_full"].map(lambda x: x.split(" / ") if isinstance(x, str) else [])
    hashes = {label.split("+")[0] for parts in labels for label in parts} - {"unknown"}
    found = sorted(h for h in hashes if h.startswith(prefix))
    seen = results.runs["commit"].fillna("unknown").value_counts().sort_index()
    listed = ", ".join(f"{c} ({n} run{'s' * (n > 1)})" for c, n in seen.items()) or "none"
    if len(found) != 1:
        what = "is a prefix of " + ", ".join(f[:12] for f in found) if found else "trained no run"
        raise ReportError(f"--commit {commit} {what}; the runs come from: {listed}")
    wanted = found[0] + dirty

    def ran(label: str) -> bool:  # +dirty: with any changes; +dirty.5f3a: with those
        return label.startswith(wanted) if dirty else label == wanted

    keep = results.runs[labels.map(lambda parts: bool(parts) and all(map(ran, parts)))]
    if not len(keep):
        raise ReportError(f"no run ran {wanted} in every attempt; the runs come from: {listed}")
    return subset(results, keep)


def subset(results: Results, keep) -> Results:
    """``results`` with only the runs of ``keep`` (rows of ``results.runs``) and their rows."""
    keep = keep.reset_index(drop=True)

    def rows(frame):  # the history and equilibrium rows of the runs kept
        return frame.merge(keep[KEYS], on=KEYS) if len(frame) else frame

    return Results(keep, rows(results.history), rows(results.equilibrium), results.skipped)


def measured_alike(results: Results, experiment: str) -> Results:
    """``results`` without the experiment's runs measured another way (a validation split held
    out, a debug run: an Optuna search's trials) when it has others: those are reported in their
    own comparisons (:mod:`equinorm.report.hparams`), not as rows of the main figure and tables."""
    runs = results.runs
    mine = runs["experiment"] == experiment
    apart = mine & runs["items"].map(lambda items: bool(set(items) & PROTOCOL))
    return subset(results, runs[~apart]) if (mine & ~apart).any() else results


def write_report(
    results_dir: str | Path,
    out_dir: str | Path | None = None,
    experiments: list[str] | None = None,
    quiet: bool = False,
    diverged: str = "exclude",
    commit: str | None = None,
    overwrite_tracked: bool = False,
    width: float = WIDTH,
    target: float | None = None,
) -> list[Path]:
    results_dir = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else results_dir
    results = collect(results_dir)
    if commit:
        results = only_commit(results, commit)
    chosen = experiments or results.experiments()
    missing = sorted(set(chosen) - set(results.experiments()))
    if missing or not chosen:
        there = ", ".join(sorted(results.experiments())) or "none"
        raise NoRuns(
            f"no runs of {', '.join(missing) or 'any experiment'} under {results_dir}/runs "
            f"(experiments with runs there: {there})"
        )
    written, kept, everything = [], [], results
    for experiment in chosen:
        try:
            study = read_study(results_dir, experiment)
        except ValueError as exc:  # the rest of the experiment's report is still drawn
            print(f"equinorm: {experiment}: no tuned table: {exc}", file=sys.stderr)
            study = None
        results = everything
        if study is not None:  # its tuning runs (validation split) have a report of their own
            tuning = stage1(everything.runs, study)["path"]
            results = subset(everything, everything.runs[~everything.runs["path"].isin(tuning)])
        main = measured_alike(results, experiment)
        with staging(out) as stage:  # the experiment's files land together, each one whole
            staged = plot_experiment(main, experiment, stage / "figures", diverged, width)
            staged += write_tables(main, experiment, stage / "tables")
            staged += write_comparisons(results, experiment, stage, width)
            staged += write_time_to_target(main, experiment, stage / "tables", target)
            if study is not None:
                staged += write_tuning(everything, study, stage, width)
            done, left = publish(stage, staged, out, overwrite_tracked)
        written, kept = written + done, kept + left
        removed = retire(out, experiment, done + left, overwrite_tracked)
        if removed:
            print(
                f"equinorm: {experiment}: removed {len(removed)} file(s) of its previous report "
                f"that these runs no longer give ({', '.join(p.name for p in removed[:3])}"
                f"{', ...' if len(removed) > 3 else ''})",
                file=sys.stderr,
            )
        runs = results.runs[results.runs["experiment"] == experiment]
        shown = (main.runs["experiment"] == experiment).sum()  # the rest: reported apart
        if not any(path.name == f"{experiment}.png" for path in staged):
            why = (
                "none of its runs has a finished epoch (each diverged in its first, or none has "
                "ended one yet)"
                if shown
                else f"its runs so far are its tuning study's ({experiment}_tuned.md, "
                f"{experiment}_sensitivity.png)"
            )
            print(f"equinorm: {experiment}: no figure: {why}", file=sys.stderr)
        apart = len(runs) - shown
        if apart:
            print(
                f"equinorm: {experiment}: {apart} run(s) measured another way "
                f"({' or '.join(sorted(PROTOCOL))} set) are in the hparam comparisons only",
                file=sys.stderr,
            )
        for note in filter(None, [commit_note(runs), *resumed_note(runs)]):
            print(f"equinorm: {experiment}: {note}", file=sys.stderr)
        if not quiet:
            print(markdown(main, experiment))
            if study is not None:
                print(tuned_markdown(everything, study))
    for path in results.skipped:
        print(f"equinorm: skipped {path}", file=sys.stderr)
    if kept:
        print(
            f"equinorm: left {len(kept)} file(s) that git tracks as they were "
            f"({', '.join(str(p) for p in kept[:3])}{', ...' if len(kept) > 3 else ''}): "
            "write elsewhere with --out DIR, or replace them with --overwrite-tracked",
            file=sys.stderr,
        )
    return written


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--results", default=None, help="results directory holding runs/ (default: results)"
    )
    parser.add_argument(  # as equinorm-evaluate takes its runs
        "folder", nargs="?", default=None, metavar="RESULTS", help="the same as --results"
    )
    parser.add_argument(
        "--out", default=None, help="where figures/ and tables/ go (default: the results directory)"
    )
    parser.add_argument(
        "--experiment",
        action="append",
        dest="experiments",
        help="only this experiment (repeatable; default: all)",
    )
    parser.add_argument(
        "--diverged",
        choices=["exclude", "chance"],
        default="exclude",
        help="diverged runs in the per-epoch curves: leave them out from their divergence on "
        "(default) or count them at chance accuracy and loss (the caption says which)",
    )
    parser.add_argument(
        "--width",
        type=number(float, 2, 100),
        default=WIDTH,
        help=f"figure width in inches (default {WIDTH}: a two-column paper's text width; 3.3: "
        "one column, panels stacked; narrower than 2 squeezes them to nothing)",
    )
    parser.add_argument(
        "--overwrite-tracked",
        action="store_true",
        help="replace figures and tables that git tracks (the committed demo artefacts); "
        "without it they are left as they are",
    )
    parser.add_argument(
        "--commit",
        default=None,
        help="only runs trained by this git commit (7+ hex digits of its hash; SHA+dirty: with "
        "uncommitted changes, SHA+dirty.<diff hash>: with those; see each run's provenance.json)",
    )
    parser.add_argument(
        "--target",
        type=number(float, 0, 100),
        default=None,
        help="test accuracy (%%) of the time-to-target tables (default: per cell, BatchNorm's "
        "median final accuracy minus 1)",
    )
    args = parser.parse_args(argv)
    if args.folder and args.results and Path(args.folder) != Path(args.results):
        parser.error(f"{args.folder} and --results {args.results}: give one results directory")
    args.results = args.folder or args.results or "results"
    if not (Path(args.results) / "runs").is_dir():
        results, debug = Path(args.results), Path(args.results) / "debug"  # debug=smoke's
        hint = f"debug=smoke's runs: --results {debug}" if (debug / "runs").is_dir() else None
        if results.name == "runs" and results.is_dir():  # the folder of runs itself
            hint = f"--results is the folder that holds runs/: --results {results.parent}"
        print(
            f"equinorm: no runs under {Path(args.results) / 'runs'}; "
            + (hint or "run `make demo` or `python -m equinorm.train ...` first"),
            file=sys.stderr,
        )
        return 1
    try:
        written = write_report(
            args.results,
            args.out,
            args.experiments,
            diverged=args.diverged,
            commit=args.commit,
            overwrite_tracked=args.overwrite_tracked,
            width=args.width,
            target=args.target,
        )
    except KeyboardInterrupt:
        print("equinorm: report interrupted; every file written so far is whole", file=sys.stderr)
        return 130
    except (ReportError, NoRuns) as exc:
        print(f"equinorm: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ReportError) else 1
    except OSError as exc:  # a read-only or full disk
        print(
            f"equinorm: cannot write {exc.filename or args.out or args.results}: {exc.strerror}; "
            "write the figures and tables elsewhere with --out DIR",
            file=sys.stderr,
        )
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
