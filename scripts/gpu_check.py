"""``make gpu-check``: what a fresh GPU machine must pass before a sweep is trusted to it.

    python scripts/gpu_check.py                  # everything, on cuda
    python scripts/gpu_check.py --skip bench     # steps by name: tests, smoke, demo, bench
    python scripts/gpu_check.py --device cpu --quick   # the same pipeline, shrunk, on a CPU

1. ``tests``: the gpu-marked tests (``pytest -m gpu``).
2. ``smoke``: ``debug=smoke`` of every experiment with every norm its sweep names (seed 0), on data
   fabricated in the real on-disk formats (CIFAR-10/100 pickles, SVHN .mat, ImageNet folders).
3. ``demo``: the digits demo's sweep (``make demo``) and its report.
4. ``bench``: the paper-size benchmark, eager and ``torch.compile``'d, written to
   ``results/bench/<gpu>.{csv,png}``.

Runs from the source tree (``src`` on ``PYTHONPATH``) with the Python that holds the machine's own
torch, so nothing re-resolves torch; the few extras (hydra-core, omegaconf) come from ``.whl/``
when present, else the index (see ``scripts/gpu_env.sh``). Run outputs go to ``--out`` (ignored by
git). Ends with one line per step and exits non-zero if any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("tests", "smoke", "demo", "bench")
QUICK = ("cifar10_wrn_overfit", "cifar10_wrn_short", "digits_demo")  # --quick's experiments


def environment() -> dict:
    """The Python this check runs under sees ``src`` and runs wandb-free."""
    src = str(ROOT / "src")
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "PYTHONPATH": src + (os.pathsep + path if path else ""),
        "WANDB_MODE": "disabled",
        "PYTHONUNBUFFERED": "1",
    }


def call(cmd: list[str], log: Path) -> int:
    """Run ``cmd`` from the repository root, echoing and logging its output; its exit code."""
    print("$", " ".join(cmd), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(log, "a") as f,
        subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as proc,
    ):
        for line in proc.stdout:
            sys.stdout.write(line)
            f.write(line)
    return proc.returncode


def train_cmd(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "equinorm.train", "-m", "wandb.mode=disabled", *overrides]


def swept_norms(experiment: str) -> list[str]:
    from equinorm.reproduce import experiment_config

    return str(experiment_config(experiment).hydra.sweeper.params.norm).split(",")


def summaries(runs: Path) -> list[tuple[Path, dict | None]]:
    out = []
    for seed_dir in sorted(p for p in runs.rglob("seed=*") if p.is_dir()):  # any variant level
        path = seed_dir / "summary.json"
        out.append((seed_dir, json.loads(path.read_text()) if path.is_file() else None))
    return out


def check_runs(runs: Path, expected: int) -> list[str]:
    """One problem line per run that did not complete, and for runs that are missing."""
    found = summaries(runs)
    problems = [
        f"{d.relative_to(runs)}: {s['status'] if s else 'no summary.json'}"
        for d, s in found
        if not s or s.get("status") != "complete"
    ]
    if len(found) < expected:
        problems.append(f"{expected - len(found)} of {expected} runs missing under {runs}")
    return problems


def step_tests(args, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", "tests"]
    code = call(cmd, out / "tests.log")
    return [] if code == 0 else [f"pytest -m gpu exited {code} (log: {out / 'tests.log'})"]


def step_smoke(args, out: Path) -> list[str]:
    from equinorm.data.fabricate import write_cifar, write_imagenet, write_svhn

    data = out / "data"
    n = 64 if args.quick else 512
    if not (data / ".fabricated").is_file():
        write_cifar(data, "cifar10", n_train=n, n_test=n // 2)
        write_cifar(data, "cifar100", n_train=n, n_test=n // 2)
        write_svhn(data, n_train=n // 2, n_extra=n // 2, n_test=n // 2)
        write_imagenet(data, classes=4, per_class=max(n // 32, 4), size=64)
        (data / ".fabricated").touch()
    problems, expected = [], 0
    from equinorm.paths import config_dir

    every = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
    experiments = QUICK if args.quick else every
    for experiment in experiments:
        norms = swept_norms(experiment)
        expected += len(norms)
        code = call(
            train_cmd(
                f"experiment={experiment}",
                "debug=smoke",
                "seed=0",
                f"norm={','.join(norms)}",
                f"train.device={args.device}",
                f"dataset.root={data}",
                "dataset.download=false",
                "dataset.verify=false",
                f"results_dir={out / 'smoke'}",
                "train.progress=false",
            ),
            out / "smoke.log",
        )
        if code:
            problems.append(f"smoke {experiment}: exit {code} (log: {out / 'smoke.log'})")
    return problems + check_runs(out / "smoke" / "runs", expected)


def step_demo(args, out: Path) -> list[str]:
    results = out / "demo"
    extra = ["seed=0", "epochs=2", "schedule.length=2", "schedule.milestones=[1]"]
    code = call(
        train_cmd(
            "experiment=digits_demo",
            f"train.device={args.device}",
            f"results_dir={results}",
            "train.progress=false",
            *(extra if args.quick else []),
        ),
        out / "demo.log",
    )
    problems = [f"demo sweep exited {code}"] if code else []
    expected = 3 if args.quick else 15
    problems += check_runs(results / "runs", expected)
    report = [sys.executable, "scripts/report.py", "--results", str(results)]
    code = call([*report, "--experiment", "digits_demo"], out / "demo.log")
    return problems + ([f"demo report exited {code}"] if code else [])


def step_bench(args, out: Path) -> list[str]:
    cmd = [sys.executable, "scripts/bench.py", "step", "--device", args.device]
    cmd += ["--compile", "both"]
    if args.quick:
        cmd += ["--archs", "preact_resnet18", "--width", "0.125", "--batch-size", "8"]
        cmd += ["--input-size", "16", "--rounds", "20", "--out", str(out / "bench")]
    code = call(cmd, out / "bench.log")
    return [f"bench exited {code} (log: {out / 'bench.log'})"] if code else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:<n> or cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "gpu-check")
    parser.add_argument("--skip", nargs="*", default=[], choices=STEPS, help="steps to leave out")
    parser.add_argument("--quick", action="store_true", help="shrunk sizes (a check of the check)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device visible to torch {torch.__version__}; nothing to check")
        return 2
    print(f"gpu-check: torch {torch.__version__}, {args.device}", end="")
    if args.device.startswith("cuda"):
        print(f" = {torch.cuda.get_device_name(torch.device(args.device))}", end="")
    print(f"; outputs under {args.out}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in STEPS:
        if name in args.skip:
            results[name] = ("skipped", [], 0.0)
            continue
        t0 = time.perf_counter()
        problems = globals()[f"step_{name}"](args, args.out)
        results[name] = ("ok" if not problems else "FAILED", problems, time.perf_counter() - t0)
    print("\ngpu-check summary")
    for name, (status, problems, seconds) in results.items():
        print(f"  {name:6s} {status:8s} {seconds:7.0f} s")
        for p in problems:
            print(f"         - {p}")
    return 1 if any(s == "FAILED" for s, _, _ in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
