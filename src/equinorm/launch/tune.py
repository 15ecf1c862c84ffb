"""The tuning protocol (docs/tuning.md): every norm of an experiment at its own learning rate
(or any numeric key), chosen on a validation split, then run with every seed and read on test.

    python -m equinorm.launch.tune experiment=digits_demo            # both stages, then the report
    python -m equinorm.launch.tune experiment=cifar10_wrn_short --plan   # runs and GPU-hours only
    python -m equinorm.launch.tune experiment=X --key optim.weight_decay --grid 1e-4,5e-4,1e-3
    python -m equinorm.launch.tune experiment=X hydra/launcher=submitit_slurm_gpu ...

Stage 1 is one sweep: the experiment's norms x the grid (default: 5 log-spaced points, x1/4 ..
x4 of the experiment's value) x the tuning seeds (default 0,1), with ``dataset.val_size`` images
held out of the training set. Each norm's pick (:mod:`equinorm.report.tuning`: best median final
validation accuracy, ties to the smaller value, a grid-edge pick flagged) goes to
``<results>/runs/<experiment>/tuned.json`` with its evidence. Stage 2 is one sweep per norm: its
pick with every seed of the experiment's sweep on the full training set (a pick equal to the
experiment's value is the experiment's own runs). Both are ordinary sweeps of ``equinorm.train``:
finished runs are skipped, interrupted ones resume, any launcher works (on SLURM the norms' stage-2
sweeps are submitted together). Then the report draws the tuned table and the sensitivity figure.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from equinorm import experiment as experiments
from equinorm.argtypes import number, seeds
from equinorm.errors import ConfigError
from equinorm.experiment.command import composed, describe
from equinorm.experiment.identity import overrides, value_text
from equinorm.launch.reproduce import (
    BENCH_DIR,
    DEFAULT_TFLOPS,
    INTERRUPTED,
    job_seconds,
    measured_images_per_s,
    on_slurm,
    wait_for,
)
from equinorm.report.cli import main as report
from equinorm.report.collect import collect
from equinorm.report.tuning import (
    KEY,
    POINTS,
    SEEDS,
    SPAN,
    VAL_KEY,
    Study,
    pick,
    stage1,
    study_path,
    trainer_command,
    tuning_val_size,
)
from equinorm.train import build


class TuneError(Exception):
    """A request that cannot be tuned: one line, exit 2."""


def canonical(text: str, integer: bool = False) -> str:
    """A grid value as run variants spell it (``4e-4`` -> ``0.0004``; an ``integer`` key's
    ``32``, not ``32.0``, which its type refuses)."""
    try:
        value = float(text)
    except ValueError:
        raise TuneError(f"--grid: {text!r} is not a number") from None
    if not integer:
        return value_text(value)
    if not value.is_integer():
        raise TuneError(f"--grid: {text!r} is not an integer, as the key's values are")
    return value_text(int(value))


def default_grid(own, points: int, span: float) -> list[str]:
    """``points`` log-spaced values from own/span to own*span (5 and 4: x1/4, 1/2, 1, 2, 4);
    an integer key's rounded (at least 1)."""
    if not isinstance(own, int | float) or isinstance(own, bool) or own <= 0:
        raise TuneError(f"the experiment's value {own!r} is not a positive number: give --grid")
    integer = isinstance(own, int)
    if points < 2:
        return [canonical(repr(own), integer)]
    factors = [span ** (2 * i / (points - 1) - 1) for i in range(points)]
    if integer:
        return [canonical(str(max(1, round(own * f))), True) for f in factors]
    return [canonical(f"{own * f:.4g}") for f in factors]


def _without(overrides: list[str], *keys: str) -> list[str]:
    return [o for o in overrides if experiments.override_key(o) not in keys]


def design(args) -> tuple[Study, list[str], list[str], str]:
    """(the study, stage 1's sweep, stage 2's overrides but norm, the results directory)."""
    if args.key == "seed":  # picking the best seed would report its luck
        raise TuneError("--key seed: a seed is not tuned; the seeds of stage 1 are --seeds")
    for override in args.overrides:  # the study sets these two: a value of the user's is refused
        key, value = experiments.override_key(override), override.partition("=")[2]
        if key == args.key:
            raise TuneError(
                f"{override}: the study sets {args.key} (its grid in stage 1, each norm's pick "
                f"in stage 2); give the values as --grid {value}"
            )
        if key == VAL_KEY:
            raise TuneError(f"{override}: the study sets {VAL_KEY}; use --val-size {value}")
    rest = args.overrides
    jobs = experiments.jobs([f"experiment={args.experiment}", *rest])
    if experiments.searches([f"experiment={args.experiment}", *rest]):  # it drew its own jobs
        raise TuneError(
            f"{' '.join(rest)}: a searching sweeper; a study's stage 1 is a grid of its own "
            f"(--grid), and a search is the trainer's: python -m equinorm.train -m "
            f"experiment={args.experiment} hparams_search=optuna_lr norm=<one norm> "
            "dataset.val_size=<images>"
        )
    _one_setting(jobs, args.key)
    first = jobs[0]
    cfg = experiments.compose(first)
    own = OmegaConf.select(cfg, args.key, default=None)
    if own is None:
        raise TuneError(f"--key {args.key}: not a value of the composed config")
    if OmegaConf.is_config(own):  # a group (arch) or a list (schedule.milestones)
        what = "a config group" if OmegaConf.is_dict(own) else f"a list ({value_text(own)})"
        raise TuneError(f"--key {args.key}: {what}, not a number; tune a numeric key")
    integer = isinstance(own, int) and not isinstance(own, bool)
    grid = [canonical(v, integer) for v in args.grid.split(",")] if args.grid else None
    grid = sorted(set(grid or default_grid(own, args.points, args.span)), key=float)
    for value in [] if args.grid else grid:  # values the user did not type: say where they are from
        try:
            build.check(experiments.compose([*first, f"{args.key}={value}"]), devices_here=False)
        except ConfigError as exc:
            raise TuneError(
                f"--key {args.key}: the default grid, {', '.join(grid)} (x1/{args.span:g} .. "
                f"x{args.span:g} around {value_text(own)}), holds a value the trainer refuses "
                f"({exc}); give the values as --grid (or a smaller --span)"
            ) from None
    val_size = args.val_size or tuning_val_size(cfg)
    study = Study(cfg.name, args.key, grid, int(val_size), args.seeds, value_text(own))
    study.chosen = args.experiment
    study.base = dict(cfg.variant)  # what the command's overrides set (each norm's: _items)
    stage1_argv = [
        f"experiment={args.experiment}",
        *_without(rest, "seed"),
        f"{VAL_KEY}={study.val_size}",
        f"{args.key}={','.join(grid)}",
        f"seed={','.join(str(s) for s in args.seeds)}",
    ]
    options = {o for job in experiments.jobs(stage1_argv) for o in job if o.startswith("norm=")}
    norms: dict[str, DictConfig] = {}
    for option in sorted(options):
        c = experiments.compose([*first, option])
        if c.norm.name in norms:  # equi and equi_quarter: one norm, two configs, one pick
            raise TuneError(
                f"{option} is {c.norm.name} too: tune each option of {c.norm.name} in a study of "
                "its own (norm=<option> name=<study>)"
            )
        norms[c.norm.name] = c
    study.norms = sorted(norms)
    _items(study, {n: dict(c.variant) for n, c in norms.items()})
    owns = {n: OmegaConf.select(c, args.key, default=None) for n, c in norms.items()}
    owns = {n: value_text(v) for n, v in owns.items() if v is not None}  # None: stage 1 says it
    if len(set(owns.values())) > 1:  # the study reads one own value: its untuned runs
        each = ", ".join(f"{n} {v}" for n, v in sorted(owns.items()))
        raise TuneError(
            f"--key {args.key}: the norms' own values differ ({each}); tune one norm at a time "
            f"(norm={min(owns)} ...)"
        )
    _not_another(study, cfg.results_dir)
    study.final_seeds = [o for o in rest if experiments.override_key(o) == "seed"]
    return study, stage1_argv, [f"experiment={args.experiment}", *rest], cfg.results_dir


def _items(study: Study, variants: dict[str, dict]) -> None:
    """The study's ``base`` (what the variants of all its norms' runs hold) and each norm's
    ``norm_items`` beyond it: ``norm=equi_quarter`` in digits_demo adds norm.stat_fraction=0.25,
    and its runs were no stage-1 run of a study named after another norm's variant."""
    if not variants:
        return
    common = set.intersection(*(set(v.items()) for v in variants.values()))
    study.base = dict(sorted(common))
    extra = {n: {k: x for k, x in v.items() if (k, x) not in common} for n, v in variants.items()}
    study.norm_items = {n: items for n, items in extra.items() if items}


def _one_setting(jobs: list[list[str]], key: str) -> None:
    """A study picks ``key`` at one setting of every other key: a sweep over another (of the
    command line or the experiment's) trained each value in both stages, and the pick and the
    tuned table read the first job's alone."""
    values: dict[str, set[str]] = {}
    for job in jobs:
        for override in job:
            values.setdefault(experiments.override_key(override), set()).add(override)
    swept = sorted(k for k, v in values.items() if len(v) > 1 and k not in ("norm", "seed"))
    if swept:
        each = ", ".join(sorted(o.partition("=")[2] for o in values[swept[0]]))
        raise TuneError(
            f"{swept[0]} is swept ({each}): a study tunes {key} at one value of every other key; "
            f"run one study per value, each with a name of its own ({swept[0]}=<value> "
            "name=<study>)"
        )


def _not_another(study: Study, results_dir: str) -> None:
    """A study of another design (key, the runs' other overrides, validation split, norms) in the
    same ``tuned.json`` was replaced without a word, and its tuned table with it. The same design
    runs again (to resume it, or with a wider grid or more tuning seeds)."""
    path = study_path(results_dir, study.experiment)
    if not path.is_file():
        return
    try:
        old = Study.read(path)
    except ValueError as exc:
        raise TuneError(f"{exc}: remove it to run this study there") from None
    shown = {
        "key": lambda s: f"--key {s.key}",
        "base": lambda s: ", ".join(overrides(s.base)) or "defaults",
        "val_size": lambda s: f"{s.val_size} validation images",
        "norms": lambda s: f"norm={','.join(s.norms)}",
        "chosen": lambda s: f"experiment={s.chosen}",
        "norm_items": lambda s: (
            ", ".join(f"{n}: {' '.join(overrides(i))}" for n, i in sorted(s.norm_items.items()))
            or "no option's own keys"
        ),
    }
    differ = [
        field
        for field in shown
        if getattr(old, field) != getattr(study, field)
        and not (field == "chosen" and old.chosen is None)  # a study of before 'chosen'
    ]
    if differ:
        theirs, mine = ("; ".join(shown[f](s) for f in differ) for s in (old, study))
        raise TuneError(
            f"{path} holds another study of {study.experiment} ({theirs}; this one: {mine}): "
            f"give this one a name of its own (name={study.experiment}_<study>), or remove that "
            "file to replace it"
        )


def _train(argv: list[str], wait: bool = True):
    cmd = [sys.executable, "-m", "equinorm.train", "-m", *argv]
    print(f"$ {trainer_command(['-m', *argv])}", flush=True)  # as a user would type it again
    proc = subprocess.Popen(cmd)
    return wait_for([proc])[0] if wait else proc


def _unfinished(tuning, missing: list[str], ran: bool = True) -> str:
    """Why stage 1 has no pick yet: runs to resume, or failures to fix first (their error);
    ``ran``: whether this command ran stage 1 (``--stage 2`` does not: stage 1 trains them)."""
    jobs = f"{missing[0]}{', ...' if len(missing) > 1 else ''}"
    again = "run the same command again" if ran else "run stage 1 (--stage 1, or no --stage)"
    failed = tuning[tuning["status"] == "failed"]
    if failed.empty:
        return (
            f"stage 1 has no finished run for {len(missing)} job(s) ({jobs}): {again}"
            f"{' to resume' if ran else ''}"
        )
    error = failed["error"].iloc[0]
    if error.startswith(f"{VAL_KEY}="):
        error += " (--val-size sets it)"
    return (
        f"stage 1 has no finished run for {len(missing)} job(s) ({jobs}); {len(failed)} failed, "
        f"e.g. {error}: fix that, then {again}"
    )


def plan(args) -> str:
    """Runs and estimated GPU-hours of both stages (stage 2 at the experiment's value: each
    norm's pick changes its cost little; a pick equal to it adds no run)."""
    study, argv1, base, _ = design(args)
    measured = measured_images_per_s(BENCH_DIR)
    lines = ["| stage | runs | est. GPU-hours | basis |", "|---|---:|---:|---|"]
    for stage, argv in (("1 (tuning)", argv1), ("2 (final)", base)):
        jobs = experiments.jobs(argv)
        hours, bases = 0.0, set()
        for _, cfg in composed(jobs):
            build.check(cfg, devices_here=False)
            seconds, basis = job_seconds(cfg, measured, args.tflops)
            hours, bases = hours + seconds / 3600, bases | {basis}
        lines.append(f"| {stage} | {len(jobs)} | {hours:,.1f} | {', '.join(sorted(bases))} |")
    grid = ", ".join(study.grid)
    return "\n".join([f"{study.experiment}: {study.key} in {{{grid}}}", *lines])


def run(args) -> int:
    study, argv1, base, results_dir = design(args)
    print(
        f"tune {study.experiment}: {study.key} in {{{', '.join(study.grid)}}}, "
        f"{study.val_size} validation images, tuning seeds {study.seeds}",
        flush=True,
    )
    # a failed job is named by its sweep, the pick below sees what is missing; a command line the
    # trainer refused (its one line said why) leaves no study
    if args.stage in ("1", "all") and _train(argv1) == 2:
        return 2
    tuning = stage1(collect(results_dir).runs, study)
    study.picks, missing = pick(tuning, study)
    path = study_path(results_dir, study.experiment)
    study.write(path)
    for norm, p in study.picks.items():
        edge = " (at the grid's edge: widen the grid)" if p["edge"] else ""
        print(f"{norm}: {study.key}={p['value']}, median val acc {p['median_val_acc']:.2f}{edge}")
    print(f"wrote {path}", flush=True)
    if missing:
        print(f"equinorm: {_unfinished(tuning, missing, args.stage != '2')}", file=sys.stderr)
        return 1
    failed = False
    if args.stage in ("2", "all"):
        argvs = []
        for norm, p in study.picks.items():  # the norm with its option's own keys, at its pick
            at = [f"norm={norm}", *study.option_overrides(norm), f"{study.key}={p['value']}"]
            argvs.append([*_without(base, "norm"), *at])
        if on_slurm(base):  # every norm's array submitted at once
            codes = wait_for([_train(a, wait=False) for a in argvs])
        else:
            codes = [_train(a) for a in argvs]
        failed = any(codes)  # the report still shows what finished; the exit says not all did
        if failed:
            print("equinorm: a stage-2 sweep had failures (see its tally)", file=sys.stderr)
    return report(["--results", results_dir, "--experiment", study.experiment]) or int(failed)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: ``experiment`` (its NAME), ``overrides`` (the others) and the options."""
    parser = argparse.ArgumentParser(
        prog="equinorm-tune",
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s experiment=NAME [hydra overrides...] [options]",
    )
    parser.add_argument("overrides", nargs="*", help="experiment=NAME and Hydra overrides")
    parser.add_argument("--key", default=KEY, help=f"the key tuned ({KEY})")
    parser.add_argument("--grid", help="comma-separated values (default: --points around it)")
    parser.add_argument(
        "--points", type=number(int), default=POINTS, help="default grid: its values"
    )
    parser.add_argument(
        "--span", type=number(float, 1), default=SPAN, help="default grid: x1/span .. xspan"
    )
    given = ",".join(str(s) for s in SEEDS)
    parser.add_argument(
        "--seeds", type=seeds, default=given, help=f"tuning seeds of stage 1 ({given})"
    )
    parser.add_argument(
        "--val-size",
        type=number(int),  # 0 was the default's sentinel: "no split" chose on 10% silently
        default=None,
        help="validation images (default: 10%% of training)",
    )
    parser.add_argument(
        "--config-dir", help="a folder of your own experiments, as the trainer's --config-dir"
    )
    parser.add_argument("--stage", choices=["1", "2", "all"], default="all", help="stages to run")
    parser.add_argument("--plan", action="store_true", help="runs and GPU-hours only")
    parser.add_argument(
        "--tflops", type=number(float), default=DEFAULT_TFLOPS, help="as make plan's"
    )
    args = parser.parse_intermixed_args(argv)
    named = [o for o in args.overrides if o.startswith("experiment=")]
    if len(named) != 1:
        parser.error("give exactly one experiment=NAME")
    args.experiment = named[0].split("=", 1)[1]
    args.overrides = [o for o in args.overrides if o not in named]
    if args.config_dir:  # the trainer's --config-dir, as the override every stage passes on
        if not Path(args.config_dir).is_dir():
            parser.error(f"--config-dir {args.config_dir}: no such directory")
        args.overrides.append(f"hydra.searchpath=[file://{Path(args.config_dir).resolve()}]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        if args.plan:
            print(plan(args))
            return 0
        return run(args)
    except KeyboardInterrupt:  # the sweep said what it kept; this says the study stopped
        print(INTERRUPTED, file=sys.stderr)
        return 130
    except TuneError as exc:
        print(f"equinorm: error: {exc}", file=sys.stderr)
    except (ConfigError, *experiments.COMPOSE_ERRORS) as exc:
        print(f"equinorm: error: {describe(exc)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
