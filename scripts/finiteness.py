"""How far does single-pass EquiNorm (no epsilon) stay finite? A width x depth study
(results/finiteness/README.md).

For each architecture of the paper's experiments and each width multiplier, train a few hundred
steps of that experiment's recipe with ``norm=equi`` on fabricated data in the real on-disk format
(``equinorm.data.fabricate``, through the real loaders) and record whether the run stayed finite,
and if not, where its first non-finite value appeared (the trainer's replay,
:mod:`equinorm.train.nonfinite`). Writes one CSV row per (experiment, width, seed).

    python scripts/finiteness.py --steps 300 --out results/finiteness/cpu-2cores.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

from equinorm import experiment as experiments
from equinorm.argtypes import number
from equinorm.data.fabricate import write_cifar, write_imagenet
from equinorm.train.run import run

RESULTS = Path(__file__).resolve().parents[1] / "results" / "finiteness"  # the checkout's
EXPERIMENTS = {  # one per architecture and recipe
    "cifar10_wrn_overfit": "wrn",
    "cifar10_preresnet152_mixup": "preact_resnet152",
    "imagenet_resnet50": "resnet50",
}


def one_run(experiment, width, seed, steps, batches, data, results, threads) -> dict:
    epochs = max(1, steps // batches)
    overrides = [
        "norm=equi",
        f"seed={seed}",
        "debug=smoke",
        f"epochs={epochs}",
        f"arch.width_mult={width}",
        f"train.max_train_batches={batches}",
        "train.max_eval_batches=1",
        "train.checkpoint=false",
        f"train.threads={threads}",
        "train.fail_on_divergence=false",
        "wandb.mode=disabled",
        f"dataset.root={data}",
        "dataset.verify=false",
        "dataset.download=false",
        f"results_dir={results}",
        f"name=finite-{experiment}-w{width}",
    ]
    cfg = experiments.compose([f"experiment={experiment}", *overrides])
    start = time.perf_counter()
    s = run(cfg)
    done = (s["epoch"] if s["status"] == "complete" else s["diverged_epoch"] - 1) * batches
    return {
        "experiment": experiment,
        "arch": EXPERIMENTS[experiment],
        "width_mult": width,
        "seed": seed,
        "steps": epochs * batches,
        "batch": cfg.train.batch_size * (cfg.train.devices or 1),
        "status": s["status"],
        "steps_finite": done
        + (s.get("nonfinite_batch", 1) - 1 if s["status"] != "complete" else 0),
        "nonfinite_layer": s.get("nonfinite_layer", ""),
        "nonfinite_in": s.get("nonfinite_in", ""),
        "min_abs_D": s.get("nonfinite_min_abs_D", ""),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--experiments",
        nargs="+",
        choices=list(EXPERIMENTS),
        default=list(EXPERIMENTS),
        help="whose architecture and recipe (default: all)",
    )
    widths = [0.125, 0.25, 0.5, 1.0]
    p.add_argument(
        "--widths",
        nargs="+",
        type=number(float),
        default=widths,
        help=f"arch.width_mult values ({' '.join(map(str, widths))})",
    )
    p.add_argument(
        "--seeds", nargs="+", type=number(int, -1), default=[0, 1, 2], help="run seeds (0 1 2)"
    )
    p.add_argument("--steps", type=number(int), default=300, help="training steps per run (300)")
    p.add_argument("--batches", type=number(int), default=25, help="steps per epoch (25)")
    p.add_argument("--threads", type=number(int), default=2, help="torch CPU threads (2)")
    out = RESULTS / "cpu-2cores.csv"
    p.add_argument("--out", type=Path, default=out, help=f"CSV the rows are added to ({out})")
    args = p.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        # enough images for --batches full steps per epoch at the largest global batch (ImageNet:
        # 8 devices x 8 under debug=smoke), so that every row's steps were really taken
        write_cifar(data, "cifar10", n_train=max(2000, 8 * args.batches), n_test=64)
        write_imagenet(data, classes=4, per_class=16 * args.batches + 1, size=40)
        new = not args.out.exists()
        with open(args.out, "a", newline="") as f:
            writer = None
            for experiment in args.experiments:
                for width in args.widths:
                    for seed in args.seeds:
                        row = one_run(
                            experiment,
                            width,
                            seed,
                            args.steps,
                            args.batches,
                            data,
                            Path(tmp) / "runs",
                            args.threads,
                        )
                        print(row, flush=True)
                        if writer is None:
                            writer = csv.DictWriter(f, fieldnames=list(row))
                            if new:
                                writer.writeheader()
                        writer.writerow(row)
                        f.flush()
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # each row is flushed as it is written
        print("finiteness: interrupted; the rows written before it are kept", file=sys.stderr)
        raise SystemExit(130) from None
