"""``make gpu-check``: what a GPU owner must know about this suite, most important first, inside a
time budget (a GPU lease: one call of a few minutes must bring every number back).

    python scripts/gpu_check.py --out DIR --budget 480            # on the GPU machine
    python scripts/gpu_check.py --device cpu --quick --budget 120 --out DIR   # shrunk, on a CPU
    python scripts/gpu_check.py --only smoke demo --out DIR       # some steps (names below)

Each step runs in its own process (its own session, killed with everything it started) under its
own time limit -- what is left of the budget, at most the step's cap -- and writes what it
measures into DIR as it goes, so a check stopped at any point (a step's limit, the budget, the
lease) leaves every finished row and log behind. A step that no longer fits is skipped and says so.

  a. env                 GPU, driver, torch, CUDA, cuDNN (env.json); pytest -m gpu (gpu-tests)
  b. bench-eager, bench-compiled-wrn, bench-compiled-preact_resnet152: the rows that decide the
     paper's claim -- wrn and preact_resnet152 at batch 128, 32x32, bf16 autocast, channels_last,
     EquiNorm (fused and reference implementations eager; compiled, the fused node is traced as
     the reference's plain ops) vs BatchNorm (and GroupNorm, eager); torch.compile's time is the
     first step's (first_step_s), reported, not hidden
     profile             what bounds the step: device busy vs wall time and the top kernels of
                         wrn (eager, compiled, CUDA graphs) and preact_resnet152 (eager)
  c. smoke               one CUDA run of every experiment with EquiNorm (debug=smoke, data
                         fabricated in the real formats), each scored again (equinorm-evaluate)
  d. bench-others-eager, bench-resnet50 (224 px), demo (the digits sweep and its report),
     bench-others-compiled -- while budget remains

DIR ends with at most 8 files (what a device lease returns): env.json, steps.csv (step, status,
seconds, detail), bench.csv and bench.png, profile.md, smoke.csv, demo.md and log.txt (every
step's output); --only runs its steps in the order given;
scratch files (fabricated data, runs) go to --work. Runs from the source tree with the Python
that holds the machine's own torch; docs/performance.md gives the one-line device command.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

START = time.monotonic()  # the budget counts from the process's start
ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
QUICK_EXPERIMENTS = ["cifar10_wrn_short", "digits_demo"]
CLAIM_ARCHS = ["wrn", "preact_resnet152"]
OTHER_NORMS = ["ws_gn", "wn", "none"]
MARGIN_S = 10.0  # kept back from the budget: stopping a step (SIGTERM, then KILL) and the summary
QUICK_CAP = 0.25  # --quick's --cap-scale: a quarter of each cap, so every step gets its turn


def environment() -> dict:
    """Child processes see ``src`` (and whatever PYTHONPATH holds: the carried wheels), no wandb."""
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src") + (os.pathsep + path if path else ""),
        "WANDB_MODE": "disabled",
        "PYTHONUNBUFFERED": "1",
    }


@dataclass
class Step:
    name: str
    cap_s: float  # the most this step may take (less when the budget has less left)
    commands: Callable[[argparse.Namespace], list[list[str]]]
    after: Callable[[argparse.Namespace], str] | None = None  # writes its summary; a detail
    minimum_s: float = 15.0  # not started with less left


@dataclass
class Outcome:
    step: str
    status: str  # ok, failed, timeout, skipped
    seconds: float
    detail: str = ""


class Runner:
    """Runs commands in their own sessions, each line to the console and DIR/log.txt; kills the
    running one (its whole session) at its deadline or when this process is told to stop."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.current: subprocess.Popen | None = None

    def write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()
        with open(self.log, "a") as f:
            f.write(text)

    def kill(self) -> None:
        proc = self.current
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 4), (signal.SIGKILL, 4)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait)
                return
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue

    def call(self, cmd: list[str], seconds: float) -> tuple[int | None, str]:
        """(exit code, last line); the code is None when the deadline killed it."""
        self.write("$ " + " ".join(cmd) + "\n")
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.current = proc
        last = [""]

        def pump() -> None:
            for line in proc.stdout:
                self.write(line)
                if line.strip():
                    last[0] = line.strip()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=max(seconds, 0.0))
        except subprocess.TimeoutExpired:
            self.kill()
            code = None
        reader.join(timeout=10)
        self.current = None
        return code, last[0]


def run_step(runner: Runner, step: Step, args, limit: float) -> Outcome:
    t0 = time.monotonic()
    outcome = Outcome(step.name, "ok", 0.0)
    for cmd in step.commands(args):
        left = limit - (time.monotonic() - t0)
        code, last = runner.call(cmd, left)
        if code is None:
            outcome.status, outcome.detail = "timeout", f"stopped at its {limit:.0f} s limit"
            break
        if code != 0:
            outcome.status, outcome.detail = "failed", f"exit {code}: {last}"
            break
    if step.after is not None:
        try:
            detail = step.after(args)
        except Exception as exc:  # a summary must not cost the other steps
            detail = f"its summary failed: {type(exc).__name__}: {exc}"
        outcome.detail = "; ".join(filter(None, [outcome.detail, detail]))
    outcome.seconds = time.monotonic() - t0
    return outcome


def write_steps(out: Path, outcomes: list[Outcome]) -> None:
    tmp = out / ".steps.csv.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "status", "seconds", "detail"])
        for o in outcomes:
            writer.writerow([o.step, o.status, f"{o.seconds:.1f}", o.detail])
    os.replace(tmp, out / "steps.csv")


def run_all(steps: list[Step], args, runner: Runner) -> list[Outcome]:
    """Every step in order within ``args.budget`` seconds of this process's start; steps.csv
    rewritten after each."""
    deadline = START + args.budget - MARGIN_S
    outcomes: list[Outcome] = []
    for step in steps:
        left = deadline - time.monotonic()
        cap = step.cap_s * args.cap_scale
        if left < min(step.minimum_s, cap):
            outcomes.append(
                Outcome(step.name, "skipped", 0.0, f"budget: {max(left, 0):.0f} s left")
            )
        else:
            runner.write(f"\n== {step.name} (at most {min(cap, left):.0f} s)\n")
            outcomes.append(run_step(runner, step, args, min(cap, left)))
        write_steps(args.out, outcomes)
    return outcomes


# -- the steps ---------------------------------------------------------------------------------
def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def bench_script(args, what: str, archs, norms, impls, *options: str) -> list[str]:
    """``scripts/bench.py WHAT`` on the device; with --quick tiny models and few rounds."""
    cmd = python("scripts/bench.py", what, "--device", args.device, "--archs", *archs)
    cmd += ["--norms", *norms, "--equi-impls", *impls, *options]
    if args.quick:  # a check of the check
        cmd += ["--width", "0.125", "--batch-size", "8", "--input-size", "16", "--rounds", "3"]
    return cmd


def bench(args, archs, norms, compiled: bool, impls=("fused", "reference")) -> list[str]:
    options = ["--compile", "on" if compiled else "off", "--csv", str(args.out / "bench.csv")]
    return bench_script(args, "step", archs, norms, impls, *options, "--append")


def profile(args, archs, norms, modes, impls=("reference",)) -> list[str]:
    options = ["--modes", *modes, "--md", str(args.out / "profile.md")]
    return bench_script(args, "profile", archs, norms, impls, *options, "--append")


def train(args, *overrides: str) -> list[str]:
    return python(
        "-m",
        "equinorm.train",
        "-m",
        f"train.device={args.device}",
        "wandb.mode=disabled",
        "train.progress=false",
        *overrides,
    )


def smoke_commands(args) -> list[list[str]]:
    data = args.work / "data"
    experiments = QUICK_EXPERIMENTS if args.quick else EXPERIMENTS
    return [
        python("-m", "equinorm.data.fabricate", str(data), "--images", "64"),
        train(
            args,
            f"experiment={','.join(experiments)}",
            "norm=equi",
            "seed=0",
            "debug=smoke",
            f"dataset.root={data}",
            "dataset.download=false",
            "dataset.verify=false",
            f"results_dir={args.work / 'smoke'}",
        ),  # each run's model.pt scored again on the device (the numbers beside its record)
        python("-m", "equinorm.train.evaluate", str(args.work / "smoke"), "--device", args.device),
    ]


def summarize_runs(runs: Path, path: Path, expected: int) -> str:
    """One row per run found under ``runs`` (status, epochs, accuracy, time) -> ``path``."""
    rows = []
    for summary in sorted(runs.rglob("summary.json")):
        data = json.loads(summary.read_text())
        rows.append(
            {
                "run": str(summary.parent.relative_to(runs)),
                **{k: data.get(k) for k in ("status", "epoch", "epochs", "test_acc")},
                **{k: data.get(k) for k in ("wall_time_s", "device", "precision")},
            }
        )
    if rows:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    complete = sum(r["status"] == "complete" for r in rows)
    return f"{complete} of {expected} runs complete"


def smoke_after(args) -> str:
    expected = len(QUICK_EXPERIMENTS if args.quick else EXPERIMENTS)
    return summarize_runs(args.work / "smoke" / "runs", args.out / "smoke.csv", expected)


def demo_commands(args) -> list[list[str]]:
    results = args.work / "demo"
    quick = ["seed=0", "epochs=2", "schedule.length=2", "schedule.milestones=[1]"]
    return [
        train(
            args, "experiment=digits_demo", f"results_dir={results}", *(quick if args.quick else [])
        ),
        python("scripts/report.py", "--results", str(results), "--experiment", "digits_demo"),
    ]


def demo_after(args) -> str:
    table = args.work / "demo" / "tables" / "digits_demo.md"
    if table.is_file():
        shutil.copy(table, args.out / "demo.md")
    return summarize_runs(
        args.work / "demo" / "runs", args.work / "demo.csv", 3 if args.quick else 15
    )


def steps() -> list[Step]:
    claim = ["equi", "bn"]
    steps = [
        Step(
            "env",
            60,
            lambda a: [
                python("-m", "equinorm.bench.env", str(a.out / "env.json"), "--device", a.device)
            ],
        ),
        Step(
            "gpu-tests",
            240,
            lambda a: [
                python(
                    "-m",
                    "pytest",
                    "-m",
                    "gpu",
                    "-p",
                    "no:cacheprovider",
                    "-q",
                    "-rs",
                    *(["-n", "4"] if a.device.startswith("cuda") else []),
                    "tests",
                )
            ],
        ),
        Step("bench-eager", 150, lambda a: [bench(a, CLAIM_ARCHS, [*claim, "gn"], False)]),
    ]
    steps += [
        Step(  # an H200 compiled wrn in 17-38 s per model, preact_resnet152 in more than 185
            f"bench-compiled-{arch}",
            {"wrn": 240, "preact_resnet152": 420}[arch],
            lambda a, arch=arch: [bench(a, [arch], claim, True, ("reference",))],
        )
        for arch in CLAIM_ARCHS
    ]
    steps += [
        Step(
            "profile",
            240,
            lambda a: [  # cheapest first: the compiled wrn rows take 100 s of compilation
                profile(a, ["wrn"], claim, ["eager"], ("fused", "reference")),
                profile(a, ["preact_resnet152"], claim, ["eager"]),
                profile(a, ["wrn"], claim, ["default", "reduce-overhead"]),
            ],
        ),
        Step("smoke", 180, smoke_commands, smoke_after),
        Step(
            "bench-others-eager",
            120,
            lambda a: [bench(a, CLAIM_ARCHS, ["bn", *OTHER_NORMS], False, ("fused",))],
        ),
        Step(
            "bench-resnet50",
            240,
            lambda a: [
                bench(a, ["resnet50"], [*claim, "gn"], False),
                bench(a, ["resnet50"], claim, True, ("fused",)),
            ],
        ),
        Step("demo", 240, demo_commands, demo_after),
        Step(
            "bench-others-compiled",
            300,
            lambda a: [bench(a, CLAIM_ARCHS, ["bn", "gn", *OTHER_NORMS], True, ("fused",))],
        ),
    ]
    return steps


def choose(only: list[str] | None, skip: list[str]) -> list[Step]:
    """Every step in the default order, or ``only``'s in the order given; less ``skip``."""
    by_name = {s.name: s for s in steps()}
    return [by_name[n] for n in dict.fromkeys(only or by_name) if n not in skip]


def cuda_missing(device: str) -> str | None:
    if not device.startswith("cuda"):
        return None
    import torch

    if torch.cuda.is_available():
        return None
    return f"gpu-check: no CUDA device visible to torch {torch.__version__}; nothing to check"


def _device(text: str) -> str:
    """An argparse type (no torch import: the check runs on the GPU image's own torch)."""
    if re.fullmatch(r"cpu|cuda(:\d+)?", text) is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not cuda, cuda:<n> or cpu")
    return text


def main(argv: list[str] | None = None) -> int:
    from equinorm.argtypes import number  # stdlib only: no torch, no Hydra before the check

    names = [s.name for s in steps()]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--device", type=_device, default="cuda", help="cuda (default), cuda:<n> or cpu"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "results" / "gpu-check", help="where results go"
    )
    parser.add_argument("--work", type=Path, help="scratch files (default: a temporary folder)")
    parser.add_argument(
        "--budget", type=number(float), default=480.0, help="seconds for everything"
    )
    parser.add_argument("--quick", action="store_true", help="shrunk sizes (a check of the check)")
    parser.add_argument(
        "--cap-scale",
        type=number(float),
        help=f"multiplies each step's cap (default 1; {QUICK_CAP} with --quick); the budget binds",
    )
    parser.add_argument(
        "--only", nargs="+", choices=names, help="these steps only, in the order given"
    )
    parser.add_argument("--skip", nargs="+", default=[], choices=names, help="steps to leave out")
    args = parser.parse_args(argv)
    if args.cap_scale is None:
        args.cap_scale = QUICK_CAP if args.quick else 1.0
    problem = cuda_missing(args.device)
    if problem:
        print(problem)
        return 2
    args.out = args.out.absolute()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work = (args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))).absolute()
    chosen = choose(args.only, args.skip)
    runner = Runner(args.out / "log.txt")
    runner.write(
        f"gpu-check: {args.device}, budget {args.budget:.0f} s, {len(chosen)} steps; "
        f"results in {args.out}, scratch in {args.work}\n"
    )

    def stop(signum, frame):  # the lease or a user: keep what is written, end the running step
        runner.kill()
        runner.write(f"gpu-check: stopped by {signal.Signals(signum).name}\n")
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # Ctrl-C: the same, without a traceback
    outcomes = run_all(chosen, args, runner)
    rows = args.out / "bench.csv"
    if rows.is_file() and time.monotonic() - START < args.budget - 5:
        from equinorm.bench.output import plot, read_rows

        plot(read_rows(rows), f"gpu-check, {args.device}", args.out / "bench.png")
    runner.write("\ngpu-check summary\n")
    for o in outcomes:
        runner.write(f"  {o.step:22s} {o.status:8s} {o.seconds:6.0f} s  {o.detail}\n")
    runner.write(f"  total {time.monotonic() - START:.0f} s of a {args.budget:.0f} s budget\n")
    return 1 if any(o.status in ("failed", "timeout") for o in outcomes) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
