"""``python scripts/report.py [--results DIR]``: figures and tables for every experiment.

Writes ``DIR/figures/<experiment>.{png,pdf}`` (plus ``<experiment>_equilibrium.*`` where the
Figure-1 diagnostic was logged) and ``DIR/tables/<experiment>.{md,tex}``, and prints each table.
Incomplete sweeps are the normal case: missing seeds, unfinished and diverged runs are counted and
shown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from equinorm.report.collect import collect
from equinorm.report.figures import plot_experiment
from equinorm.report.tables import markdown, write_tables


def write_report(
    results_dir: str | Path,
    out_dir: str | Path | None = None,
    experiments: list[str] | None = None,
    quiet: bool = False,
    diverged: str = "exclude",
) -> list[Path]:
    results_dir = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else results_dir
    results = collect(results_dir)
    chosen = experiments or results.experiments()
    missing = sorted(set(chosen) - set(results.experiments()))
    if missing:
        raise SystemExit(f"no runs of {', '.join(missing)} under {results_dir / 'runs'}")
    written = []
    for experiment in chosen:
        written += plot_experiment(results, experiment, out / "figures", diverged)
        written += write_tables(results, experiment, out / "tables")
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
    args = parser.parse_args(argv)
    if not (Path(args.results) / "runs").is_dir():
        print(
            f"equinorm: no runs under {Path(args.results) / 'runs'}; run `make demo` or "
            "`python -m equinorm.train ...` first",
            file=sys.stderr,
        )
        return 1
    try:
        written = write_report(args.results, args.out, args.experiments, diverged=args.diverged)
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
