"""Benchmarks, written to results/bench/<what>-<device>.csv with the device, versions and date.

python scripts/bench.py loader            # device-resident loader vs torchvision DataLoader
python scripts/bench.py loader --images 10000 --workers 0 2
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from equinorm.bench.env import device_slug, environment
from equinorm.bench.loader import loader_throughput

RESULTS = Path(__file__).resolve().parents[1] / "results" / "bench"


def write_rows(what: str, device: torch.device, rows: list[dict], out: Path) -> Path:
    env = environment(device)
    path = out / f"{what}-{device_slug(device)}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [env | row for row in rows]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["loader"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"loader throughput on {environment(device)['device']}")
    rows = loader_throughput(device, args.images, args.batch_size, workers=tuple(args.workers))
    write_rows("loader", device, rows, args.out)


if __name__ == "__main__":
    main()
