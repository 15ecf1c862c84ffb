"""Write the golden parameter counts and print the README's parameters/MACs table.

python scripts/model_complexity.py            # print the table
python scripts/model_complexity.py --write    # also rewrite tests/golden/model_complexity.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from equinorm.models.complexity import PAPER_SETTINGS, forward_macs, parameter_counts

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden" / "model_complexity.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the golden JSON file")
    args = parser.parse_args()
    counts = parameter_counts()
    if args.write:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(counts, indent=2) + "\n")
        print(f"wrote {GOLDEN}")
    print("| arch | classes | input | params (bn) | params (equi) | forward MACs / image |")
    print("|---|---:|---:|---:|---:|---:|")
    for arch, (classes, size) in PAPER_SETTINGS.items():
        c = counts[arch]
        macs = forward_macs(arch) / 1e9
        print(
            f"| `{arch}` | {classes} | {size}x{size} | {c['bn']:,} | {c['equi']:,} | {macs:.2f} G |"
        )


if __name__ == "__main__":
    main()
