"""Benchmarks, written to results/bench/ with the device, versions and date on every row.

    python scripts/bench.py step      # training-step time per arch x norm -> <device>.csv + .png
    python scripts/bench.py loader    # device-resident loader vs DataLoader -> loader-<device>.csv
    python scripts/bench.py all       # both, and the pipeline's images/s against the models'
    python scripts/bench.py step --compile both   # eager and torch.compile'd rows in one file
    python scripts/bench.py step --archs preact_resnet18 --width 0.25 --batch-size 64 \
        --input-size 8 --norms equi bn gn --name cpu-2cores-digits   # the demo's setting

On a GPU the defaults are the paper's sizes (wrn, preact_resnet152 at batch 128; resnet50 at 224
px), bf16 autocast and channels_last; on a CPU reduced widths at batch 32 and fp32.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import torch

from equinorm.bench.env import device_slug, environment, steady_allocator
from equinorm.bench.loader import loader_throughput
from equinorm.bench.step import step_times
from equinorm.layers import NORMS

RESULTS = Path(__file__).resolve().parents[1] / "results" / "bench"
GPU_ARCHS = {"wrn": 1.0, "preact_resnet152": 1.0, "resnet50": 1.0}
CPU_ARCHS = {"preact_resnet18": 1.0, "wrn": 0.25, "preact_resnet152": 0.25}


def write_rows(name: str, device: torch.device, rows: list[dict], out: Path) -> Path:
    env = environment(device) | {"device_type": device.type}
    path = out / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [env | row for row in rows]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")
    return path


def plot(rows: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = list(dict.fromkeys(r["arch"] for r in rows))
    norms = list(dict.fromkeys(r["norm"] for r in rows))
    modes = list(dict.fromkeys(bool(r["compile"]) for r in rows))
    fig, axes = plt.subplots(
        len(modes), 1, figsize=(max(6.0, 1.8 + 1.9 * len(archs)), 3.8 * len(modes)), squeeze=False
    )
    for ax, mode in zip(axes[:, 0], modes, strict=True):
        _plot_panel(ax, [r for r in rows if bool(r["compile"]) == mode], archs, norms)
        ax.set_title(f"{title}, {'torch.compile' if mode else 'eager'}", fontsize=9, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    print(f"wrote {path}")


def _plot_panel(ax, rows: list[dict], archs: list[str], norms: list[str]) -> None:
    from equinorm.report.paper import NORM_COLORS, norm_label

    width = 0.8 / len(norms)
    for i, norm in enumerate(norms):
        xs, ys, labels = [], [], []
        for j, arch in enumerate(archs):
            r = next((r for r in rows if r["arch"] == arch and r["norm"] == norm), None)
            if r and r["ratio_to_bn"] is not None:
                xs.append(j + (i - (len(norms) - 1) / 2) * width)
                ys.append(r["ratio_to_bn"])
                labels.append(f"{r['ratio_to_bn']:.2f}")
        bars = ax.bar(xs, ys, width, color=NORM_COLORS.get(norm), label=norm_label(norm))
        ax.bar_label(bars, labels, fontsize=6, rotation=90, padding=2)
    ax.axhline(1.0, color="0.3", lw=0.8)
    ax.set_xticks(range(len(archs)))
    ax.set_xticklabels(
        [f"{a}\n(width x{next(r['width_mult'] for r in rows if r['arch'] == a)})" for a in archs],
        fontsize=8,
    )
    ax.set_ylabel("training-step time / BatchNorm's")
    ax.legend(fontsize=7, ncol=3, frameon=False, loc="upper left")
    ax.set_ylim(0, max(r["ratio_to_bn"] or 1.0 for r in rows) * 1.3)


def run_steps(args, device: torch.device) -> list[dict]:
    cuda = device.type == "cuda"
    archs = dict(GPU_ARCHS if cuda else CPU_ARCHS)
    if args.archs:
        archs = {a: args.width or archs.get(a, 1.0 if cuda else 0.25) for a in args.archs}
    elif args.width:
        archs = dict.fromkeys(archs, args.width)
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    rows = []
    for compiled in modes:
        for arch, width in archs.items():
            batch = args.batch_size or (128 if cuda else 32)
            print(
                f"{arch} (width x{width}, batch {batch}{', compiled' if compiled else ''}) "
                f"on {environment(device)['device']}"
            )
            out = step_times(
                arch,
                args.norms,
                device,
                batch_size=batch,
                input_size=args.input_size,
                width_mult=width,
                precision="bf16" if cuda else "fp32",
                channels_last=cuda,
                compile=compiled,
                rounds=args.rounds,
            )
            for r in out:
                ratio = "" if r["ratio_to_bn"] is None else f"x{r['ratio_to_bn']:.3f} of bn"
                print(
                    f"  {r['norm']:6s} {r['step_ms']:9.2f} ms  {r['images_per_s']:9.0f} img/s  "
                    f"{r['peak_mem_mb']:9.0f} MiB  {ratio}"
                )
            rows += out
    name = args.name or device_slug(device) + ("-compile" if args.compile == "on" else "")
    write_rows(name, device, rows, args.out)
    plot(rows, f"{environment(device)['device']}, {rows[0]['precision']}", args.out / f"{name}.png")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["step", "loader", "all"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--archs", nargs="+", help="architectures (default: per device)")
    parser.add_argument("--width", type=float, help="width multiplier for every arch")
    parser.add_argument("--norms", nargs="+", default=list(NORMS))
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--input-size", type=int, help="image size (default: 32; resnet50 224)")
    parser.add_argument("--name", help="output file name (default: the device's)")
    parser.add_argument("--rounds", type=int, default=25, help="timed steps per norm (>= 20)")
    parser.add_argument(
        "--compile",
        nargs="?",
        const="on",
        default="off",
        choices=["off", "on", "both"],
        help="torch.compile the models: off, on (--compile alone) or both, in one file",
    )
    parser.add_argument("--images", type=int, default=50_000, help="loader benchmark images")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=sorted({0, 2, min(8, os.cpu_count() or 1)}),
        help="DataLoader worker counts to compare (default: 0, 2, cores up to 8)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu" and steady_allocator():
        print("glibc: freed memory kept in the process (steadier CPU timings)")
    steps = run_steps(args, device) if args.what in ("step", "all") else []
    if args.what in ("loader", "all"):
        print(f"loader throughput on {environment(device)['device']}")
        loader = loader_throughput(device, args.images, workers=tuple(args.workers))
        write_rows(f"loader-{device_slug(device)}", device, loader, args.out)
        cifar = [r for r in steps if r["arch"] != "resnet50" and r["norm"] == "bn"]
        for r in cifar:  # can the pipeline feed the model?
            feed = max(x["images_per_s"] for x in loader if x["loader"] == "device")
            print(
                f"  {r['arch']}: model consumes {r['images_per_s']:,.0f} img/s; the device "
                f"loader delivers {feed:,.0f} img/s ({feed / r['images_per_s']:.0f}x headroom)"
            )


if __name__ == "__main__":
    main()
