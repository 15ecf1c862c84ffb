"""``python scripts/report.py [--results DIR]``: figures and tables for every experiment.

Writes ``DIR/figures/<experiment>.{png,pdf}`` (plus ``<experiment>_equilibrium.*`` where the
Figure-1 diagnostic was logged, and ``<experiment>_hparam_<key>.*`` for every key swept,
:mod:`equinorm.report.hparams`) and ``DIR/tables/<experiment>.{md,tex}``, and prints each table.
Incomplete sweeps are the normal case: missing, failed, unfinished and diverged runs are counted
and shown. Runs of one experiment made by different commits are warned about (stderr and the
table); ``--commit SHA`` keeps only the runs every attempt of which ran that commit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from equinorm.report.collect import KEYS, Results, collect
from equinorm.report.figures import plot_experiment
from equinorm.report.hparams import write_comparisons
from equinorm.report.tables import commit_note, markdown, write_tables


def only_commit(results: Results, commit: str) -> Results:
    """The runs whose every attempt ran ``commit`` (a hash prefix; clean or ``+dirty``)."""
    prefix = commit[:7]

    def ran(label) -> bool:
        parts = label.split(" / ") if isinstance(label, str) else []
        return bool(parts) and all(p.split("+")[0].startswith(prefix) for p in parts)

    keep = results.runs[results.runs["commit"].map(ran)].reset_index(drop=True)

    def rows(frame):  # the history and equilibrium rows of the runs kept
        return frame.merge(keep[KEYS], on=KEYS) if len(frame) else frame

    return Results(keep, rows(results.history), rows(results.equilibrium))


def write_report(
    results_dir: str | Path,
    out_dir: str | Path | None = None,
    experiments: list[str] | None = None,
    quiet: bool = False,
    diverged: str = "exclude",
    commit: str | None = None,
) -> list[Path]:
    results_dir = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else results_dir
    results = collect(results_dir)
    if commit:
        results = only_commit(results, commit)
    chosen = experiments or results.experiments()
    missing = sorted(set(chosen) - set(results.experiments()))
    if missing:
        raise SystemExit(f"no runs of {', '.join(missing)} under {results_dir / 'runs'}")
    written = []
    for experiment in chosen:
        written += plot_experiment(results, experiment, out / "figures", diverged)
        written += write_tables(results, experiment, out / "tables")
        written += write_comparisons(results, experiment, out)
        note = commit_note(results.runs[results.runs["experiment"] == experiment])
        if note:
            print(f"equinorm: {experiment}: {note} (--commit SHA keeps one)", file=sys.stderr)
        if not quiet:
            print(markdown(results, experiment))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results", default="results", help="results directory holding runs/ (default: results)"
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
        "--commit",
        default=None,
        help="only runs trained by this git commit (a hash prefix of 7+ characters; see each "
        "run's provenance.json)",
    )
    args = parser.parse_args(argv)
    if not (Path(args.results) / "runs").is_dir():
        print(
            f"equinorm: no runs under {Path(args.results) / 'runs'}; run `make demo` or "
            "`python -m equinorm.train ...` first",
            file=sys.stderr,
        )
        return 1
    try:
        written = write_report(
            args.results, args.out, args.experiments, diverged=args.diverged, commit=args.commit
        )
    except OSError as exc:  # a read-only or full disk
        print(
            f"equinorm: cannot write {exc.filename or args.out or args.results}: {exc.strerror}; "
            "write the figures and tables elsewhere with --out DIR",
            file=sys.stderr,
        )
        return 1
    if not written:
        print(f"equinorm: no runs under {Path(args.results) / 'runs'}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
