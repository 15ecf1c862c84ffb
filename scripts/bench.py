"""Benchmarks, written to results/bench/ with the device, versions and date on every row.

    python scripts/bench.py step      # training-step time per arch x norm -> <device>.csv + .png
    python scripts/bench.py loader    # device-resident loader vs DataLoader -> loader-<device>.csv
    python scripts/bench.py all       # both, and the pipeline's images/s against the models'
    python scripts/bench.py step --compile both   # eager and torch.compile'd rows in one file
    python scripts/bench.py step --archs preact_resnet18 --width 0.25 --batch-size 64 \
        --input-size 8 --norms equi bn gn --name cpu-2cores-digits   # the demo's setting
    python scripts/bench.py step --equi-impls fused reference    # EquiNorm's two implementations
    python scripts/bench.py step --archs wrn --csv DIR/bench.csv --append   # add rows to a file
    python scripts/bench.py profile --archs wrn --norms bn equi --equi-impls reference \
        --modes eager default reduce-overhead --md DIR/profile.md   # what bounds a step

Rows are written as each architecture's are measured (an interrupted benchmark keeps them).

On a GPU the defaults are the paper's sizes (wrn, preact_resnet152 at batch 128; resnet50 at 224
px), bf16 autocast and channels_last; on a CPU reduced widths at batch 32 and fp32.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from equinorm.argtypes import number
from equinorm.bench.env import device_slug, environment, steady_allocator
from equinorm.bench.loader import loader_throughput
from equinorm.bench.output import label, plot, write_rows
from equinorm.bench.profile import markdown, profiles
from equinorm.bench.step import step_times, variants
from equinorm.errors import EquinormError
from equinorm.experiment.checks import device as parse_device
from equinorm.launch.reproduce import BENCH_DIR  # where make plan reads the rows
from equinorm.layers import NORMS, get_norm
from equinorm.layers.equiconv import IMPLS
from equinorm.models import ARCHS

GPU_ARCHS = {"wrn": 1.0, "preact_resnet152": 1.0, "resnet50": 1.0}
CPU_ARCHS = {"preact_resnet18": 1.0, "wrn": 0.25, "preact_resnet152": 0.25}


def arch_widths(args, cuda: bool, default: list[str] | None = None) -> dict[str, float]:
    """{arch: width multiplier}: --archs (else ``default``, else the device's set) at --width
    (else the device's width for it)."""
    archs = dict(GPU_ARCHS if cuda else CPU_ARCHS)
    names = args.archs or default or list(archs)
    return {a: args.width or archs.get(a, 1.0 if cuda else 0.25) for a in names}


def setting(args, cuda: bool) -> dict:
    """The measurement's setting but the width: the paper's on a GPU (batch 128, bf16 autocast,
    channels_last), batch 32 in fp32 on a CPU; --batch-size and --input-size override."""
    return {
        "batch_size": args.batch_size or (128 if cuda else 32),
        "input_size": args.input_size,
        "precision": "bf16" if cuda else "fp32",
        "channels_last": cuda,
    }


def run_steps(args, device: torch.device) -> list[dict]:
    cuda = device.type == "cuda"
    archs = arch_widths(args, cuda)
    size = setting(args, cuda)
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    name = args.name or device_slug(device) + ("-compile" if args.compile == "on" else "")
    csv_path = args.csv or args.out / f"{name}.csv"
    rows = []
    for compiled in modes:
        for arch, width in archs.items():
            print(
                f"{arch} (width x{width}, batch {size['batch_size']}"
                f"{', compiled' if compiled else ''}) "
                f"on {environment(device)['device']}"
            )
            out = step_times(
                arch,
                args.norms,
                device,
                width_mult=width,
                compile=compiled,
                rounds=args.rounds,
                equi_impls=tuple(args.equi_impls),
                log=lambda text: print(text, flush=True),
                **size,
            )
            for r in out:
                ratio = "" if r["ratio_to_bn"] is None else f"x{r['ratio_to_bn']:.3f} of bn"
                print(
                    f"  {label(r):16s} {r['step_ms']:9.2f} ms  {r['images_per_s']:9.0f} img/s  "
                    f"{r['peak_mem_mb']:9.0f} MiB  first step {r['first_step_s']:.1f} s  {ratio}",
                    flush=True,
                )
            rows += out
            write_rows(csv_path, device, out, append=args.append or len(rows) > len(out))
            print(f"wrote {csv_path}", flush=True)
    if not args.append:
        title = f"{environment(device)['device']}, {rows[0]['precision']}"
        print(f"wrote {plot(rows, title, csv_path.with_suffix('.png'))}")
    return rows


def run_profiles(args, device: torch.device) -> None:
    """Each arch's (norm, impl) x compile modes profiled; the Markdown rewritten after each."""
    cuda = device.type == "cuda"
    modes = {"eager": False, "default": True, "reduce-overhead": "reduce-overhead"}
    keys = variants(args.norms, tuple(args.equi_impls))
    chosen = [(n, i, modes[m]) for m in args.modes for n, i in keys]
    size = setting(args, cuda)
    env = environment(device)
    title = (
        f"Training-step profile: {env['device']}, torch {env['torch']}, batch "
        f"{size['batch_size']}, {size['precision']}, {env['date']}"
    )
    path = args.md or args.out / f"{device_slug(device)}-profile.md"
    before = path.read_text() + "\n" if args.append and path.is_file() else ""
    found = []
    for arch, width in arch_widths(args, cuda, default=["wrn"]).items():
        found += profiles(
            arch, chosen, device, rounds=args.rounds, log=print, width_mult=width, **size
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(before + markdown(found, title))
        print(f"wrote {path}", flush=True)


def _norm(name: str) -> str:
    """An argparse type: a norm name (ours, or a package's through its entry point)."""
    try:
        get_norm(name)
    except KeyError as exc:
        raise argparse.ArgumentTypeError(exc.args[0]) from None
    return name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "what",
        choices=["step", "loader", "all", "profile"],
        help="training steps per norm, the data loaders, both, or a per-op profile",
    )
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu, cuda or cuda:<n> (default: cuda where there is one)",
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR, help=f"folder ({BENCH_DIR})")
    parser.add_argument(
        "--archs", nargs="+", choices=list(ARCHS), help="architectures (default: per device)"
    )
    parser.add_argument("--width", type=number(float), help="width multiplier for every arch")
    every = " ".join(NORMS)
    parser.add_argument(
        "--norms", nargs="+", type=_norm, default=list(NORMS), help=f"norms to time ({every})"
    )
    parser.add_argument(
        "--batch-size", type=number(int), help="per step (default: 128 on a GPU, 32 on a CPU)"
    )
    parser.add_argument(
        "--input-size", type=number(int), help="image size (default: 32; resnet50 224)"
    )
    parser.add_argument("--name", help="output file name (default: the device's)")
    parser.add_argument("--csv", type=Path, help="the step CSV (default: OUT/NAME.csv)")
    parser.add_argument(
        "--append",
        action="store_true",
        help="add rows to --csv's (no figure: gpu_check draws it); profile: add to --md's",
    )
    parser.add_argument(
        "--equi-impls",
        nargs="+",
        default=["fused"],
        choices=IMPLS,
        help="EquiNorm implementations to time (rows carry impl)",
    )
    parser.add_argument(
        "--rounds", type=number(int), default=25, help="timed steps per norm (20 or more)"
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const="on",
        default="off",
        choices=["off", "on", "both"],
        help="torch.compile the models: off, on (--compile alone) or both, in one file",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["eager", "default"],
        choices=["eager", "default", "reduce-overhead"],
        help="profile: eager, torch.compile's default mode, reduce-overhead (CUDA graphs)",
    )
    parser.add_argument("--md", type=Path, help="profile: the Markdown (default: OUT/NAME.md)")
    parser.add_argument(
        "--images", type=number(int), default=50_000, help="loader benchmark images"
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=sorted({0, 2, min(8, os.cpu_count() or 1)}),
        help="DataLoader worker counts to compare (default: 0, 2, cores up to 8)",
    )
    args = parser.parse_args(argv)
    try:
        device = parse_device(args.device)
    except EquinormError as exc:
        parser.error(str(exc).replace("train.device", "--device"))
    if device.type == "cpu" and steady_allocator():
        print("glibc: freed memory kept in the process (steadier CPU timings)")
    if args.what == "profile":
        run_profiles(args, device)
        return
    steps = run_steps(args, device) if args.what in ("step", "all") else []
    if args.what in ("loader", "all"):
        print(f"loader throughput on {environment(device)['device']}")
        loader = loader_throughput(device, args.images, workers=tuple(args.workers))
        path = write_rows(args.out / f"loader-{device_slug(device)}.csv", device, loader)
        print(f"wrote {path}")
        cifar = [r for r in steps if r["arch"] != "resnet50" and r["norm"] == "bn"]
        for r in cifar:  # can the pipeline feed the model?
            feed = max(x["images_per_s"] for x in loader if x["loader"] == "device")
            print(
                f"  {r['arch']}: model consumes {r['images_per_s']:,.0f} img/s; the device "
                f"loader delivers {feed:,.0f} img/s ({feed / r['images_per_s']:.0f}x headroom)"
            )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # a measurement's rows are written once it has ended, whole
        print("bench: interrupted; the rows written before it are kept", file=sys.stderr)
        raise SystemExit(130) from None
