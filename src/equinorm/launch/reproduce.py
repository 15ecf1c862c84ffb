"""The ``make reproduce-*`` targets: which experiments each runs, how they are launched, what they
cost.

    python scripts/reproduce.py cifar10                 # the sweeps (resumable), then the report
    python scripts/reproduce.py svhn --nproc 2          # each job under torchrun on 2 GPUs
    python scripts/reproduce.py all --plan              # runs and estimated GPU-hours, no training
    python scripts/reproduce.py short -- hydra/launcher=submitit_slurm_gpu \
        hydra.launcher.partition=gpu
    python scripts/reproduce.py all --detach -- hydra/launcher=submitit_slurm_cpu  # submit, return

Re-running a target skips finished runs and resumes interrupted ones (each run's own logic). On
SLURM every experiment's array is submitted at once and ``--nproc`` means tasks per job.
GPU-hours come from measured training throughput in ``results/bench/*.csv`` where a GPU benchmark
exists for the architecture, else from forward MACs at an assumed sustained rate (``--tflops``;
the default, 175 TFLOP/s, is what the paper's WRN at 20k images/s on an H100 implies).
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from equinorm import experiment as experiments
from equinorm.argtypes import number
from equinorm.data import dataset_info
from equinorm.data.loaders import source_of
from equinorm.errors import ConfigError
from equinorm.experiment.checks import options
from equinorm.experiment.command import composed, describe, preflight
from equinorm.report.cli import main as report
from equinorm.report.tuning import KEY, POINTS, SEEDS, VAL_KEY, tuning_val_size
from equinorm.run.provenance import SOURCE  # the checkout's root
from equinorm.train import build
from equinorm.train.cpus import cpu_budget

TARGETS: dict[str, list[str]] = {
    "cifar10": ["cifar10_wrn_overfit", "cifar10_wrn_quarter", "cifar10_preresnet152_mixup"],
    "cifar100": ["cifar100_preresnet152_mixup"],
    "svhn": ["svhn_wrn_mixup"],
    "imagenet": ["imagenet_resnet50"],
    "short": ["cifar10_wrn_short"],
}
TARGETS["all"] = [
    e for t in ("cifar10", "cifar100", "svhn", "imagenet", "short") for e in TARGETS[t]
]
DEFAULT_TFLOPS = 175.0  # = WRN (1.46 GMACs/image, x6 for a training step) at 20k images/s
# where scripts/bench.py writes its rows: the checkout's results/bench, whatever the working
# directory (an installed wheel has none: every estimate is then from MACs)
BENCH_DIR = SOURCE / "results" / "bench"


def sweep_jobs(experiment: str, overrides: list[str] = ()) -> list[list[str]]:
    """The overrides of each job of the experiment's sweep (``-m experiment=<name> <overrides>``:
    its hydra.sweeper.params with the command line's values replacing or adding to them)."""
    return experiments.jobs([f"experiment={experiment}", *overrides])


@functools.cache
def _macs(arch: str, classes: int, size: int, options: tuple) -> int:
    from equinorm.models.complexity import forward_macs

    return forward_macs(arch, "bn", classes, size, **dict(options))


def measured_images_per_s(bench_dir: Path) -> dict[tuple[str, str, int], float]:
    """Training images/s per (arch, norm, input size) from GPU rows of results/bench/*.csv (full
    width; the default implementation, eager: what a run does unless told otherwise). The input
    size is part of the key: a network's cost grows with its pixels (ResNet-50 on 32x32 CIFAR
    images is ~50x cheaper than on 224x224 ImageNet crops)."""
    out: dict[tuple[str, str, int], float] = {}
    for path in sorted(Path(bench_dir).glob("*.csv")):
        frame = pd.read_csv(path)
        if not {"arch", "norm", "input_size", "images_per_s", "device_type"} <= set(frame.columns):
            continue
        gpu = frame[(frame["device_type"] == "cuda") & (frame.get("width_mult", 1.0) == 1.0)]
        if "impl" in gpu.columns:
            gpu = gpu[gpu["impl"].fillna("").isin(["", "fused"])]
        if "compile" in gpu.columns:
            gpu = gpu[~gpu["compile"].astype(str).str.lower().isin(["true", "1"])]
        for _, row in gpu.iterrows():
            out[(row["arch"], row["norm"], int(row["input_size"]))] = float(row["images_per_s"])
    return out


@dataclass
class PlanRow:
    experiment: str
    jobs: int
    epochs: tuple[int, ...]  # each distinct value, sorted
    gpu_hours: float
    basis: tuple[str, ...]  # "MACs" and/or "measured"
    tune_jobs: int = 0  # the tuned comparison (launch/tune.py, default grid and seeds): stage 1
    tune_hours: float = 0.0


def tuning_runs(groups: int) -> int:
    """Stage-1 runs of the tuned comparison of ``groups`` (norm, variant) groups."""
    return groups * POINTS * len(SEEDS)


def job_seconds(
    cfg, measured: dict, tflops: float, val_size: int | None = None
) -> tuple[float, str]:
    """Training seconds of one composed job and what the estimate rests on: measured images/s
    (GPU rows at full width and the dataset's image size), else forward MACs at the job's width,
    classes and resolution. Each epoch trains on the training set less the validation split
    (``val_size``, default the config's) and evaluates the split and the test set."""
    info = dataset_info(cfg.dataset.name)
    held_out = cfg.dataset.val_size if val_size is None else val_size
    trained = source_of(cfg.dataset).train_size - held_out  # as its options leave it
    evaluated = info.test_size + held_out
    arch = {"in_channels": info.channels, **options(cfg, "arch")}
    key = (cfg.arch.name, cfg.norm.name, info.image_size)
    ips = measured.get(key) if arch.get("width_mult", 1.0) == 1 else None
    if ips:
        return cfg.epochs * (trained + evaluated / 3) / ips, "measured"
    macs = _macs(cfg.arch.name, info.num_classes, info.image_size, tuple(sorted(arch.items())))
    flops = 2 * macs * (3 * trained + evaluated)  # backward: twice the forward
    return cfg.epochs * flops / (tflops * 1e12), "MACs"


def plan(
    target: str,
    overrides: list[str] = (),
    tflops: float = DEFAULT_TFLOPS,
    bench_dir: Path = BENCH_DIR,
) -> list[PlanRow]:
    """Per experiment of ``target``: exactly the jobs ``make reproduce-<target> ARGS=...`` would
    launch, each composed and checked as the trainer checks it (a bad override raises)."""
    measured = measured_images_per_s(bench_dir)
    rows = []
    for experiment in TARGETS[target]:
        jobs = sweep_jobs(experiment, overrides)
        hours, bases, epochs, groups = 0.0, set(), set(), {}
        for job, cfg in composed(jobs):  # a job's seed changes nothing here: composed once
            build.check(cfg, devices_here=False)
            seconds, basis = job_seconds(cfg, measured, tflops)
            hours, epochs, bases = hours + seconds / 3600, epochs | {cfg.epochs}, bases | {basis}
            split = tuning_val_size(cfg)  # stage 1 trains on the rest, at the experiment's value
            tuned = job_seconds(cfg, measured, tflops, split)[0]
            group = (o for o in job if o.split("=", 1)[0] not in ("seed", KEY, VAL_KEY))
            groups[tuple(group)] = tuned / 3600  # those the tuning sets: not its groups
        tuning = tuning_runs(len(groups))  # each group (norm, variant) over grid x tuning seeds
        tune_hours = sum(groups.values()) * tuning / max(len(groups), 1)
        runs = len(jobs)
        if not experiments.enumerates(cfg.hydra.sweeper):  # a search: its trials, each costing
            runs = _trials(cfg.hydra.sweeper)  # what its listed values cost on average
            hours, tuning, tune_hours = hours * runs / len(jobs), 0, 0.0
        row = PlanRow(experiment, runs, tuple(sorted(epochs)), hours, tuple(sorted(bases)))
        row.tune_jobs, row.tune_hours = tuning, tune_hours
        rows.append(row)
    return rows


def _trials(sweeper) -> int:
    """The jobs a searching sweeper launches: Optuna's ``n_trials``."""
    if sweeper.get("n_trials") is None:
        raise ConfigError(
            f"the plan counts grid sweeps and Optuna's hydra.sweeper.n_trials; "
            f"{sweeper.get('_target_')} sets no count it can read"
        )
    return int(sweeper.n_trials)


def plan_markdown(
    targets: list[str],
    tflops: float = DEFAULT_TFLOPS,
    bench_dir: Path = BENCH_DIR,
    overrides: list[str] = (),
) -> str:
    """The plan table of ``targets`` under the Hydra ``overrides`` (e.g. ``seed=0,1,2``,
    ``epochs=30``) -- what ``make plan ARGS=...`` prints and the README shows."""
    lines = [
        "| target | experiments | runs | epochs per run | est. GPU-hours | basis | tuning, "
        "stage 1: + runs, + GPU-hours |",
        "|---|---|---:|---|---:|---|---:|",
    ]
    for target in targets:
        rows = plan(target, list(overrides), tflops=tflops, bench_dir=bench_dir)
        lines.append(
            f"| `make reproduce-{target}` | {', '.join(r.experiment for r in rows)} | "
            f"{sum(r.jobs for r in rows)} | {', '.join(str(e) for r in rows for e in r.epochs)} | "
            f"{sum(r.gpu_hours for r in rows):,.1f} | "
            f"{', '.join(sorted({b for r in rows for b in r.basis}))} | "
            f"{sum(r.tune_jobs for r in rows)}, {sum(r.tune_hours for r in rows):,.1f} |"
        )
    return "\n".join(lines)


def torchrun_env(nproc: int) -> dict[str, str]:
    """The environment of a job's torchrun: where OMP_NUM_THREADS is unset, each of its ``nproc``
    processes gets its share of the CPUs this process may use (:mod:`equinorm.train.cpus`).
    Left unset, torchrun sets it to 1 in every process (its banner says so), which the trainer
    takes as said: 1 thread each, whatever the machine has."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, cpu_budget() // nproc)))
    return env


def wait_for(procs: list[subprocess.Popen]) -> list[int]:
    """Each child's exit code, once every one has ended. A Ctrl-C reaches the children too (the
    terminal signals its whole process group): each trainer stops after its step and writes its
    checkpoint, so the KeyboardInterrupt is raised only once they have ended --
    ``subprocess.call`` SIGKILLed its child 0.25 s after a Ctrl-C, losing the epoch's progress.
    A second Ctrl-C kills them at once (as it stops a trainer at once)."""
    interrupted = False
    for proc in procs:
        while proc.poll() is None:
            try:
                proc.wait()
            except KeyboardInterrupt:
                if interrupted:
                    for other in procs:
                        other.kill()
                interrupted = True
    if interrupted:
        raise KeyboardInterrupt
    return [proc.returncode for proc in procs]


INTERRUPTED = (
    "equinorm: interrupted (Ctrl-C): run the same command again to go on (finished runs are "
    "skipped, stopped ones resume)"
)


def on_slurm(overrides: list[str]) -> bool:
    return any(o.split("=", 1)[0] == "hydra/launcher" and "slurm" in o for o in overrides)


def cluster_overrides(overrides: list[str], nproc: int) -> list[str]:
    """On SLURM, ``--nproc N`` is N tasks per job (DDP through submitit), each with its GPU on a
    GPU launcher -- not a local torchrun."""
    if nproc <= 1:
        return []
    extra = [f"hydra.launcher.tasks_per_node={nproc}"]
    cpu_only = any(o.endswith("submitit_slurm_cpu") for o in overrides)
    if not cpu_only and not any(o.startswith("hydra.launcher.gpus_per_node=") for o in overrides):
        extra.append(f"hydra.launcher.gpus_per_node={nproc}")
    return extra


def _checked(target: str, overrides: list[str]) -> bool:
    """Whether every job of every experiment of ``target`` passes the trainer's checks; else
    one line for the first that does not."""
    named = [o for o in overrides if experiments.override_key(o) == "name"]
    if named:  # the report reads each experiment's runs under its own name
        print(
            f"equinorm: error: {named[0]}: a target's runs keep their experiments' names, where "
            "its report reads them; for a tree of their own give results_dir=DIR (make: RESULTS=)",
            file=sys.stderr,
        )
        return False
    for experiment in TARGETS[target]:
        argv = ["-m", f"experiment={experiment}", *overrides]
        problem = preflight(argv, lambda cfg: build.check(cfg, job=True))
        if problem:
            print(f"equinorm: error: experiment={experiment}: {problem}", file=sys.stderr)
            return False
    return True


def _launch_cluster(target: str, overrides: list[str], nproc, results_dir, detach) -> int:
    """Submit every experiment of ``target`` at once (one job array each, finished runs left
    out), then wait for them and draw the report -- or, with ``detach``, return as soon as all
    are checked and their launchers started: each keeps waiting for its array in the background
    (log: ``<results>/sweeps/<time>-<experiment>.log``), the jobs run whether it does or not."""
    overrides = [*overrides, *cluster_overrides(overrides, nproc)]
    jobs = [["-m", f"experiment={e}", *overrides] for e in TARGETS[target]]
    if not _checked(target, overrides):  # against the partition too, before any submission
        return 2
    results_dir = results_dir or _results_dir(target, overrides)
    logs = Path(results_dir) / "sweeps"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    procs = []
    for experiment, argv in zip(TARGETS[target], jobs, strict=True):
        log_path = logs / f"{stamp}-{experiment}.log"
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "equinorm.train", *argv],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=detach,  # outlives this process and the terminal
            )
        procs.append((experiment, proc, log_path))
        print(f"{experiment}: submitting (log: {log_path})", flush=True)
    if detach:
        print(
            "the jobs run on the cluster; `squeue --me` shows them, each log ends with its "
            f"sweep's tally, and `make figures RESULTS={results_dir}` draws the report "
            "(of what has finished) at any time",
            flush=True,
        )
        return 0
    codes = wait_for([proc for _, proc, _ in procs])
    failed = [e for (e, _, _), code in zip(procs, codes, strict=True) if code != 0]
    for _, _, log_path in procs:
        tally = [line for line in log_path.read_text().splitlines() if line.startswith("sweep of")]
        print(f"{log_path.name}: {tally[-1] if tally else 'no tally (see the log)'}")
    code = _report(target, results_dir)
    if failed:
        print(f"equinorm: {len(failed)} failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return code


def _results_dir(target: str, overrides: list[str]) -> str:
    """Where the target's jobs write their runs -- ``results_dir`` as its first job composes it
    (``--results`` or a ``results_dir=`` of the overrides) -- and so where its report reads."""
    first = sweep_jobs(TARGETS[target][0], overrides)[0]
    return str(experiments.compose(first).results_dir)


def _report(target: str, results_dir: str) -> int:
    args = ["--results", results_dir]
    for experiment in TARGETS[target]:
        args += ["--experiment", experiment]
    return report(args)  # 1 (one line) when an experiment has no run yet


def launch(
    target: str,
    overrides: list[str],
    nproc: int = 1,
    results_dir: str | None = None,
    detach: bool = False,
) -> int:
    """Run every experiment of ``target`` (skipping finished runs), then the report of
    ``results_dir`` (default: where the jobs write). A failing job or experiment does not stop
    the others; the exit code is 1 if any failed. On SLURM
    (``hydra/launcher=submitit_slurm_*``): every experiment submitted at once, ``nproc`` tasks per
    job, and with ``detach`` no waiting (:func:`_launch_cluster`)."""
    if on_slurm(overrides):
        return _launch_cluster(target, overrides, nproc, results_dir, detach)
    if not _checked(target, overrides):  # none launched: not the first experiments only
        return 2
    results_dir = results_dir or _results_dir(target, overrides)
    searched = nproc > 1 and [  # one torchrun per job spells out a grid; a search draws its own
        e for e in TARGETS[target] if experiments.searches([f"experiment={e}", *overrides])
    ]
    if searched:
        print(
            f"equinorm: error: {searched[0]} is a search (a searching sweeper) and --nproc "
            f"{nproc} runs each job under its own torchrun: run it on SLURM "
            "(hydra/launcher=submitit_slurm_gpu: --nproc tasks per trial) or without --nproc",
            file=sys.stderr,
        )
        return 2
    base = [sys.executable, "-m", "equinorm.train"]
    failed = []
    for experiment in TARGETS[target]:
        if nproc <= 1:
            cmd = [*base, "-m", f"experiment={experiment}", *overrides]
            if wait_for([subprocess.Popen(cmd)]) != [0]:
                failed.append(experiment)
            continue
        torchrun = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "equinorm.train",
        ]
        env = torchrun_env(nproc)
        for job in sweep_jobs(experiment, overrides):  # every job spelt out, one torchrun each
            if wait_for([subprocess.Popen([*torchrun, *job], env=env)]) != [0]:
                failed.append(f"{experiment} {' '.join(job)}")
    code = _report(target, results_dir)
    if failed:
        print(f"equinorm: {len(failed)} failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s TARGET [options] [-- hydra overrides...]",
    )
    parser.add_argument("target", choices=list(TARGETS))
    parser.add_argument(
        "--nproc",
        type=number(int),
        default=1,
        help="GPUs per job (torchrun; on SLURM: tasks per job)",
    )
    parser.add_argument(
        "--detach",
        action="store_true",
        help="on SLURM: return once every experiment is submitted (the report: make figures)",
    )
    parser.add_argument("--plan", action="store_true", help="print runs and GPU-hours only")
    parser.add_argument(
        "--tflops",
        type=number(float),
        default=DEFAULT_TFLOPS,
        help="assumed sustained TFLOP/s where nothing was measured",
    )
    parser.add_argument(
        "--results",
        default="results",
        help="where the runs go and the report reads (default: results, or a results_dir= of "
        "the overrides)",
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    overrides = argv[split + 1 :]  # Hydra overrides for every job
    if args.plan:
        targets = list(TARGETS) if args.target == "all" else [args.target]
        try:
            table = plan_markdown(
                [t for t in targets if t != "all"], args.tflops, overrides=overrides
            )
        except (ConfigError, *experiments.COMPOSE_ERRORS) as exc:
            print(f"equinorm: error: {describe(exc)}", file=sys.stderr)
            return 2
        print(table)
        return 0
    if args.detach and not on_slurm(overrides):  # the sweeps would run here all the same
        parser.error(
            "--detach (DETACH=1) returns once a SLURM launcher has submitted the jobs; without "
            "one (hydra/launcher=submitit_slurm_*) they run in this process: use nohup or tmux"
        )
    if args.results != "results":
        overrides.append(f"results_dir={args.results}")
    try:
        return launch(args.target, overrides, args.nproc, detach=args.detach)
    except KeyboardInterrupt:  # the jobs said what they kept; this says the whole stopped
        print(INTERRUPTED, file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
