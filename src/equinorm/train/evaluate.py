"""Score trained runs again, from their records alone: each run's network on its test images (and
its validation split), as the trainer scores it at an epoch's end (paper section 6).

    equinorm-evaluate results/runs/digits_demo        # every run below it that has weights
    equinorm-evaluate RUN_DIR --fuse                  # EquiNorm folded into plain convolutions
    equinorm-evaluate RUN_DIR --data-root /datasets --device cuda

A run's network and weights come from its ``config.yaml`` and ``model.pt``, or the newest
checkpoint of an unfinished run (:mod:`equinorm.run.trained`); its data from the same config (the
dataset, the validation split, the input standardization it trained with). One line per run: the
weights, each split's accuracy and loss, and what the run recorded at that epoch (the same
numbers on the CPU). Nothing is written. A run that cannot be scored is one line and the next one
is scored; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from equinorm.errors import DatasetError, EquinormError, one_line
from equinorm.experiment.checks import device as parse_device
from equinorm.layers import cached_eval_kernels, fuse_equinorm
from equinorm.run.record import RunDir, run_dirs
from equinorm.run.trained import Trained, load
from equinorm.train.build import loaders, resolve_precision
from equinorm.train.cpus import cpu_budget
from equinorm.train.trainer import autocast, autocast_dtype, score


@dataclass
class Shares:
    """A split as a run of several processes evaluated it: each rank's share in turn."""

    loaders: list

    def iterate(self, epoch: int):
        for loader in self.loaders:
            yield from loader.iterate(epoch)

    def __len__(self) -> int:
        return sum(len(loader) for loader in self.loaders)


@dataclass
class Scored:
    trained: Trained  # the run's network (model, config, weights file, epoch)
    scores: dict  # <split>_acc and <split>_loss of each split now
    recorded: dict  # the history row of the epoch its weights ended ({}: mid-epoch weights)
    folded: int | None = None  # EquiNorm layers folded into plain convolutions (fuse)

    def line(self, run: Path) -> str:
        t = self.trained
        at = f"epoch {t.epoch}" + (f" + {t.batch} batches" if t.batch else "")
        if self.folded is not None:
            at += f", {self.folded} EquiNorm layers folded"
        parts = [f"{run}: {t.weights.name} ({at})"]
        for split in ("test", "val"):
            if f"{split}_acc" not in self.scores:
                continue
            now = self.scores[f"{split}_acc"], self.scores[f"{split}_loss"]
            was = self.recorded.get(f"{split}_acc"), self.recorded.get(f"{split}_loss")
            then = f" (recorded {was[0]:.2f}, {was[1]:.4f})" if None not in was else ""
            parts.append(f"{split} acc {now[0]:.2f} loss {now[1]:.4f}{then}")
        return "; ".join(parts)


def evaluate(run: Path, device: torch.device, data_root: str | None = None, fuse=False) -> Scored:
    """The run's network scored on each split, beside what the run recorded."""
    trained, rundir = load(run, device), RunDir(run)
    cfg = trained.config
    if data_root is not None:
        cfg.dataset.root = data_root
    # as the run's processes shared its images (train.max_eval_batches cuts each share)
    world = int((rundir.summary() or {}).get("world_size") or 1)
    shares = [
        loaders(cfg, device, prepare=r == 0, training=False, rank=r, world_size=world)
        for r in range(world)
    ]
    splits = {"test": Shares([d.test for d in shares])}
    if shares[0].val is not None:
        splits["val"] = Shares([d.val for d in shares])
    folded = None
    if fuse:
        example = next(iter(shares[0].test.iterate(0)))[0]
        folded = fuse_equinorm(trained.model, example=example)
    dtype = autocast_dtype(resolve_precision(cfg, device))
    with cached_eval_kernels(trained.model):
        shown = "" if sys.stderr.isatty() else None  # a terminal's progress bars
        scores = score(trained.model, splits, lambda: autocast(device.type, dtype), device, shown)
    rows = [] if trained.batch else rundir.history()
    row = next((r for r in rows if r.get("epoch") == trained.epoch), {})
    return Scored(trained, scores, row, folded)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog or "equinorm-evaluate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "runs", nargs="+", type=Path, help="run directories, folders above them, or a results_dir"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:<n> or auto")
    parser.add_argument("--data-root", help="where the datasets are now (default: the run's root)")
    parser.add_argument(
        "--fuse", action="store_true", help="fold EquiNorm into plain convolutions first"
    )
    args = parser.parse_args(argv)
    try:
        device = parse_device(args.device)
    except EquinormError as exc:
        parser.error(str(exc).replace("train.device", "--device"))
    torch.set_num_threads(cpu_budget())  # the trainer's: a SLURM task's CPUs, not the node's
    try:
        failed = sum(_score(root, device, args) for root in args.runs)
    except KeyboardInterrupt:  # it writes nothing: nothing to keep
        print("equinorm-evaluate: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    return 1 if failed else 0


def _score(root: Path, device, args) -> int:
    """Print the scores of every run at or below ``root``; the number that could not be scored."""
    root = root.parent if root.is_file() else root  # a run's model.pt: its run
    below = root / "runs" if (root / "runs").is_dir() else root  # a results_dir: its runs
    found = run_dirs(below) if root.is_dir() else []
    if not found:
        print(f"equinorm-evaluate: {root}: no run directory there", file=sys.stderr)
        return 1
    failed = 0
    for run in found:
        try:
            print(evaluate(run, device, args.data_root, args.fuse).line(run), flush=True)
        except Exception as exc:  # one run's problem: said, and the next run is scored
            hint = " (--data-root DIR: where they are now)" if isinstance(exc, DatasetError) else ""
            text = one_line(exc)  # named once: most of load's lines begin with the run
            text = text if str(run) in text else f"{run}: {text}"
            print(f"equinorm-evaluate: {text}{hint}", file=sys.stderr)
            failed += 1
    return failed


if __name__ == "__main__":
    sys.exit(main(prog="python -m equinorm.train.evaluate"))
